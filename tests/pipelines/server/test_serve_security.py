"""`manyi serve` against the findings of its security review (OWASP ASVS L1, issue 11 item 6),
each on a real server on loopback (:mod:`._server`): a valid link is never throttled, stalled
bodies time out, parsing uploads keeps memory small, hostile XML and file names are refused,
the access log cannot be forged, the security headers are sent, and a refused resend leaves
no photo behind."""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from pipelines.errors import scrub
from pipelines.server.openrosa import MAX_XML_BYTES
from tests.pipelines.server._collect import Collect, multipart
from tests.pipelines.server._server import Server, start_server
from tests.pipelines.server.test_openrosa import JPEG, Served, _people, _rows, sweep_xml

BODY_TIMEOUT_S = 1.5  # the server's 300 s, shortened through MANYI_SERVE_BODY_TIMEOUT_S


@pytest.fixture(scope="module")
def own(built_forms, tmp_path_factory) -> Served:
    """A server of this module's own: the throttle counts per address (every test comes from
    127.0.0.1) and the body timeout is short."""
    data = tmp_path_factory.mktemp("serve-security")
    tokens = _people(data)
    server = start_server(
        data, built_forms.out_dir, env={"MANYI_SERVE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    )
    version = next(b.version for b in built_forms.built if b.form_id == "sanitation_sweep")
    yield Served(server, tokens, version, built_forms.out_dir)
    server.stop()


def _blobs(data_dir: Path) -> set[str]:
    folder = data_dir / "attachments"
    return {p.name for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()


def _log_until(server: Server, needle: str, timeout: float = 5.0) -> str:
    """The server's log once it holds ``needle`` (the access line follows the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        log = server.log()
        if needle in log or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def _vm(pid: int, field: str) -> int:
    """``VmRSS``/``VmHWM`` of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


# ---- 1. a stale phone behind a carrier NAT locks no one out ------------------------------
def test_a_valid_link_is_served_from_an_address_throttled_for_bad_links(own) -> None:
    stale = f"{own.server.url}/key/{'x' * 43}"
    statuses = [httpx.get(f"{stale}/formList").status_code for _ in range(12)]
    assert statuses[:10] == [403] * 10 and statuses[10:] == [429, 429]
    with Collect(own.link("cadre")) as colleague:  # same address (127.0.0.1), valid link
        assert colleague.request("GET", colleague.form_list_url()).status_code == 200
        iid = f"uuid:{uuid.uuid4()}"
        (answer,) = colleague.send(sweep_xml(own.version, iid, photos=()))  # HEAD, then POST
        assert answer.status == 201
    assert len(_rows(own, iid)["local"]) == 1
    r = httpx.get(f"{own.server.url}/key/{own.tokens['gone']}/formList")  # still a bad link
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 60


# ---- 2. a stalled body -------------------------------------------------------------------
def test_a_body_that_stalls_past_the_timeout_is_408_and_stores_nothing(own) -> None:
    iid = f"uuid:{uuid.uuid4()}"
    body, ctype = multipart(sweep_xml(own.version, iid), {"1764374400001.jpg": JPEG}, "t", False)
    head = (
        f"POST /key/{own.tokens['cadre']}/submission HTTP/1.1\r\nHost: x\r\n"
        f"X-OpenRosa-Version: 1.0\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    before = _blobs(own.server.data_dir)
    with socket.create_connection(("127.0.0.1", own.server.port), timeout=30) as s:
        s.sendall(head + body[: len(body) - 100])  # all but the end, then silence
        start = time.monotonic()
        reply = b""
        while b"</OpenRosaResponse>" not in reply and (chunk := s.recv(65536)):
            reply += chunk
        waited = time.monotonic() - start
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"x-openrosa-version: 1.0" in reply.lower() and "提交超时".encode() in reply
    assert BODY_TIMEOUT_S - 0.5 < waited < BODY_TIMEOUT_S + 10
    assert _rows(own, iid) == {"sub": [], "local": [], "att": [], "quarantine": []}
    assert _blobs(own.server.data_dir) == before
    with Collect(own.link("cadre")) as phone:  # the parse slot it held is free again
        (answer,) = phone.send(sweep_xml(own.version), {"1764374400001.jpg": JPEG})
        assert answer.status == 201


# ---- 3. memory while parsing uploads -----------------------------------------------------
def test_many_concurrent_many_part_uploads_keep_the_server_small(own) -> None:
    # 24 uploads of 20 photos of 300 KB: Starlette's default (1 MB in memory per part) held
    # all 144 MB at once; spooled past 64 KB and 16 parses at a time, a few MB.
    photo = bytes(range(256)) * 1200  # 300 KB, the same in every upload (stored once)
    names = tuple(f"17643744{i:05d}.jpg" for i in range(20))
    pid = own.server.proc.pid
    rss_before = _vm(pid, "VmRSS")
    statuses: list[int] = []

    def upload() -> None:
        with Collect(own.link("cadre")) as phone:
            xml = sweep_xml(own.version, photos=names)
            body, ctype = multipart(xml, dict.fromkeys(names, photo), "t", False)
            statuses.append(phone.post(body, ctype).status)

    threads = [threading.Thread(target=upload) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert statuses == [201] * 24
    grown_mb = (_vm(pid, "VmHWM") - rss_before) / 1024
    assert grown_mb < 80, f"the server's peak RSS grew by {grown_mb:.0f} MB"


# ---- 4. hostile XML ----------------------------------------------------------------------
def test_deeply_nested_xml_is_400_in_chinese_and_stores_nothing(own) -> None:
    iid = f"uuid:{uuid.uuid4()}"
    xml = (
        f'<data id="sanitation_sweep" version="{own.version}">' + "<x>" * 5000 + "</x>" * 5000
        + f"<meta><instanceID>{iid}</instanceID></meta></data>"
    ).encode()  # fmt: skip
    with Collect(own.link("cadre")) as phone:
        answer = phone.post(*multipart(xml, {}, "t", False))
    assert answer.status == 400 and "嵌套" in answer.message
    assert _rows(own, iid) == {"sub": [], "local": [], "att": [], "quarantine": []}


def test_an_xml_part_over_2_mib_is_413_and_stores_nothing(own) -> None:
    assert MAX_XML_BYTES == 2 * 2**20
    iid = f"uuid:{uuid.uuid4()}"
    xml = sweep_xml(own.version, iid, note="长" * (MAX_XML_BYTES // 3 + 10))
    assert len(xml) > MAX_XML_BYTES
    with Collect(own.link("cadre")) as phone:
        answer = phone.post(*multipart(xml, {}, "t", False))
    assert answer.status == 413 and "MiB" in answer.message
    assert _rows(own, iid) == {"sub": [], "local": [], "att": [], "quarantine": []}


# ---- 5. the access log -------------------------------------------------------------------
def test_a_path_cannot_forge_a_log_line_or_hide_behind_a_nul(own) -> None:
    marker = uuid.uuid4().hex[:8]
    httpx.get(f"{own.server.url}/static/x{marker}%0a2026-01-01 manyi.serve FORGED-{marker}")
    httpx.get(f"{own.server.url}/static/y{marker}%00%1b[2Jhidden")
    log = _log_until(own.server, f"y{marker}")
    assert not any(line.startswith("2026-01-01") for line in log.splitlines())
    assert f"/static/x{marker}\\n2026-01-01 manyi.serve FORGED-{marker} 404" in log
    assert "\x00" not in log and "\x1b" not in log
    assert f"/static/y{marker}\\x00\\x1b[2Jhidden 404" in log


def test_a_token_under_an_upper_case_key_never_reaches_the_log(own) -> None:
    token = own.tokens["teacher"]
    for prefix in ("KEY", "Key", "kEy"):
        assert httpx.get(f"{own.server.url}/{prefix}/{token}/formList").status_code == 404
    log = _log_until(own.server, "/kEy/***/formList")
    assert "/KEY/***/formList" in log and "/kEy/***/formList" in log
    assert token not in log
    assert scrub(f"GET https://x.cn/Key/{token}/formList") == "GET https://x.cn/Key/***/formList"


# ---- 6. photo part names -----------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["sub/1764374400001.jpg", "..\\1764374400001.jpg", ".1764374400001.jpg", "..jpg",
     "a\x01b.jpg", "a\tb.jpg", "a\x7fb.jpg"],
)  # fmt: skip
def test_a_photo_part_name_that_is_not_a_bare_file_name_is_400_and_stores_nothing(
    own, name
) -> None:
    iid = f"uuid:{uuid.uuid4()}"
    xml_names = (name,) if name.isprintable() else ("1764374400001.jpg",)
    before = _blobs(own.server.data_dir)
    with Collect(own.link("cadre")) as phone:
        answer = phone.post(*multipart(sweep_xml(own.version, iid, photos=xml_names),
                                       {name: JPEG}, "t", False))  # fmt: skip
    assert answer.status == 400 and "照片文件名" in answer.message, answer.message
    assert _rows(own, iid) == {"sub": [], "local": [], "att": [], "quarantine": []}
    assert _blobs(own.server.data_dir) == before


# ---- 7. security headers -----------------------------------------------------------------
def test_pages_send_their_csp_as_a_header_that_forbids_framing(own) -> None:
    for path in ("", "/", "/fill/sanitation_sweep"):
        r = httpx.get(own.link("cadre") + path)
        assert r.status_code == 200, path
        csp = r.headers["Content-Security-Policy"]
        assert csp.endswith("; frame-ancestors 'none'")
        meta = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', r.text)
        assert meta and csp == meta[1].replace("&#39;", "'") + "; frame-ancestors 'none'"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Cache-Control"] == "no-store"
    r = httpx.get(own.link("cadre") + "/fill/nope")
    assert r.status_code == 404 and "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


def test_openrosa_answers_are_never_cached_and_nothing_is_sniffed(own) -> None:
    base = own.link("teacher")
    with Collect(base) as phone:
        manifest_url = next(e.manifest_url for e in phone.form_list() if e.manifest_url)
        media = phone.manifest(manifest_url)
    urls = [f"{base}/formList", manifest_url, media[0].download_url,
            f"{base}/forms/home_visit.xml", f"{base}/forms/nope.xml"]  # fmt: skip
    for url in urls:
        r = httpx.get(url)
        assert r.headers["Cache-Control"] == "no-store", url
        assert r.headers["X-Content-Type-Options"] == "nosniff", url
    r = httpx.head(f"{base}/submission")  # a status message only: private, no-cache
    assert r.status_code == 204 and r.headers["X-Content-Type-Options"] == "nosniff"
    for url in (f"{own.server.url}/static/manyi.css", f"{own.server.url}/nothing-here"):
        assert httpx.get(url).headers["X-Content-Type-Options"] == "nosniff", url


# ---- 8. a refused resend -----------------------------------------------------------------
def test_a_refused_409_resend_leaves_no_photo_on_disk(own) -> None:
    iid = f"uuid:{uuid.uuid4()}"
    names = ("1764374400001.jpg", "1764374400002.jpg")
    with Collect(own.link("cadre")) as phone:
        first = phone.post(*multipart(sweep_xml(own.version, iid, photos=names),
                                      {names[0]: JPEG}, "t", False))  # fmt: skip
        assert first.status == 201
        before = _blobs(own.server.data_dir)
        other = JPEG + uuid.uuid4().bytes  # a photo this server has never seen
        again = phone.post(*multipart(sweep_xml(own.version, iid, photos=names, note="改过"),
                                      {names[1]: other}, "t", False))  # fmt: skip
    assert again.status == 409
    assert _blobs(own.server.data_dir) == before
    assert [a[0] for a in _rows(own, iid)["att"]] == [names[0]]
