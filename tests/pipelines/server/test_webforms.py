"""ODK Web Forms in a real headless Chromium at phone size, against a loopback Starlette app
that mounts webforms' static files and pages, serves a real built form with its roster, and
records what its submission endpoint receives (or fails on purpose)."""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest
import uvicorn
from defusedxml import ElementTree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from pipelines.server import webforms
from tests.browser import loopback_phone

FORM = "dibao_verification"  # short, with a photo and a roster-backed choice (dibao_households.csv)
TITLE = "低保核查"
BASE = "/key/t0k3n"
OK = (
    '<OpenRosaResponse xmlns="http://openrosa.org/http/response" items="0">'
    '<message nature="">full submission upload was successful!</message></OpenRosaResponse>'
)
REFUSED = (
    '<OpenRosaResponse xmlns="http://openrosa.org/http/response" items="0">'
    '<message nature="error">表单未知：请更新表单后重新填写</message></OpenRosaResponse>'
)


@dataclass
class Endpoint:
    """The submission endpoint's switch (ok, 503, refuse) and what it received."""

    mode: str = "ok"
    posts: list[dict] = field(default_factory=list)  # every POST, whatever the answer
    stored: list[dict] = field(default_factory=list)  # the ones answered 201


def _app(built: Path, endpoint: Endpoint) -> Starlette:
    async def listing(request: Request) -> HTMLResponse:
        forms = [_listed()]
        links = {FORM: f"{BASE}/fill/{FORM}"}
        return HTMLResponse(
            webforms.render_form_list("张三", forms, links, submission_url=f"{BASE}/submission")
        )

    async def fill(request: Request) -> HTMLResponse:
        form_id = request.path_params["form_id"]
        page = webforms.render_fill_page(
            TITLE,
            f"{BASE}/forms/{form_id}.xml",
            f"{BASE}/forms/{form_id}/attachments/",
            f"{BASE}/submission",
            "/static",
            back_url=f"{BASE}/",
            retry_seconds=0.5,
        )
        return HTMLResponse(page)

    async def form_xml(request: Request) -> FileResponse:
        return FileResponse(built / f"{request.path_params['form_id']}.xml", media_type="text/xml")

    async def attachment(request: Request) -> Response:
        path = built / request.path_params["name"]
        if path.suffix != ".csv" or not path.is_file():
            return Response(status_code=404)
        return FileResponse(path, media_type="text/csv")

    async def submission(request: Request) -> Response:
        form = await request.form()
        parts = {}
        for name, value in form.multi_items():
            if isinstance(value, str):
                parts[name] = value
            else:
                parts[name] = (value.filename, value.content_type, await value.read())
        endpoint.posts.append(parts)
        if endpoint.mode == "503":
            return Response("busy", status_code=503)
        if endpoint.mode == "refuse":
            return Response(REFUSED, status_code=404, media_type="text/xml")
        endpoint.stored.append(parts)
        return Response(OK, status_code=201, media_type="text/xml")

    return Starlette(
        routes=[
            Route(f"{BASE}/", listing),
            Route(f"{BASE}/fill/{{form_id}}", fill),
            Route(f"{BASE}/forms/{{form_id}}.xml", form_xml),
            Route(f"{BASE}/forms/{{form_id}}/attachments/{{name}}", attachment),
            Route(f"{BASE}/submission", submission, methods=["POST"]),
            webforms.static_mount("/static"),
        ]
    )


def _listed():
    @dataclass(frozen=True)
    class Listed:
        form_id: str = FORM
        title: str = TITLE
        version: str = "2023091501"

    return Listed()


