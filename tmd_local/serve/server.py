"""uvicorn, configured for clients that misbehave and for stopping cleanly.

SIGTERM or SIGINT starts a graceful shutdown: the listening socket closes, queued questions and any
new ones are answered 503 at once, the batch under way gets `grace` seconds to finish (its clients
then get their answers), and whatever is still running after that is answered 503 before uvicorn
closes the connections. A reply is either complete or a 503: never cut off half-written.
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from .engine import Engine
from .limits import MAX_HEADER_BYTES, timed_h11

REQUEST_SECONDS = 30.0  # to send headers and body; a real request is a few KB
GRACE_SECONDS = 20.0  # a batch of short answers on 2 cores; longer ones are answered 503


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, engine: Engine, grace: float):
        super().__init__(config)
        self.engine, self.grace = engine, grace

    async def shutdown(self, sockets=None) -> None:
        self.engine.stop_taking()
        # uvicorn cancels the requests still running when its own timeout (grace + 1 s) ends; answer
        # them 503 a moment before, so none is cut off without a reply.
        timer = asyncio.get_running_loop().call_later(self.grace, self.engine.abandon_running)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()


def run_server(app, engine: Engine, sock: socket.socket, *, log_level: str,
               request_seconds: float = REQUEST_SECONDS, grace: float = GRACE_SECONDS) -> None:
    config = uvicorn.Config(app, log_level=log_level, http=timed_h11(request_seconds),
                            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                            timeout_graceful_shutdown=grace + 1)
    GracefulServer(config, engine, grace).run(sockets=[sock])
