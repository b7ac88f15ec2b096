"""The realtime tests' server, engines and checking client live in tests/helpers/server.py:
its fixtures reach every test folder through ``pytest_plugins`` in tests/conftest.py.
The helpers are re-exported here only so that imports written before the move keep
working; import them from ``tests.helpers.server`` (tests/test_layout.py checks it)."""

from tests.helpers.server import (  # noqa: F401 - re-exported
    CHUNK_MS,
    RATE_HZ,
    Client,
    Received,
    ServerThread,
    append_event,
    connect,
    connect_manual,
    handshake,
    servers_of,
    silence,
    speech_24k,
    stream_realtime,
)
