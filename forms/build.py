"""Build the XLSForms in ``forms/`` into XForms, checked by our conventions, pyxform and
ODK Validate.

Every problem is located (form file, sheet, row, column) and all forms are checked even when
one fails. A failing form leaves nothing behind in the output directory.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from openpyxl.utils import get_column_letter
from pyxform.errors import PyXFormError
from pyxform.validators.odk_validate import ODKValidateError, check_xform
from pyxform.xls2xform import convert

from geo.villages import Village, load_villages
from pipelines.errors import FormError, Problem

ZH = "Chinese (zh)"
EN = "English (en)"
LANGS = (ZH, EN)
VILLAGE_LIST = "village"
ROSTERS_DIR = "rosters"
MANIFEST = "manifest.json"
# Translatable columns: if one language is filled, both must be.
_TRANSLATED = ("label", "hint", "guidance_hint", "required_message", "constraint_message")
# Survey types that carry no label of their own.
_UNLABELLED = {
    "calculate", "start", "end", "today", "deviceid", "username", "phonenumber", "simserial",
    "subscriberid", "audit", "end_group", "end group", "end_repeat", "end repeat", "hidden",
    "start-geopoint", "background-geopoint", "xml-external", "csv-external",
}  # fmt: skip
_NOT_QUESTIONS = {"group", "repeat", "calculate", "note", "survey"} | _UNLABELLED
_ASCII_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_ASCII_CHOICE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_VERSION = re.compile(r"^\d{10}$")
_ATTACHMENT = re.compile(r'src="jr://(?:file|file-csv|images|audio|video)/([^"]+)"')


@dataclass(frozen=True)
class BuiltForm:
    """One form that compiled, passed the checks and was written to the output directory."""

    form_id: str
    version: str
    title: str
    md5: str
    questions: int
    xlsx: str  # file names, relative to the output directory
    xform: str
    json: str
    attachments: tuple[str, ...] = ()


@dataclass
class BuildReport:
    out_dir: Path
    built: list[BuiltForm] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    validated: bool = True  # False when Java is missing and ODK Validate was skipped

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class FormInfo:
    form_id: str
    version: str
    title: str
    questions: int
    file: str


# --- reading a workbook with cell coordinates -----------------------------------------------


@dataclass
class _Sheet:
    name: str
    header: list[str]
    rows: list[tuple[int, dict[str, Any]]]  # (spreadsheet row number, {header: value})

    def cell(self, column: str) -> str | None:
        """Spreadsheet column letter of a header, if present."""
        if column in self.header:
            return get_column_letter(self.header.index(column) + 1)
        return None


def _read_sheets(path: Path) -> dict[str, _Sheet]:
    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises many types for a corrupt file
        raise FormError(
            [Problem(path.name, f"cannot open as .xlsx ({e}); save it from Excel/WPS again")]
        ) from None
    sheets: dict[str, _Sheet] = {}
    try:
        for ws in wb.worksheets:
            rows = list(ws.iter_rows(values_only=True))
            if not rows:
                continue
            header = [str(h).strip() if h is not None else "" for h in rows[0]]
            body = []
            for i, r in enumerate(rows[1:], start=2):
                values = {
                    h: (v.strip() if isinstance(v, str) else v)
                    for h, v in zip(header, r, strict=False)
                    if h and v not in (None, "")
                }
                if values:
                    body.append((i, values))
            sheets[ws.title.strip().lower()] = _Sheet(ws.title, header, body)
    finally:
        wb.close()
    return sheets


def _settings(sheets: dict[str, _Sheet]) -> dict[str, Any]:
    s = sheets.get("settings")
    return dict(s.rows[0][1]) if s and s.rows else {}


# --- our conventions -------------------------------------------------------------------------


def _lint(path: Path, sheets: dict[str, _Sheet], villages: list[Village]) -> list[Problem]:
    f = path.name
    out: list[Problem] = []

    def problem(sheet: _Sheet | None, row: int | None, column: str | None, msg: str) -> None:
        cell = None
        if sheet is not None and column and row is not None and sheet.cell(column):
            cell = f"{sheet.cell(column)}{row}"
        out.append(Problem(f, msg, sheet.name if sheet else None, row, column, cell))

    survey, choices, settings = sheets.get("survey"), sheets.get("choices"), sheets.get("settings")
    if survey is None:
        problem(None, None, None, "no 'survey' sheet; every XLSForm needs one")
        return out
    if settings is None or not settings.rows:
        problem(
            None,
            None,
            None,
            "no 'settings' sheet (or it is empty); add form_id, form_title, version",
        )
    else:
        srow, sv = settings.rows[0]
        form_id = str(sv.get("form_id", ""))
        if not form_id or not _ASCII_NAME.match(form_id):
            problem(
                settings,
                srow,
                "form_id",
                f"form_id {form_id!r} must be ASCII letters, digits and _",
            )
        elif form_id != path.stem:
            problem(
                settings,
                srow,
                "form_id",
                f"form_id '{form_id}' differs from the file name; name the file {form_id}.xlsx",
            )
        if not sv.get("form_title"):
            problem(settings, srow, "form_title", "form_title is empty; give the Chinese title")
        version = str(sv.get("version", ""))
        if not _VERSION.match(version) or not _valid_date(version[:8]):
            problem(
                settings,
                srow,
                "version",
                f"version {version!r} must be yyyymmddrr, e.g. 2026112901",
            )
        if sv.get("default_language") != ZH:
            problem(settings, srow, "default_language", f"default_language must be '{ZH}'")

    for sheet in (survey, choices):
        if sheet is None:
            continue
        if "label" in sheet.header:
            problem(sheet, 1, "label", f"bare 'label' column: use 'label::{ZH}' and 'label::{EN}'")
        for base in _TRANSLATED:
            if f"{base}::{ZH}" in sheet.header and f"{base}::{EN}" not in sheet.header:
                problem(
                    sheet,
                    1,
                    f"{base}::{EN}",
                    f"column '{base}::{EN}' is missing; add the English text beside the Chinese",
                )
        for row, v in sheet.rows:
            typ = str(v.get("type", "")).strip() if sheet is survey else ""
            if sheet is survey:
                if not typ:
                    problem(
                        sheet, row, "type", "type is empty; give a question type or delete the row"
                    )
                    continue
                name = str(v.get("name", ""))
                if typ.split()[0] not in (
                    "end_group",
                    "end_repeat",
                    "end",
                ) and not _ASCII_NAME.match(name):
                    problem(
                        sheet,
                        row,
                        "name",
                        f"name {name!r} must be ASCII letters, digits and _ (start with a letter)",
                    )
            else:
                name = str(v.get("name", ""))
                if not _ASCII_CHOICE.match(name):
                    problem(
                        sheet,
                        row,
                        "name",
                        f"choice name {name!r} must be ASCII letters, digits, _ or -",
                    )
            needs_label = sheet is choices or typ.split()[0] not in _UNLABELLED
            for base in _TRANSLATED:
                zh, en = v.get(f"{base}::{ZH}"), v.get(f"{base}::{EN}")
                if base == "label" and needs_label:
                    if not zh:
                        problem(
                            sheet,
                            row,
                            f"label::{ZH}",
                            f"'{name}' has no Chinese label; fill label::{ZH}",
                        )
                    if not en:
                        problem(
                            sheet,
                            row,
                            f"label::{EN}",
                            f"'{name}' has no English label; fill label::{EN}",
                        )
                elif zh and not en:
                    problem(
                        sheet,
                        row,
                        f"{base}::{EN}",
                        f"'{name}' has {base} in Chinese but not in English; fill {base}::{EN}",
                    )
                elif en and not zh:
                    problem(
                        sheet,
                        row,
                        f"{base}::{ZH}",
                        f"'{name}' has {base} in English but not in Chinese; fill {base}::{ZH}",
                    )

    if _uses_village(sheets):
        out.extend(_check_villages(f, choices, villages))
    return out


def _valid_date(yyyymmdd: str) -> bool:
    try:
        datetime.strptime(yyyymmdd, "%Y%m%d")
    except ValueError:
        return False
    return True


def _check_villages(f: str, choices: _Sheet | None, villages: list[Village]) -> list[Problem]:
    hint = "run `manyi forms sync-villages` to rewrite it from the register"
    if choices is None:
        return [Problem(f, f"no 'choices' sheet for list '{VILLAGE_LIST}'; {hint}")]
    rows = [(r, v) for r, v in choices.rows if v.get("list_name") == VILLAGE_LIST]
    want = {v.code: v for v in villages}
    got: dict[str, int] = {}
    out = []
    for r, v in rows:
        code = str(v.get("name", ""))
        col = choices.cell("name")
        if code not in want:
            out.append(
                Problem(
                    f,
                    f"village code {code} is not in the register; {hint}",
                    choices.name,
                    r,
                    "name",
                    f"{col}{r}",
                )
            )
            continue
        got[code] = r
        reg = want[code]
        for lang, expected in ((ZH, reg.name), (EN, reg.pinyin)):
            if v.get(f"label::{lang}") != expected:
                column = f"label::{lang}"
                out.append(Problem(f, f"village {code} is labelled {v.get(column)!r}, the register says {expected!r}; {hint}",
                                   choices.name, r, column, f"{choices.cell(column)}{r}"))  # fmt: skip
    missing = [c for c in want if c not in got]
    if missing:
        out.append(Problem(f, f"list '{VILLAGE_LIST}' lacks {len(missing)} register village(s) "
                           f"({', '.join(missing[:5])}{'…' if len(missing) > 5 else ''}); {hint}", choices.name))  # fmt: skip
    return out


# --- pyxform and ODK Validate errors, located ------------------------------------------------

_ROW = re.compile(r"\[row\s*:\s*(\d+)\]|\brow (\d+)\b")
_SHEET = re.compile(r"[Oo]n the '(\w+)' sheet")
_COLUMN = re.compile(r"the '([\w:() ]+)' value|'([\w:() ]+)' column")
_QUOTED = re.compile(r"'([^']{1,200})'")
_KEYWORDS = {  # words in pyxform messages -> the column to point at
    "question type": "type",
    "List name": "type",
    "list name": "type",
    "calculation": "calculation",
    "choice_filter": "choice_filter",
    "constraint": "constraint",
    "relevant": "relevant",
}
_VALIDATE_BIND = re.compile(r"\$\{(\w+)\}.*?invalid (\w+) expression \[(.*?)\]", re.S)


def _locate_pyxform(f: str, msg: str, sheets: dict[str, _Sheet], ctx: dict[str, Any]) -> Problem:
    text = msg.replace("\n", " ").strip()
    row = ctx.get("row")
    if row is None and (m := _ROW.search(text)):
        row = int(m.group(1) or m.group(2))
    sheet_name = ctx.get("sheet") or ((m := _SHEET.search(text)) and m.group(1)) or None
    column = (
        ctx.get("column") or ((m := _COLUMN.search(text)) and (m.group(1) or m.group(2))) or None
    )
    if column is None:
        column = next((c for k, c in _KEYWORDS.items() if k in text), None)
    sheet = sheets.get((sheet_name or "").lower())
    if row is None:  # find the cell holding a quoted value from the message
        for value in _QUOTED.findall(text):
            for s in [sheet] if sheet else list(sheets.values()):
                for r, v in s.rows:
                    hit = next((h for h, x in v.items() if str(x) == value), None)
                    if hit:
                        sheet, row, column = s, r, column or hit
                        break
                if row is not None:
                    break
            if row is not None:
                break
    if sheet is None and row is not None:
        sheet = sheets.get("survey")
    text = re.sub(r"^\[row\s*:\s*\d+\]\s*", "", text)
    cell = f"{sheet.cell(column)}{row}" if sheet and column and row and sheet.cell(column) else None
    return Problem(f, text, sheet.name if sheet else None, row, column, cell)


def _locate_validate(f: str, msg: str, sheets: dict[str, _Sheet]) -> Problem:
    lines = [line.strip().removeprefix(">> ").strip() for line in msg.splitlines()]
    text = "ODK Validate: " + " ".join(
        line for line in lines
        if line and line != "ODK Validate Errors:" and "failed validation" not in line
        and not line.startswith(("${", "Result:"))
    )  # fmt: skip
    survey = sheets.get("survey")
    m = _VALIDATE_BIND.search(msg)
    if m and survey:
        name, kind, _expr = m.groups()
        column = {"calculate": "calculation"}.get(kind, kind)
        for r, v in survey.rows:
            if str(v.get("name")) == name:
                cell = f"{survey.cell(column)}{r}" if survey.cell(column) else None
                return Problem(
                    f, text + " — fix the XPath expression", survey.name, r, column, cell
                )
    return Problem(f, text)


# --- building ----------------------------------------------------------------------------------


def _count_questions(node: dict[str, Any]) -> int:
    n = 0
    for child in node.get("children", []):
        if child.get("type") in ("group", "repeat"):
            n += _count_questions(child)
        elif child.get("type") not in _NOT_QUESTIONS:
            n += 1
    return n


def _java_available() -> bool:
    return shutil.which("java") is not None


def _previous(out_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def form_files(forms_dir: Path, only: Iterable[str] | None = None) -> list[Path]:
    """The XLSForms to build, sorted; ``only`` restricts to these form ids (file stems)."""
    files = sorted(p for p in Path(forms_dir).glob("*.xlsx") if not p.name.startswith(("~$", ".")))
    if only:
        wanted = set(only)
        unknown = wanted - {p.stem for p in files}
        if unknown:
            raise FormError(
                [Problem(u + ".xlsx", f"no such form in {forms_dir}") for u in sorted(unknown)]
            )
        files = [p for p in files if p.stem in wanted]
    return files


def build_forms(
    forms_dir: Path,
    out_dir: Path,
    villages_path: Path,
    *,
    only: Iterable[str] | None = None,
    validate: bool = True,
    on_form: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build every XLSForm in ``forms_dir`` into ``out_dir``.

    Returns a report; raises nothing for form problems (they are in ``report.problems``), so the
    caller decides how to show them. The manifest lists the forms that built.
    """
    forms_dir, out_dir = Path(forms_dir), Path(out_dir)
    villages = load_villages(villages_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = BuildReport(out_dir=out_dir)
    if validate and not _java_available():
        validate = False
        report.validated = False
        report.warnings.append(
            "Java was not found, so ODK Validate was skipped (pyxform checks still ran); "
            "install a Java runtime, e.g. `apt-get install default-jre-headless`, and build again"
        )
    elif not validate:
        report.validated = False
    previous = _previous(out_dir)
    history: dict[str, dict[str, str]] = previous.get("history", {})
    entries = {e["form_id"]: e for e in previous.get("forms", [])}

    for path in form_files(forms_dir, only):
        if on_form:
            on_form(path.stem)
        problems, built, warnings = _build_one(path, out_dir, villages, validate, history)
        report.warnings.extend(f"{path.name}: {w}" for w in warnings)
        if problems:
            report.problems.extend(problems)
            entries.pop(path.stem, None)
            for suffix in (".xml", ".json", ".xlsx"):
                (out_dir / f"{path.stem}{suffix}").unlink(missing_ok=True)
            continue
        if built is not None:  # always, when there are no problems
            report.built.append(built)
            entries[built.form_id] = asdict(built)
            history.setdefault(built.form_id, {})[built.version] = built.md5

    manifest = {"forms": sorted(entries.values(), key=lambda e: e["form_id"]), "history": history}
    _atomic_write(out_dir / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
    return report


def _build_one(
    path: Path,
    out_dir: Path,
    villages: list[Village],
    validate: bool,
    history: dict[str, dict[str, str]],
) -> tuple[list[Problem], BuiltForm | None, list[str]]:
    sheets = _read_sheets(path)
    problems = _lint(path, sheets, villages)
    warnings: list[str] = []
    try:
        result = convert(str(path), warnings=warnings, validate=False, pretty_print=True)
    except PyXFormError as e:
        ctx = dict(getattr(e, "context", None) or {})
        return [*problems, _locate_pyxform(path.name, str(e), sheets, ctx)], None, warnings
    if problems:
        return problems, None, warnings

    xform = result.xform
    settings = _settings(sheets)
    form_id, version = str(settings["form_id"]), str(settings["version"])
    md5 = hashlib.md5(xform.encode("utf-8")).hexdigest()  # noqa: S324 -- Central's form hash is md5
    attachments = sorted(set(_ATTACHMENT.findall(xform)))
    rosters = path.parent / ROSTERS_DIR
    missing = [a for a in attachments if not (rosters / a).is_file()]
    if missing:
        return [Problem(path.name, f"attachment {a} is used by the form but missing from {rosters}; add it") for a in missing], None, warnings  # fmt: skip

    columns = _roster_column_problems(path.name, sheets, rosters)
    if columns:
        return columns, None, warnings

    known = history.get(form_id, {}).get(version)
    if known and known != md5:
        srow = sheets["settings"].rows[0][0]
        col = sheets["settings"].cell("version")
        return [Problem(path.name, f"the form changed since the last build but kept version {version}; "
                        "ODK Central refuses a re-used version: raise it (yyyymmddrr)",
                        sheets["settings"].name, srow, "version", f"{col}{srow}")], None, warnings  # fmt: skip

    with tempfile.TemporaryDirectory(prefix=f"manyi-{form_id}-", dir=out_dir) as tmp:
        staged = Path(tmp)
        (staged / f"{form_id}.xml").write_text(xform, encoding="utf-8")
        for a in attachments:
            shutil.copy2(rosters / a, staged / a)
        if validate:
            try:
                warnings.extend(check_xform(str(staged / f"{form_id}.xml")))
            except ODKValidateError as e:
                return [_locate_validate(path.name, str(e), sheets)], None, warnings
        (staged / f"{form_id}.json").write_text(
            json.dumps(result._pyxform, ensure_ascii=False, indent=1), encoding="utf-8"
        )
        shutil.copy2(path, staged / path.name)
        for item in staged.iterdir():
            item.replace(out_dir / item.name)

    built = BuiltForm(
        form_id=form_id,
        version=version,
        title=str(settings.get("form_title", form_id)),
        md5=md5,
        questions=_count_questions(result._pyxform),
        xlsx=path.name,
        xform=f"{form_id}.xml",
        json=f"{form_id}.json",
        attachments=tuple(attachments),
    )
    return [], built, [w for w in warnings if w.strip()]


_FILTER_COLUMN = re.compile(r"(?<![\w$/{'])([A-Za-z_][\w.-]*)\s*(?:!=|<=|>=|=|<|>)")
_PULLDATA = re.compile(r"pulldata\(\s*'([^']+)'\s*,\s*'([^']+)'\s*,\s*'([^']+)'")


def _roster_column_problems(f: str, sheets: dict[str, _Sheet], rosters: Path) -> list[Problem]:
    """ODK Validate never opens CSV attachments, so check the columns a form reads from them."""
    survey = sheets["survey"]
    headers: dict[str, list[str]] = {}

    def header(name: str) -> list[str]:
        if name not in headers:
            first = (rosters / name).read_text(encoding="utf-8-sig").splitlines()[:1]
            headers[name] = [h.strip() for h in first[0].split(",")] if first else []
        return headers[name]

    out = []
    for row, v in survey.rows:
        typ = str(v.get("type", "")).split()
        wanted: list[tuple[str, str, str]] = []  # (file, column, sheet column)
        if len(typ) == 2 and typ[0].endswith("_from_file") and typ[1].endswith(".csv"):
            wanted += [(typ[1], "name", "type"), (typ[1], "label", "type")]
            for col in _FILTER_COLUMN.findall(str(v.get("choice_filter", ""))):
                wanted.append((typ[1], col, "choice_filter"))
        for column, text in v.items():
            for file, col, key in _PULLDATA.findall(str(text)):
                wanted += [(f"{file}.csv", col, column), (f"{file}.csv", key, column)]
        for file, col, column in wanted:
            if (rosters / file).is_file() and col not in header(file):
                cell = f"{survey.cell(column)}{row}" if survey.cell(column) else None
                out.append(Problem(f, f"column '{col}' is not in {file} (it has {', '.join(header(file))}); "
                                   "fix the expression or the roster", survey.name, row, column, cell))  # fmt: skip
    return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def list_forms(forms_dir: Path) -> list[FormInfo]:
    """id, version, Chinese title and question count of every XLSForm, compiled without Validate."""
    infos, problems = [], []
    for path in form_files(forms_dir):
        sheets = _read_sheets(path)
        try:
            result = convert(str(path), warnings=[], validate=False)
        except PyXFormError as e:
            problems.append(
                _locate_pyxform(path.name, str(e), sheets, dict(getattr(e, "context", None) or {}))
            )
            continue
        s = _settings(sheets)
        infos.append(
            FormInfo(str(s.get("form_id", path.stem)), str(s.get("version", "")),
                     str(s.get("form_title", "")), _count_questions(result._pyxform), path.name)
        )  # fmt: skip
    if problems:
        raise FormError(problems)
    return infos


def sync_villages(forms_dir: Path, villages_path: Path) -> list[Path]:
    """Rewrite the ``village`` choice list of every form that uses it from the register.

    Returns the files changed. Other choices, and the rest of the workbook, are kept.
    """
    villages = load_villages(villages_path)
    changed = []
    for path in form_files(forms_dir):
        sheets = _read_sheets(path)
        choices = sheets.get("choices")
        if choices is None or not _uses_village(sheets):
            continue
        if not _check_villages(path.name, choices, villages):
            continue
        wb = load_workbook(path)
        ws = wb[choices.name]
        header = [c.value for c in ws[1]]
        ln, nm = header.index("list_name"), header.index("name")
        zh, en = header.index(f"label::{ZH}"), header.index(f"label::{EN}")
        keep = [
            [c.value for c in row]
            for row in ws.iter_rows(min_row=2)
            if row[ln].value != VILLAGE_LIST and any(c.value not in (None, "") for c in row)
        ]
        ws.delete_rows(2, ws.max_row)
        for values in keep:
            ws.append(values)
        for v in villages:
            row: list[Any] = [None] * len(header)
            row[ln], row[nm], row[zh], row[en] = VILLAGE_LIST, v.code, v.name, v.pinyin
            ws.append(row)
        wb.save(path)
        changed.append(path)
    return changed


def _uses_village(sheets: dict[str, _Sheet]) -> bool:
    survey = sheets.get("survey")
    return bool(survey) and any(
        str(v.get("type", "")).split()[:2]
        in (["select_one", VILLAGE_LIST], ["select_multiple", VILLAGE_LIST])
        for _, v in survey.rows
    )
