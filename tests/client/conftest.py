"""The client is tested against the real server (its fixtures are reused) and
through a private PulseAudio daemon."""

import pytest

from tests.realtime.conftest import cascade_engine, server  # noqa: F401


@pytest.fixture(scope="module")
def pa(tmp_path_factory):
    from tests.client.pulse import PulseAudio

    daemon = PulseAudio(tmp_path_factory.mktemp("pulse"))
    yield daemon
    daemon.stop()
