"""The monthly dispatch report, both editions: its figures against hand-computed values, and
the public edition carries aggregates only."""

from __future__ import annotations

import pytest
from openpyxl import load_workbook

from tests.pipelines.reports._town import Run, by_label, sheet, texts


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
            by_label(rows, "巡查发现问题清理整改率（当场清理、已整改或未过整改期限）")["当前值"]
            == "50.0%"
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


def test_public_edition_has_aggregates_only(run: Run) -> None:
    for key in ("dispatch_public_html", "dispatch_public_xlsx"):
        text = texts(run.file(key))
        for person in ("张*", "王*", "李*", "欧阳*", "********", "****", "stu1", "wp1", "db1", "res1", "uuid:"):  # fmt: skip
            assert person not in text, (key, person)
        assert "路灯不亮" not in text and "HYPERLINK" not in text  # no free text either
        assert "公开版" in text
    assert "逾期事项" not in load_workbook(run.file("dispatch_public_xlsx")).sheetnames
    assert "逾期事项" in load_workbook(run.file("dispatch_internal_xlsx")).sheetnames
