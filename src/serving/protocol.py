"""uvicorn's h11 protocol with two guards: a deadline for a request's line and headers, and JSON
error bodies for what uvicorn refuses before the app sees it.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and caps an incomplete header
(``h11_max_incomplete_event_size``), but a freshly opened connection that sends nothing, or sends
its headers one byte a second, is held forever; the app's body deadline cannot see it either.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def _raw_response(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"error": detail, "status": status}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


def guarded_h11(header_timeout_s: float) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass for ``uvicorn.Config(http=...)``."""

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def data_received(self, data: bytes) -> None:
            if self._header_timer is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request on a kept-alive connection starts its clock
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # headers complete: the app's body deadline takes over

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()  # idle now: uvicorn's keep-alive timeout applies

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE:
                self.transport.write(_raw_response(
                    408, "Request Timeout",
                    f"No complete request line and headers within {header_timeout_s:g} s; connection closed"))
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            self.transport.write(_raw_response(
                400, "Bad Request",
                f"{msg} A body needs a Content-Length or Transfer-Encoding: chunked header."))
            self.transport.close()

    return GuardedH11Protocol
