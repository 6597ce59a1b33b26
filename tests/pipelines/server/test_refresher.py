"""The portal's background refresh (:mod:`pipelines.server.refresher`) on a real store file
and the real :func:`~pipelines.reports.process.refresh_outputs`: a first snapshot at start,
new data → one new snapshot after a burst, a failed refresh keeps the last good one and says
why, old folders go, stop() is prompt; and through a real `manyi serve`, a phone's submission
leads to a new snapshot on disk."""

from __future__ import annotations

import gc
import json
import signal
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

import pytest

from forms.schema import load_schema
from pipelines.analysis.plan import load_plan
from pipelines.analysis.rosters import write_rosters
from pipelines.config import SHANGHAI, Settings
from pipelines.errors import ConfigError
from pipelines.records import Record
from pipelines.server.refresher import MARKER, PORTAL_DIR, Refresher
from pipelines.store import Store, open_store
from tests.pipelines.reports._town import V1, rosters, submissions, town_settings
from tests.pipelines.server._collect import Collect, ok
from tests.pipelines.server._server import start_server
from tests.pipelines.server.test_openrosa import JPEG, _people, sweep_xml

FAST = {"quiet_s": 0.5, "max_wait_s": 30.0, "poll_s": 0.1}
TOWN_ROWS = sum(len(rows) for rows in submissions().values())


