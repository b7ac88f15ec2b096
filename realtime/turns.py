"""Turn detection: 16 kHz input audio in, speech_started / speech_stopped out.

Like silero's ``VADIterator``: push audio, get the events it completes, reset
explicitly. It hears the session's one 16 kHz stream (:mod:`realtime.input_audio`
resamples the wire's 24 kHz once, for the VAD and the engine alike). Times are
milliseconds of input audio since the session started (the detector is told
where its first sample lies), the clock OpenAI's ``audio_start_ms`` /
``audio_end_ms`` use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxloop.realtime.vad import VAD_RATE_HZ, WINDOW_SAMPLES, SileroVAD, VADState
from voxloop.realtime.wire.session_config import TurnDetection

WINDOW_MS = WINDOW_SAMPLES * 1000 // VAD_RATE_HZ  # 32
END_MARGIN = 0.15  # speech ends below threshold - margin (silero's hysteresis)


@dataclass(frozen=True)
class TurnEvent:
    kind: str  # "speech_started" | "speech_paused" | "speech_resumed" | "speech_stopped"
    audio_ms: int  # speech_started: onset - prefix padding; speech_stopped: end + silence;
    #                paused / resumed: the window's start
    speech_ms: int  # the onset or the last voiced window's end, without padding
    resumes: bool = False  # speech_started: it goes on with the turn that just ended


class TurnDetector:
    DECIDES_LATER = False  # server_vad's wait is a setting: chosen as the pause starts
    QUICK_TURNS = False  # its turns end after a fixed silence, never as soon as a pause starts
    # speech starting this soon after the last turn's speech ended goes on with that turn
    # (``TurnEvent.resumes``) if it interrupts the answer; 0: never, as OpenAI's server_vad
    RESUMES_WITHIN_MS = 0

    def __init__(self, settings: TurnDetection, vad: SileroVAD | None = None,
                 start_ms: int = 0) -> None:
        self.settings = settings
        self._vad = vad or SileroVAD()
        self.reset(start_ms)

    def reset(self, start_ms: int = 0) -> None:
        """Start over, with the clock at ``start_ms`` of input audio."""
        self._start_ms = start_ms
        self._state = VADState()
        self._pending = np.zeros(0, np.float32)
        self._windows = 0  # windows processed since reset
        self.speaking = False
        self._silence_from_ms: int | None = None
        self._wait_ms = self.settings.silence_duration_ms  # the silence that ends this pause
        self._ended_speech_ms: int | None = None  # where the last ended turn's speech ended
        self._stopped_ms = 0  # where the last turn's audio ended: the next one starts after
        self.last_probability = 0.0

    def retune(self, settings) -> bool:
        """Take ``settings`` of this detector's own type in place (False: another type,
        which needs a new detector): a turn being spoken goes on under them."""
        if type(settings) is not type(self.settings):
            return False
        self.settings = settings
        return True

    def reset_speech(self) -> None:
        """Forget a turn in progress (the buffer was committed or cleared by the client);
        speech that comes next starts a turn of its own."""
        self.speaking, self._silence_from_ms = False, None
        self._ended_speech_ms = None

    @property
    def judged_ms(self) -> int:
        """The end of the audio the VAD has judged (whole windows; the rest is pending)."""
        return self._start_ms + self._windows * WINDOW_MS

    @property
    def keep_from_ms(self) -> int | None:
        """Audio before this can no longer belong to a turn: the earliest a turn can start
        is the next window minus the prefix padding. None while a turn is being spoken
        (it keeps its audio from its own start)."""
        if self.speaking:
            return None
        return max(self._stopped_ms, self.judged_ms - self.settings.prefix_padding_ms)

    def push(self, samples_16k: np.ndarray) -> list[TurnEvent]:
        """Feed float32 audio at 16 kHz ``[T]``; return the events it completes, in order.
        A pause this push leaves undecided (``undecided``) is decided by ``decide``, or
        before the next window is heard."""
        audio = np.concatenate([self._pending, samples_16k])
        n = len(audio) // WINDOW_SAMPLES
        self._pending = audio[n * WINDOW_SAMPLES:]
        events = []
        for i in range(n):
            events += self.decide()
            event = self._step(audio[i * WINDOW_SAMPLES:(i + 1) * WINDOW_SAMPLES])
            if event:
                events.append(event)
        return events

    @property
    def undecided(self) -> bool:
        """A pause has started whose wait is not chosen yet (see ``decide``)."""
        return self._silence_from_ms is not None and self._wait_ms is None

    def decide(self) -> list[TurnEvent]:
        """Choose the undecided pause's wait (``_pause_wait_ms``) and end the turn if the
        silence heard is that long already. A detector whose wait is costly to choose
        (``DECIDES_LATER``) leaves it to this call, so the caller can start a tentative
        answer at ``speech_paused`` first and both run at once."""
        if not self.undecided:
            return []
        self._wait_ms = self._pause_wait_ms()
        event = self._stop_if_waited()
        return [event] if event else []

    def _step(self, window: np.ndarray) -> TurnEvent | None:
        p = self.last_probability = self._vad(window, self._state)
        start_ms = self.judged_ms
        self._windows += 1
        s = self.settings
        if not self.speaking:
            if p >= s.threshold:
                self.speaking, self._silence_from_ms = True, None
                resumes = self.RESUMES_WITHIN_MS > 0 and s.interrupt_response and \
                    self._ended_speech_ms is not None and \
                    start_ms - self._ended_speech_ms <= self.RESUMES_WITHIN_MS
                self._ended_speech_ms = None
                return TurnEvent("speech_started", max(self._stopped_ms,
                                                       start_ms - s.prefix_padding_ms),
                                 start_ms, resumes)
            return None
        event = None
        if p >= s.threshold and self._silence_from_ms is not None:
            self._silence_from_ms = None
            event = TurnEvent("speech_resumed", start_ms, start_ms)
        elif p < s.threshold - END_MARGIN and self._silence_from_ms is None:
            self._silence_from_ms = start_ms  # a tentative end of the turn
            self._wait_ms = None if self.DECIDES_LATER else self._pause_wait_ms()
            event = TurnEvent("speech_paused", start_ms, start_ms)
        return self._stop_if_waited() or event

    def _stop_if_waited(self) -> TurnEvent | None:
        """``speech_stopped`` if the pause's silence, judged so far, has lasted its wait."""
        if self._silence_from_ms is None or self._wait_ms is None or \
                self.judged_ms - self._silence_from_ms < self._wait_ms:
            return None
        self.speaking = False
        end_ms = self._ended_speech_ms = self._silence_from_ms
        self._silence_from_ms = None
        self._turn_ended()
        self._stopped_ms = end_ms + self._wait_ms
        return TurnEvent("speech_stopped", self._stopped_ms, end_ms)

    def _turn_ended(self) -> None:
        """Called once as ``speech_stopped`` is decided: a detector with per-turn state
        lets it go here."""

    def _pause_wait_ms(self) -> int:
        """The silence that ends the turn, decided when a pause starts: server_vad's fixed
        ``silence_duration_ms`` (semantic_vad asks its end-of-turn model)."""
        return self.settings.silence_duration_ms
