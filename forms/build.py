"""Build the XLSForms in ``forms/`` into XForms, checked by our conventions, pyxform and
ODK Validate.

Every problem is located (form file, sheet, row, column) and all forms are checked even when
one fails. A failing form leaves nothing behind in the output directory.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openpyxl import load_workbook
from pyxform.errors import PyXFormError
from pyxform.validators.odk_validate import ODKValidateError, check_xform
from pyxform.xls2xform import ConvertResult, convert

from forms._lint import EN, VILLAGE_LIST, ZH, check_villages, lint, uses_village
from forms._locate import locate_pyxform, locate_validate
from forms._sheets import Sheet, Workbook, read_workbook
from geo.villages import Village, load_villages
from pipelines.errors import DataError, FormError, Problem

if TYPE_CHECKING:
    from pipelines.analysis.plan import Plan

ROSTERS_DIR = "rosters"
MANIFEST = "manifest.json"
LOCK = "versions.lock.json"
_NOT_QUESTIONS = {
    "group", "repeat", "calculate", "note", "survey", "start", "end", "today", "deviceid",
    "username", "phonenumber", "simserial", "subscriberid", "audit", "hidden",
}  # fmt: skip
_ATTACHMENT = re.compile(r'src="jr://(?:file|file-csv|images|audio|video)/([^"]+)"')
# pyxform's check_xform returns these as "warnings" although the form was not validated
_VALIDATE_NOT_RUN = ("took to long", "took too long", "Bad return code")


@dataclass(frozen=True)
class BuiltForm:
    """One form that compiled, passed the checks and was written to the output directory."""

    form_id: str
    version: str
    title: str
    md5: str  # of the XForm, as ODK Central reports it
    questions: int
    xlsx: str  # file names, relative to the output directory
    xform: str
    json: str
    attachments: tuple[str, ...] = ()
    validated: bool = True  # ODK Validate passed (False when skipped)


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


# --- compiling ---------------------------------------------------------------------------------


def _compile(wb: Workbook, warnings: list[str]) -> ConvertResult | Problem:
    try:
        return convert(str(wb.path), warnings=warnings, validate=False, pretty_print=True)
    except PyXFormError as e:
        return locate_pyxform(wb, str(e), dict(getattr(e, "context", None) or {}))
    except Exception as e:  # pyxform fails with plain Python errors on some malformed sheets
        return Problem(
            wb.path.name,
            f"pyxform could not read the form ({type(e).__name__}: {e}); check that row 1 of "
            "each sheet holds only column names and that no cell holds a formula error",
        )


def _count_questions(node: dict[str, Any]) -> int:
    n = 0
    for child in node.get("children", []):
        if child.get("type") in ("group", "repeat"):
            n += _count_questions(child)
        elif child.get("type") not in _NOT_QUESTIONS:
            n += 1
    return n


# --- rosters: ODK Validate never opens CSV attachments, so check what a form reads -------------

_FILTER_COLUMN = re.compile(r"(?<![\w$/{'])([A-Za-z_][\w.-]*)\s*(?:!=|<=|>=|=|<|>)")
_PULLDATA = re.compile(r"pulldata\(\s*'([^']+)'\s*,\s*'([^']+)'\s*,\s*'([^']+)'")
_INSTANCE = re.compile(r"instance\(\s*'([^']+)'\s*\)/root/item\[\s*([\w-]+)\s*=[^\]]*\]/([\w-]+)")


def _read_roster(path: Path) -> tuple[list[str], bytes]:
    """Header and bytes (without BOM) of a roster CSV; DataError when unusable."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: not UTF-8 (Excel's plain 'CSV' on Chinese Windows is GBK); "
            "save it as 'CSV UTF-8' and build again"
        ) from None
    header = next(csv.reader(io.StringIO(text)), [])
    if not header:
        raise DataError(f"{path}: the roster is empty; it needs a header row (name,label,…)")
    return [h.strip() for h in header], text.encode("utf-8")


