"""What one client may cost the server: the size of its request body and the time it may take to
send its request. Without these a client could hold memory with a 30 MB body, or a connection (and
its file descriptor) for ever by sending its headers a byte a minute.

- RequestLimits (ASGI middleware): a declared Content-Length over the limit is answered 413 before any
  of the body is read; a body without one (chunked) is counted as it arrives and refused the moment
  it passes the limit. Either way at most `limit` bytes are ever held.
- timed_h11(seconds): uvicorn's HTTP/1.1 protocol with a deadline for each request, from the
  connection's start (or the previous response's end) until the request's last byte: a client
  still sending when it passes gets 408 and its connection is closed. uvicorn has a keep-alive
  timeout between requests but none while one is being received.
- Headers: h11 refuses (400) a request whose headers are still incomplete past MAX_HEADER_BYTES;
  headers that arrive complete in one read escape that check, so RequestLimits also answers 431 to any
  request line + headers larger than MAX_HEADER_BYTES.
"""

from __future__ import annotations

import json
import logging

from starlette.exceptions import HTTPException

log = logging.getLogger("tmd.serve")
MAX_HEADER_BYTES = 16 * 1024  # the request line and all headers together


def error_bytes(message: str, kind: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def too_large_message(limit: int) -> str:
    return f"request body too large: this server takes at most {limit} bytes (--max-body-size)"


class BodyTooLarge(HTTPException):
    """Raised from `receive` mid-body; FastAPI re-raises HTTPExceptions, so the app's handler
    answers it as a 413 JSON error like any other."""

    def __init__(self, limit: int):
        super().__init__(413, too_large_message(limit))


class RequestLimits:
    def __init__(self, app, limit: int, on_refused=lambda: None):
        self.app, self.limit, self.on_refused = app, limit, on_refused

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        head = len(scope["raw_path"]) + len(scope["query_string"]) + sum(len(k) + len(v) + 4
                                                                          for k, v in scope["headers"])
        if head > MAX_HEADER_BYTES:
            self.on_refused()
            return await self._refuse(send, 431, f"request headers are {head} bytes; this server takes at most "
                                                 f"{MAX_HEADER_BYTES}", "headers_too_large")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            self.on_refused()
            return await self._refuse(send, 413, too_large_message(self.limit), "request_too_large")
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    self.on_refused()
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, send, status: int, message: str, code: str) -> None:
        # No "Connection: close": uvicorn then reads and drops the rest of the body (the request
        # deadline bounds how long), so the client sees this answer instead of a reset connection.
        body = error_bytes(message, "invalid_request_error", code)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def timed_h11(seconds: float):
    """uvicorn's H11Protocol with a per-request deadline of `seconds` (a class, as uvicorn.Config's
    `http` takes one)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    receiving = (h11.IDLE, h11.SEND_BODY)  # the client's states while its request is incomplete

    class TimedH11Protocol(H11Protocol):
        _deadline = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state not in receiving:
                self._disarm()  # the request is complete (or the connection is failing anyway)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._deadline is None:
                self._arm()  # the next request on this connection gets its own deadline

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or self.conn.their_state not in receiving:
                return
            reading_body = self.conn.their_state is h11.SEND_BODY
            mid_request = reading_body or bool(self.conn.trailing_data[0])  # some headers came
            if mid_request and not (reading_body and self.cycle.response_started):
                # Written raw, not through h11: h11 cannot answer a request whose headers never
                # arrived, and the connection is closed right after.
                body = error_bytes(f"request not received within {seconds:g} s (--request-timeout)",
                                   "invalid_request_error", "request_timeout")
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                     b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                log.warning("%s: request not received within %g s; connection closed",
                            "%s:%d" % self.client if self.client else "a client", seconds)
            self.transport.close()  # an idle connection just closes; an app reading the body sees a disconnect

    return TimedH11Protocol
