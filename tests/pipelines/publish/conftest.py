"""The stand-in servers the pull tests use, for publishing to."""

from tests.pipelines.sources.test_central import central  # noqa: F401 - a fixture
from tests.pipelines.sources.test_kobo import kobo  # noqa: F401 - a fixture
