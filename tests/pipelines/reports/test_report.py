"""``write_report`` end to end: a real SQLite store → every output file, read back and checked.

The rosters hold real-looking (but invented) names, ID numbers with valid check digits and
mobile numbers, so the scans for unmasked personal data can actually fail.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import load_workbook

from forms.build import build_forms
from forms.schema import load_schema
from geo.illustrative import illustrative_boundaries
from geo.villages import load_villages
from pipelines.analysis.privacy import find_unmasked
from pipelines.analysis.rosters import Rosters, id_check_digit, validate_roster, write_rosters
from pipelines.cli import main
from pipelines.config import Settings
from pipelines.errors import DataError
from pipelines.records import Record
from pipelines.reports.report import ReportResult, write_report
from pipelines.store import open_store
from tests.helpers import REPO, VILLAGES

AS_OF = date(2023, 6, 30)
VS = load_villages()
V1, V2, V3 = (v.code for v in VS[:3])  # 龙阳, 闫庄, 大寨: liaison group 1
G2 = next(v for v in VS if v.liaison_group == 2)  # 张沙土
XSS = "<img src=x onerror=alert(1)>"
FORMULA = '=HYPERLINK("http://example.com","点我")'
PILE_PHOTO, HOME_PHOTO = "1686362400000.jpg", "1686189600000.jpg"  # ODK names photos by time


def _id(first17: str) -> str:
    return first17 + id_check_digit(first17)


ZHANG_ID, OUYANG_ID = _id("37048119800101123"), _id("37048119751231456")
WANG_ID, WANG2_ID, LI_ID = _id("37048119600505789"), _id("37048119900909012"), _id("37048119500303345")  # fmt: skip
ZHANG_PHONE, OUYANG_PHONE, LI_PHONE = "13812345678", "15912345670", "13712345670"
FULL_NAMES = [
    "张伟",
    "欧阳娜娜",
    "王芳",
    "王小红",
    "李秀英",
    "张小明",
    "李小红",
    "王小刚",
    "赵小丽",
]
SECRETS = [ZHANG_ID, OUYANG_ID, WANG_ID, WANG2_ID, LI_ID, ZHANG_PHONE, OUYANG_PHONE, LI_PHONE]
SHOW_TITLE = f"柳琴戏专场（联系人 +86 {LI_PHONE[:3]}-{LI_PHONE[3:7]}-{LI_PHONE[7:]}）"


def rosters() -> Rosters:
    codes = [v.code for v in VS]
    frames = {
        "students": pd.DataFrame(
            [(f"stu{i}", name, "s01", "示例小学", V1, "c1", "一年级1班", v)
             for i, (name, v) in enumerate([("张小明", V1), ("李小红", V1), ("王小刚", V2), ("赵小丽", V3)], start=1)],
            columns=["name", "label", "school", "school_label", "school_village", "class", "class_label", "village"],
        ),
        "residents": pd.DataFrame(
            [("res1", "查体对象1", V1, "70", "1", "1", "0", "李秀英", LI_ID, LI_PHONE)],
            columns=["name", "label", "village", "age", "over65", "hypertension", "diabetes", "person_name", "id_number", "phone"],
        ),
        "welfare_posts": pd.DataFrame(
            [("wp1", "公益岗1", V1, "cleaning", "张伟", ZHANG_ID, ZHANG_PHONE),
             ("wp2", "公益岗2", V2, "patrol", "欧阳娜娜", OUYANG_ID, OUYANG_PHONE)],
            columns=["name", "label", "village", "post_type", "person_name", "id_number", "phone"],
        ),
        "dibao_households": pd.DataFrame(
            [("db1", "低保户1", V1, "2")], columns=["name", "label", "village", "members"]
        ),
        "dibao_members": pd.DataFrame(
            [("db1m2", "db1", V1, "家庭成员", "王小红", WANG2_ID), ("db1m1", "db1", V1, "户主", "王芳", WANG_ID)],
            columns=["name", "household", "village", "relation", "person_name", "id_number"],
        ),
    }  # fmt: skip
    return Rosters(**{k: validate_roster(v, k, codes) for k, v in frames.items()})


def gps(code: str) -> str:
    p = illustrative_boundaries(VS).villages.set_index("code").geometry[code].representative_point()
    return f"{p.y} {p.x} 60 5"


def submissions() -> dict[str, list[tuple[str, str, dict]]]:
    """form -> (instance id, day, data). The expected figures are worked out in the tests."""
    visit = lambda iid, st, day, follow=None: (iid, day, {  # noqa: E731
        "subject": {"school": "s01", "class_id": "c1", "student": st, "village": V1},
        "visit": {"visit_date": day, "mode": "home"},
        "result": {"follow_up": "yes" if follow else "no", "follow_up_note": follow}})  # fmt: skip
    show = lambda iid, v, kind, day, title="戏": (iid, day, {"event": {"village": v, "event_type": kind, "event_date": day, "title": title}})  # noqa: E731  # fmt: skip
    road = lambda iid, seg, day, km: (iid, day, {"project": {"segment": seg, "report_date": day}, "progress": {"stage": "surface", "km_done": km}})  # noqa: E731  # fmt: skip
    survey = lambda iid, v, day, score, suggestion=None: (iid, day, {  # noqa: E731
        "where": {"village": v, "survey_date": day},
        "scores": {f"sat_{k}": str(score) for k in ("environment", "security", "medical", "culture", "education", "assistance")},
        "opinion": {"policy_aware": "yes", "needs_follow_up": "yes" if suggestion else "no", "suggestion": suggestion}})  # fmt: skip
    police = lambda iid, month, reported, solved: (iid, month, {  # noqa: E731
        "small_cases": {"month": month, "small_reported": reported, "small_solved": solved},
        "public_criminal": {"public_order_cases": 7, "public_order_cases_ly": 10, "criminal_cases": 2, "criminal_cases_ly": 4},
        "preventable": {"preventable_cases": 1, "preventable_cases_ly": 2}})  # fmt: skip
    return {
        "sanitation_sweep": [
            ("uuid:s1", "2023-06-10", {
                "basic": {"village": V1, "check_date": "2023-06-10", "quarter": "q2", "has_findings": "yes"},
                "findings": [
                    {"kind": "garbage_pile", "status": "to_rectify", "rectify_by": "2023-06-20",
                     "responsible": "张伟", "location": gps(V1), "photo": PILE_PHOTO},
                    {"kind": "weeds", "status": "cleared", "rectify_by": "2023-06-10"},
                ],
                "summary": {"score": 80, "note": f"{XSS} 已通知 {ZHANG_PHONE}"}}),
            ("uuid:s2", "2023-04-05", {
                "basic": {"village": V2, "check_date": "2023-04-05", "quarter": "q2", "has_findings": "no"},
                "summary": {"score": 90}}),
        ],
        "road_progress": [road("uuid:r1", "longling_dongshatu", "2023-05-15", 0.9),
                          road("uuid:r2", "longyang_yanzhuang", "2023-06-10", 0.8),
                          road("uuid:r3", "fuqian_east", "2023-06-20", 0.5)],
        "home_visit": [visit("uuid:h1", "stu1", "2023-03-01"), visit("uuid:h2", "stu1", "2023-05-01"),
                       visit("uuid:h3", "stu2", "2023-06-15", f"家长身份证号 {WANG_ID} 待核"),
                       visit("uuid:h4", "stu3", "2023-07-05")],  # after the as-of date
        # c1 was sent twice (c4): a probable duplicate whose reason quotes the title
        "culture_event": [show("uuid:c1", V1, "show", "2023-05-10", SHOW_TITLE), show("uuid:c2", V2, "show", "2023-06-12"),
                          show("uuid:c3", V1, "film", "2023-06-20"), show("uuid:c4", V1, "show", "2023-05-10", SHOW_TITLE)],
        "welfare_post_review": [("uuid:w1", "2023-06-05", {
            "subject": {"village": V1, "post_holder": "wp1", "review_date": "2023-06-05"},
            "review": {"on_duty": "no", "meets_rules": "no", "problems": "absent", "conclusion": "rectify",
                       "note": f"本人电话 {ZHANG_PHONE}"}})],
        "dibao_verification": [("uuid:d1", "2023-06-08", {
            "subject": {"village": V1, "household": "db1", "verify_date": "2023-06-08"},
            "verify": {"members_verified": 2, "conclusion": "adjust"},
            "evidence": {"photo": HOME_PHOTO, "location": gps(V1)}})],
        "health_checkup": [("uuid:k1", "2023-06-01", {
            "subject": {"village": V1, "resident": "res1", "checkup_date": "2023-06-01"},
            "checkup": {"referral": "yes", "referral_note": "转县医院复查"},
            "policy": {"policy_explained": "yes", "leaflet_given": "yes"}})],
        "satisfaction_survey": [survey("uuid:q1", G2.code, "2023-06-03", 4, f"路灯不亮，联系 {OUYANG_PHONE}"),
                                survey("uuid:q2", V1, "2023-06-04", 5),
                                survey("uuid:q3", G2.code, "2023-06-05", 3, FORMULA)],
        "police_monthly": [police("uuid:p1", "2023-05-01", 10, 9), police("uuid:p2", "2023-06-01", 10, 10)],
    }  # fmt: skip


@dataclass
class Run:
    settings: Settings
    result: ReportResult

    def file(self, key: str) -> Path:
        return self.result.files[key]


def _settings(root: Path, build: Path, **extra: object) -> Settings:
    return Settings(data_dir=root / "data", outputs_dir=root / "out", build_dir=build,
                    plan_year=2023, source="files", **extra)  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build")
    build_forms(REPO / "forms", out, VILLAGES, validate=False)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, build: Path) -> Run:
    root = tmp_path_factory.mktemp("report")
    write_rosters(rosters(), root / "rosters")
    settings = _settings(root, build, rosters_dir=root / "rosters")
    with open_store(settings) as store:
        for form_id, rows in submissions().items():
            version = load_schema(build, form_id).version
            page = [Record(form_id, iid, version, f"{day}T02:00:00.000Z", f"{day}T02:00:00.000Z",
                           "received", data) for iid, day, data in rows]  # fmt: skip
            store.write_page("central", form_id, page)
        store.put_attachment("sanitation_sweep", "uuid:s1", PILE_PHOTO, [b"\xff\xd8 a pile"])
        store.put_attachment("dibao_verification", "uuid:d1", HOME_PHOTO, [b"\xff\xd8 a home"])
    return Run(settings, write_report(settings, AS_OF))


def sheet(path: Path, name: str) -> list[dict]:
    ws = load_workbook(path)[name]
    rows = list(ws.iter_rows(values_only=True))
    return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def by_label(rows: list[dict], label: str) -> dict:
    return next(r for r in rows if r["指标"] == label)


def texts(path: Path) -> str:
    """Everything a reader of the file sees: text files as text, XLSX cell by cell."""
    if path.suffix == ".jpg":  # a photo: only its name is text
        return path.name
    if path.suffix == ".xlsx":
        wb = load_workbook(path, read_only=True)
        return "\n".join(
            str(v) for ws in wb.worksheets for row in ws.iter_rows(values_only=True) for v in row
            if v is not None
        )  # fmt: skip
    return path.read_text(encoding="utf-8-sig")


def unmasked(text: str) -> list[str]:
    # find_unmasked itself passes coordinates (35.16394660492), uuids and digests
    return find_unmasked(text)


# --- the figures --------------------------------------------------------------------------------


def test_dispatch_figures_against_hand_computed_values(run: Run) -> None:
    for edition in ("public", "internal"):
        rows = sheet(run.file(f"dispatch_{edition}_xlsx"), "指标进度")
        # home visits: stu1 and stu2 visited by 06-30 (stu3's visit of 07-05 not yet) = 2 of 4;
        # pace: 181 of the 212 days from 01-01 to 07-31 have passed; in May only stu1 = 1 of 4
        once = by_label(rows, "学生家访全覆盖（至少 1 次）")
        assert (once["当前值"], once["目标"], once["时序进度要求"], once["状态"]) == ("50.0%", "100.0%", "85.4%", "滞后")  # fmt: skip
        assert once["完成度"] == pytest.approx(0.5) and once["本月变化"] == "+25.0 个百分点"
        assert by_label(rows, "学生家访全覆盖（至少 2 次）")["当前值"] == "25.0%"
        # roads: latest km per segment 0.9 + 0.8 + 0.5 = 2.2 km reached in June (0.9 in May)
        road = by_label(rows, "道路建设：龙岭路至董沙土段、龙阳村至闫庄段、府前路东延完成公里数")
        assert (road["当前值"], road["目标"], road["状态"], road["本月变化"]) == ("2.20", "2.20", "已完成", "+1.30")  # fmt: skip
        # shows: 2 of 56 villages (V1's resent show counts once); pace from 04-01: 91 of 275
        # days → 56 × 91/275 = 18.53
        shows = by_label(rows, "一村一年一场戏：已送戏下乡的村数")
        assert (shows["当前值"], shows["目标"], shows["时序进度要求"], shows["状态"]) == ("2", "56", "18.53", "滞后")  # fmt: skip
        # small cases: (9 + 10) / (10 + 10)
        small = by_label(rows, "小案破案率")
        assert (small["当前值"], small["状态"]) == ("95.0%", "已完成")
        # Q2 sweeps: 2 of 56 villages; findings: 1 cleared of 2
        assert by_label(rows, "各村每季度人居环境整治巡查覆盖率")["当前值"] == "3.6%"
        assert (
            by_label(rows, "巡查发现问题清理整改率（当场清理或未过整改期限）")["当前值"] == "50.0%"
        )
        done = sheet(run.file(f"dispatch_{edition}_xlsx"), "本月完成")
        # newly done in June: the road, and res1 (the only resident) checked and told on 06-01
        assert [r["指标"] for r in done] == [
            road["指标"], "65岁以上老年人及高血压、糖尿病患者查体率", "医保政策讲解知晓率（查体名单全体对象）"
        ]  # fmt: skip
        sat = {r["领域"]: r for r in sheet(run.file(f"dispatch_{edition}_xlsx"), "群众满意度")}
        assert (sat["人居环境"]["平均分（1–5）"], sat["人居环境"]["样本数"]) == ("4.00 分", 3)
        lagging = {r["村"]: r for r in sheet(run.file(f"dispatch_{edition}_xlsx"), "滞后村")}
        # 大寨 (no submission at all): not swept this quarter, no show yet, no square or
        # equipment inspected, its only student never visited. No one of 大寨 is on the other
        # rosters, so those rates do not apply (no rate, nothing to chase).
        assert lagging["大寨"]["滞后指标数"] == 6 and lagging["大寨"]["帮包联系组"] == "第1组"
        assert lagging["大寨"]["指标"].split("、")[-2:] == ["学生家访全覆盖（至少 1 次）", "学生家访全覆盖（至少 2 次）"]  # fmt: skip
        assert "医保" not in lagging["大寨"]["指标"] and "低保" not in lagging["大寨"]["指标"]
    html = run.file("dispatch_public_html").read_text(encoding="utf-8")
    assert "50.0%" in html and "85.4%" in html and "<svg" in html and "月调度通报" in html
    assert '<meta name="viewport"' in html and "@page" in html and "size: A4" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html  # offline


def test_follow_up_lists_open_items_by_group_sorted_by_deadline(run: Run) -> None:
    wb = load_workbook(run.file("followups_xlsx"))
    assert wb.sheetnames == ["第1组", "第2组"]
    ws = wb["第1组"]
    assert ws.freeze_panes == "A2"
    header = [c.value for c in ws[1]]
    assert header == ["帮包联系组", "村", "村代码", "事项类型", "领域", "责任部门", "名单编号", "对象",
                      "身份证号", "联系电话", "内容", "发现日期", "整改期限", "逾期天数", "状态",
                      "来源表单", "记录编号", "条目序号"]  # fmt: skip
    assert all(c.font.b for c in ws[1])
    rows = [dict(zip(header, (c.value for c in r), strict=True)) for r in ws.iter_rows(min_row=2)]
    # 龙阳: the finding (due 06-20, 10 days late), then the plan deadlines 09-30 and 10-31,
    # then the items without a deadline by the date found
    assert [(r["事项类型"], r["整改期限"], r["逾期天数"], r["状态"]) for r in rows] == [
        ("人居环境问题", "2023-06-20", 10, "已逾期"),
        ("公益性岗位整改", "2023-09-30", None, "待整改"),
        ("低保调整", "2023-10-31", None, "待整改"),
        ("查体转诊", None, None, "待整改"),
        ("家访跟进", None, None, "待整改"),
    ]  # fmt: skip
    first = rows[0]
    assert (first["村"], first["村代码"], first["记录编号"], first["条目序号"]) == (
        "龙阳",
        V1,
        "uuid:s1",
        1,
    )
    assert first["内容"] == f"垃圾堆；整改责任人：张*；巡查备注：{XSS} 已通知 138****5678"
    welfare = rows[1]
    assert (welfare["对象"], welfare["身份证号"], welfare["联系电话"]) == (
        "张*", ZHANG_ID[:6] + "********" + ZHANG_ID[-4:], "138****5678",
    )  # fmt: skip
    assert (rows[2]["对象"], rows[2]["身份证号"]) == ("王*", WANG_ID[:6] + "********" + WANG_ID[-4:])  # household head  # fmt: skip
    assert rows[4]["内容"] == f"跟进事项：家长身份证号 {WANG_ID[:6]}********{WANG_ID[-4:]} 待核"
    # sensible widths: the content column is wider than the village-code column
    assert ws.column_dimensions["K"].width > ws.column_dimensions["C"].width >= 12
    group2 = [c.value for c in wb["第2组"]["K"]][1:]
    assert group2 == ["路灯不亮，联系 159****5670", FORMULA]

    raw = run.file("followups_csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM for Excel on Chinese Windows
    csv = pd.read_csv(run.file("followups_csv"), encoding="utf-8-sig", dtype=str)
    assert list(csv.columns) == header and len(csv) == 7
    assert csv["整改期限"].iloc[0] == "2023-06-20"


def test_spreadsheet_formulas_stay_text(run: Run) -> None:
    cell = next(c for c in load_workbook(run.file("followups_xlsx"))["第2组"]["K"] if c.value == FORMULA)  # fmt: skip
    assert cell.data_type == "s"  # text, so Excel never runs it
    csv = pd.read_csv(run.file("followups_csv"), encoding="utf-8-sig", dtype=str)
    assert "'" + FORMULA in csv["内容"].tolist()


def test_quality_sheet_per_form(run: Run) -> None:
    wb = load_workbook(run.file("quality_xlsx"))
    assert wb.sheetnames[0] == "汇总"
    # the home visit of 07-05 is after the as-of date
    rows = sheet(run.file("quality_xlsx"), "家访记录")
    assert [(r["记录编号"], r["检查项"]) for r in rows] == [("uuid:h4", "日期晚于统计截止日")]
    assert wb["家访记录"].freeze_panes == "A2"
    # the finding past its rectify-by date
    sweep = sheet(run.file("quality_xlsx"), "人居环境整治巡查")
    assert [(r["记录编号"], r["条目序号"], r["检查项"]) for r in sweep] == [
        ("uuid:s1", 1, "逾期未整改")
    ]
    assert run.file("quality_csv").read_bytes().startswith(b"\xef\xbb\xbf")


def test_quality_reasons_never_quote_a_typed_phone(run: Run) -> None:
    # the resent show's title holds a phone typed with a +86 prefix and hyphens
    rows = sheet(run.file("quality_xlsx"), "文化下乡活动登记")
    dup = [r for r in rows if r["检查项"] == "疑似重复"]
    assert [r["记录编号"] for r in dup] == ["uuid:c1", "uuid:c4"]
    assert "柳琴戏专场（联系人 +86 137****5670）" in dup[0]["原因"]
    for path in (run.file("quality_xlsx"), run.file("quality_csv")):
        text = texts(path)
        assert "137-1234-5670" not in text and LI_PHONE not in text
        assert unmasked(text) == [], path


# --- privacy and escaping -----------------------------------------------------------------------


def test_no_output_file_holds_an_unmasked_id_number_phone_or_full_name(run: Run) -> None:
    assert unmasked(f"x {ZHANG_ID} y {ZHANG_PHONE}") == [ZHANG_ID, ZHANG_PHONE]  # the scan works
    files = [p for p in run.result.out_dir.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in files}
    # reports, lists, maps, index and the one photo of a finding on the maps
    assert {".html", ".csv", ".xlsx", ".jpg"} <= kinds and len(files) == 17
    for path in files:
        text = texts(path)
        assert unmasked(text) == [], path
        for secret in SECRETS + FULL_NAMES:
            assert secret not in text, (path, secret)
    internal = texts(run.file("dispatch_internal_html"))
    assert "张*" in internal  # the internal edition does show masked subjects


def test_public_edition_has_aggregates_only(run: Run) -> None:
    for key in ("dispatch_public_html", "dispatch_public_xlsx"):
        text = texts(run.file(key))
        for person in ("张*", "王*", "李*", "欧阳*", "********", "****", "stu1", "wp1", "db1", "res1", "uuid:"):  # fmt: skip
            assert person not in text, (key, person)
        assert "路灯不亮" not in text and "HYPERLINK" not in text  # no free text either
        assert "公开版" in text
    assert "逾期事项" not in load_workbook(run.file("dispatch_public_xlsx")).sheetnames
    assert "逾期事项" in load_workbook(run.file("dispatch_internal_xlsx")).sheetnames


def test_user_text_is_html_escaped(run: Run) -> None:
    html = run.file("dispatch_internal_html").read_text(encoding="utf-8")
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # the overdue finding's note
    assert "<img" not in html
    for path in run.result.out_dir.rglob("*.html"):
        assert XSS not in path.read_text(encoding="utf-8"), path


def test_index_links_reports_and_maps(run: Run) -> None:
    index = run.result.index.read_text(encoding="utf-8")
    for key in ("dispatch_public_html", "followups_xlsx", "quality_csv"):
        rel = run.file(key).relative_to(run.result.out_dir).as_posix()
        assert f'href="{rel}"' in index
    assert 'href="maps/overview.html"' in index

    # the maps are refreshed with the report: village progress and the open finding
    def shown(name: str) -> str:  # the map's text, with the JSON \uXXXX escapes read back
        text = (run.result.out_dir / "maps" / f"{name}.html").read_text(encoding="utf-8")
        return re.sub(r"\\u([0-9a-f]{4})", lambda m: chr(int(m.group(1), 16)), text)

    environment = shown("living_environment")
    assert "人居环境问题" in environment and "已逾期" in environment and "2023-06-20" in environment
    # 龙阳: both its students visited once, one of them twice; its home-visit follow-up counted
    education = shown("education")
    tip = re.search(r"<b>龙阳</b>.*?待跟进：\d+ 项", education).group(0)
    assert "学生家访全覆盖（至少 1 次）：1 / 1" in tip and "（至少 2 次）：0.50 / 1" in tip
    assert tip.endswith("待跟进：1 项")
    assert "待跟进：5 项" in re.search(r"<b>龙阳</b>.*?待跟进：\d+ 项", shown("overview")).group(0)
    assert run.result.report_dir == run.result.out_dir / "2023-06-30"
    assert len(run.result.followups) == 7 and run.result.submissions == 21


def _photos(page: str) -> list[str | None]:
    """Each finding drawn on a map: its photo link (None: no link), as the popup builds it."""
    found = re.search(r"var s = (\[.*?\]);\n", page, re.S)
    rows = re.search(r"var rows = (\[.*?\]);\n", page, re.S)
    if not found or not rows:
        return []
    strings = json.loads(found.group(1))
    return [strings[r[8]] if r[8] >= 0 else None for r in json.loads(rows.group(1))]


def _links(page: str) -> list[str]:
    return [link for link in _photos(page) if link]


def test_map_findings_link_their_photo_copied_next_to_the_report(run: Run) -> None:
    maps = run.result.out_dir / "maps"
    photos = run.result.report_dir / "photos"
    pile = hashlib.sha256(b"\xff\xd8 a pile").hexdigest() + ".jpg"
    assert [p.name for p in photos.iterdir()] == [pile]  # the 低保 household's photo: never
    links = _links((maps / "living_environment.html").read_text(encoding="utf-8"))
    assert links == [f"../2023-06-30/photos/{pile}"]
    assert (maps / links[0]).resolve().read_bytes() == b"\xff\xd8 a pile"  # opens offline
    for page in maps.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert PILE_PHOTO not in text and HOME_PHOTO not in text  # names stay in the store
        assert hashlib.sha256(b"\xff\xd8 a home").hexdigest() not in text


def test_findings_without_a_rectify_by_date_are_drawn_with_their_photo(tmp_path: Path, build: Path) -> None:  # fmt: skip
    settings = _settings(tmp_path, build)
    sweep = {"basic": {"village": V2, "check_date": "2023-06-01", "quarter": "q2", "has_findings": "yes"},
             "findings": [{"kind": "straw_stack", "status": "to_rectify", "location": gps(V2), "photo": "a.jpg"},
                          {"kind": "hay_stack", "status": "to_rectify", "location": gps(V2), "photo": "b.jpg"}],
             "summary": {"score": 60}}  # fmt: skip
    square = {"square": {"village": V3, "check_date": "2023-06-02", "square_present": "yes",
                         "equipment_present": "yes", "location": gps(V3)},
              "equipment": [{"item_kind": "walker", "condition": "damaged", "photo": "c.JPG"}]}  # fmt: skip
    with open_store(settings) as store:
        for form_id, iid, data in (("sanitation_sweep", "uuid:s", sweep), ("fitness_square", "uuid:f", square)):  # fmt: skip
            version = load_schema(build, form_id).version
            store.write_page("central", form_id, [Record(form_id, iid, version, "2023-06-02T02:00:00.000Z", None, None, data)])  # fmt: skip
        store.put_attachment("sanitation_sweep", "uuid:s", "a.jpg", [b"straw"])
        store.note_missing_attachment("sanitation_sweep", "uuid:s", "b.jpg")  # not downloaded yet
        store.put_attachment("fitness_square", "uuid:f", "c.JPG", [b"walker"])
    result = write_report(settings, AS_OF)
    maps = result.out_dir / "maps"
    env = (maps / "living_environment.html").read_text(encoding="utf-8")
    # neither finding has a rectify-by date: both are still drawn, the one downloaded photo linked
    straw = hashlib.sha256(b"straw").hexdigest()
    assert _photos(env) == [f"../2023-06-30/photos/{straw}.jpg", None]
    culture = (maps / "culture_sports.html").read_text(encoding="utf-8")
    walker = hashlib.sha256(b"walker").hexdigest()
    assert _links(culture) == [f"../2023-06-30/photos/{walker}.jpg"]
    assert (maps / _links(culture)[0]).resolve().read_bytes() == b"walker"
    # a re-run keeps the folder in step with the maps: nothing stale, nothing twice
    again = write_report(settings, AS_OF)
    assert sorted(p.name for p in (again.report_dir / "photos").iterdir()) == sorted([f"{straw}.jpg", f"{walker}.jpg"])  # fmt: skip


def test_records_of_a_form_version_the_build_lacks_are_read_and_noted(tmp_path: Path, build: Path) -> None:  # fmt: skip
    settings = _settings(tmp_path, build)
    _, day, data = submissions()["culture_event"][1]
    data = {**data, "event": {**data["event"], "old_question": "旧版字段"}}
    with open_store(settings) as store:
        store.write_page("central", "culture_event", [Record("culture_event", "uuid:old", "2020010101", f"{day}T02:00:00.000Z", None, None, data)])  # fmt: skip
    result = write_report(settings, AS_OF)
    table = result.progress.level("town").set_index("indicator_id")
    assert table.loc["opera_shows", "value"] == 1  # the old version's show still counts
    assert any("2020010101" in w and "按文本读取" in w for w in result.warnings), result.warnings
    public = result.files["dispatch_public_html"].read_text(encoding="utf-8")
    assert "2020010101" not in public  # a note for whoever runs the report, not for WeChat


def test_report_before_any_data_says_no_data(tmp_path: Path, build: Path) -> None:
    settings = _settings(tmp_path, build)  # no store, no rosters
    result = write_report(settings, date(2023, 3, 31), tmp_path / "custom")
    assert not settings.store_path.exists()  # nothing created just to find it empty
    assert result.empty and result.out_dir == tmp_path / "custom"
    for edition in ("public", "internal"):
        html = result.files[f"dispatch_{edition}_html"].read_text(encoding="utf-8")
        assert "暂无数据" in html and "2023年3月" in html
    csv = result.files["followups_csv"].read_text(encoding="utf-8-sig").splitlines()
    assert len(csv) == 1 and csv[0].startswith("帮包联系组,村")
    assert (result.out_dir / "maps" / "overview.html").exists()


def test_submissions_without_a_built_form_say_what_to_do(tmp_path: Path, run: Run) -> None:
    settings = _settings(tmp_path, tmp_path / "no-build", rosters_dir=run.settings.rosters_dir)
    with open_store(settings) as store:
        _, day, data = submissions()["culture_event"][0]
        store.write_page("central", "culture_event", [Record("culture_event", "uuid:x", "1", f"{day}T00:00:00.000Z", None, None, data)])  # fmt: skip
    with pytest.raises(DataError, match="run `manyi forms build` first"):
        write_report(settings, AS_OF)


# --- warnings that matter, and a disk that cannot take the files (issue 9) ----------------------


def test_an_as_of_date_outside_the_plan_year_is_warned_in_the_report_and_by_the_cli(tmp_path: Path, build: Path, capsys) -> None:  # fmt: skip
    settings = _settings(tmp_path, build)
    for day, said in ((date(2024, 3, 31), "晚于计划年度 2023 年"), (date(2022, 12, 31), "早于计划年度 2023 年")):  # fmt: skip
        result = write_report(settings, day)
        assert [w for w in result.warnings if said in w], result.warnings
        for edition in ("public", "internal"):  # whoever reads the report sees it too
            assert said in result.files[f"dispatch_{edition}_html"].read_text(encoding="utf-8")
    for day in (date(2023, 1, 1), date(2023, 12, 31)):
        assert not [w for w in write_report(settings, day).warnings if "计划年度" in w]
    out = tmp_path / "cli"
    assert main(["--data-dir", str(tmp_path / "data"), "report", "--as-of", "2024-01-15", "--out", str(out)]) == 0  # fmt: skip
    assert "warning: 统计截止日 2024-01-15 晚于计划年度 2023 年" in capsys.readouterr().err


def test_a_configured_roster_folder_that_does_not_exist_is_an_error_not_the_demo_rosters(tmp_path: Path, build: Path, monkeypatch, capsys) -> None:  # fmt: skip
    missing = tmp_path / "名单" / "2023"
    for source in ("demo", "files"):  # the demo source, too, only falls back when unconfigured
        settings = _settings(tmp_path, build, rosters_dir=missing)
        settings = Settings(**{**settings.__dict__, "source": source})
        with pytest.raises(DataError, match=r"rosters_dir .*名单/2023 .* is not a folder that exists"):  # fmt: skip
            write_report(settings, AS_OF)
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(DataError, match="is not a folder"):
        write_report(_settings(tmp_path, build, rosters_dir=tmp_path / "a-file"), AS_OF)
    # through the CLI: one line naming the setting, where it was set, and the path
    monkeypatch.setenv("MANYI_ROSTERS_DIR", str(missing))
    assert main(["--data-dir", str(tmp_path / "data"), "report", "--as-of", "2023-06-30", "--out", str(tmp_path / "o")]) == 1  # fmt: skip
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "rosters_dir" in line and "MANYI_ROSTERS_DIR" in line and str(missing) in line
    assert "Traceback" not in line


def test_only_the_unconfigured_default_roster_folder_may_be_missing(tmp_path: Path, build: Path) -> None:  # fmt: skip
    demo = Settings(data_dir=tmp_path / "data", outputs_dir=tmp_path / "out", build_dir=build, source="demo")  # fmt: skip
    assert any("示例名单" in w for w in write_report(demo, AS_OF).warnings)  # invented, and said so
    files = _settings(tmp_path, build)
    assert any("未找到名单" in w for w in write_report(files, AS_OF).warnings)


@pytest.mark.parametrize("key", ["followups_csv", "quality_xlsx", "dispatch_internal_html"])
def test_a_full_disk_while_writing_the_report_is_one_line_naming_the_file(tmp_path: Path, run: Run, key: str, capsys) -> None:  # fmt: skip
    # /dev/full takes the open and refuses every write with ENOSPC: a real full disk, for one file
    first = write_report(run.settings, AS_OF, tmp_path / "out")
    target = first.files[key]
    target.unlink()
    target.symlink_to("/dev/full")
    with pytest.raises(DataError) as caught:
        write_report(run.settings, AS_OF, tmp_path / "out")
    message = str(caught.value)
    assert message.startswith(f"{target}: cannot write the report: no space left on the disk")
    assert "--out" in message and "\n" not in message
    # the CLI prints that line alone, and exits non-zero
    args = ["--data-dir", str(run.settings.data_dir), "report", "--as-of", "2023-06-30", "--out", str(tmp_path / "out")]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MANYI_ROSTERS_DIR", str(run.settings.rosters_dir))
        mp.setenv("MANYI_BUILD_DIR", str(run.settings.build_dir))
        mp.setenv("MANYI_SOURCE", "files")
        assert main(args) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert str(target) in line and "no space left" in line
