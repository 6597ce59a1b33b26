"""The tables' file layout, shared by the updating and the reading side (see
:mod:`pipelines.tables`): where a form's files are, the state and index files, one lock per form,
and reading/writing one Parquet file."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from forms.schema import FormSchema

FORMAT = 2  # bump when the file layout or the stored types change: every form rebuilds
# 2: files carry tidy's types (never a null-typed column); index.parquet holds only recent rows
PART_ROWS = 50_000  # submissions per partition: a rewrite stays small


def tables_dir(settings: Any) -> Path:
    return Path(settings.data_dir) / "tables"


def fingerprint(schema: FormSchema) -> str:
    return hashlib.sha256(f"{FORMAT}\x1f{schema!r}".encode()).hexdigest()


def part_name(n: int) -> str:
    return f"part-{n:05d}"


def file_stem(repeat: str) -> str:
    return "repeat-" + repeat.replace("/", "~")


def read_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def write_state(folder: Path, state: dict[str, Any]) -> None:
    tmp = folder / "state.tmp"
    tmp.write_text(json.dumps(state), encoding="utf-8")
    tmp.replace(folder / "state.json")


def clear(folder: Path) -> None:
    for p in folder.glob("part-*"):
        shutil.rmtree(p, ignore_errors=True)
    for name in ("index.parquet", "state.json"):
        (folder / name).unlink(missing_ok=True)


@contextmanager
def locked(folder: Path, shared: bool = False) -> Iterator[None]:
    """One writer per form at a time (a pull, a report, the server's refresher), readers
    beside each other."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a+b") as f:
        fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_arrow(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """One file as Arrow, text columns as dictionaries (decoded once per distinct value), and
    only those of ``columns`` it has. Ids are unique: plain text."""
    # ParquetFile, not pq.read_table: one file needs no dataset machinery
    with pq.ParquetFile(path) as f:
        fields = [x for x in f.schema_arrow if columns is None or x.name in columns]
    text = [x.name for x in fields if x.name != "instance_id" and _is_text(x.type)]
    with pq.ParquetFile(path, read_dictionary=text) as f:
        return f.read(columns=None if columns is None else [x.name for x in fields])


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def write(path: Path, table: pa.Table) -> None:
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
