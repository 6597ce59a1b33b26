"""A county: one settings file per town, and each town measured against its own plan.

Two made-up towns beside each other, each with its own ``manyi.toml``, village register (codes
of its own), plan (other targets, another road list), forms (their village and road lists
follow the town's register and plan), extent, data and outputs. The processing step
(``manyi report --config``) and ``flows.county_cycle`` on a two-worker Dask cluster must show
each town its own targets, villages and roads, and nothing of the other town or of 龙阳镇.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from openpyxl import load_workbook
from prefect.testing.utilities import prefect_test_harness

from pipelines.analysis.plan import PLAN_FILE, load_plan
from pipelines.cli import main
from tests.helpers import REPO

AS_OF = date(2023, 10, 15)
LONGYANG_SEGMENTS = ("龙岭路至董沙土段", "卧龙村至景区", "东朱路")
LONGYANG_TARGETS = {"welfare_post_reviews": 640, "dibao_households_verified": 858}


@dataclass(frozen=True)
class Segment:
    id: str
    name: str
    name_en: str
    kind: str
    km: float | None
    deadline: str
    ends: tuple[str, str]  # the villages an illustrative line joins


@dataclass(frozen=True)
class Town:
    name: str
    code: str
    villages: tuple[tuple[str, str], ...]  # (name, pinyin); codes follow the town's code
    segments: tuple[Segment, ...]
    targets: dict[str, float]  # indicator id -> this town's target
    extent: str

    def codes(self) -> list[str]:
        return [f"{self.code}{200 + i}" for i in range(len(self.villages))]

    def km(self, deadline: str | None = None) -> float:
        return sum(s.km or 0 for s in self.segments if deadline in (None, s.deadline))


JIA = Town(
    "甲镇", "370481120",
    (("甲东", "Jiadong"), ("甲西", "Jiaxi"), ("甲南", "Jianan"), ("甲北", "Jiabei")),
    (
        Segment("jia_ring", "甲镇环路", "Jia ring road", "construction", 1.6, "06-30", ("甲东", "甲西")),
        Segment("jia_street", "甲镇大街", "Jia main street", "lighting", None, "11-30", ("甲南", "甲北")),
    ),
    {"welfare_post_reviews": 37, "dibao_households_verified": 41},
    "117.10,35.00,117.16,35.05",
)  # fmt: skip
YI = Town(
    "乙镇", "370481121",
    (("乙河", "Yihe"), ("乙山", "Yishan"), ("乙田", "Yitian")),
    (
        Segment("yi_bridge", "河口桥连接线", "Hekou bridge link", "construction", 0.7, "06-30", ("乙山", "乙河")),
        Segment("yi_north", "北关路", "Beiguan road", "construction", 2.4, "10-31", ("乙河", "乙田")),
        Segment("yi_street", "乙镇中街", "Yi middle street", "lighting", None, "11-30", ("乙河", "乙山")),
    ),
    {"welfare_post_reviews": 52, "dibao_households_verified": 66},
    "117.35,35.22,117.40,35.26",
)  # fmt: skip
TOWNS = (JIA, YI)


# ---- each town's data in one folder --------------------------------------------------------


def _plan_text(town: Town) -> str:
    """The bundled plan with the town's name, targets and road segments."""
    text = PLAN_FILE.read_text(encoding="utf-8")
    text = text.replace('plan_name = "龙阳镇', f'plan_name = "{town.name}')
    first, last = text.index("\n[[segment]]"), text.index("\n# ---- 人居环境")
    text = text[:first] + "".join(_segment_toml(s) for s in town.segments) + text[last:]
    phase1 = [s.id for s in town.segments if s.kind == "construction" and s.deadline == "06-30"]
    old = "segment in ['longling_dongshatu', 'longyang_yanzhuang', 'fuqian_east']"
    text = text.replace(old, f"segment in {phase1!r}")
    targets = {**town.targets, "road_km_phase1": town.km("06-30"), "road_km_total": town.km()}
    for indicator, target in targets.items():
        block = re.compile(rf'(\nid = "{indicator}"\n(?:(?!\[\[indicator\]\]).)*?\ntarget = )[^\n]+', re.S)  # fmt: skip
        text, n = block.subn(rf"\g<1>{target}", text, count=1)
        assert n == 1, indicator
    return text


def _segment_toml(s: Segment) -> str:
    km = f"planned_km = {s.km}\n" if s.km else ""
    return (
        f'\n[[segment]]\nid = "{s.id}"\nname = "{s.name}"\nkind = "{s.kind}"\n{km}'
        f'deadline = "{s.deadline}"\nfrom = "{s.ends[0]}"\nto = "{s.ends[1]}"\n'
    )


def _road_lists(forms: Path, town: Town) -> None:
    """The town's road forms list its own segments (what `forms build` checks against the plan)."""
    lists = {"road_progress": ("segment", "construction"), "street_lighting": ("lit_road", "lighting")}  # fmt: skip
    for form_id, (list_name, kind) in lists.items():
        path = forms / f"{form_id}.xlsx"
        book = load_workbook(path)
        ws = book["choices"]
        for r in range(ws.max_row, 1, -1):
            if ws.cell(r, 1).value == list_name and ws.cell(r, 2).value != "other":
                ws.delete_rows(r)
        for s in town.segments:
            if s.kind == kind:
                ws.append([list_name, s.id, s.name, s.name_en])
        if form_id == "road_progress":
            survey = book["survey"]
            header = [c.value for c in survey[1]]
            row = next(r for r in survey.iter_rows(min_row=2) if r[1].value == "planned_km")
            calc = "10"
            for s in town.segments:
                if s.km:
                    calc = f"if(${{segment}} = '{s.id}', {s.km}, {calc})"
            row[header.index("calculation")].value = calc
        book.save(path)


