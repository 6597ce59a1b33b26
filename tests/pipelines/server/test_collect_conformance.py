"""`manyi serve` read the way ODK Collect's own code reads it (getodk/collect at
137f3259, see :mod:`._collect`): the parsing rules of its formList and manifest parsers, the hash
bookkeeping that decides whether a form looks changed, its exact split rule (length *and* the
100-file cap), its reading of each answer, and a resend built afresh. Real server on loopback."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

import httpx
import pytest

import tests.pipelines.server.test_openrosa as base
from tests.pipelines.server._collect import (
    MAX_FILES_PER_POST,
    Collect,
    CollectError,
    parse_form_list,
    parse_manifest,
    split,
)
from tests.pipelines.server._server import start_server

JPEG = base.JPEG
MD5 = re.compile(r"md5:[0-9a-f]{32}")


@pytest.fixture(scope="module")
def served(built_forms, tmp_path_factory) -> base.Served:
    data = tmp_path_factory.mktemp("conformance")
    tokens = base._people(data)
    server = start_server(data, built_forms.out_dir)
    version = next(b.version for b in built_forms.built if b.form_id == "sanitation_sweep")
    yield base.Served(server, tokens, version, built_forms.out_dir)
    server.stop()


@pytest.fixture
def cadre(served) -> Collect:
    with Collect(served.link("cadre")) as c:
        yield c


# ---- the client's parsers are Collect's (no server) -------------------------------------
_LIST = '<xforms xmlns="http://openrosa.org/xforms/xformsList">{}</xforms>'
_ENTRY = (
    "<xform><formID>{}</formID><name>{}</name><hash>{}</hash><downloadUrl>{}</downloadUrl></xform>"
)


def test_collects_form_list_rules() -> None:
    good = _ENTRY.format("f", "F", "md5:" + "0" * 32, "http://x/f.xml")
    assert parse_form_list(_LIST.format(good).encode())[0].hash == "md5:" + "0" * 32
    # text is trimmed; a blank version is none; other namespaces and nested xforms are ignored
    (e,) = parse_form_list(
        _LIST.format(
            "<xform><formID> f </formID><name>F</name><version> </version>"
            "<downloadUrl>u</downloadUrl><x:formID xmlns:x='urn:x'>g</x:formID></xform>"
            "<other><xform><formID>nested</formID></xform></other>"
        ).encode()
    )
    assert (e.form_id, e.version, e.hash) == ("f", None, None)
    # one entry without formID, name or downloadUrl refuses the whole list
    for bad in (_ENTRY.format("", "F", "md5:0", "u"), _ENTRY.format("f", " ", "md5:0", "u"),
                "<xform><formID>f</formID><name>F</name></xform>"):  # fmt: skip
        with pytest.raises(CollectError, match="whole list"):
            parse_form_list(_LIST.format(good + bad).encode())
    # a hash without md5: is dropped: the form is listed but cannot be downloaded
    assert (
        parse_form_list(_LIST.format(_ENTRY.format("f", "F", "abc", "u")).encode())[0].hash is None
    )
    with pytest.raises(CollectError):  # wrong root or namespace: ParseError
        parse_form_list(b'<xforms xmlns="urn:other"/>')
    # the manifest: base name only, the first 4 characters cut whatever they are
    (m,) = parse_manifest(
        b'<manifest xmlns="http://openrosa.org/xforms/xformsManifest"><mediaFile>'
        b"<filename>a/b/c.csv</filename><hash>sha:123</hash><downloadUrl>u</downloadUrl>"
        b"</mediaFile></manifest>"
    )
    assert (m.filename, m.hash) == ("c.csv", "123")


def test_collects_split_rule() -> None:
    assert split(100, [], 10) == [[]]  # no files: one POST of the XML
    assert split(100, [10, 10], 120) == [[0, 1]]  # exactly the limit: one POST
    assert split(100, [10, 10], 119) == [[0], [1]]  # one byte over: split
    assert split(100, [500, 10], 120) == [[0], [1]]  # a file over the limit still goes, alone
    sizes = [1] * (2 * MAX_FILES_PER_POST + 10)
    assert [len(b) for b in split(10, sizes, 10**9)] == [101, 101, 8]  # "> 100" after adding


# ---- formList, forms, manifests as Collect reads them -----------------------------------
@pytest.mark.parametrize("who", ["cadre", "teacher"])
def test_every_list_entry_is_whole_and_hashed_as_collect_needs(served, who) -> None:
    with Collect(served.link(who)) as phone:
        r = phone.request("GET", phone.form_list_url())
        assert r.status_code == 200 and "text/xml" in r.headers["content-type"].lower()
        assert r.headers["X-OpenRosa-Version"] == "1.0"
        entries = phone.form_list()
        assert entries
        for e in entries:
            assert MD5.fullmatch(e.hash or ""), e  # else FormWithNoHash
            assert e.name.strip() and e.form_id.strip() and e.version
            got = phone.download(e)
            assert f"md5:{got.md5}" == e.hash
            if e.manifest_url:
                for m in phone.manifest(e.manifest_url):
                    assert "/" not in m.filename and re.fullmatch(r"[0-9a-f]{32}", m.hash)


@pytest.mark.parametrize("who", ["cadre", "teacher"])
def test_after_a_download_collect_sees_every_form_as_on_device(served, who) -> None:
    # ServerFormUseCases.fetchFormDetails: a listed hash that differs from the file's md5 makes
    # "UpdatedHash" at every refresh; a media md5 that differs, "UpdatedMedia".
    with Collect(served.link(who)) as phone:
        assert {kind for _, _, kind in phone.form_details()} == {"New"}
        for e in phone.form_list():
            phone.download(e)
        details = phone.form_details()
        assert [kind for _, _, kind in details] == ["OnDevice"] * len(details)
        assert phone.warnings == []  # no manifest Collect would have skipped
        if who == "teacher":
            assert all(media for e, media, _ in details if e.manifest_url)


def test_a_link_typed_with_a_trailing_slash_lists_and_sends(served) -> None:
    with Collect(served.link("cadre") + "/") as phone:
        assert phone.form_list()
        iid = f"uuid:{uuid.uuid4()}"
        (answer,) = phone.send(base.sweep_xml(served.version, iid), {"1764374400001.jpg": JPEG})
    assert answer.status == 201


# ---- HEAD and sending -------------------------------------------------------------------
def test_head_is_204_with_a_numeric_length_and_no_redirect(served, cadre) -> None:
    r = cadre.request("HEAD", cadre.submission_url())
    assert r.status_code == 204 and "Location" not in r.headers
    assert int(r.headers["X-OpenRosa-Accept-Content-Length"]) >= 10_000_000
    assert cadre.preflight() == int(r.headers["X-OpenRosa-Accept-Content-Length"])


def test_the_device_id_arrives_as_collect_encodes_it(served, cadre) -> None:
    iid = f"uuid:{uuid.uuid4()}"
    assert "deviceID=collect%3AAb12Cd34Ef56Gh78" in str(
        cadre.request("HEAD", cadre.submission_url()).request.url
    )
    cadre.send(base.sweep_xml(served.version, iid), {"1764374400001.jpg": JPEG})
    assert base._rows(served, iid)["local"][0][2] == "collect:Ab12Cd34Ef56Gh78"


def test_success_carries_a_message_collect_shows(served, cadre) -> None:
    message = cadre.submit(
        base.sweep_xml(served.version, f"uuid:{uuid.uuid4()}"), {"1764374400001.jpg": JPEG}
    )
    assert message  # ResponseMessageParser found an OpenRosaResponse <message>


def test_split_at_exactly_the_accepted_length(served) -> None:
    iid = f"uuid:{uuid.uuid4()}"
    xml = base.sweep_xml(served.version, iid, photos=("a.jpg", "b.jpg", "c.jpg"))
    files = {n: JPEG + n.encode() for n in ("a.jpg", "b.jpg", "c.jpg")}
    exact = len(xml) + len(files["a.jpg"]) + len(files["b.jpg"])  # a+b fit, c does not
    with Collect(served.link("cadre")) as phone:
        phone.preflight = lambda: exact
        answers = phone.send(xml, files)
    assert [a.status for a in answers] == [201, 201]
    rows = base._rows(served, iid)
    assert [r[0] for r in rows["att"]] == ["a.jpg", "b.jpg", "c.jpg"]
    assert rows["sub"][0][1] == 3


def test_more_than_a_hundred_photos_go_in_posts_of_101(served, cadre) -> None:
    iid = f"uuid:{uuid.uuid4()}"
    names = tuple(f"{1764374400000 + i}.jpg" for i in range(MAX_FILES_PER_POST + 2))
    files = {n: n.encode() * 10 for n in names}
    answers = cadre.send(base.sweep_xml(served.version, iid, photos=names), files)
    assert [a.status for a in answers] == [201, 201]
    rows = base._rows(served, iid)
    assert len(rows["att"]) == len(names) and rows["sub"][0][1] == len(names)


def test_a_failed_post_stops_the_split_and_collect_shows_the_servers_message(served, cadre) -> None:
    xml = base.sweep_xml(served.version, form_id="no_such_form", photos=("a.jpg", "b.jpg"))
    cadre.preflight = lambda: len(xml) + len(JPEG)  # two POSTs planned
    answers = cadre.send(xml, {"a.jpg": JPEG, "b.jpg": JPEG})
    assert [a.status for a in answers] == [404]  # the second POST is never made
    with pytest.raises(CollectError) as e:
        cadre.submit(xml, {"a.jpg": JPEG})
    assert re.search(r"[\u4e00-\u9fff]", str(e.value))  # the OpenRosaResponse message, not
    # Collect's generic text


def test_a_resend_built_afresh_is_stored_once(served, cadre) -> None:
    # After a failure Collect builds the body again: new boundary, new Date, same file name.
    iid = f"uuid:{uuid.uuid4()}"
    xml, created = base.sweep_xml(served.version, iid), datetime(2026, 11, 29, 8, 10, 0)
    for _ in range(2):
        (answer,) = cadre.send(
            xml, {"1764374400001.jpg": JPEG}, "人居环境整治巡查", created=created
        )
        assert answer.status == 201
    rows = base._rows(served, iid)
    assert len(rows["sub"]) == len(rows["local"]) == len(rows["att"]) == 1


def test_a_conflict_shows_the_servers_message(served, cadre) -> None:
    iid = f"uuid:{uuid.uuid4()}"
    cadre.submit(base.sweep_xml(served.version, iid), {"1764374400001.jpg": JPEG})
    with pytest.raises(CollectError, match="instanceID"):
        cadre.submit(base.sweep_xml(served.version, iid, note="改过"), {"1764374400001.jpg": JPEG})


def test_a_post_collect_counts_as_within_the_declared_length_is_accepted(served, cadre) -> None:
    iid = f"uuid:{uuid.uuid4()}"
    xml = base.sweep_xml(served.version, iid, photos=("a.jpg", "b.jpg"))
    limit = cadre.preflight()
    half = (limit - len(xml)) // 2
    files = {"a.jpg": b"\0" * half, "b.jpg": b"\0" * (limit - len(xml) - half)}
    assert split(len(xml), [half, len(files["b.jpg"])], limit) == [[0, 1]]  # one POST
    try:
        (answer,) = cadre.send(xml, files)
    except (CollectError, httpx.HTTPError) as e:
        pytest.fail(f"not sent: {e}")
    assert answer.status == 201
