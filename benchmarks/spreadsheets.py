"""Benchmark: the follow-up list (跟进清单) and the data-quality sheets (数据质量) of a big store,
each written (XLSX and CSV) by the old openpyxl writer and by today's xlsxwriter one, in the
same run, on the same computed results (issue 13: the report's write step ≤ 2.5 s at 1,000,000
submissions).

    .venv/bin/python benchmarks/spreadsheets.py --dir /tmp/bench1m     # a store report.py built
    .venv/bin/python benchmarks/spreadsheets.py --n 100000             # builds one first
    .venv/bin/python benchmarks/spreadsheets.py --dir /tmp/bench1m --compare  # and read both back

The store's tables are read and the follow-up items and the checks computed once (not timed);
then each writer runs ``--rounds`` times, old and new alternating, each time with the masker's
cache emptied, into folders of their own. It prints the median wall and CPU seconds of each
and the file sizes. ``--compare`` reads both workbooks back with openpyxl and says whether
every sheet, cell value, number format and column width is the same (it takes a while).

The old writer is kept here only, as it was before issue 13: openpyxl's write-only workbook,
one ``WriteOnlyCell`` per styled cell and ``_cell_value`` (masking every text) per cell.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# --- the old writer (openpyxl), as it was --------------------------------------------------------


def _old_writers():
    """The old follow-up and quality writers, built on openpyxl (imported only when run)."""
    import numpy as np
    import pandas as pd
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    from pipelines.analysis import followups as fu
    from pipelines.analysis.checks import CHECKS
    from pipelines.reports._inputs import QUARANTINE, QUARANTINE_LABEL
    from pipelines.reports.lists import CLOSED_SHEET, _quarantine_sheet
    from pipelines.reports.spreadsheets import XLSX_MAX_ROWS, shown_text, writing

    head_font, head_fill = Font(bold=True), PatternFill("solid", fgColor="DDEBF7")
    wrapped = Alignment(wrap_text=True, vertical="top")
    csv_formula = ("=", "+", "-", "@", "\t", "\r")

    def cell_value(value):
        if value is None or value is pd.NA or value is pd.NaT:
            return None
        if isinstance(value, float) and np.isnan(value):
            return None
        if isinstance(value, pd.Timestamp):
            return value.to_pydatetime().date() if value == value.normalize() else value.to_pydatetime().replace(tzinfo=None)  # fmt: skip
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, str):
            return shown_text(value)
        return value

    def display_width(text):
        return len(text) + (len(text.encode("utf-8")) - len(text)) // 2

    def widths_of(frame):
        sample = frame.head(2000)
        out = []
        for col in frame.columns:
            texts = [str(col), *(str(v) for v in sample[col] if v is not None and not (isinstance(v, float) and np.isnan(v)))]  # fmt: skip
            out.append(float(min(max(max(display_width(t) for t in texts) + 2, 6), 60)))
        return out

    def sheet_title(title, wb):
        text = re.sub(r"[\[\]:*?/\\]", "_", title)[:31]
        taken = {ws.title for ws in wb.worksheets}
        base, n = text, 2
        while text in taken:
            suffix = f"_{n}"
            text, n = base[: 31 - len(suffix)] + suffix, n + 1
        return text

    def write_sheet(wb, title, frame, formats=None, wrap=()):
        formats, wrap = dict(formats or {}), set(wrap)
        chunks = [frame.iloc[i : i + XLSX_MAX_ROWS] for i in range(0, max(len(frame), 1), XLSX_MAX_ROWS)]  # fmt: skip
        widths = widths_of(frame)
        for n, chunk in enumerate(chunks, start=1):
            ws = wb.create_sheet(sheet_title(title if n == 1 else f"{title}（{n}）", wb))
            for i, w in enumerate(widths, start=1):
                ws.column_dimensions[get_column_letter(i)].width = w
            ws.freeze_panes = "A2"
            ws.print_title_rows = "1:1"
            head = []
            for col in frame.columns:
                c = WriteOnlyCell(ws, value=str(col))
                c.font, c.fill = head_font, head_fill
                head.append(c)
            ws.append(head)
            styled = {i: (formats.get(col), col in wrap) for i, col in enumerate(frame.columns)}
            special = {i for i, (f, w) in styled.items() if f or w}
            for values in chunk.itertuples(index=False, name=None):
                row = []
                for i, v in enumerate(values):
                    v = cell_value(v)
                    if isinstance(v, str) and v.startswith("="):
                        c = WriteOnlyCell(ws, value=v)
                        c.data_type = "s"
                        row.append(c)
                    elif i in special and v is not None:
                        c = WriteOnlyCell(ws, value=v)
                        fmt, wrap_it = styled[i]
                        if fmt:
                            c.number_format = fmt
                        if wrap_it:
                            c.alignment = wrapped
                        row.append(c)
                    else:
                        row.append(v)
                ws.append(row)

    def save_workbook(wb, path):
        buffer = io.BytesIO()
        wb.save(buffer)
        with writing(path):
            path.write_bytes(buffer.getbuffer())

    def csv_text(value):
        if not isinstance(value, str):
            return value
        value = shown_text(value)
        return "'" + value if value.startswith(csv_formula) else value

    def write_csv(frame, path):
        safe = frame.copy()
        for col in safe.columns:
            if pd.api.types.is_object_dtype(safe[col]) or pd.api.types.is_string_dtype(safe[col]):
                safe[col] = safe[col].map(csv_text)
        with writing(path):
            safe.to_csv(path, index=False, encoding="utf-8-sig", lineterminator="\r\n")

    def followups(items, report_dir, as_of, *, closed=None):
        shown = fu.display(items)
        xlsx = report_dir / f"跟进清单_{as_of.isoformat()}.xlsx"
        wb = Workbook(write_only=True)
        wrap = {fu.HEADERS["content"], fu.HEADERS["last_attempt_note"]}
        if shown.empty:
            write_sheet(wb, "跟进清单", shown)
        groups = list(dict.fromkeys(shown[fu.HEADERS["liaison_group"]])) if len(shown) else []
        for g in groups:
            write_sheet(wb, str(g), shown[shown[fu.HEADERS["liaison_group"]] == g], wrap=wrap)
        if closed is not None:
            done = fu.display(closed, fu.CLOSED_HEADERS)
            write_sheet(wb, CLOSED_SHEET, done, wrap={fu.CLOSED_HEADERS[c] for c in ("content", "fix_action")})  # fmt: skip
        save_workbook(wb, xlsx)
        csv = report_dir / f"跟进清单_{as_of.isoformat()}.csv"
        write_csv(shown, csv)
        return xlsx, csv

    headers = {"form": "表单", "instance_id": "记录编号", "repeat_index": "条目序号", "village": "村",
               "village_code": "村代码", "check_label": "检查项", "field": "字段", "reason": "原因"}  # fmt: skip

    def quality(checks, data, report_dir, as_of):
        titles = {fid: f.schema.title or fid for fid, f in data.forms.items()}
        names = {v.code: v.name for v in data.villages}
        table = checks.table.copy()
        table["form"] = table["form_id"].map(lambda f: titles.get(f, f))
        table["village"] = table["village_code"].map(lambda c: names.get(c, c), na_action="ignore")
        table["check_label"] = table["check"].map(CHECKS)
        shown = table[list(headers)].rename(columns=headers)
        held = data.quarantine
        xlsx = report_dir / f"数据质量_{as_of.isoformat()}.xlsx"
        wb = Workbook(write_only=True)
        summary = checks.summary()
        summary = pd.DataFrame({"表单": summary["form_id"].map(lambda f: titles.get(f, f)),
                                "检查项": summary["check_label"], "问题条数": summary["rows"].astype(int)})  # fmt: skip
        if len(held):
            counts = held.groupby("form", sort=True).size()
            summary = pd.concat([pd.DataFrame({"表单": counts.index, "检查项": QUARANTINE_LABEL,
                                               "问题条数": counts.to_numpy(dtype=int)}), summary],
                                ignore_index=True)  # fmt: skip
        if summary.empty:
            summary = pd.DataFrame({"表单": ["全部表单"], "检查项": ["—"], "问题条数": [0]})
        write_sheet(wb, "汇总", summary)
        if len(held):
            write_sheet(wb, QUARANTINE, _quarantine_sheet(held), wrap={"原因"})
        for form_id in sorted(table["form_id"].unique()):
            part = shown[table["form_id"].to_numpy() == form_id]
            write_sheet(wb, titles.get(form_id, form_id), part, wrap={"原因"})
        save_workbook(wb, xlsx)
        csv = report_dir / f"数据质量_{as_of.isoformat()}.csv"
        if len(held):
            rows = pd.DataFrame({"表单": held["form"], "记录编号": held["key"], "检查项": QUARANTINE_LABEL,
                                 "原因": held["source"].map(lambda s: f"[{s}] " if s else "") + held["reason"]})  # fmt: skip
            shown = pd.concat([rows.reindex(columns=shown.columns), shown], ignore_index=True)
        write_csv(shown, csv)
        return xlsx, csv

    return followups, quality


# --- the run --------------------------------------------------------------------------------------


def _results(work: Path):
    """The store's tables read, the checks and the follow-up book computed (not timed)."""
    from benchmarks.report import AS_OF, YEAR, _settings
    from pipelines.analysis import followups as fu
    from pipelines.analysis.checks import check_forms
    from pipelines.reports._inputs import load_inputs

    settings = _settings(work)
    data = load_inputs(settings)
    rosters = data.rosters if data.rosters_known else None
    checks = check_forms(data.forms, as_of=AS_OF, year=YEAR, villages=data.villages,
                         boundaries=data.boundaries, rosters=rosters,
                         gps_accuracy_m=settings.gps_accuracy_m, senders=data.senders)  # fmt: skip
    book = fu.follow_up_book(data.forms, as_of=AS_OF, year=YEAR, plan=data.plan,
                             villages=data.villages, rosters=rosters, senders=data.senders)  # fmt: skip
    return data, checks, book, AS_OF


