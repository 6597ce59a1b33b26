"""Issue 9: no personal number slips through. ``refresh_outputs`` runs over real stores whose
records carry ID numbers and mobiles typed every way people type them, and every output file
(HTML, XLSX cell by cell, CSV, the maps) is scanned with the wider scanner.

Two stores:

- the demo's simulated year as it is: the simulator plants a few numbers in notes that reach
  the follow-up lists (``SimulatedYear.planted_numbers``);
- the same kind of year with a number in *every* free-text field of every record of every
  form (notes, titles, place names, the names of the people responsible …), some in roster-ID
  and village fields, and quarantined records whose reason and raw text hold numbers.
"""

from __future__ import annotations

import csv
import html
import io
import itertools
import random
import re
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from forms.schema import FormSchema, load_schema
from geo.illustrative import illustrative_boundaries
from geo.villages import load_villages
from pipelines.analysis.rosters import Rosters, demo_rosters, write_rosters
from pipelines.config import Settings
from pipelines.demo.simulate import SimulatedYear, simulate_year
from pipelines.privacy import find_unmasked
from pipelines.records import Quarantined
from pipelines.reports import Outputs, refresh_outputs
from pipelines.reports.lists import QUARANTINE
from pipelines.store import open_store
from tests.pipelines.test_privacy import (
    ID_LAYOUTS,
    OLD_ID_LAYOUTS,
    PHONE_LAYOUTS,
    PREFIXES,
    PROVINCES,
    SEPARATORS,
    Typed,
    _digits,
    id_number,
    lay_out,
)

AS_OF = date(2023, 6, 30)
VS = load_villages()
SIZES = {"students_per_village": 6, "residents_per_village": 8, "welfare_posts": 60,
         "dibao_households": 60, "dibao_people": 100}  # fmt: skip


# --- planted numbers: every format, in turn --------------------------------------------------


