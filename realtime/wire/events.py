"""One builder per server event: the only place each server event's name is spelled.

Standard library only. A builder takes typed arguments and returns the event as
the plain ``dict`` that travels as JSON, under its GA name and with a fresh
``event_id``; the server's send task renames it for beta clients
(:func:`voxloop.realtime.wire.protocol.wire_event`). The objects events carry
(session, item, response) are built by their owners (``SessionConfig.wire``,
``Item.wire``, ``ResponseRun.resource``) and passed in as dicts.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass

from voxloop.realtime.wire.ids import new_id

# The names other modules compare against (the protocol's beta renames and GA-only
# set, the outbox's droppable audio): constants, so they too are spelled only here.
CONVERSATION_ITEM_ADDED = "conversation.item.added"
CONVERSATION_ITEM_DONE = "conversation.item.done"
OUTPUT_AUDIO_DELTA = "response.output_audio.delta"
OUTPUT_AUDIO_DONE = "response.output_audio.done"
OUTPUT_AUDIO_TRANSCRIPT_DELTA = "response.output_audio_transcript.delta"
OUTPUT_AUDIO_TRANSCRIPT_DONE = "response.output_audio_transcript.done"


@dataclass(frozen=True)
class ContentRef:
    """Where a piece of a response goes. Responses here have one output item with one
    content part, hence the zero defaults."""

    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0


def _event(type_: str, **fields) -> dict:
    return {"type": type_, "event_id": new_id("event"), **fields}


def _audio_part(transcript: str) -> dict:
    return {"type": "audio", "transcript": transcript}


# -- session ---------------------------------------------------------------------------
def session_created(session: dict) -> dict:
    return _event("session.created", session=session)


def session_updated(session: dict) -> dict:
    return _event("session.updated", session=session)


# -- input audio buffer ------------------------------------------------------------------
def input_audio_buffer_speech_started(audio_start_ms: int, item_id: str) -> dict:
    return _event("input_audio_buffer.speech_started", audio_start_ms=audio_start_ms,
                  item_id=item_id)


def input_audio_buffer_speech_stopped(audio_end_ms: int, item_id: str) -> dict:
    return _event("input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms,
                  item_id=item_id)


def input_audio_buffer_committed(item_id: str, previous_item_id: str | None) -> dict:
    return _event("input_audio_buffer.committed", item_id=item_id,
                  previous_item_id=previous_item_id)


def input_audio_buffer_cleared() -> dict:
    return _event("input_audio_buffer.cleared")


def output_audio_buffer_cleared(response_id: str) -> dict:
    return _event("output_audio_buffer.cleared", response_id=response_id)


# -- conversation items ------------------------------------------------------------------
def conversation_item_added(item: dict, previous_item_id: str | None) -> dict:
    return _event(CONVERSATION_ITEM_ADDED, previous_item_id=previous_item_id, item=item)


def conversation_item_done(item: dict, previous_item_id: str | None) -> dict:
    """GA only: a beta client never gets it (``protocol.GA_ONLY``)."""
    return _event(CONVERSATION_ITEM_DONE, previous_item_id=previous_item_id, item=item)


def conversation_item_input_audio_transcription_completed(
        item_id: str, transcript: str, audio_s: float, content_index: int = 0) -> dict:
    return _event("conversation.item.input_audio_transcription.completed", item_id=item_id,
                  content_index=content_index, transcript=transcript,
                  usage={"type": "duration", "seconds": audio_s})


def conversation_item_truncated(item_id: str, audio_end_ms: int, content_index: int = 0) -> dict:
    return _event("conversation.item.truncated", item_id=item_id, content_index=content_index,
                  audio_end_ms=audio_end_ms)


def conversation_item_deleted(item_id: str) -> dict:
    return _event("conversation.item.deleted", item_id=item_id)


def conversation_item_retrieved(item: dict) -> dict:
    return _event("conversation.item.retrieved", item=item)


# -- responses ---------------------------------------------------------------------------
def response_created(response: dict) -> dict:
    return _event("response.created", response=response)


def response_done(response: dict) -> dict:
    return _event("response.done", response=response)


def response_output_item_added(response_id: str, item: dict, output_index: int = 0) -> dict:
    return _event("response.output_item.added", response_id=response_id,
                  output_index=output_index, item=item)


def response_output_item_done(response_id: str, item: dict, output_index: int = 0) -> dict:
    return _event("response.output_item.done", response_id=response_id,
                  output_index=output_index, item=item)


def response_content_part_added(ref: ContentRef, transcript: str) -> dict:
    return _event("response.content_part.added", **asdict(ref), part=_audio_part(transcript))


def response_content_part_done(ref: ContentRef, transcript: str) -> dict:
    return _event("response.content_part.done", **asdict(ref), part=_audio_part(transcript))


def response_output_audio_transcript_delta(ref: ContentRef, delta: str) -> dict:
    return _event(OUTPUT_AUDIO_TRANSCRIPT_DELTA, **asdict(ref), delta=delta)


def response_output_audio_transcript_done(ref: ContentRef, transcript: str) -> dict:
    return _event(OUTPUT_AUDIO_TRANSCRIPT_DONE, **asdict(ref), transcript=transcript)


def response_output_audio_delta(ref: ContentRef, audio_pcm16: bytes) -> dict:
    """``audio_pcm16``: little-endian pcm16 at 24 kHz; it travels base64-encoded."""
    return _event(OUTPUT_AUDIO_DELTA, **asdict(ref),
                  delta=base64.b64encode(audio_pcm16).decode("ascii"))


def response_output_audio_done(ref: ContentRef) -> dict:
    return _event(OUTPUT_AUDIO_DONE, **asdict(ref))


# -- errors ------------------------------------------------------------------------------
def error(code: str, message: str, event_id: str | None = None, param: str | None = None,
          error_type: str = "invalid_request_error") -> dict:
    """``event_id``: the client event this error is about, if any."""
    return _event("error", error={"type": error_type, "code": code, "message": message,
                                  "param": param, "event_id": event_id})
