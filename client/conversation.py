"""What the live client knows about the conversation, driven by server events.

``Conversation.on_event`` takes one server event (a dict), updates the turns and
the jitter buffer, and returns the client events to send back: on
``input_audio_buffer.speech_started`` it flushes playback at once and answers with
``conversation.item.truncate`` at the milliseconds really played. No I/O here, so
the whole exchange is testable with plain dicts.

Latency of a turn is what the user hears: from the end of their speech (the
server's ``speech_stopped.audio_end_ms`` minus its silence window, mapped to the
wall clock through :class:`InputClock`) to the first answer sample reaching the
speaker (dated by the jitter buffer).
"""

from __future__ import annotations

import base64
import time
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field

from voxloop.audio import pcm16_to_float
from voxloop.client.jitter import JitterBuffer
from voxloop.realtime.wire.protocol import WIRE_RATE_HZ, ga_type
from voxloop.realtime.wire.session_config import SemanticVad, TurnDetection

DEFAULT_SILENCE_MS = 500  # OpenAI's; replaced by what the server's session says
DEFAULT_PREFIX_MS = TurnDetection.prefix_padding_ms


class InputClock:
    """Maps the server's input-audio milliseconds to when that audio was captured."""

    def __init__(self, max_blocks: int = 3000) -> None:
        self._starts: deque[int] = deque(maxlen=max_blocks)  # first sample of each block
        self._times: deque[float] = deque(maxlen=max_blocks)  # its capture time (perf_counter)
        self.sent_samples = 0

    def sent(self, n_samples: int, captured_s: float) -> None:
        self._starts.append(self.sent_samples)
        self._times.append(captured_s)
        self.sent_samples += n_samples

    def time_at(self, audio_ms: int) -> float | None:
        sample = audio_ms * WIRE_RATE_HZ // 1000
        i = bisect_right(self._starts, sample) - 1
        if i < 0:
            return None
        return self._times[i] + (sample - self._starts[i]) / WIRE_RATE_HZ


@dataclass
class Turn:
    user_transcript: str = ""
    answer_transcript: str = ""
    speech_end_s: float | None = None  # when the user stopped speaking (perf_counter)
    item_id: str | None = None  # the assistant's answer item
    user_item_id: str | None = None  # the user's audio item
    status: str = ""  # the response's final status
    latency_ms: float | None = None  # end of speech -> first answer sample played
    truncated_ms: int | None = None  # where a barge-in cut the answer
    cut_span_ms: int | None = None  # the speaker's time from its first sample to the cut
    barge_in_ms: float | None = None  # the user's speech onset -> the answer flushed

    def summary(self) -> dict:
        return {"user": self.user_transcript, "assistant": self.answer_transcript,
                "status": self.status, "latency_ms": None if self.latency_ms is None
                else round(self.latency_ms), "truncated_ms": self.truncated_ms,
                "cut_span_ms": self.cut_span_ms,
                "barge_in_ms": None if self.barge_in_ms is None else round(self.barge_in_ms)}


