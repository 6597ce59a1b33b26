"""Paths into a record's nested answers (``group/field``, repeats as lists), and the time text
ODK writes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def _put(data: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        data = data.setdefault(part, {})
    data[parts[-1]] = value


def _get(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _items(data: dict[str, Any], repeat: str) -> list[dict[str, Any]]:
    node = _get(data, repeat)
    return node if isinstance(node, list) else []


def _local(moment: datetime) -> str:
    """ODK's dateTime text: local time with milliseconds and offset."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+08:00"


def _utc(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
