"""``serve(...)``: what ``python serve.py`` runs, from configs/serve.yaml's flat settings."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from src.serving.contract import DEFAULT_MAX_BODY_BYTES


def serve(
    model_dir: str | Path,
    backend: str = "torch",
    host: str = "127.0.0.1",
    port: int = 8080,
    torch_threads: int | None = None,
    log_level: str = "info",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_pixels: int = 25_000_000,
    max_images: int = 128,
    max_request_pixels: int = 64_000_000,
    workers: int = 2,
    header_timeout_s: float = 10,
    body_timeout_s: float = 30,
    timeout_keep_alive: int = 75,
    max_header_bytes: int = 16384,
    limit_concurrency: int | None = None,
    micro_batching: dict[str, Any] | None = None,
    max_queue: int | None = 32,
    retry_after_s: int = 1,
) -> None:
    """Load and check the artifact once (a broken one exits with one line), then serve it with uvicorn."""
    import logging

    import torch

    from src.serving.app import create_app, run
    from src.serving.limits import Limits
    from src.serving.startup import StartupError, load_checked

    if torch_threads:
        torch.set_num_threads(torch_threads)  # OnnxRunner follows torch's thread count
    try:
        limits = Limits(max_body_bytes=max_body_bytes, max_pixels=max_pixels, max_images=max_images,
                        max_request_pixels=max_request_pixels)
        predictor = load_checked(model_dir, backend=backend)  # loaded once, checked on a blank image
    except (StartupError, ValueError) as err:
        sys.exit(f"serve: {err}")
    batching = micro_batching or {}
    if batching.get("enabled"):
        from src.serving.batching import with_micro_batching

        predictor = with_micro_batching(predictor, batching["max_batch"], batching["max_wait_ms"])
    try:
        app = create_app(predictor, limits=limits, body_timeout_s=body_timeout_s, workers=workers, check=False,
                         max_queue=max_queue, retry_after_s=retry_after_s)
    except ValueError as err:
        sys.exit(f"serve: {err}")
    logging.getLogger("bincount.access").setLevel(log_level.upper())  # one line per request at info
    run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=timeout_keep_alive,
        header_timeout_s=header_timeout_s, max_header_bytes=max_header_bytes, limit_concurrency=limit_concurrency)
