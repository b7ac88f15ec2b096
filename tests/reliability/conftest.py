"""The reliability suite's fixtures: every server test runs against every engine, the
cascade, the native student and the hybrid of the two, the default (the helpers are in
tests/reliability/helpers.py and tests/helpers/server.py).

``engine`` is parametrized, so ``make_server`` and ``serve_process`` start servers on
each engine in turn; each engine is loaded once per test run (the hybrid is the other
two)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.server import servers_of, speech_24k
from tests.reliability.helpers import QUESTION
from voxloop.realtime.server_process import ServerProcess

ENGINES = ("cascade", "native", "hybrid")


@pytest.fixture(scope="session")
def question_24k() -> np.ndarray:
    return speech_24k(QUESTION)


@pytest.fixture(params=ENGINES)
def engine_name(request) -> str:
    return request.param


@pytest.fixture()
def engine(engine_name, request):
    """The engine object (``cascade_engine`` or ``native_engine``), loaded once."""
    return request.getfixturevalue(f"{engine_name}_engine")


@pytest.fixture()
def make_server(engine):
    """``make(**settings)``: a RealtimeServer in this process on ``engine``."""
    with servers_of(engine) as make:
        yield make


@pytest.fixture()
def serve_process(engine_name):
    started = []

    def start(*args: str) -> ServerProcess:
        """``voxloop serve --engine ENGINE ARGS``: a server in its own process."""
        started.append(ServerProcess(["--engine", engine_name, *args]).start())
        return started[-1]

    yield start
    for p in started:
        p.kill()