def _roster_problems(wb: Workbook, rosters: Path, attachments: list[str]) -> list[Problem]:
    survey: Sheet = wb.sheets["survey"]
    out: list[Problem] = []
    headers: dict[str, list[str]] = {}
    for name in attachments:
        if not (rosters / name).is_file():
            row = next((r for r, v in survey.rows if name in " ".join(v.values())), None)
            out.append(
                survey.problem(
                    row,
                    "type" if row else None,
                    f"attachment {name} is used by the form but missing from {rosters}; add it",
                )
            )
        elif name.endswith(".csv"):
            try:
                headers[name] = _read_roster(rosters / name)[0]
            except DataError as e:
                out.append(Problem(wb.path.name, str(e)))
    for row, v in survey.rows:
        typ = v.get("type", "").split()
        wanted: list[tuple[str, str, str]] = []  # (file, column, sheet column)
        if len(typ) == 2 and typ[0].endswith("_from_file") and typ[1].endswith(".csv"):
            wanted += [(typ[1], "name", "type"), (typ[1], "label", "type")]
            wanted += [
                (typ[1], c, "choice_filter")
                for c in _FILTER_COLUMN.findall(v.get("choice_filter", ""))
            ]
        for column, text in v.items():
            for file, col, key in _PULLDATA.findall(text):
                wanted += [(f"{file}.csv", col, column), (f"{file}.csv", key, column)]
            for file, key, col in _INSTANCE.findall(text):
                wanted += [(f"{file}.csv", key, column), (f"{file}.csv", col, column)]
        for file, col, column in wanted:
            if file in headers and col not in headers[file]:
                have = ", ".join(headers[file])
                out.append(
                    survey.problem(
                        row,
                        column,
                        f"column '{col}' is not in {file} (it has {have}); fix the expression or the roster",
                    )
                )
    return out


# --- the version rule --------------------------------------------------------------------------


def _read_lock(forms_dir: Path) -> dict[str, dict[str, str]]:
    path = forms_dir / LOCK
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); restore it from git") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise DataError(f"{path}: expected {{form_id: {{version: hash}}}}; restore it from git")
    return data


def _check_version(wb: Workbook, form_id: str, version: str, content: str, lock: dict[str, dict[str, str]]) -> Problem | None:  # fmt: skip
    known = lock.get(form_id, {}).get(version)
    if known is None or known == content:
        return None
    settings = wb.sheets["settings"]
    return settings.problem(
        settings.rows[0][0], "version",
        f"the form changed but kept version {version}, which was already built with other "
        "content; ODK Central refuses a re-used version: raise it (yyyymmddrr)",
    )  # fmt: skip


# --- building ----------------------------------------------------------------------------------


def form_files(forms_dir: Path, only: Iterable[str] | None = None) -> list[Path]:
    """The XLSForms to build, sorted; ``only`` restricts to these form ids (file stems)."""
    forms_dir = Path(forms_dir)
    if not forms_dir.is_dir():
        raise FormError(
            [
                Problem(
                    str(forms_dir),
                    "the forms folder does not exist; check forms_dir / MANYI_FORMS_DIR",
                )
            ]
        )
    files = sorted(p for p in forms_dir.glob("*.xlsx") if not p.name.startswith(("~$", ".")))
    if not files:
        raise FormError(
            [
                Problem(
                    str(forms_dir),
                    "no .xlsx forms found in this folder; check forms_dir / MANYI_FORMS_DIR",
                )
            ]
        )
    if only:
        wanted = set(only)
        unknown = sorted(wanted - {p.stem for p in files})
        if unknown:
            raise FormError([Problem(f"{u}.xlsx", f"no such form in {forms_dir}") for u in unknown])
        files = [p for p in files if p.stem in wanted]
    return files