def planted(k: int) -> Typed:
    """The k-th planted number: kind, layout, separator, width and prefix each cycle, so a few
    dozen numbers cover every format of :mod:`tests.pipelines.test_privacy`."""
    rng = random.Random(k)
    how = ("ascii", "wide", "mixed")[k % 3]
    sep = SEPARATORS[(k + k // len(SEPARATORS)) % len(SEPARATORS)]  # each kind, each separator
    if k % 2 == 0:
        born = date(1940 + k % 60, 1 + k % 12, 1 + k % 28)
        area = PROVINCES[k % len(PROVINCES)] + f"{rng.randrange(10_000):04d}"
        if k % 10 == 4:
            digits, layouts = f"{area}{born:%y%m%d}{rng.randrange(1000):03d}", OLD_ID_LAYOUTS
        else:
            digits, layouts = id_number(f"{area}{born:%Y%m%d}{rng.randrange(1000):03d}"), ID_LAYOUTS
        prefix = ""
    else:
        digits = f"1{'3456789'[k % 7]}{rng.randrange(10**9):09d}"
        layouts, prefix = PHONE_LAYOUTS, PREFIXES[k % len(PREFIXES)]
        prefix += ("", " ", "-", "\u3000")[k % 4] if prefix else ""
    layout = layouts[(k // 2) % len(layouts)]
    width = [how == "wide" or (how == "mixed" and rng.random() < 0.5) for _ in digits]
    gaps = [rng.random() < 0.8 for _ in layout]
    typed = prefix + lay_out(digits, layout, sep, gaps, width)
    return Typed("id" if k % 2 == 0 else "phone", digits, typed, prefix)


def read_back(text: str) -> Typed:
    """A number the simulator typed, as a :class:`Typed`."""
    digits = _digits(text)
    phone = re.fullmatch(r"(0086|86)?(1[3-9][0-9]{9})", digits)
    if phone is None:
        return Typed("id", digits, text)
    skip = len(phone.group(1) or "")
    at = [i for i, c in enumerate(text) if c.isdecimal()][skip]  # the phone's own first digit
    return Typed("phone", phone.group(2), text, text[:at])


def style(n: Typed) -> tuple[str, str]:
    """A number's format: its kind and the separators it was typed with."""
    seps = set(n.text[len(n.prefix) :]) & set("".join(SEPARATORS))
    return n.kind, "".join(sorted(seps)) or "none"


def one_line(text: str) -> str:
    return " ".join(text.split())  # the lists put each text on one line


@dataclass
class Planted:
    """What a store was given: the numbers typed into its records."""

    numbers: list[Typed]

    @property
    def formats(self) -> set[tuple[str, str]]:
        return {style(n) for n in self.numbers}


# --- the stores --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(build: Path) -> tuple[dict[str, FormSchema], Rosters]:
    ids = sorted(p.stem for p in build.glob("*.json") if p.stem != "manifest")
    schemas = {i: load_schema(build, i) for i in ids}
    return schemas, demo_rosters([v.code for v in VS], seed=9, sizes=SIZES)


def _year(world: tuple[dict[str, FormSchema], Rosters], as_of: date) -> SimulatedYear:
    schemas, rosters = world
    boundaries = illustrative_boundaries(VS)
    return simulate_year(schemas, VS, rosters, boundaries, year=2023, as_of=as_of, seed=9)


def _report(root: Path, build: Path, rosters: Rosters, records: dict[str, list], as_of: date, quarantined: list[Quarantined] = ()) -> Outputs:  # fmt: skip
    write_rosters(rosters, root / "rosters")
    settings = Settings(data_dir=root / "data", outputs_dir=root / "out", build_dir=build,
                        plan_year=2023, source="files", rosters_dir=root / "rosters")  # fmt: skip
    with open_store(settings) as store:
        for form_id, recs in records.items():
            store.write_page("files", form_id, recs)
        for item in quarantined:
            store.write_page("files", item.form_id, [], [item])
    return refresh_outputs(settings, as_of)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, build: Path, world) -> tuple[Outputs, SimulatedYear]:  # fmt: skip
    """The demo's year, as the simulator makes it, at the demo's default as-of date."""
    year = _year(world, date(2023, 10, 15))
    result = _report(tmp_path_factory.mktemp("demo"), build, world[1], year.records, year.as_of)
    return result, year


@pytest.fixture(scope="module")
def everywhere(tmp_path_factory: pytest.TempPathFactory, build: Path, world) -> tuple[Outputs, Planted]:  # fmt: skip
    """A number in every free-text field of every record, in roster-ID and village fields of
    a few, and in quarantined records."""
    schemas, rosters = world
    year = _year(world, AS_OF)
    counter = itertools.count()
    numbers: list[Typed] = []

    def next_number() -> Typed:
        n = planted(next(counter))
        numbers.append(n)
        return n

    records: dict[str, list] = {}
    for form_id, recs in year.records.items():
        schema = schemas[form_id]
        texts = [f for f in schema.questions if f.type == "text"]
        picked = [f for f in schema.questions if f.from_file or f.list_name == "village"]
        out = []
        for i, rec in enumerate(recs):
            data = _copy(rec.data)
            for f in texts:
                _set(
                    data,
                    f.path.split("/"),
                    lambda old: f"{old or '张三丰'}，请联系{next_number().text}。",
                )
            if i % 50 == 7:  # a number where a roster ID or village code belongs
                for f in picked:
                    _set(data, f.path.split("/"), lambda old: next_number().text)
            if i % 97 == 3:  # unreadable characters next to a number
                f = texts[0] if texts else None
                if f is not None:
                    _set(
                        data,
                        f.path.split("/"),
                        lambda old: f"\ud800备注\x00{next_number().text}\x00",
                    )
            out.append(replace(rec, data=data))
        records[form_id] = out
    held = [
        Quarantined("files", "home_visit", f"bad XML near 电话 {next_number().text} (line 3)",
                    f"<data><note>身份证 {next_number().text}</note></data>", "uuid:held-1"),
        Quarantined("files", "police_patrol", f"unreadable row: {next_number().text}",
                    f"{next_number().text},{next_number().text}"),
    ]  # fmt: skip
    result = _report(tmp_path_factory.mktemp("everywhere"), build, rosters, records, AS_OF, held)
    return result, Planted(numbers)


def _copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_copy(v) for v in data]
    return data


def _set(data: Any, path: list[str], value) -> None:
    """Set the field at ``path`` to ``value(old)`` wherever it is (repeats are lists)."""
    if isinstance(data, list):
        for item in data:
            _set(item, path, value)
        return
    if not isinstance(data, dict):
        return
    if len(path) == 1:
        data[path[0]] = value(data.get(path[0]))  # answered or not
        return
    if path[0] in data:
        _set(data[path[0]], path[1:], value)


# --- reading the outputs back ------------------------------------------------------------------


def pieces(path: Path) -> list[str]:
    """What a reader of the file sees, in the pieces that stand alone: each XLSX cell; each
    CSV row (its cells whole, so a number typed across a line break is read whole); each HTML line
    (HTML entities and the maps' JSON ``\\uXXXX`` escapes read back)."""
    if path.suffix == ".xlsx":
        wb = load_workbook(path, read_only=True)
        return [str(v) for ws in wb.worksheets for row in ws.iter_rows(values_only=True)
                for v in row if v is not None]  # fmt: skip
    if path.suffix == ".csv":
        rows = csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline=""))
        return [",".join(row) for row in rows]
    if path.suffix == ".html":
        text = path.read_text(encoding="utf-8-sig")
        text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
        return html.unescape(text).splitlines()
    return [path.name]  # a photo, named by its digest


