"""Benchmark: each form's tidy tables as Parquet partitions (``pipelines.tables``) or in one
DuckDB file, measured on the same store (issue 13: "choose by measurement and say why").

    .venv/bin/python benchmarks/tables.py --store /tmp/bench1m --dir /tmp/bench_tables

``--store`` is a folder ``benchmarks/report.py --dir`` built: its SQLite store stays the
system of record, and each run adds 1,110 changes to it (and 100 more for the two-process
test). ``--dir`` is emptied, then holds ``parquet/tables/`` and ``tables.duckdb``.

Every step runs in its own child process, one side after the other, so ru_maxrss is that
step's peak alone; the clock starts after the imports; (b) and (c) run ``--times`` times
(3), and the medians are shown. The steps:

- (a) build every form's tables from the store: ``rebuild_all``, beside the same rows (the
  store's change scan, ``records_by_id`` and ``tidy`` in batches of 20,000) INSERTed from
  Arrow into one DuckDB table per form and per repeat;
- (b) 1,000 new + 100 edited + 10 deleted submissions, spread over the forms by their share,
  are written to the store; then ``catch_up`` per form, beside DuckDB DELETE + INSERT of the
  changed ids in one transaction (a DuckDB ``_index`` table holds each row's ``changed_at``);
- (c) read back as the report needs them: every form, all columns (``read_form``, beside
  ``SELECT … ORDER BY`` → ``.df()`` → the type restoration that makes it equal; and again
  through Arrow with text as dictionaries, as read_form reads its files), and the biggest
  form's 5 columns. A check step asserts all three equal for every form and repeat;
- (d) disk size, and two processes at once (a pull and the server's refresher).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402  (after the path is set)
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from benchmarks import report as bench  # noqa: E402
from forms.schema import load_schema  # noqa: E402
from pipelines.analysis.tidy import TidyForm, merge_schemas, tidy  # noqa: E402
from pipelines.config import TIMEZONE, Settings  # noqa: E402
from pipelines.store import open_store  # noqa: E402
from pipelines.tables import catch_up, read_form, rebuild_all  # noqa: E402

BIG, FIVE = "home_visit", ["village", "visit_date", "mode", "follow_up", "student"]
FETCH = 20_000  # records read and tidied at a time, as pipelines.tables does
MARGIN = timedelta(seconds=60)  # a scan starts this long before the mark, as catch_up's does
ORDER = "ORDER BY submitted_at ASC NULLS FIRST, instance_id"  # the store's, and read_form's
SPENT = {"duckdb": 0.0}  # seconds in DuckDB's INSERTs of a build (the rest: store + tidy)
_TYPES = {"Int64": "BIGINT", "int64": "BIGINT", "Float64": "DOUBLE", "boolean": "BOOLEAN",
          "datetime64[ns]": "TIMESTAMP", f"datetime64[ns, {TIMEZONE}]": "TIMESTAMPTZ"}  # fmt: skip
# The SQL below names tables and columns after our own form ids and fields (S608: not input).

# --- the DuckDB side ---------------------------------------------------------------------------


def _connect(path: Path, read_only: bool = False):
    import duckdb  # here: the Parquet side's processes never load it

    con = duckdb.connect(str(path), read_only=read_only)
    con.execute("SET TimeZone = 'Asia/Shanghai'")  # TIMESTAMPTZ come back as Shanghai times
    return con


def _name(form_id: str, repeat: str | None = None) -> str:
    return f'"{form_id}"' if repeat is None else f'"{form_id}~{repeat}"'


def _frames(form: TidyForm) -> list[tuple[str, pd.DataFrame]]:
    reps = [(_name(form.form_id, r), t) for r, t in form.repeats.items()]
    return [(_name(form.form_id), form.table), *reps]


def _insert(con, form: TidyForm, seen: list[tuple[str, str]]) -> None:
    """Every table of a tidied batch, INSERTed BY NAME from Arrow (categories as text; a
    column no schema describes, a field of another version, is added as VARCHAR first),
    and the ``(instance_id, changed_at)`` of every row read into ``_index``."""
    started = time.perf_counter()
    ids, stamps = (list(c) for c in zip(*seen, strict=True)) if seen else ([], [])
    con.register("seen", pa.table({"instance_id": pa.array(ids, pa.string()), "changed_at": pa.array(stamps, pa.string())}))  # fmt: skip
    con.execute("INSERT INTO _index SELECT ?, instance_id, changed_at FROM seen", [form.form_id])
    con.unregister("seen")
    for table, frame in _frames(form):
        if frame.empty:
            continue
        arrow = pa.Table.from_pandas(frame, preserve_index=False)
        for i, f in enumerate(arrow.schema):
            if pa.types.is_dictionary(f.type):
                arrow = arrow.set_column(i, f.name, arrow.column(i).cast(pa.string()))
        have = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
        for col in set(arrow.column_names) - have:
            con.execute(f'ALTER TABLE {table} ADD COLUMN "{col}" VARCHAR')
        con.register("batch", arrow)
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM batch")  # noqa: S608
        con.unregister("batch")
    SPENT["duckdb"] += time.perf_counter() - started


def _tidied(store, form_id: str, ids: list[str], schemas):
    """(tidied live records, [(id, changed_at)] of every row read) per batch of ids."""
    for start in range(0, len(ids), FETCH):
        got = store.records_by_id(form_id, ids[start : start + FETCH])
        seen = list(zip((r.instance_id for r in got.records), got.changed_at, strict=True))
        yield tidy([r for r in got.records if not r.deleted], schemas), seen


def duck_build(con, store, build_dir: Path) -> int:
    """Every form's tables built again from the store: one INSERT per batch of 20,000."""
    con.execute("CREATE OR REPLACE TABLE _index (form_id VARCHAR, instance_id VARCHAR, changed_at VARCHAR)")  # fmt: skip
    con.execute("CREATE OR REPLACE TABLE _mark (form_id VARCHAR PRIMARY KEY, mark VARCHAR)")
    rows = 0
    for form_id, schemas in _forms(store, build_dir):
        for table, frame in _frames(tidy([], schemas)):  # tidy's types, from its empty tables
            cols = ", ".join(f'"{c}" {_TYPES.get(str(t), "VARCHAR")}' for c, t in frame.dtypes.items())  # fmt: skip
            con.execute(f"CREATE OR REPLACE TABLE {table} ({cols})")
        scan = store.changes(form_id, None)
        for form, seen in _tidied(store, form_id, scan.instance_ids, schemas):
            _insert(con, form, seen)
            rows += len(seen)  # deleted ones too, as rebuild_all counts
        con.execute("INSERT INTO _mark VALUES (?, ?)", [form_id, scan.latest])
    con.execute("CHECKPOINT")
    return rows


