"""Hostile input, from each cause (issue 9): every reader and every text field, then the store.

Each class of problem is generated here from its cause, not copied from one example: text a
source hands over with a lone UTF-16 surrogate, NUL, 1 MB or 20 MB; CSV bytes in GBK, GB18030,
with a BOM or in no encoding at all; zips that lie, expand to 1 GiB, hold too many members or
carry a bad CRC; Collect folders with nothing readable. What a user must see every time:
no traceback, one line naming the file (and member, sheet or row), the rest of the data
stored, and nothing that could not be read lost (it is in quarantine, with its raw text).
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest
from openpyxl import load_workbook

from pipelines.config import load_settings
from pipelines.errors import DataError
from pipelines.records import AttachmentRef, Quarantined, Record, storable
from pipelines.sources.exports import FilesSource, _safe
from pipelines.store import Store, StoreError, open_store
from pipelines.sync import pull
from tests.helpers import REPO
from tests.pipelines.sources.test_central import FAST, PASSWORD
from tests.pipelines.sources.test_central import settings_for as central_settings
from tests.standins.central_server import CentralStandIn, seed_synthetic

DATA = REPO / "tests" / "data" / "pipelines"
EXPORT = DATA / "sanitation_sweep.csv.zip"
KOBO_XLSX = DATA / "kobo_sanitation_sweep.xlsx"
FORM = "sanitation_sweep"
A = "uuid:3dc0d0ad-4d90-48d4-b67e-ab048822f54e"
MB = 1 << 20


def settings(tmp_path: Path):
    return load_settings({"data_dir": tmp_path / "data", "build_dir": DATA / "xforms"}, env={})


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text
    return text


# ---- the store keeps what it can, per cause ---------------------------------------------
# Text as a source hands it over, by cause. "kept" says what the store does with it in an
# answer: kept as is, kept without the control characters, or quarantined.
TEXT = {
    "lone surrogate": ("修好了\ud83d", "quarantined"),
    "lone low surrogate": ("\udc9f好", "quarantined"),
    "NUL": ("a\x00b\x01c", "cleaned"),
    "1 MB": ("满" * MB, "kept"),
    "20 MB": ("x" * (20 * MB), "quarantined"),
    "line breaks and tabs": ("第一行\n第二行\t完", "kept"),
}
# Values that are not text
VALUES = {
    "NaN": math.nan,
    "Infinity": math.inf,
    "huge integer": 10**40,
    "GBK bytes": "中文".encode("gbk"),
}
# Where text sits in a record
PLACES = ("answer", "answer in a group", "answer in a repeat", "field name", "instance id")
PLACES += ("form version", "review state", "source version", "attachment name")


def rec(iid: str, **kw) -> Record:
    base = dict(
        form_id="f",
        instance_id=iid,
        form_version="1",
        submitted_at="2026-01-01T00:00:00.000Z",
        updated_at=None,
        review_state=None,
        data={"note": "ok", "grp": {"q": "ok"}, "piles": [{"t": "x"}]},
    )
    base.update(kw)
    return Record(**base)


def placed(place: str, value) -> Record:
    if place == "answer":
        return rec("bad", data={"note": value})
    if place == "answer in a group":
        return rec("bad", data={"grp": {"q": value}})
    if place == "answer in a repeat":
        return rec("bad", data={"piles": [{"t": "x"}, {"t": value}]})
    if place == "field name":
        return rec("bad", data={value: "x"})
    if place == "instance id":
        return rec(value)
    if place == "attachment name":
        return rec("bad", attachments=(AttachmentRef(value, path="x"),), attachments_expected=1)
    return rec("bad", **{place.replace(" ", "_"): value})


def expected(place: str, cause: str) -> str:
    if place.startswith("answer"):
        return TEXT[cause][1]
    if place == "field name":  # text like an answer's, but never changed: kept or not
        return "kept" if cause in ("1 MB", "line breaks and tabs") else "quarantined"
    # ids, versions, states, file names: any oddity quarantines (1 MB is over their bound)
    return "quarantined"


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "data" / "manyi.sqlite", tmp_path / "data")
    yield s
    s.close()


@pytest.mark.parametrize("cause", list(TEXT))
@pytest.mark.parametrize("place", PLACES)
def test_one_bad_text_never_stops_its_page(store: Store, place: str, cause: str) -> None:
    text, _ = TEXT[cause]
    bad = placed(place, text)
    page = [rec("before"), bad, rec("after")]
    counts = store.write_page("central", "f", page, cursor={"hwm": "1"})
    assert store.cursor("central", "f") == {"hwm": "1"}  # the page went through
    got = {r.instance_id: r for r in store.records("f")}
    assert {"before", "after"} <= set(got)
    outcome = expected(place, cause)
    if outcome == "quarantined":
        assert counts.quarantined == 1 and len(counts.quarantined_items) == 1
        (item,) = store.quarantined("f")
        assert item.reason and "\n" not in item.reason and text[:20] not in item.reason
        raw = json.loads(item.raw)  # the raw text is kept whole and reads back
        if place == "answer":
            assert raw["data"]["note"] == text
        listed = store.quarantine("f")
        assert [(q.form_id, q.tries) for q in listed] == [("f", 1)]
    else:
        stored = got[bad.instance_id].data["note"] if place == "answer" else None
        if place == "answer":
            assert stored == (text if outcome == "kept" else re.sub(r"[\x00-\x08]", "", text))
        assert counts.quarantined == 0
    # a rerun (the same page again) neither fails nor doubles anything
    again = store.write_page("central", "f", page)
    assert again.new == 0 and store.count("f") == len(got)
    if outcome == "quarantined":
        assert [q.tries for q in store.quarantine("f")] == [2]


@pytest.mark.parametrize("cause", list(VALUES))
@pytest.mark.parametrize("place", ["answer", "answer in a group", "answer in a repeat"])
def test_values_that_are_not_answers_are_quarantined(store: Store, place: str, cause: str) -> None:
    counts = store.write_page("kobo", "f", [rec("before"), placed(place, VALUES[cause])])
    assert counts.new == 1 and counts.quarantined == 1
    (item,) = store.quarantine("f")
    assert item.key == "bad" and "field '" in item.reason


def test_keys_that_are_not_text_and_deep_nesting_are_quarantined(store: Store) -> None:
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["g"] = {}
        node = node["g"]
    page = [rec("k", data={1: "x", (2, 3): "y"}), rec("deep", data=deep), rec("fine")]
    counts = store.write_page("central", "f", page)
    assert counts.new == 1
    reasons = {q.key: q.reason for q in store.quarantine("f")}
    assert "not text" in reasons["k"] and "nested too deep" in reasons["deep"]


def test_quarantined_items_from_a_source_are_storable_too(store: Store) -> None:
    # A source's own quarantine record may carry the same text: reason, raw and key.
    item = Quarantined("central", "f", "bad \ud800 reason", '{"note": "\ud800"}', "uuid:\ud800")
    counts = store.write_page("central", "f", [], [item], gone=["uuid:\udfff"])
    assert counts.quarantined == 1
    (kept,) = store.quarantined("f")
    assert json.loads(kept.raw) == {"note": "\ud800"} and kept.key == "uuid:\\ud800"


def test_any_json_a_server_sends_is_stored_or_quarantined() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    text = st.text(st.characters(blacklist_categories=()), max_size=20)
    scalar = st.none() | st.booleans() | st.integers() | st.floats() | text
    data = st.dictionaries(
        text, st.recursive(scalar, lambda c: st.lists(c) | st.dictionaries(text, c), max_leaves=20)
    )

    @hypothesis.settings(max_examples=100, deadline=None)
    @hypothesis.given(data)
    def check(answers: dict) -> None:
        item = storable(rec("x", data=answers), "central")
        if isinstance(item, Quarantined):
            assert item.reason and item.raw.encode("utf-8")
            return
        item.text.encode("utf-8")  # storable in SQLite: no surrogate left
        back = json.loads(item.text)
        assert back == json.loads(json.dumps(item.record.data))
        assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", item.text.replace("\\u00", ""))

    check()


# ---- the Central pull: one broken record, the others stored -----------------------------
def test_central_pull_quarantines_the_one_record_with_a_lone_surrogate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with CentralStandIn(password=PASSWORD) as central:
        ids = seed_synthetic(central, FORM, 20, photo_every=0)
        central.edit(FORM, ids[7], note="修好了\ud83d")  # half an emoji, from the keyboard
        s = central_settings(central, tmp_path)
        report = pull(s, "central", [FORM], page_size=5, policy=FAST)
        assert (report.new, report.quarantined) == (19, 1)
        (item,) = report.quarantined_items
        assert item.key == ids[7] and "field 'note'" in item.reason
        assert "surrogate" in item.reason
        with open_store(s) as store:
            assert {r.instance_id for r in store.records(FORM)} == set(ids) - {ids[7]}
            (raw,) = store.quarantined(FORM)
            assert json.loads(raw.raw)["data"]["note"] == "修好了\ud83d"
        again = pull(s, "central", [FORM], policy=FAST)  # a rerun does not fail
        assert (again.new, again.updated) == (0, 0)
        assert [q.key for q in again.quarantined_items] == [ids[7]]
        central.edit(FORM, ids[7], note="修好了")  # corrected on the server
        fixed = pull(s, "central", [FORM], policy=FAST)
        assert fixed.new == 1 and fixed.quarantined_items == []
        with open_store(s) as store:
            assert store.count(FORM) == 20 and store.quarantine(FORM) == []


# ---- Central export zips ----------------------------------------------------------------
def export_with(tmp_path: Path, name: str, edit=None, encode=None, method=zipfile.ZIP_DEFLATED):
    """The recorded export, its CSVs edited as text (``edit``) and encoded (``encode``)."""
    path = tmp_path / name
    with zipfile.ZipFile(EXPORT) as src, zipfile.ZipFile(path, "w", method) as out:
        for member in src.namelist():
            body = src.read(member)
            if member.endswith(".csv"):
                text = body.decode("utf-8-sig")
                text = edit(member, text) if edit else text
                body = encode(text) if encode else text.encode("utf-8")
            out.writestr(member, body)
    return path


def set_note(value: str):
    """An edit putting ``value`` in A's note (the root CSV's ``note`` column)."""

    def edit(member: str, text: str) -> str:
        if "-" in member:
            return text
        rows = list(__import__("csv").reader(io.StringIO(text)))
        col, key = rows[0].index("note"), rows[0].index("KEY")
        for row in rows[1:]:
            if row[key] == A:
                row[col] = value
        out = io.StringIO()
        __import__("csv").writer(out, lineterminator="\r\n").writerows(rows)
        return out.getvalue()

    return edit


def records_of(tmp_path: Path, path: Path, sub: str = "x") -> dict[str, Record]:
    s = settings(tmp_path / sub)
    pull(s, "files", None, path)
    with open_store(s) as store:
        return {r.instance_id: r for r in store.records(FORM)}


@pytest.mark.parametrize(
    "encoding", ["gbk", "gb18030", "utf-8-sig", "utf-8"], ids=lambda e: f"re-saved as {e}"
)
def test_export_csv_in_any_chinese_encoding_reads_the_same(tmp_path: Path, encoding: str) -> None:
    note = "粪堆已清理，群众满意" + ("𠀀" if encoding == "gb18030" else "")  # 𠀀: not in GBK
    reference = records_of(tmp_path, export_with(tmp_path, "u.zip", set_note(note)), "utf8")
    path = export_with(tmp_path, "e.zip", set_note(note), lambda t: t.encode(encoding))
    got = records_of(tmp_path, path, encoding)
    assert got[A].data["note"] == note
    assert {k: r.data for k, r in got.items()} == {k: r.data for k, r in reference.items()}


def test_an_ascii_start_then_gbk_further_on_still_reads(tmp_path: Path) -> None:
    # Detection looks at the first 64 KiB; GBK after that is found on the way.
    def edit(member: str, text: str) -> str:
        if "-" in member:
            return text
        lines = text.split("\r\n")
        return "\r\n".join(
            [lines[0], *[line.replace("firewood", "f" * 70_000) for line in lines[1:]]]
        )

    path = export_with(tmp_path, "late.zip", edit, lambda t: t.encode("gbk"))
    got = records_of(tmp_path, path)
    assert len(got) == 6 and any(
        "粪" in json.dumps(r.data, ensure_ascii=False) for r in got.values()
    )


@pytest.mark.parametrize(
    "cause, encode",
    [
        ("Latin-1", lambda t: t.replace("firewood", "café,").encode("latin-1", "replace")),
        ("UTF-16", lambda t: t.encode("utf-16")),
        ("lone surrogate as CESU-8", lambda t: t.encode("utf-8") + b"x,\xed\xa0\x80\x80,y\r\n"),
        ("binary", lambda t: bytes(range(256)) * 64),
    ],
)
def test_text_in_no_known_encoding_is_one_line_naming_the_file(
    tmp_path: Path, cause: str, encode
) -> None:
    # The root CSV is Chinese: Latin-1 cannot hold it ("replace"), which is also realistic.
    path = export_with(tmp_path, "bad.zip", encode=encode)
    with pytest.raises(DataError) as e:
        pull(settings(tmp_path), "files", None, path)
    line = one_line(e.value)
    assert "bad.zip:sanitation_sweep" in line and (".csv" in line)
    assert "UTF-8" in line or "UTF-16" in line


@pytest.mark.parametrize("cause", ["NUL", "1 MB", "line breaks"])
def test_every_text_field_of_an_export_carries_odd_text(tmp_path: Path, cause: str) -> None:
    value = {"NUL": "a\x00b", "1 MB": "满" * MB, "line breaks": "一\n二\r\n三"}[cause]
    got = records_of(tmp_path, export_with(tmp_path, "odd.zip", set_note(value)))
    assert got[A].data["note"] == value.replace("\x00", "")  # NUL dropped, all else kept
    assert len(got) == 6


def test_a_field_over_the_csv_bound_is_an_error_naming_file_and_row(tmp_path: Path) -> None:
    path = export_with(tmp_path, "huge.zip", set_note("x" * (20 * MB)))
    with pytest.raises(DataError) as e:
        pull(settings(tmp_path), "files", None, path)
    line = one_line(e.value)
    assert "huge.zip:sanitation_sweep.csv row " in line and "16 MiB" in line


def test_rows_that_do_not_fit_the_header_are_quarantined(tmp_path: Path) -> None:
    def edit(member: str, text: str) -> str:
        if "-" in member:
            return text
        return "\n".join(f"{t},surplus" if f",{A}," in t else t for t in text.split("\n"))

    s = settings(tmp_path)
    report = pull(s, "files", None, export_with(tmp_path, "wide.zip", edit))
    reasons = [q.reason for q in report.quarantined_items]
    assert any(
        "fields, the header has" in r and "wide.zip:sanitation_sweep.csv row" in r for r in reasons
    )


def flip_a_byte(path: Path, member: str) -> None:
    """Damage ``member``'s stored bytes so its CRC no longer matches."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    blob = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    blob[start + info.compress_size // 2] ^= 0x01
    path.write_bytes(bytes(blob))


