"""Pull forms from one source into the store: the plain function behind ``manyi pull``.

Each page is written with its cursor in one transaction, so a pull killed at any point and
run again ends with exactly the server's submissions. Attachments are fetched on a few
threads after their page is stored, beside the next page; any a killed run missed are picked
up at the start of the next one, as are quarantined records a source can ask for again by id.

A record that cannot be read or stored is quarantined and the rest of its page stored; the
pull's report lists them with their reasons (``FormPull.quarantined_items``). A fault of the
store itself (full disk, read-only) stops the whole pull with one line: running it again
continues where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forms.schema import load_schema
from pipelines._http import RetryNotice, RetryPolicy
from pipelines.errors import ConfigError, DataError, ManyiError, SourceError
from pipelines.records import Quarantined, Record, printable
from pipelines.sources.base import Source
from pipelines.store import Blob, PageCounts, Store, StoreError, open_store
from pipelines.tables import catch_up

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
    # What this pull quarantined, with reasons (also those asked for again that still fail).
    quarantined_items: list[Quarantined] = field(default_factory=list)
    # Problems that stopped nothing: a media file in an export that cannot be read.
    warnings: list[str] = field(default_factory=list)

    def _note(self, counts: PageCounts) -> None:
        seen = {(q.form_id, q.item_key()) for q in self.quarantined_items}
        for item in counts.quarantined_items:
            if (item.form_id, item.item_key()) not in seen:
                self.quarantined_items.append(item)


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

    @property
    def quarantined_items(self) -> list[Quarantined]:
        return [q for f in self.forms for q in f.quarantined_items]

    @property
    def warnings(self) -> list[str]:
        return [f"{f.form_id}: {w}" for f in self.forms for w in f.warnings]


@dataclass(frozen=True)
class FormProgress:
    """How far one form's pull has got, for progress bars (not the plan's progress)."""

    form_id: str
    pages: int
    rows: int
    attachments: int
    done: bool = False


ProgressCallback = Callable[[FormProgress], None]


def open_source(
    settings: Any,
    source: str,
    path: Path | None = None,
    page_size: int | None = None,
    policy: RetryPolicy | None = None,
    store: Store | None = None,
) -> Source:
    """The source object for ``source`` (central, kobo or files)."""
    if source == "central":
        from pipelines.sources.central import CentralSource

        return CentralSource(settings, policy=policy, page_size=page_size)
    if source == "kobo":
        from pipelines.sources.kobo import KoboSource

        # Forms published by `manyi forms publish --to kobo` are found by their form id.
        aliases = {k: v.remote_id for k, v in store.published("kobo").items()} if store else {}
        return KoboSource(
            settings,
            policy=policy,
            page_size=page_size,
            aliases=aliases,
            titles=_titles(settings),
        )
    if source == "files":
        from pipelines.sources.exports import FilesSource

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
    store: Store | None = None,
    on_retry: Callable[[RetryNotice], None] | None = None,
) -> PullReport:
    """Pull ``form_ids`` (default: every form the source has) into the store.

    A form that fails is reported in ``report.errors`` and the others still run; if every
    form fails (server unreachable, wrong credentials) the first error is raised. A fault
    of the store (:class:`~pipelines.store.StoreError`: full disk, read-only) is raised at
    once. ``store`` is an open store to use (it stays open); by default the settings' own.
    Requests are retried until ``settings.http_give_up_s``; ``on_retry`` hears of each retry.
    """
    source = source or settings.source
    policy = policy or RetryPolicy.from_settings(settings, on_retry=on_retry)
    report = PullReport(source)
    with (
        _opened(settings, store) as store,
        open_source(settings, source, path, page_size, policy, store) as src,
    ):
        wanted = list(dict.fromkeys(form_ids)) if form_ids else _default_forms(settings, src)
        first_error: ManyiError | None = None
        for form_id in wanted:
            result = FormPull(form_id)
            report.forms.append(result)
            started = time.monotonic()
            try:
                tables = _tables(settings, store, form_id, result.warnings)
                _pull_form(src, store, form_id, result, progress_callback, tables)
            except StoreError:
                raise  # the next form would hit the same disk
            except ManyiError as e:
                result.error = str(e)
                first_error = first_error or e
            finally:
                result.seconds = round(time.monotonic() - started, 3)
                if progress_callback:
                    progress_callback(
                        FormProgress(form_id, result.pages, result.rows, result.attachments, True)
                    )
        if first_error is not None and all(f.error for f in report.forms):
            raise first_error
    return report


@contextmanager
def _opened(settings: Any, store: Store | None) -> Iterator[Store]:
    if store is not None:
        yield store
        return
    with open_store(settings) as own:
        yield own


def _titles(settings: Any) -> dict[str, str]:
    manifest = Path(settings.build_dir) / "manifest.json"
    try:
        forms = json.loads(manifest.read_text("utf-8"))["forms"]
        return {e["form_id"]: e["title"] for e in forms if e.get("title")}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _default_forms(settings: Any, src: Source) -> list[str]:
    listed = src.form_ids()
    if listed is not None:
        return list(listed)
    manifest = Path(settings.build_dir) / "manifest.json"
    if manifest.exists():
        try:
            forms = json.loads(manifest.read_text("utf-8"))["forms"]
            return [str(e["form_id"]) for e in forms]
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"{manifest}: not a manyi build manifest ({type(e).__name__}: {e}); run "
                "`manyi forms build` again, or name the forms to pull with --form"
            ) from None
    raise ConfigError(f"no --form given and {manifest} does not exist; name the forms to pull")


def _tables(settings: Any, store: Store, form_id: str, warnings: list[str]) -> Callable[[], None]:
    """Catch the form's columnar tables (:mod:`pipelines.tables`) up after a stored page. A form
    not built here has no schema to type its tables: the report builds them once it is. The
    tables can always be rebuilt, so a fault in them is a warning, never a failed pull."""
    try:
        schemas = [load_schema(Path(settings.build_dir), form_id)]
    except (ManyiError, OSError, ValueError):
        return lambda: None
    failed: list[str] = []

    def update() -> None:
        if failed:
            return
        try:
            catch_up(settings, store, form_id, schemas)
        except (OSError, ValueError, ArithmeticError) as e:
            failed.append(str(e))
            warnings.append(
                f"{form_id}：分析表未能更新（{e}），已存数据不受影响；"
                "生成报告时会再试，或运行 manyi tables rebuild"
            )

    return update


def _pull_form(
    src: Source,
    store: Store,
    form_id: str,
    result: FormPull,
    progress: ProgressCallback | None,
    tables: Callable[[], None] = lambda: None,
) -> None:
    with _Fetcher(src, store, form_id, result.warnings) as fetcher:
        # Files a killed run stored rows for but never fetched.
        fetcher.submit(store.incomplete_attachments(form_id))
        result.attachments += fetcher.drain(wait=True)

        # Quarantined records first: the cursor has moved past them, and one that reads now
        # (its form version has since been published, say) is stored and leaves quarantine.
        # (Still unreadable ones are written again, with today's reason, but not counted.)
        retry = store.quarantined_ids(src.name, form_id)
        if retry:
            for page in src.refetch(form_id, retry):
                counts = store.write_page(src.name, form_id, page.records, page.quarantined)
                result._note(counts)
                result.new += counts.new
                result.updated += counts.updated
                result.deleted += counts.deleted
                result.rows += page.rows
                tables()
                fetcher.submit(page.records)
            result.attachments += fetcher.drain()

        cursor = store.cursor(src.name, form_id)
        for page in src.pages(form_id, cursor, known=lambda: store.known(form_id)):
            counts = store.write_page(
                src.name, form_id, page.records, page.quarantined, page.cursor, page.gone
            )
            result.new += counts.new
            result.updated += counts.updated
            result.deleted += counts.deleted
            result.quarantined += counts.quarantined
            result._note(counts)
            result.pages += 1
            result.rows += page.rows
            tables()  # this page's rows into the form's columnar tables
            # Downloads run beside the next page; rows are written once a file is whole.
            fetcher.submit(page.records)
            result.attachments += fetcher.drain()
            if progress:
                progress(FormProgress(form_id, result.pages, result.rows, result.attachments))
        result.attachments += fetcher.drain(wait=True)


class _Fetcher:
    """Fetch attachments on a few threads while the pull goes on.

    Worker threads only download and write content-addressed files (``Store.save_blob``);
    the main thread writes the database rows, in one transaction per batch. A pull killed
    in between leaves files without rows, which the next run finds through
    ``incomplete_attachments`` and fetches again (the content hash makes that a no-op).
    """

    def __init__(self, src: Source, store: Store, form_id: str, warnings: list[str]):
        self.src, self.store, self.form_id = src, store, form_id
        self.warnings = warnings  # list.append is atomic: workers may add to it
        workers = src.fetch_workers
        self.pool = ThreadPoolExecutor(workers, "manyi-fetch") if workers > 1 else None
        self.pending: list[Future[list[tuple[str, str, str, Blob | None]]]] = []
        self.inline = 0  # files fetched on this thread (sources that are not thread-safe)

    def __enter__(self) -> _Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool:
            for job in self.pending:
                job.cancel()
            self.pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, records: Sequence[Record]) -> None:
        wanted = [r for r in records if r.attachments_expected and not r.deleted]
        if not wanted:
            return
        have = self.store.stored_names(self.form_id, [r.instance_id for r in wanted])
        for rec in wanted:
            stored = have.get(rec.instance_id, set())
            if len(stored) >= rec.attachments_expected:
                continue
            if self.pool:
                self.pending.append(self.pool.submit(self._fetch, rec, stored))
            else:
                self.inline += self._write(self._fetch(rec, stored))

    def drain(self, wait: bool = False) -> int:
        """Record what the workers finished (all of it when ``wait``); files fetched."""
        done: list[Future[list[tuple[str, str, str, Blob | None]]]] = []
        keep: list[Future[list[tuple[str, str, str, Blob | None]]]] = []
        for job in self.pending:
            (done if wait or job.done() else keep).append(job)
        self.pending = keep
        rows: list[tuple[str, str, str, Blob | None]] = []
        error: BaseException | None = None
        for job in done:
            try:
                rows.extend(job.result())
            except BaseException as e:  # record what did arrive, then report the failure
                error = error or e
        fetched, self.inline = self._write(rows) + self.inline, 0
        if error is not None:
            raise error
        return fetched

    def _write(self, rows: list[tuple[str, str, str, Blob | None]]) -> int:
        if rows:
            self.store.record_attachments(rows)
        return sum(1 for r in rows if r[3] is not None)

    def _fetch(self, rec: Record, stored: set[str]) -> list[tuple[str, str, str, Blob | None]]:
        refs = rec.attachments or tuple(self.src.list_attachments(rec))
        rows: list[tuple[str, str, str, Blob | None]] = []
        for ref in refs:
            if ref.name in stored:
                continue
            blob = None
            try:
                chunks = self.src.fetch_attachment(rec, ref) if ref.exists else None
                if chunks is not None:
                    blob = self.store.save_blob(chunks)
            except OSError as e:
                raise SourceError(
                    f"{rec.form_id} {rec.instance_id}: could not read attachment "
                    f"{printable(ref.name, 120)!r} ({type(e).__name__}); pull again to retry"
                ) from None
            except StoreError:
                raise
            except DataError as e:
                # A broken file in an export (bad CRC, over the size bound): the record is
                # stored, the file noted missing, so the next pull tries it again.
                self.warnings.append(f"{rec.instance_id}: {e}")
            rows.append((rec.form_id, rec.instance_id, ref.name, blob))
        return rows
