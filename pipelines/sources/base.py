"""What every source is to :func:`pipelines.sync.pull`: the :class:`Source` protocol and the
:class:`Page` it yields.

A source turns one server or export into canonical records (:mod:`pipelines.records`). The
sources differ in what they can do, and say so through the protocol's members rather than
by having them or not: files have no deletions and nothing to ask for again (a file is read
whole on every pull, so ``refetch`` yields nothing), Central's feed names its deletions, and
Kobo compares its listing with what the store ``known``\\s to find edits and deletions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from pipelines.records import AttachmentRef, Quarantined, Record
from pipelines.store import Known


@dataclass
class Page:
    """One batch from a source: written to the store with ``cursor`` in one transaction."""

    records: list[Record] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    cursor: dict[str, Any] | None = None
    gone: list[str] = field(default_factory=list)  # ids the server no longer has (hard deletes)
    rows: int = 0  # rows the server sent, for progress


# What the store holds of a form, by instance id; asked for only by a source that needs it.
KnownRecords = Callable[[], Mapping[str, Known]]


class Source(Protocol):
    """One open connection to a server, or one export, that :func:`~pipelines.sync.pull`
    reads forms from. Used as a context manager."""

    # The store keeps cursors and quarantined records under this name.
    name: str
    # Attachment downloads at once; 1 for a source that must not be read from two threads
    # (an export zip or workbook).
    fetch_workers: int

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def form_ids(self) -> list[str] | None:
        """The forms to pull when none are named; None when the source cannot tell, and the
        build manifest names them."""
        ...

    def pages(
        self, form_id: str, cursor: dict[str, Any] | None, known: KnownRecords | None = None
    ) -> Iterator[Page]:
        """The form's records since ``cursor`` (None: from the start), page by page; each
        page carries the cursor to resume after it. ``known`` is called by a source that
        finds edits and deletions by comparing its listing with the store (Kobo)."""
        ...

    def refetch(self, form_id: str, ids: Sequence[str]) -> Iterator[Page]:
        """The records ``ids`` (quarantined ones) asked for again; pages carry no cursor.
        Yields nothing from a source that reads everything on every pull (files)."""
        ...

    def list_attachments(self, record: Record) -> list[AttachmentRef]:
        """The record's files, for a record that does not name them itself."""
        ...

    def fetch_attachment(self, record: Record, ref: AttachmentRef) -> Iterator[bytes] | None:
        """The file's bytes in chunks, or None when the source does not have it."""
        ...