def _town_folder(root: Path, town: Town, source: str) -> Path:
    folder = root / town.name
    (folder / "forms").mkdir(parents=True)
    for xlsx in (REPO / "forms").glob("*.xlsx"):  # not the version lock: these are new forms
        shutil.copy2(xlsx, folder / "forms" / xlsx.name)
    shutil.copytree(REPO / "forms" / "rosters", folder / "forms" / "rosters")
    register = ["code,name,name_full,pinyin,liaison_group"]
    register += [
        f"{code},{name},{name}村委会,{pinyin},{1 + i // 2}"
        for i, (code, (name, pinyin)) in enumerate(zip(town.codes(), town.villages, strict=True))
    ]
    (folder / "villages.csv").write_text("\n".join(register) + "\n", encoding="utf-8")
    (folder / "plan.toml").write_text(_plan_text(town), encoding="utf-8")
    settings = {
        "town": town.name, "town_code": town.code, "plan": "plan.toml", "villages": "villages.csv",
        "extent": town.extent, "forms_dir": "forms", "build_dir": "build", "data_dir": "data",
        "outputs_dir": "outputs", "source": source,
    }  # fmt: skip
    text = "".join(f'{k} = "{v}"\n' for k, v in settings.items())
    (folder / "manyi.toml").write_text(text, encoding="utf-8")
    assert main(["--config", str(folder / "manyi.toml"), "forms", "sync-villages"]) == 0
    _road_lists(folder / "forms", town)
    return folder / "manyi.toml"


# ---- what each town's outputs must show --------------------------------------------------------


def _assert_measured_against_its_own_plan(town: Town, outputs: Path) -> None:
    others = [t for t in TOWNS if t is not town]
    plan = load_plan(outputs.parent / "plan.toml")
    [internal] = outputs.glob("*/月调度通报_*_内部版.xlsx")
    sheet = load_workbook(internal, read_only=True)["指标进度"]
    header, *rows = sheet.iter_rows(values_only=True)
    target = {row[header.index("指标")]: str(row[header.index("目标")]) for row in rows}
    assert set(target) == {i.label for i in plan.indicators}
    for indicator_id, value in town.targets.items():
        shown = target[plan.indicator(indicator_id).label]
        assert _number(value, shown), (town.name, indicator_id, shown)
        for theirs in [LONGYANG_TARGETS, *(t.targets for t in others)]:
            assert not _number(theirs[indicator_id], shown), (town.name, indicator_id, shown)
    assert _number(town.km(), target[plan.indicator("road_km_total").label])

    report = next(outputs.glob("*/月调度通报_*_内部版.html")).read_text(encoding="utf-8")
    assert f"{town.name}群众满意度提升工程" in report
    overview = (outputs / "maps" / "overview.html").read_text(encoding="utf-8")
    for code in town.codes():
        assert f'"code": "{code}"' in overview
    for segment in town.segments:
        assert segment.name in overview or segment.name.encode("unicode_escape").decode() in overview  # fmt: skip
    for other in others:
        for code in other.codes():
            assert code not in overview and code not in report
        assert other.name + "群众满意度" not in report
    for name in LONGYANG_SEGMENTS:
        assert name not in overview and name.encode("unicode_escape").decode() not in overview
    assert "370481115200" not in overview  # no village of 龙阳镇
    west, south, east, north = (float(v) for v in town.extent.split(","))
    points = re.findall(r"\[(1\d\d\.\d+), (\d\d\.\d+)\]", overview)  # [lon, lat] in GeoJSON
    assert points and all(
        west - 0.01 <= float(x) <= east + 0.01 and south - 0.01 <= float(y) <= north + 0.01
        for x, y in points
    )  # drawn over its own extent


def _number(value: float, text: str) -> bool:
    """``text`` shows the number ``value`` ("1.60 公里" shows 1.6)."""
    return any(float(n) == pytest.approx(value) for n in re.findall(r"\d+(?:\.\d+)?", text))


# ---- the tests ------------------------------------------------------------------------------------


def test_the_processing_step_measures_each_town_against_its_own_plan(tmp_path: Path) -> None:
    for town in TOWNS:
        config = str(_town_folder(tmp_path, town, source="files"))
        assert main(["--config", config, "forms", "build", "--no-validate"]) == 0
        assert main(["--config", config, "report", "--as-of", AS_OF.isoformat()]) == 0
    for town in TOWNS:
        _assert_measured_against_its_own_plan(town, tmp_path / town.name / "outputs")


@pytest.mark.slow
def test_county_cycle_runs_each_town_on_its_own_plan(tmp_path: Path) -> None:
    import flows

    configs = [str(_town_folder(tmp_path, town, source="demo")) for town in TOWNS]
    with prefect_test_harness(server_startup_timeout=180):
        results = flows.county_cycle(configs, as_of=AS_OF, n_workers=2)
    assert [r["town"] for r in results] == [t.name for t in TOWNS]
    for town, result in zip(TOWNS, results, strict=True):
        assert result["submissions"] > 0
        index = Path(result["index"])
        assert index.parent == tmp_path / town.name / "outputs"
        _assert_measured_against_its_own_plan(town, index.parent)
