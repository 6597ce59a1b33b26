"""What a person may see: their scopes (town, liaison group, village, own), checked on the
server for every portal page, file and download.

A scope has a URL key: ``town``, ``g3`` (liaison group 3), ``v370481107201`` (a village) or
``me`` (the person's own submissions). :func:`scopes_for` lists the scopes a person may open,
their home scope first; :func:`resolve` gives the scope of a key, or None when the person may
not open it, and the route then answers 404 exactly as for a key that does not exist.

* town (镇级管理员): every village; may open the town, every group and every village.
* group (帮包联系组组长): the villages of their groups (from the village register); may open
  each of their groups and each village in them.
* village (村干部): their own villages; may open each of them.
* own (采集员、教师、村医…): ``me``, only what they sent themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from geo.villages import Village
from pipelines.server.people import Person, Role

TOWN, GROUP, VILLAGE, OWN = "town", "group", "village", "own"


@dataclass(frozen=True)
class Scope:
    kind: str  # TOWN, GROUP, VILLAGE or OWN
    key: str  # in URLs: town, g3, v370481107201, me
    label: str  # Chinese, as the pages title it
    villages: frozenset[str]  # village codes; TOWN: all; OWN: empty (filtered by sender)
    login: str | None = None  # OWN: whose submissions

    def covers(self, village_code: object) -> bool:
        """True when a row of ``village_code`` belongs to this scope (not for OWN)."""
        return self.kind == TOWN or (isinstance(village_code, str) and village_code in self.villages)  # fmt: skip


def town_scope(villages: Iterable[Village], town: str = "") -> Scope:
    return Scope(
        TOWN, "town", f"{town}全镇" if town else "全镇", frozenset(v.code for v in villages)
    )


def group_scope(group: int, villages: Iterable[Village]) -> Scope:
    codes = frozenset(v.code for v in villages if v.liaison_group == group)
    return Scope(GROUP, f"g{group}", f"第{group}帮包联系组", codes)


def village_scope(village: Village) -> Scope:
    return Scope(VILLAGE, f"v{village.code}", village.name, frozenset({village.code}))


def own_scope(person: Person) -> Scope:
    return Scope(OWN, "me", f"{person.name}（本人提交）", frozenset(), person.login)


def scopes_for(person: Person, roles: Mapping[str, Role], villages: list[Village], town: str = "") -> list[Scope]:  # fmt: skip
    """Every scope ``person`` may open, the home scope first. A disabled person has none;
    an unknown role falls back to OWN (the narrowest)."""
    if person.disabled:
        return []
    role = roles.get(person.role)
    kind = role.scope if role else OWN
    by_code = {v.code: v for v in villages}
    if kind == TOWN:
        groups = sorted({v.liaison_group for v in villages})
        return [
            town_scope(villages, town),
            *(group_scope(g, villages) for g in groups),
            *(village_scope(v) for v in villages),
        ]
    if kind == GROUP:
        out = [group_scope(g, villages) for g in person.groups]
        seen = {c for s in out for c in s.villages}
        return out + [village_scope(v) for v in villages if v.code in seen]
    if kind == VILLAGE:
        return [village_scope(by_code[c]) for c in person.villages if c in by_code]
    return [own_scope(person)]


def resolve(person: Person, roles: Mapping[str, Role], villages: list[Village], key: str, town: str = "") -> Scope | None:  # fmt: skip
    """The scope of URL key ``key`` if ``person`` may open it, else None (answer 404)."""
    for scope in scopes_for(person, roles, villages, town):
        if scope.key == key:
            return scope
    return None
