"""The OpenAI Realtime wire protocol: beta names, client events, errors, audio payloads.

Standard library only: the desktop client imports this module and nothing else
from the server side. Events are plain ``dict``s, exactly as they travel as JSON;
server events are built in :mod:`voxloop.realtime.wire.events`.

GA event names are the default; a client that sends ``OpenAI-Beta: realtime=v1``
gets the beta names (:func:`wire_type`, :func:`wire_event`). Client events are
checked field by field (:func:`parse_client_event`) and a bad one raises
:class:`ProtocolError`, which the server turns into an ``error`` event while the
session goes on.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from voxloop.realtime.wire import events

WIRE_RATE_HZ = 24000  # pcm16 mono, both directions
BYTES_PER_SAMPLE = 2
BYTES_PER_MS = WIRE_RATE_HZ * BYTES_PER_SAMPLE // 1000
BETA_HEADER = "OpenAI-Beta"
BETA_VALUE = "realtime=v1"
API_KEY_SUBPROTOCOL = "openai-insecure-api-key."

# GA name -> beta name, for server events whose names changed at GA.
_GA_TO_BETA = {
    events.CONVERSATION_ITEM_ADDED: "conversation.item.created",
    events.OUTPUT_AUDIO_DELTA: "response.audio.delta",
    events.OUTPUT_AUDIO_DONE: "response.audio.done",
    events.OUTPUT_AUDIO_TRANSCRIPT_DELTA: "response.audio_transcript.delta",
    events.OUTPUT_AUDIO_TRANSCRIPT_DONE: "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
}
_BETA_TO_GA = {beta: ga for ga, beta in _GA_TO_BETA.items()}
# GA events that the beta protocol does not have: a beta session never sees them.
GA_ONLY = frozenset({events.CONVERSATION_ITEM_DONE})


def wire_type(ga_type: str, beta: bool) -> str:
    """The name a server event travels under for a GA or a beta client."""
    return _GA_TO_BETA.get(ga_type, ga_type) if beta else ga_type


def wire_event(event: dict, beta: bool) -> dict | None:
    """A server event as it travels to a GA or a beta client; None if beta lacks it."""
    if not beta:
        return event
    if event["type"] in GA_ONLY:
        return None
    return {**event, "type": wire_type(event["type"], True)}


def ga_type(wire: str) -> str:
    """The GA name of an event received under either name (used by clients)."""
    return _BETA_TO_GA.get(wire, wire)


class ProtocolError(Exception):
    """A client event the server cannot act on; becomes an ``error`` event."""

    def __init__(self, code: str, message: str, event_id: str | None = None,
                 param: str | None = None, error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.code, self.message, self.event_id = code, message, event_id
        self.param, self.error_type = param, error_type

    def event(self) -> dict:
        """The ``error`` server event for this problem."""
        return events.error(self.code, self.message, self.event_id, self.param, self.error_type)


# Client events the server understands: field -> (python types, required).
_STR, _INT, _DICT = (str,), (int,), (dict,)
CLIENT_EVENTS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "session.update": {"session": (_DICT, True)},
    "input_audio_buffer.append": {"audio": (_STR, True)},
    "input_audio_buffer.commit": {},
    "input_audio_buffer.clear": {},
    "conversation.item.create": {"item": (_DICT, True), "previous_item_id": (_STR, False)},
    "conversation.item.truncate": {"item_id": (_STR, True), "content_index": (_INT, True),
                                   "audio_end_ms": (_INT, True)},
    "conversation.item.delete": {"item_id": (_STR, True)},
    "conversation.item.retrieve": {"item_id": (_STR, True)},
    "response.create": {"response": (_DICT, False)},
    "response.cancel": {"response_id": (_STR, False)},
    "output_audio_buffer.clear": {},
}
# Nested fields the server keeps and echoes back: checked like the top-level ones.
NESTED_FIELDS: dict[str, dict[tuple[str, ...], tuple[type, ...]]] = {
    "conversation.item.create": {("item", "id"): _STR},
    "session.update": {("session", "modalities"): (list,),
                       ("session", "output_modalities"): (list,),
                       ("session", "audio", "input", "transcription", "model"): _STR,
                       ("session", "input_audio_transcription", "model"): _STR},
}
_MAX_INT = 2**31 - 1


_EVENT_ID = re.compile(r'"event_id"\s*:\s*"([^"\\]{1,128})"')
EVENT_ID_SCAN_CHARS = 4096  # clients put event_id before the audio: look no further


def event_id_in(text: str | bytes) -> str | None:
    """The ``event_id`` of an event too large to parse, found by a scan of its head."""
    head = text[:EVENT_ID_SCAN_CHARS]
    if isinstance(head, bytes):
        head = head.decode("utf-8", "replace")
    match = _EVENT_ID.search(head)
    return match.group(1) if match else None


def parse_client_event(text: str | bytes) -> dict:
    """Decode and check one client event; raises :class:`ProtocolError` if it is bad."""
    if isinstance(text, bytes):
        raise ProtocolError("binary_frame", "binary websocket frames are not supported: "
                            "send JSON text events (audio as base64 in input_audio_buffer.append)")
    try:
        event = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError("invalid_json", f"the event is not valid JSON: {exc}") from None
    if not isinstance(event, dict):
        raise ProtocolError("invalid_event", "an event must be a JSON object")
    event_id = event.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise ProtocolError("invalid_type", "event_id must be a string", param="event_id")
    kind = event.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("missing_field", "the event has no string 'type'", event_id, "type")
    fields = CLIENT_EVENTS.get(kind)
    if fields is None:
        raise ProtocolError("unknown_event", f"unknown client event type {kind[:80]!r}; "
                            f"supported: {', '.join(sorted(CLIENT_EVENTS))}", event_id, "type")
    for name, (types, required) in fields.items():
        value = event.get(name)
        if value is None:
            if required:
                raise ProtocolError("missing_field", f"{kind} needs the field {name!r}",
                                    event_id, name)
            continue
        if not isinstance(value, types) or isinstance(value, bool):
            want = " or ".join(t.__name__ for t in types)
            raise ProtocolError("invalid_type", f"{kind}.{name} must be {want}, "
                                f"not {type(value).__name__}", event_id, name)
        if isinstance(value, int) and not 0 <= value <= _MAX_INT:
            raise ProtocolError("invalid_value", f"{kind}.{name} must be between 0 and "
                                f"{_MAX_INT}, got {value}", event_id, name)
    for path, types in NESTED_FIELDS.get(kind, {}).items():
        value = event
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            name = ".".join(path)
            raise ProtocolError("invalid_type", f"{kind}.{name} must be "
                                f"{' or '.join(t.__name__ for t in types)}, not "
                                f"{type(value).__name__}", event_id, name)
    return event


def decode_audio(b64: str, event_id: str | None = None, param: str = "audio") -> bytes:
    """Base64 pcm16 -> bytes, with clear errors for bad base64 and odd byte counts."""
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("invalid_audio", f"audio is not valid base64: {exc}",
                            event_id, param) from None
    if len(data) % BYTES_PER_SAMPLE:
        raise ProtocolError("invalid_audio", f"pcm16 audio needs an even number of bytes, got "
                            f"{len(data)}", event_id, param)
    return data


def pcm_format() -> dict:
    """The one audio format this server speaks, as GA session and response objects show it."""
    return {"type": "audio/pcm", "rate": WIRE_RATE_HZ}


def audio_ms(n_bytes: int, rate_hz: int = WIRE_RATE_HZ) -> int:
    """Duration in whole milliseconds of ``n_bytes`` of pcm16 mono."""
    return n_bytes // BYTES_PER_SAMPLE * 1000 // rate_hz