def duck_update(con, store, build_dir: Path) -> int:
    """Catch up with the store: the scanned rows whose ``changed_at`` the index does not
    hold are read and tidied, then DELETEd and INSERTed in one transaction for all forms."""
    work = []
    for form_id, schemas in _forms(store, build_dir):
        got = con.execute("SELECT mark FROM _mark WHERE form_id = ?", [form_id]).fetchall()
        since = datetime.fromisoformat(got[0][0].replace("Z", "+00:00")) - MARGIN if got else None
        scan = store.changes(form_id, since and since.strftime("%Y-%m-%dT%H:%M:%S"))
        if not len(scan):
            continue
        con.register("scan", pa.table({"instance_id": scan.instance_ids, "changed_at": scan.changed_at}))  # fmt: skip
        changed = [r[0] for r in con.execute(
            "SELECT s.instance_id FROM scan s LEFT JOIN (SELECT * FROM _index WHERE form_id = ?) i "
            "USING (instance_id) WHERE i.changed_at IS DISTINCT FROM s.changed_at", [form_id]).fetchall()]  # fmt: skip
        con.unregister("scan")
        work.append((form_id, schemas, scan.latest, changed, list(_tidied(store, form_id, changed, schemas))))  # fmt: skip
    con.execute("BEGIN TRANSACTION")
    for form_id, schemas, latest, changed, batches in work:
        con.register("gone", pa.table({"instance_id": pa.array(changed, pa.string())}))
        for table in [_name(form_id), *(_name(form_id, r) for r in schemas[-1].repeats)]:
            con.execute(f"DELETE FROM {table} WHERE instance_id IN (SELECT instance_id FROM gone)")  # noqa: S608
        con.execute("DELETE FROM _index WHERE form_id = ? AND instance_id IN (SELECT instance_id FROM gone)", [form_id])  # fmt: skip
        con.unregister("gone")
        for form, seen in batches:
            _insert(con, form, seen)
        con.execute("INSERT OR REPLACE INTO _mark VALUES (?, ?)", [form_id, latest])
    con.execute("COMMIT")
    return sum(len(w[3]) for w in work)


