"""ODK Collect's ``instances/`` folders (copied off a phone), read as canonical records.

Each ``instances/<form>_<date>/<form>_<date>.xml`` is one submission, its media beside it.
An instance that cannot be read or parsed is quarantined with its path and the rest are
read (ElementTree's expat refuses entity bombs); a folder with no readable instance is an
error saying what was looked for and what was found, never an empty pull.
"""

from __future__ import annotations

# ElementTree never fetches external entities, and the expat it uses (>= 2.4.1) refuses
# exponential entity expansion, so phone-made XML is safe to parse here.
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.errors import DataError
from pipelines.records import AttachmentRef, Quarantined, Record, printable
from pipelines.sources.base import Page
from pipelines.sources.exports._safe import (
    MAX_MEDIA_BYTES,
    MAX_XML_BYTES,
    NAME,
    file_chunks,
    listing,
    texts,
)


class CollectFolder:
    """A folder of Collect instances; ``xform_dir`` holds the built XForms, which say which
    groups are repeats."""

    def __init__(self, path: Path, where: str, xform_dir: Path | None):
        self.path, self.where, self.xform_dir = path, where, xform_dir
        self._instances: dict[Path, ET.Element | str] | None = None  # parsed, or why not

    def close(self) -> None:
        pass  # each file is opened and closed as it is read

    def form_ids(self) -> list[str]:
        """The forms of the readable instances; an error when none can be read."""
        parsed = self._parsed()
        ids = {form_id_of(root) for root in parsed.values() if not isinstance(root, str)}
        if not ids:
            first = next(iter(parsed.values()))
            raise DataError(
                f"{self.where}: none of the {len(parsed)} instance file(s) could be read "
                f"(first: {first}); copy the phone's odk/instances folder again"
            )
        return sorted(i for i in ids if i)

    def fetch(self, path: str) -> Iterator[bytes] | None:
        file = Path(path)
        return file_chunks(file, MAX_MEDIA_BYTES) if file.is_file() else None

    def _instance_files(self) -> list[Path]:
        base = self.path / "instances" if (self.path / "instances").is_dir() else self.path
        try:
            return sorted(
                p for d in base.iterdir() if d.is_dir() for p in d.glob("*.xml") if p.is_file()
            )
        except OSError as e:
            raise DataError(
                f"{printable(base)}: cannot list the folder ({e.strerror}); give this user "
                "read access to it"
            ) from None

    def _parsed(self) -> dict[Path, ET.Element | str]:
        """Each instance file, parsed once: its root element, or why it cannot be read."""
        if self._instances is not None:
            return self._instances
        files = self._instance_files()
        if not files:
            raise DataError(
                f"{self.where}: no ODK Collect instance found: looked for "
                "instances/<form>_<date>/<form>_<date>.xml (the phone's odk/instances folder, "
                f"or the instances folder itself); found {listing(_folder(self.path))}"
            )
        self._instances = {}
        for xml in files:
            where = printable(xml)
            try:
                size = xml.stat().st_size
                if size > MAX_XML_BYTES:
                    self._instances[xml] = (
                        f"{where}: {size:,} bytes, over the {MAX_XML_BYTES // 2**20} MiB bound "
                        "for one instance"
                    )
                    continue
                root = ET.fromstring(xml.read_bytes())  # noqa: S314
            except OSError as e:
                self._instances[xml] = f"{where}: cannot read ({e.strerror or e})"
            except (ET.ParseError, ValueError) as e:  # ValueError: a GBK declaration
                self._instances[xml] = f"{where}: bad XML ({printable(e, 160)})"
            else:
                self._instances[xml] = root
        return self._instances

    def _repeats(self, form_id: str) -> set[str]:
        """Repeat names from the built XForm, so a repeat with one row is still a list."""
        xform = self.xform_dir / f"{form_id}.xml" if self.xform_dir else None
        if xform is None or not xform.is_file():
            return set()
        try:
            root = ET.parse(xform).getroot()  # noqa: S314 - our own build
        except (OSError, ET.ParseError) as e:
            raise DataError(
                f"{printable(xform)}: cannot read the built form ({e}); run `manyi forms build`"
            ) from None
        return {
            el.get("nodeset", "").rsplit("/", 1)[-1]
            for el in root.iter()
            if local_name(el.tag) == "repeat"
        }

    def page(self, form_id: str) -> Page:
        """Every instance of ``form_id``; an unreadable one, whatever its form, quarantined."""
        page = Page()
        repeats = self._repeats(form_id)
        parsed = self._parsed()
        for xml, root in parsed.items():
            if isinstance(root, str):
                page.quarantined.append(Quarantined(NAME, form_id, root, _raw_file(xml)))
                continue
            if form_id_of(root) != form_id:
                continue
            data = instance_data(root, repeats)
            iid = (data.get("meta") or {}).get("instanceID")
            if not iid:
                page.quarantined.append(
                    Quarantined(
                        NAME, form_id, f"{printable(xml)}: no meta/instanceID", _raw_file(xml)
                    )
                )
                continue
            siblings = {p.name: p for p in xml.parent.iterdir() if p.is_file() and p != xml}
            refs = tuple(
                AttachmentRef(v, path=str(siblings[v])) for v in texts(data) if v in siblings
            )
            page.records.append(
                Record(
                    form_id=form_id,
                    instance_id=iid,
                    form_version=root.get("version"),
                    submitted_at=None,
                    updated_at=None,
                    review_state=None,
                    data=data,
                    attachments_expected=len(refs),
                    attachments=refs,
                )
            )
        if not page.records and len(page.quarantined) == sum(
            isinstance(r, str) for r in parsed.values()
        ):
            found = sorted({form_id_of(r) for r in parsed.values() if not isinstance(r, str)})
            raise DataError(
                f"{self.where}: no instance of form {printable(form_id)} here; forms found: "
                f"{', '.join(printable(f, 60) for f in found) or 'none'}"
            )
        page.rows = len(page.records) + len(page.quarantined)
        return page


def instance_data(el: ET.Element, repeats: set[str] = frozenset()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    children = list(el)
    counts: dict[str, int] = {}
    for child in children:
        counts[local_name(child.tag)] = counts.get(local_name(child.tag), 0) + 1
    for child in children:
        name = local_name(child.tag)
        value: Any = instance_data(child, repeats) if len(child) else (child.text or None)
        if counts[name] > 1 or name in repeats:  # several siblings with one name: a repeat
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def form_id_of(root: ET.Element) -> str:
    return root.get("id") or local_name(root.tag)


def _folder(path: Path) -> list[str]:
    try:
        return sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    except OSError:
        return []


def _raw_file(xml: Path) -> str:
    """The raw text of an instance for its quarantine record (what is readable of it)."""
    try:
        with xml.open("rb") as f:
            return f.read(MAX_XML_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""
