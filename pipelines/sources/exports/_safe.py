"""Reading hand-moved files safely: the bounds on what a file may make us read, zip members
read in counted chunks (declared sizes can lie), CRC and encryption faults as one line,
CSV encoding detection (UTF-8 with or without BOM, GBK/GB18030), and what the readers share.

* a zip (export or XLSX) may hold at most ``MAX_MEMBERS`` members; each member's declared
  size is checked against its bound before reading, and the bytes actually read are counted
  too, so a small zip that expands to gigabytes stops at the bound;
* a bad CRC, a truncated or encrypted zip: one :class:`DataError` naming the file and member;
* CSV text is UTF-8 (with or without BOM) or GBK/GB18030 (Excel on Chinese Windows re-saves
  Central's CSV so), detected, or as declared; anything else is an error naming the file and
  saying to save it as UTF-8. A CSV field may hold ``MAX_FIELD_CHARS``.
"""

from __future__ import annotations

import codecs
import csv
import io
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipelines.errors import DataError
from pipelines.records import printable

NAME = "files"  # the source's name in the store

# What a hand-moved file may make us read. A town's year is ~20,000 submissions: a form's
# CSV of ~60 MiB, ~20,000 photos of a few MiB each.
MAX_MEMBERS = 100_000  # members of an export zip or an XLSX
MAX_CSV_BYTES = 256 * 2**20  # one form or repeat CSV, decompressed
MAX_MEDIA_BYTES = 512 * 2**20  # one photo, audio or video file
MAX_XLSX_PART_BYTES = 512 * 2**20  # one part of an XLSX (a sheet, the shared strings)
MAX_XLSX_BYTES = 2 * 2**30  # all of an XLSX, decompressed
MAX_XML_BYTES = 16 * 2**20  # one Collect instance file
MAX_FIELD_CHARS = 16 * 2**20  # one CSV field (Python's own limit is 128 KiB)
CHUNK = 1 << 20
SAMPLE = 1 << 16  # bytes looked at to tell the encoding

csv.field_size_limit(MAX_FIELD_CHARS)  # process-wide; a lift, so no other reader minds

RESAVE = "save it as UTF-8 (Excel or WPS: 另存为 'CSV UTF-8'), or export it again"
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError)


class NotThisEncoding(Exception):
    """The text stopped decoding at ``row``: try the next encoding."""

    def __init__(self, row: int):
        super().__init__(row)
        self.row = row


class Counted(io.RawIOBase):
    """A member's bytes, counted as they are read: declared sizes can lie."""

    def __init__(self, member: Any, limit: int, where: str):
        self.member, self.limit, self.where, self.seen = member, limit, where, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.member.read(len(buffer))
        self.seen += len(data)
        if self.seen > self.limit:
            raise DataError(
                f"{self.where}: expands to over {self.limit // 2**20} MiB, more than an "
                "export holds; this is not an export manyi can read (a zip bomb?)"
            )
        buffer[: len(data)] = data
        return len(data)


def declared_encoding(encoding: str | None) -> str | None:
    if not encoding:
        return None
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise DataError(
            f"unknown encoding {printable(encoding, 40)!r}; use utf-8, utf-8-sig, gbk or gb18030"
        ) from None


