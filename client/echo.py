"""Echo handling: keep the assistant's own voice, played by the speakers and heard
again by the microphone, from reaching the server's VAD as if the user spoke.

Two strategies, one interface (``process(mic, far, aligned) -> mic``, float32 ``[T]``
at 24 kHz, ``far`` being what was played over the same stretch of time, and
``aligned`` False where the audio clocks could not vouch for that):

- ``aec``: WebRTC's AEC3 (the ``pywebrtc-audio`` wheel), the echo canceller of
  Chrome; it estimates the speaker-to-mic delay and path itself and removes the
  echo while keeping the user's voice, so talking over the assistant still works.
  A block it cannot cancel (not ``aligned``, or echo it let through) is ducked as
  below, never sent raw.
- ``duck``: the fallback where that wheel does not install. While the assistant is
  audible (and ``tail_ms`` after), the mic is sent ``duck_db`` quieter unless it is
  louder than both ``barge_in_dbfs`` and the playback level plus ``margin_db``:
  the user must speak up to interrupt (a stricter barge-in threshold).

``auto`` picks ``aec`` when it imports. ``EchoMeter`` measures how much quieter
the mic became while the assistant played (echo return loss enhancement, ERLE).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from voxloop.errors import VoxloopError
from voxloop.realtime.wire.protocol import WIRE_RATE_HZ

MODES = ("auto", "aec", "duck", "off")
SILENT_DBFS = -60.0
NO_ECHO_DBFS = -70.0  # a mic quieter than this while the assistant plays heard no echo
STICKY_LEAK_BLOCKS = 5  # blocks leaked in one playback after which all of it is guarded
UNALIGNED_STRETCH_BLOCKS = 5  # so many unaligned in a row: the echo path is to be re-learned


@dataclass(frozen=True)
class EchoSettings:
    echo: str = field(default="auto", metadata={
        "choices": MODES, "help": "echo handling: aec (WebRTC AEC3), duck (quieter mic "
        "while the assistant speaks), off, or auto (aec where it installs, else duck)"})
    duck_db: float = field(default=-60.0, metadata={
        "help": "duck (and aec where it cannot cancel): mic gain while the assistant is audible"})
    barge_in_dbfs: float = field(default=-30.0, metadata={
        "help": "duck: mic level needed to interrupt the assistant"})
    margin_db: float = field(default=0.0, metadata={
        "help": "duck: and how far the mic must be above the playback level"})
    tail_ms: int = field(default=300, metadata={
        "help": "duck: playback this recent still counts (echo lags it: buffers, room)"})


def dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (``SILENT_DBFS`` for silence)."""
    if not len(samples):
        return SILENT_DBFS
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return max(SILENT_DBFS, 20 * np.log10(rms + 1e-12))


class Ducker:
    name = "duck"

    def __init__(self, settings: EchoSettings) -> None:
        self.s = settings
        self._gain = 10 ** (settings.duck_db / 20)
        self._recent_far_db: deque[float] = deque()  # one level per block, over tail_ms
        self._recent_samples = 0
        self.echo_lag_samples = 0  # how far the echo is known to lag the playback (AEC's
        #                            finding): each level is held that much longer

    def process(self, mic: np.ndarray, far: np.ndarray, aligned: bool = True,
                ahead_dbfs: float = SILENT_DBFS) -> np.ndarray:
        self.hear(far, ahead_dbfs)
        return self.gate(mic)

    def hear(self, far: np.ndarray, ahead_dbfs: float = SILENT_DBFS) -> None:
        """Note the level the speaker played over one block, and of what it plays
        next or was given last (where the reference is late or lost, the echo is of
        that): whichever is louder, held for ``tail_ms`` as the echo lags it."""
        self._recent_far_db.append(max(dbfs(far), ahead_dbfs))
        self._recent_samples += len(far)
        held = self.s.tail_ms * WIRE_RATE_HZ // 1000 + self.echo_lag_samples
        while self._recent_samples - len(far) >= held:
            self._recent_far_db.popleft()
            self._recent_samples -= len(far)

    @property
    def audible(self) -> bool:
        """Whether the speaker played anything within the last ``tail_ms`` or is about to."""
        return self._far_db() > SILENT_DBFS + 10

    def _far_db(self) -> float:
        """The peak level of what the echo may be of over the last ``tail_ms``."""
        return max(self._recent_far_db, default=SILENT_DBFS)

    def gate(self, mic: np.ndarray) -> np.ndarray:
        """``mic`` ducked while the assistant is audible, unless the user talks over it."""
        if not self.audible:
            return mic
        far_db = self._far_db()
        mic_db = dbfs(mic)
        if mic_db > self.s.barge_in_dbfs and mic_db > far_db + self.s.margin_db:
            return mic  # the user is talking over the assistant
        return mic * self._gain

    def reset(self) -> None:
        self._recent_far_db.clear()
        self._recent_samples = 0


