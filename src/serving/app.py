"""The SageMaker serving contract over HTTP (``GET /ping``, ``POST /invocations``) with FastAPI.

The app wraps the very handler functions the SageMaker container calls, with a model loaded once
and checked (one forward pass) when the app is built. Bodies are read in chunks, refused past
``max_body_bytes`` (whatever Content-Length claims) and past ``body_timeout_s``; the response type
is decided before any work; at most ``workers`` requests decode images at once, and as many run
their forward pass (a micro-batched predictor lets up to its ``max_batch`` requests wait for the
shared forward, which is what fills its batches); past ``max_queue`` requests in flight a new one
gets a JSON 503 with ``Retry-After`` before its body is read; every error is a JSON body
``{"error": ..., "status": ...}``. Every response carries the security headers
(``src.serving.security``), every request is logged in one line (method, path, status, ms, bytes:
never a body, a query or a header) and counted for ``GET /metrics``; ``GET /model`` says which model
is loaded. Limits: ``src.serving.limits``, timeouts: ``run``'s settings; docs/serving_limits.md.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from src.inference.predictor import CountPredictor
from src.serving.handler import (
    JSONLINES_TYPES,
    ClientClosed,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    ServiceUnavailable,
    choose_accept,
    decode_request,
    expected_from_request,
    media_type,
    output_fn,
    predict_batch,
    strict_json,
)
from src.serving.limits import Limits
from src.serving.observe import Edge, ServerMetrics, model_description
from src.serving.protocol import guarded_h11
from src.serving.startup import check_predictor

log = logging.getLogger(__name__)
DEFAULT_MAX_QUEUE = 32  # /invocations requests in flight (waiting or running) before a 503

STATIC_DIR = Path(__file__).parent / "static"  # the page at `/`: plain HTML/JS/CSS, no CDN, no build step


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response(strict_json({"error": detail, "status": status}), status_code=status,
                    media_type="application/json", headers=headers)


class BincountApp(FastAPI):
    """FastAPI with ``Edge`` outside everything, Starlette's error middleware included: a 500
    gets the security headers, the log line and its count like any other answer."""

    edge_kwargs: dict = {}

    def build_middleware_stack(self):  # type: ignore[override]
        return Edge(super().build_middleware_stack(), **self.edge_kwargs)


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The body, refused past ``limit`` bytes (413) or when it takes over ``timeout_s`` (408, and
    the connection is closed: a slow sender must not keep it). A client that goes away mid-body
    is ``ClientClosed``: one line in the request log, no traceback."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body of {int(declared):,} bytes exceeds the limit of {limit:,} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"Request body exceeds the limit of {limit:,} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"The request body did not arrive within {timeout_s:g} s "
                             f"({size:,} bytes received); send it at once",
                             headers={"Connection": "close"}) from None
    except ClientDisconnect:
        expected = f" of {int(declared):,}" if declared and declared.isdigit() else ""
        request.state.log_note = f"client closed the connection after {size:,}{expected} body bytes"
        raise ClientClosed("The client closed the connection before its body arrived") from None
    return b"".join(chunks)


def create_app(
    predictor: CountPredictor,
    max_body_bytes: int | None = None,
    max_pixels: int | None = None,
    *,
    limits: Limits | None = None,
    body_timeout_s: float = 30.0,
    workers: int = 2,
    check: bool = True,
    max_queue: int | None = None,
    retry_after_s: int = 1,
) -> FastAPI:
    """``limits`` (``max_body_bytes``/``max_pixels`` override it); ``workers``: requests decoding at
    once (the rest wait), which bounds memory and CPU; ``check``: refuse a model that fails
    one forward pass on a blank image (``StartupError``), so ``/ping`` only ever answers for a
    model that can answer. ``max_queue``: ``/invocations`` requests in flight (reading their
    body, waiting or running; default ``DEFAULT_MAX_QUEUE``, at least the requests that can run
    at once); one more gets a JSON 503 with ``Retry-After: retry_after_s`` before its body is
    read, so waiting requests hold at most ``max_queue * max_body_bytes`` of bodies."""
    limits = Limits.from_env(max_body_bytes=max_body_bytes, max_pixels=max_pixels) if limits is None else limits
    if check:
        check_predictor(predictor)
    batcher = getattr(predictor, "batcher", None)  # with_micro_batching's: requests must wait together
    running = max(workers, batcher.max_batch) if batcher else workers
    max_queue = max(DEFAULT_MAX_QUEUE, running) if max_queue is None else max_queue
    if max_queue < running or retry_after_s < 0:
        raise ValueError(f"max_queue={max_queue} must be at least the requests that run at once ({running}: "
                         f"workers, or micro_batching.max_batch) and retry_after_s >= 0, got {retry_after_s}")
    metrics = ServerMetrics()
    in_flight = [0]  # /invocations requests admitted; the event loop is one thread, a list is enough
    app = BincountApp(title="bincount", docs_url=None, redoc_url=None, openapi_url=None)
    app.edge_kwargs = {"metrics": metrics}
    app.state.predictor = predictor
    app.state.limits = limits
    app.state.metrics = metrics
    app.state.max_queue = max_queue
    app.state.in_flight = in_flight
    decode_gate = threading.BoundedSemaphore(workers)
    slots = anyio.CapacityLimiter(running)
    metrics.queue_limit.set(max_queue)
    metrics.in_flight.set_function(lambda: in_flight[0])
    description = model_description(predictor)

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, err: RequestError) -> Response:
        return error_response(err.status_code, err.detail, err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException) -> Response:
        return error_response(err.status_code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, err: RequestValidationError) -> Response:
        return error_response(422, str(err))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> Response:
        log.exception("Inference failed")
        return error_response(500, f"Internal error: {type(err).__name__}")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/ping")
    def ping() -> dict:
        return {"status": "ok", "backend": predictor.backend}

    @app.get("/model")
    def model() -> Response:
        """Which model answers: from its model_config.json (for the page and for operators)."""
        return Response(strict_json(description), media_type="application/json")

    @app.get("/metrics")
    def prometheus() -> Response:
        body, kind = metrics.exposition()
        return Response(body, media_type=kind)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        if in_flight[0] >= max_queue:  # before the body is read: a refusal costs no memory
            raise ServiceUnavailable(
                f"The server is busy: {in_flight[0]} requests are in flight, the limit is {max_queue} "
                f"(max_queue); retry after {retry_after_s} s", headers={"Retry-After": str(retry_after_s)})
        in_flight[0] += 1
        try:
            content_type = request.headers.get("content-type")
            accept = request.headers.get("accept")
            choose_accept(accept, media_type(content_type) in JSONLINES_TYPES)  # a 406 before any work
            expected = expected_from_request(request.headers, request.query_params.getlist("expected_quantity"))
            body = await read_body(request, limits.max_body_bytes, body_timeout_s)

            def handle() -> tuple[str, str]:
                batch = decode_request(body, content_type, limits=limits, expected_quantity=expected)
                prediction = predict_batch(batch, predictor, decode_gate=decode_gate)
                metrics.count_answers(prediction.results)
                return output_fn(prediction, accept)

            payload, kind = await anyio.to_thread.run_sync(handle, limiter=slots)
        finally:
            in_flight[0] -= 1
        return Response(payload, media_type=kind)

    return app


def server_config(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    timeout_keep_alive: int = 75,
    header_timeout_s: float = 10.0,
    max_header_bytes: int = 16 * 1024,
    limit_concurrency: int | None = None,
):
    """uvicorn's settings: idle keep-alive connections close after ``timeout_keep_alive`` s (longer
    than a load balancer's 60 s idle timeout, so it never reuses a connection we just closed), a
    request line and headers must arrive within ``header_timeout_s``, headers are capped at
    ``max_header_bytes`` however they arrive (``protocol.guarded_h11``), and past
    ``limit_concurrency`` connections uvicorn answers 503 (plain text: prefer ``max_queue``)."""
    import uvicorn

    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False,
        http=guarded_h11(header_timeout_s, max_header_bytes), timeout_keep_alive=timeout_keep_alive,
        h11_max_incomplete_event_size=max_header_bytes, limit_concurrency=limit_concurrency,
    )


def run(app: FastAPI, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info", **timeouts) -> None:
    import uvicorn

    uvicorn.Server(server_config(app, host, port, log_level, **timeouts)).run()


@contextmanager
def serve_in_background(
    app: FastAPI, host: str = "127.0.0.1", start_timeout: float = 60.0, **timeouts
) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free local port in a daemon thread; yields its base URL.

    For tests and benchmarks: real HTTP without a separate process. Stops the server on exit.
    ``timeouts``: ``server_config``'s settings.
    """
    import uvicorn

    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(server_config(app, host, port, "warning", **timeouts))
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