def _wait(what: str, check: Callable[[], object], timeout: float = 60.0) -> object:
    """Poll ``check`` until it is truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


@pytest.fixture
def town(tmp_path: Path, built_forms) -> Settings:
    """The small town year of the report tests in a real store, pulled as a source would."""
    write_rosters(rosters(), tmp_path / "rosters")
    settings = town_settings(tmp_path, built_forms.out_dir, rosters_dir=tmp_path / "rosters")
    with open_store(settings) as store:
        for form_id, rows in submissions().items():
            version = load_schema(built_forms.out_dir, form_id).version
            page = [Record(form_id, iid, version, f"{day}T02:00:00.000Z", f"{day}T02:00:00.000Z",
                           "received", data) for iid, day, data in rows]  # fmt: skip
            store.write_page("central", form_id, page, cursor={"page": 1})
    return settings


@pytest.fixture
def refresher(town: Settings) -> Iterator[Refresher]:
    r = Refresher(town, **FAST)
    yield r
    r.stop()


def _sweep(settings: Settings, n: int = 1) -> list[str]:
    """``n`` new 人居环境整治巡查 stored page by page, as a pull stores them."""
    version = load_schema(settings.build_dir, "sanitation_sweep").version
    ids = []
    with open_store(settings) as store:
        for _ in range(n):
            iid = f"uuid:{uuid.uuid4()}"
            data = {"basic": {"village": V1, "check_date": "2023-06-25", "has_findings": "no"},
                    "summary": {"score": 95}}  # fmt: skip
            rec = Record("sanitation_sweep", iid, version, "2023-06-25T02:00:00.000Z", None,
                         "received", data)  # fmt: skip
            store.write_page("central", "sanitation_sweep", [rec], cursor={"last": iid})
            ids.append(iid)
    return ids


def _folders(settings: Settings) -> list[str]:
    root = Path(settings.outputs_dir) / PORTAL_DIR
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def _newest_seen(settings: Settings) -> datetime:
    with open_store(settings, read_only=True) as store:
        (stamp,) = store.db.execute("SELECT MAX(first_seen_at) FROM submissions").fetchone()
    return datetime.fromisoformat(stamp).astimezone(SHANGHAI)


# ---- the first snapshot ------------------------------------------------------------------
def test_start_makes_a_first_snapshot_with_todays_reports_and_says_how_old_its_data_is(
    town, refresher
) -> None:
    assert refresher.status().current is None and refresher.current() is None
    refresher.start()
    snap = _wait("a first snapshot", refresher.current)
    now, year = datetime.now(SHANGHAI).date(), town.plan_year
    today = min(max(now, date(year, 1, 1)), date(year, 12, 31))  # today, within the plan year
    assert snap.as_of == today and snap.outputs.submissions == TOWN_ROWS
    assert snap.folder == Path(town.outputs_dir) / PORTAL_DIR / snap.id
    assert (snap.folder / "index.html").is_file()
    assert (snap.folder / "maps" / "overview.html").is_file()
    day = today.isoformat()
    reports = {p.name for p in (snap.folder / day).iterdir()}
    assert f"月调度通报_{today:%Y-%m}_内部版.html" in reports
    assert f"跟进清单_{day}.csv" in reports and f"数据质量_{day}.xlsx" in reports
    # 数据截至: when the newest data reached the store, in Shanghai time, not the refresh time
    assert snap.made_at.tzinfo is not None and snap.data_as_of.tzinfo is not None
    assert snap.data_as_of == _newest_seen(town) <= snap.made_at
    marker = json.loads((snap.folder / MARKER).read_text(encoding="utf-8"))
    assert marker["id"] == snap.id and marker["as_of"] == today.isoformat()
    assert datetime.fromisoformat(marker["data_as_of"]) == snap.data_as_of
    status = refresher.status()
    assert status.current is snap and status.data_as_of == snap.data_as_of
    assert (status.refreshes, status.failures, status.last_error) == (1, 0, None)
    assert not status.pending and not status.running


def test_the_report_date_is_kept_in_the_plan_year_or_fixed_by_as_of(town) -> None:
    year = town.plan_year
    made = datetime(year + 3, 11, 30, 10, 0, tzinfo=SHANGHAI)
    assert Refresher(town)._as_of(made) == date(year, 12, 31)  # after the year: its year-end
    assert Refresher(town)._as_of(made.replace(year=year - 1)) == date(year, 1, 1)
    assert Refresher(town)._as_of(made.replace(year=year)) == date(year, 11, 30)
    fixed = Refresher(town, as_of=date(year, 10, 15))
    assert fixed._as_of(made) == date(year, 10, 15)
    assert fixed.refresh_now().as_of == date(year, 10, 15)


def test_a_restart_makes_a_fresh_snapshot_and_removes_the_previous_runs_folders(town) -> None:
    first = Refresher(town, **FAST)
    old = first.refresh_now()
    first.stop()
    portal = Path(town.outputs_dir) / PORTAL_DIR
    killed = portal / "20230101T000000-dead"  # a run killed mid-refresh: no snapshot.json
    (killed / "maps").mkdir(parents=True)
    mine = portal / "published"  # not a snapshot: never touched
    mine.mkdir()
    again = Refresher(town, **FAST)
    try:
        again.start()
        snap = _wait("a snapshot after the restart", again.current)
        assert snap.id != old.id and snap.outputs.submissions == TOWN_ROWS
        expected = sorted([snap.id, "published"])  # folders go just after the swap
        _wait(f"only {expected} left", lambda: _folders(town) == expected, timeout=10)
    finally:
        again.stop()


# ---- new data --------------------------------------------------------------------------
def test_a_burst_of_submissions_gives_one_new_snapshot_with_all_of_them(town, refresher) -> None:
    refresher.start()
    first = _wait("a first snapshot", refresher.current)
    for _ in range(10):  # ten pages 0.1 s apart: each resets the 0.5 s quiet time
        _sweep(town)
        time.sleep(0.1)
    burst = lambda: refresher.status().refreshes >= 2 and refresher.current()  # noqa: E731
    snap = _wait("a snapshot of the burst", burst)
    assert snap.id != first.id and snap.outputs.submissions == TOWN_ROWS + 10
    assert snap.data_as_of == _newest_seen(town) > first.data_as_of
    time.sleep(3 * FAST["quiet_s"])  # nothing new: no further refresh
    status = refresher.status()
    assert status.refreshes == 2 and status.current is snap and not status.pending


def test_data_arriving_during_a_refresh_brings_another(town, refresher) -> None:
    refresher.start()
    _wait("the first refresh under way", lambda: refresher.status().running, timeout=10)
    time.sleep(0.2)  # past its fingerprint, taken first
    _sweep(town)
    snap = _wait(
        "a second snapshot", lambda: refresher.status().refreshes >= 2 and refresher.current()
    )
    assert snap.outputs.submissions == TOWN_ROWS + 1


def test_a_steady_stream_is_refreshed_after_max_wait_without_waiting_for_quiet(town) -> None:
    r = Refresher(town, quiet_s=1.0, max_wait_s=1.5, poll_s=0.1)
    try:
        r.start()
        _wait("a first snapshot", r.current)
        deadline = time.monotonic() + 30
        while r.status().refreshes < 2:  # a page every 0.2 s: never 1 s quiet
            assert time.monotonic() < deadline, "no refresh within 30 s of a steady stream"
            _sweep(town)
            time.sleep(0.2)
        assert r.current().outputs.submissions > TOWN_ROWS
    finally:
        r.stop()


def test_poke_refreshes_without_waiting_for_a_poll(town) -> None:
    r = Refresher(town, quiet_s=0.2, max_wait_s=30, poll_s=3600)  # polls never come
    try:
        r.start()
        first = _wait("a first snapshot", r.current)
        _sweep(town)
        r.poke()
        snap = _wait("a snapshot after poke()", lambda: r.status().refreshes >= 2 and r.current())
        assert snap.id != first.id and snap.outputs.submissions == TOWN_ROWS + 1
    finally:
        r.stop()


# ---- failures --------------------------------------------------------------------------
def _roads(path: Path, settings: Settings) -> Path:
    """A surveyed road file for the plan's first segment (read when the maps are drawn)."""
    seg = load_plan(settings.plan).segments[0]
    line = [[117.25, 35.17], [117.26, 35.175]]
    feature = {"type": "Feature", "properties": {"segment_id": seg.segment_id},
               "geometry": {"type": "LineString", "coordinates": line}}  # fmt: skip
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}), "utf-8")
    return path


