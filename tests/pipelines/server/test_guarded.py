"""A bug inside a login or manager page: one scrubbed log line and a Chinese 500 page with the
page's security headers, never a traceback or the secret the exception carried."""

from __future__ import annotations

import logging

import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from pipelines.server import _pages
from pipelines.server.auth import SECURITY_HEADERS, guarded


async def _buggy(request):
    raise RuntimeError("lost at https://ops:s3cret-pw@central.example/v1 in handler")


@pytest.mark.parametrize("headers", [SECURITY_HEADERS, _pages.HEADERS], ids=["login", "manage"])
def test_a_bug_is_a_chinese_500_page_and_one_scrubbed_line(headers, caplog) -> None:
    app = Starlette(routes=[Route("/x", guarded(_buggy, headers), methods=["GET"])])
    with caplog.at_level(logging.ERROR, logger="manyi.serve"), TestClient(app) as c:
        r = c.get("/x")
    assert r.status_code == 500 and "服务器内部错误" in r.text
    assert "Traceback" not in r.text and "RuntimeError" not in r.text
    for name, value in headers.items():
        assert r.headers[name] == value
    [line] = [rec.getMessage() for rec in caplog.records]
    assert "GET /x" in line and "RuntimeError" in line and "s3cret-pw" not in line
