"""A real `manyi serve` on loopback in a subprocess, for the tests and the benchmark: started
for a data directory and a build directory, waited for until it answers, stopped (SIGTERM)
or killed (SIGKILL, as a power cut or the OOM killer would)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen
    log_path: Path
    data_dir: Path
    build_dir: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=20)

    def restart(self) -> Server:
        self.stop()
        return start_server(self.data_dir, self.build_dir, port=self.port, env=self.env)


def settings_env(
    data_dir: Path, build_dir: Path, env: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of a `manyi` run on ``data_dir``/``build_dir``, isolated from the
    repository's manyi.toml and the caller's MANYI_* settings."""
    config = Path(data_dir) / "manyi.toml"
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    if not config.exists():
        config.write_text("", encoding="utf-8")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MANYI_")}
    return {
        **base,
        "MANYI_CONFIG": str(config),
        "MANYI_DATA_DIR": str(data_dir),
        "MANYI_BUILD_DIR": str(build_dir),
        "MANYI_VILLAGES": str(REPO / "geo" / "villages.csv"),
        # the portal's background refresh writes here, never into the repository's outputs/
        "MANYI_OUTPUTS_DIR": str(Path(data_dir) / "outputs"),
        **(env or {}),
    }


def start_server(
    data_dir: Path,
    build_dir: Path,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    args: tuple[str, ...] = (),
) -> Server:
    """`manyi serve` on loopback; ``args`` are extra options (``--workers 2``)."""
    port = port or free_port()
    full_env = settings_env(data_dir, build_dir, env)
    log_path = Path(data_dir) / f"serve-{port}-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *args,
            ],
            cwd=REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(
        f"http://127.0.0.1:{port}", port, proc, log_path, Path(data_dir), Path(build_dir), env or {}
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"manyi serve exited with {proc.returncode}: {server.log()[-2000:]}")
        try:
            httpx.get(server.url + "/", timeout=1)
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"manyi serve did not answer within {timeout} s: {server.log()[-2000:]}")


def csrf_of(page: httpx.Response | str) -> str:
    """The CSRF token a portal page's form carries."""
    html = page if isinstance(page, str) else page.text
    return re.search(r'name="csrf" value="([^"]+)"', html)[1]


def log_in(c: httpx.Client, login: str, password: str, **headers) -> httpx.Response:
    """The login form, filled and sent as a browser does (its CSRF token first)."""
    form = c.get("/login", headers=headers)
    data = {"login": login, "password": password, "csrf": csrf_of(form)}
    return c.post("/login", data=data, headers=headers)
