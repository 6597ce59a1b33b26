"""The form schema: what every later stage (tidy tables, labels, simulator, reports) knows of a
form, read from the pyxform JSON written beside each built XForm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import DataError

# pyxform's JSON type names -> XLSForm's own names, which form designers know
_TYPES = {"select one": "select_one", "select all that apply": "select_multiple", "photo": "image"}
_META = {"start", "end", "today", "deviceid", "username", "instanceID", "instanceName"}


@dataclass(frozen=True)
class Field:
    path: str  # slash path below the root, e.g. "findings/kind"
    name: str
    type: str  # XLSForm type: select_one, select_multiple, integer, date, geopoint, image, …
    required: bool
    label: dict[str, str] = field(default_factory=dict)  # {"zh": …, "en": …}
    choices: dict[str, dict[str, str]] | None = None  # {name: {"zh": …, "en": …}}
    list_name: str | None = None
    from_file: str | None = None  # CSV attachment of a select_one_from_file
    repeat: str | None = None  # path of the innermost repeat holding the field
    meta: bool = False


@dataclass(frozen=True)
class FormSchema:
    form_id: str
    version: str
    title: str
    fields: tuple[Field, ...]
    repeats: tuple[str, ...]

    def field(self, name_or_path: str) -> Field:
        for f in self.fields:
            if name_or_path in (f.path, f.name):
                return f
        raise KeyError(f"{self.form_id} has no field {name_or_path!r}")

    @property
    def questions(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if not f.meta)


def _lang(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {k.split("(")[-1].rstrip(")") if "(" in k else k: v for k, v in value.items()}
    return {"default": value} if value else {}


def _required(bind: dict[str, Any]) -> bool:
    return str(bind.get("required", "")).lower() in ("yes", "true", "true()")


def _walk(node: dict[str, Any], prefix: str, repeat: str | None, lists: dict[str, Any], out: list[Field], repeats: list[str]) -> None:  # fmt: skip
    for child in node.get("children", []):
        ctype, name = child.get("type"), child["name"]
        path = f"{prefix}{name}"
        if ctype in ("group", "repeat"):
            if ctype == "repeat":
                repeats.append(path)
            _walk(child, path + "/", path if ctype == "repeat" else repeat, lists, out, repeats)
            continue
        xtype = _TYPES.get(ctype, ctype)
        choices = None
        list_name = child.get("list_name")
        from_file = None
        itemset = child.get("itemset")
        if itemset and str(itemset).endswith((".csv", ".xml", ".geojson")):
            from_file, xtype = itemset, f"{xtype}_from_file"
        elif xtype in ("select_one", "select_multiple"):
            raw = child.get("choices") or lists.get(list_name or itemset or "", [])
            choices = {str(c["name"]): _lang(c.get("label")) for c in raw}
        out.append(
            Field(
                path=path, name=name, type=xtype, required=_required(child.get("bind", {})),
                label=_lang(child.get("label")), choices=choices, list_name=list_name,
                from_file=from_file, repeat=repeat, meta=name in _META or prefix == "meta/",
            )
        )  # fmt: skip


def schema_from_json(data: dict[str, Any]) -> FormSchema:
    fields: list[Field] = []
    repeats: list[str] = []
    _walk(data, "", None, data.get("choices", {}), fields, repeats)
    return FormSchema(
        form_id=data["id_string"], version=str(data.get("version", "")),
        title=str(data.get("title", "")), fields=tuple(fields), repeats=tuple(repeats),
    )  # fmt: skip


def load_schema(build_dir: Path, form_id: str) -> FormSchema:
    """Schema of a built form (``manyi forms build`` writes ``<form_id>.json``)."""
    path = Path(build_dir) / f"{form_id}.json"
    try:
        return schema_from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise DataError(
            f"{path}: no built form '{form_id}'; run `manyi forms build` first"
        ) from None
