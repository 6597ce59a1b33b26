"""Settings, resolved in a fixed order: option, then ``MANYI_*`` environment, then
``manyi.toml``, then the built-in defaults below.

Secrets are held in :class:`Secret` so they never show in ``repr``, logs or tracebacks, and
no :class:`ConfigError` echoes one: a server URL holding ``user:password@`` is refused, and
every message quoting a value is scrubbed (:func:`pipelines.errors.scrub`).
"""

from __future__ import annotations

import functools
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pipelines.errors import ConfigError, scrub

# Every time a user sees is in the town's zone: one constant for the whole product.
TIMEZONE = "Asia/Shanghai"
SHANGHAI = ZoneInfo(TIMEZONE)

REPO_ROOT = Path(__file__).resolve().parent.parent
# The default town's data: 龙阳镇's plan (bundled) and its guessed extent in WGS-84 (west,
# south, east, north; unverified, see geo/README.md). Another town sets `plan` and `extent`.
BUNDLED_PLAN = REPO_ROOT / "pipelines" / "analysis" / "plan.toml"
BUNDLED_ROLES = REPO_ROOT / "pipelines" / "server" / "roles.toml"
TOWN_EXTENT = (117.22, 35.15, 117.30, 35.20)
SOURCES = ("demo", "central", "kobo", "files")
BASEMAPS = ("none", "tianditu", "amap", "osm")


class Secret:
    """A string that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class Settings:
    town: str = "龙阳镇"
    town_code: str = "370481115"
    plan_year: int = 2023
    plan: Path = BUNDLED_PLAN  # the town's targets and road segments
    extent: tuple[float, float, float, float] = TOWN_EXTENT  # where the town's geodata must lie
    villages: Path = REPO_ROOT / "geo" / "villages.csv"
    boundaries: Path | None = None  # real village boundaries; None draws illustrative ones
    roads: Path | None = None  # surveyed road lines with segment_id; None draws illustrative ones
    forms_dir: Path = REPO_ROOT / "forms"
    build_dir: Path = Path("build/forms")
    data_dir: Path = Path("data")
    outputs_dir: Path = Path("outputs")
    source: str = "demo"
    basemap: str = "none"
    gps_accuracy_m: float = 50.0
    rosters_dir: Path | None = None  # real rosters; None means <data_dir>/rosters
    central_page_size: int = 5000  # rows of the streamed feed stored per transaction
    kobo_page_size: int = 1000  # kpi caps `limit` at 1000
    http_give_up_s: float = 300.0  # stop retrying one request to a server after this long
    roles: Path = BUNDLED_ROLES  # the town's roles and the forms each gets by default
    public_url: str | None = None  # the server's address as phones reach it (behind a proxy)
    trusted_proxies: str = ""  # comma-separated proxy addresses whose X-Forwarded-* we trust
    central_url: str | None = None
    central_user: str | None = None
    central_password: Secret | None = field(default=None, repr=False)
    central_project: int | None = None
    kobo_url: str | None = None
    kobo_token: Secret | None = field(default=None, repr=False)
    tianditu_key: Secret | None = field(default=None, repr=False)
    # None: the SQLite file under data_dir (embedded); postgresql://… a shared database. A
    # Secret: the URL may hold the password (MANYI_STORE_URL; never in manyi.toml).
    store_url: Secret | None = field(default=None, repr=False)
    config_file: Path | None = None
    origins: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            self._validate()
        except ConfigError as e:  # a password typed into the wrong setting is not echoed
            raise ConfigError(scrub(str(e), self._secret_values())) from None

    def _validate(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(
                f"source '{self.source}' is unknown ({self._origin('source')}); "
                f"use one of: {', '.join(SOURCES)}"
            )
        if self.basemap not in BASEMAPS:
            raise ConfigError(
                f"basemap '{self.basemap}' is unknown ({self._origin('basemap')}); "
                f"use one of: {', '.join(BASEMAPS)}"
            )
        if not 2000 <= self.plan_year <= 2100:
            raise ConfigError(
                f"plan_year {self.plan_year} is not a plausible year ({self._origin('plan_year')})"
            )
        if not 1 <= self.central_page_size <= 100_000:
            raise ConfigError(
                f"central_page_size {self.central_page_size} must be 1–100000 ({self._origin('central_page_size')})"
            )
        if not 1 <= self.kobo_page_size <= 1000:
            raise ConfigError(
                f"kobo_page_size {self.kobo_page_size} must be 1–1000, kpi caps limit at 1000 ({self._origin('kobo_page_size')})"
            )
        if not (math.isfinite(self.http_give_up_s) and self.http_give_up_s > 0):
            raise ConfigError(
                f"http_give_up_s must be a positive number of seconds, got {self.http_give_up_s} ({self._origin('http_give_up_s')})"
            )
        if self.central_url:
            check_server_url(
                "central_url",
                self.central_url,
                self._origin("central_url"),
                "MANYI_CENTRAL_USER and MANYI_CENTRAL_PASSWORD",
            )
        if self.kobo_url:
            check_server_url(
                "kobo_url", self.kobo_url, self._origin("kobo_url"), "MANYI_KOBO_TOKEN"
            )
        if not (math.isfinite(self.gps_accuracy_m) and self.gps_accuracy_m > 0):
            raise ConfigError(
                f"gps_accuracy_m must be a positive number of metres, got {self.gps_accuracy_m} ({self._origin('gps_accuracy_m')})"
            )
        _check_extent(self.extent, self._origin("extent"))
        if self.public_url:
            check_server_url(
                "public_url",
                self.public_url,
                self._origin("public_url"),
                "nothing: the link's token is the credential",
            )
        if not self.roles.is_file():
            raise ConfigError(
                f"roles file {self.roles} ({self._origin('roles')}) does not exist; check `roles` / MANYI_ROLES"
            )
        _check_plan(self.plan, self._origin("plan"))
        if self.store_url:
            check_store_url(self.store_url.get(), self._origin("store_url"))

    def _secret_values(self) -> tuple[str, ...]:
        held = (self.central_password, self.kobo_token, self.tianditu_key, self.store_url)
        return tuple(s.get() for s in held if s) + _url_password(self.store_url)

    def _origin(self, name: str) -> str:
        return self.origins.get(name, "the built-in default")

    @property
    def store_path(self) -> Path:
        return self.data_dir / "manyi.sqlite"

    @property
    def roster_path(self) -> Path:
        return self.rosters_dir if self.rosters_dir is not None else self.data_dir / "rosters"


_SECRETS = {"central_password", "kobo_token", "tianditu_key", "store_url"}


def _url_password(url: Secret | None) -> tuple[str, ...]:
    try:
        password = urlsplit(url.get()).password if url else None
    except ValueError:
        password = None
    return (password,) if password else ()


def check_store_url(url: str, origin: str) -> None:
    """``postgresql://[user[:password]@]host[:port]/database``; the message never shows the
    password."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("postgresql", "postgres")
        or not parts.path.strip("/")
        or not (parts.hostname or "host=" in parts.query)
    ):
        shown = scrub(url, _url_password(Secret(url)))
        raise ConfigError(
            f"store_url {shown!r} ({origin}) is not a PostgreSQL URL; write it like "
            "postgresql://db.example.org:5432/manyi (user and password in MANYI_STORE_URL or "
            "~/.pgpass), or leave it empty for the SQLite file under data_dir"
        )


