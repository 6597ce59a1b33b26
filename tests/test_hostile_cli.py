"""Every `manyi` command against a tree of hostile input (issue 9), as a user runs it.

For each bad input: a non-zero exit, exactly one `manyi:` line that names the input, no
traceback, no secret on the terminal; and what was stored before is neither lost nor doubled.
The files are built from their causes by the reader tests; here they go through the CLI.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.store import open_store
from tests.helpers import REPO
from tests.pipelines.test_ingest_hostile import (
    DATA,
    EXPORT,
    GOOD,
    MB,
    collect_with,
    export_with,
    flip_a_byte,
    instance,
    raw_zip,
    set_note,
    zeros_deflated,
)

GEO = REPO / "tests" / "data" / "geo"
SECRET = "s3cret-Pa55word!"
FORM = "sanitation_sweep"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The hostile files, one per cause, each named for what is wrong with it."""
    root = tmp_path_factory.mktemp("hostile")
    t: dict[str, Path] = {}
    t["not_a_zip"] = root / "export.zip"
    t["not_a_zip"].write_bytes(b"PK\x03\x04 this was a chat message, not a zip")
    t["bad_crc"] = export_with(root, "bad_crc.zip", method=zipfile.ZIP_STORED)
    flip_a_byte(t["bad_crc"], "sanitation_sweep.csv")
    data, crc = zeros_deflated(1025)
    t["zip_bomb"] = raw_zip(root / "bomb.zip", [("sanitation_sweep.csv", data, crc, 1025 * MB)])
    t["no_form_csv"] = root / "photos_only.zip"
    with zipfile.ZipFile(t["no_form_csv"], "w") as z:
        z.writestr("readme.txt", "照片")
    t["huge_field"] = export_with(root, "huge_field.zip", set_note("粪" * (17 * MB)))
    t["latin1"] = export_with(
        root, "latin1.zip", encode=lambda text: b"\xff\xfe" + text.encode("utf-16-le")
    )
    t["empty_collect"] = root / "empty_collect"
    t["empty_collect"].mkdir()
    t["garbage_collect"] = root / "garbage_collect" / "instances" / "x"
    t["garbage_collect"].mkdir(parents=True)
    (t["garbage_collect"] / "x.xml").write_bytes(b"\x00\x01 not xml")
    t["garbage_collect"] = t["garbage_collect"].parent.parent
    t["corrupt_xlsx"] = root / "kobo.xlsx"
    t["corrupt_xlsx"].write_bytes((DATA / "kobo_sanitation_sweep.xlsx").read_bytes()[:3000])
    # good data with some bad records in it: stored, and the bad ones quarantined
    t["mixed_collect"] = collect_with(
        root, {"bad_xml": b"<data id='sanitation_sweep'><note>", "surrogate": instance(b"&#xD800;", "uuid:s1")}
    )  # fmt: skip
    return t


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`manyi --data-dir <tmp> …` in this process; returns (exit code, stdout, stderr)."""
    for name in [k for k in os.environ if k.startswith("MANYI_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MANYI_BUILD_DIR", str(DATA / "xforms"))
    monkeypatch.setenv("MANYI_CENTRAL_PASSWORD", SECRET)
    data = tmp_path / "data"

    def _run(*args: str) -> tuple[int, str, str]:
        code = main(["--data-dir", str(data), *args])
        got = capsys.readouterr()
        assert "Traceback" not in got.err + got.out
        assert SECRET not in got.err + got.out
        return code, got.out, got.err

    _run.data = data  # type: ignore[attr-defined]
    return _run


def _the_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("manyi:")]
    assert len(lines) == 1, err
    return lines[0]


def _stored(data: Path) -> int:
    from pipelines.config import load_settings

    s = load_settings({"data_dir": data, "build_dir": DATA / "xforms"}, env={})
    if not s.store_path.exists():
        return 0
    with open_store(s, read_only=True) as store:
        return store.count(FORM)


FILE_CASES = {
    "not_a_zip": "export.zip",
    "bad_crc": "bad_crc.zip",
    "zip_bomb": "bomb.zip",
    "no_form_csv": "photos_only.zip",
    "huge_field": "huge_field.zip",
    "latin1": "latin1.zip",
    "empty_collect": "empty_collect",
    "garbage_collect": "garbage_collect",
    "corrupt_xlsx": "kobo.xlsx",
}


@pytest.mark.parametrize("case", FILE_CASES)
def test_pull_of_a_hostile_file_is_one_line_naming_it_and_keeps_the_store(
    run, tree: dict[str, Path], case: str
) -> None:
    assert run("pull", "--source", "files", "--path", str(EXPORT))[0] == 0
    before = _stored(run.data)
    code, _, err = run("pull", "--source", "files", "--path", str(tree[case]))
    assert code != 0
    assert FILE_CASES[case] in _the_line(err)
    assert _stored(run.data) == before  # nothing lost, nothing doubled
    assert run("pull", "--source", "files", "--path", str(EXPORT))[0] == 0
    assert _stored(run.data) == before


def test_bad_records_among_good_ones_are_listed_and_the_rest_stored_once(
    run, tree: dict[str, Path]
) -> None:
    code, _, err = run("pull", "--source", "files", "--path", str(tree["mixed_collect"]))
    assert code == 0
    quarantined = [line for line in err.splitlines() if line.startswith("quarantined:")]
    # the two planted, and the recorded instance a killed phone cut in half
    assert len(quarantined) == 3, err
    assert all(any(n in q for q in quarantined) for n in ("bad_xml", "surrogate", "08-20-00"))
    stored = _stored(run.data)
    assert stored == sum(1 for _ in GOOD.iterdir()) - 1
    code, out, err = run("pull", "--source", "files", "--path", str(tree["mixed_collect"]))
    assert _stored(run.data) == stored
    code, out, _ = run("quarantine", "list")
    assert code == 0 and "record(s) in quarantine" in out and "bad_xml" in out


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("xlsx_renamed.gpkg", "xlsx_renamed.gpkg"),
        ("villages_no_shp.zip", ".shp"),
        ("villages_metres_no_crs.geojson", "metres"),
        ("villages_swapped.geojson", "swapped"),
        ("villages_beijing.geojson", "km from the town"),
    ],
)
def test_maps_with_a_hostile_boundary_file_is_one_line(run, name: str, says: str) -> None:
    code, _, err = run("maps", "--out", str(run.data / "out"), "--boundaries", str(GEO / name))
    assert code != 0
    line = _the_line(err)
    assert name in line and says in line


def test_report_warns_and_refuses_as_a_user_needs(run, monkeypatch: pytest.MonkeyPatch) -> None:
    out_dir = str(run.data / "out")
    code, _, err = run("report", "--as-of", "2023-13-01", "--out", out_dir)
    assert code != 0 and "2023-13-01" in _the_line(err)
    code, _, err = run("report", "--as-of", "2026-11-29", "--out", out_dir)
    assert code == 0 and "晚于计划年度" in err
    # the recorded Central form is older than the plan: the report says which field is missing
    assert run("pull", "--source", "files", "--path", str(EXPORT))[0] == 0
    code, _, err = run("report", "--as-of", "2023-10-15", "--out", out_dir)
    assert code != 0 and "check_date" in _the_line(err)
    monkeypatch.setenv("MANYI_ROSTERS_DIR", str(run.data / "no_such_rosters"))
    code, _, err = run("report", "--as-of", "2023-10-15", "--out", out_dir)
    assert code != 0 and "no_such_rosters" in _the_line(err)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_server_is_retried_visibly_then_one_line(run, monkeypatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MANYI_CENTRAL_URL", url)
    monkeypatch.setenv("MANYI_CENTRAL_USER", "cadre@example.org")
    monkeypatch.setenv("MANYI_CENTRAL_PROJECT", "1")
    monkeypatch.setenv("MANYI_HTTP_GIVE_UP_S", "1.5")
    code, _, err = run("pull", "--source", "central")
    assert code != 0
    assert "第 1 次重试" in err
    line = _the_line(err)
    assert url in line and "http_give_up_s" in line


def test_credentials_in_a_server_url_are_refused_without_printing_them(run, monkeypatch) -> None:
    monkeypatch.setenv("MANYI_CENTRAL_URL", f"https://cadre:{SECRET}@central.example.org")
    for args in (("pull", "--source", "central"), ("forms", "publish", "--to", "central")):
        code, _, err = run(*args)
        assert code != 0 and "user name or password" in _the_line(err)


def test_a_secret_in_manyi_toml_is_refused(run, tmp_path: Path) -> None:
    config = tmp_path / "manyi.toml"
    config.write_text(f'central_password = "{SECRET}"\n', encoding="utf-8")
    code, _, err = run("--config", str(config), "forms", "list")  # run() checks: no secret shown
    assert code != 0
    line = _the_line(err)
    assert "central_password" in line and "MANYI_CENTRAL_PASSWORD" in line


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("students.xlsx", b"PK\x03\x04 this is not a workbook"),
        ("students.csv", "name,label\n".encode("utf-16")),
        ("students.csv", None),  # a folder where the file should be
    ],
)
def test_a_hostile_roster_is_one_line_from_the_report(
    run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, body: bytes | None
) -> None:
    rosters = tmp_path / "rosters"
    rosters.mkdir()
    if body is None:
        (rosters / name).mkdir()
    else:
        (rosters / name).write_bytes(body)
    monkeypatch.setenv("MANYI_ROSTERS_DIR", str(rosters))
    code, _, err = run("report", "--as-of", "2023-10-15", "--out", str(tmp_path / "out"))
    assert code != 0 and name in _the_line(err)


@pytest.mark.parametrize(
    "body", ["code,name\n".encode("utf-16"), b"code,name\n\x80\xff\xfe", b"PK\x03\x04"]
)
def test_a_hostile_village_register_is_one_line(run, monkeypatch, tmp_path: Path, body) -> None:
    register = tmp_path / "villages.csv"
    register.write_bytes(body)
    monkeypatch.setenv("MANYI_VILLAGES", str(register))
    code, _, err = run("maps", "--out", str(tmp_path / "out"))
    assert code != 0 and "villages.csv" in _the_line(err)


def test_bad_dates_and_missing_inputs_everywhere_are_one_line(run, tmp_path: Path) -> None:
    for args, names in [
        (("demo", "--as-of", "15/10/2023"), "15/10/2023"),
        (("pull", "--source", "files"), "--path"),
        (("pull", "--source", "files", "--path", str(tmp_path / "nowhere.zip")), "nowhere.zip"),
        (("forms", "publish", "--to", "ftp"), "ftp"),
        (("maps", "--boundaries", str(tmp_path / "nowhere.gpkg")), "nowhere.gpkg"),
    ]:
        code, _, err = run(*args)
        assert code != 0 and names in _the_line(err), (args, err)


def test_a_real_process_never_shows_a_traceback(tree: dict[str, Path], tmp_path: Path) -> None:
    """One run as a separate process, as from a shell: stderr is the one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANYI_")}
    env["MANYI_BUILD_DIR"] = str(DATA / "xforms")
    run = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "--data-dir", str(tmp_path / "d"), "pull",
         "--source", "files", "--path", str(tree["zip_bomb"])],
        capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=120,
    )  # fmt: skip
    assert run.returncode != 0
    assert run.stderr.strip().count("\n") == 0 and "bomb.zip" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_bug_is_one_line_and_its_traceback_kept_scrubbed_under_the_data_dir(
    tmp_path: Path,
) -> None:
    """An error manyi did not foresee: one line, and the traceback in the data directory's
    logs without the password (a command that fails the way a bug would, added for the test)."""
    script = f"""
import sys
from pipelines import cli

@cli.app.command("explode")
def explode() -> None:
    raise RuntimeError("lost in thought with {SECRET} at http://u:{SECRET}@h/")

sys.exit(cli.main(sys.argv[1:]))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANYI_")}
    env["MANYI_CENTRAL_PASSWORD"] = SECRET
    data = tmp_path / "d"
    run = subprocess.run(
        [sys.executable, "-c", script, "--data-dir", str(data), "explode"],
        capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=120,
    )  # fmt: skip
    assert run.returncode == 70
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("manyi: unexpected error (RuntimeError") and SECRET not in line
    (log,) = (data / "logs").glob("manyi-crash-*.log")
    assert str(log) in line
    text = log.read_text(encoding="utf-8")
    assert "Traceback" in text and "explode" in text and SECRET not in text
