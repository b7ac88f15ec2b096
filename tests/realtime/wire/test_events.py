"""Each server event name is spelled once in the server's code: in its builder
(``realtime/wire/events.py``) or, for the few other modules compare against, in
one constant there."""

from __future__ import annotations

import typing
from pathlib import Path

REALTIME = Path(__file__).resolve().parents[3] / "realtime"


def official_server_event_names() -> set[str]:
    from openai.types.realtime import RealtimeServerEvent

    union = typing.get_args(RealtimeServerEvent)[0]  # Annotated[Union[...], discriminator]
    return {typing.get_args(t.model_fields["type"].annotation)[0]
            for t in typing.get_args(union)}


def test_each_server_event_name_is_spelled_once():
    sources = {p: p.read_text() for p in REALTIME.rglob("*.py")}
    names = official_server_event_names()
    spelled = {}
    for name in names - {"error"}:  # "error" is also a plain key of error events
        spelled[name] = [p.relative_to(REALTIME).as_posix() for p, text in sources.items()
                         for _ in range(text.count(f'"{name}"'))]
    assert not {n: where for n, where in spelled.items() if len(where) > 1}
    sent = {n for n, where in spelled.items() if where}
    assert {"session.created", "response.output_audio.delta", "response.done"} <= sent
    assert {where[0] for n, where in spelled.items() if where} <= {"wire/events.py",
                                                                     "wire/protocol.py"}
