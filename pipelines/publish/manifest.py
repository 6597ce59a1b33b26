"""The build manifest (``<build_dir>/manifest.json``, written by ``manyi forms build``) as
publishing reads it, and the report of what a publish did."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError


@dataclass
class PublishReport:
    """What ``manyi forms publish`` did, form ids in manifest order."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def built_forms(build_dir: Path, form_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The entries of ``build_dir/manifest.json`` (all, or those named), checked to exist."""
    path = Path(build_dir) / "manifest.json"
    if not path.exists():
        raise ConfigError(f"{path} does not exist; run `manyi forms build` first")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["forms"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{path}: not a manyi build manifest ({e}); build the forms again"
        ) from None
    if form_ids:
        wanted = list(dict.fromkeys(form_ids))
        known = {e["form_id"] for e in entries}
        unknown = [f for f in wanted if f not in known]
        if unknown:
            raise ConfigError(f"{path}: no built form {', '.join(unknown)}; build it first")
        entries = [e for e in entries if e["form_id"] in set(wanted)]
    for entry in entries:
        for name in [entry.get("xform"), entry.get("xlsx"), *entry.get("attachments", ())]:
            if name and not (Path(build_dir) / name).is_file():
                raise ConfigError(
                    f"{path}: {entry['form_id']} lists {name}, which is not in {build_dir}; "
                    "build the forms again"
                )
    return entries