class EchoLeakDetector:
    """Whether what the canceller let through is the speaker's echo: its correlation
    with the playback at the echo's delay, over the last ``window_ms``.

    The delay is where the mic itself matches the playback best (up to
    ``max_delay_ms``) while it hears nothing but echo (correlation above
    ``echo_only``). Echo that AEC3 missed stays a filtered copy of the playback there
    (0.5-0.96 in the live tests, after the echo path had changed); a user talking
    over the assistant does not (at most 0.26), though the start of a voice can match
    the playback by chance at some other delay: hence only within ``near_ms`` of it.

    When the path itself moves (the sound server underran and played the rest later,
    which the client's timeline cannot see) the echo comes back at a new delay, up to
    ``max_delay_ms``, and AEC3 lets it through until it has re-learned the path. That
    delay takes a whole window to reach ``echo_only``: replayed from a live run's dump
    with the path 80 ms later, AEC3 let 120 ms of echo through at -34 dBFS meanwhile and
    the server's VAD heard speech. So a mic that matches the playback better elsewhere
    (above ``moved``) than at the delay counts as leaking at once.

    The echo can also come *before* its reference, up to ``max_ahead_ms``: an xrun
    measured wrong, or clocks calibrated later than the reference's lead covers. AEC3
    has nothing to cancel it with yet and lets it all through (in simulation 30-70 ms
    ahead: 1-2 s of echo sent). The mic is matched there too, on the part of its window
    whose playback has come, and echo found ahead of the playback counts as leaking.
    """

    def __init__(self, latency_samples: int = 0, threshold: float = 0.4,
                 window_ms: int = 200, max_delay_ms: int = 600, max_ahead_ms: int = 100,
                 echo_only: float = 0.9, moved: float = 0.6, near_ms: float = 2.5,
                 quiet_dbfs: float = -55.0) -> None:
        self.threshold, self.echo_only, self.quiet_dbfs = threshold, echo_only, quiet_dbfs
        self.moved = moved
        self.latency = latency_samples  # of the canceller: its output lags the mic
        self._out = np.zeros(window_ms * WIRE_RATE_HZ // 1000)
        self._mic = np.zeros(len(self._out))
        self._far = np.zeros(len(self._out) + max_delay_ms * WIRE_RATE_HZ // 1000)
        self._ahead = min(max_ahead_ms * WIRE_RATE_HZ // 1000, len(self._out) // 2)
        self._fft = 1 << (len(self._far) + self._ahead + len(self._out)).bit_length()
        self._near = round(near_ms * WIRE_RATE_HZ / 1000)
        self.delay: int | None = None  # samples from the playback to its echo in the mic

    def leaking(self, mic: np.ndarray, out: np.ndarray, far: np.ndarray) -> bool:
        self._mic = np.concatenate([self._mic[len(mic):], mic])
        self._out = np.concatenate([self._out[len(out):], out])
        self._far = np.concatenate([self._far[len(far):], far])
        if dbfs(self._far) <= SILENT_DBFS + 10:
            return False  # nothing played: no echo
        if dbfs(mic) > self.quiet_dbfs + 10:
            ahead, ncc = np.split(self._correlation(self._mic), [self._ahead])
            best = int(ncc.argmax())
            if ahead.max() > max(self.moved, ncc[best]) and dbfs(out) >= self.quiet_dbfs:
                return True  # the echo comes before its reference: AEC3 cannot cancel it
            if ncc[best] > self.echo_only:  # nothing but echo: its delay
                self.delay = best
            elif self.delay is not None and ncc[best] > self.moved and \
                    abs(best - self.delay) > self._near and self._at(ncc, self.delay) < self.moved:
                return True  # the path moved: what AEC3 lets through now is echo
        if self.delay is None or dbfs(out) < self.quiet_dbfs:
            return False  # no echo heard yet, or nothing the server could hear
        at_delays = self._correlation(self._out)[self._ahead:]
        return self._at(at_delays, self.delay + self.latency) > self.threshold

    def _at(self, ncc: np.ndarray, delay: int) -> float:
        """The best correlation within ``near_ms`` of ``delay`` (0 past the longest delay
        searched: the canceller's latency can take a delay found at the edge beyond it)."""
        window = ncc[max(0, delay - self._near):delay + self._near + 1]
        return float(window.max()) if len(window) else 0.0

    def _correlation(self, x: np.ndarray) -> np.ndarray:
        """Normalized correlation of ``x`` with the playback by delay in samples, from
        ``-max_ahead`` (the echo before its reference, matched on the part of ``x`` whose
        playback has come: at least half of it) to ``max_delay``: ``[ahead + delays]``."""
        f = np.concatenate([self._far, np.zeros(self._ahead)])
        n, w = self._fft, len(x)
        corr = np.fft.irfft(np.conj(np.fft.rfft(x, n)) * np.fft.rfft(f, n), n)
        starts = len(f) - w + 1  # corr[j]: x against f[j:j + w]
        energy = np.concatenate([[0.0], np.cumsum(f * f)])
        f_energy = energy[w:w + starts] - energy[:starts]
        # past the playback's end only the first len(far) - j samples of x meet it
        overlap = np.minimum(w, len(self._far) - np.arange(starts))
        x_energy = np.concatenate([[0.0], np.cumsum(x * x)])[overlap]
        return (np.abs(corr[:starts]) / np.sqrt(x_energy * f_energy + 1e-20))[::-1]

    def reset(self) -> None:
        self._out[:] = 0
        self._mic[:] = 0
        self._far[:] = 0
        self.delay = None


class WebRtcAec:
    """AEC3, and a guard for the blocks it cannot cancel.

    AEC3 removes the echo only while the reference lines up with the echo in the mic
    (to within its filter). Where the reference has just moved or is missing (an
    underrun, a late output callback: ``PlayedTimeline.take`` says ``aligned=False``)
    or the echo path itself changed, it lets echo through until it has re-learned
    the path, and on a busy machine that echo barged in on the answer again and
    again. Such blocks (not aligned, or what came out looks like the playback:
    :class:`EchoLeakDetector`) are never sent raw while the assistant is audible:
    they are ducked as ``Ducker`` does, so a user louder than the playback still
    gets through. A leak is guarded for ``tail_ms`` after it; once ``STICKY_LEAK_BLOCKS``
    have leaked in one playback, the rest of it (until it goes quiet) is: on a loaded
    machine the path broke again and again within one answer, later too weakly
    correlated to be caught, and the last break barged in (a failed clean-clone run,
    replayed from its dump: leaks found at 7.4-10.6 s, the server's VAD hearing speech
    at 10.9 s, none with the rest of the answer guarded). An isolated leak does not
    make the user shout over a whole answer.

    Before the leak detector has found the echo's delay (the canceller has not yet
    been heard to converge: the session's first answer), the ``tail_ms`` after a
    stretch of ``UNALIGNED_STRETCH_BLOCKS`` unaligned blocks is guarded as after a leak:
    a clean clone's first answer began in an output underflow, and once the reference
    lined up again AEC3 let 80 ms of echo through, with no delay yet to find it by, and
    the answer barged in on itself. Not after every unaligned block, nor once the delay
    is known: under load most blocks are unaligned, one at a time (438 of 678 in one
    run), and guarding after each ducked a real interruption.
    """

    name = "aec"

    def __init__(self, settings: EchoSettings = EchoSettings()) -> None:
        from pywebrtc_audio import AudioProcessor

        def make():
            return AudioProcessor(sample_rate=WIRE_RATE_HZ, echo_cancellation=True)

        self._ap = make()
        self._guard = Ducker(settings)
        self._leaks = EchoLeakDetector(_latency_samples(make()))
        self._distrust_samples = 0  # after a leak: AEC3 takes a while to re-learn the path
        self._hold_samples = settings.tail_ms * WIRE_RATE_HZ // 1000
        self._leaked_now = 0  # blocks leaked during this playback
        self._unaligned_run = 0  # unaligned blocks in a row, up to this one
        self.guarded_blocks = 0  # not aligned, or leaking, while the assistant was audible
        self.leaking_blocks = 0

    def process(self, mic: np.ndarray, far: np.ndarray, aligned: bool = True,
                ahead_dbfs: float = SILENT_DBFS) -> np.ndarray:
        out = self._ap.process(mic.astype(np.float32, copy=False),
                               far.astype(np.float32, copy=False))
        self._guard.echo_lag_samples = self._leaks.delay or 0
        self._guard.hear(far, ahead_dbfs)
        if self._leaks.leaking(mic, out, far):
            self.leaking_blocks += 1
            self._leaked_now += 1
            self._distrust_samples = self._hold_samples
        else:
            self._distrust_samples = max(0, self._distrust_samples - len(out))
        unconverged = self._leaks.delay is None
        if aligned and unconverged and self._unaligned_run >= UNALIGNED_STRETCH_BLOCKS:
            self._distrust_samples = self._hold_samples  # a path new to an unconverged AEC3
        self._unaligned_run = 0 if aligned else self._unaligned_run + 1
        if not self._guard.audible:
            self._leaked_now = 0  # the playback went quiet: the next one starts afresh
            return out
        if aligned and not self._distrust_samples and self._leaked_now < STICKY_LEAK_BLOCKS:
            return out
        self.guarded_blocks += 1
        return self._guard.gate(out)

    def reset(self) -> None:
        self._ap.reset()
        self._guard.reset()
        self._leaks.reset()
        self._distrust_samples = self._leaked_now = self._unaligned_run = 0


def _latency_samples(ap, max_samples: int = 2400) -> int:
    """How far the canceller's output lags its input (224 samples, 9.3 ms, for
    pywebrtc-audio's AEC3 at 24 kHz): measured once, on noise, with no playback."""
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(WIRE_RATE_HZ // 2)).astype(np.float32)
    silent = np.zeros(WIRE_RATE_HZ // 100, np.float32)
    out = np.concatenate([ap.process(noise[i:i + len(silent)], silent)
                          for i in range(0, len(noise), len(silent))])
    corr = np.correlate(out, noise[:len(noise) - max_samples], "valid")  # by lag
    return int(np.argmax(np.abs(corr)))


class NoEcho:
    name = "off"

    def process(self, mic: np.ndarray, far: np.ndarray, aligned: bool = True,
                ahead_dbfs: float = SILENT_DBFS) -> np.ndarray:
        return mic

    def reset(self) -> None:
        pass


def aec_available() -> bool:
    try:
        import pywebrtc_audio  # noqa: F401
    except ImportError:
        return False
    return True


def make_echo_control(settings: EchoSettings):
    """The strategy ``settings.echo`` names (``auto``: AEC where it installs, else duck)."""
    mode = settings.echo
    if mode == "auto":
        mode = "aec" if aec_available() else "duck"
    if mode == "aec":
        if not aec_available():
            raise VoxloopError("--echo aec needs the pywebrtc-audio wheel "
                               "(pip install pywebrtc-audio); --echo duck works without it")
        return WebRtcAec(settings)
    if mode == "duck":
        return Ducker(settings)
    if mode == "off":
        return NoEcho()
    raise VoxloopError(f"unknown echo mode {mode!r}; one of {', '.join(MODES)}")


@dataclass
class EchoMeter:
    """Mic energy before and after echo handling while the assistant was audible."""

    raw_energy: float = 0.0
    sent_energy: float = 0.0
    samples: int = 0

    def add(self, raw: np.ndarray, sent: np.ndarray) -> None:
        self.raw_energy += float(np.sum(np.square(raw, dtype=np.float64)))
        self.sent_energy += float(np.sum(np.square(sent, dtype=np.float64)))
        self.samples += len(raw)

    def summary(self) -> dict:
        if not self.samples:
            return {"echo_seconds": 0.0}
        raw_db = 10 * np.log10(self.raw_energy / self.samples + 1e-12)
        sent_db = 10 * np.log10(self.sent_energy / self.samples + 1e-12)
        return {"echo_seconds": round(self.samples / WIRE_RATE_HZ, 2),
                "mic_during_playback_dbfs": round(float(raw_db), 1),
                "sent_during_playback_dbfs": round(float(sent_db), 1),
                # a headset or a muted mic hears no echo: nothing to reduce
                "echo_reduction_db": round(float(raw_db - sent_db), 1)
                if raw_db > NO_ECHO_DBFS else None}
