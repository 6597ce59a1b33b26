"""The small town year the processing-step tests read: a real SQLite store → every output
file, read back and checked.

The rosters hold real-looking (but invented) names, ID numbers with valid check digits and
mobile numbers, so the scans for unmasked personal data can actually fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
from openpyxl import load_workbook

from geo.illustrative import illustrative_boundaries
from geo.villages import load_villages
from pipelines.analysis.rosters import Rosters, id_check_digit, validate_roster
from pipelines.config import Settings
from pipelines.privacy import find_unmasked
from pipelines.reports import Outputs

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
    result: Outputs

    def file(self, key: str) -> Path:
        return self.result.files[key]


def town_settings(root: Path, build: Path, **extra: object) -> Settings:
    return Settings(data_dir=root / "data", outputs_dir=root / "out", build_dir=build,
                    plan_year=2023, source="files", **extra)  # type: ignore[arg-type]  # fmt: skip


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
