"""The rectification form (整改反馈): the field names the portal prefills and the analysis
reads, its logic (photo required only when fixed, a fix date no later than today, defaulting to
today), and that no role gets it by default (it is opened from a follow-up item's 处理)."""

from __future__ import annotations

from pathlib import Path

import pytest
from defusedxml import ElementTree

from forms.build import BuildReport, build_forms
from forms.schema import load_schema
from pipelines.server.people import load_roles
from tests.helpers import VILLAGES, write_md_form

NS = {"x": "http://www.w3.org/2002/xforms", "h": "http://www.w3.org/1999/xhtml"}
JR = "{http://openrosa.org/javarosa}"
ORX = "{http://openrosa.org/xforms}"
FIELDS = ("item_id", "village", "finding", "action", "done", "photo", "fix_date")

# The form's logic as a markdown XLSForm (pyxform's test format): the real form must compile
# its answers to the same binds.
LOGIC_MD = """
| survey |
| | type | name | label::Chinese (zh) | label::English (en) | required | required_message::Chinese (zh) | required_message::English (en) | constraint | constraint_message::Chinese (zh) | constraint_message::English (en) | default | parameters |
| | begin_group | rectify | 整改反馈 | Rectification | | | | | | | | |
| | select_one done | done | 是否整改完成 | Fixed? | yes | 请选择 | Choose | | | | | |
| | image | photo | 整改后照片 | Photo | ${done} = 'yes' | 请拍照 | Take a photo | | | | | max-pixels=1024 |
| | date | fix_date | 整改日期 | Date | yes | 请填写 | Enter it | . <= today() | 不能晚于今天 | Not after today | today() | |
| | end_group | | | | | | | | | | | |
| choices |
| | list_name | name | label::Chinese (zh) | label::English (en) |
| | done | yes | 已整改完成 | Fixed |
| | done | no | 未完成 | Not yet fixed |
| settings |
| | form_id | form_title | version | default_language |
| | rectification | 整改反馈 | 2026113001 | Chinese (zh) |
"""


def _binds(xml: Path) -> dict[str, dict[str, str]]:
    root = ElementTree.parse(xml).getroot()
    model = root.find("h:head/x:model", NS)
    binds = {b.get("nodeset").rsplit("/", 1)[-1]: dict(b.attrib) for b in model.iter("{http://www.w3.org/2002/xforms}bind")}  # fmt: skip
    for s in model.iter("{http://www.w3.org/2002/xforms}setvalue"):
        binds[s.get("ref").rsplit("/", 1)[-1]]["setvalue"] = f"{s.get('event')}: {s.get('value')}"
    return binds


@pytest.fixture(scope="module")
def built(built_forms: BuildReport) -> Path:
    assert built_forms.problems == []
    assert "rectification" in {b.form_id for b in built_forms.built}
    return built_forms.out_dir


def test_the_fields_the_portal_prefills_and_the_analysis_reads(built: Path) -> None:
    schema = load_schema(built, "rectification")
    assert schema.title == "整改反馈"
    got = {f.name: (f.type, f.required) for f in schema.questions}
    assert got == {
        "item_id": ("text", True), "village": ("select_one", False), "finding": ("text", False),
        "action": ("text", True), "done": ("select_one", True), "photo": ("image", False),
        "fix_date": ("date", True),
    }  # fmt: skip
    assert {k: v["zh"] for k, v in schema.field("done").choices.items()} == {
        "yes": "已整改完成",
        "no": "未完成",
    }
    assert schema.field("village").list_name == "village"
    binds = _binds(built / "rectification.xml")
    # what the portal writes in is shown, not typed over
    assert [n for n in FIELDS if binds[n].get("readonly") == "true()"] == [
        "item_id",
        "village",
        "finding",
    ]
    # a person who opens the form without an item cannot send it
    assert binds["item_id"]["required"] == "true()"


def test_photo_only_when_fixed_and_a_fix_date_no_later_than_today(built: Path, tmp_path: Path) -> None:  # fmt: skip
    forms = tmp_path / "forms"
    write_md_form(LOGIC_MD, forms / "rectification.xlsx")
    case = build_forms(forms, tmp_path / "out", VILLAGES)
    assert case.problems == [] and case.validated
    want, real = _binds(tmp_path / "out" / "rectification.xml"), _binds(built / "rectification.xml")
    for name in ("done", "photo", "fix_date"):
        for key in ("type", "required", "constraint", "setvalue", f"{ORX}max-pixels"):
            assert real[name].get(key) == want[name].get(key), (name, key)
    assert real["photo"]["required"].split() == ["/data/rectify/done", "=", "'yes'"]
    assert real["fix_date"]["constraint"] == ". <= today()"
    assert real["fix_date"]["setvalue"] == "odk-instance-first-load: today()"
    # the messages say, in Chinese, what to do
    xml = (built / "rectification.xml").read_text(encoding="utf-8")
    assert "整改日期不能晚于今天，请改为今天或之前的日期" in xml
    assert "已整改完成的，请拍一张整改后的照片" in xml
    assert "没有事项编号：请从跟进清单中该事项的" in xml  # …"处理"打开本表
    assert real["photo"][f"{JR}requiredMsg"].startswith("jr:itext(")


def test_no_role_gets_the_form_by_default() -> None:
    for role in load_roles().values():
        assert "rectification" not in role.forms, role.name