def _check_extent(extent: tuple[float, ...], origin: str) -> None:
    west, south, east, north = extent
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise ConfigError(
            f"extent {','.join(f'{v:g}' for v in extent)} ({origin}) is not west,south,east,north "
            "in degrees with west < east and south < north, e.g. 117.22,35.15,117.30,35.20"
        )


def _check_plan(path: Path, origin: str) -> None:
    """The plan file exists and is a valid plan; the message names the layer that set it."""
    if not path.is_file():
        raise ConfigError(f"plan file {path} ({origin}) does not exist; check `plan` / MANYI_PLAN")
    stat = path.stat()
    try:
        _valid_plan(path.resolve(), stat.st_mtime_ns, stat.st_size)
    except ConfigError as e:
        raise ConfigError(f"{e} (plan {origin})") from None


@functools.lru_cache(maxsize=32)  # settings are rebuilt often (replace); a plan is read once
def _valid_plan(path: Path, mtime_ns: int, size: int) -> None:
    from pipelines.analysis.plan import load_plan  # the plan's own rules, read lazily

    load_plan(path)


def check_server_url(name: str, url: str, origin: str, credentials: str) -> None:
    """Refuse a server URL that is not http(s)://host[:port][/path], or that holds user
    info: ``user:password@`` would be printed with the URL, so credentials go in
    ``credentials`` (environment variables) instead. The message never shows them."""
    scheme, sep, rest = url.partition("://")
    # anywhere, not only before the path: a password may hold / ? or #, and a server's
    # base URL has no other use for @
    if sep and "@" in rest:
        shown = f"{scheme}://***@{rest.rsplit('@', 1)[1].split('/', 1)[0]}/…"
        raise ConfigError(
            f"{name} {shown} ({origin}) holds a user name or password; remove them from the "
            f"URL and set {credentials} in the environment instead"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{name} {scrub(url)!r} ({origin}) is not a server URL; write it like "
            "https://central.example.org"
        )