def duck_read(con, form_id: str, schemas, columns: list[str] | None = None, arrow: bool = False) -> TidyForm:  # fmt: skip
    """The form's tables as ``read_form`` gives them: the store's order (submitted_at,
    instance_id), then tidy's columns and types restored from what ``.df()`` returns; or,
    ``arrow``, from the Arrow result with text as dictionaries (each distinct text converted
    once, as read_form does with its files)."""

    def fetch(sql: str) -> pd.DataFrame:
        if not arrow:
            return con.sql(sql).df()
        table = con.sql(sql).to_arrow_table()
        for i, f in enumerate(table.schema):
            if f.name != "instance_id" and (pa.types.is_string(f.type) or pa.types.is_string_view(f.type)):  # fmt: skip
                table = table.set_column(i, f.name, pc.dictionary_encode(table.column(i)))
        return table.to_pandas()

    template = tidy([], schemas)
    keep = None if columns is None else list(dict.fromkeys(["instance_id", *columns]))
    listed = "*" if keep is None else ", ".join(f'"{c}"' for c in keep)
    table = _restore(fetch(f"SELECT {listed} FROM {_name(form_id)} {ORDER}"), template.table)  # fmt: skip # noqa: S608
    if keep is not None:  # in the order asked for, as read_form gives them
        table = table[[c for c in keep if c in table.columns]]
    # a repeat's rows in their submission's order, then repeat_index (a window join in SQL
    # costs more than these sorts)
    at = pd.Series(np.arange(len(table)), index=table["instance_id"].to_numpy())
    repeats = {}
    for rep, empty in template.repeats.items():
        frame = _restore(fetch(f"SELECT * FROM {_name(form_id, rep)}"), empty)  # noqa: S608
        where = at.reindex(frame["instance_id"].to_numpy()).to_numpy()
        order = np.lexsort((frame["repeat_index"].to_numpy(), where))
        repeats[rep] = frame.iloc[order].reset_index(drop=True)
    return TidyForm(form_id, merge_schemas(list(schemas)), table, repeats)


def _restore(frame: pd.DataFrame, template: pd.DataFrame) -> pd.DataFrame:
    """DuckDB's pandas types back to tidy's: nullable Int64/Float64/boolean, ns times in
    Shanghai, text as object with None, categories in the schema's order (values it does not
    list after, sorted); a column no schema describes only when some row answers it."""
    out = {}
    for col in frame.columns:
        values = frame[col]
        dtype = template[col].dtype if col in template.columns else None
        if dtype is not None and not (dtype == object or isinstance(dtype, pd.CategoricalDtype)):  # noqa: E721
            out[col] = values.astype(dtype)  # numbers, booleans, times (us → ns)
            continue
        if isinstance(dtype, pd.CategoricalDtype):  # as tidy: from the distinct values
            codes, uniques = pd.factorize(values)
            texts = [str(u) for u in uniques]
            listed = list(dtype.categories) if col != "review_state" else []
            cats = listed + sorted({t for t in texts if t} - set(listed))
            where = {c: i for i, c in enumerate(cats)}
            lookup = np.array([where.get(t, -1) for t in texts] + [-1], dtype=np.int64)
            out[col] = pd.Categorical.from_codes(lookup[codes], categories=cats)
            continue
        text = values.astype(object).where(values.notna(), None)
        if dtype is None:
            if values.notna().any():
                out[col] = text
        elif dtype == object:  # noqa: E721
            # tidy inserts form_version as an array, which pandas infers as str
            out[col] = text.array if col == "form_version" and len(text) else text
    named = [c for c in template.columns if c in out]
    return pd.DataFrame({c: out[c] for c in named + sorted(set(out) - set(named))}, index=range(len(frame)))  # fmt: skip


