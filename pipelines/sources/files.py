"""Hand-moved data: Central ``submissions.csv.zip`` exports, KoboToolbox XLSX exports and
ODK Collect instance folders.

Files are read in place; media go straight from the zip or folder into the content-addressed
store, so a member called ``media/../../x`` is never extracted anywhere.

Every file is read defensively, since it may be broken, huge or re-saved by hand:

* a zip (export or XLSX) may hold at most ``MAX_MEMBERS`` members; each member's declared
  size is checked against its bound before reading, and the bytes actually read are counted
  too (headers can lie), so a small zip that expands to gigabytes stops at the bound;
* a bad CRC, a truncated or encrypted zip, a corrupt sheet: one :class:`DataError` naming
  the file and the member, sheet or row;
* CSV text is UTF-8 (with or without BOM) or GBK/GB18030 (Excel on Chinese Windows re-saves
  Central's CSV so), detected, or as declared with ``encoding``; anything else is an error
  naming the file and saying to save it as UTF-8. A CSV field may hold ``MAX_FIELD_CHARS``;
* a Collect instance that cannot be read or parsed is quarantined with its path and the
  rest are read (ElementTree's expat refuses entity bombs);
* an export with no form CSV, or a folder with no readable instance, is an error saying what
  was looked for and what was found, never an empty pull.

KoboToolbox's "XLS" export (kpi's export task, through formpack) has one sheet for the form
(named after the project, cut to 31 characters) and one per repeat (named after it). Each
sheet has the questions, then kpi's columns: ``_id, _uuid, _submission_time,
_validation_status, …, _index`` on the form's sheet and ``_index, _parent_table_name,
_parent_index, _submission__id, …`` on a repeat's. A geopoint adds ``_<q>_latitude`` …
``_precision`` columns and a select_multiple one ``<q>/<choice>`` column per choice; both are
read from the question's own column. Headers are XML names (with or without the groups:
``grp/q``) or labels; labels, and choice labels, are turned back into names with the built
form's pyxform JSON (``<build_dir>/<form_id>.json``). The record's id is ``meta/rootUuid``
when the export has it, else ``uuid:`` + ``_uuid`` (as the KoboToolbox API gives it), so an
edit exported without ``meta/rootUuid`` arrives under its new uuid.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re

# ElementTree never fetches external entities, and the expat it uses (>= 2.4.1) refuses
# exponential entity expansion, so phone-made XML is safe to parse here.
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from openpyxl import load_workbook

from pipelines.errors import DataError
from pipelines.records import AttachmentRef, Page, Quarantined, Record, printable, utc_text

NAME = "files"

# What a hand-moved file may make us read. A town's year is ~20,000 submissions: a form's
# CSV of ~60 MiB, ~20,000 photos of a few MiB each.
MAX_MEMBERS = 100_000  # members of an export zip or an XLSX
MAX_CSV_BYTES = 256 * 2**20  # one form or repeat CSV, decompressed
MAX_MEDIA_BYTES = 512 * 2**20  # one photo, audio or video file
MAX_XLSX_PART_BYTES = 512 * 2**20  # one part of an XLSX (a sheet, the shared strings)
MAX_XLSX_BYTES = 2 * 2**30  # all of an XLSX, decompressed
MAX_XML_BYTES = 16 * 2**20  # one Collect instance file
MAX_FIELD_CHARS = 16 * 2**20  # one CSV field (Python's own limit is 128 KiB)
_CHUNK = 1 << 20
_SAMPLE = 1 << 16  # bytes looked at to tell the encoding

csv.field_size_limit(MAX_FIELD_CHARS)  # process-wide; a lift, so no other reader minds

_CENTRAL_SYSTEM = {
    "SubmissionDate",
    "KEY",
    "SubmitterID",
    "SubmitterName",
    "AttachmentsPresent",
    "AttachmentsExpected",
    "Status",
    "ReviewState",
    "DeviceID",
    "Edits",
    "FormVersion",
}
_GEO = ("-Latitude", "-Longitude", "-Altitude", "-Accuracy")
_RESAVE = "save it as UTF-8 (Excel or WPS: 另存为 'CSV UTF-8'), or export it again"
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError)


class FilesSource:
    name = NAME

    def __init__(self, path: Path, xform_dir: Path | None = None, encoding: str | None = None):
        self.path = Path(path)
        self.xform_dir = Path(xform_dir) if xform_dir else None  # built XForms name the repeats
        self.encoding = _declared(encoding)  # of the CSVs in an export; None: detect
        self.where = printable(self.path)
        if not self.path.exists():
            raise DataError(f"{self.where} does not exist; give --path an export zip or a folder")
        self._zip: zipfile.ZipFile | None = None
        self._book: Any = None
        self._instances: dict[Path, ET.Element | str] | None = None  # parsed, or why not
        if self.path.is_file():
            if self.path.suffix.lower() == ".xlsx":
                _check_zip(self.path, _open_zip(self.path, "an .xlsx workbook"), xlsx=True)
                try:
                    self._book = load_workbook(self.path, read_only=True, data_only=True)
                except Exception as e:  # openpyxl raises many kinds for a broken workbook
                    raise DataError(
                        f"{self.where}: not a readable .xlsx workbook ({type(e).__name__}); "
                        "export it again from KoboToolbox (XLS)"
                    ) from None
            elif zipfile.is_zipfile(self.path) or self.path.suffix.lower() == ".zip":
                self._zip = _open_zip(self.path, "a Central submissions.csv.zip export")
                _check_zip(self.path, self._zip, xlsx=False)
            else:
                raise DataError(
                    f"{self.where}: not a Central submissions.csv.zip export, a KoboToolbox "
                    ".xlsx export or an ODK Collect instances folder"
                )

    def __enter__(self) -> FilesSource:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._zip:
            self._zip.close()
        if self._book is not None:
            self._book.close()

    # ---- which forms ---------------------------------------------------------------
    def form_ids(self) -> list[str]:
        """The forms in the file; an error, not an empty list, when there are none."""
        if self._book is not None:
            return [self._kobo_form_id()]
        if self._zip:
            names = self._zip.namelist()
            ids = sorted({_root_csv(n) for n in names if _root_csv(n)})
            if not ids:
                raise DataError(
                    f"{self.where}: no form CSV in this export: looked for <form_id>.csv at "
                    f"the top of the zip, as in Central's submissions.csv.zip; found "
                    f"{_listing(names)}; download the export again from Central"
                )
            return ids
        parsed = self._parsed()
        ids = {_form_id_of(root) for root in parsed.values() if not isinstance(root, str)}
        if not ids:
            first = next(iter(parsed.values()))
            raise DataError(
                f"{self.where}: none of the {len(parsed)} instance file(s) could be read "
                f"(first: {first}); copy the phone's odk/instances folder again"
            )
        return sorted(i for i in ids if i)

    # ---- pulling -------------------------------------------------------------------
    def pages(self, form_id: str, cursor: Any = None, known: Any = None) -> Iterator[Page]:
        if self._book is not None:
            yield self._kobo_xlsx(form_id)
        elif self._zip:
            yield self._central_zip(form_id)
        else:
            yield self._collect(form_id)

    def list_attachments(self, record: Record) -> list[AttachmentRef]:
        return list(record.attachments)

    def fetch_attachment(self, record: Record, ref: AttachmentRef) -> Iterator[bytes] | None:
        if ref.path is None:
            return None
        if self._zip:
            try:
                info = self._zip.getinfo(ref.path)
            except KeyError:
                return None
            return _member_chunks(self.path, self._zip, info, MAX_MEDIA_BYTES)
        file = Path(ref.path)
        return _file_chunks(file, MAX_MEDIA_BYTES) if file.is_file() else None

    # ---- Central export zip ----------------------------------------------------------
    def _central_zip(self, form_id: str) -> Page:
        if self._zip is None:
            raise DataError(f"{self.where} is not a zip export")
        names = self._zip.namelist()
        root_name = f"{form_id}.csv"
        if root_name not in names:
            raise DataError(
                f"{self.where}: no {printable(root_name)} in this export; forms in it: "
                f"{', '.join(self.form_ids()) or 'none'}"
            )
        media = {n[len("media/") :]: n for n in names if n.startswith("media/")}
        page = Page()
        roots: dict[str, dict[str, Any]] = {}
        rows_by_key: dict[str, dict[str, Any]] = {}
        meta: dict[str, dict[str, str]] = {}
        for line, row, extra in self._csv(root_name):
            key = row.get("KEY") or ""
            raw = json.dumps(row, ensure_ascii=False)
            where = f"{self.where}:{printable(root_name)} row {line}"
            if extra:
                page.quarantined.append(Quarantined(NAME, form_id, f"{where}: {extra}", raw, key))
                continue
            if not key:
                page.quarantined.append(Quarantined(NAME, form_id, f"{where}: no KEY", raw))
                continue
            data = _nest_columns({k: v for k, v in row.items() if k not in _CENTRAL_SYSTEM})
            if not (data.get("meta") or {}).get("instanceID"):
                page.quarantined.append(
                    Quarantined(
                        NAME,
                        form_id,
                        f"{where}: no meta/instanceID (the XML sent was probably truncated)",
                        raw,
                        key,
                    )
                )
                continue
            roots[key] = data
            rows_by_key[key] = data
            meta[key] = row
        prefix = f"{form_id}-"
        for member in sorted(n for n in names if n.startswith(prefix) and n.endswith(".csv")):
            repeat = member[len(prefix) : -4].rsplit("-", 1)[-1]
            for line, row, extra in self._csv(member):
                parent = rows_by_key.get(row.get("PARENT_KEY") or "")
                where = f"{self.where}:{printable(member)} row {line}"
                if extra or parent is None:  # kept, even when its submission was quarantined
                    why = extra or f"parent {printable(row.get('PARENT_KEY'), 100)} not found"
                    page.quarantined.append(
                        Quarantined(
                            NAME, form_id, f"{where}: {why}", json.dumps(row, ensure_ascii=False)
                        )
                    )
                    continue
                item = _nest_columns(
                    {k: v for k, v in row.items() if k not in ("PARENT_KEY", "KEY")}
                )
                parent.setdefault(repeat, []).append(item)
                rows_by_key[row.get("KEY") or ""] = item
        for key, data in roots.items():
            row = meta[key]
            refs = tuple(AttachmentRef(v, path=media[v]) for v in _strings(data) if v in media)
            try:
                submitted = utc_text(row.get("SubmissionDate"))
            except ValueError as e:
                page.quarantined.append(
                    Quarantined(NAME, form_id, str(e), json.dumps(row, ensure_ascii=False), key)
                )
                continue
            page.records.append(
                Record(
                    form_id=form_id,
                    instance_id=key,
                    form_version=row.get("FormVersion") or None,
                    submitted_at=submitted,
                    updated_at=None,
                    review_state=row.get("ReviewState") or None,
                    data=data,
                    attachments_expected=len(refs),
                    attachments=refs,
                )
            )
        page.rows = len(roots) + len(page.quarantined)
        return page

    def _csv(self, member: str) -> list[tuple[int, dict[str, str], str | None]]:
        """``(row number, row, problem)`` for each row of a CSV member, read in the declared
        encoding or else UTF-8 then GB18030. Row 1 is the header, as in a spreadsheet;
        ``problem`` says why a row cannot be read (more fields than the header)."""
        if self._zip is None:
            raise DataError(f"{self.where} is not a zip export")
        where = f"{self.where}:{printable(member)}"
        info = self._zip.getinfo(member)
        sample = _read_some(self._zip, info, _SAMPLE, where)
        tries = [self.encoding] if self.encoding else _encodings(sample, where)
        failed = []
        for encoding in tries:
            try:
                return self._csv_rows(self._zip, info, encoding, where)
            except _NotThisEncoding as e:  # an ASCII start and GBK further on, say
                failed.append(f"not {encoding} at row {e.row}")
        raise DataError(
            f"{where}: text neither UTF-8 nor GBK/GB18030 ({'; '.join(failed)}); {_RESAVE}"
        )

    def _csv_rows(
        self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, encoding: str, where: str
    ) -> list[tuple[int, dict[str, str], str | None]]:
        rows: list[tuple[int, dict[str, str], str | None]] = []
        line = 0  # the last row read; the header is row 1
        try:
            with archive.open(info) as member:
                counted = io.BufferedReader(_Counted(member, MAX_CSV_BYTES, where), _CHUNK)
                text = io.TextIOWrapper(counted, encoding=encoding, newline="")
                reader = csv.reader(text)
                header = next(reader, None)
                if header is None:
                    raise DataError(f"{where}: empty file, no header row; export it again")
                line = 1
                _check_header(header, where)
                for line, cells in enumerate(reader, start=2):
                    if not any(cells):
                        continue
                    problem = None
                    if len(cells) > len(header) and any(cells[len(header) :]):
                        problem = f"{len(cells)} fields, the header has {len(header)}"
                    cells = cells[: len(header)] + [""] * (len(header) - len(cells))
                    rows.append((line, dict(zip(header, cells, strict=True)), problem))
        except UnicodeDecodeError:
            raise _NotThisEncoding(line + 1) from None
        except csv.Error as e:
            raise DataError(
                f"{where} row {line + 1}: "
                + (
                    f"a field over {MAX_FIELD_CHARS // 2**20} MiB, more than any answer; "
                    "this is not an export manyi can read, export it again"
                    if "field larger than field limit" in str(e)
                    else f"not CSV ({printable(e, 120)}); export it again from Central"
                )
            ) from None
        except _ZIP_ERRORS as e:
            raise _member_fault(where, e) from None
        return rows

    # ---- KoboToolbox XLSX export ---------------------------------------------------
    def _kobo_form_id(self) -> str:
        """The form whose title (cut to 31 characters, as kpi names the sheet) or id is the
        first sheet's name, among the built forms."""
        sheet = self._book.worksheets[0].title
        found = []
        for path in sorted(self.xform_dir.glob("*.json")) if self.xform_dir else []:
            try:
                form = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(form, dict) or "children" not in form:
                continue
            form_id = form.get("id_string") or form.get("name") or path.stem
            if sheet in (str(form.get("title") or "")[:31], form_id):
                found.append(form_id)
        if len(found) != 1:
            raise DataError(
                f"{self.where}: cannot tell which form the sheet '{sheet}' belongs to "
                f"({'several' if found else 'no'} built form has that title); name it with "
                "--form <form_id>"
            )
        return found[0]

    def _kobo_xlsx(self, form_id: str) -> Page:
        sheets = self._book.worksheets
        form = _FormDef.load(self.xform_dir, form_id)
        page = Page()
        tables = {ws.title: _sheet_rows(ws, f"{self.where}, sheet '{ws.title}'") for ws in sheets}
        root_title = sheets[0].title
        header, rows = tables[root_title]
        where = f"{self.where}, sheet '{root_title}'"
        missing = [c for c in ("_uuid", "_index") if c not in header]
        if missing:
            raise DataError(
                f"{where}: no {', '.join(missing)} column, so this is not a KoboToolbox XLS "
                "export; export again from KoboToolbox (XLS, all versions)"
            )
        columns = _map_headers(header, form, ())
        items: dict[tuple[str, Any], dict[str, Any]] = {}  # (sheet, _index) → answers
        roots: list[tuple[int, str, dict[str, Any], dict[str, Any]]] = []
        for line, row in rows:
            cells = dict(zip(header, row, strict=False))
            raw = json.dumps({k: _text(v) for k, v in cells.items()}, ensure_ascii=False)
            uid = _text(cells.get("_uuid"))
            root = _text(cells.get("meta/rootUuid")) or (f"uuid:{uid}" if uid else None)
            if not root:
                page.quarantined.append(
                    Quarantined(NAME, form_id, f"{where} row {line}: no _uuid", raw)
                )
                continue
            data = _answers(cells, columns, form)
            data.setdefault("meta", {})["instanceID"] = f"uuid:{uid}" if uid else root
            items[(root_title, cells.get("_index"))] = data
            roots.append((line, root, cells, data))
        sections = {root_title: ()}
        for ws in sheets[1:]:
            header, rows = tables[ws.title]
            where = f"{self.where}, sheet '{ws.title}'"
            if "_parent_index" not in header or "_parent_table_name" not in header:
                continue  # not a repeat sheet kpi wrote
            rep = form.repeat_named(ws.title) if form else None
            sections[ws.title] = rep or (ws.title,)
            columns = _map_headers(header, form, sections[ws.title])
            for line, row in rows:
                cells = dict(zip(header, row, strict=False))
                parent_sheet = _text(cells.get("_parent_table_name")) or root_title
                parent = items.get((parent_sheet, cells.get("_parent_index")))
                if parent is None:
                    page.quarantined.append(
                        Quarantined(
                            NAME,
                            form_id,
                            f"{where} row {line}: parent row {cells.get('_parent_index')} of "
                            f"sheet '{parent_sheet}' not found",
                            json.dumps({k: _text(v) for k, v in cells.items()}, ensure_ascii=False),
                        )
                    )
                    continue
                item = _answers(cells, columns, form)
                where_in = sections[ws.title][len(sections.get(parent_sheet, ())) :]
                node = parent
                for part in where_in[:-1]:
                    node = node.setdefault(part, {})
                node.setdefault(where_in[-1] if where_in else ws.title, []).append(item)
                items[(ws.title, cells.get("_index"))] = item
        for line, iid, cells, data in roots:
            status = _text(cells.get("_validation_status"))
            try:
                submitted = utc_text(_text(cells.get("_submission_time")))
            except ValueError as e:
                page.quarantined.append(
                    Quarantined(
                        NAME,
                        form_id,
                        f"{self.where} row {line}: {e}",
                        json.dumps({k: _text(v) for k, v in cells.items()}, ensure_ascii=False),
                        iid,
                    )
                )
                continue
            page.records.append(
                Record(
                    form_id=form_id,
                    instance_id=iid,
                    form_version=_text(cells.get("__version__")),
                    submitted_at=submitted,
                    updated_at=None,
                    review_state=_VALIDATION.get((status or "").lower()),
                    data=data,
                    source_version=_text(cells.get("_uuid")),
                )
            )
        page.rows = len(roots) + len(page.quarantined)
        return page

    # ---- ODK Collect instances -------------------------------------------------------
    def _instance_files(self) -> list[Path]:
        base = self.path / "instances" if (self.path / "instances").is_dir() else self.path
        try:
            return sorted(
                p for d in base.iterdir() if d.is_dir() for p in d.glob("*.xml") if p.is_file()
            )
        except OSError as e:
            raise DataError(
                f"{printable(base)}: cannot list the folder ({e.strerror}); give this user "
                "read access to it"
            ) from None

    def _parsed(self) -> dict[Path, ET.Element | str]:
        """Each instance file, parsed once: its root element, or why it cannot be read."""
        if self._instances is not None:
            return self._instances
        files = self._instance_files()
        if not files:
            raise DataError(
                f"{self.where}: no ODK Collect instance found: looked for "
                "instances/<form>_<date>/<form>_<date>.xml (the phone's odk/instances folder, "
                f"or the instances folder itself); found {_listing(_folder(self.path))}"
            )
        self._instances = {}
        for xml in files:
            where = printable(xml)
            try:
                size = xml.stat().st_size
                if size > MAX_XML_BYTES:
                    self._instances[xml] = (
                        f"{where}: {size:,} bytes, over the {MAX_XML_BYTES // 2**20} MiB bound "
                        "for one instance"
                    )
                    continue
                root = ET.fromstring(xml.read_bytes())  # noqa: S314
            except OSError as e:
                self._instances[xml] = f"{where}: cannot read ({e.strerror or e})"
            except (ET.ParseError, ValueError) as e:  # ValueError: a GBK declaration
                self._instances[xml] = f"{where}: bad XML ({printable(e, 160)})"
            else:
                self._instances[xml] = root
        return self._instances

    def _repeats(self, form_id: str) -> set[str]:
        """Repeat names from the built XForm, so a repeat with one row is still a list."""
        xform = self.xform_dir / f"{form_id}.xml" if self.xform_dir else None
        if xform is None or not xform.is_file():
            return set()
        try:
            root = ET.parse(xform).getroot()  # noqa: S314 - our own build
        except (OSError, ET.ParseError) as e:
            raise DataError(
                f"{printable(xform)}: cannot read the built form ({e}); run `manyi forms build`"
            ) from None
        return {
            el.get("nodeset", "").rsplit("/", 1)[-1]
            for el in root.iter()
            if _local(el.tag) == "repeat"
        }

    def _collect(self, form_id: str) -> Page:
        page = Page()
        repeats = self._repeats(form_id)
        parsed = self._parsed()
        for xml, root in parsed.items():
            if isinstance(root, str):
                page.quarantined.append(Quarantined(NAME, form_id, root, _raw_file(xml)))
                continue
            if _form_id_of(root) != form_id:
                continue
            data = _element(root, repeats)
            iid = (data.get("meta") or {}).get("instanceID")
            if not iid:
                page.quarantined.append(
                    Quarantined(
                        NAME, form_id, f"{printable(xml)}: no meta/instanceID", _raw_file(xml)
                    )
                )
                continue
            siblings = {p.name: p for p in xml.parent.iterdir() if p.is_file() and p != xml}
            refs = tuple(
                AttachmentRef(v, path=str(siblings[v])) for v in _strings(data) if v in siblings
            )
            page.records.append(
                Record(
                    form_id=form_id,
                    instance_id=iid,
                    form_version=root.get("version"),
                    submitted_at=None,
                    updated_at=None,
                    review_state=None,
                    data=data,
                    attachments_expected=len(refs),
                    attachments=refs,
                )
            )
        if not page.records and len(page.quarantined) == sum(
            isinstance(r, str) for r in parsed.values()
        ):
            found = sorted({_form_id_of(r) for r in parsed.values() if not isinstance(r, str)})
            raise DataError(
                f"{self.where}: no instance of form {printable(form_id)} here; forms found: "
                f"{', '.join(printable(f, 60) for f in found) or 'none'}"
            )
        page.rows = len(page.records) + len(page.quarantined)
        return page