_PATHS = {
    "plan",
    "roles",
    "villages",
    "boundaries",
    "rosters_dir",
    "forms_dir",
    "build_dir",
    "data_dir",
    "outputs_dir",
}
_TOML_FORBIDDEN = _SECRETS  # secrets never live in a committed file


def _coerce(name: str, value: Any, base: Path | None, origin: str) -> Any:
    if value is None or value == "":
        return None
    kinds = {f.name: f.type for f in fields(Settings)}
    kind = kinds[name]
    try:
        if name in _SECRETS:
            return Secret(str(value))
        if name in _PATHS:
            p = Path(str(value)).expanduser()
            return p if p.is_absolute() or base is None else base / p
        if kind == "int" or name in (
            "plan_year",
            "central_project",
            "central_page_size",
            "kobo_page_size",
        ):
            return int(value)
        if name in ("gps_accuracy_m", "http_give_up_s"):
            return float(value)
        if name == "extent":
            parts = value.split(",") if isinstance(value, str) else value
            if isinstance(parts, list | tuple) and len(parts) == 4:
                return tuple(float(v) for v in parts)
            raise ValueError(value)
        return str(value)
    except (TypeError, ValueError):
        shown = scrub(repr(value))[:80]  # the value may be a password pasted in the wrong place
        if name == "extent":
            raise ConfigError(
                f"extent = {shown} ({origin}) is not four numbers west,south,east,north in "
                'degrees, e.g. "117.22,35.15,117.30,35.20"'
            ) from None
        raise ConfigError(f"{name} = {shown} ({origin}) is not a valid {kind}") from None


def find_config_file(explicit: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if explicit is not None:
        return explicit
    if env.get("MANYI_CONFIG"):
        return Path(env["MANYI_CONFIG"])
    local = Path.cwd() / "manyi.toml"
    return local if local.exists() else REPO_ROOT / "manyi.toml"


def load_settings(
    options: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Resolve settings: ``options`` > ``env`` (MANYI_*) > ``manyi.toml`` > defaults."""
    env = os.environ if env is None else env
    try:
        return _resolve(options, env, config_file)
    except ConfigError as e:  # a secret pasted into another setting is not echoed
        given = [env.get(f"MANYI_{k.upper()}") for k in _SECRETS]
        given += [(options or {}).get(k) for k in _SECRETS]
        texts = tuple(v.get() if isinstance(v, Secret) else str(v) for v in given if v)
        raise ConfigError(scrub(str(e), texts)) from None


def _resolve(
    options: Mapping[str, Any] | None, env: Mapping[str, str], config_file: Path | None
) -> Settings:
    path = find_config_file(config_file, env)
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    known = {f.name for f in fields(Settings)} - {"config_file", "origins"}

    if path.exists():
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML ({e}); fix the file or remove it") from None
        for key, value in table.items():
            if key == "store_url" and isinstance(value, str) and _url_password(Secret(value)):
                raise ConfigError(
                    f"{path}: store_url holds a password, which must not be in a committed "
                    "file; remove it from the URL and put it in ~/.pgpass, or set the whole "
                    "URL in MANYI_STORE_URL in the environment instead"
                )
            if key in _TOML_FORBIDDEN - {"store_url"}:
                raise ConfigError(
                    f"{path}: '{key}' is a secret and must not be in a committed file; "
                    f"remove it and set MANYI_{key.upper()} in the environment instead"
                )
            if key not in known:
                raise ConfigError(
                    f"{path}: unknown setting '{key}'; known settings: {', '.join(sorted(known))}"
                )
            values[key] = _coerce(key, value, path.parent, f"in {path}")
            origins[key] = f"set in {path}"
    elif config_file is not None or env.get("MANYI_CONFIG"):
        raise ConfigError(f"config file {path} does not exist; check --config / MANYI_CONFIG")

    for key in known:
        raw = env.get(f"MANYI_{key.upper()}")
        if raw not in (None, ""):
            values[key] = _coerce(key, raw, None, f"from MANYI_{key.upper()}")
            origins[key] = f"set by MANYI_{key.upper()}"

    for key, value in (options or {}).items():
        if key not in known:
            raise ConfigError(f"unknown option '{key}'")
        if value is not None:
            values[key] = _coerce(key, value, None, f"option --{key.replace('_', '-')}")
            origins[key] = f"set by option --{key.replace('_', '-')}"

    return Settings(**values, config_file=path if path.exists() else None, origins=origins)
