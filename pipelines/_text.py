"""Text files as the town's staff save them: UTF-8 (with or without BOM), or GBK/GB18030,
which Excel and WPS on Chinese Windows write. Anything else is one line naming the file."""

from __future__ import annotations

import codecs
from pathlib import Path

from pipelines.errors import DataError

RESAVE = "save it as UTF-8 (Excel or WPS: 另存为 'CSV UTF-8')"


def read_text(path: Path, what: str) -> str:
    """The text of ``path``: UTF-8 (BOM or not), else GB18030 (a superset of GBK)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a {what} file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data[:4096]:
        raise DataError(f"{path}: UTF-16 or binary data, not CSV text; {RESAVE}")
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise DataError(f"{path}: text neither UTF-8 nor GBK/GB18030; {RESAVE}")
