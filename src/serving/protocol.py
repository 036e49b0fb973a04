"""uvicorn's h11 protocol with guards for what reaches it before the app does: a deadline for a
request's line and headers, a header-size cap that holds however the bytes arrive, refusal of
ambiguous framing, and JSON error bodies (with the security headers) for every refusal.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and h11 caps an *incomplete*
header (``h11_max_incomplete_event_size``), but:
- a freshly opened connection that sends nothing, or its headers one byte a second, is held
  forever; the app's body deadline cannot see it either;
- headers that arrive complete in one read are never measured by h11 (a 100 KB header got 200);
- h11 reads a request carrying both ``Content-Length`` and ``Transfer-Encoding`` as chunked and
  keeps the connection: the classic request-smuggling shape. RFC 9112 6.1: such a message may be
  refused, and the connection must be closed; we refuse it (400) and close.

A refusal is written, the write side is shut, and what the client still sends is read and dropped
for up to ``LINGER_S`` before the socket closes (a "lingering close", as nginx does): closing a
socket with unread bytes makes the kernel send a reset, which can destroy the 400 before the
client reads it (a 1 MB header got a reset instead of the JSON 400).
"""

from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from src.serving.security import SECURITY_HEADERS

log = logging.getLogger("bincount.access")

LINGER_S = 2.0  # how long a refused connection's further bytes are read and dropped
LINGER_MAX_BYTES = 16 * 1024 * 1024  # ... and how many, at most


def _raw_response(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"error": detail, "status": status}).encode()
    headers = "".join(f"{name}: {value}\r\n" for name, value in SECURITY_HEADERS)
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{headers}connection: close\r\n\r\n")
    return head.encode() + body


def _header_bytes(event: h11.Request) -> int:
    """The request line and headers as sent (h11 keeps names lower-cased, values stripped)."""
    return (len(event.method) + len(event.target) + 11  # "M T HTTP/1.1\r\n"
            + sum(len(name) + len(value) + 4 for name, value in event.headers.raw_items()) + 2)


class _Refused(h11.RemoteProtocolError):
    """A request h11 would accept but we refuse; its message is the client's 400."""


def guarded_h11(header_timeout_s: float, max_header_bytes: int = 16 * 1024) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass for ``uvicorn.Config(http=...)``."""

    class GuardedConnection(h11.Connection):
        refusal: str | None = None  # why the last request was refused (the 400's message)

        def next_event(self):  # type: ignore[override]
            try:
                event = super().next_event()
            except h11.RemoteProtocolError as err:
                self.refusal = self.refusal or _h11_reason(err, max_header_bytes)
                raise
            if isinstance(event, h11.Request):
                names = {name.lower() for name, _ in event.headers}
                if b"transfer-encoding" in names and b"content-length" in names:
                    self.refusal = ("Both Content-Length and Transfer-Encoding were sent (ambiguous framing, "
                                    "RFC 9112 6.1); send one of them. Connection closed.")
                    raise _Refused(self.refusal)
                size = _header_bytes(event)
                if size > max_header_bytes:
                    self.refusal = (f"Request line and headers of {size:,} bytes exceed the limit of "
                                    f"{max_header_bytes:,} bytes; send smaller headers.")
                    raise _Refused(self.refusal)
            return event

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _lingering = False
        _dropped = 0

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.conn = GuardedConnection(h11.SERVER, max_header_bytes)

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
            if self._lingering:  # refused: drop what the client still sends, then close
                self._dropped += len(data)
                if self._dropped > LINGER_MAX_BYTES:
                    self.transport.close()
                return
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

        def _refuse(self, status: int, reason: str, detail: str) -> None:
            """Write a JSON error, shut the write side, drop further input for a while, close."""
            self._disarm()
            log.info("- - %d 0.0 ms (refused before the app: %s)", status, detail[:200])
            self.transport.write(_raw_response(status, reason, detail))
            self._lingering = True
            try:
                if self.transport.can_write_eof():
                    self.transport.write_eof()
                self.transport.resume_reading()
            except (OSError, RuntimeError):
                self.transport.close()
                return
            self.loop.call_later(LINGER_S, self.transport.close)

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE:
                self._refuse(408, "Request Timeout",
                             f"No complete request line and headers within {header_timeout_s:g} s; connection closed")
            else:
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            reason, self.conn.refusal = self.conn.refusal, None
            if reason is None:
                reason = f"{msg} A body needs a Content-Length or Transfer-Encoding: chunked header."
            else:
                reason = f"{msg.rstrip('.')}: {reason}"
            self._refuse(400, "Bad Request", reason)

    return GuardedH11Protocol


def _h11_reason(err: h11.RemoteProtocolError, max_header_bytes: int) -> str | None:
    """h11's own refusals in words; None keeps the generic message."""
    text = str(err)
    if "Receive buffer too long" in text or getattr(err, "error_status_hint", None) == 431:
        return (f"Request line and headers exceed the limit of {max_header_bytes:,} bytes; "
                "send smaller headers.")
    return None
