"""The town manager's pages: people, links, QR sheets, publishing a month (issue 12 item 6).
INTERFACE STUB."""

from __future__ import annotations

from collections.abc import Callable

from starlette.routing import Route


def routes(state: Callable[[], object]) -> list[Route]:
    return []