@dataclass
class Conversation:
    jitter: JitterBuffer
    clock: InputClock = field(default_factory=InputClock)
    turns: list[Turn] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # one line per notable event, for the view
    user_speaking: bool = False
    responding: bool = False
    barge_ins: int = 0
    errors: int = 0
    silence_ms: int = DEFAULT_SILENCE_MS
    prefix_ms: int = DEFAULT_PREFIX_MS
    # semantic_vad stamps the turn's end after a wait the client is not told: its latency
    # runs from that end (the wait, ~0-100 ms on a finished question, not counted)
    semantic: bool = False
    _dropped_items: set[str] = field(default_factory=set)
    _t0: float = field(default_factory=time.perf_counter)

    @property
    def state(self) -> str:
        if self.jitter.audible:
            return "assistant speaking"
        if self.user_speaking:
            return "user speaking"
        return "thinking" if self.responding else "listening"

    def note(self, line: str) -> None:
        self.log.append(f"[{time.perf_counter() - self._t0:7.2f}s] {line}")

    def on_event(self, event: dict) -> list[dict]:
        """Apply one server event; return the client events to send."""
        kind = ga_type(event.get("type", ""))
        handler = getattr(self, "_on_" + kind.replace(".", "_"), None)
        return (handler(event) or []) if handler else []

    def refresh(self) -> None:
        """Date the turns whose first answer sample has been played since."""
        for turn in self.turns[-3:]:
            if turn.latency_ms is not None or turn.item_id is None or turn.speech_end_s is None:
                continue
            item = self.jitter.items.get(turn.item_id)
            if item is not None and item.first_play_s is not None:
                turn.latency_ms = 1000 * (item.first_play_s - turn.speech_end_s)
                since = "end of turn" if self.semantic else "end of speech"
                self.note(f"latency {turn.latency_ms:.0f} ms ({since} -> answer heard)")

    def reset_connection(self) -> None:
        """A new websocket: the server's input clock starts again at zero."""
        self.jitter.flush()
        self.clock = InputClock()
        self.user_speaking = self.responding = False

    # -- server events -------------------------------------------------------------

    def _on_session_created(self, event: dict) -> None:
        session = event.get("session", {})
        td = session.get("audio", {}).get("input", {}).get("turn_detection",
                                                           session.get("turn_detection"))
        if td:
            self.semantic = td.get("type") == "semantic_vad"
            self.silence_ms = 0 if self.semantic else int(td.get("silence_duration_ms",
                                                                  self.silence_ms))
            self.prefix_ms = SemanticVad.PREFIX_PADDING_MS if self.semantic else int(
                td.get("prefix_padding_ms", self.prefix_ms))

    _on_session_updated = _on_session_created

    def _on_input_audio_buffer_speech_started(self, event: dict) -> list[dict]:
        self.user_speaking = True
        item_id, played_samples = self.jitter.flush()
        if item_id is None:
            self.note("you are speaking")
            return []
        self._dropped_items.add(item_id)
        self.barge_ins += 1
        played_ms = 1000 * played_samples // WIRE_RATE_HZ
        onset_s = self.clock.time_at(int(event.get("audio_start_ms", 0)) + self.prefix_ms)
        reaction_ms = None if onset_s is None else 1000 * (time.perf_counter() - onset_s)
        for turn in self.turns:
            if turn.item_id == item_id:
                turn.truncated_ms, turn.barge_in_ms = played_ms, reaction_ms
                turn.cut_span_ms = _span_ms(self.jitter.items.get(item_id))
        after = "" if reaction_ms is None else f", {reaction_ms:.0f} ms after you began"
        self.note(f"you interrupted: answer cut at {played_ms} ms{after}")
        return [{"type": "conversation.item.truncate", "item_id": item_id,
                 "content_index": 0, "audio_end_ms": played_ms}]

    def _on_input_audio_buffer_speech_stopped(self, event: dict) -> None:
        self.user_speaking = False
        end_ms = int(event.get("audio_end_ms", 0)) - self.silence_ms
        self.turns.append(Turn(speech_end_s=self.clock.time_at(max(0, end_ms)),
                               user_item_id=event.get("item_id")))

    def _on_conversation_item_input_audio_transcription_completed(self, event: dict) -> None:
        turn = self._turn()
        turn.user_transcript = event.get("transcript", "").strip()
        self.note(f"you: {turn.user_transcript}")

    def _on_response_created(self, event: dict) -> None:
        self.responding = True

    def _on_response_output_audio_delta(self, event: dict) -> None:
        item_id = event.get("item_id", "")
        if item_id in self._dropped_items:
            return  # already in flight when the user interrupted
        turn = self._turn()
        if turn.item_id is None:
            turn.item_id = item_id
        pcm = base64.b64decode(event.get("delta", ""))
        self.jitter.push(item_id, pcm16_to_float(pcm))

    def _on_response_output_audio_transcript_delta(self, event: dict) -> None:
        if event.get("item_id") not in self._dropped_items:
            self._turn().answer_transcript += event.get("delta", "")

    def _on_response_output_audio_done(self, event: dict) -> None:
        if event.get("item_id"):
            self.jitter.complete(event["item_id"])

    def _on_response_output_audio_transcript_done(self, event: dict) -> None:
        turn = self._turn()
        if event.get("item_id") in self._dropped_items:
            return  # cut by a barge-in: the row keeps the words that were heard
        if event.get("item_id") == turn.item_id or turn.item_id is None:
            turn.answer_transcript = event.get("transcript", turn.answer_transcript)

    def _on_response_done(self, event: dict) -> None:
        self.responding = False
        response = event.get("response", {})
        for item in response.get("output", []):
            if item.get("id"):
                self.jitter.complete(item["id"])
        turn = self._turn()
        turn.status = response.get("status", "")
        self.note(f"assistant ({turn.status}): {turn.answer_transcript}")

    def _on_conversation_item_truncated(self, event: dict) -> None:
        self.note(f"server cut the answer at {event.get('audio_end_ms')} ms")

    def _on_conversation_item_deleted(self, event: dict) -> None:
        """The server withdrew a turn: the user went on speaking after a pause it had taken
        for the end (semantic_vad), so that part and its answer are one turn with the rest,
        not a turn and an interruption."""
        item_id = event.get("item_id")
        merged = [t for t in self.turns[:-1] if item_id in (t.user_item_id, t.item_id)]
        for turn in merged:
            self.turns.remove(turn)
            if turn.truncated_ms is not None:
                self.barge_ins -= 1
            self.note("your turn went on after a pause: its first part's answer is withdrawn")

    def _on_error(self, event: dict) -> None:
        self.errors += 1
        error = event.get("error", {})
        self.note(f"server error {error.get('code')}: {error.get('message')}")

    def _turn(self) -> Turn:
        if not self.turns:
            self.turns.append(Turn())
        return self.turns[-1]


def _span_ms(item) -> int | None:
    """How long the speaker took over an item's samples so far (its ``ItemPlayback``):
    what it played, plus any stalls (underruns) between."""
    if item is None or item.first_play_s is None or item.last_play_s is None:
        return None
    return round(1000 * (item.last_play_s - item.first_play_s))