def _root_csv(member: str) -> str | None:
    if "/" in member or not member.endswith(".csv") or "-" in member:
        return None
    return member[:-4]


def _nest_columns(row: dict[str, str]) -> dict[str, Any]:
    """``meta-instanceID`` → {"meta": {"instanceID"}}; ``x-Latitude``… → "lat lon alt acc"."""
    out: dict[str, Any] = {}
    done: set[str] = set()
    for col, value in row.items():
        if col in done:
            continue
        if col.endswith("-Latitude"):
            base = col[: -len("-Latitude")]
            parts = [row.get(base + s) or "" for s in _GEO]
            done.update(base + s for s in _GEO)
            col, value = base, " ".join(p for p in parts if p) or None
        node = out
        *groups, name = col.split("-")
        for g in groups:
            node = node.setdefault(g, {})
        node[name] = value if value != "" else None
    return out


def _element(el: ET.Element, repeats: set[str] = frozenset()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    children = list(el)
    counts: dict[str, int] = {}
    for child in children:
        counts[_local(child.tag)] = counts.get(_local(child.tag), 0) + 1
    for child in children:
        name = _local(child.tag)
        value: Any = _element(child, repeats) if len(child) else (child.text or None)
        if counts[name] > 1 or name in repeats:  # several siblings with one name: a repeat
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _form_id_of(root: ET.Element) -> str:
    return root.get("id") or _local(root.tag)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


# ---- reading safely ----------------------------------------------------------------------
class _NotThisEncoding(Exception):
    def __init__(self, row: int):
        super().__init__(row)
        self.row = row


class _Counted(io.RawIOBase):
    """A member's bytes, counted as they are read: declared sizes can lie."""

    def __init__(self, member: Any, limit: int, where: str):
        self.member, self.limit, self.where, self.seen = member, limit, where, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.member.read(len(buffer))
        self.seen += len(data)
        if self.seen > self.limit:
            raise DataError(
                f"{self.where}: expands to over {self.limit // 2**20} MiB, more than an "
                "export holds; this is not an export manyi can read (a zip bomb?)"
            )
        buffer[: len(data)] = data
        return len(data)


def _declared(encoding: str | None) -> str | None:
    if not encoding:
        return None
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise DataError(
            f"unknown encoding {printable(encoding, 40)!r}; use utf-8, utf-8-sig, gbk or gb18030"
        ) from None


def _open_zip(path: Path, kind: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise DataError(
            f"{printable(path)}: not {kind}: not a readable zip ({printable(e, 120)}), "
            "truncated or another file renamed; download or export it again"
        ) from None


def _check_zip(path: Path, archive: zipfile.ZipFile, xlsx: bool) -> None:
    """Member count and declared sizes; for an XLSX (which openpyxl reads whole, parts at a
    time) every part is also read through once, counting bytes and checking CRCs."""
    where = printable(path)
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise DataError(
            f"{where}: {len(infos):,} members, over the bound of {MAX_MEMBERS:,}; this is not "
            "an export manyi can read"
        )
    if not infos:
        raise DataError(f"{where}: an empty zip; download or export it again")
    total = 0
    for info in infos:
        bound = MAX_XLSX_PART_BYTES if xlsx else _bound(info.filename)
        total += info.file_size
        if info.file_size > bound:
            raise DataError(
                f"{where}:{printable(info.filename)}: declares {info.file_size:,} bytes, over "
                f"the {bound // 2**20} MiB bound; this is not an export manyi can read"
            )
    if xlsx and total > MAX_XLSX_BYTES:
        raise DataError(
            f"{where}: expands to {total:,} bytes, over the {MAX_XLSX_BYTES // 2**30} GiB "
            "bound for a workbook; export fewer submissions at a time"
        )
    if xlsx:
        for info in infos:
            for _ in _member_chunks(path, archive, info, MAX_XLSX_PART_BYTES):
                pass


def _bound(member: str) -> int:
    return MAX_CSV_BYTES if member.lower().endswith(".csv") else MAX_MEDIA_BYTES


def _member_chunks(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int
) -> Iterator[bytes]:
    """A member's bytes in chunks, at most ``limit`` of them; a bad CRC, a truncated or an
    encrypted member is a :class:`DataError` naming the file and the member."""
    where = f"{printable(path)}:{printable(info.filename)}"
    seen = 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(_CHUNK):
                seen += len(chunk)
                if seen > limit:
                    raise DataError(
                        f"{where}: expands to over {limit // 2**20} MiB, more than its bound; "
                        "this is not an export manyi can read (a zip bomb?)"
                    )
                yield chunk
    except _ZIP_ERRORS as e:
        raise _member_fault(where, e) from None


def _member_fault(where: str, e: BaseException) -> DataError:
    text = printable(e, 160)
    if isinstance(e, RuntimeError) and "encrypted" in str(e):
        return DataError(f"{where}: encrypted; export it again without a password")
    if isinstance(e, NotImplementedError):
        return DataError(f"{where}: compressed with a method manyi cannot read ({text}); re-zip it")
    return DataError(f"{where}: damaged ({type(e).__name__}: {text}); download or export it again")


def _file_chunks(file: Path, limit: int) -> Iterator[bytes]:
    seen = 0
    with file.open("rb") as f:
        while chunk := f.read(_CHUNK):
            seen += len(chunk)
            if seen > limit:
                raise DataError(
                    f"{printable(file)}: over {limit // 2**20} MiB, more than a phone's "
                    "file; leave it out of the folder"
                )
            yield chunk


def _read_some(archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, where: str) -> bytes:
    try:
        with archive.open(info) as member:
            return member.read(size)
    except _ZIP_ERRORS as e:
        raise _member_fault(where, e) from None


def _encodings(sample: bytes, where: str) -> list[str]:
    """The encodings to try, best first, from the first bytes of a CSV."""
    if sample.startswith(codecs.BOM_UTF8):
        return ["utf-8-sig"]
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(f"{where}: UTF-16 text (Excel's 'Unicode text'), not CSV; {_RESAVE}")
    if sample.count(b"\x00") > len(sample) // 10:
        raise DataError(f"{where}: binary data or UTF-16, not CSV text; {_RESAVE}")
    tries = []
    for encoding in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(encoding)().decode(sample, final=False)
        except UnicodeDecodeError:
            continue
        tries.append(encoding)
    if not tries:
        raise DataError(f"{where}: text neither UTF-8 nor GBK/GB18030; {_RESAVE}")
    return tries


def _check_header(header: list[str], where: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(header, 1):
        if name in seen:
            raise DataError(
                f"{where} row 1: column {printable(name, 80)!r} twice (column {i}); "
                "export it again from Central"
            )
        seen.add(name)


def _listing(names: list[str], limit: int = 8) -> str:
    if not names:
        return "nothing"
    shown = ", ".join(printable(n, 80) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _folder(path: Path) -> list[str]:
    try:
        return sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    except OSError:
        return []


def _raw_file(xml: Path) -> str:
    """The raw text of an instance for its quarantine record (what is readable of it)."""
    try:
        with xml.open("rb") as f:
            return f.read(MAX_XML_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""


# ---- KoboToolbox XLSX helpers ------------------------------------------------------------
_VALIDATION = {
    "validation_status_approved": "approved",
    "validation_status_not_approved": "rejected",
    "validation_status_on_hold": "hasIssues",
    "approved": "approved",
    "not approved": "rejected",
    "on hold": "hasIssues",
}
_GEO_PART = re.compile(
    r"^(?:(?P<prefix>.*)/)?_(?P<q>.+)_(?:latitude|longitude|altitude|precision)$"
)


def _is_system(header: str) -> bool:
    """kpi's own columns (``_id`` … ``_index``, ``_submission__*``, ``_parent_*``)."""
    return (
        header == "__version__"
        or header == "meta/rootUuid"
        or (header.startswith("_") and not header.startswith("__") and "/" not in header)
    )


def _sheet_rows(ws: Any, where: str) -> tuple[list[str], list[tuple[int, tuple[Any, ...]]]]:
    line = 1
    try:
        it = ws.iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(it, ())]
        rows = []
        for line, row in enumerate(it, start=2):
            values = [v for v in row if v not in (None, "")]
            if not values:
                continue
            if line == 2 and all(isinstance(v, str) and v.startswith("#") for v in values):
                continue  # the HXL hashtag row kpi adds under the headers
            rows.append((line, row))
    except Exception as e:  # openpyxl and its XML parser raise many kinds for a bad sheet
        raise DataError(
            f"{where} row {line + 1}: unreadable ({type(e).__name__}: {printable(e, 120)}); "
            "export it again from KoboToolbox (XLS)"
        ) from None
    return header, rows


def _text(value: Any) -> str | None:
    """A cell as the text the phone sent: numbers without a spurious ``.0``, times ISO."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


class _FormDef:
    """The built form's questions (from pyxform's JSON), to read headers and choice labels."""

    def __init__(self, form: dict[str, Any]):
        self.fields: dict[tuple[str, ...], dict[str, Any]] = {}
        self.repeats: dict[tuple[str, ...], dict[str, Any]] = {}
        # path → the labels (every language) of each group level and of the question
        self.levels: dict[tuple[str, ...], list[list[str]]] = {}
        self.choices: dict[str, dict[str, str]] = {}  # list → label or name → name
        for list_name, options in (form.get("choices") or {}).items():
            table = self.choices.setdefault(list_name, {})
            for opt in options:
                for text in _label_texts(opt.get("label")):
                    table.setdefault(text, opt["name"])
                table[opt["name"]] = opt["name"]
        self._walk(form.get("children") or [], (), [])

    @classmethod
    def load(cls, folder: Path | None, form_id: str) -> _FormDef | None:
        path = folder / f"{form_id}.json" if folder else None
        if path is None or not path.is_file():
            return None
        try:
            return cls(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def _walk(self, children: list[Any], base: tuple[str, ...], labels: list[list[str]]) -> None:
        for child in children:
            path = (*base, child["name"])
            texts = list(_label_texts(child.get("label"))) or [child["name"]]
            if child.get("type") == "repeat":
                self.repeats[path] = child
            if child.get("type") in ("group", "repeat"):
                self._walk(child.get("children") or [], path, [*labels, texts])
            elif child.get("type") != "note":
                self.fields[path] = child
                self.levels[path] = [*labels, texts]

    def section(self, path: tuple[str, ...]) -> tuple[str, ...]:
        """The innermost repeat holding ``path`` (() for the form's own sheet)."""
        best: tuple[str, ...] = ()
        for rep in self.repeats:
            if path[: len(rep)] == rep and len(rep) > len(best) and rep != path:
                best = rep
        return best

    def repeat_named(self, sheet: str) -> tuple[str, ...] | None:
        named = [r for r in self.repeats if r[-1][:31] == sheet]
        return named[0] if len(named) == 1 else None

    def choice(self, field: dict[str, Any], value: str) -> str:
        table = self.choices.get(field.get("itemset") or field.get("list_name") or "")
        if not table:
            return value
        if field.get("type") == "select all that apply":
            if value in table:  # one label that has spaces in it
                return table[value]
            return " ".join(table.get(v, v) for v in value.split())
        return table.get(value, value)


def _label_texts(label: Any) -> Iterator[str]:
    if isinstance(label, dict):
        yield from (str(v) for v in label.values() if v)
    elif label:
        yield str(label)


def _map_headers(
    header: list[str], form: _FormDef | None, section: tuple[str, ...]
) -> dict[int, tuple[tuple[str, ...], dict[str, Any] | None]]:
    """column → (path inside the section, question or None); kpi's and derived columns
    (geopoint parts, select_multiple choices) are left out."""
    known: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {}
    if form:
        for path, field in form.fields.items():
            if form.section(path) != section:
                continue
            rel = path[len(section) :]
            names = ["/".join(path), "/".join(rel), path[-1]]
            for levels in _level_combinations(form.levels[path]):
                names.append("/".join(levels))
                names.append(levels[-1])
            for name in names:
                known.setdefault(name, (rel, field))
    present = set(header)
    out: dict[int, tuple[tuple[str, ...], dict[str, Any] | None]] = {}
    for i, h in enumerate(header):
        if not h or (_is_system(h) and h not in known):
            continue
        if h in known:
            out[i] = known[h]
            continue
        geo = _GEO_PART.match(h)
        if geo and (geo["q"] in present or f"{geo['prefix']}/{geo['q']}" in present):
            continue  # a geopoint's part: the question's own column has all four
        base = h.rsplit("/", 1)[0] if "/" in h else None
        if base and base in known and known[base][1].get("type") == "select all that apply":
            continue  # one column per choice; the question's column lists them
        if base and base in present and not form:
            continue
        # Not in the built form: keep it under its header, nothing is dropped.
        parts = tuple(h.split("/"))
        if section and parts[: len(section)] == section:
            parts = parts[len(section) :]
        elif section and parts[:1] == section[-1:]:
            parts = parts[1:]
        out[i] = (parts, None)
    return out


def _level_combinations(levels: list[list[str]]) -> Iterator[list[str]]:
    """Each language's label path through the groups ("Group label/Question label")."""
    width = max(len(texts) for texts in levels)
    for lang in range(width):
        yield [texts[min(lang, len(texts) - 1)] for texts in levels]


def _answers(
    cells: dict[str, Any],
    columns: dict[int, tuple[tuple[str, ...], dict[str, Any] | None]],
    form: _FormDef | None,
) -> dict[str, Any]:
    values = list(cells.values())
    out: dict[str, Any] = {}
    for i, (path, field) in columns.items():
        value = _text(values[i]) if i < len(values) else None
        if value is not None and field is not None and form is not None:
            value = form.choice(field, value)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out
