"""A throwaway PostgreSQL cluster for the tests and the benchmarks: ``initdb`` and ``pg_ctl``
from Debian's postgresql package (on PATH, or under /usr/lib/postgresql/<v>/bin), a free
loopback port, a temporary folder, password (SCRAM) logins over TCP as a real server has.

Run as root (CI containers), the cluster runs as the ``postgres`` user (or ``nobody``):
PostgreSQL refuses to run as root.

``pg_cluster`` (a session fixture; a test module imports ``pg_cluster_fixture`` and
``pg_url_fixture``, named so as not to shadow the arguments) skips with the reason only
where the binaries are missing, and fails instead when ``CI`` is set: CI must test
PostgreSQL. ``pg_url`` gives each test a database of its own.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

PASSWORD_USER = "manyi"


def pg_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runner() -> dict:
    """subprocess arguments that drop root: PostgreSQL will not run as root."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    raise RuntimeError("running as root and no postgres/nobody user to run PostgreSQL as")


@dataclass
class Cluster:
    root: Path
    bindir: Path
    port: int
    password: str

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PASSWORD_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
            **_runner(),
        )


def start_cluster(root: Path, *, durable: bool = False) -> Cluster:
    """initdb + pg_ctl start in ``root``; ``durable=False`` turns fsync off (tests: nothing
    here survives a power cut anyway), the benchmark keeps PostgreSQL's defaults."""
    bindir = pg_bindir()
    if bindir is None:
        raise FileNotFoundError("initdb/pg_ctl not found")
    run = _runner()
    root.mkdir(parents=True, exist_ok=True)
    if run:  # the postgres user must reach the folder through private temporary folders
        for folder in (root, *root.parents):
            mode = folder.stat().st_mode
            if not mode & 0o001:
                folder.chmod(mode | 0o001)
    password = secrets.token_urlsafe(12)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n", encoding="utf-8")
    (root / "sock").mkdir(exist_ok=True)
    if run:
        for p in (root, pwfile, root / "sock"):
            os.chown(p, run["user"], run["group"])
    subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            PASSWORD_USER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        **run,
    )
    port = _free_port()
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root / 'sock'} -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run(
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(root / "data"),
            "-o",
            options,
            "-l",
            str(root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        ],
        check=True,
        capture_output=True,
        **run,
    )
    return Cluster(root, bindir, port, password)


@pytest.fixture(scope="session", name="pg_cluster")
def pg_cluster_fixture():
    if pg_bindir() is None:
        reason = (
            "PostgreSQL is not installed (no initdb/pg_ctl on PATH or in "
            "/usr/lib/postgresql/*/bin); install Debian's postgresql package"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {reason}")
        pytest.skip(reason)
    # not under pytest's private basetemp (0700, reset by each session): the cluster runs as
    # another user when the tests run as root
    root = Path(tempfile.mkdtemp(prefix="manyi-pg-"))
    try:
        cluster = start_cluster(root / "cluster")
        yield cluster
        cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(name="pg_url")
def pg_url_fixture(pg_cluster: Cluster) -> str:
    """A fresh, empty database of the session's cluster, for one test."""
    return pg_cluster.create_database(f"t_{secrets.token_hex(6)}")


def start_serve(data: Path, build: Path, env: dict[str, str], *args: str):
    """`manyi serve` with extra arguments (``--workers 2``); for the tests and
    benchmarks/serve.py."""
    from tests.pipelines.server._server import start_server

    return start_server(data, build, env=env, timeout=60, args=args)
