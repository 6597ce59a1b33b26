"""Pulling a real Central ``submissions.csv.zip`` export (hostile files:
tests/pipelines/test_ingest_hostile.py)."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from pipelines.config import load_settings
from pipelines.store import open_store
from pipelines.sync import pull
from tests.helpers import REPO

DATA = REPO / "tests" / "data" / "pipelines"
A = "uuid:3dc0d0ad-4d90-48d4-b67e-ab048822f54e"
D = "uuid:5c7a1aa4-e43d-40eb-a0e2-b8ff50841c0c"


def settings(tmp_path: Path):
    return load_settings({"data_dir": tmp_path / "data", "build_dir": DATA / "xforms"}, env={})


def test_central_export_zip_gives_the_same_records_as_odata(tmp_path: Path) -> None:
    s = settings(tmp_path)
    report = pull(s, "files", None, DATA / "sanitation_sweep.csv.zip")
    assert (report.new, report.quarantined, report.attachments) == (6, 1, 3)
    with open_store(s) as store:
        recs = {r.instance_id: r for r in store.records("sanitation_sweep")}
        a = recs[A]
        assert a.data["location"] == "35.17 117.26 50.0 5.0"
        assert [p["pile_type"] for p in a.data["piles"]] == ["firewood", "manure"]
        assert a.data["meta"]["instanceID"] == A and a.form_version == "2023010101"
        assert recs["uuid:a2f6d64c-1c81-47d5-9a01-777768a5afce"].review_state == "hasIssues"
        (photo,) = store.attachments("sanitation_sweep", A)
        assert photo.local_path.read_bytes() == zipfile.ZipFile(
            DATA / "sanitation_sweep.csv.zip"
        ).read("media/1764374400001.jpg")
    again = pull(s, "files", None, DATA / "sanitation_sweep.csv.zip")
    assert (again.new, again.updated, again.attachments) == (0, 0, 0)


def test_media_names_in_a_zip_cannot_escape(tmp_path: Path) -> None:
    zpath = tmp_path / "evil.zip"
    with (
        zipfile.ZipFile(DATA / "sanitation_sweep.csv.zip") as src,
        zipfile.ZipFile(zpath, "w") as out,
    ):
        for name in src.namelist():
            body = src.read(name)
            if name == "sanitation_sweep-piles.csv":
                body = body.replace(b"1764374400001.jpg", b"../../evil.jpg")
            out.writestr(name.replace("1764374400001.jpg", "../../evil.jpg"), body)
    s = settings(tmp_path / "inner")
    pull(s, "files", None, zpath)
    with open_store(s) as store:
        (att,) = store.attachments("sanitation_sweep", A)
    assert att.name == "../../evil.jpg" and att.status == "stored"
    assert att.local_path.resolve().is_relative_to((tmp_path / "inner").resolve())
    assert not list(tmp_path.rglob("evil.jpg"))
    shutil.rmtree(tmp_path / "inner")
