"""Fault injection for the test stand-ins, in one place for the Central and the Kobo one.

A stand-in server mixes in :class:`Faults` (before its own base) and gets:

* ``faults``: :class:`Fault` entries a test appends;
* ``requests``: every request it was sent, as ``(method, path?query)``;
* ``before``: a hook called with ``(method, path?query)`` before a request is answered, where a
  test changes the server mid-pull or kills the client.

Its request handler mixes in :class:`InjectFaults` (first among its bases) and words an
injected error in the server's own style (``_injected``). The faults act before the server
routes the request, so the product's servers hold no fault code.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any


@dataclass
class Fault:
    """Misbehave on matching requests (the path contains ``path_contains``). ``nth`` counts the
    matching requests this fault sees, from 1; it then fires ``times`` times.

    * ``"status"``: answer ``status`` (with ``Retry-After: retry_after`` when given);
    * ``"delay"``: wait ``delay`` seconds, then answer as usual (a timeout for a shorter
      read timeout); the faults after it still see the request;
    * ``"reset"``: close the connection with a TCP reset, as a dropped mobile link does;
    * ``"repeat_page"``: send again, byte for byte, the last 200 answer to a GET of the same
      path (a page sent twice);
    * ``"cut"``: answer as usual, but once ``after`` bytes of the answer (headers included)
      are out, wait ``delay`` seconds (a stalled link: a timeout for a shorter read
      timeout), then close with a TCP reset: a stream broken midway;
    * ``"call"``: answer as usual, calling ``action`` once ``after`` bytes are out (a test
      kills the client there, in the middle of a streamed feed).
    """

    kind: str  # "status" | "delay" | "reset" | "repeat_page" | "cut" | "call"
    path_contains: str = ".svc/Submissions"
    nth: int = 1
    times: int = 1
    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    after: int = 0
    action: Callable[[], None] | None = None
    seen: int = 0
    fired: int = 0


class Faults:
    """The server side: what a test arms, and what the server was asked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []  # (method, raw path?query)
        self.before: Callable[[str, str], None] | None = None  # hook(method, path)
        self.last_replies: dict[str, bytes] = {}  # path → the last 200 answer to a GET, as sent
        super().__init__(*args, **kwargs)


class InjectFaults(BaseHTTPRequestHandler):
    """The handler side; ``faulty`` is the :class:`Faults` server the request came to."""

    @property
    def faulty(self) -> Faults:
        raise NotImplementedError

    def _injected(self, status: int, headers: dict[str, str]) -> None:
        """Send an injected error ``status`` in the server's own style."""
        raise NotImplementedError

    if TYPE_CHECKING:

        def _body(self) -> bytes: ...  # the server's handler reads the request body

    def setup(self) -> None:
        super().setup()
        self.wfile = _Recorder(self.wfile, self._tripped)  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        recorder: _Recorder = self.wfile  # type: ignore[assignment]
        recorder.sent.clear()
        recorder.trip = None
        super().handle_one_request()
        if recorder.sent.startswith(b"HTTP/1.1 200 ") and self.command == "GET":
            self.faulty.last_replies[self.path.split("?")[0]] = bytes(recorder.sent)

    def parse_request(self) -> bool:
        # Runs once the request line and headers are read, before the server routes it:
        # returning False here means the request has been answered (or dropped).
        if not super().parse_request():
            return False
        server = self.faulty
        server.requests.append((self.command, self.path))
        if server.before:
            server.before(self.command, self.path)
        if not self._misbehave(server):
            return True
        if not self.close_connection:
            self.wfile.flush()
        return False

    def _misbehave(self, server: Faults) -> bool:
        """Apply the faults that match this request; True when one answered it."""
        for f in server.faults:
            if f.path_contains not in self.path:
                continue
            f.seen += 1
            if f.seen < f.nth or f.fired >= f.times:
                continue
            f.fired += 1
            if f.kind == "status":
                self._body()  # read it, so the connection stays usable
                self._injected(f.status, {"Retry-After": f.retry_after} if f.retry_after else {})
                return True
            if f.kind == "delay":
                time.sleep(f.delay)
            elif f.kind in ("cut", "call"):
                self.wfile.trip = (f.after, f)  # type: ignore[attr-defined]
            elif f.kind == "reset":
                self._reset()
                return True
            elif f.kind == "repeat_page":
                last = server.last_replies.get(self.path.split("?")[0])
                if last:
                    self.wfile.write(last)
                    return True
        return False

    def _reset(self) -> None:
        self.close_connection = True
        # SO_LINGER 0: close with RST, what a dropped mobile link looks like
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _tripped(self, fault: Fault) -> None:
        """A "cut" or "call" fault's moment: its ``after`` bytes are out."""
        if fault.kind == "call":
            if fault.action is not None:
                fault.action()
            return
        time.sleep(fault.delay)
        self._reset()
        raise ConnectionResetError("injected: the answer was cut")  # stops the handler quietly


class _Recorder:
    """A handler's output stream that keeps a copy of the reply being written, and trips a
    fault once ``trip[0]`` bytes of it are out."""

    def __init__(self, stream: Any, tripped: Callable[[Fault], None]) -> None:
        self._stream = stream
        self._tripped = tripped
        self.sent = bytearray()
        self.trip: tuple[int, Fault] | None = None

    def write(self, data: bytes) -> int:
        if self.trip is not None and len(self.sent) + len(data) >= self.trip[0]:
            after, fault = self.trip
            self.trip = None
            head = bytes(data[: max(0, after - len(self.sent))])
            self.sent += head
            self._stream.write(head)
            self._stream.flush()
            self._tripped(fault)
            data = data[len(head) :]
        self.sent += data
        return self._stream.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
