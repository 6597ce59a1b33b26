"""The monthly dispatch report (月调度通报), in two editions, each as HTML and XLSX.

- the public edition (公开版), for the WeChat account: aggregates only; no follow-up item, no
  free text and no roster field reaches it;
- the internal edition (内部版) adds the liaison groups, the overdue follow-ups (already
  masked when they were made) and the data checks.

The HTML is rendered from ``templates/dispatch.html.j2`` by Jinja2 with autoescape on, and every
``{{ … }}`` goes through :func:`pipelines.reports.spreadsheets.shown_text`; the charts are inline
SVG built from escaped text. Before any data exists the report still renders, saying 暂无数据.
On a phone (below 600 px) every table turns into cards, each cell labelled by its column; the
page has no script and no style attribute. :mod:`pipelines.reports.scoped` cuts the internal
edition to some villages for the portal, through :func:`dispatch_context`.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup, escape

from pipelines.analysis import followups as fu
from pipelines.analysis.checks import Checks
from pipelines.analysis.indicators import DONE, LAGGING, ON_TRACK, OVERDUE, Progress
from pipelines.analysis.plan import Indicator
from pipelines.config import SHANGHAI
from pipelines.reports._inputs import NO_DATA, QUARANTINE_LABEL, Inputs
from pipelines.reports.spreadsheets import (
    gc_paused,
    new_workbook,
    save_workbook,
    shown_text,
    write_sheet,
    writing,
)

EDITIONS = {"public": "公开版", "internal": "内部版"}
BEHIND = (LAGGING, OVERDUE)
STATUS_COLOURS = {DONE: "#1a9850", ON_TRACK: "#66bd63", LAGGING: "#f46d43", OVERDUE: "#d73027"}
# Colours go through classes, never a style attribute: the portal's CSP allows no inline style.
STATUS_CLASSES = {DONE: "s-done", ON_TRACK: "s-ok", LAGGING: "s-lag", OVERDUE: "s-late"}
_TEMPLATES = Path(__file__).with_name("templates")


def _finalize(value: object) -> object:
    # Jinja calls this on every {{ … }} before escaping; our own SVG (Markup) is left as built.
    if isinstance(value, str) and not isinstance(value, Markup):
        return shown_text(value)
    return value


_ENV = Environment(
    loader=FileSystemLoader(_TEMPLATES),
    autoescape=True,  # every user text is escaped; only our own SVG is marked safe
    trim_blocks=True,
    lstrip_blocks=True,
    finalize=_finalize,
)
_CN_NUM = "一二三四五六七八九十"


@gc_paused
def write_dispatch(settings, data: Inputs, as_of: date, progress: Progress, previous: Progress | None, items: pd.DataFrame, checks: Checks, report_dir: Path) -> dict[str, Path]:  # fmt: skip
    """Write both editions, HTML and XLSX, into ``report_dir``; ``previous`` is the progress at
    the end of the previous month (None in January), for "completed this month"."""
    month = f"{as_of:%Y-%m}"
    files: dict[str, Path] = {}
    for edition, label in EDITIONS.items():
        context = dispatch_context(settings, data, as_of, progress, previous, items, checks, edition)  # fmt: skip
        html = report_dir / f"月调度通报_{month}_{label}.html"
        page = render_html(context)
        with writing(html):
            html.write_text(page, encoding="utf-8")
        xlsx = report_dir / f"月调度通报_{month}_{label}.xlsx"
        write_xlsx(context, xlsx)
        files[f"dispatch_{edition}_html"], files[f"dispatch_{edition}_xlsx"] = html, xlsx
    return files


def render_html(context: dict) -> str:
    """The report page of a :func:`dispatch_context` (one self-contained HTML file: inline CSS
    and SVG, no script, no style attribute, so a strict CSP needs only the style's hash)."""
    return _ENV.get_template("dispatch.html.j2").render(**context)


# --- formatting ----------------------------------------------------------------------------------


def _is_share(ind: Indicator) -> bool:
    return ind.measure in ("rate", "reduction", "weekly") or ind.unit == "rate"


def _fmt(ind: Indicator, x: object) -> str:
    if x is None or pd.isna(x):  # type: ignore[arg-type]
        return NO_DATA
    value = float(x)  # type: ignore[arg-type]
    if _is_share(ind):
        return f"{value:.1%}"
    if ind.measure == "mean":
        return f"{value:.2f} 分"
    return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"


def _day(d: object) -> str:
    if d is None or pd.isna(d):  # type: ignore[arg-type]
        return "—"
    d = pd.Timestamp(d)  # type: ignore[arg-type]
    return f"{d.month}月{d.day}日"


def _blank(x: object) -> object:
    return "" if x is None or (not isinstance(x, str) and pd.isna(x)) else x  # type: ignore[arg-type]


def _completion(value: float, target: float) -> float:
    if pd.isna(value) or pd.isna(target) or target <= 0:
        return np.nan
    return max(0.0, float(value) / float(target))


def _status_text(status: object, value: object, target: object) -> str:
    if pd.isna(target):  # type: ignore[arg-type]
        return "—"  # no target in the plan: shown for information
    if pd.isna(value) or not isinstance(status, str):  # type: ignore[arg-type]
        return NO_DATA  # e.g. no one on the roster yet: nothing to judge
    return status


def _assessable(table: pd.DataFrame) -> pd.Series:
    # A village with no one on the roster, or no finding to clear, has no rate: nothing to chase.
    return table["status"].isin(BEHIND) & table["value"].notna() & table["target"].notna()


# --- the dispatch report -------------------------------------------------------------------------


def dispatch_context(settings, data: Inputs, as_of: date, progress: Progress, previous: Progress | None, items: pd.DataFrame, checks: Checks, edition: str) -> dict:  # fmt: skip
    """Everything one edition shows, for :func:`render_html` and :func:`write_xlsx`. It shows
    what it is given: :mod:`pipelines.reports.scoped` cuts the inputs to a scope first."""
    plan = data.plan
    internal = edition == "internal"
    town = progress.level("town").set_index("indicator_id")
    prev = previous.level("town").set_index("indicator_id") if previous is not None else None
    month_start = as_of.replace(day=1)
    next_month_end = (pd.Timestamp(month_start) + pd.offsets.MonthEnd(2)).date()

    rows: list[dict] = []
    for ind in plan.indicators:
        if ind.id not in town.index:
            continue
        r = town.loc[ind.id]
        before = prev.loc[ind.id] if prev is not None and ind.id in prev.index else None
        value, target = r["value"], r["target"]
        change = ""
        if before is not None and not pd.isna(value) and not pd.isna(before["value"]):
            delta = float(value) - float(before["value"])
            if _is_share(ind):
                change = f"{delta * 100:+.1f} 个百分点" if abs(delta) > 1e-9 else "持平"
            elif ind.measure == "mean":
                change = f"{delta:+.2f} 分" if abs(delta) > 1e-9 else "持平"
            else:
                change = f"+{_fmt(ind, delta)}" if delta > 0 else ("持平" if delta == 0 else _fmt(ind, delta))  # fmt: skip
        elif before is None and not pd.isna(value) and not _is_share(ind) and ind.measure != "mean":
            change = f"+{_fmt(ind, value)}" if float(value) > 0 else "持平"
        rows.append({
            "id": ind.id, "domain_key": ind.domain, "domain": plan.domains.get(ind.domain, ind.domain),
            "label": ind.label, "value": value, "target": target, "expected": r["expected"],
            "value_text": _fmt(ind, value),
            "target_text": "—" if pd.isna(target) else _fmt(ind, target),
            "expected_text": "—" if pd.isna(r["expected"]) or ind.pace == "none" else _fmt(ind, r["expected"]),
            "completion": _completion(value, target),
            "expected_ratio": _completion(r["expected"], target),
            "status": _status_text(r["status"], value, target),
            "raw_status": r["status"] if isinstance(r["status"], str) and not pd.isna(value) else None,
            "deadline": r["deadline"], "deadline_text": _day(r["deadline"]),
            "department": plan.departments.get(ind.department, ind.department),
            "change": change,
            "done_this_month": r["status"] == DONE and (before is None or before["status"] != DONE),
            "indicator": ind,
        })  # fmt: skip

    domains = []
    for key, name in plan.domains.items():
        drows = [r for r in rows if r["domain_key"] == key and key != "satisfaction"]
        if not drows:
            continue
        charted = [r for r in drows if not pd.isna(r["target"])]
        domains.append({"name": name, "rows": drows, "chart": _chart(name, charted)})

    with_target = [r for r in rows if not pd.isna(r["target"])]
    tally = {s: sum(r["raw_status"] == s for r in with_target) for s in (DONE, ON_TRACK, LAGGING, OVERDUE)}  # fmt: skip
    unjudged = len(with_target) - sum(tally.values())
    if unjudged:
        tally[NO_DATA] = unjudged
    done_now = [r for r in rows if r["done_this_month"]]

    villages = progress.level("village")
    behind_v = villages[_assessable(villages)]
    group_of = {v.code: v.liaison_group for v in data.villages}
    names = {v.code: v.name for v in data.villages}
    label_of = {i.id: i.label for i in plan.indicators}
    lagging_villages = []
    for code, g in behind_v.groupby("key", sort=False):
        lagging_villages.append({
            "group": f"第{group_of.get(code, '?')}组", "village": names.get(code, code), "code": code,
            "n": len(g), "overdue": int((g["status"] == OVERDUE).sum()),
            "labels": "、".join(label_of.get(i, i) for i in g["indicator_id"]),
        })  # fmt: skip
    lagging_villages.sort(key=lambda r: (-r["n"], r["code"]))
    depts = progress.level("department")
    behind_d = depts[_assessable(depts)]
    lagging_departments = [
        {"department": label, "n": len(g), "labels": "、".join(label_of.get(i, i) for i in g["indicator_id"])}
        for label, g in behind_d.groupby("key_label", sort=True)
    ]  # fmt: skip
    lagging_departments.sort(key=lambda r: -r["n"])

    workload = []
    for form_id in sorted(data.forms):
        form = data.forms[form_id]
        date_field = next((i.date_field for i in plan.indicators if i.form == form_id), None)
        if date_field is None or date_field not in form.table.columns:
            continue
        day = pd.to_datetime(form.table[date_field], errors="coerce")
        upto = day <= pd.Timestamp(as_of)
        this_month = upto & (day >= pd.Timestamp(month_start))
        workload.append({"form": form.schema.title or form_id, "month": int(this_month.sum()), "total": int(upto.sum())})  # fmt: skip

    satisfaction = [
        {"label": r["label"].split("：")[-1].replace("（1–5）", ""), "value_text": r["value_text"],
         "n": int(town.loc[r["id"], "denominator"]) if not pd.isna(town.loc[r["id"], "denominator"]) else 0}
        for r in rows if r["indicator"].measure == "mean"
    ]  # fmt: skip
    suggestions = next((r["value_text"] for r in rows if r["id"] == "suggestions_follow_up"), "0")

    open_items = len(items)
    overdue_items = int((items["state"] == fu.OVERDUE).sum()) if open_items else 0
    by_kind = (
        items.groupby("kind", sort=False)
        .agg(n=("kind", "size"), overdue=("state", lambda s: int((s == fu.OVERDUE).sum())))
        .reset_index()
        .to_dict("records")
        if open_items
        else []
    )

    heading = plan.name if plan.name.startswith(settings.town) else settings.town + plan.name
    steps = _next_steps(rows, as_of, next_month_end, lagging_villages, open_items, overdue_items, satisfaction, data)  # fmt: skip
    context = {
        "title": f"{heading}月调度通报（{as_of.year}年{as_of.month}月·{EDITIONS[edition]}）",
        "heading_name": heading,
        "town": settings.town, "plan_name": plan.name, "edition": edition,
        "edition_label": EDITIONS[edition], "internal": internal,
        "month_label": f"{as_of.year}年{as_of.month}月", "as_of": as_of,
        "as_of_label": f"{as_of.year}年{as_of.month}月{as_of.day}日",
        "generated": datetime.now(SHANGHAI).strftime("%Y-%m-%d %H:%M"),
        "notes": data.notes, "domain_names": plan.domains,
        "empty": not any(data.counts.values()), "no_data": NO_DATA,
        "tally": tally, "indicator_count": len(with_target), "domains": domains,
        "done_now": done_now, "changes": [r for r in rows if r["change"] and r["domain_key"] != "satisfaction"],
        "workload": workload, "lagging_villages": lagging_villages,
        "lagging_departments": lagging_departments, "satisfaction": satisfaction,
        "suggestions": suggestions, "open_items": open_items, "overdue_items": overdue_items,
        "items_by_kind": by_kind, "steps": steps, "status_colours": STATUS_COLOURS,
        "status_classes": STATUS_CLASSES, "rows": rows, "numerals": _CN_NUM,
        "scope": None, "scope_villages": [], "data_as_of": None,  # set by pipelines.reports.scoped
    }  # fmt: skip
    if internal:
        context.update(_internal_context(data, progress, items, checks))
    return context


def _internal_context(data: Inputs, progress: Progress, items: pd.DataFrame, checks: Checks) -> dict:  # fmt: skip
    villages = progress.level("village")
    group_of = {v.code: v.liaison_group for v in data.villages}
    villages = villages.assign(group=villages["key"].map(group_of))
    behind = villages[_assessable(villages)]
    groups = []
    for g in sorted({v.liaison_group for v in data.villages}):
        name = f"第{g}组"
        mine = items[items["liaison_group"] == name] if len(items) else items
        groups.append({
            "group": name,
            "villages": sum(v.liaison_group == g for v in data.villages),
            "behind": int((behind["group"] == g).sum()),
            "lagging_villages": int(behind.loc[behind["group"] == g, "key"].nunique()),
            "open": len(mine), "overdue": int((mine["state"] == fu.OVERDUE).sum()) if len(mine) else 0,
        })  # fmt: skip
    town_items = items[items["liaison_group"] == fu.TOWN_GROUP] if len(items) else items
    if len(town_items):
        groups.append({
            "group": fu.TOWN_GROUP, "villages": 0, "behind": 0, "lagging_villages": 0,
            "open": len(town_items), "overdue": int((town_items["state"] == fu.OVERDUE).sum()),
        })  # fmt: skip
    late = items[items["state"] == fu.OVERDUE] if len(items) else items
    late = late.sort_values("overdue_days", ascending=False, kind="stable").head(50)
    overdue_list = [
        {"group": r.liaison_group, "village": r.village, "kind": r.kind, "subject": _blank(r.subject),
         "content": _blank(r.content), "deadline": _day(r.deadline), "days": int(r.overdue_days),
         "department": r.department, "item": r.Index, "photo": None}
        for r in late.itertuples()
    ]  # fmt: skip
    titles = {fid: f.schema.title or fid for fid, f in data.forms.items()}
    held = data.quarantine.groupby("form", sort=True).size() if len(data.quarantine) else {}
    quality = [{"form": form, "check": QUARANTINE_LABEL, "rows": int(n)} for form, n in dict(held).items()]  # fmt: skip
    quality += [
        {"form": titles.get(r.form_id, r.form_id), "check": r.check_label, "rows": int(r.rows)}
        for r in checks.summary().itertuples(index=False)
    ]
    return {
        "groups": groups,
        "overdue_list": overdue_list,
        "overdue_total": len(items[items["state"] == fu.OVERDUE]) if len(items) else 0,
        "quality": quality,
        "quality_total": len(checks.table) + len(data.quarantine),
        "village_rows": villages,
    }


def village_progress(data: Inputs, progress: Progress) -> list[dict]:
    """Each register village of ``data`` with its indicators that have a target: name, group,
    rows (label, value, target, status) and a tally by status; for a scoped report."""
    inds = {i.id: i for i in data.plan.indicators}
    table = progress.level("village")
    table = table[table["target"].notna() & table["indicator_id"].isin(inds)]
    mine = dict(tuple(table.groupby("key", sort=False)))
    out = []
    for v in data.villages:
        g = mine.get(v.code, table.iloc[0:0])
        rows = [
            {"label": r.label, "value_text": _fmt(inds[r.indicator_id], r.value),
             "target_text": _fmt(inds[r.indicator_id], r.target),
             "status": _status_text(r.status, r.value, r.target)}
            for r in g.itertuples(index=False)
        ]  # fmt: skip
        tally = {s: sum(r["status"] == s for r in rows) for s in (DONE, ON_TRACK, LAGGING, OVERDUE, NO_DATA)}  # fmt: skip
        out.append({"name": v.name, "code": v.code, "group": f"第{v.liaison_group}组", "rows": rows,
                    "tally": {s: n for s, n in tally.items() if n}})  # fmt: skip
    return out


def _next_steps(rows: list[dict], as_of: date, horizon: date, lagging_villages: list[dict], open_items: int, overdue_items: int, satisfaction: list[dict], data: Inputs) -> list[str]:  # fmt: skip
    steps: list[str] = []
    if not any(data.counts.values()):
        steps.append(
            f"{NO_DATA}：请各责任部门按表单开展工作并及时提交，镇服务专班同步数据后再行通报。"
        )
    order = {OVERDUE: 0, LAGGING: 1}
    behind = sorted(
        (r for r in rows if r["raw_status"] in order),
        key=lambda r: (order[r["raw_status"]], r["deadline"] or date.max),
    )
    for r in behind:
        if r["raw_status"] == OVERDUE:
            steps.append(
                f"【{r['department']}】{r['label']}：目前 {r['value_text']}，目标 {r['target_text']}，"
                f"已超过{_day(r['deadline'])}的完成期限，须立即整改、尽快完成。"
            )
        else:
            expected = f"，按时序应达到 {r['expected_text']}" if r["expected_text"] != "—" else ""
            steps.append(
                f"【{r['department']}】{r['label']}：目前 {r['value_text']}{expected}，"
                f"目标 {r['target_text']}（{_day(r['deadline'])}前），须加快进度。"
            )
    for r in rows:
        d = r["deadline"]
        if (
            r["raw_status"] == ON_TRACK
            and d is not None
            and not pd.isna(d)
            and as_of < d <= horizon
        ):
            steps.append(
                f"【{r['department']}】{r['label']}将于{_day(d)}到期，目前 {r['value_text']}，"
                f"目标 {r['target_text']}，请抓紧推进。"
            )
    if lagging_villages:
        steps.append(
            f"{len(lagging_villages)} 个村存在滞后指标，请各帮包联系组逐村督导，下次调度前报送进展。"
        )
    if open_items:
        steps.append(
            f"待跟进事项 {open_items} 项（其中逾期 {overdue_items} 项），请各帮包联系组按跟进清单逐项销号。"
        )
    scored = [s for s in satisfaction if s["n"] and s["value_text"] != NO_DATA]
    if scored:
        low = min(scored, key=lambda s: float(s["value_text"].split()[0]))
        steps.append(
            f"群众满意度调查中“{low['label']}”得分最低（{low['value_text']}），请责任部门分析原因、改进工作。"
        )
    if not steps:
        steps.append("各项工作按计划推进，请各责任部门保持进度。")
    return steps


def _chart(title: str, rows: list[dict]) -> Markup:
    """Horizontal bars of completion against target, with the pace mark: inline SVG.

    Every text goes through :func:`markupsafe.escape`; the result is marked safe only
    because it is built here.
    """
    if not rows:
        return Markup("")
    width, bar_w, row_h, top = 360, 292, 44, 6
    height = top + row_h * len(rows) + 4
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}完成进度">',
        f"<title>{escape(title)}完成进度（条形为完成占目标比例，竖线为时序进度要求）</title>",
    ]
    for i, r in enumerate(rows):
        y = top + i * row_h
        label = r["label"] if len(r["label"]) <= 19 else r["label"][:18] + "…"
        ratio = r["completion"]
        fill = STATUS_COLOURS.get(r["raw_status"] or "", "#bdbdbd")
        w = 0.0 if pd.isna(ratio) else min(ratio, 1.0) * bar_w
        out.append(f"<g><title>{escape(r['label'])}：{escape(r['value_text'])} / {escape(r['target_text'])}（{escape(r['status'])}）</title>")  # fmt: skip
        out.append(f'<text x="0" y="{y + 12}" font-size="12">{escape(label)}</text>')
        out.append(f'<rect x="0" y="{y + 17}" width="{bar_w}" height="14" fill="#eeeeee"/>')
        if w > 0:
            out.append(f'<rect x="0" y="{y + 17}" width="{w:.1f}" height="14" fill="{fill}"/>')
        exp = r["expected_ratio"]
        if not pd.isna(exp) and 0 < exp < 1 and r["indicator"].pace != "none":
            x = exp * bar_w
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y + 14}" y2="{y + 34}" stroke="#333" stroke-width="2"/>')  # fmt: skip
        pct = NO_DATA if pd.isna(ratio) else f"{ratio:.0%}"
        out.append(f'<text x="{width}" y="{y + 28}" font-size="11" text-anchor="end">{escape(pct)}</text>')  # fmt: skip
        out.append("</g>")
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 (built above from escaped text and numbers)


