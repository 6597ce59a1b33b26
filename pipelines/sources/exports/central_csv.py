"""ODK Central's ``submissions.csv.zip`` export, read in place: the form's CSV, one CSV per
repeat (``<form>-<repeat>.csv``, rows joined to their parent by ``PARENT_KEY``) and the
``media/`` files, which go straight from the zip into the store.

A row that cannot be read (more fields than the header, no ``KEY``, no ``meta/instanceID``,
a parent that is not there) is quarantined with its file and row; a CSV that cannot be read
at all is one :class:`DataError` naming the file, member and row.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.errors import DataError
from pipelines.records import AttachmentRef, Quarantined, Record, printable, utc_text
from pipelines.sources.base import Page
from pipelines.sources.exports._safe import (
    CHUNK,
    MAX_CSV_BYTES,
    MAX_FIELD_CHARS,
    MAX_MEDIA_BYTES,
    NAME,
    RESAVE,
    SAMPLE,
    ZIP_ERRORS,
    Counted,
    NotThisEncoding,
    check_zip,
    encodings,
    listing,
    member_chunks,
    member_fault,
    open_zip,
    read_some,
    texts,
)

_SYSTEM = {
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


class CentralZip:
    """A Central export zip, open for reading."""

    def __init__(self, path: Path, where: str, encoding: str | None):
        self.path, self.where = path, where
        self.encoding = encoding  # of the CSVs; None: detect
        self.zip = open_zip(path, "a Central submissions.csv.zip export")
        check_zip(path, self.zip, xlsx=False)

    def close(self) -> None:
        self.zip.close()

    def form_ids(self) -> list[str]:
        """The forms whose CSV is at the top of the zip; an error when there is none."""
        names = self.zip.namelist()
        ids = sorted({_root_csv(n) for n in names if _root_csv(n)})
        if not ids:
            raise DataError(
                f"{self.where}: no form CSV in this export: looked for <form_id>.csv at "
                f"the top of the zip, as in Central's submissions.csv.zip; found "
                f"{listing(names)}; download the export again from Central"
            )
        return ids

    def fetch(self, member: str) -> Iterator[bytes] | None:
        try:
            info = self.zip.getinfo(member)
        except KeyError:
            return None
        return member_chunks(self.path, self.zip, info, MAX_MEDIA_BYTES)

    def page(self, form_id: str) -> Page:
        """Every submission of ``form_id``, its repeats put back under their parents."""
        names = self.zip.namelist()
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
            data = _nest_columns({k: v for k, v in row.items() if k not in _SYSTEM})
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
            refs = tuple(AttachmentRef(v, path=media[v]) for v in texts(data) if v in media)
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
        where = f"{self.where}:{printable(member)}"
        info = self.zip.getinfo(member)
        sample = read_some(self.zip, info, SAMPLE, where)
        tries = [self.encoding] if self.encoding else encodings(sample, where)
        failed = []
        for encoding in tries:
            try:
                return self._csv_rows(self.zip, info, encoding, where)
            except NotThisEncoding as e:  # an ASCII start and GBK further on, say
                failed.append(f"not {encoding} at row {e.row}")
        raise DataError(
            f"{where}: text neither UTF-8 nor GBK/GB18030 ({'; '.join(failed)}); {RESAVE}"
        )

    def _csv_rows(
        self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, encoding: str, where: str
    ) -> list[tuple[int, dict[str, str], str | None]]:
        rows: list[tuple[int, dict[str, str], str | None]] = []
        line = 0  # the last row read; the header is row 1
        try:
            with archive.open(info) as member:
                counted = io.BufferedReader(Counted(member, MAX_CSV_BYTES, where), CHUNK)
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
            raise NotThisEncoding(line + 1) from None
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
        except ZIP_ERRORS as e:
            raise member_fault(where, e) from None
        return rows


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


def _check_header(header: list[str], where: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(header, 1):
        if name in seen:
            raise DataError(
                f"{where} row 1: column {printable(name, 80)!r} twice (column {i}); "
                "export it again from Central"
            )
        seen.add(name)
