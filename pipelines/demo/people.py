"""The demo's people: a town manager, a liaison-group leader and a village cadre, each with a
password, so that ``manyi serve`` on the demo data shows each their scope at once.

The cadre's village is the one with the most open follow-up items (so the follow-up loop has
something to close), and the group leader leads that village's liaison group. Passwords are
new random ones on every ``manyi demo`` run (the demo's store is rebuilt each time), printed
once by the CLI; they are for a loopback demo, never for a real store.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pandas as pd

from geo.villages import load_villages
from pipelines.config import Settings
from pipelines.server.auth import set_password
from pipelines.server.people import add_person, load_roles
from pipelines.store import open_store


@dataclass(frozen=True)
class DemoLogin:
    login: str
    name: str
    role: str  # the role's Chinese label
    scope: str  # what they see, in Chinese
    password: str = ""  # shown once by `manyi demo`

    def __repr__(self) -> str:  # a password never reaches a log through repr
        return f"DemoLogin({self.login!r}, {self.role!r}, {self.scope!r})"


def add_demo_people(settings: Settings, followups: pd.DataFrame) -> list[DemoLogin]:
    """Create the three demo people in the demo's store and return their logins."""
    villages = load_villages(settings.villages)
    roles = load_roles(settings.roles)
    counts = followups["village_code"].dropna().value_counts() if len(followups) else pd.Series()
    by_code = {v.code: v for v in villages}
    code = next((c for c in counts.index if c in by_code), villages[0].code)
    village = by_code[code]
    people = [
        ("demo.manager", "演示管理员", "town", {}, "全镇 56 个村"),
        ("demo.group", "演示组长", "group", {"groups": [village.liaison_group]},
         f"第{village.liaison_group}帮包联系组的村"),
        ("demo.cadre", "演示村干部", "village", {"villages": [code]}, f"{village.name}"),
    ]  # fmt: skip
    made: list[DemoLogin] = []
    store = open_store(settings)
    try:
        for login, name, role, where, scope in people:
            add_person(store, login, name, role, roles=roles, known_villages=by_code, **where)
            password = f"manyi-{secrets.token_urlsafe(12)}"
            set_password(store, login, password, detail="set by manyi demo")
            made.append(DemoLogin(login, name, roles[role].label, scope, password))
    finally:
        store.close()
    return made
