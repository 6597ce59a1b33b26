"""The portal's files for one scope of one snapshot: the maps, the internal dispatch report,
the follow-up and data-quality downloads, and the photos of items.

Files are made lazily, once per (snapshot, scope), into ``<snapshot.folder>/scopes/<key>/``
(:class:`Once`: one lock per key, so concurrent requests wait for the first and share what it
made; the work runs in a worker thread, never on the event loop). A file is only ever served
from what was made or stored (a name is looked up, never joined from the URL). Photos come from
the store's content-addressed attachments and are served only when they are a JPEG or PNG.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import anyio
from starlette.responses import FileResponse, Response

from geo.maps import DOMAINS
from pipelines.reports.lists import write_followup_lists, write_quality_sheets
from pipelines.reports.scoped import (
    PhotoUrl,
    draw_scope_maps,
    scoped_dispatch_html,
    scoped_dispatch_xlsx,
    style_hashes,
)
from pipelines.server._portal_forms import FORM_ID
from pipelines.server._portal_view import Item, ScopeView
from pipelines.server.scopes import OWN, TOWN, Scope

T = TypeVar("T")
_KEPT = 512  # results kept (the newest); older ones are made again if asked for
# Maps, reports and workbooks are CPU work holding the GIL: one at a time, so a crowd opening
# maps leaves the event loop (the index and the lists) its share (benchmarks/portal.py: index
# and lists p95 ~150 ms with one, ~290 ms with two, on this 2-core machine).
_HEAVY = anyio.CapacityLimiter(1)
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_JPEG, _PNG = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"
DOWNLOADS = {"followups.xlsx", "followups.csv", "quality.xlsx", "quality.csv"}
# A map page runs folium's inline scripts as an opaque origin: no session, no cookies.
MAP_CSP = (
    "sandbox allow-scripts allow-popups; default-src 'self' 'unsafe-inline' data: blob:; "
    "frame-ancestors 'self'"
)


class Once:
    """``fn()`` run once per key in a worker thread; concurrent callers of a key wait for it.
    A failure is kept too (keys carry the snapshot id, so the next refresh tries again):
    a scope whose maps cannot be drawn does not redraw on every request."""

    def __init__(self) -> None:
        self._done: OrderedDict[tuple, tuple[bool, object]] = OrderedDict()
        self._locks: dict[tuple, asyncio.Lock] = {}

    async def get(self, key: tuple, fn: Callable[[], T]) -> T:
        if key not in self._done:
            lock = self._locks.setdefault(key, asyncio.Lock())
            try:
                async with lock:
                    if key not in self._done:  # the first: make it (the others wait)
                        try:
                            made = (True, await anyio.to_thread.run_sync(fn, limiter=_HEAVY))
                        except Exception as e:  # kept, raised again to every caller
                            made = (False, e)
                        self._done[key] = made
                        while len(self._done) > _KEPT:
                            self._done.popitem(last=False)
            finally:
                self._locks.pop(key, None)
        ok, value = self._done.get(key, (False, RuntimeError("evicted")))
        if not ok:
            raise value  # type: ignore[misc]
        return value  # type: ignore[return-value]


def folder(snapshot, scope: Scope) -> Path:
    """Where a scope's files of a snapshot go: ``scopes/<key>/`` (an own scope: its login's)."""
    name = f"me-{scope.login}" if scope.kind == OWN else scope.key
    return Path(snapshot.folder) / "scopes" / name


def _villages(scope: Scope) -> frozenset[str] | None:
    return None if scope.kind == TOWN else scope.villages


# --- maps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScopeMap:
    name: str  # the file name served under maps/
    title: str  # Chinese
    path: Path


def draw(settings, snapshot, scope: Scope, photo_url: PhotoUrl) -> list[ScopeMap]:
    """The scope's overview and domain maps (drawn in a worker thread)."""
    result = draw_scope_maps(settings, snapshot.outputs, folder(snapshot, scope),
                             _villages(scope), photo_url=photo_url, label=scope.label)  # fmt: skip
    return [ScopeMap(path.name, _TITLES.get(key, key), path) for key, path in result.maps.items()]


_TITLES = {"overview": "总览", **DOMAINS}


def planned_maps() -> list[ScopeMap]:
    """The maps :func:`draw` makes (the overview, one per domain), for the list page before
    they are drawn: drawing waits for the first map opened."""
    return [ScopeMap(f"{key}.html", title, Path()) for key, title in _TITLES.items()]


def map_response(maps: list[ScopeMap], name: str) -> Response | None:
    found = next((m for m in maps if m.name == name), None)
    if found is None or not found.path.is_file():
        return None
    return FileResponse(
        found.path, media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": MAP_CSP, "Cache-Control": "private, no-store",
                 "Referrer-Policy": "no-referrer"},
    )  # fmt: skip


