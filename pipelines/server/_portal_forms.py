"""The rectification form (整改反馈) prefilled for one follow-up item, and the item an answer
names.

:func:`prefilled` writes the item's id, village and a one-line finding as the default values
of the built XForm's primary instance: parsed with defusedxml (no DTD, no entities), edited
with ElementTree, serialised again; the values are only ever element text, escaped by the
serialiser. Every namespace declaration of the original is kept, those only XPath
expressions use (``jr:``, ``odk:`` functions) included, so the engine reads the same form.
"""

from __future__ import annotations

import contextlib
import io
import threading
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from defusedxml import ElementTree as SafeET

from pipelines.sources.exports.collect import local_name

FORM_ID = "rectification"
_XFORMS = "http://www.w3.org/2002/xforms"
# ElementTree names prefixes from one process-wide map: fill it under a lock, then serialise.
_NAMES = threading.Lock()


def prefilled(xml: bytes, values: Mapping[str, str], first_load: Mapping[str, str] | None = None) -> bytes:  # fmt: skip
    """``xml`` (a built XForm) with ``values`` (field name → text) as the defaults of the
    primary instance's fields of those names (wherever their group puts them).
    ``first_load`` (field name → text) replaces the value a field's
    ``odk-instance-first-load`` ``<setvalue>`` gives it (a dynamic default such as
    ``today()``) by that text."""
    declared = [ns for _, ns in SafeET.iterparse(io.BytesIO(xml), events=("start-ns",),
                                                 forbid_dtd=True)]  # fmt: skip
    root = SafeET.fromstring(xml, forbid_dtd=True)
    data = _primary_instance(root)
    if data is not None:
        for el in data.iter():
            name = local_name(el.tag)
            if name in values and len(el) == 0:
                el.text = values[name]
    for el in root.iter(f"{{{_XFORMS}}}setvalue") if first_load else ():
        name = (el.get("ref") or "").rsplit("/", 1)[-1]
        if name in first_load and el.get("event") == "odk-instance-first-load":
            el.set("value", "'" + first_load[name].replace("'", "") + "'")  # an XPath literal
    used = {tag[1:].split("}", 1)[0] for el in root.iter() for tag in (el.tag, *el.attrib)
            if isinstance(tag, str) and tag.startswith("{")}  # fmt: skip
    with _NAMES:
        for prefix, uri in dict(declared).items():
            if uri in used:
                with contextlib.suppress(ValueError):  # ns0, ns1…: ElementTree's own names
                    ET.register_namespace(prefix, uri)
            else:  # declared for XPath only: ElementTree would drop it
                root.set(f"xmlns:{prefix}" if prefix else "xmlns", uri)
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _primary_instance(root: ET.Element) -> ET.Element | None:
    """The data root of the model's first ``<instance>`` without an id."""
    for el in root.iter(f"{{{_XFORMS}}}instance"):
        if el.get("id") is None:
            return next(iter(el), None)
    return None


def answer(data: Mapping[str, Any], path: Sequence[str]) -> str | None:
    """The text answer at ``path`` (the declared field's place, from :func:`field_paths`) of a
    submission's data; None when absent or not text. Only the declared place counts: an
    element a sender adds elsewhere with the same name is never read."""
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node.strip() if isinstance(node, str) else None


@lru_cache(maxsize=8)
def field_paths(xml: bytes) -> dict[str, tuple[str, ...]]:
    """Field name → its path below the data root, from the form's ``<bind nodeset>``."""
    root = SafeET.fromstring(xml, forbid_dtd=True)
    out: dict[str, tuple[str, ...]] = {}
    for bind in root.iter(f"{{{_XFORMS}}}bind"):
        parts = (bind.get("nodeset") or "").strip("/").split("/")[1:]
        if parts:
            out.setdefault(parts[-1], tuple(parts))
    return out
