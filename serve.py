"""Serve a model artifact: `python serve.py model_dir=<run>/model [backend=onnx|onnx-int8] [port=8080]`.

The artifact is validated at start-up (config, weights, one forward pass): a broken one exits with
status 1 and one line on stderr instead of serving errors. Limits and timeouts: configs/serve.yaml.
"""

import sys

import hydra
from omegaconf import DictConfig

import src  # noqa: F401  (sets PROJECT_ROOT for the configs)


@hydra.main(version_base="1.3", config_path="configs", config_name="serve")
def main(cfg: DictConfig) -> None:
    import torch

    from src.serving.app import create_app, run
    from src.serving.limits import Limits
    from src.serving.startup import StartupError, load_checked

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)  # OnnxRunner follows torch's thread count
    try:
        limits = Limits(**{k: cfg[k] for k in ("max_body_bytes", "max_pixels", "max_images", "max_request_pixels")})
        predictor = load_checked(cfg.model_dir, backend=cfg.backend)  # loaded once, checked on a blank image
    except (StartupError, ValueError) as err:
        sys.exit(f"serve: {err}")
    if cfg.micro_batching.enabled:
        from src.serving.batching import with_micro_batching

        predictor = with_micro_batching(predictor, cfg.micro_batching.max_batch, cfg.micro_batching.max_wait_ms)
    app = create_app(predictor, limits=limits, body_timeout_s=cfg.body_timeout_s, workers=cfg.workers, check=False)
    run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, timeout_keep_alive=cfg.timeout_keep_alive,
        header_timeout_s=cfg.header_timeout_s, max_header_bytes=cfg.max_header_bytes,
        limit_concurrency=cfg.limit_concurrency)


if __name__ == "__main__":
    main()
