"""The client is tested against the real server: reuse its fixtures."""

from tests.realtime.conftest import cascade_engine, server  # noqa: F401
