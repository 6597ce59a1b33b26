"""Pulling an ODK Collect instances folder."""

from __future__ import annotations

from pathlib import Path

from pipelines.store import open_store
from pipelines.sync import pull
from tests.pipelines.sources.exports.test_central_csv import DATA, D, settings


def test_collect_folder_with_a_truncated_instance(tmp_path: Path) -> None:
    s = settings(tmp_path)
    report = pull(s, "files", ["sanitation_sweep"], DATA / "collect")
    assert (report.new, report.quarantined, report.attachments) == (2, 1, 2)
    with open_store(s) as store:
        recs = {r.instance_id: r for r in store.records("sanitation_sweep")}
        assert recs[D].data["piles"] == [{"pile_type": "manure", "photo": "1764374400004.jpg"}]
        assert recs[D].data["note"] == "粪堆靠近水井 & 需尽快处理 <紧急>"
        (bad,) = store.quarantined("sanitation_sweep")
        assert "bad XML" in bad.reason and "08-20-00" in bad.reason
