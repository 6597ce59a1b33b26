"""KoboToolbox's XLSX export (kpi's "XLS" export), read as canonical records.

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

import json
import re
from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from openpyxl import load_workbook

from pipelines.errors import DataError
from pipelines.records import Quarantined, Record, printable, utc_text
from pipelines.sources.base import Page
from pipelines.sources.exports._safe import NAME, check_zip, open_zip


class KoboWorkbook:
    """A kpi XLSX export, open for reading; ``xform_dir`` holds the built forms' pyxform JSON,
    which turns label headers back into names."""

    def __init__(self, path: Path, where: str, xform_dir: Path | None):
        self.where, self.xform_dir = where, xform_dir
        with open_zip(path, "an .xlsx workbook") as archive:
            check_zip(path, archive, xlsx=True)
        try:
            self.book = load_workbook(path, read_only=True, data_only=True)
        except Exception as e:  # openpyxl raises many kinds for a broken workbook
            raise DataError(
                f"{where}: not a readable .xlsx workbook ({type(e).__name__}); "
                "export it again from KoboToolbox (XLS)"
            ) from None

    def close(self) -> None:
        self.book.close()

    def fetch(self, member: str) -> Iterator[bytes] | None:
        return None  # an XLSX export holds no media

    def form_ids(self) -> list[str]:
        """The form whose title (cut to 31 characters, as kpi names the sheet) or id is the
        first sheet's name, among the built forms."""
        sheet = self.book.worksheets[0].title
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
        return [found[0]]

    def page(self, form_id: str) -> Page:
        """Every submission of ``form_id`` on the first sheet, its repeats' rows (the other
        sheets) put back under their parents."""
        sheets = self.book.worksheets
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
