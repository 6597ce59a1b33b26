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

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from forms.schema import FormSchema

FORMAT = 1  # bump when the file layout or the stored types change: every form rebuilds
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


def read_index(folder: Path) -> pd.DataFrame:
    path = folder / "index.parquet"
    if not path.exists():
        return pd.DataFrame({"instance_id": pd.Series([], dtype=object), "part": pd.Series([], dtype="int64"), "changed_at": pd.Series([], dtype=object)})  # fmt: skip
    return read_frame(path)


def write_index(folder: Path, index: pd.DataFrame) -> None:
    write(folder / "index.parquet", pa.Table.from_pandas(index, preserve_index=False))


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


def read_frame(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    if columns is not None:
        have = set(pq.read_schema(path).names)
        columns = [c for c in columns if c in have]
    frame = pq.read_table(path, columns=columns).to_pandas()
    for col in frame.columns:  # pandas reads text back as its str dtype: tidy's is object
        if isinstance(frame[col].dtype, pd.StringDtype):
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame


def write(path: Path, table: pa.Table) -> None:
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
