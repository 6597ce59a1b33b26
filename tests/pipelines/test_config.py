from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.config import Secret, load_settings
from pipelines.errors import ConfigError


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "manyi.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_precedence_option_then_env_then_file_then_default(tmp_path: Path) -> None:
    cfg = toml(tmp_path, 'plan_year = 2024\nsource = "files"\ndata_dir = "state"\n')
    env = {"MANYI_SOURCE": "kobo", "MANYI_BASEMAP": "amap"}
    s = load_settings({"source": "central"}, env=env, config_file=cfg)
    assert s.source == "central"  # option beats env and file
    assert s.basemap == "amap"  # env beats file and default
    assert s.plan_year == 2024  # file beats default
    assert s.data_dir == tmp_path / "state"  # relative to the file
    assert s.town == "龙阳镇"  # default
    assert load_settings({}, env=env, config_file=cfg).source == "kobo"
    assert load_settings({}, env={}, config_file=cfg).source == "files"


def test_data_dir_from_option_and_env_are_separate(tmp_path: Path) -> None:
    cfg = toml(tmp_path, "")
    a = load_settings({"data_dir": tmp_path / "a"}, env={}, config_file=cfg)
    b = load_settings({}, env={"MANYI_DATA_DIR": str(tmp_path / "b")}, config_file=cfg)
    assert a.store_path == tmp_path / "a" / "manyi.sqlite"
    assert b.store_path == tmp_path / "b" / "manyi.sqlite"
    assert a.roster_path == tmp_path / "a" / "rosters"


def test_secrets_never_print(tmp_path: Path) -> None:
    env = {"MANYI_CENTRAL_PASSWORD": "hunter2-secret", "MANYI_KOBO_TOKEN": "tok-123456"}
    s = load_settings({}, env=env, config_file=toml(tmp_path, ""))
    assert s.central_password == Secret("hunter2-secret")
    assert s.central_password.get() == "hunter2-secret"
    for text in (repr(s), str(s), f"{s.kobo_token}", repr(s.kobo_token)):
        assert "hunter2" not in text and "tok-123456" not in text


def test_secret_in_committed_file_is_refused(tmp_path: Path) -> None:
    cfg = toml(tmp_path, 'central_password = "oops"\n')
    with pytest.raises(ConfigError, match="MANYI_CENTRAL_PASSWORD") as e:
        load_settings({}, env={}, config_file=cfg)
    assert "oops" not in str(e.value)


@pytest.mark.parametrize(
    ("text", "env", "words"),
    [
        ('source = "ftp"\n', {}, "source 'ftp' is unknown (set in "),
        ("", {"MANYI_BASEMAP": "google"}, "basemap 'google' is unknown (set by MANYI_BASEMAP)"),
        ("", {"MANYI_GPS_ACCURACY_M": "nan"}, "gps_accuracy_m must be a positive number"),
        ("kobo_page_size = 5000\n", {}, "kobo_page_size 5000 must be 1–1000"),
        ("plan_year = 23\n", {}, "plan_year 23"),
        ("", {"MANYI_PLAN_YEAR": "next"}, "MANYI_PLAN_YEAR"),
        ("colour = 1\n", {}, "unknown setting 'colour'"),
        ("plan_year = \n", {}, "not valid TOML"),
    ],
)
def test_bad_settings_say_where(tmp_path: Path, text: str, env: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_settings({}, env=env, config_file=toml(tmp_path, text))


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, env={}, config_file=tmp_path / "nope.toml")


def test_repository_manyi_toml_is_valid() -> None:
    from pipelines.config import REPO_ROOT

    s = load_settings({}, env={}, config_file=REPO_ROOT / "manyi.toml")
    assert (s.source, s.basemap, s.plan_year) == ("demo", "none", 2023)
    assert s.villages.exists()