def open_zip(path: Path, kind: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise DataError(
            f"{printable(path)}: not {kind}: not a readable zip ({printable(e, 120)}), "
            "truncated or another file renamed; download or export it again"
        ) from None


def check_zip(path: Path, archive: zipfile.ZipFile, xlsx: bool) -> None:
    """Member count and declared sizes; for an XLSX (which openpyxl reads whole, parts at a
    time) every part is also read through once, counting bytes and checking CRCs."""
    where = printable(path)
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise DataError(
            f"{where}: {len(infos):,} members, over the bound of {MAX_MEMBERS:,}; this is not "
            "an export manyi can read"
        )
    if not infos:
        raise DataError(f"{where}: an empty zip; download or export it again")
    total = 0
    for info in infos:
        bound = MAX_XLSX_PART_BYTES if xlsx else _bound(info.filename)
        total += info.file_size
        if info.file_size > bound:
            raise DataError(
                f"{where}:{printable(info.filename)}: declares {info.file_size:,} bytes, over "
                f"the {bound // 2**20} MiB bound; this is not an export manyi can read"
            )
    if xlsx and total > MAX_XLSX_BYTES:
        raise DataError(
            f"{where}: expands to {total:,} bytes, over the {MAX_XLSX_BYTES // 2**30} GiB "
            "bound for a workbook; export fewer submissions at a time"
        )
    if xlsx:
        for info in infos:
            for _ in member_chunks(path, archive, info, MAX_XLSX_PART_BYTES):
                pass


def _bound(member: str) -> int:
    return MAX_CSV_BYTES if member.lower().endswith(".csv") else MAX_MEDIA_BYTES


def member_chunks(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int
) -> Iterator[bytes]:
    """A member's bytes in chunks, at most ``limit`` of them; a bad CRC, a truncated or an
    encrypted member is a :class:`DataError` naming the file and the member."""
    where = f"{printable(path)}:{printable(info.filename)}"
    too_big = (
        f"{where}: expands to over {limit // 2**20} MiB, more than its bound; "
        "this is not an export manyi can read (a zip bomb?)"
    )
    try:
        with archive.open(info) as member:
            yield from _bounded(member.read, limit, too_big)
    except ZIP_ERRORS as e:
        raise member_fault(where, e) from None


def member_fault(where: str, e: BaseException) -> DataError:
    text = printable(e, 160)
    if isinstance(e, RuntimeError) and "encrypted" in str(e):
        return DataError(f"{where}: encrypted; export it again without a password")
    if isinstance(e, NotImplementedError):
        return DataError(f"{where}: compressed with a method manyi cannot read ({text}); re-zip it")
    return DataError(f"{where}: damaged ({type(e).__name__}: {text}); download or export it again")


def file_chunks(file: Path, limit: int) -> Iterator[bytes]:
    """A file's bytes in chunks, at most ``limit`` of them."""
    too_big = (
        f"{printable(file)}: over {limit // 2**20} MiB, more than a phone's "
        "file; leave it out of the folder"
    )
    with file.open("rb") as f:
        yield from _bounded(f.read, limit, too_big)


def _bounded(read: Callable[[int], bytes], limit: int, too_big: str) -> Iterator[bytes]:
    """Chunks from ``read`` until it gives none; ``too_big`` (a DataError) past ``limit``."""
    seen = 0
    while chunk := read(CHUNK):
        seen += len(chunk)
        if seen > limit:
            raise DataError(too_big)
        yield chunk


def read_some(archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, where: str) -> bytes:
    try:
        with archive.open(info) as member:
            return member.read(size)
    except ZIP_ERRORS as e:
        raise member_fault(where, e) from None


def encodings(sample: bytes, where: str) -> list[str]:
    """The encodings to try, best first, from the first bytes of a CSV."""
    if sample.startswith(codecs.BOM_UTF8):
        return ["utf-8-sig"]
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(f"{where}: UTF-16 text (Excel's 'Unicode text'), not CSV; {RESAVE}")
    if sample.count(b"\x00") > len(sample) // 10:
        raise DataError(f"{where}: binary data or UTF-16, not CSV text; {RESAVE}")
    tries = []
    for encoding in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(encoding)().decode(sample, final=False)
        except UnicodeDecodeError:
            continue
        tries.append(encoding)
    if not tries:
        raise DataError(f"{where}: text neither UTF-8 nor GBK/GB18030; {RESAVE}")
    return tries


# ---- shared by the readers ---------------------------------------------------------------
def listing(names: list[str], limit: int = 8) -> str:
    """What was found instead, for a message: the first ``limit`` names."""
    if not names:
        return "nothing"
    shown = ", ".join(printable(n, 80) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def texts(value: Any) -> Iterator[str]:
    """Every text in a record's answers: those naming a file in the export are its media."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from texts(v)
    elif isinstance(value, list):
        for v in value:
            yield from texts(v)
