from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.fixture
def forms_dir(tmp_path: Path) -> Path:
    d = tmp_path / "forms"
    d.mkdir()
    return d


@pytest.fixture
def rosters(forms_dir: Path) -> Path:
    shutil.copytree(REPO / "forms" / "rosters", forms_dir / "rosters")
    return forms_dir / "rosters"
