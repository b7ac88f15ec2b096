"""Fuzzing the real server: thousands of generated client events, a normal session alongside.

Hypothesis draws batches of events: valid ones (referring to the items and
responses the server really made, so odd interleavings such as a truncate before
any response happen), mutations of valid ones (wrong types, missing fields,
negative and huge numbers, unknown types, deep nesting, extra keys) and raw
frames (garbage text, binary frames, invalid UTF-8, NaN, lone surrogates,
messages over the size limits). After each event a marker event that must fail
(``conversation.item.retrieve`` of an item that does not exist) is sent: the
server handles events in order, so errors that arrive before the marker's own
error belong to the fuzzed event.

Checked: every event that breaks the API gets an ``error`` event or a clean close
with a code and a reason (1007 invalid UTF-8, 1009 too big); no event ever gives
``internal_error``; every event the server sends validates against the ``openai``
package's types; the server stays up; and a normal session running alongside the
whole time answers its spoken question correctly, turn after turn.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest
import websockets
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.realtime.api_types import server_event_types
from tests.reliability.helpers import answered, spoken_turn

pytestmark = pytest.mark.slow  # real servers on both engines

MIN_EVENTS = int(os.environ.get("FUZZ_EVENTS", "5000"))
EVENTS_PER_BATCH = 50
BATCHES = MIN_EVENTS // EVENTS_PER_BATCH + 5
PAUSE_BETWEEN_TURNS_S = 8.0  # of the session alongside
MAX_MESSAGE_KB = 256  # small, so over-limit messages are cheap to make
FRAME_LIMIT_BYTES = 4 * MAX_MESSAGE_KB * 1024 + 4096  # the server's websocket max_size
DEEP_MARK = "voxloop-fuzz-deep"  # where a deep list goes into an event's text

# The API as documented (independent of the server's own tables): type -> {field: kind}
# for the fields the server must check; "!" marks a required field.
API = {
    "session.update": {"!session": "object"},
    "input_audio_buffer.append": {"!audio": "string"},
    "input_audio_buffer.commit": {},
    "input_audio_buffer.clear": {},
    "output_audio_buffer.clear": {},
    "conversation.item.create": {"!item": "object", "previous_item_id": "string"},
    "conversation.item.truncate": {"!item_id": "string", "!content_index": "integer",
                                   "!audio_end_ms": "integer"},
    "conversation.item.delete": {"!item_id": "string"},
    "conversation.item.retrieve": {"!item_id": "string"},
    "response.create": {"response": "object"},
    "response.cancel": {"response_id": "string"},
}
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
OF_KIND = {
    "string": st.text(max_size=30),
    "integer": st.integers(0, 2**31 - 1),
    "object": st.dictionaries(st.text(max_size=8), ANY_JSON, max_size=3),
}
# Server events known to break the API's types, with the fix that is pending (they are
# counted and printed, not failed). Remove an entry once its fix is in.
NESTED_PATHS = [
    ("session", key) for key in ("audio", "instructions", "model", "voice", "type", "modalities",
                                 "output_modalities", "turn_detection", "input_audio_format",
                                 "input_audio_transcription", "tools", "temperature")] + [
    ("session", "audio", side, key) for side in ("input", "output")
    for key in ("format", "turn_detection", "transcription", "voice", "noise_reduction")] + [
    ("session", "audio", "input", "transcription", "model"),
    ("session", "audio", "input", "turn_detection", "threshold"),
    ("session", "audio", "input", "turn_detection", "silence_duration_ms"),
    ("session", "audio", "input", "format", "rate"),
    ("item", "id"), ("item", "type"), ("item", "role"), ("item", "content"),
    ("item", "status"), ("item", "object")]
WRONG_FOR = {  # values that are not of the kind, for each kind
    "string": st.integers() | st.floats() | st.booleans() | st.lists(ANY_JSON, max_size=3)
    | st.dictionaries(st.text(max_size=5), ANY_JSON, max_size=3),
    "integer": st.text(max_size=10) | st.floats(allow_nan=False).filter(
        lambda x: not float(x).is_integer()) | st.booleans() | st.lists(ANY_JSON, max_size=3)
    | st.sampled_from([-1, -(2**31), 2**31, 2**63, 10**40, -(10**40)]),
    "object": st.text(max_size=10) | st.integers() | st.booleans() | st.lists(ANY_JSON,
                                                                               max_size=3),
}


@dataclass
class Fuzzed:
    frame: str | bytes
    bad: bool  # breaks the API: must get an error event or a clean close
    kind: str  # how it was made, for the report
    closes: tuple[int, ...] = ()  # close codes that are a fine answer to it
    invalid_utf8: bool = False


@dataclass
class Report:
    sent: int = 0
    kinds: Counter = field(default_factory=Counter)
    error_codes: Counter = field(default_factory=Counter)
    closes: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    lenient: Counter = field(default_factory=Counter)  # openai's types reject, server accepts


def pcm_b64(samples: int, seed: int, loud: bool) -> str:
    rng = np.random.default_rng(seed)
    scale = 8000 if loud else 30
    return base64.b64encode((rng.standard_normal(samples) * scale).astype("<i2").tobytes()
                            ).decode()


def valid_event(draw, known: dict) -> dict:
    """A well-formed event, often about the items and responses this session really has."""
    def pick(ids: list[str], fallback: str) -> str:
        # the same draws whatever the session holds, as hypothesis requires
        use_known, index, text = draw(st.booleans()), draw(st.integers(0, 19)), draw(
            st.text(min_size=1, max_size=12))
        return ids[index % len(ids)] if use_known and ids else (text or fallback)

    def item_id() -> str:
        return pick(known["items"], "item_x")

    kind = draw(st.sampled_from(
        ["input_audio_buffer.append"] * 4 + ["conversation.item.create"] * 2
        + ["conversation.item.truncate"] * 2 + sorted(API)))
    event: dict = {"type": kind}
    if draw(st.booleans()):
        event["event_id"] = f"evt_{draw(st.integers(0, 10**9))}"
    if kind == "input_audio_buffer.append":
        event["audio"] = pcm_b64(draw(st.integers(0, 4800)), draw(st.integers(0, 1000)),
                                 loud=draw(st.integers(0, 9)) == 0)
    elif kind == "session.update":
        vad = st.none() | st.fixed_dictionaries({"type": st.just("server_vad")}, optional={
            "threshold": st.floats(0, 1), "silence_duration_ms": st.integers(0, 2000),
            "prefix_padding_ms": st.integers(0, 1000), "create_response": st.booleans(),
            "interrupt_response": st.booleans()})
        audio_in = st.fixed_dictionaries({}, optional={
            "turn_detection": vad, "transcription": st.none() | st.just({"model": "whisper-1"})})
        event["session"] = draw(st.fixed_dictionaries({"type": st.just("realtime")}, optional={
            "instructions": st.text(max_size=40),
            "audio": st.fixed_dictionaries({}, optional={"input": audio_in})}))
    elif kind == "conversation.item.create":
        role = draw(st.sampled_from(["user", "user", "assistant", "system"]))
        part = "output_text" if role == "assistant" else "input_text"
        event["item"] = {"type": "message", "role": role,
                         "content": [{"type": part, "text": draw(st.text(max_size=40))}]}
        if draw(st.integers(0, 3)) == 0:
            event["previous_item_id"] = item_id()
    elif kind == "conversation.item.truncate":
        event.update(item_id=item_id(), content_index=draw(st.sampled_from([0, 0, 0, 1])),
                     audio_end_ms=draw(st.integers(0, 5000)))
    elif kind in ("conversation.item.delete", "conversation.item.retrieve"):
        event["item_id"] = item_id()
    elif kind == "response.cancel" and draw(st.booleans()):
        event["response_id"] = pick(known["responses"], "resp_x")
    elif kind == "response.create" and draw(st.integers(0, 3)) > 0:
        kind = event["type"] = "response.cancel"  # keep answers rare: they cost CPU
    return event


def mutated_event(draw, known: dict) -> Fuzzed:
    event = valid_event(draw, known)
    fields_ = API[event["type"]]
    names = sorted(fields_)
    how = draw(st.sampled_from(["wrong_type", "drop_required", "bad_number", "unknown_type",
                                "type_not_string", "event_id_type", "extra_keys", "deep",
                                "bad_audio", "nested_junk"]))
    bad = True
    if how == "wrong_type" and names:
        name = draw(st.sampled_from(names))
        event[name.lstrip("!")] = draw(WRONG_FOR[fields_[name]])
    elif how == "drop_required" and any(n.startswith("!") for n in names):
        name = draw(st.sampled_from([n for n in names if n.startswith("!")]))
        event.pop(name.lstrip("!"), None)
    elif how == "bad_number" and "!audio_end_ms" in fields_:
        event[draw(st.sampled_from(["audio_end_ms", "content_index"]))] = draw(st.sampled_from(
            [-1, -(2**31), 2**31, 2**63, 10**400, -(10**400), 1.5, 1e308]))
    elif how == "unknown_type":
        event["type"] = draw(st.text(max_size=30).filter(lambda t: t not in API))
    elif how == "type_not_string":
        event["type"] = draw(WRONG_FOR["string"] | st.none())
    elif how == "event_id_type":
        event["event_id"] = draw(WRONG_FOR["string"])
    elif how == "bad_audio" and event["type"] == "input_audio_buffer.append":
        event["audio"] = draw(st.sampled_from(["@@@", "AAA", "AAAA", "A", "====", "é",
                                               "QUJD"]))  # QUJD: 3 bytes, odd
    elif how == "deep":  # built as text: nested lists this deep in the test's own objects
        # recurse near Python's limit, where an error a finalizer raises cannot be reported
        depth = draw(st.sampled_from([50, 500, 5000, 50_000]))
        target = event.get("session") or event.get("item") or event
        target["deep"] = DEEP_MARK
        text = json.dumps(event).replace(f'"{DEEP_MARK}"', "[" * min(depth, 500)
                                         + "]" * min(depth, 500))
        if depth > 500:  # deeper than json.loads can go
            return Fuzzed(text[:-1] + ', "deeper": ' + "[" * depth + "]" * depth + "}", True,
                          "deep_text")
        return Fuzzed(text, False, how)
    elif how == "nested_junk":  # junk at any depth of the session or item object
        path = draw(st.sampled_from(NESTED_PATHS))
        junk = draw(ANY_JSON)
        if path[0] in event:
            target = event[path[0]]
            for key in path[1:-1]:
                child = target.get(key) if isinstance(target, dict) else None
                target[key] = child = child if isinstance(child, dict) else {}
                target = child
            target[path[-1]] = junk
        bad = False
    else:  # extra_keys, or a mutation that does not apply to this event
        event.update(draw(st.dictionaries(st.text(max_size=8).filter(
            lambda k: k not in ("type", "event_id") and "!" + k not in fields_ and k not in
            fields_), ANY_JSON, max_size=3)))
        how, bad = "extra_keys", False
    return Fuzzed(json.dumps(event), bad, how)


def raw_frame(draw) -> Fuzzed:
    how = draw(st.sampled_from(["garbage_text", "binary", "invalid_utf8", "deep_array",
                                "nan", "surrogate", "too_large", "over_frame_limit"]))
    if how == "garbage_text":
        return Fuzzed(draw(st.text(max_size=60)), True, how)
    if how == "binary":
        return Fuzzed(draw(st.binary(max_size=60)), True, how)
    if how == "invalid_utf8":
        junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80"]))
        return Fuzzed(b'{"type": "input_audio_buffer.clear", "x": "' + junk + b'"}', True,
                      how, closes=(1007,), invalid_utf8=True)
    if how == "deep_array":
        depth = draw(st.integers(1, 200_000))
        return Fuzzed("[" * depth + "]" * depth, True, how)
    if how == "nan":
        value = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        return Fuzzed('{"type": "session.update", "session": {"audio": {"input": '
                      f'{{"turn_detection": {{"threshold": {value}}}}}}}}}}}', True, how)
    if how == "surrogate":
        where = draw(st.sampled_from(["type", "instructions", "item_id"]))
        text = {"type": '{"type": "\\ud800"}',
                "instructions": '{"type": "session.update", "session": {"instructions": '
                                '"a\\udfffb"}}',
                "item_id": '{"type": "conversation.item.retrieve", "item_id": "\\ud83d"}'}[where]
        return Fuzzed(text, where != "instructions", how)
    if how == "too_large":  # over --max-message-kb, under the websocket frame limit
        size = draw(st.integers(MAX_MESSAGE_KB * 1024 + 1, FRAME_LIMIT_BYTES - 100))
        return Fuzzed(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * size}),
                      True, how)
    size = draw(st.integers(FRAME_LIMIT_BYTES + 1, FRAME_LIMIT_BYTES + 10_000))
    return Fuzzed("x" * size, True, how, closes=(1009,))


# Events that once broke the server, sent first in every run (found by this fuzzer).
REGRESSIONS = [json.dumps(e) for e in (
    {"type": "conversation.item.create", "item": {"id": ["x"], "type": "message", "role": "user",
                                                  "content": [{"type": "input_text",
                                                               "text": "hi"}]}},
    {"type": "session.update", "session": {"modalities": 5}},
    {"type": "session.update", "session": {"output_modalities": 5}},
    {"type": "session.update", "session": {"audio": {"input": {"transcription": {"model": 5}}}}},
    {"type": "session.update", "session": {"input_audio_transcription": {"model": ["x"]}}},
)]


@st.composite
def fuzzed_events(draw, known: dict) -> Fuzzed:
    pick = draw(st.integers(0, 99))
    if pick < 30:
        return Fuzzed(json.dumps(valid_event(draw, known)), False, "valid")
    if pick < 85:
        return mutated_event(draw, known)
    return raw_frame(draw)


class FuzzSession:
    """One websocket to the server, reopened after a close; checks every event it gets."""

    def __init__(self, url: str, report: Report) -> None:
        from openai.types.realtime import RealtimeClientEvent
        from pydantic import TypeAdapter

        self.url, self.report = url, report
        self.server_types = server_event_types()
        self.client_types = TypeAdapter(RealtimeClientEvent)
        self.ws = None
        self.known: dict = {"items": [], "responses": []}
        self.markers = 0

    async def open(self) -> None:
        self.ws = await websockets.connect(self.url, max_size=2**25)
        self.known = {"items": [], "responses": []}
        created = await self._recv()
        assert created["type"] == "session.created", created

    async def _recv(self, timeout_s: float = 60.0) -> dict:
        event = json.loads(await asyncio.wait_for(self.ws.recv(), timeout_s))
        try:
            self.server_types.validate_python(event)
        except ValidationError as exc:
            self.report.problems.append(f"server event breaks the API types: "
                                        f"{json.dumps(event)[:300]}: {str(exc)[:300]}")
        item = event.get("item") or {}
        if isinstance(item, dict) and item.get("id") and item["id"] not in self.known["items"]:
            self.known["items"] = (self.known["items"] + [item["id"]])[-20:]
        if event["type"] == "response.created":
            self.known["responses"] = (self.known["responses"] + [event["response"]["id"]])[-5:]
        return event

    async def check(self, fuzzed: Fuzzed) -> None:
        """Send one fuzzed frame, then the marker; judge what came back in between."""
        r = self.report
        r.sent += 1
        r.kinds[fuzzed.kind] += 1
        self.markers += 1
        marker = f"marker_{self.markers}"
        try:
            if fuzzed.invalid_utf8:
                await self.ws.send(fuzzed.frame, text=True)
            else:
                await self.ws.send(fuzzed.frame)
            await self.ws.send(json.dumps({"type": "conversation.item.retrieve",
                                           "item_id": "no_such_item_" + marker,
                                           "event_id": marker}))
            errors = []
            while True:
                event = await self._recv()
                if event["type"] != "error":
                    continue
                if event["error"].get("event_id") == marker:
                    break
                errors.append(event["error"])
        except websockets.ConnectionClosed:
            code, reason = self.ws.close_code, self.ws.close_reason
            r.closes[code] += 1
            if code not in fuzzed.closes or not reason:
                r.problems.append(f"{fuzzed.kind}: connection closed {code} {reason!r} after "
                                  f"{_show(fuzzed.frame)}")
            await self.open()
            return
        if fuzzed.closes:
            r.problems.append(f"{fuzzed.kind}: expected a close, got errors {errors}")
        for error in errors:
            r.error_codes[error["code"]] += 1
            if error["code"] == "internal_error" or not error.get("message"):
                r.problems.append(f"{fuzzed.kind}: {error} after {_show(fuzzed.frame)}")
        if fuzzed.bad and not errors:
            r.problems.append(f"{fuzzed.kind}: no error for {_show(fuzzed.frame)}")
        if not fuzzed.bad and not errors and isinstance(fuzzed.frame, str):
            try:
                self.client_types.validate_json(fuzzed.frame)
            except (ValidationError, ValueError):
                r.lenient[fuzzed.kind] += 1


def _show(frame) -> str:
    return repr(frame[:200]) + (f"... ({len(frame)} long)" if len(frame) > 200 else "")


class Alongside(threading.Thread):
    """A normal user asking the same question again and again while the fuzzer runs."""

    def __init__(self, url: str, question: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.url, self.question = url, question
        self.stop = threading.Event()
        self.outcomes: list = []
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set() or not self.outcomes:
                self.outcomes.append(asyncio.run(spoken_turn(self.url, self.question)))
                self.stop.wait(PAUSE_BETWEEN_TURNS_S)  # a user pauses; it also spares the CPU
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc


def test_fuzzed_events_get_errors_and_a_normal_session_goes_on(make_server, engine,
                                                               question_24k):
    server = make_server(max_message_kb=MAX_MESSAGE_KB)
    report = Report()
    loop = asyncio.new_event_loop()
    session = FuzzSession(server.url, report)
    loop.run_until_complete(session.open())
    for frame in REGRESSIONS:
        loop.run_until_complete(session.check(Fuzzed(frame, True, "regression")))
    alongside = Alongside(server.url, question_24k)
    alongside.start()

    @settings(max_examples=BATCHES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def fuzz_batch(data) -> None:
        for _ in range(EVENTS_PER_BATCH):
            fuzzed = data.draw(fuzzed_events(session.known))
            loop.run_until_complete(session.check(fuzzed))

    try:
        fuzz_batch()
    finally:
        alongside.stop.set()
        alongside.join(300)
        loop.run_until_complete(session.ws.close())
        loop.close()
    print(f"\nfuzz ({engine.name}): {report.sent} events; kinds {dict(report.kinds)}")
    print(f"error codes {dict(report.error_codes)}; closes {dict(report.closes)}")
    print(f"accepted although openai's types reject them: {dict(report.lenient)}")
    print("session alongside: " + ", ".join(
        f"{o.status} {o.latency_ms:.0f} ms {o.transcript!r}" for o in alongside.outcomes))
    assert report.sent >= MIN_EVENTS
    assert not report.problems, f"{len(report.problems)} problems:\n" + "\n".join(
        report.problems[:30])
    assert alongside.failure is None, alongside.failure
    assert alongside.outcomes and all(
        o.status == "completed" and answered(engine.name, o.transcript) and not o.errors
        for o in alongside.outcomes), alongside.outcomes
    with urllib.request.urlopen(server.http + "/healthz", timeout=30) as r:
        assert json.load(r)["status"] == "ok"  # still serving
