"""The public edition of the monthly dispatch report (月调度通报·公开版), frozen per month by a
town manager (``POST /manage/publish``) and served with no login at ``/public/``.

A published month is a folder ``<outputs_dir>/public/<YYYY-MM>/`` holding the public edition's
HTML and XLSX, exactly as :func:`pipelines.reports.process.refresh_outputs` wrote them for the
month's end (or today, for the current month), and ``published.json`` (who published it and
when). The folder IS the publication: the record travels with its files (a backup or a copy of
the outputs keeps both), unpublishing removes both at once, and no store row can say
"published" about files that are gone. The history (who published or withdrew what, when)
is in the store's audit log (``month_published``, ``month_unpublished``).

A month is only ever read from a strict ``YYYY-MM`` match, never joined from raw input; a
(re)publication is written beside the folder and renamed into place, so a reader sees the old
edition or the new one, never half of one.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from pipelines.config import SHANGHAI
from pipelines.errors import DataError
from pipelines.server import _pages

MONTH = re.compile(r"^(20[0-9]{2})-(0[1-9]|1[0-2])$")
_FILE = re.compile(r"^(20[0-9]{2}-(?:0[1-9]|1[0-2]))(\.xlsx)?$")
_RECORD = "published.json"
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# The frozen report is one self-contained page with inline CSS and inline SVG: nothing else.
PUBLIC_CSP = "; ".join([
    "default-src 'none'",
    "style-src 'unsafe-inline'",
    "img-src data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])  # fmt: skip
PUBLIC_HEADERS = {
    "Content-Security-Policy": PUBLIC_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # withdrawn at once: every view asks the server again
}
_env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True,
                   trim_blocks=True, lstrip_blocks=True)  # fmt: skip
_lock = threading.Lock()  # one (un)publication at a time in this process


@dataclass(frozen=True)
class Publication:
    month: str  # YYYY-MM
    as_of: date  # the report's as-of date
    by: str  # the manager's login
    by_name: str
    at: datetime  # when it was published (aware)
    html: Path
    xlsx: Path

    @property
    def label(self) -> str:
        return month_label(self.month)


def public_dir(settings) -> Path:
    return Path(settings.outputs_dir) / "public"


def month_label(month: str) -> str:
    return f"{month[:4]}年{int(month[5:])}月"


def today_shanghai() -> date:
    return datetime.now(SHANGHAI).date()


def as_of_for(month: str, plan_year: int, today: date) -> date:
    """The as-of date of ``month``'s public edition: the month's last day, or ``today`` for
    the current month. A month that is malformed, outside the plan year or still to come is
    one :class:`DataError`, Chinese first."""
    m = MONTH.match(month or "")
    if m is None:
        raise DataError("月份格式应为 YYYY-MM，如 2026-11（month must be YYYY-MM）")
    year, mon = int(m[1]), int(m[2])
    if year != plan_year:
        raise DataError(
            f"只能发布计划年度 {plan_year} 年的月份（{month} is outside the plan year {plan_year}）"
        )
    if (year, mon) > (today.year, today.month):
        raise DataError(f"{month_label(month)}尚未开始，不能发布（{month} is in the future）")
    if (year, mon) == (today.year, today.month):
        return today
    return date(year, mon, calendar.monthrange(year, mon)[1])


def _read(folder: Path) -> Publication | None:
    try:
        record = json.loads((folder / _RECORD).read_text(encoding="utf-8"))
        html, xlsx = folder / record["html"], folder / record["xlsx"]
        if not (html.is_file() and xlsx.is_file()) or "/" in record["html"] + record["xlsx"]:
            return None
        return Publication(
            folder.name, date.fromisoformat(record["as_of"]), record["by"], record["by_name"],
            datetime.fromisoformat(record["at"]), html, xlsx,
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None  # half-written by a killed process, or not ours: not published


def publication(settings, month: str) -> Publication | None:
    """The published edition of ``month`` (a strict YYYY-MM), or None."""
    if not MONTH.match(month):
        return None
    return _read(public_dir(settings) / month)


def publications(settings) -> list[Publication]:
    """Every published month, the newest first."""
    root = public_dir(settings)
    if not root.is_dir():
        return []
    found = [_read(p) for p in root.iterdir() if MONTH.match(p.name) and p.is_dir()]
    return sorted((p for p in found if p is not None), key=lambda p: p.month, reverse=True)


def publish(settings, month: str, by: str, by_name: str, today: date | None = None) -> Publication:  # fmt: skip
    """Compute ``month``'s public edition and freeze it under ``public/<month>/``, replacing
    an earlier publication of the month. Slow (the whole report is computed): call it from a
    worker thread. Only the public edition's two files leave the temporary folder."""
    from pipelines.reports.process import refresh_outputs

    as_of = as_of_for(month, settings.plan_year, today or today_shanghai())
    root = public_dir(settings)
    with _lock, tempfile.TemporaryDirectory(prefix="manyi-publish-") as work:
        outputs = refresh_outputs(settings, as_of=as_of, out_dir=Path(work) / "run")
        html = outputs.files["dispatch_public_html"]
        xlsx = outputs.files.get("dispatch_public_xlsx", html.with_suffix(".xlsx"))
        root.mkdir(parents=True, exist_ok=True)
        _sweep(root)
        stage = root / f".stage-{secrets.token_hex(6)}"
        stage.mkdir()
        try:
            shutil.copyfile(html, stage / html.name)
            shutil.copyfile(xlsx, stage / xlsx.name)
            record = {
                "month": month, "as_of": as_of.isoformat(), "by": by, "by_name": by_name,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "html": html.name, "xlsx": xlsx.name,
            }  # fmt: skip
            (stage / _RECORD).write_text(
                json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8"
            )
            _swap(stage, root / month)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    published = _read(root / month)
    if published is None:  # pragma: no cover - we just wrote it
        raise DataError(f"{root / month}: the publication could not be read back; check the disk")
    return published