# --- the dispatch report ----------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    html: str
    csp: str


def dispatch_page(settings, snapshot, scope: Scope, photo_url: PhotoUrl) -> Page:
    """The scope's internal dispatch report, and its CSP: inline CSS (by hash) and SVG, no
    script at all."""
    html = scoped_dispatch_html(settings, snapshot.outputs, _villages(scope), scope.label,
                                photo_url=photo_url, data_as_of=snapshot.data_as_of)  # fmt: skip
    styles = " ".join(style_hashes(html)) or "'none'"
    csp = (f"default-src 'none'; style-src {styles}; img-src 'self' data:; base-uri 'none'; "
           "form-action 'none'; frame-ancestors 'none'")  # fmt: skip
    return Page(html, csp)


def dispatch_xlsx(settings, snapshot, scope: Scope) -> Path:
    month = f"{snapshot.as_of:%Y-%m}"
    path = folder(snapshot, scope) / f"月调度通报_{month}_内部版.xlsx"
    path.parent.mkdir(parents=True, exist_ok=True)
    scoped_dispatch_xlsx(settings, snapshot.outputs, _villages(scope), scope.label, path)
    return path


def dispatch_name(snapshot, scope: Scope) -> str:
    return f"月调度通报_{snapshot.as_of:%Y-%m}_内部版_{scope.label}.xlsx"


# --- downloads --------------------------------------------------------------------------


def write_downloads(snapshot, view: ScopeView) -> dict[str, Path]:
    """The scope's follow-up list and data-quality sheets, XLSX and CSV, written by the
    report's own writers (cells formula-neutralised, CSV with BOM)."""
    out = folder(snapshot, view.scope)
    out.mkdir(parents=True, exist_ok=True)
    outputs = snapshot.outputs
    fx, fc = write_followup_lists(view.open_frame, out, outputs.as_of, closed=view.closed_frame)
    data = dataclasses.replace(outputs.inputs, quarantine=view.quarantine)
    qx, qc = write_quality_sheets(view.checks, data, out, outputs.as_of)
    return {"followups.xlsx": fx, "followups.csv": fc, "quality.xlsx": qx, "quality.csv": qc}


def download_name(name: str, scope: Scope, snapshot) -> str:
    """The Chinese file name a download is saved as: 跟进清单_闫庄_2026-11-30.xlsx."""
    stem, ext = name.split(".")
    what = {"followups": "跟进清单", "quality": "数据质量"}[stem]
    return f"{what}_{scope.label}_{snapshot.as_of.isoformat()}.{ext}"


def attachment(path: Path, filename: str, fallback: str) -> Response:
    """``path`` as a download saved as ``filename`` (RFC 6266/5987: an ASCII fallback and
    the UTF-8 name)."""
    media = {
        ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ".csv": "text/csv; charset=utf-8",
    }.get(path.suffix, "application/octet-stream")
    name = _UNSAFE_NAME.sub("_", filename)
    disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
    return FileResponse(path, media_type=media, headers={
        "Content-Disposition": disposition, "Cache-Control": "private, no-store",
    })  # fmt: skip


# --- photos -----------------------------------------------------------------------------


def finding_photo(snapshot, item: Item) -> Path | None:
    """The stored photo of the item's finding (only forms whose photos show findings, never
    a person or a home, are read into the snapshot)."""
    if not item.photo:
        return None
    photo = snapshot.outputs.inputs.photos.get((item.form_id, item.instance_id, item.photo))
    return photo.path if photo is not None else None


def fix_photo(snapshot, store, item: Item) -> Path | None:
    """The stored photo of the rectification that closed the item."""
    if not (item.fix_photo and item.fix_instance_id):
        return None
    key = (FORM_ID, item.fix_instance_id, item.fix_photo)
    photo = snapshot.outputs.inputs.photos.get(key)
    if photo is not None:
        return photo.path
    for a in store.attachments(FORM_ID, item.fix_instance_id):
        if a.name == item.fix_photo and a.status == "stored" and a.local_path is not None:
            return a.local_path
    return None


def photo_response(path: Path | None, attachments_dir: Path) -> Response | None:
    """A stored photo, typed by its bytes (JPEG or PNG only), or None (answer 404)."""
    if path is None:
        return None
    try:
        real = path.resolve(strict=True)
        if not real.is_relative_to(attachments_dir.resolve()):
            return None
        with real.open("rb") as f:
            head = f.read(8)
    except OSError:
        return None
    media = "image/jpeg" if head.startswith(_JPEG) else "image/png" if head == _PNG else None
    if media is None:
        return None
    return FileResponse(real, media_type=media, headers={"Cache-Control": "private, no-store"})
