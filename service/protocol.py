"""The HTTP/1.1 protocol uvicorn runs: its httptools protocol, with each request head (request line + header fields)
bounded by APG_MAX_HEADER_BYTES and APG_MAX_HEADERS, answered 431 beyond.

    uvicorn.Config(app, http=bounded_http(settings), ...)   # what service.server passes (uvicorn_options)

httptools sets no limit: a 64 MB header was read whole (it grows a header value by concatenation) and stalled the event
loop, /livez included, for seconds. h11 has a size limit, but answers 400 and costs more per request than httptools.
So this protocol counts the bytes of a head as they arrive: a head still incomplete past the limit is answered and
closed at once (at most one socket read beyond the limit is parsed), and a complete head is checked exactly before
the app sees it. Without httptools, uvicorn's h11 gets the size limit (answered 400) and the count is not enforced.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

from service.errors import HeaderFieldsTooLarge
from service.settings import Settings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # no httptools: uvicorn[standard] brings it on CPython
    HttpToolsProtocol = None


def bounded_http(settings: Settings) -> Any:
    """uvicorn's `http` option: this protocol with the settings' limits, or "h11" when httptools is missing."""
    if HttpToolsProtocol is None:
        return "h11"
    return functools.partial(
        BoundedHttpToolsProtocol, max_head_bytes=settings.max_header_bytes, max_headers=settings.max_headers
    )


def _refusal(message: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = orjson.dumps(HeaderFieldsTooLarge(message).body())
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return [*headers, (b"connection", b"close")], body


async def _answer_431(scope: Any, receive: Any, send: Any, message: str) -> None:
    """The ASGI app of a complete head over the limits (instead of the service: it never sees the request)."""
    headers, body = _refusal(message)
    await send({"type": "http.response.start", "status": 431, "headers": headers})
    await send({"type": "http.response.body", "body": body})


if HttpToolsProtocol is not None:

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, max_head_bytes: int, max_headers: int, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.max_head_bytes, self.max_headers = max_head_bytes, max_headers
            self._head_bytes: int | None = 0  # bytes received since the current head began; None: in a body

        def data_received(self, data: bytes) -> None:
            if self._head_bytes is not None:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._head_bytes is not None and not self.transport.is_closing():  # the head is still incomplete
                refused = self._over_limits(complete=False)
                if refused is not None:
                    headers, body = _refusal(refused)
                    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
                    self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n" + lines + b"\r\n" + body)
                    self.transport.close()

        def on_headers_complete(self) -> None:
            refused = self._over_limits(complete=True)
            self._head_bytes = None
            if refused is None:
                super().on_headers_complete()
                return
            app, self.app = self.app, functools.partial(_answer_431, message=refused)
            try:  # uvicorn's own request cycle runs the refusal (as it does its limit_concurrency 503)
                super().on_headers_complete()
            finally:
                self.app = app

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._head_bytes = 0  # what arrives next is the next request's head

        def _over_limits(self, complete: bool) -> str | None:
            if self.headers is not None and len(self.headers) > self.max_headers:
                return f"more than {self.max_headers} header fields (APG_MAX_HEADERS)"
            size = self._head_bytes or 0  # everything received so far: an upper bound of the head's size
            if size > self.max_head_bytes and complete:  # the exact size (this read may hold part of the body)
                size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.max_head_bytes:
                return f"request line and header fields larger than {self.max_head_bytes} bytes (APG_MAX_HEADER_BYTES)"
            return None
