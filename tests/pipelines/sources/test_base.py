"""Every source has every member of the Source protocol, with the protocol's parameters (no
type checker runs in the suite, so this is what keeps sync.py free of probing)."""

from __future__ import annotations

import inspect

import pytest

from pipelines.sources.base import Source
from pipelines.sources.central import CentralSource
from pipelines.sources.exports import FilesSource
from pipelines.sources.kobo import KoboSource

METHODS = [
    n
    for n, v in vars(Source).items()
    if inspect.isfunction(v) and (not n.startswith("_") or n in ("__enter__", "__exit__"))
]
ATTRIBUTES = list(Source.__annotations__)


def test_the_protocol_names_what_sync_calls() -> None:
    assert set(ATTRIBUTES) == {"name", "fetch_workers"}
    assert set(METHODS) >= {"__enter__", "__exit__", "form_ids", "pages", "refetch"}
    assert set(METHODS) >= {"list_attachments", "fetch_attachment"}


@pytest.mark.parametrize("cls", [CentralSource, KoboSource, FilesSource])
def test_each_source_has_every_member(cls: type) -> None:
    for attribute in ATTRIBUTES:
        assert attribute in vars(cls), attribute
    assert isinstance(cls.name, str) and isinstance(cls.fetch_workers, int)
    for method in METHODS:
        wanted = list(inspect.signature(getattr(Source, method)).parameters)
        have = list(inspect.signature(getattr(cls, method)).parameters)
        assert have == wanted, (method, have)
