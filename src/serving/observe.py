"""What the HTTP server tells its operators: one log line per request, Prometheus metrics at
``GET /metrics``, and which model is loaded at ``GET /model``.

``Edge`` is the outermost ASGI layer (outside Starlette's error middleware, so a 500 is seen too):
it adds the security headers to every response and, when the response ends, logs
``METHOD /path STATUS MS ms BYTES B`` on the ``bincount.access`` logger (INFO) and counts it. The
line never carries a body, a query string or a header (credentials live there); the path is
ASCII-escaped and cut at 200 characters, so a client cannot forge log lines.

Metrics (a registry per app, prometheus-client's text format):
- ``bincount_requests_total{path, status}``: answers by route (unknown paths count as ``other``,
  static files as ``/static``: a scanner cannot blow up the label set);
- ``bincount_request_duration_seconds{path}``: latency histogram, first byte in to last byte out;
- ``bincount_answers_total`` / ``bincount_answers_review_total`` and ``bincount_review_share``:
  images answered and the share flagged ``"review": true`` (artifacts with a review threshold);
- ``bincount_in_flight_requests`` and ``bincount_max_queue``: the bounded queue's depth and limit.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from src.serving.security import SECURITY_HEADERS

log = logging.getLogger("bincount.access")

ROUTES = ("/", "/ping", "/invocations", "/metrics", "/model")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ENCODED_HEADERS = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS]


def route_label(path: str) -> str:
    if path in ROUTES:
        return path
    return "/static" if path.startswith("/static/") else "other"


def log_path(path: str) -> str:
    """``path`` safe for one log line: non-ASCII and control characters escaped, at most 200 chars."""
    text = ascii(path)[1:-1]
    return text if len(text) <= 200 else f"{text[:200]}..."


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("bincount_requests", "HTTP answers by route and status", ["path", "status"], registry=r)
        self.latency = Histogram("bincount_request_duration_seconds", "Request latency, first byte in to last out",
                                 ["path"], buckets=LATENCY_BUCKETS, registry=r)
        self.answers = Counter("bincount_answers", "Images answered (error records excluded)", registry=r)
        self.review = Counter("bincount_answers_review", "Answers flagged for review", registry=r)
        self.review_share = Gauge("bincount_review_share", "Share of answers flagged for review (0 before any)",
                                  registry=r)
        self.review_share.set_function(self._share)
        self.in_flight = Gauge("bincount_in_flight_requests", "/invocations requests in flight", registry=r)
        self.queue_limit = Gauge("bincount_max_queue", "/invocations requests in flight before a 503", registry=r)

    def _share(self) -> float:
        answered = self.answers._value.get()
        return self.review._value.get() / answered if answered else 0.0

    def count_answers(self, results: list[dict[str, Any]]) -> None:
        answered = [r for r in results if "error" not in r]
        self.answers.inc(len(answered))
        self.review.inc(sum(1 for r in answered if r.get("review") is True))

    def observe(self, path: str, status: int, seconds: float) -> None:
        route = route_label(path)
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Edge:
    """ASGI middleware: security headers on every response, one log line and the metrics per request."""

    def __init__(self, app, metrics: ServerMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, size = [500], [0]

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *[(k, v) for k, v in _ENCODED_HEADERS if k not in names]]
            elif message["type"] == "http.response.body":
                size[0] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - started
            note = (scope.get("state") or {}).get("log_note")
            log.info("%s %s %d %.1f ms %d B%s", scope.get("method", "-"), log_path(scope.get("path", "")),
                     status[0], seconds * 1000, size[0], f" ({note})" if note else "")
            if self.metrics is not None:
                self.metrics.observe(scope.get("path", ""), status[0], seconds)


def model_description(predictor: Any) -> dict[str, Any]:
    """``GET /model``'s body, from the loaded model's config (model_config.json)."""
    config = getattr(predictor, "config", None) or {}
    return {
        "model": {key: config.get(key) for key in ("net", "image_size", "decision_rule", "classes")},
        "provenance": config.get("provenance") or None,
    }
