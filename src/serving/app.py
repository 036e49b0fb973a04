"""The SageMaker serving contract over HTTP (``GET /ping``, ``POST /invocations``) with FastAPI.

The app wraps the very handler functions the SageMaker container calls, with a model loaded once
when the app is built. Bodies are read in chunks and refused past ``max_body_bytes`` (whatever
Content-Length claims); decoding and inference run in the thread pool, so requests are served
concurrently; every error is a JSON body ``{"error": ..., "status": ...}``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from src.inference.predictor import CountPredictor
from src.serving.handler import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_PIXELS,
    PayloadTooLarge,
    RequestError,
    decode_request,
    output_fn,
    predict_fn,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"  # the page at `/`: plain HTML/JS/CSS, no CDN, no build step


def error_response(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"error": detail, "status": status}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body of {int(declared):,} bytes exceeds the limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    predictor: CountPredictor,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FastAPI:
    app = FastAPI(title="bincount", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.predictor = predictor

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, err: RequestError) -> JSONResponse:
        return error_response(err.status_code, err.detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(422, str(err))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        log.exception("Inference failed")
        return error_response(500, f"Internal error: {type(err).__name__}")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/ping")
    def ping() -> dict:
        return {"status": "ok", "backend": predictor.backend}

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        body = await read_body(request, max_body_bytes)
        content_type = request.headers.get("content-type")
        accept = request.headers.get("accept")

        def handle() -> tuple[str, str]:
            batch = decode_request(body, content_type, max_pixels=max_pixels, max_body_bytes=max_body_bytes)
            return output_fn(predict_fn(batch, predictor), accept)

        payload, media_type = await run_in_threadpool(handle)
        return Response(payload, media_type=media_type)

    return app


def run(app: FastAPI, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info") -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


@contextmanager
def serve_in_background(app: FastAPI, host: str = "127.0.0.1", start_timeout: float = 60.0) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free local port in a daemon thread; yields its base URL.

    For tests and benchmarks: real HTTP without a separate process. Stops the server on exit.
    """
    import uvicorn

    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on {host}:{port} within {start_timeout:.0f} s")
            time.sleep(0.05)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
