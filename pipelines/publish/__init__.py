"""Publishing the built forms (``manyi forms publish``): :mod:`.central` and :mod:`.kobo`
put each form and its roster files on a server; :mod:`.manifest` reads the build."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError
from pipelines.publish.manifest import PublishReport


def publish(
    settings: Any, to: str, form_ids: Iterable[str] | None = None, build_dir: Path | None = None
) -> PublishReport:
    """Publish the built forms to ``to`` (``central`` or ``kobo``): the one entry the CLI and
    the flows call."""
    if to == "central":
        from pipelines.publish.central import publish as publish_to
    elif to == "kobo":
        from pipelines.publish.kobo import publish as publish_to
    else:
        raise ConfigError(f"cannot publish to {to!r}: publish to 'central' or 'kobo'")
    return publish_to(settings, form_ids, build_dir)
