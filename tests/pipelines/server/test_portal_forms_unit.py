"""The rectification form as the portal serves it: prefilled, and dated within a past report."""

from __future__ import annotations

from pathlib import Path

from defusedxml import ElementTree as SafeET

from pipelines.server._portal_forms import prefilled


def test_prefill_sets_the_defaults_and_a_past_date_for_the_first_load(built_forms) -> None:
    xml = (Path(built_forms.out_dir) / "rectification.xml").read_bytes()
    out = prefilled(xml, {"item_id": "pdnmrrmbkqnsgnbc", "finding": "垃圾<堆> & 杂物"},
                    {"fix_date": "2023-10-15"})  # fmt: skip
    root = SafeET.fromstring(out)
    texts = {el.tag.rsplit("}", 1)[-1]: el.text for el in root.iter()}
    assert texts["item_id"] == "pdnmrrmbkqnsgnbc"
    assert texts["finding"] == "垃圾<堆> & 杂物"  # escaped in the XML, the same text read back
    values = [el.get("value") for el in root.iter() if el.tag.endswith("setvalue")]
    assert values == ["'2023-10-15'"]
    plain = SafeET.fromstring(prefilled(xml, {"item_id": "x"}))
    assert [el.get("value") for el in plain.iter() if el.tag.endswith("setvalue")] == ["today()"]
