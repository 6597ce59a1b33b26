"""The people who collect, their roles, and their collection links (`manyi users`).

A person's collection link is ``<base>/key/<token>``: the "server URL" typed into ODK Collect
or KoboCollect, or opened in a phone's browser. The token is 256 random bits; only its
sha256 is stored, so a copied store gives no working link. Rotating or disabling a person
takes effect on the next request: every request looks the token up again.

Roles, their scope and the forms each gets by default are the town's data
(``pipelines/server/roles.toml``, or the file the ``roles`` setting names).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import BUNDLED_ROLES
from pipelines.errors import ConfigError, DataError
from pipelines.records import now_utc
from pipelines.store import Store

SCOPES = ("town", "group", "village", "own")
_LOGIN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,31}$")
_TOKEN_BYTES = 32  # 256 bits: guessing is hopeless, so a plain sha256 of it is a safe key


@dataclass(frozen=True)
class Role:
    name: str
    label: str  # Chinese, as people see it
    scope: str  # one of SCOPES
    forms: tuple[str, ...]  # form ids the role collects by default


@dataclass(frozen=True)
class Person:
    login: str
    name: str
    role: str
    villages: tuple[str, ...]  # 12-digit village codes
    groups: tuple[int, ...]  # liaison groups (帮包联系组)
    extra_forms: tuple[str, ...]  # added with --form, beyond the role's
    disabled: bool
    created_at: str

    def forms(self, roles: Mapping[str, Role]) -> tuple[str, ...]:
        """The form ids this person collects: the role's, then the extra ones."""
        role = roles.get(self.role)
        base = role.forms if role else ()
        return tuple(dict.fromkeys((*base, *self.extra_forms)))


@dataclass(frozen=True)
class Issued:
    """A person and the token of their collection link, shown once and never stored."""

    person: Person
    token: str


def load_roles(path: Path | str | None = None) -> dict[str, Role]:
    """The roles of ``path`` (default: the bundled 龙阳镇 roles)."""
    path = Path(path) if path else BUNDLED_ROLES
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"roles file {path} not found; set `roles` to the town's roles.toml"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e}); fix the file") from None
    roles: dict[str, Role] = {}
    for name, spec in (table.get("role") or {}).items():
        where = f"{path}, [role.{name}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: must be a table with label, scope and forms")
        scope, forms = spec.get("scope"), spec.get("forms", [])
        if scope not in SCOPES:
            raise ConfigError(
                f"{where}: scope {scope!r} is unknown; use one of {', '.join(SCOPES)}"
            )
        if not isinstance(forms, list) or not all(isinstance(f, str) for f in forms):
            raise ConfigError(f"{where}: forms must be a list of form ids")
        roles[name] = Role(name, str(spec.get("label") or name), scope, tuple(forms))
    if not roles:
        raise ConfigError(f"{path}: no [role.NAME] tables; declare at least one role")
    return roles


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    return token, token_hash(token)


def _person(row: Sequence) -> Person:
    login, name, role, villages, groups, forms, disabled, created = row
    return Person(
        login, name, role, tuple(json.loads(villages)), tuple(json.loads(groups)),
        tuple(json.loads(forms)), bool(disabled), created,
    )  # fmt: skip


_SELECT = (
    "SELECT login, name, role, villages_json, groups_json, forms_json, disabled, created_at "
    "FROM people "
)


def add_person(
    store: Store,
    login: str,
    name: str,
    role: str,
    *,
    roles: Mapping[str, Role],
    villages: Iterable[str] = (),
    groups: Iterable[int] = (),
    forms: Iterable[str] = (),
    known_villages: Iterable[str] = (),
    known_forms: Iterable[str] = (),
    known_groups: Iterable[int] = (),
    by: str | None = None,
    address: str | None = None,
) -> Issued:
    """Create a person with a new collection link. Everything is checked first: a login
    that is taken or malformed, an unknown role, village, liaison group or form is one clear
    error (Chinese first) and nothing is stored. ``by`` (who added them, from the portal) and
    ``address`` go to the audit log."""
    villages, forms = tuple(villages), tuple(forms)
    try:
        groups = tuple(int(g) for g in groups)
    except (TypeError, ValueError):
        raise DataError(
            "帮包联系组须为数字（liaison group must be a number, e.g. --group 3）"
        ) from None
    if not _LOGIN.match(login):
        raise DataError(
            f"登录名 {login!r} 格式不对：请用 2–32 位小写字母、数字、'.'、'_' 或 '-'，如 zhang.san"
            f"（login {login!r}: use 2–32 lower-case letters, digits, '.', '_' or '-', e.g. zhang.san）"
        )
    if not name.strip():
        raise DataError(f"请填写姓名（login {login!r}: give the person's name with --name）")
    if role not in roles:
        raise DataError(
            f"角色 {role!r} 不存在（role {role!r} is unknown; use one of: {', '.join(roles)}）"
        )
    scope = roles[role].scope
    if scope == "village" and not villages:
        raise DataError(
            f"该角色须选择所在村（role {role!r} sees its own village: give it with --village CODE）"
        )
    if scope == "group" and not groups:
        raise DataError(
            f"该角色须选择帮包联系组（role {role!r} sees its liaison group's villages: give it with --group N）"
        )
    known = set(known_villages)
    unknown = [v for v in villages if known and v not in known]
    if unknown:
        raise DataError(
            f"村庄代码 {', '.join(unknown)} 不在村庄名册中（village code(s) {', '.join(unknown)} not in the register; use the 12-digit codes of geo/villages.csv）"
        )
    known_g = set(known_groups)
    bad_groups = [str(g) for g in groups if known_g and g not in known_g]
    if bad_groups:
        raise DataError(
            f"帮包联系组 {', '.join(bad_groups)} 不存在（liaison group(s) {', '.join(bad_groups)} not in the register; use 1–9 as in geo/villages.csv）"
        )
    formset = set(known_forms)
    missing = [f for f in forms if formset and f not in formset]
    if missing:
        raise DataError(
            f"表单 {', '.join(missing)} 尚未生成（form(s) {', '.join(missing)} not built; run `manyi forms build` or check the id）"
        )
    token, digest = _new_token()
    now = now_utc()
    with store.transaction() as db:
        if db.execute("SELECT 1 FROM people WHERE login = ?", (login,)).fetchone():
            raise DataError(
                f"登录名 {login!r} 已被占用，请换一个（login {login!r} is taken; pick another, or `manyi users token {login} --rotate`）"
            )
        db.execute(
            "INSERT INTO people (login, name, role, villages_json, groups_json, forms_json, "
            "token_sha256, token_created_at, disabled, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
            (login, name.strip(), role, json.dumps(villages), json.dumps(groups),
             json.dumps(forms), digest, now, now, now),
        )  # fmt: skip
        if (
            by is not None
        ):  # the command line's adds are not audited (whoever runs it owns the store)
            _audit(db, "person_added", login, by, address)
    return Issued(Person(login, name.strip(), role, villages, groups, forms, False, now), token)