def _forms(store, build_dir: Path) -> list[tuple[str, list]]:
    """Every form of the store with a built schema (rebuild_all leaves the others out)."""
    return [(f, [load_schema(build_dir, f)]) for f in store.form_ids() if (build_dir / f"{f}.json").exists()]  # fmt: skip


# --- the steps, each in a child process --------------------------------------------------------


def _settings(args) -> tuple[Settings, Settings]:
    """(the store's Settings, the Settings whose data_dir holds the Parquet tables)."""
    store = bench._settings(args.store)
    return store, Settings(data_dir=args.dir / "parquet", outputs_dir=args.dir / "outputs",
                           build_dir=store.build_dir, plan_year=bench.YEAR, source="demo")  # fmt: skip


def _timed(args, work) -> dict:
    store_settings, tables = _settings(args)
    with open_store(store_settings, read_only=True) as store:
        started = time.perf_counter()
        rows = work(store, store_settings.build_dir, tables)
        return {"s": time.perf_counter() - started, "rows": rows}


def _duck(args, work) -> dict:
    def run(store, build_dir, _):
        con = _connect(args.dir / "tables.duckdb")
        rows = work(con, store, build_dir)
        started = time.perf_counter()
        con.close()  # checkpoints: the time to a durable file is counted
        SPENT["duckdb"] += time.perf_counter() - started
        return rows

    return _timed(args, run) | {"duckdb_s": SPENT["duckdb"]}


def step_build_parquet(args) -> dict:
    return _timed(args, lambda store, _, tables: sum(rebuild_all(tables, store).changed.values()))  # fmt: skip


def step_update_parquet(args) -> dict:
    def run(store, build_dir, tables):
        forms = _forms(store, build_dir)
        return sum(sum(catch_up(tables, store, f, s).changed.values()) for f, s in forms)

    return _timed(args, run)


def _all_forms(args) -> tuple[list, dict[str, int]]:
    with open_store(_settings(args)[0], read_only=True) as store:
        forms = list(_forms(store, _settings(args)[0].build_dir))
        return forms, {f: store.count(f) for f, _ in forms}


def _read_all(args, read) -> dict:
    forms = _all_forms(args)[0]
    started = time.perf_counter()
    rows = sum(len(read(f, s).table) for f, s in forms)
    lap = time.perf_counter()
    read(BIG, dict(forms)[BIG], FIVE)
    return {"s": lap - started, "five_s": time.perf_counter() - lap, "rows": rows}


def step_read_parquet(args) -> dict:
    tables = _settings(args)[1]
    return _read_all(args, lambda f, s, cols=None: read_form(tables, f, s, cols))


def step_read_duckdb(args, arrow: bool = False) -> dict:
    con = _connect(args.dir / "tables.duckdb", read_only=True)
    return _read_all(args, lambda f, s, cols=None: duck_read(con, f, s, cols, arrow))


def step_check(args) -> dict:
    """Both sides equal (every form and repeat, and the 5 columns), and each form's rows as
    many as the store's live submissions."""
    tables = _settings(args)[1]
    con = _connect(args.dir / "tables.duckdb", read_only=True)
    forms, counts = _all_forms(args)
    for form_id, schemas in forms:
        for cols in [None, FIVE] if form_id == BIG else [None]:
            a = read_form(tables, form_id, schemas, cols)
            for b in (duck_read(con, form_id, schemas, cols, arrow) for arrow in (False, True)):
                pd.testing.assert_frame_equal(a.table, b.table)
                for rep in {*a.repeats, *b.repeats}:
                    pd.testing.assert_frame_equal(a.repeats[rep], b.repeats[rep])
            if len(a.table) != counts[form_id]:
                raise SystemExit(f"{form_id}: {len(a.table):,} rows, the store has {counts[form_id]:,}")  # fmt: skip
    return {"forms": len(forms), "rows": sum(counts.values())}