@gc_paused
def write_xlsx(ctx: dict, path: Path) -> Path:
    """The report workbook of a :func:`dispatch_context` at ``path``."""
    wb = new_workbook()
    overview = [("标题", ctx["title"]), ("统计截止日", ctx["as_of"]), ("版本", ctx["edition_label"]),
                ("生成时间（北京时间）", ctx["generated"]), ("有目标的指标数", ctx["indicator_count"])]  # fmt: skip
    town = "（全镇）" if ctx["scope"] else ""  # a scoped report keeps the town's figures as context
    overview += [(f"{s}{town}", n) for s, n in ctx["tally"].items()]
    overview += [("待跟进事项", ctx["open_items"]), ("其中逾期", ctx["overdue_items"])]
    if ctx["scope"]:
        overview.insert(3, ("范围", ctx["scope"]))
        overview.append(("说明", f"标有“全镇”的表为全镇汇总数据（与公开版相同）；其余各表只含{ctx['scope']}的数据。"))  # fmt: skip
    overview += [("说明", n) for n in ctx["notes"]]
    # no column format: the as-of date shows as a date by itself, and the counts stay numbers
    write_sheet(wb, "概况", pd.DataFrame(overview, columns=["项目", "内容"]))

    rows = ctx["rows"]
    progress = pd.DataFrame(
        {
            "领域": [r["domain"] for r in rows],
            "指标": [r["label"] for r in rows],
            "当前值": [r["value_text"] for r in rows],
            "目标": [r["target_text"] for r in rows],
            "时序进度要求": [r["expected_text"] for r in rows],
            "完成度": [r["completion"] for r in rows],
            "状态": [r["status"] for r in rows],
            "截止日期": [r["deadline"] for r in rows],
            "责任部门": [r["department"] for r in rows],
            "本月变化": [r["change"] for r in rows],
        }
    )
    formats = {"完成度": "0%", "截止日期": "yyyy-mm-dd"}
    (ws,) = write_sheet(wb, f"指标进度{town}", progress, formats, wrap={"指标"})
    if progress["完成度"].notna().any():  # a native Excel chart of the completion column
        chart = wb.workbook.add_chart({"type": "bar"})
        last = len(progress)
        chart.add_series({"name": [ws.name, 0, 5], "categories": [ws.name, 1, 1, last, 1],
                          "values": [ws.name, 1, 5, last, 5]})  # fmt: skip
        chart.set_title({"name": "各项指标完成度（占目标）"})
        chart.set_x_axis({"num_format": "0%", "min": 0})  # a bar chart's values run across
        chart.set_legend({"none": True})
        # 18 cm wide, 0.6 cm a bar (at least 7.5 cm), at 96 dpi
        chart.set_size({"width": round(18 / 2.54 * 96), "height": round(max(7.5, 0.6 * last) / 2.54 * 96)})  # fmt: skip
        ws.insert_chart("L2", chart)

    done = pd.DataFrame(
        {"领域": [r["domain"] for r in ctx["done_now"]], "指标": [r["label"] for r in ctx["done_now"]],
         "当前值": [r["value_text"] for r in ctx["done_now"]], "目标": [r["target_text"] for r in ctx["done_now"]]}
    )  # fmt: skip
    write_sheet(wb, f"本月完成{town}", done if len(done) else pd.DataFrame({"说明": ["本月无新完成的指标"]}))  # fmt: skip
    work = pd.DataFrame(ctx["workload"], columns=["form", "month", "total"]).rename(
        columns={"form": "表单", "month": "本月记录数", "total": "累计记录数"}
    )
    write_sheet(wb, f"本月工作量{town}", work)
    lv = pd.DataFrame(
        ctx["lagging_villages"], columns=["group", "village", "n", "overdue", "labels"]
    )
    lv = lv.rename(columns={"group": "帮包联系组", "village": "村", "n": "滞后指标数", "overdue": "其中逾期", "labels": "指标"})  # fmt: skip
    write_sheet(wb, "滞后村", lv, wrap={"指标"})
    ld = pd.DataFrame(ctx["lagging_departments"], columns=["department", "n", "labels"])
    ld = ld.rename(columns={"department": "责任部门", "n": "滞后指标数", "labels": "指标"})
    write_sheet(wb, f"滞后部门{town}", ld, wrap={"指标"})
    sat = pd.DataFrame(ctx["satisfaction"], columns=["label", "value_text", "n"])
    sat = sat.rename(columns={"label": "领域", "value_text": "平均分（1–5）", "n": "样本数"})
    write_sheet(wb, f"群众满意度{town}", sat)
    steps = pd.DataFrame({"序号": range(1, len(ctx["steps"]) + 1), "下步工作": ctx["steps"]})
    write_sheet(wb, "下步工作", steps, wrap={"下步工作"})
    if ctx["internal"]:
        vr = ctx["village_rows"]
        names = {r["id"]: r for r in ctx["rows"]}
        village = pd.DataFrame(
            {
                "帮包联系组": vr["group"].map(lambda g: f"第{g}组"),
                "村": vr["key_label"],
                "村代码": vr["key"],
                "领域": vr["domain"].map(lambda d: ctx["domain_names"].get(d, d)),
                "指标": vr["label"],
                "当前值": [_fmt(names[i]["indicator"], v) for i, v in zip(vr["indicator_id"], vr["value"], strict=True)],
                "目标": [("—" if pd.isna(t) else _fmt(names[i]["indicator"], t)) for i, t in zip(vr["indicator_id"], vr["target"], strict=True)],
                "状态": [_status_text(s, v, t) for s, v, t in zip(vr["status"], vr["value"], vr["target"], strict=True)],
            }
        )  # fmt: skip
        write_sheet(wb, "村级进度", village, wrap={"指标"})
        groups = pd.DataFrame(ctx["groups"]).rename(
            columns={"group": "帮包联系组", "villages": "村数", "behind": "滞后指标（村次）",
                     "lagging_villages": "有滞后指标的村", "open": "待跟进事项", "overdue": "其中逾期"}
        )  # fmt: skip
        write_sheet(wb, "帮包联系组", groups)
        late = pd.DataFrame(ctx["overdue_list"], columns=["group", "village", "kind", "subject", "content", "deadline", "days", "department"])  # fmt: skip
        late = late.rename(columns={"group": "帮包联系组", "village": "村", "kind": "事项类型", "subject": "对象",
                                    "content": "内容", "deadline": "整改期限", "days": "逾期天数", "department": "责任部门"})  # fmt: skip
        write_sheet(wb, "逾期事项", late, wrap={"内容"})
        quality = pd.DataFrame(ctx["quality"], columns=["form", "check", "rows"])
        quality = quality.rename(columns={"form": "表单", "check": "检查项", "rows": "问题条数"})
        write_sheet(wb, "数据质量", quality)
    save_workbook(wb, path)
    return path
