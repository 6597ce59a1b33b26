"""The command line: help everywhere, one clear line on errors, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from pipelines.cli import app, main
from tests.helpers import REPO


def _commands(group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            found += _commands(cmd, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def test_forms_commands_exist() -> None:
    assert {("forms", "build"), ("forms", "list"), ("forms", "sync-villages")} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "manyi")
def test_help_works_for_every_command(command: tuple[str, ...], capsys) -> None:
    assert main([*command, "--help"]) == 0
    assert "Usage:" in capsys.readouterr().out


def test_forms_list_prints_every_form(capsys) -> None:
    assert main(["forms", "list"]) == 0
    text = capsys.readouterr().out
    for form_id in ("sanitation_sweep", "dibao_verification", "publicity_item"):
        assert form_id in text
    assert "低保核查" in text


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "manyi.toml"
    bad.write_text('source = "ftp"\n', encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "--config", str(bad), "forms", "list"],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"manyi: source 'ftp' is unknown (set in {bad}); use one of: demo, central, kobo, files"
    ]
    assert "Traceback" not in run.stderr


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "manyi"
    run = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert run.returncode == 0 and "forms" in run.stdout


def test_unknown_command_is_a_usage_error(capsys) -> None:
    assert main(["nope"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_maps_command_draws_zero_coverage_offline(tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "out"
    assert main(["maps", "--out", str(out_dir)]) == 0
    assert "open" in capsys.readouterr().out
    maps = sorted(p.stem for p in (out_dir / "maps").glob("*.html"))
    assert "overview" in maps and len(maps) == 7
    index = (out_dir / "index.html").read_text(encoding="utf-8")
    for name in maps:
        assert f"maps/{name}.html" in index
    html = (out_dir / "maps" / "overview.html").read_text(encoding="utf-8")
    assert "示意边界" in html and "暂无数据" in html


def test_maps_with_tianditu_and_no_key_is_one_clear_line(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.delenv("MANYI_TIANDITU_KEY", raising=False)
    assert main(["maps", "--out", str(tmp_path), "--basemap", "tianditu"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "MANYI_TIANDITU_KEY" in line


def test_report_before_any_data_says_so(tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "out"
    code = main(
        [
            "--data-dir",
            str(tmp_path / "data"),
            "report",
            "--as-of",
            "2023-10-15",
            "--out",
            str(out_dir),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "0 submission(s)" in text and "暂无数据" in text
    assert (out_dir / "index.html").exists()
    assert (out_dir / "2023-10-15" / "月调度通报_2023-10_公开版.html").exists()
    assert not (tmp_path / "data" / "manyi.sqlite").exists(), "a report never creates a store"


def test_report_with_a_bad_date_is_one_line(capsys) -> None:
    assert main(["report", "--as-of", "2023-13-01"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "YYYY-MM-DD" in line


def test_publish_then_pull_through_the_cli(tmp_path: Path, monkeypatch, capsys) -> None:
    from pipelines.demo.central_server import CentralStandIn
    from tests.pipelines._built import FORM, build

    password = "cli-Secret-pw-123"
    with CentralStandIn(password=password) as server:
        build_dir = build(tmp_path / "build", "2026112901")
        for key, value in {
            "URL": server.url, "USER": server.email, "PASSWORD": password, "PROJECT": "1",
        }.items():  # fmt: skip
            monkeypatch.setenv(f"MANYI_CENTRAL_{key}", value)
        monkeypatch.setenv("MANYI_DATA_DIR", str(tmp_path / "data"))
        publish = ["forms", "publish", "--to", "central", "--build-dir", str(build_dir)]
        assert main(publish) == 0
        assert f"created: {FORM}" in capsys.readouterr().out
        assert main(publish) == 0
        assert f"skipped (unchanged): {FORM}" in capsys.readouterr().out

        for i in range(2):
            iid = f"uuid:cli-{i}"
            server.add_submission(
                FORM, iid, {"household": "h1", "note": f"第{i}次", "meta": {"instanceID": iid}}
            )
        assert main(["pull", "--source", "central", "--form", FORM]) == 0
        captured = capsys.readouterr()
        row = next(line for line in captured.out.splitlines() if FORM in line)
        assert row.split("│")[2].strip() == "2"  # new
        assert main(["pull", "--source", "central", "--form", FORM]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if FORM in line)
        assert row.split("│")[2].strip() == "0"

        monkeypatch.setenv("MANYI_CENTRAL_PASSWORD", "wrong-password-xyz")
        code = main(["pull", "--source", "central", "--form", FORM])
        captured = capsys.readouterr()
        assert code != 0
        assert "wrong-password-xyz" not in captured.out + captured.err
        assert "Traceback" not in captured.err
        assert captured.err.strip().splitlines()[-1].startswith("manyi: ")


def test_publish_to_an_unknown_server_kind(capsys) -> None:
    assert main(["forms", "publish", "--to", "ftp"]) == 2
    assert "publish to 'central' or 'kobo'" in capsys.readouterr().err