def build_forms(
    forms_dir: Path,
    out_dir: Path,
    villages_path: Path,
    *,
    plan: Plan | None = None,
    only: Iterable[str] | None = None,
    validate: bool = True,
    on_form: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build every XLSForm in ``forms_dir`` into ``out_dir``.

    Form problems do not raise: they are in ``report.problems``, and the other forms are still
    built. The road forms' segment lists are checked against ``plan`` (the town's, loaded by
    the caller from the ``plan`` setting; None skips that check). The manifest lists the forms that built; forms whose file is gone leave it.
    ``forms_dir/versions.lock.json`` remembers each (form, version)'s content, so a changed
    form that kept its version is refused whatever the output folder.
    """
    forms_dir, out_dir = Path(forms_dir), Path(out_dir)
    files = form_files(forms_dir, only)
    villages = load_villages(villages_path)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DataError(f"{out_dir} is a file, not a folder; choose another --out") from None
    report = BuildReport(out_dir=out_dir)
    if validate and shutil.which("java") is None:
        validate = False
        report.warnings.append(
            "Java was not found, so ODK Validate was skipped (pyxform checks still ran); "
            "install a Java runtime, e.g. `apt-get install default-jre-headless`, and build again"
        )
    report.validated = validate
    lock = _read_lock(forms_dir)
    lock_before = json.dumps(lock, sort_keys=True)
    entries = {e["form_id"]: e for e in _read_manifest(out_dir).get("forms", [])}
    if not only:  # a full build: forget forms whose file is gone
        for gone in set(entries) - {p.stem for p in files}:
            _remove_outputs(out_dir, entries.pop(gone))

    for path in files:
        if on_form:
            on_form(path.stem)
        warnings: list[str] = []
        try:
            problems, built = _build_one(path, out_dir, villages, plan, validate, lock, warnings)
        except FormError as e:
            problems, built = e.problems, None
        report.warnings.extend(f"{path.name}: {w}" for w in warnings if w.strip())
        if built is None:
            report.problems.extend(problems)
            _remove_outputs(out_dir, entries.pop(path.stem, {"form_id": path.stem}))
            continue
        report.built.append(built)
        entries[built.form_id] = asdict(built)

    manifest = {"forms": sorted(entries.values(), key=lambda e: e["form_id"])}
    _atomic_write(out_dir / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
    if json.dumps(lock, sort_keys=True) != lock_before:
        _atomic_write(
            forms_dir / LOCK, json.dumps(lock, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
        )
    return report


def _build_one(
    path: Path, out_dir: Path, villages: list[Village], plan: Plan | None, validate: bool,
    lock: dict[str, dict[str, str]], warnings: list[str],
) -> tuple[list[Problem], BuiltForm | None]:  # fmt: skip
    wb = read_workbook(path)
    problems = lint(wb, villages, plan)
    result = _compile(wb, warnings)
    if isinstance(result, Problem):
        return [*problems, result], None
    if problems:
        return problems, None

    data = result._pyxform
    form_id, version = str(data["id_string"]), str(data.get("version") or "")
    xform = result.xform
    attachments = sorted(set(_ATTACHMENT.findall(xform)))
    rosters = path.parent / ROSTERS_DIR
    if problems := _roster_problems(wb, rosters, attachments):
        return problems, None
    content = wb.content_hash()
    if problem := _check_version(wb, form_id, version, content, lock):
        return [problem], None

    with tempfile.TemporaryDirectory(prefix=f".manyi-{form_id}-", dir=out_dir) as tmp:
        staged = Path(tmp)
        (staged / f"{form_id}.xml").write_text(xform, encoding="utf-8")
        for a in attachments:  # CSV rosters are copied without a BOM, which some readers keep
            data_bytes = (
                _read_roster(rosters / a)[1] if a.endswith(".csv") else (rosters / a).read_bytes()
            )
            (staged / a).write_bytes(data_bytes)
        if validate:
            try:
                said = check_xform(str(staged / f"{form_id}.xml"))
            except ODKValidateError as e:
                return [locate_validate(wb, str(e))], None
            if any(s in w for w in said for s in _VALIDATE_NOT_RUN):
                return [
                    Problem(
                        path.name,
                        f"ODK Validate did not finish ({' '.join(said)}); build again, and report the form if it persists",
                    )
                ], None
            warnings.extend(said)
        (staged / f"{form_id}.json").write_text(
            json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8"
        )
        shutil.copy2(path, staged / path.name)
        for item in staged.iterdir():
            item.replace(out_dir / item.name)

    lock.setdefault(form_id, {})[version] = content
    return [], BuiltForm(
        form_id=form_id,
        version=version,
        title=str(data.get("title") or form_id),
        md5=hashlib.md5(xform.encode("utf-8")).hexdigest(),  # noqa: S324 -- Central's form hash is md5
        questions=_count_questions(data),
        xlsx=path.name,
        xform=f"{form_id}.xml",
        json=f"{form_id}.json",
        attachments=tuple(attachments),
        validated=validate,
    )


def _read_manifest(out_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def _remove_outputs(out_dir: Path, entry: dict[str, Any]) -> None:
    """Delete a form's outputs (not its attachments, which other forms may share)."""
    stem = entry["form_id"]
    for name in (f"{stem}.xml", f"{stem}.json", entry.get("xlsx") or f"{stem}.xlsx"):
        (out_dir / name).unlink(missing_ok=True)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def list_forms(forms_dir: Path) -> list[FormInfo]:
    """id, version, Chinese title and question count of every XLSForm, compiled without Validate."""
    infos, problems = [], []
    for path in form_files(forms_dir):
        try:
            wb = read_workbook(path)
        except FormError as e:
            problems += e.problems
            continue
        result = _compile(wb, [])
        if isinstance(result, Problem):
            problems.append(result)
            continue
        data = result._pyxform
        infos.append(FormInfo(str(data["id_string"]), str(data.get("version") or ""),
                              str(data.get("title") or ""), _count_questions(data), path.name))  # fmt: skip
    if problems:
        raise FormError(problems)
    return infos