def test_a_bad_crc_in_a_form_csv_is_one_line_naming_the_member(tmp_path: Path) -> None:
    path = export_with(tmp_path, "crc.zip", method=zipfile.ZIP_STORED)
    flip_a_byte(path, "sanitation_sweep-piles.csv")
    with pytest.raises(DataError) as e:
        pull(settings(tmp_path), "files", None, path)
    assert "crc.zip:sanitation_sweep-piles.csv: damaged" in one_line(e.value)


def test_a_bad_crc_in_a_photo_keeps_the_records_and_says_which(tmp_path: Path) -> None:
    path = export_with(tmp_path, "photo.zip", method=zipfile.ZIP_STORED)
    flip_a_byte(path, "media/1764374400001.jpg")
    s = settings(tmp_path)
    report = pull(s, "files", None, path)
    assert (report.new, report.attachments) == (6, 2)
    (warning,) = report.warnings
    assert "media/1764374400001.jpg: damaged" in warning
    with open_store(s) as store:
        (photo,) = store.attachments(FORM, A)
    assert photo.status == "missing"  # asked for again on the next pull


def raw_zip(path: Path, members: list[tuple[str, bytes, int, int]]) -> Path:
    """A zip written by hand: (name, deflate data, CRC, declared size) per member, so a
    member may declare what it likes."""
    out, central = bytearray(), bytearray()
    for name, data, crc, size in members:
        n = name.encode()
        offset = len(out)
        out += struct.pack(
            "<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(data), size, len(n), 0
        )
        out += n + data
        central += struct.pack(
            "<4s6H3I5H2I",
            b"PK\x01\x02",
            20,
            20,
            0,
            8,
            0,
            0,
            crc,
            len(data),
            size,
            len(n),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        central += n
    end = struct.pack(
        "<4s4H2IH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(out), 0
    )
    path.write_bytes(bytes(out + central + end))
    return path


def zeros_deflated(mib: int) -> tuple[bytes, int]:
    """``mib`` MiB of zeros, deflated (~1 KiB per MiB), and their CRC: built from one
    compressed MiB, since after a full flush every MiB compresses alike."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(MB)) + c.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(bytes(MB), crc)
    return block * mib + c.flush(), crc


@pytest.mark.parametrize("lie", ["declares 1 GiB", "declares 1 KiB"])
@pytest.mark.parametrize("member", ["sanitation_sweep.csv", "media/1764374400001.jpg"])
def test_a_zip_bomb_stops_fast_and_small(tmp_path: Path, lie: str, member: str) -> None:
    data, crc = zeros_deflated(1025)  # expands to just over 1 GiB
    declared = (1025 * MB) if lie == "declares 1 GiB" else 1024
    members = [(member, data, crc, declared)]
    if member.startswith("media/"):  # a good export around it
        with zipfile.ZipFile(EXPORT) as src:
            for name in src.namelist():
                if name != member:
                    body = src.read(name)
                    c = zlib.compressobj(9, zlib.DEFLATED, -15)
                    members.append(
                        (name, c.compress(body) + c.flush(), zlib.crc32(body), len(body))
                    )
    path = raw_zip(tmp_path / "bomb.zip", members)
    assert path.stat().st_size < 2 * MB
    started = time.monotonic()
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as e, FilesSource(path, DATA / "xforms") as src:
            for page in src.pages(FORM):
                for record in page.records:
                    for ref in record.attachments:
                        for _ in src.fetch_attachment(record, ref) or ():
                            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    line = one_line(e.value)
    assert f"bomb.zip:{member}" in line
    assert ("declares" in line) if lie == "declares 1 GiB" else ("damaged" in line)
    assert time.monotonic() - started < 10 and peak < 64 * MB


def test_too_many_members_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("sanitation_sweep.csv", "KEY\n")
        for i in range(_safe.MAX_MEMBERS):
            z.writestr(f"media/{i}.jpg", b"")
    with pytest.raises(DataError) as e:
        FilesSource(path)
    assert "many.zip: 100,001 members, over the bound of 100,000" in one_line(e.value)


@pytest.mark.parametrize(
    "case",
    ["empty zip", "only media", "truncated", "not a zip", "csv in a folder"],
)
def test_an_export_with_nothing_to_read_is_an_error_not_zeros(tmp_path: Path, case: str) -> None:
    path = tmp_path / "export.csv.zip"
    if case == "empty zip":
        zipfile.ZipFile(path, "w").close()
    elif case == "only media":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("media/1.jpg", b"\xff\xd8")
    elif case == "truncated":
        path.write_bytes(EXPORT.read_bytes()[:1500])
    elif case == "not a zip":
        path.write_text("KEY,note\n1,x\n", encoding="utf-8")
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("export/sanitation_sweep.csv", EXPORT.read_bytes())
    s = settings(tmp_path)
    with pytest.raises(DataError) as e:
        pull(s, "files", None, path)
    line = one_line(e.value)
    assert "export.csv.zip" in line
    if case in ("only media", "csv in a folder"):
        assert "<form_id>.csv" in line and ("media/1.jpg" in line or "export/" in line)
    assert not (tmp_path / "data" / "manyi.sqlite").exists() or _count(s) == 0


def _count(s) -> int:
    with open_store(s) as store:
        return store.count()


# ---- KoboToolbox XLSX -------------------------------------------------------------------
def xlsx_with(tmp_path: Path, name: str, part: str, edit) -> Path:
    """The recorded kpi export with one part's bytes edited."""
    path = tmp_path / name
    with zipfile.ZipFile(KOBO_XLSX) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for member in src.namelist():
            body = src.read(member)
            out.writestr(member, edit(body) if member == part else body)
    return path


def test_an_xlsx_that_is_not_a_zip_or_is_damaged_is_one_line(tmp_path: Path) -> None:
    renamed = tmp_path / "renamed.xlsx"
    renamed.write_bytes(b"KEY,note\n")
    with pytest.raises(DataError) as e:
        FilesSource(renamed)
    assert "renamed.xlsx: not an .xlsx workbook" in one_line(e.value)
    crc = xlsx_with(tmp_path, "crc.xlsx", "xl/worksheets/sheet1.xml", lambda b: b)
    flip_a_byte(crc, "xl/worksheets/sheet1.xml")
    with pytest.raises(DataError) as e:
        FilesSource(crc)
    assert "crc.xlsx:xl/worksheets/sheet1.xml: damaged" in one_line(e.value)


def test_a_corrupt_sheet_names_the_sheet_and_row(tmp_path: Path) -> None:
    # An invalid character reference (what a NUL or a lone surrogate would be in XML)
    def edit(body: bytes) -> bytes:
        return re.sub(rb"(<row r=\"3\".*?<v>)", rb"\1&#0;", body, count=1, flags=re.S)

    path = xlsx_with(tmp_path, "bad.xlsx", "xl/worksheets/sheet1.xml", edit)
    with pytest.raises(DataError) as e:
        pull(settings(tmp_path), "files", [FORM], path)
    line = one_line(e.value)
    assert "bad.xlsx, sheet '" in line and " row " in line and "export it again" in line


def test_the_longest_cell_excel_allows_is_read_whole(tmp_path: Path) -> None:
    # 32,767 characters: Excel's (and kpi's) limit for one cell, so an XLSX holds no 1 MB
    # value; the 1 MB and 20 MB causes are the CSV's and the Collect XML's.
    book = load_workbook(KOBO_XLSX)
    sheet = book.worksheets[0]
    header = [c.value for c in sheet[1]]
    sheet.cell(row=2, column=header.index("note") + 1).value = "满" * 32767
    path = tmp_path / "big.xlsx"
    book.save(path)
    s = settings(tmp_path)
    assert pull(s, "files", None, path).new == 6
    with open_store(s) as store:
        assert any(r.data.get("note") == "满" * 32767 for r in store.records())


def test_an_xlsx_part_declaring_gigabytes_is_refused(tmp_path: Path) -> None:
    data, crc = zeros_deflated(1)
    path = raw_zip(tmp_path / "bomb.xlsx", [("xl/worksheets/sheet1.xml", data, crc, 3 * 2**30)])
    with pytest.raises(DataError) as e:
        FilesSource(path)
    assert "bomb.xlsx:xl/worksheets/sheet1.xml: declares" in one_line(e.value)


# ---- ODK Collect folders ----------------------------------------------------------------
GOOD = DATA / "collect" / "instances"


def collect_with(tmp_path: Path, bad: dict[str, bytes]) -> Path:
    """The recorded Collect folder plus one instance folder per hostile file."""
    root = tmp_path / "collect" / "instances"
    for folder in GOOD.iterdir():
        (root / folder.name).mkdir(parents=True)
        for f in folder.iterdir():
            (root / folder.name / f.name).write_bytes(f.read_bytes())
    for name, body in bad.items():
        (root / name).mkdir()
        (root / name / f"{name}.xml").write_bytes(body)
    return root.parent


def instance(note: bytes, iid: str, head: bytes = b"") -> bytes:
    return (
        head + b'<data id="sanitation_sweep" version="2023010101"><village>370481115200</village>'
        b"<note>"
        + note
        + b"</note><meta><instanceID>"
        + iid.encode()
        + b"</instanceID></meta></data>"
    )


def test_every_broken_instance_is_quarantined_and_the_others_read(tmp_path: Path) -> None:
    bad = {
        "gbk_declared": instance(
            "粪堆".encode("gbk"), "uuid:g1", b'<?xml version="1.0" encoding="GBK"?>'
        ),
        "gbk_undeclared": instance("粪堆".encode("gbk"), "uuid:g2"),
        "nul": instance(b"a\x00b", "uuid:n1"),
        "surrogate": instance(b"&#xD800;", "uuid:s1"),
        "huge": instance(b"x" * (17 * MB), "uuid:h1"),
        "not_xml": b"\x89PNG\r\n\x1a\n",
        "bomb": b'<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY e "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">'
        b'<!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;"><!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">'
        b'<!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">]>' + instance(b"&h;", "uuid:b1"),
    }
    good = {
        "one_mb": instance("满".encode() * MB, "uuid:m1"),
        "gbk_as_utf8": instance(
            "粪堆".encode(), "uuid:u1", b'<?xml version="1.0" encoding="UTF-8"?>'
        ),
    }
    s = settings(tmp_path)
    report = pull(s, "files", [FORM], collect_with(tmp_path, bad | good))
    assert report.new == 2 + len(good)
    reasons = {
        q.reason.split(":")[0].rsplit("/", 1)[-1]: q.reason for q in report.quarantined_items
    }
    for name in bad:
        assert f"{name}.xml" in reasons, name  # with its path
    assert "bound" in reasons["huge.xml"]
    with open_store(s) as store:
        notes = {r.instance_id: r.data.get("note") for r in store.records(FORM)}
    assert notes["uuid:m1"] == "满" * MB and notes["uuid:u1"] == "粪堆"


@pytest.mark.parametrize("case", ["empty folder", "nothing readable", "another form"])
def test_a_collect_folder_with_nothing_readable_is_an_error(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "phone"
    (folder / "instances" / "x_2026").mkdir(parents=True)
    (folder / "notes.txt").write_text("hi")
    if case == "nothing readable":
        (folder / "instances" / "x_2026" / "x.xml").write_bytes(b"\x00\x01garbage")
    if case == "another form":
        (folder / "instances" / "x_2026" / "x.xml").write_bytes(
            instance(b"", "uuid:o").replace(b"sanitation_sweep", b"other_form")
        )
    forms = [FORM] if case == "another form" else None
    with pytest.raises(DataError) as e:
        pull(settings(tmp_path), "files", forms, folder)
    line = one_line(e.value)
    expected_text = {
        "empty folder": "looked for instances/<form>_<date>/<form>_<date>.xml",
        "nothing readable": "none of the 1 instance file(s) could be read",
        "another form": "forms found: other_form",
    }[case]
    assert expected_text in line and str(folder) in line


# ---- store faults -----------------------------------------------------------------------
def test_a_full_disk_mid_pull_then_a_rerun_loses_and_doubles_nothing(tmp_path: Path) -> None:
    # SQLite's max_page_count makes the database "full" for real (SQLITE_FULL), mid-pull.
    with CentralStandIn(password=PASSWORD) as central:
        ids = seed_synthetic(central, FORM, 60, photo_every=0)
        s = central_settings(central, tmp_path)
        with open_store(s) as store:
            pages = store.db.execute("PRAGMA page_count").fetchone()[0]
            store.db.execute(f"PRAGMA max_page_count = {pages + 6}")
            with pytest.raises(StoreError) as e:
                pull(s, "central", [FORM], page_size=10, policy=FAST, store=store)
            line = one_line(e.value)
            assert "the disk is full" in line and str(s.store_path) in line
            assert "rollback" not in line and "free some space" in line
            kept = store.count(FORM)
        assert 0 < kept < 60  # mid-pull: the pages before the full one are stored
        report = pull(s, "central", [FORM], page_size=10, policy=FAST)
        assert report.new == 60 - kept
        with open_store(s) as store:
            rows = store.db.execute("SELECT instance_id FROM submissions").fetchall()
        assert sorted(r[0] for r in rows) == sorted(ids)  # nothing lost, nothing twice