def leaks(result: Outputs, numbers: list[Typed]) -> list[tuple[str, str]]:
    """(file, what) for every number left in any output: what the scanner finds, and the
    whole digits of any planted number however they are spread."""
    whole = {n.digits.upper() for n in numbers}
    found = []
    for path in sorted(p for p in result.out_dir.rglob("*") if p.is_file()):
        for piece in pieces(path):
            found += [(path.name, hit) for hit in find_unmasked(piece)]
            digits = _digits(piece).upper()
            found += [(path.name, d) for d in whole if d in digits]
    return found


def shown(result: Outputs, key: str) -> str:
    return "\n".join(pieces(result.files[key]))


# --- the tests -----------------------------------------------------------------------------------


def test_the_demo_year_plants_numbers_and_every_output_masks_them(demo) -> None:
    result, year = demo
    typed = [read_back(t) for t in year.planted_numbers.values()]
    assert len(typed) == 10  # the ten ways the simulator types a number, all by July
    assert {style(t) for t in typed} >= {("id", " "), ("id", "-"), ("phone", "."), ("phone", "none")}  # fmt: skip
    assert leaks(result, typed) == []
    lists = one_line(shown(result, "followups_csv"))
    for t in typed:  # each reached the follow-up lists, masked
        assert one_line(t.masked) in lists, t
    for key in ("dispatch_public_html", "dispatch_public_xlsx"):
        public = shown(result, key)
        assert "****" not in public
        assert not any(t.digits.upper() in _digits(public).upper() for t in typed)


def test_every_free_text_field_of_every_form_is_masked_in_every_output(everywhere) -> None:
    result, planted_ = everywhere
    numbers = planted_.numbers
    assert len(numbers) > 1000 and len(planted_.formats) >= 25  # every way, many times
    for kind in ("id", "phone"):  # invisible characters and line breaks between the digits
        typed = "".join(style(n)[1] for n in numbers if n.kind == kind)
        assert set("\u200b\u200c\u200d\u2060\ufeff\u00ad\u2028\u2029\n\r\t\x00。．.") <= set(typed)
    files = [p for p in result.out_dir.rglob("*") if p.is_file()]
    assert {".html", ".xlsx", ".csv"} <= {p.suffix for p in files}
    assert leaks(result, numbers) == []
    # the planted text did reach the internal outputs, masked: every kind and separator
    internal = one_line("\n".join(shown(result, k) for k in ("followups_csv", "quality_csv", "dispatch_internal_html", "dispatch_internal_xlsx")))  # fmt: skip
    reached = [n for n in numbers if one_line(n.masked) in internal]
    assert {style(n) for n in reached} == planted_.formats
    assert any(n.prefix for n in reached) and any(re.search("[０-９]", n.text) for n in reached)


def test_the_public_edition_holds_none_of_the_numbers(everywhere) -> None:
    result, planted_ = everywhere
    for key in ("dispatch_public_html", "dispatch_public_xlsx"):
        text = shown(result, key)
        digits = _digits(text).upper()
        assert "****" not in text and "请联系" not in text and "张三丰" not in text
        for n in planted_.numbers:
            assert n.digits.upper() not in digits and n.masked not in text


def test_quarantined_records_are_listed_with_their_reason_masked_never_their_raw_text(everywhere) -> None:  # fmt: skip
    result, _ = everywhere
    assert result.quarantined >= 2
    wb = load_workbook(result.files["quality_xlsx"], read_only=True)
    assert QUARANTINE in wb.sheetnames
    rows = list(wb[QUARANTINE].iter_rows(values_only=True))
    head, body = rows[0], [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert head[:4] == ("表单", "来源", "记录编号", "原因")
    held = {r["记录编号"]: r for r in body}
    assert held["uuid:held-1"]["表单"] == "家访记录" and "bad XML near 电话" in held["uuid:held-1"]["原因"]  # fmt: skip
    assert "****" in held["uuid:held-1"]["原因"]
    everything = "\n".join(
        pieces(result.files["quality_xlsx"]) + pieces(result.files["quality_csv"])
    )
    assert "<data>" not in everything and "身份证" not in everything  # the raw text: never
    summary = [r for r in load_workbook(result.files["quality_xlsx"])["汇总"].iter_rows(values_only=True)]  # fmt: skip
    assert any(r[:2] == ("家访记录", "隔离记录（未能读取）") and r[2] >= 1 for r in summary)
    csv = [line for line in pieces(result.files["quality_csv"]) if "uuid:held-1" in line]
    assert len(csv) == 1 and "隔离记录（未能读取）" in csv[0] and "[files] bad XML" in csv[0]
    assert "隔离记录" in shown(result, "dispatch_internal_html")
    assert any("已隔离" in w for w in result.warnings)
