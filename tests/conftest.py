"""Shared fixtures: the real teachers, loaded once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def whisper():
    from voxloop.distill.teachers.asr import load_asr

    return load_asr()


@pytest.fixture(scope="session")
def assistant():
    from voxloop.distill.teachers.domain.assistant import ScriptedAssistant

    return ScriptedAssistant()
