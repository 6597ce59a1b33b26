"""A threaded HTTP server on an ephemeral loopback port: the lifecycle the demo's Central
server shares with the test stand-ins (``tests/standins``)."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LoopbackServer:
    """An HTTP server on an ephemeral loopback port, served from a thread; a context manager."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self._server = _Server(("127.0.0.1", 0), handler)
        # a short poll: stop() waits for the loop to notice, and tests start many servers
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed or timed out mid-response is expected (a pull stopped half-way).
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)