def sync_villages(forms_dir: Path, villages_path: Path) -> list[Path]:
    """Rewrite the ``village`` choice list of every form that uses it from the register.

    Returns the files changed. Other rows and their formatting are kept; a missing ``choices``
    sheet is created.
    """
    villages = load_villages(villages_path)
    changed = []
    for path in form_files(forms_dir):
        wb = read_workbook(path)
        if not uses_village(wb) or not check_villages(path.name, wb.get("choices"), villages):
            continue
        book = load_workbook(path)
        title = wb.get("choices").name if wb.get("choices") else None
        ws = book[title] if title else book.create_sheet("choices")
        header = [str(c.value).strip() if c.value is not None else "" for c in ws[1]]
        if not any(header):
            header = ["list_name", "name", f"label::{ZH}", f"label::{EN}"]
            for i, h in enumerate(header, start=1):
                ws.cell(row=1, column=i, value=h)
        missing = [
            c for c in ("list_name", "name", f"label::{ZH}", f"label::{EN}") if c not in header
        ]
        if missing:
            raise FormError(
                [
                    Problem(
                        path.name,
                        f"the choices sheet has no column(s) {', '.join(missing)}; add them to row 1",
                        ws.title,
                        1,
                    )
                ]
            )
        col = {h: i for i, h in enumerate(header)}
        for r in range(ws.max_row, 1, -1):  # bottom-up, so row numbers stay valid
            if str(ws.cell(row=r, column=col["list_name"] + 1).value or "").strip() == VILLAGE_LIST:
                ws.delete_rows(r)
        for v in villages:
            row: list[Any] = [None] * len(header)
            row[col["list_name"]], row[col["name"]] = VILLAGE_LIST, v.code
            row[col[f"label::{ZH}"]], row[col[f"label::{EN}"]] = v.name, v.pinyin
            ws.append(row)
        book.save(path)
        changed.append(path)
    return changed
