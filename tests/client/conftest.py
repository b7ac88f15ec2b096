"""The client is tested against the real server (``server`` and the engines come from
tests/helpers/server.py, through the root conftest's ``pytest_plugins``) and through a
private PulseAudio daemon."""

import pytest


@pytest.fixture(scope="module")
def pa(tmp_path_factory):
    from tests.client.pulse import PulseAudio

    daemon = PulseAudio(tmp_path_factory.mktemp("pulse"))
    yield daemon
    daemon.stop()
