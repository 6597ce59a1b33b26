"""People and their collection links (`manyi users`): tokens are random, stored hashed, and a
rotated or disabled link stops working at once; roles and their forms are the town's data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.config import BUNDLED_ROLES, load_settings
from pipelines.errors import ConfigError, DataError
from pipelines.server.people import (
    add_person,
    disable_person,
    list_people,
    load_roles,
    person_for_token,
    rotate_token,
)
from pipelines.store import Store
from tests.helpers import REPO

ROLES = load_roles()
V1, V2 = "370481115200", "370481115201"
CODES = [V1, V2]


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "manyi.sqlite", tmp_path) as s:
        yield s


def test_a_link_opens_for_its_person_until_rotated_or_disabled(store: Store) -> None:
    first = add_person(store, "zhang.san", "张三", "village", roles=ROLES, villages=[V1])
    assert len(first.token) >= 43 and person_for_token(store, first.token).login == "zhang.san"
    second = rotate_token(store, "zhang.san")
    assert second.token != first.token
    assert person_for_token(store, first.token) is None  # the old link stops at once
    assert person_for_token(store, second.token).name == "张三"
    disable_person(store, "zhang.san")
    assert person_for_token(store, second.token) is None
    third = rotate_token(store, "zhang.san")  # a new link is handed out: enabled again
    assert person_for_token(store, third.token) is not None


def test_tokens_are_random_and_only_their_hash_is_stored(store: Store, tmp_path: Path) -> None:
    tokens = {
        add_person(store, f"p{i:02d}", f"人{i}", "teacher", roles=ROLES).token for i in range(20)
    }
    assert len(tokens) == 20
    store.db.execute("PRAGMA wal_checkpoint(FULL)")
    raw = (tmp_path / "manyi.sqlite").read_bytes()
    assert not any(t.encode() in raw for t in tokens)
    for junk in ("", "x", "a" * 500, next(iter(tokens))[:-1]):
        assert person_for_token(store, junk) is None


def test_a_persons_forms_are_the_roles_plus_the_extra_ones(store: Store) -> None:
    teacher = add_person(store, "li.si", "李四", "teacher", roles=ROLES, forms=["health_checkup"])
    assert teacher.person.forms(ROLES) == ("home_visit", "health_checkup")
    cadre = add_person(store, "wang.wu", "王五", "village", roles=ROLES, villages=[V2])
    assert "sanitation_sweep" in cadre.person.forms(ROLES)
    assert [p.login for p in list_people(store)] == ["li.si", "wang.wu"]


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"login": "Zhang San"}, "lower-case"),
        ({"name": " "}, "--name"),
        ({"role": "mayor"}, "role 'mayor' is unknown"),
        ({"role": "village", "villages": []}, "--village"),
        ({"role": "group", "groups": []}, "--group"),
        ({"villages": ["370481115999"]}, "370481115999 not in the register"),
        ({"forms": ["nope"]}, "nope not built"),
    ],
)
def test_bad_people_are_refused_with_what_to_do(store: Store, kwargs: dict, says: str) -> None:
    args = {"login": "zhao.liu", "name": "赵六", "role": "village", "villages": [V1]} | kwargs
    with pytest.raises(DataError, match=re.escape(says)):
        add_person(
            store, args.pop("login"), args.pop("name"), args.pop("role"), roles=ROLES,
            known_villages=CODES, known_forms=["sanitation_sweep"], **args,
        )  # fmt: skip
    assert list_people(store) == []


def test_a_login_is_taken_once(store: Store) -> None:
    add_person(store, "zhang.san", "张三", "teacher", roles=ROLES)
    with pytest.raises(DataError, match="is taken"):
        add_person(store, "zhang.san", "张三二", "teacher", roles=ROLES)


def test_the_bundled_roles_name_only_real_forms() -> None:
    forms = {p.stem for p in (REPO / "forms").glob("*.xlsx")}
    assert {"town", "group", "village", "collector"} <= set(ROLES)
    for role in ROLES.values():
        assert set(role.forms) <= forms, role


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[role.x]\nlabel = "X"\nscope = "county"\nforms = []\n', "scope 'county' is unknown"),
        ('[role.x]\nscope = "own"\nforms = "home_visit"\n', "forms must be a list"),
        ("role = [", "not valid TOML"),
        ("", "no [role.NAME] tables"),
    ],
)
def test_a_bad_roles_file_says_where(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "roles.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(says)) as e:
        load_roles(path)
    assert str(path) in str(e.value)


def test_the_roles_setting_names_the_towns_file(tmp_path: Path) -> None:
    assert load_settings({}, env={}).roles == BUNDLED_ROLES
    with pytest.raises(ConfigError, match="MANYI_ROLES"):
        load_settings({}, env={"MANYI_ROLES": str(tmp_path / "missing.toml")})


def test_the_users_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    qr = tmp_path / "zhang.png"
    assert main([*data, "users", "add", "zhang.san", "--name", "张三", "--role", "village",
                 "--village", V1, "--qr", str(qr)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    link = re.search(r"http://127\.0\.0\.1:8000/key/([A-Za-z0-9_-]{43})", out)
    assert link and "ODK Collect" in out
    assert qr.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Store(tmp_path / "manyi.sqlite", tmp_path) as store:
        assert person_for_token(store, link.group(1)).login == "zhang.san"
    assert main([*data, "users", "token", "zhang.san"]) != 0  # the old link cannot be shown
    assert "--rotate" in capsys.readouterr().err
    assert main([*data, "users", "token", "zhang.san", "--rotate"]) == 0
    new = re.search(r"/key/([A-Za-z0-9_-]{43})", capsys.readouterr().out).group(1)
    assert main([*data, "users", "disable", "zhang.san"]) == 0
    assert main([*data, "users", "list"]) == 0
    listed = capsys.readouterr().out
    assert "zhang.san 张三 village" in listed and "disabled" in listed
    with Store(tmp_path / "manyi.sqlite", tmp_path) as store:
        assert person_for_token(store, new) is None
    assert main([*data, "users", "add", "li.si", "--name", "李四", "--role", "mayor"]) != 0
    assert "role 'mayor' is unknown" in capsys.readouterr().err
