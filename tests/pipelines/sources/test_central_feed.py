"""Reading Central's OData feed as it arrives (``Feed``, ``read_feed``): whatever chunks the
body comes in, the rows are those ``json.loads`` reads from the whole body; a body cut
anywhere hands out only whole rows, then says it broke off; a body that is not a feed is
read whole and said what it is; gzip is undone on the way."""

from __future__ import annotations

import gzip
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import hypothesis
import pytest
import requests
from hypothesis import strategies as st

from pipelines._http import json_body
from pipelines.errors import SourceError
from pipelines.sources._central_records import Feed, FeedBroken, read_feed

_SURROGATE = re.compile("[\ud800-\udfff]")


def node_body(rows: list, tail: dict | None = None, spaced: bool = False) -> bytes:
    """A feed as Central (Node) writes it: rows first, lone surrogates as ``\\udXXX``."""
    body = {"value": rows, **(tail or {"@odata.context": "…/$metadata#Submissions"})}
    seps = (", ", ": ") if spaced else (",", ":")
    text = json.dumps(body, ensure_ascii=False, separators=seps)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text).encode("utf-8")


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


text = st.text(st.characters(blacklist_categories=()), max_size=12)  # surrogates included
scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
value = st.recursive(scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(text, c, max_size=4), max_leaves=12)  # fmt: skip
rows = st.lists(st.dictionaries(text, value, max_size=5), max_size=8)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    rows=rows, cuts=st.lists(st.integers(0, 10_000), max_size=12), spaced=st.booleans()
)
def test_any_chunking_gives_the_rows_json_loads_reads(rows, cuts, spaced) -> None:
    body = node_body(rows, spaced=spaced)
    feed = Feed(split(body, cuts))
    assert feed.start()
    got = list(feed.rows())
    expected = json.loads(body)
    assert json.dumps(got) == json.dumps(expected["value"])  # lone surrogates kept as such
    assert feed.tail == {"@odata.context": "…/$metadata#Submissions"}


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(rows=rows, cut=st.integers(0, 10_000), chunk=st.integers(1, 64))
def test_a_body_cut_anywhere_hands_out_whole_rows_then_says_so(rows, cut, chunk) -> None:
    body = node_body(rows)
    cut = cut % len(body)  # at least the last byte is missing
    part = body[:cut]
    feed = Feed(part[i : i + chunk] for i in range(0, len(part), chunk))
    if not feed.start():
        assert cut < 16 and feed.head == part
        return
    got = []
    with pytest.raises(FeedBroken):
        got.extend(feed.rows())
    assert json.dumps(got) == json.dumps(json.loads(body)["value"][: len(got)])


def test_the_odata_keys_after_the_rows_are_read() -> None:
    tail = {"@odata.context": "c", "@odata.nextLink": "http://x/next", "@odata.count": 3}
    feed = Feed([node_body([{"a": 1}], tail)])
    assert feed.start() and list(feed.rows()) == [{"a": 1}]
    assert feed.tail == tail
    empty = Feed([b'{"value":[],"@odata.context":"c"}'])
    assert empty.start() and list(empty.rows()) == [] and empty.tail == {"@odata.context": "c"}


@pytest.mark.parametrize(
    "body",
    [
        b"<!DOCTYPE html><html><body>\xe8\xaf\xb7\xe7\x99\xbb\xe5\xbd\x95</body></html>",
        b'{"@odata.context":"c","value":[{"a":1}]}',  # JSON, but not rows first
        b'{"message":"Could not find the resource you were looking for.","code":404.1}',
        b"",
    ],
    ids=["html", "keys-in-another-order", "error-json", "empty"],
)
def test_a_body_that_is_not_a_feed_is_left_for_the_caller(body: bytes) -> None:
    feed = Feed([body[:5], body[5:]])
    assert not feed.start()
    assert feed.head == body  # everything read so far, to read the rest and say what it is


def test_text_that_is_not_json_in_the_middle_is_an_error_not_a_break() -> None:
    feed = Feed([b'{"value":[{"a":1}', b' {"b":2}]}'])  # no comma between two rows
    assert feed.start()
    with pytest.raises(ValueError, match="expected ','"):
        list(feed.rows())
    bad = Feed([b'{"value":[{"a":1},', b'{"b":"\xff\xfe"}]}'])  # not UTF-8
    assert bad.start()
    with pytest.raises(ValueError, match="not UTF-8"):
        list(bad.rows())
    assert not Feed([b'{"value":[{"a":"\xff"}]}']).start()  # in the first chunk: not a feed


def test_a_row_spread_over_many_small_chunks_is_read_whole() -> None:
    big = {"note": "巡" * 50_000, "items": [{"k": i} for i in range(2000)]}
    body = node_body([big, {"small": 1}])
    reads = []

    def chunks():
        for i in range(0, len(body), 512):
            reads.append(i)
            yield body[i : i + 512]

    feed = Feed(chunks())
    assert feed.start()
    assert list(feed.rows()) == [big, {"small": 1}]
    assert len(reads) == -(-len(body) // 512)  # each chunk read once


# ---- over real HTTP: gzip, a proxy's page ------------------------------------------------
class _Answer:
    """A real HTTP server on loopback answering every GET with one prepared body."""

    def __init__(self, body: bytes, ctype: str, gzipped: bool = False):
        answer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                data = gzip.compress(answer.body) if answer.gzipped else answer.body
                self.send_response(200)
                self.send_header("Content-Type", answer.ctype)
                if answer.gzipped:
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(data), 1000):  # as a server streams it
                    piece = data[i : i + 1000]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")

        self.body, self.ctype, self.gzipped = body, ctype, gzipped
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/feed"

    def __enter__(self) -> _Answer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _checked_json(resp: requests.Response) -> Any:
    return json_body(resp, "ODK Central", ("value",))


def test_a_gzipped_feed_is_read_as_it_arrives() -> None:
    rows = [{"__id": f"uuid:{i}", "note": f"第{i}次巡查" * 20} for i in range(300)]
    with _Answer(node_body(rows), "application/json; charset=utf-8", gzipped=True) as server:
        resp = requests.get(server.url, stream=True, timeout=10)
        got, tail = read_feed(resp, _checked_json)
        assert list(got) == rows and tail == {"@odata.context": "…/$metadata#Submissions"}


def test_a_proxys_page_in_place_of_the_feed_is_one_clear_error() -> None:
    page = "<!DOCTYPE html><html><body><h1>请登录无线网络</h1></body></html>".encode()
    with _Answer(page, "text/html; charset=utf-8") as server:
        resp = requests.get(server.url, stream=True, timeout=10)
        with pytest.raises(SourceError) as err:
            read_feed(resp, _checked_json)
    assert "answered HTTP 200 with HTML, not JSON" in str(err.value)
    assert server.url in str(err.value) and "\n" not in str(err.value)


def test_a_feed_with_its_keys_in_another_order_is_read_whole() -> None:
    body = json.dumps({"@odata.context": "c", "value": [{"a": 1}, {"b": 2}]}).encode()
    with _Answer(body, "application/json") as server:
        resp = requests.get(server.url, stream=True, timeout=10)
        got, tail = read_feed(resp, _checked_json)
        assert list(got) == [{"a": 1}, {"b": 2}] and tail["@odata.context"] == "c"
