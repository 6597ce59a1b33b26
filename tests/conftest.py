from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from forms.build import BuildReport, build_forms
from tests.browser import find_chromium
from tests.helpers import REPO, VILLAGES


@pytest.fixture
def forms_dir(tmp_path: Path) -> Path:
    d = tmp_path / "forms"
    d.mkdir()
    return d


@pytest.fixture
def rosters(forms_dir: Path) -> Path:
    shutil.copytree(REPO / "forms" / "rosters", forms_dir / "rosters")
    return forms_dir / "rosters"


@pytest.fixture(scope="session")
def built_forms(tmp_path_factory: pytest.TempPathFactory) -> BuildReport:
    """Every form of ``forms/`` built once, with ODK Validate, as `manyi forms build` does,
    for all the tests that read built forms. Tests only read it."""
    return build_forms(REPO / "forms", tmp_path_factory.mktemp("built_forms"), VILLAGES)


@pytest.fixture(scope="module")
def browser():
    """A real headless Chromium (Debian's), one per test module."""
    chromium = find_chromium()  # in CI (CI=true) a missing Chromium fails, else skips
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield b
        b.close()
