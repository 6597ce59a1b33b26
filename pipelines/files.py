"""Hand-moved data: Central ``submissions.csv.zip`` exports and ODK Collect instance folders.

Files are read in place; media go straight from the zip or folder into the content-addressed
store, so a member called ``media/../../x`` is never extracted anywhere.
"""

from __future__ import annotations

import csv
import io
import json

# ElementTree never fetches external entities, and the expat it uses (>= 2.4.1) refuses
# exponential entity expansion, so phone-made XML is safe to parse here.
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.errors import DataError
from pipelines.records import AttachmentRef, Page, Quarantined, Record, utc_text

NAME = "files"
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


class FilesSource:
    name = NAME

    def __init__(self, path: Path, xform_dir: Path | None = None):
        self.path = Path(path)
        self.xform_dir = Path(xform_dir) if xform_dir else None  # built XForms name the repeats
        if not self.path.exists():
            raise DataError(f"{self.path} does not exist; give --path an export zip or a folder")
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_file():
            if not zipfile.is_zipfile(self.path) or self.path.suffix.lower() == ".xlsx":
                raise DataError(
                    f"{self.path}: only Central submissions.csv.zip exports and ODK Collect "
                    "instance folders are read so far"
                )
            self._zip = zipfile.ZipFile(self.path)

    def __enter__(self) -> FilesSource:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._zip:
            self._zip.close()

    # ---- which forms ---------------------------------------------------------------
    def form_ids(self) -> list[str]:
        if self._zip:
            return sorted({_root_csv(n) for n in self._zip.namelist() if _root_csv(n)})
        ids = set()
        for xml in self._instance_files():
            try:
                ids.add(_form_id_of(ET.parse(xml).getroot()))  # noqa: S314
            except ET.ParseError:
                continue
        return sorted(i for i in ids if i)

    # ---- pulling -------------------------------------------------------------------
    def pages(self, form_id: str, cursor: Any = None, known: Any = None) -> Iterator[Page]:
        if self._zip:
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
                return iter([self._zip.read(ref.path)])
            except KeyError:
                return None
        file = Path(ref.path)
        return iter([file.read_bytes()]) if file.is_file() else None

    # ---- Central export zip ----------------------------------------------------------
    def _central_zip(self, form_id: str) -> Page:
        if self._zip is None:
            raise DataError(f"{self.path} is not a zip export")
        names = self._zip.namelist()
        root_name = f"{form_id}.csv"
        if root_name not in names:
            raise DataError(
                f"{self.path}: no {root_name} in this export; forms in it: "
                f"{', '.join(self.form_ids()) or 'none'}"
            )
        media = {n[len("media/") :]: n for n in names if n.startswith("media/")}
        page = Page()
        roots: dict[str, dict[str, Any]] = {}
        rows_by_key: dict[str, dict[str, Any]] = {}
        meta: dict[str, dict[str, str]] = {}
        for line, row in enumerate(self._csv(root_name), start=2):
            key = row.get("KEY") or ""
            raw = json.dumps(row, ensure_ascii=False)
            if not key:
                page.quarantined.append(
                    Quarantined(NAME, form_id, f"{self.path}:{root_name} line {line}: no KEY", raw)
                )
                continue
            data = _nest_columns({k: v for k, v in row.items() if k not in _CENTRAL_SYSTEM})
            if not (data.get("meta") or {}).get("instanceID"):
                page.quarantined.append(
                    Quarantined(
                        NAME,
                        form_id,
                        f"{self.path}:{root_name} line {line}: no meta/instanceID "
                        "(the XML sent was probably truncated)",
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
            for line, row in enumerate(self._csv(member), start=2):
                parent = rows_by_key.get(row.get("PARENT_KEY") or "")
                if parent is None:
                    if (row.get("PARENT_KEY") or "").split("/")[0] in roots:
                        page.quarantined.append(
                            Quarantined(
                                NAME,
                                form_id,
                                f"{self.path}:{member} line {line}: parent "
                                f"{row.get('PARENT_KEY')} not found",
                                json.dumps(row),
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
                page.quarantined.append(Quarantined(NAME, form_id, str(e), json.dumps(row), key))
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

    def _csv(self, member: str) -> Iterator[dict[str, str]]:
        if self._zip is None:
            raise DataError(f"{self.path} is not a zip export")
        text = self._zip.read(member).decode("utf-8-sig")
        yield from csv.DictReader(io.StringIO(text))

    # ---- ODK Collect instances -------------------------------------------------------
    def _instance_files(self) -> list[Path]:
        base = self.path / "instances" if (self.path / "instances").is_dir() else self.path
        return sorted(p for d in base.iterdir() if d.is_dir() for p in d.glob("*.xml"))

    def _repeats(self, form_id: str) -> set[str]:
        """Repeat names from the built XForm, so a repeat with one row is still a list."""
        xform = self.xform_dir / f"{form_id}.xml" if self.xform_dir else None
        if xform is None or not xform.is_file():
            return set()
        root = ET.parse(xform).getroot()  # noqa: S314
        return {
            el.get("nodeset", "").rsplit("/", 1)[-1]
            for el in root.iter()
            if _local(el.tag) == "repeat"
        }

    def _collect(self, form_id: str) -> Page:
        page = Page()
        repeats = self._repeats(form_id)
        for xml in self._instance_files():
            text = xml.read_bytes()
            raw = text.decode("utf-8", "replace")[:20000]
            try:
                root = ET.fromstring(text)  # noqa: S314
            except ET.ParseError as e:
                page.quarantined.append(Quarantined(NAME, form_id, f"{xml}: bad XML ({e})", raw))
                continue
            if _form_id_of(root) != form_id:
                continue
            data = _element(root, repeats)
            iid = (data.get("meta") or {}).get("instanceID")
            if not iid:
                page.quarantined.append(
                    Quarantined(NAME, form_id, f"{xml}: no meta/instanceID", raw)
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
