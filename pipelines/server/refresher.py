"""The portal's outputs, kept fresh in the background (issue 12 item 4). INTERFACE STUB:
the refresher helper replaces this module's body; the names below are the contract."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from pipelines.reports.process import Outputs


@dataclass(frozen=True)
class Snapshot:
    """One good refresh: every output for ``as_of``, written under ``folder``."""

    id: str  # e.g. 20261130T162005-3f2a: unique, safe in a path
    folder: Path  # this snapshot's outputs root (index.html, maps/, <as_of>/)
    as_of: date  # the report's as-of date (today in Asia/Shanghai)
    made_at: datetime  # when the refresh started (aware)
    data_as_of: datetime  # 数据截至: the newest data it includes, else made_at (aware)
    outputs: Outputs  # refresh_outputs' result (frames: progress, checks, followups, inputs)


@dataclass(frozen=True)
class RefreshStatus:
    current: Snapshot | None  # the last good snapshot, None before the first
    data_as_of: datetime | None  # current.data_as_of, or None
    running: bool
    pending: bool  # new data seen, a refresh is due
    last_error: str | None  # the last failed refresh's one-line reason (scrubbed), else None
    last_error_at: datetime | None


class Refresher:
    def __init__(self, settings, *, quiet_s: float = 20.0, max_wait_s: float = 120.0,
                 poll_s: float = 5.0) -> None:  # fmt: skip
        self.settings = settings

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def poke(self) -> None: ...

    def current(self) -> Snapshot | None:
        return None

    def status(self) -> RefreshStatus:
        return RefreshStatus(None, None, False, False, None, None)

    def refresh_now(self) -> Snapshot:
        raise NotImplementedError
