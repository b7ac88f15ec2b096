"""Shared fixtures (the real teachers, loaded once per test session) and Hypothesis's
profiles.

Hypothesis: ``CI=true`` (set by CI runners, and by ``make test``/``make check`` when
unset) loads the "ci" profile: derandomized (the same examples on every run, so a
red CI run is red again on rerun), a fixed number of examples, no deadline (the
machines are shared and slow), no example database, and a failure prints the
``@reproduce_failure`` blob. Otherwise the "dev" profile keeps Hypothesis's random
exploration. A counterexample either finds becomes an ``@example`` on its test.
``pytest --hypothesis-profile NAME`` picks one by hand.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# the real server and engines (fixtures: cascade_engine, native_engine, server, make_server)
pytest_plugins = ["tests.helpers.server"]

# parent: Hypothesis's own "default" (a profile made without one inherits whatever profile
# is loaded at the time, and Hypothesis itself loads its "ci" when CI is set at all)
BASE = settings.get_profile("default")
settings.register_profile("ci", BASE, derandomize=True, max_examples=100, deadline=None,
                          database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", BASE, deadline=None, print_blob=True)
settings.load_profile(
    "ci" if os.environ.get("CI", "").lower() not in ("", "0", "false") else "dev")


@pytest.fixture(scope="session")
def whisper():
    from voxloop.distill.teachers.asr import load_asr

    return load_asr()


@pytest.fixture(scope="session")
def judge():
    """Whisper tiny.en with a beam of 5: how tests hear the product's spoken answers.
    Piper's takes differ from call to call, and greedy decoding hears about one take in
    700 of "The capital of France is Paris." as "... Francis Perris" (beam 5 hears Paris);
    a bigger Whisper, as an outside judge would use, hears such takes right too."""
    from voxloop.distill.teachers.asr import ASRSettings, load_asr

    return load_asr(ASRSettings(beam_size=5))


@pytest.fixture(scope="session")
def assistant():
    from voxloop.distill.teachers.domain.assistant import ScriptedAssistant

    return ScriptedAssistant()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small per-block ops run faster on one torch thread than two on a shared machine
    (modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