def test_http_give_up_s_from_file_env_and_default(tmp_path: Path) -> None:
    assert load_settings({}, env={}, config_file=toml(tmp_path, "")).http_give_up_s == 300
    cfg = toml(tmp_path, "http_give_up_s = 45\n")
    assert load_settings({}, env={}, config_file=cfg).http_give_up_s == 45
    env = {"MANYI_HTTP_GIVE_UP_S": "2.5"}
    assert load_settings({}, env=env, config_file=cfg).http_give_up_s == 2.5


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf", "soon"])
def test_a_give_up_time_that_is_not_a_positive_number_says_where(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(ConfigError, match="MANYI_HTTP_GIVE_UP_S") as e:
        load_settings({}, env={"MANYI_HTTP_GIVE_UP_S": value}, config_file=toml(tmp_path, ""))
    assert "http_give_up_s" in str(e.value)


@pytest.mark.parametrize(
    ("key", "url", "words"),
    [
        (
            "MANYI_CENTRAL_URL",
            "https://admin:hunter2-secret@c.example.org",
            "MANYI_CENTRAL_PASSWORD",
        ),
        ("MANYI_KOBO_URL", "https://:hunter2-secret@kf.example.org/", "MANYI_KOBO_TOKEN"),
        ("MANYI_CENTRAL_URL", "http://admin:hunter2-secret/x@c.example.org", "MANYI_CENTRAL_USER"),
        ("MANYI_CENTRAL_URL", "central.example.org?token=hunter2-secret", "is not a server URL"),
        ("MANYI_KOBO_URL", "ftp://kf.example.org", "is not a server URL"),
        ("MANYI_KOBO_URL", "https://kf.example.org:http/", "is not a server URL"),
    ],
)
def test_a_bad_server_url_is_refused_without_echoing_credentials(
    tmp_path: Path, key: str, url: str, words: str
) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings({}, env={key: url}, config_file=toml(tmp_path, ""))
    assert words in str(e.value) and f"set by {key}" in str(e.value)
    assert "hunter2" not in str(e.value)


def test_a_server_url_with_credentials_in_the_committed_file_is_refused(tmp_path: Path) -> None:
    cfg = toml(tmp_path, 'central_url = "https://u:hunter2-secret@c.example.org"\n')
    with pytest.raises(ConfigError, match="holds a user name or password") as e:
        load_settings({}, env={}, config_file=cfg)
    assert "hunter2" not in str(e.value) and str(cfg) in str(e.value)


def test_a_secret_pasted_into_another_setting_is_not_echoed(tmp_path: Path) -> None:
    env = {"MANYI_CENTRAL_PASSWORD": "hunter2-secret", "MANYI_CENTRAL_PROJECT": "hunter2-secret"}
    with pytest.raises(ConfigError, match="MANYI_CENTRAL_PROJECT") as e:
        load_settings({}, env=env, config_file=toml(tmp_path, ""))
    assert "hunter2" not in str(e.value)
    with pytest.raises(ConfigError, match="is unknown") as e:
        load_settings(
            {},
            env={"MANYI_SOURCE": "tok-123456", "MANYI_KOBO_TOKEN": "tok-123456"},
            config_file=toml(tmp_path, ""),
        )
    assert "tok-123456" not in str(e.value)


# ---- the town's own data: plan and extent ---------------------------------------------------


def test_plan_and_extent_default_to_the_bundled_town(tmp_path: Path) -> None:
    from pipelines.analysis.plan import PLAN_FILE
    from pipelines.config import REPO_ROOT

    s = load_settings({}, env={}, config_file=toml(tmp_path, ""))
    assert s.plan == PLAN_FILE and s.extent == (117.22, 35.15, 117.30, 35.20)
    repo = load_settings({}, env={}, config_file=REPO_ROOT / "manyi.toml")
    assert (repo.plan.resolve(), repo.extent) == (PLAN_FILE.resolve(), s.extent)


def test_plan_and_extent_from_file_and_env(tmp_path: Path) -> None:
    from pipelines.analysis.plan import PLAN_FILE

    (tmp_path / "town").mkdir()
    (tmp_path / "town" / "plan.toml").write_bytes(PLAN_FILE.read_bytes())
    cfg = toml(tmp_path, 'plan = "town/plan.toml"\nextent = [116.5, 34.8, 116.62, 34.88]\n')
    s = load_settings({}, env={}, config_file=cfg)
    assert s.plan == tmp_path / "town" / "plan.toml"  # relative to the file
    assert s.extent == (116.5, 34.8, 116.62, 34.88)
    env = {"MANYI_PLAN": str(PLAN_FILE), "MANYI_EXTENT": " 117.1, 35.0 ,117.4,35.3"}
    s = load_settings({}, env=env, config_file=cfg)
    assert (s.plan, s.extent) == (PLAN_FILE, (117.1, 35.0, 117.4, 35.3))
    as_text = toml(tmp_path, 'extent = "116.5,34.8,116.62,34.88"\n')  # as in the environment
    assert load_settings({}, env={}, config_file=as_text).extent == (116.5, 34.8, 116.62, 34.88)


@pytest.mark.parametrize(
    ("text", "env", "words"),
    [
        (
            "",
            {"MANYI_PLAN": "/no/such/plan.toml"},
            "plan file /no/such/plan.toml (set by MANYI_PLAN) does not exist",
        ),
        ('plan = "missing.toml"\n', {}, "missing.toml (set in "),
        ('plan = "bad.toml"\n', {}, "bad.toml: not valid TOML"),
        ('plan = "empty.toml"\n', {}, "needs [departments] and [domains] tables (plan set in "),
        (
            "",
            {"MANYI_EXTENT": "117.22,35.15,117.30"},
            "extent = '117.22,35.15,117.30' (from MANYI_EXTENT) is not four numbers",
        ),
        ("extent = [1, 2]\n", {}, "extent = [1, 2] (in "),
        (
            "",
            {"MANYI_EXTENT": "117.30,35.15,117.22,35.20"},
            "extent 117.3,35.15,117.22,35.2 (set by MANYI_EXTENT) is not west,south,east,north",
        ),
        ('extent = "117.2,95,117.3,96"\n', {}, "south < north"),
        ("", {"MANYI_EXTENT": "nan,35.15,117.30,35.20"}, "west,south,east,north"),
    ],
)
def test_a_bad_plan_or_extent_says_where(tmp_path: Path, text: str, env: dict, words: str) -> None:
    (tmp_path / "bad.toml").write_text("plan_name = \n", encoding="utf-8")
    (tmp_path / "empty.toml").write_text('plan_name = "空"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_settings({}, env=env, config_file=toml(tmp_path, text))