@pytest.fixture(scope="module")
def server(built_forms):
    """The app on a loopback port, in a thread; yields (base URL, endpoint)."""
    endpoint = Endpoint()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(_app(built_forms.out_dir, endpoint), log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", endpoint
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def page(browser, server):
    """A fresh phone (its own IndexedDB) at 360×740. Every request it makes is recorded; any
    that leaves the loopback server is aborted and fails the test."""
    _, endpoint = server
    endpoint.mode = "ok"
    endpoint.posts.clear()
    endpoint.stored.clear()
    with loopback_phone(browser) as pg:
        yield pg


def _open_form(page, base: str) -> None:
    page.goto(f"{base}{BASE}/fill/{FORM}")
    page.wait_for_selector(".form-initialization-status.ready", state="attached", timeout=30000)


def _question(page, label: str):
    has_label = page.locator("label", has_text=label)
    return page.locator(".question-container").filter(has=has_label).first


def _fill(page, photo: Path) -> None:
    """Village, household (roster), date (today), members, conclusion and a photo."""
    _question(page, "村").locator(".p-select").click()
    page.get_by_role("option", name="龙阳", exact=True).click()
    _question(page, "低保户").locator(".p-select").click()
    page.get_by_role("option", name="示例低保户0001（1人）").click()
    _question(page, "核查日期").locator("input").click()
    page.locator(".p-datepicker-today").first.click()
    _question(page, "核实在册人数").locator("input").press_sequentially("1")
    _question(page, "核查结论").get_by_text("维持").click()
    _question(page, "入户照片").locator("input[type=file]").set_input_files(str(photo))
    page.locator(".upload-image-preview img, img[src^='blob:']").first.wait_for(timeout=10000)


def _send(page) -> None:
    page.get_by_role("button", name="Send").click()


def _png(path: Path, width: int = 64, height: int = 48) -> Path:
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 4 % 256, y * 5 % 256, 128)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return path


