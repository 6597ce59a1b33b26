"""Pull forms from one source into the store: the plain function behind ``manyi pull``.

Each page is written with its cursor in one transaction, so a pull killed at any point and
run again ends with exactly the server's submissions. Attachments are fetched after their
page is stored; any a killed run missed are picked up at the start of the next one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines._http import RetryPolicy
from pipelines.errors import ConfigError, ManyiError, SourceError
from pipelines.records import AttachmentRef, Record
from pipelines.store import Store, open_store

SOURCES = ("central", "kobo", "files")


@dataclass
class FormPull:
    form_id: str
    new: int = 0
    updated: int = 0
    deleted: int = 0
    quarantined: int = 0
    attachments: int = 0
    pages: int = 0
    rows: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass
class PullReport:
    source: str
    forms: list[FormPull] = field(default_factory=list)

    def _sum(self, name: str) -> int:
        return sum(getattr(f, name) for f in self.forms)

    @property
    def new(self) -> int:
        return self._sum("new")

    @property
    def updated(self) -> int:
        return self._sum("updated")

    @property
    def deleted(self) -> int:
        return self._sum("deleted")

    @property
    def quarantined(self) -> int:
        return self._sum("quarantined")

    @property
    def attachments(self) -> int:
        return self._sum("attachments")

    @property
    def seconds(self) -> float:
        return sum(f.seconds for f in self.forms)

    @property
    def errors(self) -> list[str]:
        return [f"{f.form_id}: {f.error}" for f in self.forms if f.error]


@dataclass(frozen=True)
class Progress:
    form_id: str
    pages: int
    rows: int
    attachments: int
    done: bool = False


ProgressCallback = Callable[[Progress], None]


def open_source(
    settings: Any,
    source: str,
    path: Path | None = None,
    page_size: int | None = None,
    policy: RetryPolicy | None = None,
) -> Any:
    """The source object for ``source`` (central, kobo or files)."""
    if source == "central":
        from pipelines.central import CentralSource

        return CentralSource(settings, policy=policy, page_size=page_size)
    if source == "kobo":
        from pipelines.kobo import KoboSource

        return KoboSource(settings, policy=policy, page_size=page_size)
    if source == "files":
        from pipelines.files import FilesSource

        if path is None:
            raise ConfigError("`--source files` needs --path: an export zip/xlsx or a folder")
        return FilesSource(Path(path), Path(settings.build_dir))
    raise ConfigError(f"source '{source}' cannot be pulled; use one of: {', '.join(SOURCES)}")


def pull(
    settings: Any,
    source: str | None = None,
    form_ids: Sequence[str] | None = None,
    path: Path | None = None,
    progress_callback: ProgressCallback | None = None,
    *,
    page_size: int | None = None,
    policy: RetryPolicy | None = None,
) -> PullReport:
    """Pull ``form_ids`` (default: every form the source has) into the store.

    A form that fails is reported in ``report.errors`` and the others still run; if every
    form fails (server unreachable, wrong credentials) the first error is raised.
    """
    source = source or settings.source
    report = PullReport(source)
    with (
        open_source(settings, source, path, page_size, policy) as src,
        open_store(settings) as store,
    ):
        wanted = list(form_ids) if form_ids else _default_forms(settings, src)
        first_error: ManyiError | None = None
        for form_id in wanted:
            result = FormPull(form_id)
            report.forms.append(result)
            started = time.monotonic()
            try:
                _pull_form(src, store, form_id, result, progress_callback)
            except ManyiError as e:
                result.error = str(e)
                first_error = first_error or e
            finally:
                result.seconds = round(time.monotonic() - started, 3)
                if progress_callback:
                    progress_callback(
                        Progress(form_id, result.pages, result.rows, result.attachments, True)
                    )
        if first_error is not None and all(f.error for f in report.forms):
            raise first_error
    return report


def _default_forms(settings: Any, src: Any) -> list[str]:
    if hasattr(src, "form_ids"):
        return list(src.form_ids())
    manifest = Path(settings.build_dir) / "manifest.json"
    if manifest.exists():
        import json

        return [e["form_id"] for e in json.loads(manifest.read_text("utf-8"))["forms"]]
    raise ConfigError(f"no --form given and {manifest} does not exist; name the forms to pull")


def _pull_form(
    src: Any, store: Store, form_id: str, result: FormPull, progress: ProgressCallback | None
) -> None:
    # Files a killed run stored rows for but never fetched.
    for rec in store.incomplete_attachments(form_id):
        result.attachments += _fetch_attachments(src, store, rec, None)

    cursor = store.cursor(src.name, form_id)
    for page in src.pages(form_id, cursor, known=lambda: store.source_versions(form_id)):
        counts = store.write_page(
            src.name, form_id, page.records, page.quarantined, page.cursor, page.gone
        )
        result.new += counts.new
        result.updated += counts.updated
        result.deleted += counts.deleted
        result.quarantined += counts.quarantined
        result.pages += 1
        result.rows += page.rows
        for rec in page.records:
            if rec.attachments_expected and not rec.deleted:
                result.attachments += _fetch_attachments(src, store, rec, rec.attachments)
        if progress:
            progress(Progress(form_id, result.pages, result.rows, result.attachments))


def _fetch_attachments(
    src: Any, store: Store, rec: Record, refs: tuple[AttachmentRef, ...] | None
) -> int:
    if store.stored_attachments(rec.form_id, rec.instance_id) >= rec.attachments_expected:
        return 0
    if not refs:
        refs = tuple(src.list_attachments(rec))
    fetched = 0
    for ref in refs:
        if store.has_attachment(rec.form_id, rec.instance_id, ref.name):
            continue
        chunks = src.fetch_attachment(rec, ref) if ref.exists else None
        if chunks is None:
            store.note_missing_attachment(rec.form_id, rec.instance_id, ref.name)
            continue
        try:
            store.put_attachment(rec.form_id, rec.instance_id, ref.name, chunks)
        except OSError as e:
            raise SourceError(
                f"{rec.form_id} {rec.instance_id}: could not read attachment "
                f"{ref.name!r} ({type(e).__name__}); pull again to retry"
            ) from None
        fetched += 1
    return fetched
