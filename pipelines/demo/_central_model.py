"""What the Central stand-in holds: forms (published versions, draft, files), submissions and
app users, and the formats Central gives timestamps and tokens."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EPOCH = datetime(2026, 11, 29, 0, 19, 28, 735000, tzinfo=UTC)


@dataclass
class Costs:
    """What answering costs a real Central, for benchmarks (all off by default).

    Measured on Central v2026.2 (PostgreSQL 15, loopback): every request costs a round trip;
    a paged ``Submissions`` request (``$top``, ``$skip`` or ``$skiptoken``) also makes
    Central count the rows (``countByFormId``), about 0.19 s; and it streams about 3,900–7,700
    rows a second, depending on the machine."""

    round_trip_s: float = 0.0  # before every answer
    page_s: float = 0.0  # before the headers of a paged Submissions feed
    rows_per_s: float = 0.0  # the pace a feed's rows go out at; 0: as fast as it can


ADMIN_ID = 5  # the admin's actor id in the recordings (submitterId "5")


@dataclass
class Sub:
    instance_id: str
    fields: dict[str, Any]  # OData shape: geopoints as GeoJSON, groups nested
    repeats: dict[str, list[dict[str, Any]]]
    created: datetime
    version: str
    updated: datetime | None = None
    review_state: str | None = None
    deleted: datetime | None = None
    edits: int = 0
    submitter_id: str = str(ADMIN_ID)
    submitter_name: str = "admin@example.com"
    device_id: str | None = None
    attachments: dict[str, bytes | None] = field(default_factory=dict)
    order: int = 0
    xml: bytes | None = None  # as submitted; rendered from ``fields`` when None
    user_agent: str | None = None


@dataclass
class Form:
    form_id: str
    versions: list[dict[str, Any]] = field(default_factory=list)  # newest first
    xml: bytes = b""
    attachments: dict[str, bytes] = field(default_factory=dict)
    draft: dict[str, Any] | None = None
    subs: list[Sub] = field(default_factory=list)  # in creation order
    by_id: dict[str, Sub] = field(default_factory=dict)
    xmls: dict[str, bytes] = field(default_factory=dict)  # every published version's XForm


@dataclass
class AppUser:
    """A Central app user (``field_key``): its token goes in ``/v1/key/<token>/…``."""

    id: int
    display_name: str
    token: str
    created: datetime
    forms: set[str] = field(default_factory=set)


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _token() -> str:
    """A session or app-user token as Central makes them: 64 of ``[A-Za-z0-9!$]``."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!$"
    return "".join(secrets.choice(alphabet) for _ in range(64))