def test_a_failed_refresh_keeps_the_last_good_snapshot_shows_why_and_recovers(
    town, tmp_path
) -> None:
    roads = _roads(tmp_path / "roads.geojson", town)
    good = roads.read_bytes()
    r = Refresher(replace(town, roads=roads), **FAST)
    try:
        r.start()
        first = _wait("a first snapshot", r.current)
        # a broken export replaces the road file: the refresh fails at the maps, after
        # it has written the reports
        roads.write_text("{ not a geojson", encoding="utf-8")
        _sweep(town)
        status = _wait("a failed refresh", lambda: r.status().failures and r.status())
        assert status.current is first and r.current() is first
        assert status.last_error.startswith("刷新失败，仍显示上次的数据")
        assert "roads.geojson" in status.last_error and "\n" not in status.last_error
        assert "Traceback" not in status.last_error
        assert status.last_error_at.tzinfo is not None
        assert _folders(town) == [first.id]  # its half-written folder is gone
        assert (first.folder / "index.html").is_file() and (first.folder / MARKER).is_file()
        # fixed: the next change refreshes, and the error clears
        roads.write_bytes(good)
        _sweep(town)
        snap = _wait("a refresh after the fix", lambda: r.status().refreshes >= 2 and r.current())
        assert snap.outputs.submissions == TOWN_ROWS + 2
        status = r.status()
        assert (status.last_error, status.last_error_at, status.failures) == (None, None, 1)
    finally:
        r.stop()


def test_an_unwritable_portal_folder_fails_in_chinese_then_a_fix_refreshes(town) -> None:
    portal = Path(town.outputs_dir) / PORTAL_DIR
    portal.parent.mkdir(parents=True)
    portal.write_text("not a folder", encoding="utf-8")  # where the snapshots must go
    r = Refresher(town, **FAST)
    with pytest.raises(OSError):
        r.refresh_now()
    status = r.status()
    assert status.current is None and status.failures == 1
    assert status.last_error.startswith("刷新失败") and PORTAL_DIR in status.last_error
    portal.unlink()
    snap = r.refresh_now()
    assert r.status().last_error is None and r.current() is snap
    assert (snap.folder / MARKER).is_file()


def test_old_snapshot_folders_go_and_only_the_current_keeps_its_frames(town) -> None:
    r = Refresher(town, **FAST)
    snaps = [r.refresh_now()]
    frames = weakref.ref(snaps[0].outputs)
    for _ in range(3):
        snaps.append(r.refresh_now())
        assert set(_folders(town)) <= {s.id for s in snaps[-2:]}  # current and the one before
    assert _folders(town) == sorted(s.id for s in snaps[-2:])
    assert r.status().refreshes == 4
    del snaps[:-1]
    gc.collect()
    assert frames() is None  # the first snapshot's frames are not kept by the refresher


# ---- settings and stopping ---------------------------------------------------------------
@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf", ""])
def test_a_bad_interval_in_the_environment_names_the_variable(town, monkeypatch, value) -> None:
    monkeypatch.setenv("MANYI_REFRESH_MAX_WAIT_S", value or " ")
    if not value:  # blank: the default
        assert Refresher(town).max_wait_s == 120.0
        return
    with pytest.raises(ConfigError, match="MANYI_REFRESH_MAX_WAIT_S") as e:
        Refresher(town)
    assert "大于 0 的秒数" in str(e.value)


