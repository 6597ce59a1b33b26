"""Secrets never printed, honest source errors, visible retrying with a settable give-up time.

Every server here is a real HTTP server on loopback, started by the test; nothing of the
project or of ``requests`` is mocked. The servers are hostile the way real ones are: they echo
the request's Authorization and Cookie headers (and the login body) in their error pages,
set session cookies, answer 500 for ever, or send megabytes of error text.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import string
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines._http import RetryNotice, RetryPolicy, request, scrub
from pipelines.cli import main
from pipelines.config import load_settings
from pipelines.demo.loopback import LoopbackServer
from pipelines.errors import ConfigError, SourceError
from pipelines.sync import pull

PASSWORD = "pw-Sekr3t:@/?#%!"
TOKEN = "Lq9!kR2$" + "vT7xW" * 11 + "a"  # Central's session tokens: 64 chars with ! and $
KOBO_TOKEN = "0f3a9c" + "5e" * 17
COOKIE = "c00kie-Val_" + "Z9" * 10  # a session cookie the server sets: known to nobody
FORM = "sanitation_sweep"


class Echo(LoopbackServer):
    """A server that logs in like Central (``POST /v1/sessions`` → a token, plus a
    ``Set-Cookie``) and answers everything else ``status`` with ``body(request)``."""

    def __init__(
        self,
        status: int,
        body: Callable[[BaseHTTPRequestHandler, bytes], bytes],
        headers: dict[str, str] | None = None,
    ):
        echo = self
        self.status, self.body, self.hits = status, body, 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self) -> None:
                sent = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                echo.hits += 1
                if self.path == "/v1/sessions" and echo.status != 401:
                    status, data = 200, json.dumps({"token": TOKEN}).encode()
                else:
                    status, data = echo.status, echo.body(self, sent)
                self.send_response(status)
                self.send_header("Set-Cookie", f"__Host-session={COOKIE}; Path=/; Secure")
                self.send_header(
                    "Content-Type", "application/json" if data[:1] == b"{" else "text/html"
                )
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _answer

        super().__init__(Handler)


def _headers_text(req: BaseHTTPRequestHandler, sent: bytes) -> str:
    """What a debugging proxy or a framework's error page shows: the credentials first (so
    they fall inside the part a message quotes), raw, as a dict, and the request body (the
    login JSON holds the password), then the other headers."""
    first = {k: v for k, v in req.headers.items() if k.lower() in ("authorization", "cookie")}
    return (
        f"{first!r} Cookie: {req.headers.get('Cookie')} body: {sent.decode('utf-8', 'replace')} "
        f"Set-Cookie: __Host-session={COOKIE}; Path=/\n{req.command} {req.path}\n{req.headers}"
    )


ECHOES: dict[str, Callable[[BaseHTTPRequestHandler, bytes], bytes]] = {
    "text": lambda r, s: _headers_text(r, s).encode(),
    "html": lambda r, s: f"<html><body><pre>{_headers_text(r, s)}</pre></body></html>".encode(),
    "central-json": lambda r, s: json.dumps(
        {"code": 401.2, "message": "Could not authenticate. " + _headers_text(r, s)}
    ).encode(),
    "kpi-json": lambda r, s: json.dumps({"detail": _headers_text(r, s)}).encode(),
}


_ADVICE_TAIL = {
    401: " (or token) in your settings",
    403: " for that; ask the server's administrator",
    404: ", project and form id",
}


def _secrets_in(text: str) -> list[str]:
    return [s for s in (PASSWORD, TOKEN, KOBO_TOKEN, COOKIE) if s in text]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(source: str, url: str, tmp_path: Path, give_up: str = "0.5") -> dict[str, str]:
    env = {
        "MANYI_DATA_DIR": str(tmp_path / "data"),
        "MANYI_HTTP_GIVE_UP_S": give_up,
        "MANYI_SOURCE": source,
    }
    if source == "central":
        env |= {
            "MANYI_CENTRAL_URL": url,
            "MANYI_CENTRAL_USER": "admin@example.com",
            "MANYI_CENTRAL_PASSWORD": PASSWORD,
            "MANYI_CENTRAL_PROJECT": "1",
        }
    else:
        env |= {"MANYI_KOBO_URL": url, "MANYI_KOBO_TOKEN": KOBO_TOKEN}
    return env


# ---- secrets a server echoes never reach a message, a log or the terminal ---------------
@pytest.mark.parametrize("source", ["central", "kobo"])
@pytest.mark.parametrize("status", [400, 401, 403, 404, 500])
@pytest.mark.parametrize("echo", sorted(ECHOES))
def test_a_server_echoing_credentials_gets_none_of_them_printed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture,
    source: str,
    status: int,
    echo: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    with Echo(status, ECHOES[echo]) as server:
        env = _env(source, server.url, tmp_path)
        with pytest.raises(SourceError) as err:
            pull(load_settings({}, env=env), source, [FORM])
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        code = main(["pull", "--source", source, "--form", FORM])
    assert server.hits >= 1
    out, errout = capsys.readouterr()
    assert code != 0 and f"HTTP {status}" in errout
    e = err.value
    assert e.status == status and e.url and e.url.startswith(server.url)
    texts = [str(e), repr(e), e.url, e.detail or "", e.code or "", caplog.text, out, errout]
    for text in texts:
        assert _secrets_in(text) == [], text
    assert "\n" not in str(e) and len(str(e)) < 900  # one line, the body quoted short
    advice = {
        401: "check the user name and password",
        403: "lacks the rights",
        404: "check the URL",
    }
    if source == "kobo" and status in advice:  # the scrubbed body does not swallow the advice
        assert str(e).endswith(advice[status] + _ADVICE_TAIL[status])


def test_a_login_refused_with_the_password_echoed_keeps_it_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # /v1/sessions itself answers 401, echoing the login body with the password
    with Echo(401, ECHOES["central-json"]) as server, pytest.raises(SourceError) as err:
        pull(load_settings({}, env=_env("central", server.url, tmp_path)), "central", [FORM])
    e = err.value
    assert "refused the login" in str(e) and (e.status, e.code) == (401, "401.2")
    assert e.detail and "Could not authenticate" in e.detail
    for text in (str(e), e.detail, caplog.text):
        assert _secrets_in(text) == []


def test_a_long_error_body_is_cut_short_and_kept_on_one_line(tmp_path: Path) -> None:
    long = "错误原因 " * 5000 + "\x1b[31m\r\nAuthorization: Bearer " + TOKEN
    with (
        Echo(404, lambda r, s: json.dumps({"code": 404.1, "message": long}).encode()) as server,
        pytest.raises(SourceError) as err,
    ):
        pull(load_settings({}, env=_env("central", server.url, tmp_path)), "central", [FORM])
    e = err.value
    assert e.detail and len(e.detail) <= 200 and e.detail.startswith("错误原因")
    assert len(str(e)) < 600 and "\n" not in str(e) and "\x1b" not in str(e)
    assert (e.status, e.code) == (404, "404.1")


def test_source_error_keeps_centrals_url_status_and_code(tmp_path: Path) -> None:
    message = "Could not find the resource you were looking for."
    body = json.dumps({"code": 404.1, "message": message}).encode()
    with Echo(404, lambda r, s: body) as server:
        s = load_settings({}, env=_env("central", server.url, tmp_path))
        with pytest.raises(SourceError) as err:
            pull(s, "central", ["no_such_form"])
    e = err.value
    assert (e.status, e.code, e.detail) == (404, "404.1", message)
    assert e.url == f"{server.url}/v1/projects/1/forms/no_such_form/versions"
    assert str(e).startswith(f"ODK Central refused GET {e.url}: HTTP 404 {message} (code 404.1)")
    assert "check the URL, project and form id" in str(e)


def test_source_error_keeps_kpis_detail(tmp_path: Path) -> None:
    with (
        Echo(403, lambda r, s: b'{"detail": "You do not have permission."}') as server,
        pytest.raises(SourceError) as err,
    ):
        pull(load_settings({}, env=_env("kobo", server.url, tmp_path)), "kobo", [FORM])
    e = err.value
    assert (e.status, e.code, e.detail) == (403, None, "You do not have permission.")
    assert e.url and e.url.startswith(f"{server.url}/api/v2/assets/")


# ---- retrying is visible, and stops at the give-up time ---------------------------------
def test_a_closed_port_is_retried_visibly_then_given_up_naming_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    s = load_settings({}, env=_env("central", url, tmp_path, give_up="2"))
    notices: list[RetryNotice] = []
    started = time.monotonic()
    with pytest.raises(SourceError) as err:
        pull(s, "central", [FORM], policy=RetryPolicy.from_settings(s, on_retry=notices.append))
    took = time.monotonic() - started
    assert 1.9 <= took < 4  # about http_give_up_s, not the default 300 s
    assert len(notices) >= 3
    assert [n.attempt for n in notices] == list(range(1, len(notices) + 1))
    assert all(n.problem == "connection refused" and n.give_up_s == 2 for n in notices)
    assert all(n.url == f"{url}/v1/sessions" for n in notices)
    elapsed = [n.elapsed_s for n in notices]
    assert elapsed == sorted(elapsed) and elapsed[-1] + notices[-1].wait_s <= 2.01
    text = str(err.value)
    assert f"did not answer POST {url}/v1/sessions after {len(notices) + 1} attempt(s)" in text
    assert "(last: connection refused)" in text
    assert "check the server address" in text and "http_give_up_s (now 2 s)" in text
    assert err.value.url == f"{url}/v1/sessions" and err.value.status is None


def test_the_cli_gives_up_after_the_give_up_time_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    for key, value in _env("kobo", url, tmp_path, give_up="1.5").items():
        monkeypatch.setenv(key, value)
    started = time.monotonic()
    assert main(["pull", "--source", "kobo", "--form", FORM]) == 1
    assert time.monotonic() - started < 4
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"manyi: KoboToolbox did not answer GET {url}/api/v2/assets/")
    assert "http_give_up_s (now 1.5 s)" in line


def test_a_server_answering_500_is_retried_with_each_retry_announced(tmp_path: Path) -> None:
    notices: list[RetryNotice] = []
    policy = RetryPolicy(max_seconds=1.5, base_delay=0.1, on_retry=notices.append)
    with Echo(500, ECHOES["text"]) as server, pytest.raises(SourceError) as err:
        pull(
            load_settings({}, env=_env("kobo", server.url, tmp_path)),
            "kobo",
            [FORM],
            policy=policy,
        )
    assert [n.attempt for n in notices] == list(range(1, len(notices) + 1)) and len(notices) >= 3
    assert {n.problem for n in notices} == {"HTTP 500"}
    assert server.hits == len(notices) + 1
    assert err.value.status == 500 and "(last: HTTP 500)" in str(err.value)


def test_retry_after_longer_than_the_give_up_time_gives_up_at_once() -> None:
    notices: list[RetryNotice] = []
    policy = RetryPolicy(max_seconds=2, on_retry=notices.append)
    with Echo(429, lambda r, s: b"slow down", {"Retry-After": "30"}) as server:
        started = time.monotonic()
        with requests.Session() as session, pytest.raises(SourceError) as err:
            request(session.request, "GET", f"{server.url}/x", policy, what="KoboToolbox")
    assert time.monotonic() - started < 1 and notices == [] and server.hits == 1
    assert "(last: HTTP 429, asking to wait 30 s)" in str(err.value)
    assert err.value.status == 429


def test_the_last_wait_is_cut_to_the_give_up_time() -> None:
    notices: list[RetryNotice] = []
    policy = RetryPolicy(max_seconds=1, base_delay=5, on_retry=notices.append)
    with Echo(503, lambda r, s: b"busy") as server:
        started = time.monotonic()
        with requests.Session() as session, pytest.raises(SourceError) as err:
            request(session.request, "GET", f"{server.url}/x", policy)
    # a 2.5–5 s backoff is cut to the second that is left, then the last attempt is made
    assert len(notices) == 1 and 0.9 <= notices[0].wait_s <= 1
    assert server.hits == 2 and 0.9 <= time.monotonic() - started < 2.5
    assert re.search(r"after 2 attempt\(s\) in 1\.\d s", str(err.value))


def test_a_url_requests_cannot_send_is_one_line_without_its_credentials() -> None:
    url = f"http://user:{PASSWORD}@127.0.0.1:1/v1/projects"  # the raw password breaks the URL
    with requests.Session() as session, pytest.raises(SourceError) as err:
        request(session.request, "GET", url, RetryPolicy(max_seconds=1), what="ODK Central")
    assert "check the server URL" in str(err.value)
    assert _secrets_in(str(err.value)) == [] and _secrets_in(err.value.url or "") == []


def test_retry_notices_show_urls_without_credentials() -> None:
    port = _closed_port()
    secret = quote(PASSWORD, safe="")
    url = f"http://user:{secret}@127.0.0.1:{port}/v1/key/{TOKEN}/projects?token={KOBO_TOKEN}"
    notices: list[RetryNotice] = []
    policy = RetryPolicy(max_seconds=0.5, base_delay=0.05, on_retry=notices.append)
    with requests.Session() as session, pytest.raises(SourceError) as err:
        request(session.request, "GET", url, policy, what="ODK Central")
    assert notices
    for text in [str(err.value), err.value.url or "", *(n.url for n in notices)]:
        assert _secrets_in(text) == [] and secret not in text and "user:" not in text
    assert f"127.0.0.1:{port}/v1/key/***/projects?token=***" in str(err.value)


# ---- the scrubber, on generated secrets in every shape they are written in --------------
# Central's session and app-user tokens ([A-Za-z0-9!$]), kpi's hex keys, JWTs and OAuth
# tokens ([A-Za-z0-9._~-])
TOKENS = st.text(string.ascii_letters + string.digits + "!$-_.~", min_size=16, max_size=80)
BASE64 = st.binary(min_size=4, max_size=60).map(lambda b: base64.b64encode(b).decode())
PASSWORDS = st.text(
    string.ascii_letters + string.digits + "!$%&*()+,;=:@/?#[]~-_.'", min_size=6, max_size=40
)
PROSE = st.sampled_from(["", "ODK Central refused GET /v1/x: ", "错误：", "debug dump\n", "{"])
SHAPES = [
    "Authorization: Bearer {t}",
    "authorization: bearer {t}",
    "{{'Authorization': 'Bearer {t}', 'Accept': '*/*'}}",
    '{{"Authorization": "Token {t}"}}',
    "Proxy-Authorization: Basic {t}",
    "Authorization={t}",
    "Bearer {t} was sent",
    "key Token {t}",
    "Set-Cookie: __Host-session={t}; Path=/; HttpOnly",
    "Cookie: theme=dark; __Host-session={t}",
    "{{'Cookie': 'csrftoken={t}; sessionid={t}'}}",
    "the cookie __Host-session={t} expired",
    "https://central.example.org/v1/key/{t}/projects/1",
    "https://h.example/api?format=json&token={t}&limit=1",
    "https://h.example/cb?access_token={t}",
    "https://h.example/x?password={t}",
    "https://h.example/x?api_key={t}#frag",
    'body: {{"email": "a@b.org", "password": "{t}"}}',
    '{{"token": "{t}"}}',
]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(token=TOKENS, shape=st.sampled_from(SHAPES), before=PROSE, after=PROSE)
def test_scrub_removes_every_credential_shape(
    token: str, shape: str, before: str, after: str
) -> None:
    text = before + shape.format(t=token) + after
    scrubbed = scrub(text)
    assert token not in scrubbed
    assert scrub(scrubbed) == scrubbed  # safe to apply twice


@given(value=BASE64, header=st.sampled_from(["Authorization", "Proxy-Authorization"]))
def test_scrub_removes_basic_credentials(value: str, header: str) -> None:
    for text in (f"{header}: Basic {value}", f"{{'{header}': 'Basic {value}'}}"):
        assert value not in scrub(text)


@settings(max_examples=200)
@given(user=st.text(string.ascii_letters + ".", min_size=1, max_size=12), password=PASSWORDS)
def test_scrub_removes_url_user_info(user: str, password: str) -> None:
    scrubbed = scrub(f"GET http://{user}:{password}@central.example.org:8443/v1/projects failed")
    assert password not in scrubbed
    assert "central.example.org:8443/v1/projects" in scrubbed


@given(secret=PASSWORDS, before=PROSE)
def test_scrub_removes_known_secrets_however_they_were_escaped(secret: str, before: str) -> None:
    for written in (secret, requests.utils.quote(secret, safe=""), json.dumps(secret)[1:-1]):
        assert secret not in scrub(before + written + " end", (secret,))


@given(st.text(string.ascii_letters + "，。：；你好村镇 0123456789-", max_size=80))
def test_scrub_leaves_ordinary_text_alone(text: str) -> None:
    assert scrub(text) == text
    assert scrub("Token expired; Basic information; 龙阳镇 东村 report") == (
        "Token expired; Basic information; 龙阳镇 东村 report"
    )


@pytest.mark.parametrize(
    "unit", ["a.", "a-", "a://", '"a.', "a=", "@a", "Token ", "cookie:", "/key/", "\\\\"]
)
def test_scrub_takes_linear_time_on_a_hostile_body(unit: str) -> None:
    body = '"token": "' + unit * (65_536 // len(unit))  # as much as a message reads of a body
    started = time.monotonic()
    scrub(body, (PASSWORD,))
    assert time.monotonic() - started < 0.5  # the first scrubber took minutes on "a." * 32768


# ---- settings: a URL holding credentials is refused without echoing them ----------------
@settings(max_examples=150)
@given(password=PASSWORDS, key=st.sampled_from(["MANYI_CENTRAL_URL", "MANYI_KOBO_URL"]))
def test_a_server_url_with_user_info_is_refused_without_the_password(
    password: str, key: str
) -> None:
    secret = "pw" + password
    env = {key: f"https://manyi:{secret}@central.example.org/"}
    with pytest.raises(ConfigError) as err:
        load_settings({}, env=env)
    text = str(err.value)
    assert secret not in text and "holds a user name or password" in text
    assert "https://***@central.example.org" in text and f"set by {key}" in text
    creds = (
        "MANYI_CENTRAL_USER and MANYI_CENTRAL_PASSWORD" if "CENTRAL" in key else "MANYI_KOBO_TOKEN"
    )
    assert creds in text


def test_the_cli_refuses_a_url_with_user_info_without_printing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MANYI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MANYI_CENTRAL_URL", f"http://admin:{PASSWORD}@127.0.0.1:1")
    assert main(["pull", "--source", "central", "--form", FORM]) == 2
    out, errout = capsys.readouterr()
    assert "holds a user name or password" in errout
    assert PASSWORD not in out + errout and "admin:" not in out + errout


# ---- pyodk's config file, read through pyodk's public Client ----------------------------
def test_pyodks_config_file_is_read_and_a_url_with_credentials_in_it_refused(
    tmp_path: Path,
) -> None:
    from pipelines.sources.central import central_config

    path = tmp_path / "pyodk_config.toml"
    s = load_settings({"data_dir": tmp_path / "data"}, env={})
    text = '[central]\nbase_url = "{url}"\nusername = "a@b.org"\npassword = "{pw}"\n'
    path.write_text(
        text.format(url="https://c.example.org", pw=PASSWORD) + "default_project_id = 7\n"
    )
    cfg = central_config(s, env={"PYODK_CONFIG_FILE": str(path)})
    assert (cfg.base_url, cfg.username, cfg.password, cfg.project_id) == (
        "https://c.example.org",
        "a@b.org",
        PASSWORD,
        7,
    )
    assert PASSWORD not in repr(cfg)
    path.write_text(text.format(url=f"https://a:{PASSWORD}@c.example.org", pw=PASSWORD))
    with pytest.raises(ConfigError, match="holds a user name or password") as err:
        central_config(s, env={"PYODK_CONFIG_FILE": str(path)})
    assert PASSWORD not in str(err.value) and str(path) in str(err.value)
    path.write_text("[central]\nbase_url = 3\n")
    with pytest.raises(ConfigError, match="not a valid pyodk config"):
        central_config(s, env={"PYODK_CONFIG_FILE": str(path)})