def _wait(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _answers(post: dict) -> Element:
    _, content_type, xml = post["xml_submission_file"]
    assert content_type.startswith("text/xml")
    return ElementTree.fromstring(xml)


def _text(root: Element, name: str) -> str:
    node = root.find(f".//{name}")
    return "" if node is None or node.text is None else node.text


# --- pages and files, without a browser ---------------------------------------------------


def test_vendored_engine_is_pinned_licensed_and_imports_only_vue():
    vendor = webforms.STATIC_DIR / "vendor"
    engine = vendor / f"webforms-{webforms.WEBFORMS_VERSION}"
    vue = vendor / f"vue-{webforms.VUE_VERSION}"
    assert "Apache License" in (engine / "LICENSE.md").read_text(encoding="utf-8")
    assert "MIT" in (vue / "LICENSE").read_text(encoding="utf-8")
    assert (engine / "licenses" / "ol.txt").is_file()
    assert (vue / "vue.esm-browser.prod.js").stat().st_size > 100_000
    for js in engine.glob("*.js"):
        text = js.read_text(encoding="utf-8")
        imports = set(re.findall(r'(?m)^import\s[^;]*?from\s*"([^"]+)"', text))
        # dynamic imports in code; `import("./x.js").Type` are JSDoc types in comments
        imports |= set(re.findall(r'\bimport\("(\./[^"]+)"\)(?![.\w])', text))
        assert imports <= {"vue"} | {f"./{p.name}" for p in engine.glob("*.js")}, (js, imports)


def test_form_list_is_escaped_chinese_and_links_each_form():
    html = webforms.render_form_list(
        "<script>alert(1)</script>",
        [_listed()],
        {FORM: f"{BASE}/fill/{FORM}?a=1&b=2"},
        submission_url=f"{BASE}/submission",
    )
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html
    assert 'lang="zh-CN"' in html and "width=device-width" in html
    assert TITLE in html and "版本 2023091501" in html and ">填写</a>" in html
    assert "?a=1&amp;b=2" in html
    assert 'name="referrer" content="no-referrer"' in html  # the token is in the path
    assert "http://" not in html and "https://" not in html  # nothing from a CDN


def test_fill_page_maps_vue_and_the_engine_locally():
    html = webforms.render_fill_page(TITLE, "/f.xml", "/att/", "/sub", "/s/")
    assert f'"vue": "/s/vendor/vue-{webforms.VUE_VERSION}/vue.esm-browser.prod.js"' in html
    assert f"/s/vendor/webforms-{webforms.WEBFORMS_VERSION}/index.js" in html
    assert "http://" not in html and "https://" not in html


def test_vendor_files_are_cached_for_a_year_and_pages_scripts_revalidate(server):
    base, _ = server
    vue = f"{base}/static/vendor/vue-{webforms.VUE_VERSION}/vue.esm-browser.prod.js"
    with urllib.request.urlopen(vue) as r:  # noqa: S310 (loopback)
        assert "immutable" in r.headers["Cache-Control"]
        assert "javascript" in r.headers["Content-Type"]
    with urllib.request.urlopen(f"{base}/static/outbox.js") as r:  # noqa: S310
        assert r.headers["Cache-Control"] == "no-cache"


# --- a real phone browser ---------------------------------------------------------------


def test_form_shows_in_chinese_at_phone_width_with_roster_choices(page, server):
    base, _ = server
    _open_form(page, base)
    assert page.viewport_size == {"width": 360, "height": 740}
    for label in ("村", "低保户", "核查日期", "核实在册人数", "核查结论", "入户照片"):
        assert _question(page, label).is_visible(), label
    assert page.evaluate("document.documentElement.scrollWidth") <= 360  # no sideways scroll
    _question(page, "村").locator(".p-select").click()
    page.get_by_role("option", name="龙阳", exact=True).click()
    _question(page, "低保户").locator(".p-select").click()
    options = page.get_by_role("option").all_inner_texts()
    # from dibao_households.csv (jr://file-csv/), filtered to the chosen village
    assert "示例低保户0001（1人）" in options and len(options) >= 3


def test_list_links_to_the_form(page, server):
    base, _ = server
    page.goto(f"{base}{BASE}/")
    assert page.locator(".form-title").inner_text() == TITLE
    page.get_by_role("link", name="填写").click()
    page.wait_for_selector(".form-initialization-status.ready", state="attached", timeout=30000)
    assert page.url.endswith(f"/fill/{FORM}")


def test_send_posts_answers_and_photo_then_confirms_and_starts_afresh(page, server, tmp_path):
    base, endpoint = server
    photo = _png(tmp_path / "photo.png")
    _open_form(page, base)
    _fill(page, photo)
    _send(page)
    page.locator("#manyi-status", has_text="已提交").wait_for(timeout=15000)
    assert len(endpoint.posts) == 1 and len(endpoint.stored) == 1
    post = endpoint.stored[0]
    root = _answers(post)
    assert root.get("id") == FORM
    assert _text(root, "village") == "370481115200"
    assert _text(root, "household") == "db0001"
    assert _text(root, "members_verified") == "1"
    assert _text(root, "conclusion")
    assert _text(root, "instanceID").startswith("uuid:")
    photo_name = _text(root, "photo")
    assert photo_name and photo_name in post, (photo_name, list(post))
    filename, _, data = post[photo_name]
    assert filename == photo_name and len(data) > 0
    # a fresh, empty form and nothing waiting
    assert _question(page, "村").locator(".p-select-label").inner_text().strip() == ""
    assert page.locator("#manyi-pending").is_hidden()


def test_server_error_keeps_the_form_across_a_reload_and_sends_it_once(page, server, tmp_path):
    base, endpoint = server
    endpoint.mode = "503"
    _open_form(page, base)
    _fill(page, _png(tmp_path / "photo.png"))
    _send(page)
    page.locator("#manyi-status", has_text="已保存，待发送 1 份").wait_for(timeout=15000)
    assert endpoint.stored == []
    page.reload()
    page.locator("#manyi-pending", has_text="待发送 1 份").wait_for(timeout=15000)
    tries = len(endpoint.posts)
    _wait(lambda: len(endpoint.posts) > tries, what="a retry on the timer")
    endpoint.mode = "ok"
    _wait(lambda: len(endpoint.stored) == 1, what="the kept form to be sent")
    page.locator("#manyi-pending").wait_for(state="hidden", timeout=15000)
    time.sleep(2)  # four more retry periods: nothing is sent again
    assert len(endpoint.stored) == 1
    assert _text(_answers(endpoint.stored[0]), "household") == "db0001"


def test_offline_keeps_the_form_and_sends_it_when_back_online(page, server, tmp_path):
    base, endpoint = server
    _open_form(page, base)
    _fill(page, _png(tmp_path / "photo.png"))
    page.context.set_offline(True)
    _send(page)
    page.locator("#manyi-status", has_text="待发送 1 份").wait_for(timeout=15000)
    assert endpoint.posts == []
    page.context.set_offline(False)
    _wait(lambda: len(endpoint.stored) == 1, what="the kept form to be sent once online")
    page.goto(f"{base}{BASE}/")
    time.sleep(1.5)
    assert page.locator("#manyi-pending").is_hidden()
    assert len(endpoint.stored) == 1


def test_refusal_is_kept_with_the_servers_message_and_not_retried(page, server, tmp_path):
    base, endpoint = server
    endpoint.mode = "refuse"
    _open_form(page, base)
    _fill(page, _png(tmp_path / "photo.png"))
    _send(page)
    page.locator("#manyi-status", has_text="表单未知：请更新表单后重新填写").wait_for(timeout=15000)
    time.sleep(2)  # four retry periods
    assert len(endpoint.posts) == 1
    page.goto(f"{base}{BASE}/")
    page.locator("#manyi-pending", has_text="未被接收").wait_for(timeout=15000)
    assert "表单未知" in page.locator("#manyi-pending").inner_text()
