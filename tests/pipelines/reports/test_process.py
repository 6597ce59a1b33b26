"""``refresh_outputs`` end to end: a real SQLite store → every output file, read back and checked
(the town year is in :mod:`tests.pipelines.reports._town`)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from pathlib import Path

import pytest

from forms.schema import load_schema
from pipelines.cli import main
from pipelines.config import Settings
from pipelines.errors import DataError
from pipelines.records import Record
from pipelines.reports import refresh_outputs
from pipelines.store import open_store
from tests.pipelines.reports._town import (
    AS_OF,
    FULL_NAMES,
    HOME_PHOTO,
    PILE_PHOTO,
    SECRETS,
    V2,
    V3,
    XSS,
    ZHANG_ID,
    ZHANG_PHONE,
    Run,
    gps,
    submissions,
    texts,
    town_settings,
    unmasked,
)

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
    settings = town_settings(tmp_path, build)
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
    result = refresh_outputs(settings, AS_OF)
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
    again = refresh_outputs(settings, AS_OF)
    assert sorted(p.name for p in (again.report_dir / "photos").iterdir()) == sorted([f"{straw}.jpg", f"{walker}.jpg"])  # fmt: skip


def test_records_of_a_form_version_the_build_lacks_are_read_and_noted(tmp_path: Path, build: Path) -> None:  # fmt: skip
    settings = town_settings(tmp_path, build)
    _, day, data = submissions()["culture_event"][1]
    data = {**data, "event": {**data["event"], "old_question": "旧版字段"}}
    with open_store(settings) as store:
        store.write_page("central", "culture_event", [Record("culture_event", "uuid:old", "2020010101", f"{day}T02:00:00.000Z", None, None, data)])  # fmt: skip
    result = refresh_outputs(settings, AS_OF)
    table = result.progress.level("town").set_index("indicator_id")
    assert table.loc["opera_shows", "value"] == 1  # the old version's show still counts
    assert any("2020010101" in w and "按文本读取" in w for w in result.warnings), result.warnings
    public = result.files["dispatch_public_html"].read_text(encoding="utf-8")
    assert "2020010101" not in public  # a note for whoever runs the report, not for WeChat


def test_report_before_any_data_says_no_data(tmp_path: Path, build: Path) -> None:
    settings = town_settings(tmp_path, build)  # no store, no rosters
    result = refresh_outputs(settings, date(2023, 3, 31), tmp_path / "custom")
    assert not settings.store_path.exists()  # nothing created just to find it empty
    assert result.empty and result.out_dir == tmp_path / "custom"
    for edition in ("public", "internal"):
        html = result.files[f"dispatch_{edition}_html"].read_text(encoding="utf-8")
        assert "暂无数据" in html and "2023年3月" in html
    csv = result.files["followups_csv"].read_text(encoding="utf-8-sig").splitlines()
    assert len(csv) == 1 and csv[0].startswith("帮包联系组,村")
    assert (result.out_dir / "maps" / "overview.html").exists()


def test_submissions_without_a_built_form_say_what_to_do(tmp_path: Path, run: Run) -> None:
    settings = town_settings(tmp_path, tmp_path / "no-build", rosters_dir=run.settings.rosters_dir)
    with open_store(settings) as store:
        _, day, data = submissions()["culture_event"][0]
        store.write_page("central", "culture_event", [Record("culture_event", "uuid:x", "1", f"{day}T00:00:00.000Z", None, None, data)])  # fmt: skip
    with pytest.raises(DataError, match="run `manyi forms build` first"):
        refresh_outputs(settings, AS_OF)


# --- warnings that matter, and a disk that cannot take the files (issue 9) ----------------------


def test_an_as_of_date_outside_the_plan_year_is_warned_in_the_report_and_by_the_cli(tmp_path: Path, build: Path, capsys) -> None:  # fmt: skip
    settings = town_settings(tmp_path, build)
    for day, said in ((date(2024, 3, 31), "晚于计划年度 2023 年"), (date(2022, 12, 31), "早于计划年度 2023 年")):  # fmt: skip
        result = refresh_outputs(settings, day)
        assert [w for w in result.warnings if said in w], result.warnings
        for edition in ("public", "internal"):  # whoever reads the report sees it too
            assert said in result.files[f"dispatch_{edition}_html"].read_text(encoding="utf-8")
    for day in (date(2023, 1, 1), date(2023, 12, 31)):
        assert not [w for w in refresh_outputs(settings, day).warnings if "计划年度" in w]
    out = tmp_path / "cli"
    assert main(["--data-dir", str(tmp_path / "data"), "report", "--as-of", "2024-01-15", "--out", str(out)]) == 0  # fmt: skip
    assert "warning: 统计截止日 2024-01-15 晚于计划年度 2023 年" in capsys.readouterr().err


def test_a_configured_roster_folder_that_does_not_exist_is_an_error_not_the_demo_rosters(tmp_path: Path, build: Path, monkeypatch, capsys) -> None:  # fmt: skip
    missing = tmp_path / "名单" / "2023"
    for source in ("demo", "files"):  # the demo source, too, only falls back when unconfigured
        settings = town_settings(tmp_path, build, rosters_dir=missing)
        settings = Settings(**{**settings.__dict__, "source": source})
        with pytest.raises(DataError, match=r"rosters_dir .*名单/2023 .* is not a folder that exists"):  # fmt: skip
            refresh_outputs(settings, AS_OF)
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(DataError, match="is not a folder"):
        refresh_outputs(town_settings(tmp_path, build, rosters_dir=tmp_path / "a-file"), AS_OF)
    # through the CLI: one line naming the setting, where it was set, and the path
    monkeypatch.setenv("MANYI_ROSTERS_DIR", str(missing))
    assert main(["--data-dir", str(tmp_path / "data"), "report", "--as-of", "2023-06-30", "--out", str(tmp_path / "o")]) == 1  # fmt: skip
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "rosters_dir" in line and "MANYI_ROSTERS_DIR" in line and str(missing) in line
    assert "Traceback" not in line


def test_only_the_unconfigured_default_roster_folder_may_be_missing(tmp_path: Path, build: Path) -> None:  # fmt: skip
    demo = Settings(data_dir=tmp_path / "data", outputs_dir=tmp_path / "out", build_dir=build, source="demo")  # fmt: skip
    assert any(
        "示例名单" in w for w in refresh_outputs(demo, AS_OF).warnings
    )  # invented, and said so
    files = town_settings(tmp_path, build)
    assert any("未找到名单" in w for w in refresh_outputs(files, AS_OF).warnings)


@pytest.mark.parametrize("key", ["followups_csv", "quality_xlsx", "dispatch_internal_html"])
def test_a_full_disk_while_writing_the_report_is_one_line_naming_the_file(tmp_path: Path, run: Run, key: str, capsys) -> None:  # fmt: skip
    # /dev/full takes the open and refuses every write with ENOSPC: a real full disk, for one file
    first = refresh_outputs(run.settings, AS_OF, tmp_path / "out")
    target = first.files[key]
    target.unlink()
    target.symlink_to("/dev/full")
    with pytest.raises(DataError) as caught:
        refresh_outputs(run.settings, AS_OF, tmp_path / "out")
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
