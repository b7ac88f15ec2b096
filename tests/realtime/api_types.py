"""Conformance: every event the server sends must validate against the official
``openai`` package's pydantic types (GA ``openai.types.realtime``, beta
``openai.types.beta.realtime``). One adapter per flavour, built once (it is slow
to build)."""

from __future__ import annotations

from functools import cache


@cache
def server_event_types(beta: bool = False):
    """A pydantic ``TypeAdapter`` for the union of the API's server events."""
    from pydantic import TypeAdapter

    if beta:
        from openai.types.beta.realtime import RealtimeServerEvent
    else:
        from openai.types.realtime import RealtimeServerEvent
    return TypeAdapter(RealtimeServerEvent)


def validate_server_event(event: dict, beta: bool = False) -> None:
    """Raise pydantic's ``ValidationError`` if ``event`` breaks the API's types."""
    server_event_types(beta).validate_python(event)
