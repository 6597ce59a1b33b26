"""Publishing built forms to the ODK Central stand-in: drafts, attachments, versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.errors import ConfigError, SourceError
from pipelines.publish.central import publish as central_publish
from tests.pipelines._built import FORM as FORM_P
from tests.pipelines._built import build
from tests.pipelines.sources.test_central import PASSWORD, settings_for
from tests.standins.central_server import CentralStandIn


def _posts(server: CentralStandIn) -> list[str]:
    return [p for m, p in server.requests if m == "POST" and "/sessions" not in p]


def test_publish_creates_then_skips_then_updates_through_a_draft(central, tmp_path: Path) -> None:
    s = settings_for(central, tmp_path)
    build_dir = build(tmp_path / "build", "2026010101")
    report = central_publish(s, build_dir=build_dir)
    assert (report.created, report.updated, report.skipped) == ([FORM_P], [], [])
    form = central.forms[FORM_P]
    assert [v["version"] for v in form.versions] == ["2026010101"]
    assert form.xml == (build_dir / "roster_check.xml").read_bytes()
    assert form.attachments["households.csv"] == (build_dir / "households.csv").read_bytes()
    posts = _posts(central)
    assert posts[0].startswith("/v1/projects/1/forms?") and "publish=false" in posts[0]
    assert posts[1].endswith("/forms/roster_check/draft/attachments/households.csv")
    assert posts[2].endswith("/forms/roster_check/draft/publish?version=2026010101")

    central.requests.clear()
    again = central_publish(s, build_dir=build_dir)
    assert (again.created, again.updated, again.skipped) == ([], [], [FORM_P])
    assert _posts(central) == []  # nothing sent: same version, hash and roster

    build(build_dir, "2026010102", note_label="情况说明")
    central.requests.clear()
    report = central_publish(s, [FORM_P], build_dir=build_dir)
    assert (report.created, report.updated, report.skipped) == ([], [FORM_P], [])
    posts = _posts(central)
    assert posts[0].split("?")[0].endswith("/forms/roster_check/draft")  # the new XML
    assert posts[-1].endswith("/draft/publish?version=2026010102")
    assert [v["version"] for v in form.versions] == ["2026010102", "2026010101"]
    assert "情况说明".encode() in form.xml
    assert form.attachments["households.csv"] == (build_dir / "households.csv").read_bytes()


def test_a_changed_roster_without_a_new_version_is_refused(central, tmp_path: Path) -> None:
    s = settings_for(central, tmp_path)
    build_dir = build(tmp_path / "build", "2026010101")
    central_publish(s, build_dir=build_dir)
    build(build_dir, "2026010101", roster="name,label\nh1,示例户一\nh3,新户\n")
    with pytest.raises(SourceError) as err:
        central_publish(s, build_dir=build_dir)
    assert "roster_check: households.csv changed" in str(err.value)
    assert "raise the version" in str(err.value)
    assert b"h3" not in central.forms[FORM_P].attachments["households.csv"]


def test_a_form_central_rejects_is_a_clear_error_naming_it(central, tmp_path: Path) -> None:
    s = settings_for(central, tmp_path)
    build_dir = build(tmp_path / "build", "2026010101")
    build(build_dir, "2026010101", form_id="broken_form", title="坏表")
    xml = build_dir / "broken_form.xml"
    xml.write_text(xml.read_text(encoding="utf-8")[:400], encoding="utf-8")  # cut short
    with pytest.raises(SourceError) as err:
        central_publish(s, build_dir=build_dir)
    text = str(err.value)
    assert "refused to publish broken_form" in text and "HTTP 400" in text
    assert "Could not parse the given data" in text and "400.1" in text
    assert PASSWORD not in text and not any(t in text for t in central.tokens)
    assert FORM_P in central.forms  # the form before it was published


def test_publish_needs_a_build(central, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="manyi forms build"):
        central_publish(settings_for(central, tmp_path), build_dir=tmp_path / "nothing")
