from __future__ import annotations

from pathlib import Path

import pytest

from geo.villages import load_villages

DATA = Path(__file__).resolve().parent.parent / "data" / "geo"


@pytest.fixture(scope="session")
def register():
    return load_villages()


@pytest.fixture(scope="session")
def four(register):
    """The four villages drawn in tests/data/geo."""
    return register[:4]
