"""End to end through the real `manyi serve`: a person added with `manyi users add`, the server
started as `python -m pipelines.cli serve` on loopback (:mod:`._server`), and a real headless
Chromium at phone size (360×740) that opens the person's collection link, fills a form in ODK
Web Forms and sends it with a photo. Then the store (read only) and `manyi report` count it.
With the server stopped, the filled form is kept in the browser and sent once it is back."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.config import load_settings
from pipelines.server.webforms import RETRY_SECONDS
from pipelines.store import open_store
from tests.browser import loopback_phone
from tests.pipelines.server._server import Server, settings_env, start_server
from tests.pipelines.server.test_webforms import _fill, _png, _question

FORM = "dibao_verification"  # civil_affairs' form: a photo and a roster-backed choice
TITLE = "低保核查"
LOGIN, NAME = "wang.minzheng", "王民政"
READY = ".form-initialization-status.ready"


@pytest.fixture
def served(built_forms, tmp_path, monkeypatch, capsys):
    """`manyi users add` (civil_affairs: 低保核查 is one of the role's forms), then `manyi
    serve` on the same data directory. Yields ({"server": the running server}, token): a test
    that restarts the server puts the new one in the holder, so teardown stops it."""
    data = tmp_path / "data"
    for key, value in settings_env(data, built_forms.out_dir).items():
        if key.startswith("MANYI_"):
            monkeypatch.setenv(key, value)
    assert main(["users", "add", LOGIN, "--name", NAME, "--role", "civil_affairs"]) == 0
    token = re.search(r"/key/(\S+)", capsys.readouterr().out).group(1)
    holder = {"server": start_server(data, built_forms.out_dir)}
    yield holder, token
    holder["server"].stop()


@pytest.fixture
def phone(browser):
    """A fresh phone browser (its own IndexedDB) at 360×740. Any request that would leave
    the loopback server is aborted and fails the test; so does any uncaught page error."""
    with loopback_phone(browser) as page:
        yield page


def _link(server: Server, token: str) -> str:
    return f"{server.url}/key/{token}"


def _open_from_list(page, link: str) -> None:
    """The collection link as a phone opens it: the list, then the form's 填写 link."""
    page.goto(link)
    row = page.locator("li.form", has=page.locator(".form-title", has_text=TITLE))
    assert row.locator(".form-title").inner_text() == TITLE
    assert page.locator("li.form").count() == 2  # civil_affairs: 福利岗位审核 and 低保核查
    row.get_by_role("link", name="填写").click()
    page.wait_for_selector(READY, state="attached", timeout=30000)
    assert page.url == f"{link}/fill/{FORM}"
    assert page.evaluate("document.documentElement.scrollWidth") <= 360  # no sideways scroll


def _roster_options(page) -> list[str]:
    """The 低保户 choice's options for 龙阳 (from dibao_households.csv, served by manyi);
    closes the list again."""
    _question(page, "村").locator(".p-select").click()
    page.get_by_role("option", name="龙阳", exact=True).click()
    _question(page, "低保户").locator(".p-select").click()
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return options


# What waits in this browser's outbox (IndexedDB, `static/outbox.js`): id, status, photos.
_OUTBOX = """() => new Promise((resolve, reject) => {
    const open = indexedDB.open("manyi-outbox");
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
        const db = open.result;
        if (!db.objectStoreNames.contains("submissions")) return resolve([]);
        const all = db.transaction("submissions").objectStore("submissions").getAll();
        all.onsuccess = () => resolve(all.result.map((i) => [i.id, i.status, i.files.length]));
        all.onerror = () => reject(all.error);
    };
})"""


def _outbox(page) -> list[list]:
    return page.evaluate(_OUTBOX)


def _send(page) -> None:
    page.get_by_role("button", name="Send").click()


def _rows(iid: str | None = None) -> dict:
    """The store as `manyi report` opens it (read only): the form's submissions, senders and
    attachments, for one instance or all."""
    with open_store(load_settings(), read_only=True) as store:
        db = store.db
        sub = db.execute(
            "SELECT instance_id, source, record_json FROM submissions WHERE form_id = ?", (FORM,)
        ).fetchall()
        local = db.execute(
            "SELECT instance_id, login, name, device_id FROM local_submissions WHERE form_id = ?",
            (FORM,),
        ).fetchall()
        att = db.execute(
            "SELECT instance_id, name, sha256, local_path, size, status FROM attachments "
            "WHERE form_id = ?",
            (FORM,),
        ).fetchall()
    rows = {"sub": sub, "local": local, "att": att}
    return {k: [r for r in v if iid is None or r[0] == iid] for k, v in rows.items()}


def _parts(content_type: str, body: bytes) -> dict[str, bytes]:
    """A multipart/form-data body as the server reads it: part name → bytes."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    assert message.is_multipart()
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.iter_parts()
    }


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _report(tmp_path: Path, capsys, as_of: str) -> str:
    capsys.readouterr()
    assert main(["report", "--as-of", as_of, "--out", str(tmp_path / "out")]) == 0
    return capsys.readouterr().out


def test_a_phone_opens_the_link_fills_and_sends_with_a_photo_and_the_report_counts_it(
    served, phone, tmp_path, capsys
) -> None:
    holder, token = served
    server: Server = holder["server"]
    link = _link(server, token)
    photo = _png(tmp_path / "photo.png")
    posted: list[int] = []
    posted_bodies: list[tuple[str, bytes]] = []

    def sent(request) -> None:
        if request.method == "POST" and request.url == f"{link}/submission":
            posted.append(request.response().status)
            posted_bodies.append((request.headers["content-type"], request.post_data_buffer))

    phone.on("requestfinished", sent)

    _open_from_list(phone, link)
    assert "示例低保户0001（1人）" in _roster_options(phone)
    _fill(phone, photo)
    _send(phone)
    phone.locator("#manyi-status", has_text=f"已提交：{TITLE}").wait_for(timeout=20000)
    # a fresh, empty form, and nothing waiting in the phone
    assert _question(phone, "村").locator(".p-select-label").inner_text().strip() == ""
    assert phone.locator("#manyi-pending").is_hidden()
    assert posted == [201]

    rows = _rows()
    ((iid, source, record_json),) = rows["sub"]
    assert source == "local" and iid.startswith("uuid:")
    record = json.loads(record_json)
    assert record["meta"]["instanceID"] == iid and record["username"] == LOGIN
    # who sent it: the person, and the browser's Web Forms device id (as Collect's deviceID)
    assert record["deviceid"].startswith("getodk.org:webforms:")
    assert rows["local"] == [(iid, LOGIN, NAME, record["deviceid"])]
    assert (record["subject"]["village"], record["subject"]["household"]) == (
        "370481115200", "db0001"
    )  # fmt: skip
    assert record["verify"]["members_verified"] == "1"
    ((att_iid, name, sha, rel, size, status),) = rows["att"]
    assert att_iid == iid and status == "stored" and name == record["evidence"]["photo"]
    stored = server.data_dir / rel
    assert stored.is_file() and size > 0 and stored.stat().st_size == size
    data = stored.read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha
    # Web Forms re-encodes a photo before sending it: what is stored is, byte for byte, the
    # picture the phone sent for this question, the attached one at its size.
    ((content_type, body),) = posted_bodies
    assert _parts(content_type, body)[name] == data
    assert _png_size(data) == _png_size(photo.read_bytes()) == (64, 48)

    # The next report, on the day of the check, counts it.
    out = _report(tmp_path, capsys, record["subject"]["verify_date"])
    assert "1 submission(s)" in out


def test_with_the_server_stopped_the_form_is_kept_and_sent_once_it_is_back(
    served, phone, tmp_path
) -> None:
    holder, token = served
    server: Server = holder["server"]
    link = _link(server, token)
    _open_from_list(phone, link)
    _fill(phone, _png(tmp_path / "photo.png"))

    server.kill()  # a power cut: SIGKILL, the port closed
    _send(phone)
    phone.locator("#manyi-status", has_text="已保存，待发送 1 份").wait_for(timeout=20000)
    phone.locator("#manyi-pending", has_text="待发送 1 份").wait_for(timeout=5000)
    assert _rows()["sub"] == []
    # the answers are in the phone's outbox, and a fresh form is on screen
    kept = _outbox(phone)
    ((iid, status, files),) = kept
    assert iid.startswith("uuid:") and status == "pending" and files == 1
    assert _question(phone, "村").locator(".p-select-label").inner_text().strip() == ""

    # The server is back, on the same port; for this one reload its submission endpoint is
    # still out of reach (as it is while the phone has no signal): the kept form survives.
    holder["server"] = server = start_server(server.data_dir, server.build_dir, port=server.port)
    assert _link(server, token) == link
    unreachable = f"{link}/submission"
    phone.route(unreachable, lambda route: route.abort("connectionrefused"))
    phone.reload()
    phone.wait_for_selector(READY, state="attached", timeout=30000)
    phone.locator("#manyi-pending", has_text="待发送 1 份").wait_for(timeout=15000)
    assert _rows(iid)["sub"] == []

    # Reachable again: the page's own timer sends it, with no one touching the phone.
    answers: list[int] = []
    phone.on(
        "requestfinished",
        lambda r: answers.append(r.response().status) if r.url == unreachable else None,
    )
    phone.unroute(unreachable)
    phone.locator("#manyi-pending").wait_for(state="hidden", timeout=(RETRY_SECONDS + 15) * 1000)
    assert _outbox(phone) == []
    rows = _rows(iid)
    assert [(i, s) for i, s, _ in rows["sub"]] == [(iid, "local")]
    assert [r[:3] for r in rows["local"]] == [(iid, LOGIN, NAME)]
    ((*_, size, status),) = rows["att"]
    assert status == "stored" and size > 0

    # Sent once: the reopened list has nothing to send, and the store still holds one record.
    phone.goto(link)
    phone.locator("li.form").first.wait_for()
    time.sleep(1.5)
    assert phone.locator("#manyi-pending").is_hidden() and _outbox(phone) == []
    assert answers == [201]
    assert len(_rows()["sub"]) == 1
