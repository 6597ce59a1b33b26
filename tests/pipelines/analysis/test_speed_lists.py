"""The quality sheet and the follow-up lists on the paths a county's volume takes (issue 13):
each distinct text masked once yet every row masked, the masker's quick pass over texts that
hold no number, the subject column read once for the roster and the duplicate checks, and the
follow-ups taken before the date window. What shows in the lists, never timings."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from forms.build import BuildReport
from forms.schema import load_schema
from geo.illustrative import illustrative_boundaries
from geo.villages import Village, load_villages
from pipelines.analysis.checks import check_forms
from pipelines.analysis.followups import follow_up_book
from pipelines.analysis.plan import load_plan
from pipelines.analysis.rosters import COLUMNS, Rosters, validate_roster
from pipelines.analysis.tidy import TidyForm, tidy
from pipelines.privacy import find_unmasked, scrub_text

VS: list[Village] = load_villages()
V1, V2 = VS[0].code, VS[1].code
AS_OF = date(2023, 6, 30)
PLAN = load_plan()
PHONE, ID_NUMBER = "13812345678", "370481199001011234"


@pytest.fixture(scope="module")
def build(built_forms: BuildReport) -> Path:
    return built_forms.out_dir


def form(build: Path, form_id: str, rows: list[tuple[str, dict]]) -> TidyForm:
    recs = [
        {"form_id": form_id, "instance_id": iid, "form_version": "1",
         "submitted_at": f"2023-01-01T00:00:{n:02d}Z", "data": data}
        for n, (iid, data) in enumerate(rows)
    ]  # fmt: skip
    return tidy(recs, load_schema(build, form_id))


def students() -> Rosters:
    codes = [v.code for v in VS]
    st = pd.DataFrame(
        [(f"stu{i}", f"王小{i}", "s01", "示例小学", V1, "c1", "一班", V1) for i in (1, 2)],
        columns=["name", "label", "school", "school_label", "school_village", "class",
                 "class_label", "village"],
    )  # fmt: skip
    frames = {"students": st, **{k: pd.DataFrame(columns=c) for k, (c, _) in COLUMNS.items() if k != "students"}}  # fmt: skip
    return Rosters(**{k: validate_roster(v, k, codes) for k, v in frames.items()})


def visit(student: str, day: str, note: str | None = None, follow_up: str = "yes") -> dict:
    result = {"follow_up": follow_up} | ({"follow_up_note": note} if note else {})
    return {"subject": {"student": student, "village": V1}, "visit": {"visit_date": day, "mode": "home"}, "result": result}  # fmt: skip


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("电话138\u200b1234\u200b5678", "电话138****5678"),  # zero-width spaces
        ("电话138\U000e00201234\U000e00205678", "电话138****5678"),  # tag spaces, past U+FFFF
        ("电话138\U0001d1731234\U0001d1735678", "电话138****5678"),  # musical format marks
        ("电话 ١٣٨١٢٣٤٥٦٧٨", "电话 138****5678"),  # Arabic-Indic digits
        ("电话138\u3000\u3000\u30001234———5678", "电话138****5678"),  # three joiners in a row
        ("证号 370481 - 1990 - 0101 - 1234", "证号 370481********1234"),
        ("身份证３７０４８１１９９００１０１１２３４", "身份证370481********1234"),
        ("电话138    1234 5678", "电话138    1234 5678"),  # four spaces part two numbers
        ("电话138😀1234😀5678", "电话138😀1234😀5678"),  # an emoji is no separator
        ("编号 1234567890", "编号 1234567890"),  # ten digits: nobody's number
        (
            "2023-05-01 共有 2 条记录（另见 uuid:a-12345）",
            "2023-05-01 共有 2 条记录（另见 uuid:a-12345）",
        ),
    ],
)
def test_numbers_joined_by_any_separator_are_masked_and_other_texts_left_as_typed(typed: str, shown: str) -> None:  # fmt: skip
    assert scrub_text(typed) == shown


def test_a_note_repeated_on_many_items_is_masked_on_every_one(build: Path) -> None:
    same = f"家长电话 {PHONE[:3]} {PHONE[3:7]} {PHONE[7:]}，请回访"
    rows = [
        *((f"uuid:v{i}", visit("stu1", f"2023-0{i}-01", same)) for i in (1, 2, 3)),
        ("uuid:v4", visit("stu2", "2023-04-01", "需要补课")),
        ("uuid:v5", visit("stu2", "2023-05-01", f"家长身份证 {ID_NUMBER}")),
        ("uuid:v6", visit("stu2", "2023-05-02", same, follow_up="no")),  # nothing to follow up
        ("uuid:v7", visit("stu1", "2023-07-01", same)),  # after the as-of date
    ]
    book = follow_up_book({"home_visit": form(build, "home_visit", rows)}, as_of=AS_OF, year=2023, plan=PLAN, villages=VS, rosters=students())  # fmt: skip
    items = book.open.set_index("instance_id")
    assert sorted(items.index) == ["uuid:v1", "uuid:v2", "uuid:v3", "uuid:v4", "uuid:v5"]
    masked = "跟进事项：家长电话 138****5678，请回访"
    assert items.loc[["uuid:v1", "uuid:v2", "uuid:v3"], "content"].tolist() == [masked] * 3
    assert items.loc["uuid:v4", "content"] == "跟进事项：需要补课"
    assert items.loc["uuid:v5", "content"] == "跟进事项：家长身份证 370481********1234"
    assert set(items["subject"]) == {"王*"}
    shown = "\n".join(str(v) for v in book.open.to_numpy().ravel())
    assert find_unmasked(shown) == []


def test_an_unknown_id_sent_twice_is_flagged_as_unknown_and_as_a_duplicate_masked(build: Path) -> None:  # fmt: skip
    """A phone typed where the student ID goes: both checks read the same column, and every
    reason quotes it masked."""
    rows = [
        ("uuid:h1", visit(PHONE, "2023-05-01")),
        ("uuid:h2", visit(PHONE, "2023-05-01")),
        ("uuid:h3", visit("stu1", "2023-05-01")),
        ("uuid:h4", visit("stu1", "2023-05-02")),  # another day: no duplicate
    ]
    checks = check_forms({"home_visit": form(build, "home_visit", rows)}, as_of=AS_OF, year=2023, villages=VS, boundaries=illustrative_boundaries(VS), rosters=students())  # fmt: skip
    table = checks.form("home_visit")
    flagged = sorted(zip(table["check"], table["instance_id"], strict=True))
    assert flagged == [("duplicate", "uuid:h1"), ("duplicate", "uuid:h2"), ("unknown_roster_id", "uuid:h1"), ("unknown_roster_id", "uuid:h2")]  # fmt: skip
    reasons = table.set_index(["check", "instance_id"])["reason"]
    assert "138****5678" in reasons[("unknown_roster_id", "uuid:h1")]
    assert "138****5678" in reasons[("duplicate", "uuid:h2")]
    assert "另见 uuid:h1" in reasons[("duplicate", "uuid:h2")]
    assert find_unmasked("\n".join(table["reason"])) == []


def test_an_overdue_finding_says_how_many_days_it_is_late(build: Path) -> None:
    def sweep(village: str, status: str, by: str) -> dict:
        return {"basic": {"village": village, "check_date": "2023-05-10", "quarter": "q2", "has_findings": "yes"},
                "findings": [{"kind": "garbage_pile", "status": status, "rectify_by": by}], "summary": {"score": 80}}  # fmt: skip

    rows = [("uuid:s1", sweep(V1, "to_rectify", "2023-06-01")), ("uuid:s2", sweep(V2, "to_rectify", "2023-07-01")),
            ("uuid:s3", sweep(V2, "cleared", "2023-05-12"))]  # fmt: skip
    checks = check_forms({"sanitation_sweep": form(build, "sanitation_sweep", rows)}, as_of=AS_OF, year=2023, villages=VS, boundaries=illustrative_boundaries(VS))  # fmt: skip
    late = checks.table[checks.table["check"] == "overdue_finding"]
    assert late["instance_id"].tolist() == ["uuid:s1"]
    assert late["repeat_index"].tolist() == [1]
    assert late["reason"].iloc[0].startswith("垃圾堆：整改期限 2023-06-01 已过 29 天")
