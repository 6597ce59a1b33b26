"""`manyi serve` as ODK Collect sees it: a real server on loopback (a subprocess running
`python -m pipelines.cli serve`) and a client that behaves as Collect's code does
(:mod:`._collect`). Each rule of the OpenRosa endpoint and each bad input, then the store."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import pytest

from pipelines.analysis.checks import check_forms
from pipelines.cli import main
from pipelines.config import load_settings
from pipelines.reports._inputs import load_inputs
from pipelines.server.openrosa import Limits
from pipelines.server.people import add_person, disable_person, load_roles, rotate_token
from pipelines.store import Store
from tests.pipelines.server._collect import Collect, CollectError, multipart, ok
from tests.pipelines.server._server import Server, settings_env, start_server

ROLES = load_roles()
V_CADRE, V_OTHER = "370481115201", "370481115200"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"  # ~10 KB, not a real picture


def sweep_xml(
    version: str,
    iid: str | None = None,
    *,
    village: str = V_CADRE,
    photos: tuple[str, ...] = ("1764374400001.jpg",),
    note: str = "柴堆已清理",
    form_id: str = "sanitation_sweep",
) -> bytes:
    """A filled 人居环境整治巡查 as Collect writes it: one finding per photo."""
    iid = iid or f"uuid:{uuid.uuid4()}"
    findings = "".join(
        f"<findings><kind>pile</kind><location>35.1744 117.2701 52.3 4.8</location>"
        f"<photo>{p}</photo><status>open</status><rectify_by>2026-12-31</rectify_by>"
        "<responsible/></findings>"
        for p in photos
    )
    return (
        "<?xml version='1.0' encoding='UTF-8' ?>"
        f'<data xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms" '
        f'id="{form_id}" version="{version}"><start>2026-11-29T08:00:00.000+08:00</start>'
        "<end>2026-11-29T08:10:00.000+08:00</end><today>2026-11-29</today><deviceid/><username/>"
        f"<basic><village>{village}</village><check_date>2026-11-29</check_date><quarter/>"
        f"<campaign/><has_findings>yes</has_findings></basic>{findings}"
        f"<summary><score>90</score><note>{note}</note></summary>"
        f"<meta><instanceID>{iid}</instanceID><instanceName>巡查</instanceName></meta></data>"
    ).encode()


@dataclass
class Served:
    server: Server
    tokens: dict[str, str]
    version: str
    build: Path

    def link(self, who: str) -> str:
        return f"{self.server.url}/key/{self.tokens[who]}"

    def store(self) -> Store:
        return Store(self.server.data_dir / "manyi.sqlite", self.server.data_dir)


def _people(data_dir: Path) -> dict[str, str]:
    with Store(data_dir / "manyi.sqlite", data_dir) as store:
        tokens = {
            "cadre": add_person(store, "yan.cadre", "闫干部", "village", roles=ROLES, villages=[V_CADRE]).token,
            "teacher": add_person(store, "li.teacher", "李老师", "teacher", roles=ROLES).token,
            "gone": add_person(store, "gone.user", "停用者", "village", roles=ROLES, villages=[V_CADRE]).token,
            "old": add_person(store, "old.link", "换链接", "village", roles=ROLES, villages=[V_CADRE]).token,
        }  # fmt: skip
        disable_person(store, "gone.user")
        rotate_token(store, "old.link")
    return tokens


@pytest.fixture(scope="module")
def served(built_forms, tmp_path_factory) -> Served:
    data = tmp_path_factory.mktemp("serve")
    tokens = _people(data)
    server = start_server(data, built_forms.out_dir)
    version = next(b.version for b in built_forms.built if b.form_id == "sanitation_sweep")
    yield Served(server, tokens, version, built_forms.out_dir)
    server.stop()


@pytest.fixture
def cadre(served: Served) -> Collect:
    with Collect(served.link("cadre")) as c:
        yield c


def _rows(served: Served, iid: str) -> dict:
    with served.store() as store:
        db = store.db
        sub = db.execute(
            "SELECT source, attachments_expected, record_json FROM submissions WHERE instance_id = ?",
            (iid,),
        ).fetchall()
        local = db.execute(
            "SELECT login, name, device_id, xml_sha256 FROM local_submissions WHERE instance_id = ?",
            (iid,),
        ).fetchall()
        att = db.execute(
            "SELECT name, sha256, local_path, size FROM attachments WHERE instance_id = ? ORDER BY name",
            (iid,),
        ).fetchall()
        quarantine = db.execute(
            "SELECT reason FROM quarantine WHERE item_key = ?", (iid,)
        ).fetchall()
    return {"sub": sub, "local": local, "att": att, "quarantine": quarantine}


def _nothing_stored(served: Served, iid: str) -> None:
    assert _rows(served, iid) == {"sub": [], "local": [], "att": [], "quarantine": []}


# ---- forms ------------------------------------------------------------------------------
def test_form_list_holds_only_the_persons_built_forms_each_hash_the_bytes_served(
    served, cadre
) -> None:
    entries = cadre.form_list()
    assert [e.form_id for e in entries] == [
        "sanitation_sweep", "street_lighting", "fitness_square", "satisfaction_survey"
    ]  # fmt: skip
    assert all(e.manifest_url is None for e in entries)  # no roster files: no manifestUrl
    for e in entries:
        got = cadre.download(e)  # raises if the listed md5 is not that of the bytes
        assert got.xml == (served.build / f"{e.form_id}.xml").read_bytes()
        assert e.download_url.startswith(served.link("cadre") + "/")
    assert entries[0].name == "人居环境整治巡查" and entries[0].version == served.version


def test_a_form_with_rosters_lists_a_manifest_and_each_roster_downloads_intact(served) -> None:
    with Collect(served.link("teacher")) as teacher:
        (entry,) = teacher.form_list()
        assert entry.form_id == "home_visit" and entry.manifest_url
        got = teacher.download(entry)
    assert sorted(got.media) == ["classes.csv", "schools.csv", "students.csv"]
    for name, data in got.media.items():
        assert data == (served.build / name).read_bytes()


def test_someone_elses_form_and_unknown_files_are_404(served, cadre) -> None:
    base = served.link("cadre")
    for path in ("/forms/home_visit.xml", "/forms/home_visit/manifest",
                 "/forms/home_visit/attachments/students.csv", "/forms/nope.xml",
                 "/forms/sanitation_sweep/attachments/..%2F..%2Fmanyi.sqlite"):  # fmt: skip
        r = cadre.request("GET", base + path)
        assert r.status_code == 404, path
        assert r.headers["X-OpenRosa-Version"] == "1.0"


# ---- tokens -----------------------------------------------------------------------------
def test_tokens_never_reach_the_log(served, cadre) -> None:
    cadre.form_list()
    cadre.preflight()
    log = served.server.log()
    assert "/key/***/formList" in log
    for token in served.tokens.values():
        assert token not in log


# ---- sending ----------------------------------------------------------------------------
def test_head_preflight_is_204_with_the_accepted_length(served, cadre) -> None:
    r = cadre.request("HEAD", cadre.url + "/submission")
    assert r.status_code == 204
    assert r.headers["X-OpenRosa-Version"] == "1.0"
    assert int(r.headers["X-OpenRosa-Accept-Content-Length"]) == 100_000_000


def test_a_sent_form_is_a_local_record_with_its_photo_and_sender(served, cadre) -> None:
    iid = f"uuid:{uuid.uuid4()}"
    (answer,) = cadre.send(
        sweep_xml(served.version, iid), {"1764374400001.jpg": JPEG}, "人居环境整治巡查"
    )
    assert answer.status == 201 and ok(answer)
    assert answer.headers["X-OpenRosa-Version"] == "1.0"
    rows = _rows(served, iid)
    (source, expected, record_json), = rows["sub"]  # fmt: skip
    assert source == "local" and expected == 1
    data = json.loads(record_json)
    assert (
        data["basic"]["village"] == V_CADRE and data["findings"][0]["photo"] == "1764374400001.jpg"
    )
    assert rows["local"][0][:3] == ("yan.cadre", "闫干部", cadre.device)
    ((name, sha, rel, size),) = rows["att"]
    assert (name, sha, size) == ("1764374400001.jpg", hashlib.sha256(JPEG).hexdigest(), len(JPEG))
    assert (served.server.data_dir / rel).read_bytes() == JPEG
    assert rel == f"attachments/{sha[:2]}/{sha}"


def test_an_identical_resend_is_201_and_stores_nothing_twice(served, cadre) -> None:
    iid = f"uuid:{uuid.uuid4()}"
    body, ctype = multipart(sweep_xml(served.version, iid), {"1764374400001.jpg": JPEG}, "t", False)
    first, again = cadre.post(body, ctype), cadre.post(body, ctype)
    assert first.status == again.status == 201
    rows = _rows(served, iid)
    assert len(rows["sub"]) == len(rows["local"]) == len(rows["att"]) == 1


def test_a_split_upload_adds_the_missing_photos(served, cadre) -> None:
    iid = f"uuid:{uuid.uuid4()}"
    xml = sweep_xml(served.version, iid, photos=("a.jpg", "b.jpg", "c.jpg"))
    b, c = JPEG + b"b", JPEG + b"c"
    first = cadre.post(*multipart(xml, {"a.jpg": JPEG}, "t", incomplete=True))
    assert first.status == 201
    assert [r[0] for r in _rows(served, iid)["att"]] == ["a.jpg"]
    second = cadre.post(*multipart(xml, {"b.jpg": b}, "t", incomplete=True))
    last = cadre.post(*multipart(xml, {"c.jpg": c}, "t", incomplete=False))
    assert second.status == last.status == 201
    rows = _rows(served, iid)
    assert [(r[0], r[3]) for r in rows["att"]] == [
        ("a.jpg", len(JPEG)),
        ("b.jpg", len(b)),
        ("c.jpg", len(c)),
    ]
    assert len(rows["sub"]) == 1 and rows["sub"][0][1] == 3


def test_collects_own_split_when_photos_pass_the_accepted_length(served) -> None:
    # A phone told 15 kB per POST (as a server may declare) sends three POSTs of one XML.
    iid = f"uuid:{uuid.uuid4()}"
    xml = sweep_xml(served.version, iid, photos=("p1.jpg", "p2.jpg", "p3.jpg"))
    files = {f"p{i}.jpg": JPEG + bytes([i]) for i in (1, 2, 3)}
    with Collect(served.link("cadre")) as phone:
        phone.preflight = lambda: 15_000  # the only change: a smaller declared bound
        answers = phone.send(xml, files)
    assert [a.status for a in answers] == [201, 201, 201]
    assert [r[0] for r in _rows(served, iid)["att"]] == ["p1.jpg", "p2.jpg", "p3.jpg"]


def test_the_same_instance_id_with_other_xml_is_a_409_conflict(served, cadre) -> None:
    iid = f"uuid:{uuid.uuid4()}"
    assert cadre.post(*multipart(sweep_xml(served.version, iid), {}, "t", False)).status == 201
    answer = cadre.post(*multipart(sweep_xml(served.version, iid, note="改过"), {}, "t", False))
    assert answer.status == 409 and "instanceID" in answer.message
    assert answer.headers["X-OpenRosa-Version"] == "1.0"
    assert json.loads(_rows(served, iid)["sub"][0][2])["summary"]["note"] == "柴堆已清理"


def test_an_older_version_of_a_known_form_is_accepted(served, cadre) -> None:
    iid = f"uuid:{uuid.uuid4()}"
    assert cadre.send(sweep_xml("2023010101", iid), {"1764374400001.jpg": JPEG})[0].status == 201
    with served.store() as store:
        (record,) = [r for r in store.records("sanitation_sweep") if r.instance_id == iid]
    assert record.form_version == "2023010101"


def _bad_bodies(version: str, iid: str) -> dict[str, bytes]:
    good = sweep_xml(version, iid)
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE data [<!ENTITY a "aaaaaaaaaa">'
        + "".join(
            f'<!ENTITY {c} "&{p};&{p};&{p};&{p};&{p};&{p};&{p};&{p};&{p};&{p};">'
            for p, c in zip("abcdefg", "bcdefgh", strict=True)
        )
        + f']><data id="sanitation_sweep"><note>&h;</note><meta><instanceID>{iid}</instanceID></meta></data>'
    ).encode()
    xxe = (
        '<?xml version="1.0"?><!DOCTYPE data [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        f'<data id="sanitation_sweep"><note>&x;</note><meta><instanceID>{iid}</instanceID></meta></data>'
    ).encode()
    return {
        "truncated at 90%": good[: len(good) * 9 // 10],
        "truncated mid-tag": good[: good.index(b"<meta>") + 3],
        "not XML": b"village=370481115201&note=hello",
        "empty": b"",
        "GBK declared, GBK bytes": good.replace(b"UTF-8", b"GBK").replace("柴堆已清理".encode(), "柴堆已清理".encode("gbk")),
        "entity bomb": bomb,
        "external entity": xxe,
        "no instanceID": good.replace(f"<instanceID>{iid}</instanceID>".encode(), b""),
    }  # fmt: skip


def test_truncated_non_xml_and_hostile_xml_are_400_in_chinese_and_nothing_is_stored(
    served, cadre
) -> None:
    iid = f"uuid:{uuid.uuid4()}"
    for what, xml in _bad_bodies(served.version, iid).items():
        answer = cadre.post(*multipart(xml, {}, "t", False))
        assert answer.status == 400, what
        assert any("\u4e00" <= ch <= "\u9fff" for ch in answer.message), what
        assert answer.headers["X-OpenRosa-Version"] == "1.0"
    _nothing_stored(served, iid)


def test_every_cut_of_a_submission_is_refused(served, cadre) -> None:
    # Central stores a truncated body as far as it parsed; here no prefix is ever stored.
    iid = f"uuid:{uuid.uuid4()}"
    good = sweep_xml(served.version, iid)
    for cut in range(0, len(good) - 1, 97):
        assert cadre.post(*multipart(good[:cut], {}, "t", False)).status == 400, cut
    _nothing_stored(served, iid)


def test_requests_without_the_form_part_or_not_multipart_are_400(served, cadre) -> None:
    url = cadre.url + "/submission"
    r = cadre.request(
        "POST", url, content=sweep_xml(served.version), headers={"Content-Type": "text/xml"}
    )
    assert r.status_code == 400 and r.headers["X-OpenRosa-Version"] == "1.0"
    r = cadre.request("POST", url, files={"photo.jpg": ("photo.jpg", JPEG, "image/jpeg")})
    assert r.status_code == 400


def test_an_unknown_form_someone_elses_form_or_an_unnamed_photo_stores_nothing(
    served, cadre
) -> None:
    cases = {
        404: sweep_xml(served.version, form_id="no_such_form"),
        403: sweep_xml(served.version, form_id="home_visit"),
    }
    for status, xml in cases.items():
        iid = xml.split(b"<instanceID>")[1].split(b"<")[0].decode()
        answer = cadre.post(*multipart(xml, {"1764374400001.jpg": JPEG}, "t", False))
        assert answer.status == status and answer.headers["X-OpenRosa-Version"] == "1.0"
        _nothing_stored(served, iid)
    iid = f"uuid:{uuid.uuid4()}"
    for name in ("other.jpg", "../../manyi.sqlite", "/etc/passwd"):
        files = {"1764374400001.jpg": JPEG, name: b"not named"}
        assert (
            cadre.post(*multipart(sweep_xml(served.version, iid), files, "t", False)).status == 400
        )
    _nothing_stored(served, iid)


def test_a_photo_name_that_tries_to_escape_is_refused(served, cadre) -> None:
    # Collect sends bare file names; a name with a path in it is refused (400), not stored
    # as text (it was, before the security review of issue 11).
    iid, name = f"uuid:{uuid.uuid4()}", "../../../escape.jpg"
    answer = cadre.post(
        *multipart(sweep_xml(served.version, iid, photos=(name,)), {name: JPEG}, "t", False)
    )
    assert answer.status == 400
    _nothing_stored(served, iid)
    assert not (served.server.data_dir.parent / "escape.jpg").exists()


def _raw(server: Server, head: bytes, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head + body)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


def test_a_body_over_the_declared_limit_is_413(served) -> None:
    token = served.tokens["cadre"]
    head = (
        f"POST /key/{token}/submission HTTP/1.1\r\nHost: x\r\nX-OpenRosa-Version: 1.0\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {Limits().body_bytes + 1}\r\n\r\n"  # the declared length + headers' room
    ).encode()
    reply = _raw(served.server, head, b"--b\r\n")
    assert reply.startswith(b"HTTP/1.1 413") and b"X-OpenRosa-Version: 1.0" in reply.replace(
        b"x-openrosa-version", b"X-OpenRosa-Version"
    )

    def chunks():  # no Content-Length: the bound is counted as the body streams
        yield b'--b\r\nContent-Disposition: form-data; name="big.jpg"; filename="big.jpg"\r\n\r\n'
        for _ in range(101):
            yield b"\0" * 1_000_000

    r = httpx.post(
        f"{served.link('cadre')}/submission", content=chunks(), timeout=60,
        headers={"Content-Type": "multipart/form-data; boundary=b", "X-OpenRosa-Version": "1.0"},
    )  # fmt: skip
    assert r.status_code == 413 and r.headers["X-OpenRosa-Version"] == "1.0"
    with served.store() as store:
        assert (
            store.db.execute("SELECT COUNT(*) FROM attachments WHERE size > 50000000").fetchone()[0]
            == 0
        )


def test_part_count_is_bounded(served, cadre) -> None:
    files = {f"f{i}.jpg": b"x" for i in range(250)}
    answer = cadre.post(*multipart(sweep_xml(served.version), files, "t", False))
    assert answer.status == 400 and answer.headers["X-OpenRosa-Version"] == "1.0"


# ---- throttling, links ------------------------------------------------------------------
def test_bad_links_get_403_and_ten_in_a_minute_slow_that_address_down_but_not_valid_links(
    served, built_forms, tmp_path
) -> None:
    # A server of its own: the throttle counts per address, and every test comes from 127.0.0.1.
    tokens = _people(tmp_path)
    server = start_server(tmp_path, built_forms.out_dir)
    disabled, rotated = tokens["gone"], tokens["old"]
    tries = [(disabled, "GET", "/formList"), (disabled, "HEAD", "/submission"),
             (disabled, "GET", "/forms/sanitation_sweep.xml"), (rotated, "GET", "/formList"),
             (rotated, "POST", "/submission"), ("Zz9" * 15, "GET", "/formList"),
             ("Zz9" * 15, "POST", "/submission"), ("x", "GET", "/formList"),
             ("x" * 500, "GET", "/formList"), (disabled, "POST", "/submission")]  # fmt: skip
    try:
        for token, method, path in tries:
            with Collect(f"{server.url}/key/{token}") as phone:
                if method == "POST":
                    r = phone.post(*multipart(sweep_xml(served.version), {}, "t", False))
                    status, headers = r.status, r.headers
                else:
                    r = phone.request(method, phone.url + path)
                    status, headers = r.status_code, r.headers
            assert status == 403, (token[:5], method, path)
            assert headers["X-OpenRosa-Version"] == "1.0"
        # a valid link from the same address is served (a village behind one carrier NAT) …
        assert httpx.get(f"{server.url}/key/{tokens['cadre']}/formList").status_code == 200
        # … while a further bad link waits
        r = httpx.get(f"{server.url}/key/{disabled}/formList")
        assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 60
        assert r.headers["X-OpenRosa-Version"] == "1.0"
        with Store(tmp_path / "manyi.sqlite", tmp_path) as store:
            assert store.db.execute("SELECT COUNT(*) FROM local_submissions").fetchone()[0] == 0
    finally:
        server.stop()


def test_links_follow_public_url_when_set(built_forms, tmp_path) -> None:
    tokens = _people(tmp_path)
    server = start_server(
        tmp_path, built_forms.out_dir, env={"MANYI_PUBLIC_URL": "https://manyi.example.cn/town"}
    )
    try:
        with Collect(f"{server.url}/key/{tokens['teacher']}") as phone:
            r = phone.request("GET", phone.url + "/formList")
            m = phone.request("GET", f"{phone.url}/forms/home_visit/manifest")
        base = f"https://manyi.example.cn/town/key/{tokens['teacher']}"
        assert f"<downloadUrl>{base}/forms/home_visit.xml</downloadUrl>" in r.text
        assert f"<manifestUrl>{base}/forms/home_visit/manifest</manifestUrl>" in r.text
        assert (
            f"<downloadUrl>{base}/forms/home_visit/attachments/students.csv</downloadUrl>" in m.text
        )
    finally:
        server.stop()


def test_forwarded_scheme_is_honoured_only_from_trusted_proxies(built_forms, tmp_path) -> None:
    tokens = _people(tmp_path)
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    for trusted, scheme in (("", "http"), ("127.0.0.1", "https")):
        server = start_server(tmp_path, built_forms.out_dir, env={"MANYI_TRUSTED_PROXIES": trusted})
        try:
            r = httpx.get(f"{server.url}/key/{tokens['cadre']}/formList", headers=forwarded)
            assert f"<downloadUrl>{scheme}://127.0.0.1:{server.port}/key/" in r.text, trusted
        finally:
            server.stop()


def test_collect_refuses_nothing_it_is_given(served, cadre) -> None:
    # The whole exchange as a phone makes it: list, download, preflight, send.
    for entry in cadre.form_list():
        cadre.download(entry)
    try:
        cadre.send(sweep_xml(served.version), {"1764374400001.jpg": JPEG})
    except CollectError as e:  # pragma: no cover - the message Collect would show
        pytest.fail(str(e))


# ---- end to end ------------------------------------------------------------------------
def test_users_add_then_a_phone_lists_downloads_and_sends_and_the_report_counts_it(
    built_forms, tmp_path, monkeypatch, capsys
) -> None:
    data, build = tmp_path / "data", built_forms.out_dir
    for key, value in settings_env(data, build).items():
        if key.startswith("MANYI_"):
            monkeypatch.setenv(key, value)
    args = ["users", "add", "zhao.cadre", "--name", "赵干部", "--role", "village"]
    assert main([*args, "--village", V_CADRE, "--form", "home_visit"]) == 0
    token = re.search(r"/key/(\S+)", capsys.readouterr().out).group(1)
    server = start_server(data, build)
    try:
        with Collect(f"{server.url}/key/{token}") as phone:
            entries = {e.form_id: e for e in phone.form_list()}
            got = {fid: phone.download(e) for fid, e in entries.items()}
            assert sorted(got["home_visit"].media) == ["classes.csv", "schools.csv", "students.csv"]
            sweep = entries["sanitation_sweep"]
            own, other = f"uuid:{uuid.uuid4()}", f"uuid:{uuid.uuid4()}"
            for iid, village in ((own, V_CADRE), (other, V_OTHER)):
                xml = sweep_xml(sweep.version, iid, village=village)
                (answer,) = phone.send(xml, {"1764374400001.jpg": JPEG}, sweep.name)
                assert answer.status == 201
    finally:
        server.stop()
    assert main(["report", "--as-of", "2026-11-30", "--out", str(tmp_path / "out")]) == 0
    assert "2 submission(s)" in capsys.readouterr().out

    # The checks flag the submission from a village outside the sender's.
    settings = load_settings()
    inputs = load_inputs(settings)
    with Store(data / "manyi.sqlite", data) as store:
        senders = store.senders()
    assert {(s.instance_id, s.login, s.villages) for s in senders} == {
        (own, "zhao.cadre", (V_CADRE,)), (other, "zhao.cadre", (V_CADRE,))
    }  # fmt: skip
    checks = check_forms(
        inputs.forms, as_of=date(2026, 11, 30), year=2026, villages=inputs.villages,
        senders=senders,
    )  # fmt: skip
    flagged = checks.table[checks.table["check"] == "sender_village"]
    assert len(flagged) == 1
    assert "zhao.cadre" in flagged.iloc[0]["reason"] and V_OTHER in flagged.iloc[0]["reason"]


def test_the_link_in_a_browser_lists_the_persons_forms_and_opens_each(served) -> None:
    with httpx.Client() as browser:
        page = browser.get(served.link("cadre"))
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "人居环境整治巡查" in page.text and "家访记录" not in page.text
        assert page.headers["Cache-Control"] == "no-store"
        fill = browser.get(f"{served.link('cadre')}/fill/sanitation_sweep")
        assert fill.status_code == 200 and "/forms/sanitation_sweep.xml" in fill.text
        assert browser.get(f"{served.link('cadre')}/fill/home_visit").status_code == 404