def list_people(store: Store) -> list[Person]:
    rows = store.db.execute(_SELECT + "ORDER BY login").fetchall()
    return [_person(r) for r in rows]


def get_person(store: Store, login: str) -> Person:
    row = store.db.execute(_SELECT + "WHERE login = ?", (login,)).fetchone()
    if row is None:
        raise DataError(
            f"没有登录名为 {login!r} 的人员（no person with login {login!r}; `manyi users list` shows them）"
        )
    return _person(row)


def rotate_token(store: Store, login: str, *, by: str | None = None,
                 address: str | None = None) -> Issued:  # fmt: skip
    """A new collection link for ``login``; the old one stops working at once. A disabled
    person is enabled again by this (an administrator handing out a new link means it)."""
    return rotate_tokens(store, [login], by=by, address=address)[0]


def rotate_tokens(store: Store, logins: Sequence[str], *, by: str | None = None,
                  address: str | None = None) -> list[Issued]:  # fmt: skip
    """New links for every one of ``logins`` in ONE transaction (a village's QR sheet): all
    old links stop working together, or none does."""
    for login in logins:
        get_person(store, login)  # an unknown login is one clear error before any change
    issued: list[tuple[str, str]] = []
    now = now_utc()
    with store.transaction() as db:
        for login in logins:
            token, digest = _new_token()
            was_disabled = db.execute(
                "SELECT disabled FROM people WHERE login = ?", (login,)
            ).fetchone()[0]
            db.execute(
                "UPDATE people SET token_sha256 = ?, token_created_at = ?, disabled = 0, "
                "updated_at = ? WHERE login = ?",
                (digest, now, now, login),
            )
            _audit(db, "link_rotated", login, by, address)
            if was_disabled:
                _audit(db, "person_enabled", login, by, address)
            issued.append((login, token))
    return [Issued(get_person(store, login), token) for login, token in issued]


def disable_person(store: Store, login: str, *, by: str | None = None,
                   address: str | None = None) -> Person:  # fmt: skip
    get_person(store, login)
    with store.transaction() as db:
        db.execute(
            "UPDATE people SET disabled = 1, updated_at = ? WHERE login = ?", (now_utc(), login)
        )
        db.execute("DELETE FROM sessions WHERE login = ?", (login,))  # portal logins end now
        _audit(db, "person_disabled", login, by, address)
    return get_person(store, login)


def _audit(db, event: str, login: str, by: str | None = None, address: str | None = None) -> None:
    """A change to a person, in the store's audit log beside the portal's logins: ``login``
    is whose it is; the detail names who made it from the portal (``by``)."""
    detail = f"by {by} (portal)" if by else ""
    db.execute(
        "INSERT INTO audit (at, login, address, event, detail) VALUES (?, ?, ?, ?, ?)",
        (now_utc(), login, address, event, detail),
    )


def person_for_token(store: Store, token: str) -> Person | None:
    """The enabled person whose link carries ``token``, or None (unknown, rotated, disabled)."""
    if not token or len(token) > 128:
        return None
    row = store.db.execute(
        _SELECT + "WHERE token_sha256 = ? AND disabled = 0",
        (token_hash(token),),
    ).fetchone()
    return _person(row) if row else None


def collection_link(base_url: str, token: str) -> str:
    """The link a person types into ODK Collect or opens in a browser."""
    return f"{base_url.rstrip('/')}/key/{token}"


def write_qr(link: str, path: Path) -> Path:
    """The link as a QR code PNG, for a phone camera or WeChat to open in the browser."""
    import segno

    path.parent.mkdir(parents=True, exist_ok=True)
    segno.make(link, error="m").save(path, kind="png", scale=8, border=4)
    return path


def qr_data_uri(link: str) -> str:
    """The link as a QR code, an SVG ``data:`` URI for an ``<img>`` (crisp in print, no file,
    allowed by the pages' ``img-src data:``). Error level M, the quiet zone of 4 modules."""
    import segno

    return segno.make(link, error="m").svg_data_uri(scale=4, border=4, omitsize=True)
