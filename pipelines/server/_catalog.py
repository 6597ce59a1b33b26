"""The built forms as `manyi serve` hands them out: the exact bytes of each XForm and roster
file with their md5, and what a submission of the form may hold (repeats, photo fields).

Read from ``build_dir/manifest.json`` (``manyi forms build``) and read again when the manifest
changes, so a form built while the server runs is served at once.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from defusedxml import ElementTree as SafeET

from pipelines.errors import ConfigError
from pipelines.publish.manifest import built_forms
from pipelines.sources.exports.collect import local_name


@dataclass(frozen=True)
class MediaFile:
    name: str
    data: bytes
    md5: str


@dataclass(frozen=True)
class BuiltForm:
    form_id: str
    version: str
    title: str
    xml: bytes  # the XForm exactly as served
    md5: str  # of ``xml``
    media: dict[str, MediaFile] = field(default_factory=dict)  # roster CSVs by file name
    repeats: frozenset[str] = frozenset()  # names of repeat groups
    binary_paths: frozenset[str] = frozenset()  # e.g. "findings/photo": answers naming a file


class Catalog:
    """The forms of ``build_dir``; :meth:`forms` reads the build again when it changed."""

    def __init__(self, build_dir: Path):
        self.build_dir = Path(build_dir)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._forms: dict[str, BuiltForm] = {}

    def forms(self) -> dict[str, BuiltForm]:
        manifest = self.build_dir / "manifest.json"
        try:
            st = manifest.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._forms = _load(self.build_dir) if stamp else {}
                self._stamp = stamp
            return self._forms


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _load(build_dir: Path) -> dict[str, BuiltForm]:
    try:
        entries = built_forms(build_dir)
    except ConfigError:
        return {}  # a build half-written or gone: serve nothing until it is whole
    out: dict[str, BuiltForm] = {}
    for e in entries:
        try:
            xml = (build_dir / e["xform"]).read_bytes()
            media = {}
            for name in e.get("attachments", ()):
                data = (build_dir / name).read_bytes()
                media[name] = MediaFile(name, data, _md5(data))
        except OSError:
            continue  # rebuilt under us: the next request reads it again
        repeats, binaries = _shape(xml)
        out[e["form_id"]] = BuiltForm(
            e["form_id"], str(e["version"]), e["title"], xml, _md5(xml), media, repeats, binaries
        )
    return out


def _shape(xml: bytes) -> tuple[frozenset[str], frozenset[str]]:
    """Repeat names and the paths (below the root) of binary (photo) answers."""
    root = SafeET.fromstring(xml)
    repeats, binaries = set(), set()
    for el in root.iter():
        tag = local_name(el.tag)
        if tag == "repeat":
            repeats.add(el.get("nodeset", "").rsplit("/", 1)[-1])
        elif tag == "bind" and el.get("type") == "binary":
            parts = el.get("nodeset", "").strip("/").split("/")[1:]
            binaries.add("/".join(parts))
    return frozenset(repeats), frozenset(binaries)