def unpublish(settings, month: str) -> bool:
    """Withdraw ``month``: its public URL answers 404 from now on. False if not published."""
    if not MONTH.match(month):
        return False
    root = public_dir(settings)
    folder = root / month
    with _lock:
        if not folder.is_dir():
            return False
        gone = root / f".gone-{secrets.token_hex(6)}"
        folder.rename(gone)  # one rename: the URL stops at once, the files go after
        shutil.rmtree(gone, ignore_errors=True)
    return True


def _swap(stage: Path, final: Path) -> None:
    old = None
    if final.exists():
        old = final.with_name(f".old-{secrets.token_hex(6)}")
        final.rename(old)
    stage.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sweep(root: Path) -> None:
    """Leftovers of a killed (un)publication (we hold the lock: none is running)."""
    for p in root.iterdir():
        if p.name.startswith((".stage-", ".old-", ".gone-")):
            shutil.rmtree(p, ignore_errors=True)


# ---- the public pages (no login) ----------------------------------------------------------
def _attachment(name: str) -> str:
    """Content-Disposition with a Chinese file name (RFC 5987) and an ASCII fallback."""
    ascii_name = re.sub(r"[^A-Za-z0-9._-]", "_", name.encode("ascii", "replace").decode())
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


def _page(request: Request, st, template: str, status: int = 200, **context) -> HTMLResponse:
    html = _env.get_template(template).render(
        static_url=f"{st.base_url(request)}/static", visitor=None, refresh=None,
        local_time=_pages.local_time, **context,
    )  # fmt: skip
    headers = {**_pages.HEADERS, "X-Content-Type-Options": "nosniff"}
    # a missing month may be published any minute: only the list is cached
    headers["Cache-Control"] = "no-cache" if status == 200 else "no-store"
    return HTMLResponse(html, status, headers=headers)


def routes(state: Callable[[], object]) -> list[Route]:
    async def index(request: Request) -> Response:
        st = state()
        return _page(request, st, "public/index.html.j2", items=publications(st.settings),
                     month_label=month_label)  # fmt: skip

    async def edition(request: Request) -> Response:
        st = state()
        m = _FILE.match(request.path_params["name"])
        found = publication(st.settings, m[1]) if m else None
        if found is None:
            return _page(request, st, "public/not_found.html.j2", 404)
        with contextlib.suppress(OSError):  # withdrawn between the look-up and the read
            if m[2]:  # .xlsx
                return Response(
                    found.xlsx.read_bytes(), media_type=_XLSX,
                    headers={**PUBLIC_HEADERS, "Content-Disposition": _attachment(found.xlsx.name)},
                )  # fmt: skip
            return HTMLResponse(found.html.read_text(encoding="utf-8"), headers=PUBLIC_HEADERS)
        return _page(request, st, "public/not_found.html.j2", 404)

    return [
        Route("/public/", index, methods=["GET"]),
        Route("/public/{name}", edition, methods=["GET"]),
    ]
