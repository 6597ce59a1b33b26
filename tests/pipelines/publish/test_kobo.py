"""Publishing built forms to the KoboToolbox stand-in: import, media, deployment, ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from openpyxl import load_workbook

from pipelines.errors import SourceError
from pipelines.publish.kobo import publish as kobo_publish
from pipelines.store import open_store
from pipelines.sync import pull
from tests.pipelines._built import FORM as FORM_P
from tests.pipelines._built import TITLE, build
from tests.pipelines.sources.test_kobo import ASSET, FAST, FIXTURES, settings_for
from tests.standins.kobo_server import TOKEN, KoboStandIn


def _writes(server: KoboStandIn) -> list[tuple[str, str]]:
    return [(m, p.split("?")[0]) for m, p in server.requests if m != "GET"]


def _published_asset(server: KoboStandIn) -> dict:
    (asset,) = [a for a in server.assets.values() if a["name"] == TITLE]
    return asset


def test_publish_imports_deploys_then_skips_then_redeploys(kobo, tmp_path: Path) -> None:
    s = settings_for(kobo, tmp_path)
    build_dir = build(tmp_path / "build", "2026010101")
    kobo.import_polls = 2  # kpi's Celery task answers "processing" first (fixture 24)
    report = kobo_publish(s, build_dir=build_dir, policy=FAST)
    assert (report.created, report.updated, report.skipped) == ([FORM_P], [], [])
    asset = _published_asset(kobo)
    uid = asset["uid"]
    assert asset["asset_type"] == "survey"  # library=false was sent
    assert asset["has_deployment"] and asset["deployment__active"]
    assert asset["deployed_version_id"] == asset["version_id"]
    assert asset["content"]["settings"]["version"] == "2026010101"
    (media,) = kobo.asset_files[uid].values()
    assert media["metadata"]["filename"] == "households.csv"
    assert media["_bytes"] == (build_dir / "households.csv").read_bytes()
    assert _writes(kobo) == [
        ("POST", "/api/v2/imports/"),
        ("POST", f"/api/v2/assets/{uid}/files/"),
        ("POST", f"/api/v2/assets/{uid}/deployment/"),
    ]
    polls = [p for m, p in kobo.requests if p.startswith("/api/v2/imports/i")]
    assert len(polls) == 3

    kobo.requests.clear()
    again = kobo_publish(s, build_dir=build_dir, policy=FAST)
    assert (again.created, again.updated, again.skipped) == ([], [], [FORM_P])
    assert _writes(kobo) == []

    first_version = asset["deployed_version_id"]
    build(build_dir, "2026010102", note_label="情况说明")
    kobo.requests.clear()
    report = kobo_publish(s, [FORM_P], build_dir=build_dir, policy=FAST)
    assert (report.created, report.updated, report.skipped) == ([], [FORM_P], [])
    assert _writes(kobo) == [
        ("POST", "/api/v2/imports/"),
        ("PATCH", f"/api/v2/assets/{uid}/deployment/"),
    ]
    assert len(kobo.assets) == 2  # the same project, replaced (destination), not a new one
    assert asset["deployed_version_id"] != first_version
    assert asset["deployed_version_id"] == asset["version_id"]
    assert [v["uid"] for v in asset["deployed_versions"]["results"]][1] == first_version
    assert asset["content"]["settings"]["version"] == "2026010102"


def test_a_changed_roster_is_replaced_and_redeployed(kobo, tmp_path: Path) -> None:
    s = settings_for(kobo, tmp_path)
    build_dir = build(tmp_path / "build", "2026010101")
    kobo_publish(s, build_dir=build_dir, policy=FAST)
    uid = _published_asset(kobo)["uid"]
    (old,) = kobo.asset_files[uid]
    build(build_dir, "2026010101", roster="name,label\nh1,示例户一\nh3,新户\n")
    kobo.requests.clear()
    report = kobo_publish(s, build_dir=build_dir, policy=FAST)
    assert report.updated == [FORM_P]
    assert _writes(kobo) == [  # no new import: the form itself did not change
        ("DELETE", f"/api/v2/assets/{uid}/files/{old}/"),
        ("POST", f"/api/v2/assets/{uid}/files/"),
        ("PATCH", f"/api/v2/assets/{uid}/deployment/"),
    ]
    (media,) = kobo.asset_files[uid].values()
    assert "新户".encode() in media["_bytes"]


def test_a_form_changed_on_the_server_is_published_again(kobo, tmp_path: Path) -> None:
    s = settings_for(kobo, tmp_path)
    build_dir = build(tmp_path / "build", "2026010101")
    kobo_publish(s, build_dir=build_dir, policy=FAST)
    asset = _published_asset(kobo)
    asset["version_id"] = "vEditedInTheFormBuilder0"  # someone edited and redeployed it
    kobo.deploy(asset["uid"], True)
    report = kobo_publish(s, build_dir=build_dir, policy=FAST)
    assert report.updated == [FORM_P]
    assert asset["deployed_version_id"] not in ("vEditedInTheFormBuilder0",)


def test_kobo_rejections_name_the_form(kobo, tmp_path: Path) -> None:
    s = settings_for(kobo, tmp_path)
    build_dir = build(tmp_path / "build", "2026010101")
    (build_dir / "roster_check.xlsx").write_bytes(b"not a workbook")
    with pytest.raises(SourceError) as err:
        kobo_publish(s, build_dir=build_dir, policy=FAST)
    assert "could not import roster_check" in str(err.value)
    assert "XlsFormatException: Unsupported format, or corrupt file" in str(err.value)

    build(build_dir, "2026010101")
    book = load_workbook(build_dir / "roster_check.xlsx")
    survey = book["survey"]
    for cell in survey[3][2:4]:  # the labels of `note`
        cell.value = None
    book.save(build_dir / "roster_check.xlsx")
    with pytest.raises(SourceError) as err:
        kobo_publish(s, build_dir=build_dir, policy=FAST)
    text = str(err.value)
    assert "refused to deploy roster_check" in text
    assert "The survey element named 'note' has no label or hint." in text
    assert TOKEN not in text


def test_a_form_published_to_kobo_is_pulled_by_its_form_id(kobo, tmp_path: Path) -> None:
    s = settings_for(kobo, tmp_path)
    build_dir = build(tmp_path / "build", "2026010101")
    kobo_publish(s, build_dir=build_dir, policy=FAST)
    uid = _published_asset(kobo)["uid"]
    kobo.add_submission(uid, {"household": "h1", "note": "已核查"})
    report = pull(s, "kobo", [FORM_P], policy=FAST)
    assert report.new == 1
    with open_store(s) as store:
        (rec,) = store.records(FORM_P)
    assert rec.data == {
        "household": "h1",
        "note": "已核查",
        "meta": {"instanceID": rec.instance_id},
    }
    # with no --form, the project is listed under its form id too
    assert pull(s, "kobo", None, policy=FAST).forms[-1].form_id == FORM_P


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())["response"]


def test_the_stand_in_answers_publishing_calls_as_the_kpi_fixtures(kobo) -> None:
    """Fixtures 04, 05/24/26, 06, 29 and 30: statuses, key sets and error bodies."""
    http = requests.Session()
    http.headers["Authorization"] = f"Token {TOKEN}"
    base = f"{kobo.url}/api/v2"
    bad = http.post(
        f"{base}/imports/", files={"file": ("x.xlsx", b"junk")}, data={"library": "false"}
    )
    assert bad.status_code == _fixture("04_import_create.json")["status"] == 201
    assert list(bad.json()) == list(_fixture("04_import_create.json")["body"])
    status = http.get(bad.json()["url"]).json()
    assert list(status) == list(_fixture("24_import_status_processing.json")["body"])
    status = http.get(bad.json()["url"]).json()
    assert status["messages"] == _fixture("26_import_status_error.json")["body"]["messages"]

    deployed = http.post(f"{base}/assets/{ASSET}/deployment/", json={"active": True})
    expected = _fixture("29_error_deployment_post_when_deployed.json")
    assert (deployed.status_code, deployed.json()) == (expected["status"], expected["body"])

    kobo.add_asset("aDraft0000000000000000", "draft")
    kobo.assets["aDraft0000000000000000"].update(
        has_deployment=False,
        content={"survey": [{"type": "integer", "name": "Enter_an_int_number"}], "settings": {}},
    )
    early = http.patch(f"{base}/assets/aDraft0000000000000000/deployment/", json={"active": True})
    assert (early.status_code, early.json()) == (
        405,
        {"detail": "Use POST to create a new deployment"},
    )
    invalid = http.post(f"{base}/assets/aDraft0000000000000000/deployment/", json={"active": True})
    expected = _fixture("30_error_deployment_xlsform_invalid.json")
    assert (invalid.status_code, invalid.json()) == (expected["status"], expected["body"])
    anonymous = requests.post(f"{base}/imports/", files={"file": ("x.xlsx", b"junk")}, timeout=10)
    expected = _fixture("21_error_no_auth_import_create.json")
    assert (anonymous.status_code, anonymous.json()) == (expected["status"], expected["body"])


def test_a_deployment_made_meanwhile_is_redeployed_not_refused(kobo, tmp_path: Path) -> None:
    """POST deployment → 405 (someone deployed it since we looked): PATCH instead."""
    s = settings_for(kobo, tmp_path)
    build_dir = build(tmp_path / "build", "2026010101")

    def deploy_first(method: str, path: str) -> None:
        if method == "POST" and path.endswith("/deployment/"):
            uid = path.split("/")[4]
            if not kobo.assets[uid]["has_deployment"]:
                kobo.deploy(uid, True)

    kobo.before = deploy_first
    report = kobo_publish(s, build_dir=build_dir, policy=FAST)
    assert report.created == [FORM_P]
    uid = _published_asset(kobo)["uid"]
    assert _writes(kobo)[-2:] == [
        ("POST", f"/api/v2/assets/{uid}/deployment/"),
        ("PATCH", f"/api/v2/assets/{uid}/deployment/"),
    ]