def step_changes(args) -> dict:
    """Write ``--new`` new, ``--edit`` edited and ``--delete`` deleted submissions, spread
    over the forms by their share, into the store (new ones as benchmarks/report.py's
    refresh makes them; an edit moves ``end``; a deletion is a row the server no longer has)."""
    from geo.illustrative import illustrative_boundaries
    from geo.villages import load_villages
    from pipelines.analysis.rosters import load_rosters
    from pipelines.records import now_utc

    settings = _settings(args)[0]
    villages = load_villages(settings.villages)
    rosters = load_rosters(settings.roster_path, [v.code for v in villages])
    gen = bench._Gen(rosters, villages, illustrative_boundaries(villages), seed=int(time.time()))
    rng, run, stamp = random.Random(), uuid.uuid4().hex[:8], now_utc()
    forms, shares = list(bench.WEIGHTS), list(bench.WEIGHTS.values())
    edits, deletes = rng.choices(forms, shares, k=args.edit), rng.choices(forms, shares, k=args.delete)  # fmt: skip
    with open_store(settings) as store:
        for form, share in zip(forms, shares, strict=True):
            count = round(args.new * share)  # the generator's resends left out: exactly --new
            made = list(gen.records(form, count, load_schema(settings.build_dir, form).version))
            new = [replace(r, instance_id=f"{r.instance_id}-{run}") for r in made[:count]]
            n_edit, n_delete = edits.count(form), deletes.count(form)
            ids = rng.sample(store.changes(form).instance_ids, 3 * (n_edit + n_delete) + 3)
            live = [r for r in store.records_by_id(form, ids).records if not r.deleted]
            edited = [replace(r, updated_at=stamp, source_version=f"edit-{run}",
                              data={**r.data, "end": f"{r.data.get('today')}T10:00:00.000+08:00"})
                      for r in live[:n_edit]]  # fmt: skip
            gone = [r.instance_id for r in live[n_edit : n_edit + n_delete]]
            store.write_page("demo", form, [*new, *edited], gone=gone)
    return {}


def step_duck_hold(args) -> dict:
    """Hold the DuckDB file open to write (a pull writing) until told to stop on stdin."""
    con = _connect(args.dir / "tables.duckdb")
    print("ready", flush=True)
    sys.stdin.readline()
    con.close()
    return {}


STEPS = {n.removeprefix("step_"): fn for n, fn in globals().items() if n.startswith("step_")}
STEPS |= {"build_duckdb": lambda a: _duck(a, duck_build), "update_duckdb": lambda a: _duck(a, duck_update),
          "read_duckdb_arrow": lambda a: step_read_duckdb(a, arrow=True)}  # fmt: skip


def _cmd(args, step: str, *extra: str) -> list[str]:
    return [sys.executable, __file__, "--child", step, "--store", str(args.store), "--dir", str(args.dir), *extra]  # fmt: skip


def _run(args, step: str, *extra: str) -> dict:
    done = subprocess.run(_cmd(args, step, *extra), capture_output=True, text=True, check=False)
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"step {step} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _size_mb(args) -> tuple[float, float]:
    """(the Parquet tables' folder, the DuckDB file and its WAL) in MB."""
    sizes = [(args.dir / "parquet" / "tables").rglob("*"), args.dir.glob("tables.duckdb*")]
    return tuple(sum(p.stat().st_size for p in ps if p.is_file()) / 2**20 for ps in sizes)