def test_intervals_come_from_arguments_then_environment_then_defaults(town, monkeypatch) -> None:
    monkeypatch.setenv("MANYI_REFRESH_QUIET_S", "0.25")
    monkeypatch.setenv("MANYI_REFRESH_POLL_S", "2")
    r = Refresher(town, poll_s=7)
    assert (r.quiet_s, r.max_wait_s, r.poll_s) == (0.25, 120.0, 7.0)
    with pytest.raises(ConfigError, match="poll_s"):
        Refresher(town, poll_s=0)


def test_stop_returns_promptly_while_waiting_and_twice(town) -> None:
    r = Refresher(town, quiet_s=30, max_wait_s=600, poll_s=600)
    r.start()
    _wait("a first snapshot", r.current)
    started = time.monotonic()
    r.stop()
    assert time.monotonic() - started < 2.0
    assert not r._thread.is_alive()
    r.stop()  # idempotent


def test_stop_during_a_refresh_returns_promptly_and_leaves_no_broken_current(town) -> None:
    r = Refresher(town, **FAST)
    r.start()
    _wait("a refresh under way", lambda: r.status().running, timeout=10)
    started = time.monotonic()
    r.stop()
    assert time.monotonic() - started < 2.0
    # whichever way it ended, a current snapshot is a complete one
    _wait("the abandoned refresh to end", lambda: not r._thread.is_alive())
    if (snap := r.current()) is not None:
        assert (snap.folder / MARKER).is_file()


# ---- through a real `manyi serve` --------------------------------------------------------
def _snapshots(outputs: Path) -> list[dict]:
    """The complete snapshots on disk (those whose snapshot.json is written)."""
    found = []
    for marker in sorted((outputs / PORTAL_DIR).glob(f"*/{MARKER}")):
        try:
            found.append(json.loads(marker.read_text(encoding="utf-8")))
        except (OSError, ValueError):  # removed or replaced while we read
            continue
    return found


def test_a_phone_submission_to_manyi_serve_leads_to_a_new_snapshot(built_forms, tmp_path) -> None:
    data = tmp_path / "data"
    tokens = _people(data)
    env = {"MANYI_REFRESH_QUIET_S": "0.5", "MANYI_REFRESH_POLL_S": "0.2",
           "MANYI_REFRESH_MAX_WAIT_S": "10"}  # fmt: skip
    server = start_server(data, built_forms.out_dir, env=env)
    outputs = data / "outputs"
    try:
        first = _wait("the server's first snapshot", lambda: _snapshots(outputs))[-1]
        assert first["submissions"] == 0
        version = next(b.version for b in built_forms.built if b.form_id == "sanitation_sweep")
        with Collect(f"{server.url}/key/{tokens['cadre']}") as phone:
            (answer,) = phone.send(sweep_xml(version), {"1764374400001.jpg": JPEG}, "巡查")
        assert answer.status == 201 and ok(answer)
        newer = _wait(
            "a snapshot holding the submission",
            lambda: [s for s in _snapshots(outputs) if s["submissions"] == 1],
        )[-1]
        assert datetime.fromisoformat(newer["made_at"]) > datetime.fromisoformat(first["made_at"])
        with Store(data / "manyi.sqlite", data) as store:
            (received,) = store.db.execute("SELECT received_at FROM local_submissions").fetchone()
        assert datetime.fromisoformat(newer["data_as_of"]) == datetime.fromisoformat(received)
        assert (outputs / PORTAL_DIR / newer["id"] / "index.html").is_file()
    finally:
        server.stop()
    assert "Application shutdown complete" in server.log(), server.log()[-2000:]
    assert "refresh failed" not in server.log()


def test_a_server_stopped_at_once_exits_cleanly_during_its_first_refresh(
    built_forms, tmp_path
) -> None:
    data = tmp_path / "data"
    server = start_server(data, built_forms.out_dir)
    started = time.monotonic()
    server.stop()
    log = server.log()
    # uvicorn re-raises the SIGTERM once the lifespan (and so the refresher) has ended
    assert server.proc.returncode in (0, -signal.SIGTERM), log[-2000:]
    assert time.monotonic() - started < 15 and "Application shutdown complete" in log, log[-2000:]
    assert "Traceback" not in log and "Fatal Python error" not in log