def _timed(run) -> tuple[float, float, tuple[Path, Path]]:
    from pipelines.reports.spreadsheets import shown_text

    shown_text.cache_clear()  # each side masks from scratch
    wall, cpu = time.perf_counter(), time.process_time()
    files = run()
    return time.perf_counter() - wall, time.process_time() - cpu, files


def _same(old: Path, new: Path) -> list[str]:
    """Where two workbooks differ as openpyxl reads them (empty: nowhere)."""
    from openpyxl import load_workbook

    a, b = load_workbook(old), load_workbook(new)
    if a.sheetnames != b.sheetnames:
        return [f"sheets {a.sheetnames} != {b.sheetnames}"]
    out = []
    for name in a.sheetnames:
        x, y = a[name], b[name]
        if (x.freeze_panes, x.print_title_rows) != (y.freeze_panes, y.print_title_rows):
            out.append(f"{name}: frozen/print titles differ")

        def widths(ws):
            return {i: d.width for d in ws.column_dimensions.values() if d.width and d.min for i in range(d.min, d.max + 1)}  # fmt: skip

        if widths(x) != widths(y):
            out.append(f"{name}: column widths differ")
        for rx, ry in zip(x.iter_rows(), y.iter_rows(), strict=True):
            for cx, cy in zip(rx, ry, strict=True):
                if (cx.value, cx.value is not None and cx.number_format, cx.font.b, cx.alignment.wrap_text) != (
                    cy.value, cy.value is not None and cy.number_format, cy.font.b, cy.alignment.wrap_text,
                ):  # fmt: skip
                    out.append(f"{name}!{cx.coordinate}: {cx.value!r} != {cy.value!r}")
                    break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--dir", type=Path, help="a folder benchmarks/report.py --dir built (default: build one)")  # fmt: skip
    ap.add_argument("--n", type=int, default=100_000, help="submissions to build when no --dir")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each writer (median shown)")
    ap.add_argument("--compare", action="store_true", help="read both workbooks back and compare")
    args = ap.parse_args()
    from benchmarks import report
    from pipelines.reports.lists import write_followup_lists, write_quality_sheets

    scratch = Path(tempfile.mkdtemp(prefix="manyi-bench-xlsx-"))
    try:
        work = args.dir
        if work is None:
            work = scratch / "store"
            print(f"building a store of {args.n:,} submissions in {work} (set-up, not timed)", flush=True)  # fmt: skip
            report.build(work, args.n)
        data, checks, book, as_of = _results(work)
        print(f"{len(book.open):,} open follow-up items, {len(book.closed):,} closed, "
              f"{len(checks.table):,} flagged rows (read and computed, not timed)", flush=True)  # fmt: skip
        old_followups, old_quality = _old_writers()
        sides = {
            "follow-up list": {
                "old (openpyxl)": lambda out: old_followups(
                    book.open, out, as_of, closed=book.closed
                ),
                "new (xlsxwriter)": lambda out: write_followup_lists(
                    book.open, out, as_of, closed=book.closed
                ),
            },
            "quality sheets": {
                "old (openpyxl)": lambda out: old_quality(checks, data, out, as_of),
                "new (xlsxwriter)": lambda out: write_quality_sheets(checks, data, out, as_of),
            },
        }
        files: dict[tuple[str, str], tuple[Path, Path]] = {}
        for what, writers in sides.items():
            times: dict[str, list[tuple[float, float]]] = {side: [] for side in writers}
            for _ in range(args.rounds):
                for side, run in writers.items():  # old and new back to back, each round
                    out = scratch / side.split()[0]
                    out.mkdir(exist_ok=True)
                    wall, cpu, files[what, side] = _timed(lambda run=run, out=out: run(out))
                    times[side].append((wall, cpu))
            print(f"{what}:")
            for side, runs in times.items():
                xlsx, csv = files[what, side]
                print(f"  {side:17} {statistics.median(w for w, _ in runs):5.2f} s "
                      f"(CPU {statistics.median(c for _, c in runs):5.2f} s)  "
                      f"xlsx {xlsx.stat().st_size / 1e6:5.2f} MB, csv {csv.stat().st_size / 1e6:5.2f} MB")  # fmt: skip
            if args.compare:
                (old_x, old_c), (new_x, new_c) = files[what, "old (openpyxl)"], files[what, "new (xlsxwriter)"]  # fmt: skip
                diffs = _same(old_x, new_x)
                same_csv = old_c.read_bytes() == new_c.read_bytes()
                print(f"  read back: xlsx {'the same' if not diffs else 'DIFFERENT: ' + '; '.join(diffs[:5])}, "
                      f"csv {'byte for byte the same' if same_csv else 'DIFFERENT'}")  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