def _two_processes(args) -> list[str]:
    """DuckDB: one process holds the file to write, another tries to open it. Parquet: after
    100 new submissions, two catch-ups (a pull's, the refresher's) and a reader at once."""
    hold = subprocess.Popen(_cmd(args, "duck_hold"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    hold.stdout.readline()  # "ready": the file is held
    tried = {}
    for mode, read_only in (("write", False), ("read", True)):  # from this (another) process
        try:
            _connect(args.dir / "tables.duckdb", read_only).close()
            tried[mode] = "ok"
        except Exception as e:  # the failure is the figure
            text = str(e).splitlines()[0].replace(str(args.dir / "tables.duckdb"), "tables.duckdb")
            tried[mode] = text.split(" in /")[0]  # without the holder's program path
    hold.communicate("stop\n")
    _run(args, "changes", "--new", "100", "--edit", "0", "--delete", "0")
    steps = ("update_parquet", "update_parquet", "read_parquet")
    procs = [subprocess.Popen(_cmd(args, s), stdout=subprocess.PIPE, text=True) for s in steps]
    outs = [p.communicate()[0] for p in procs]
    rows = [json.loads(o.strip().splitlines()[-1])["rows"] if p.returncode == 0 else f"exit {p.returncode}" for o, p in zip(outs, procs, strict=True)]  # fmt: skip
    _run(args, "update_duckdb")
    check = _run(args, "check")
    return [
        f"DuckDB, while one process holds the file to write: another writer → {tried['write']}",
        f"                                                   a reader → {tried['read']}",
        f"Parquet, 2 catch-ups + 1 reader started together: rows caught up, up, read: {rows}",
        f"then both sides equal again for all {check['forms']} forms ({check['rows']:,} rows)",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--store", type=Path, required=True, help="a folder benchmarks/report.py --dir built")  # fmt: skip
    ap.add_argument("--dir", type=Path, required=True, help="work folder (emptied first)")
    ap.add_argument("--child", choices=sorted(STEPS), help=argparse.SUPPRESS)
    ap.add_argument("--times", type=int, default=3, help="runs of (b) and (c); medians shown")
    for flag, default in (("--new", 1000), ("--edit", 100), ("--delete", 10)):
        ap.add_argument(flag, type=int, default=default, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        out = STEPS[args.child](args)
        out["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB
        print(json.dumps(out), flush=True)
        return
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    rows = []

    def pair(what: str, sides: tuple[str, str], times: int = 1, before: tuple = (), key: str = "s") -> list[dict]:  # fmt: skip
        """Each side ``times`` times, back to back (``before`` run first each time): the
        median time and the highest peak of each side."""
        runs = []
        for _ in range(times):
            if before:
                _run(args, *before)
            runs.append([_run(args, s) for s in sides])
        got = [{"s": statistics.median(r[i][key] for r in runs), "peak_mb": max(r[i]["peak_mb"] for r in runs),
                "rows": runs[0][i].get("rows"), "duckdb_s": runs[0][i].get("duckdb_s")} for i in range(2)]  # fmt: skip
        rows.append((what, got[0]["s"], got[0]["peak_mb"] if key == "s" else "", got[1]["s"], got[1]["peak_mb"] if key == "s" else ""))  # fmt: skip
        print(f"  {what}: Parquet {got[0]['s']:.2f} s, DuckDB {got[1]['s']:.2f} s", flush=True)
        return got

    built = pair("(a) build every form from the store", ("build_parquet", "build_duckdb"))
    disk = [("(d) disk after (a), MB", *_size_mb(args))]
    n = args.times
    upd = pair(f"(b) update 1,000 new/100 edited/10 deleted ×{n}", ("update_parquet", "update_duckdb"), n, ("changes",))  # fmt: skip
    disk.append(("(d) disk after (b), MB", *_size_mb(args)))
    check = _run(args, "check")
    for sides, how in ((("read_parquet", "read_duckdb"), ".df()"), (("read_parquet", "read_duckdb_arrow"), "Arrow")):  # fmt: skip
        pair(f"(c) read every form, all columns ×{n}, {how}", sides, n)
        pair(f"(c) read {BIG}, 5 columns ×{n}, {how}", sides, n, key="five_s")
    print(f"\n{built[0]['rows']:,} / {built[1]['rows']:,} submissions built (DuckDB's INSERTs and "
          f"checkpoint: {built[1]['duckdb_s']:.1f} s of its {built[1]['s']:.1f} s; the rest is the "
          f"store and tidy, as on the Parquet side); each update read {upd[0]['rows']:,} / "
          f"{upd[1]['rows']:,} again; check: both sides equal for all {check['forms']} forms and "
          f"the 5 columns ({check['rows']:,} rows). Times: medians; peak: highest.\n")  # fmt: skip
    print(f"{'step':<48} {'Parquet s':>9} {'peak MB':>8} {'DuckDB s':>9} {'peak MB':>8}")
    for what, ps, pm, ds, dm in rows:
        print(f"{what:<48} {ps:>9.2f} {pm:>8} {ds:>9.2f} {dm:>8}")
    for what, p, d in disk:
        print(f"{what:<48} {p:>9.1f} {'':>8} {d:>9.1f}")
    print("\n(d) two processes at once:\n  " + "\n  ".join(_two_processes(args)))


if __name__ == "__main__":
    main()
