"""Central's HTTP conventions in the stand-in: error bodies (``{message, code}``), the headers
of its replies (``Date`` from the stand-in's clock, caching, OData and OpenRosa headers), chunked
request bodies, authentication, and the handler the API families (``_central_openrosa``,
``_central_rest``, ``_central_odata``) add their routes to."""

from __future__ import annotations

import base64
import email.utils
import json
import re
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape

if TYPE_CHECKING:
    from pipelines.demo.central_server import CentralStandIn

_SURROGATE = re.compile("[\ud800-\udfff]")


def _node_json(body: Any, compact: bool = False) -> bytes:
    """JSON as Node's ``JSON.stringify`` (real Central) writes it: a lone surrogate, which phones'
    keyboards do produce, as the escape ``\\udXXX`` rather than an encoding error; ``compact``
    without spaces, as Node writes the rows of a feed."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":") if compact else None)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text).encode("utf-8")


def _download(kind: str, name: str) -> dict[str, str]:
    """``Content-Disposition`` as Central sends it (``inline`` or ``attachment``)."""
    return {"Content-Disposition": f"{kind}; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"}


def _error(status: int, code: float, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"message": message, "code": code}


NOT_FOUND = _error(404, 404.1, "Could not find the resource you were looking for.")
NO_AUTH = _error(401, 401.2, "Could not authenticate with the provided credentials.")
HTTPS_ONLY = _error(401, 401.3, "This authentication method is only available over HTTPS")
FORBIDDEN = _error(
    403, 403.1, "The authentication you provided does not have rights to perform that action."
)
_ODATA = {"OData-Version": "4.0"}
_OPENROSA = {
    "Content-Language": "en",
    "X-OpenRosa-Version": "1.0",
    "X-OpenRosa-Accept-Content-Length": "100000000",
}


def _xml_reply(status: int, text: str, headers: dict[str, str] | None = None) -> tuple[Any, ...]:
    ctype = {"Content-Type": "text/xml; charset=utf-8"}
    return status, text.encode("utf-8"), {**(headers or {}), **ctype}


def _openrosa_error(status: int, message: str) -> tuple[Any, ...]:
    return _xml_reply(
        status,
        '\n  <OpenRosaResponse xmlns="http://openrosa.org/http/response" items="0">\n'
        f'    <message nature="error">{escape(message)}</message>\n  </OpenRosaResponse>',
    )


class _CentralHandler(BaseHTTPRequestHandler):
    """The request plumbing; ``_route`` (in :mod:`pipelines.demo.central_server`) answers."""

    central: ClassVar[CentralStandIn]  # set per server by CentralStandIn
    protocol_version = "HTTP/1.1"
    # One buffered write per response and no Nagle: otherwise headers and body go out
    # as two segments and each request waits ~40 ms for a delayed ACK.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header (RFC 9110 IMF-fixdate, whole seconds) from the stand-in's
        # clock, the one its submission timestamps come from, as on a real server.
        return email.utils.format_datetime(self.central.now(), usegmt=True)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing --
    def _send(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        chunked: bool = False,
    ) -> None:
        headers = dict(headers or {})
        pieces: Iterator[bytes] | None = None
        if body is None:  # 204: no body, no Content-Type
            data, ctype = b"", None
        elif isinstance(body, bytes):
            data, ctype = body, headers.pop("Content-Type", "application/octet-stream")
        elif isinstance(body, Iterator):  # a feed, sent as it is made (chunked)
            data, pieces = b"", body
            ctype = headers.pop("Content-Type", "application/json; charset=utf-8")
        else:
            data = _node_json(body)
            ctype = headers.pop("Content-Type", "application/json; charset=utf-8")
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        if self.command in ("GET", "HEAD"):
            self.send_header("Cache-Control", "private, no-cache")
            self.send_header("Vary", "Accept-Encoding, Origin")
        else:
            self.send_header("Cache-Control", "no-store")
            self.send_header("Vary", "*")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Keep-Alive", "timeout=5")
        if self.command == "HEAD" or body is None:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
        elif chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in pieces if pieces is not None else (data,):
                if piece:  # an empty chunk would end the body
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # pyodk streams attachment uploads with Transfer-Encoding: chunked
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _dispatch(self, method: str) -> None:
        if self.central.costs.round_trip_s:
            time.sleep(self.central.costs.round_trip_s)
        split = urlsplit(self.path)
        segs = [unquote(s) for s in split.path.split("/")[1:]]
        query = parse_qsl(split.query, keep_blank_values=True)
        result = self._route(method, segs, dict(query))
        if result is None:
            result = NOT_FOUND
        status, body, *rest = result
        headers = rest[0] if rest else {}
        self._send(status, body, dict(headers), chunked=bool(rest and len(rest) > 1))

    def _auth(self) -> tuple[int, dict[str, Any]] | None:
        """None for the admin, else Central's 401 for these credentials."""
        auth = self.headers.get("Authorization", "")
        https = self.headers.get("X-Forwarded-Proto", "") == "https"
        if auth.startswith("Bearer "):
            return None if auth[7:] in self.central.tokens else NO_AUTH
        if auth.startswith("Basic "):
            if not https:
                return HTTPS_ONLY
            try:
                pair = base64.b64decode(auth[6:]).decode("utf-8", "replace")
            except ValueError:
                return NO_AUTH
            user, _, password = pair.partition(":")
            admin = (self.central.email, self.central.password)
            return None if (user, password) == admin else NO_AUTH
        session = re.search(r"(?:^|;\s*)session=([^;]+)", self.headers.get("Cookie", ""))
        if auth or not session:
            return NO_AUTH
        if not https:  # cookies are for browsers, and only over HTTPS
            return HTTPS_ONLY
        ok = self.command in ("GET", "HEAD") and unquote(session.group(1)) in self.central.tokens
        return None if ok else NO_AUTH

    def _route(self, method: str, segs: list[str], q: dict[str, str]) -> Any:
        raise NotImplementedError  # pragma: no cover - CentralStandIn's handler routes
