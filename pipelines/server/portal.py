"""The portal's pages for a signed-in person (issue 12 items 2, 3, 5). INTERFACE STUB."""

from __future__ import annotations

from collections.abc import Callable

from starlette.routing import Route


def routes(state: Callable[[], object]) -> list[Route]:
    return []
