import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def watch():
    """A started prepwatch on an ephemeral port, stopped after the test."""
    import prepwatch

    prepwatch.stop()
    w = prepwatch.start(run="test", port=0, sources=False)
    yield w
    prepwatch.stop()
