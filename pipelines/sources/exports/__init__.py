"""Hand-moved data: :class:`FilesSource` tells the format of ``--path`` and reads it with
its reader, one module a format:

* :mod:`.central_csv`: Central's ``submissions.csv.zip`` export;
* :mod:`.kobo_xlsx`: KoboToolbox's XLSX export;
* :mod:`.collect`: ODK Collect ``instances/`` folders;
* :mod:`._safe`: the bounds and the defensive reading they share.

Files are read in place; media go straight from the zip or folder into the content-addressed
store, so a member called ``media/../../x`` is never extracted anywhere. Every file may be
broken, huge or re-saved by hand: what cannot be read is one :class:`DataError` naming the
file (and member, sheet or row), or a quarantined record, never a traceback or an empty pull.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from pipelines.errors import DataError
from pipelines.records import AttachmentRef, Record, printable
from pipelines.sources.base import KnownRecords, Page
from pipelines.sources.exports._safe import NAME, declared_encoding
from pipelines.sources.exports.central_csv import CentralZip
from pipelines.sources.exports.collect import CollectFolder
from pipelines.sources.exports.kobo_xlsx import KoboWorkbook

__all__ = ["FilesSource"]


class _Reader(Protocol):
    """One export format, open for reading."""

    def form_ids(self) -> list[str]: ...

    def page(self, form_id: str) -> Page: ...

    def fetch(self, where: str) -> Iterator[bytes] | None: ...

    def close(self) -> None: ...


class FilesSource:
    """An export file or Collect folder, read whole on every pull (the
    :class:`~pipelines.sources.base.Source` protocol). Use as a context manager.

    ``xform_dir`` holds the built forms (repeats, labels); ``encoding`` that of an export's
    CSVs (None: detect)."""

    name = NAME
    fetch_workers = 1  # a zip member or file at a time, on the pulling thread

    def __init__(self, path: Path, xform_dir: Path | None = None, encoding: str | None = None):
        self.path = Path(path)
        xforms = Path(xform_dir) if xform_dir else None
        declared = declared_encoding(encoding)
        where = printable(self.path)
        if not self.path.exists():
            raise DataError(f"{where} does not exist; give --path an export zip or a folder")
        self._reader: _Reader
        if not self.path.is_file():
            self._reader = CollectFolder(self.path, where, xforms)
        elif self.path.suffix.lower() == ".xlsx":
            self._reader = KoboWorkbook(self.path, where, xforms)
        elif zipfile.is_zipfile(self.path) or self.path.suffix.lower() == ".zip":
            self._reader = CentralZip(self.path, where, declared)
        else:
            raise DataError(
                f"{where}: not a Central submissions.csv.zip export, a KoboToolbox "
                ".xlsx export or an ODK Collect instances folder"
            )

    def __enter__(self) -> FilesSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self._reader.close()

    def form_ids(self) -> list[str]:
        """The forms in the file; an error, not an empty list, when there are none."""
        return self._reader.form_ids()

    def pages(
        self, form_id: str, cursor: Any = None, known: KnownRecords | None = None
    ) -> Iterator[Page]:
        """The whole form, as one page: a file has no cursor and no deletions."""
        yield self._reader.page(form_id)

    def refetch(self, form_id: str, ids: Sequence[str]) -> Iterator[Page]:
        return iter(())  # nothing to ask again: every pull reads the whole file

    def list_attachments(self, record: Record) -> list[AttachmentRef]:
        return list(record.attachments)

    def fetch_attachment(self, record: Record, ref: AttachmentRef) -> Iterator[bytes] | None:
        return self._reader.fetch(ref.path) if ref.path is not None else None
