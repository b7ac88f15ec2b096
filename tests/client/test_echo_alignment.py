"""The echo reference on a busy machine, without a sound card: a simulated speaker and
mic on one clock, callbacks that run late and in bursts (the output one late enough
to underrun), PortAudio timestamps that jitter, and the client's own
``PlayedTimeline`` and ``WebRtcAec`` in between.

What must hold: the reference the canceller gets lines up with what the speaker
really played (a wandering, jittery clock never moves it; an underrun's silence is
where the speaker was silent), and a block it cannot cancel (an untrusted
reference, or echo it missed) is never sent raw while the assistant is audible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from voxloop.client.audio_io import PlayedTimeline
from voxloop.client.echo import Ducker, EchoMeter, EchoSettings, WebRtcAec, aec_available

RATE_HZ = 24000
BLOCK = 480  # 20 ms
OUT_LATENCY = 1080  # 45 ms queued ahead of the speaker, as PulseAudio gives
ECHO_DELAY = 720  # speaker -> mic, 30 ms
# when the process is descheduled (start s, end s): callbacks due then run at its end,
# in a burst; the 150, 120 and 80 ms ones outlast the 45 ms output queue (underruns)
STALLS_S = [(1.0, 1.15), (1.6, 1.64), (2.1, 2.14), (2.6, 2.72), (3.3, 3.34), (3.9, 3.98)]
UNDERRUNS_S = [(1.0, 1.15), (2.6, 2.72), (3.9, 3.98)]


def dbfs(samples: np.ndarray) -> float:
    """RMS level in dB, not floored at -60 as the client's is (ducked is quieter)."""
    return 10 * np.log10(np.mean(np.square(samples, dtype=np.float64)) + 1e-20)


def _speech_like(n: int, rng) -> np.ndarray:
    """Noise in syllable-like bursts: no two stretches alike, so a reference can match
    the truth at one lag only."""
    envelope = np.repeat(rng.uniform(0.2, 1.0, n // 2400 + 1), 2400)[:n]
    envelope *= np.sin(np.arange(n) * 2 * np.pi * 4 / RATE_HZ) > -0.3
    return (0.3 * rng.standard_normal(n) * envelope).astype(np.float32)


def _run_late(due: int) -> int:
    for start_s, end_s in STALLS_S:
        if start_s * RATE_HZ <= due < end_s * RATE_HZ:
            return int(end_s * RATE_HZ)
    return due


def _reading_s(true_samples: int, side: float, rng) -> float:
    """A PortAudio timestamp as PulseAudio's were on a busy machine: wandering by up to
    8 ms (12 ms/s at most, the input and output ones apart), within 0.3 ms of that
    mostly, one in 20 off by 5 to 50 ms, and the output's 25 ms late for 300 ms with
    no gap in the sound (its latency report stepped)."""
    t_s = true_samples / RATE_HZ
    error_s = 0.008 * np.sin(2 * np.pi * t_s / 4 + side) + rng.normal(0, 0.0003)
    if rng.random() < 1 / 20:
        error_s += rng.choice([-1, 1]) * rng.uniform(0.005, 0.05)
    if side == 0.0 and 2.2 <= t_s < 2.5:
        error_s += 0.025
    return 10.0 + t_s + error_s


@dataclass
class Run:
    truth: np.ndarray  # what the speaker played, by true time (zeros in underruns)
    captured: list[int]  # true time of each mic block's first sample
    far: list[np.ndarray]
    aligned: list[bool]
    timeline: PlayedTimeline


def simulate(answer: np.ndarray, seconds: float = 5.0, seed: int = 0,
             lead_ms: int = 0) -> Run:
    """Play ``answer`` (from 0.5 s on) and record for ``seconds``, every callback run
    when the scheduler lets it, in the order they really run; the reference taken
    ``lead_ms`` ahead of the mic."""
    rng = np.random.default_rng(seed)
    total = int(seconds * RATE_HZ)
    played = np.zeros(total, np.float32)
    played[RATE_HZ // 2:RATE_HZ // 2 + len(answer)] = answer[:total - RATE_HZ // 2]
    events = []  # (when it runs, kind, index, true time of its first sample, xrun)
    heard = OUT_LATENCY
    for b in range(total // BLOCK):
        runs = _run_late(heard - OUT_LATENCY)
        underrun = runs > heard  # the queue ran dry: the speaker played silence meanwhile
        if underrun:
            heard = runs + OUT_LATENCY
        events.append((runs, 0, b, heard, underrun))
        heard += BLOCK
    for j in range(total // BLOCK - 20):
        captured = j * BLOCK
        events.append((_run_late(captured + BLOCK + 120), 1, j, captured, False))
    truth = np.zeros(heard + BLOCK, np.float32)
    timeline, run = PlayedTimeline(lead_ms=lead_ms), Run(truth, [], [], [], None)
    run.timeline = timeline
    for _, kind, index, at, underrun in sorted(events):
        if kind == 0:
            block = played[index * BLOCK:(index + 1) * BLOCK]
            truth[at:at + BLOCK] = block
            timeline.put(block, _reading_s(at, 0.0, rng), underrun)
        else:
            far, aligned = timeline.take(BLOCK, _reading_s(at, 2.0, rng))
            run.captured.append(at)
            run.far.append(far)
            run.aligned.append(aligned)
    return run


def _lag(far: np.ndarray, truth: np.ndarray, at: int, around: int, span: int) -> int | None:
    """The lag at which ``far`` is exactly what the speaker played from ``at + lag``."""
    lo = max(0, at + around - span)
    windows = np.lib.stride_tricks.sliding_window_view(
        truth[lo:at + around + span + BLOCK], BLOCK)
    hits = np.nonzero(np.all(windows == far, axis=1))[0]
    return int(lo + hits[0] - at) if len(hits) else None


def test_the_reference_stays_on_what_the_speaker_played_under_late_callbacks():
    run = simulate(_speech_like(4 * RATE_HZ, np.random.default_rng(1)))
    assert len(set(run.captured)) == len(run.captured)  # every mic block, once, in order
    lags = []
    for at, far, aligned in zip(run.captured, run.far, run.aligned, strict=True):
        if aligned and dbfs(far) > -40:
            around = lags[0] if lags else 0
            lag = _lag(far, run.truth, at, around, 2400 if not lags else 480)
            assert lag is not None, f"block at {at / RATE_HZ:.2f} s: a reference never played"
            lags.append(lag)
    # one echo path for the canceller: neither the timestamps' wander, jitter, outliers
    # and steps nor the bursts moved it, and the silence of the underruns is where the
    # speaker was silent (give or take how far the readings wandered meanwhile)
    spread_ms = 1000 * (max(lags) - min(lags)) / RATE_HZ
    assert len(lags) > 40 and spread_ms < 4, (spread_ms, sorted(set(lags)))
    assert abs(1000 * lags[0] / RATE_HZ) < 10  # the clocks' wander when it calibrated
    assert run.timeline.resyncs == len(UNDERRUNS_S)
    distrusted = [at / RATE_HZ for at, aligned in zip(run.captured, run.aligned, strict=True)
                  if not aligned]
    # before the clocks are calibrated (0.5 s, nothing plays yet), and around the
    # underruns until the canceller has re-learned the echo path
    expected = [t for t in distrusted
                if t < 0.6 or any(a - 0.1 < t < b + 0.6 for a, b in UNDERRUNS_S)]
    assert len(expected) > 50
    assert len(distrusted) - len(expected) < 0.1 * len(run.aligned)  # readings 50 ms off


def test_a_late_output_callback_leaves_silence_in_the_reference():
    """While the output callback is stalled the speaker is silent, and so is the
    reference; a block the speaker side has not reached yet is not trusted."""
    timeline = PlayedTimeline(lead_ms=0)
    tone = np.ones(BLOCK, np.float32)
    for k in range(30):
        timeline.put(tone, 1.0 + 0.02 * k)
    for j in range(30):  # up to 1.58 s: the output side has written it
        far, aligned = timeline.take(BLOCK, 1.0 + 0.02 * j)
    assert aligned and far.all()
    far, aligned = timeline.take(BLOCK, 1.60)  # not written: the output callback is late
    assert not aligned and not far.any()
    for k in range(6):  # it comes back 100 ms later, after an underrun PortAudio reports
        timeline.put(2 * tone, 1.70 + 0.02 * k, underrun=k == 0)
    far, aligned = timeline.take(BLOCK, 1.62)
    assert not far.any() and not aligned  # silence played; trusted again after settling
    for j in range(4):
        far, aligned = timeline.take(BLOCK, 1.64 + 0.02 * j)
    assert (far == 2).all() and timeline.resyncs == 1


def test_a_move_in_a_silence_is_distrusted_when_the_next_answer_starts():
    """The canceller re-learns the echo path only while it hears the speaker."""
    timeline = PlayedTimeline(settle_ms=200, lead_ms=0)
    silence, tone = np.zeros(BLOCK, np.float32), np.full(BLOCK, 0.1, np.float32)
    heard_s = [1.0 + 0.02 * k for k in range(30)]  # calibrate, then an underrun:
    heard_s += [1.7 + 0.02 * k for k in range(45)]  # 100 ms of silence more
    for k, at_s in enumerate(heard_s):
        timeline.put(tone if k >= 40 else silence, at_s, underrun=k == 30)
    trusted = [timeline.take(BLOCK, 1.0 + 0.02 * j)[1] for j in range(80)]
    assert timeline.resyncs == 1
    # the answer starts at 1.90 s, 300 ms after the move: 200 ms of it not trusted
    assert not any(trusted[30:55]) and all(trusted[55:])


def test_echo_ahead_of_a_late_reference_is_ducked_too():
    """Where the reference is late (untrusted), the echo may be of audio it has not
    reached yet: the guard compares with what the speaker plays next as well."""
    timeline = PlayedTimeline()
    silence, answer = np.zeros(BLOCK, np.float32), np.full(BLOCK, 0.3, np.float32)
    for k in range(40):  # the answer is heard from 1.6 s
        timeline.put(answer if k >= 30 else silence, 1.0 + 0.02 * k)
    for j in range(28):
        timeline.take(BLOCK, 1.0 + 0.02 * j)
    assert timeline.ahead_dbfs() > -20  # 1.56-1.66 s: it starts within 100 ms
    echo = 0.5 * answer
    assert dbfs(Ducker(EchoSettings()).process(echo, silence, aligned=False)) > -20
    sent = Ducker(EchoSettings()).process(echo, silence, False, timeline.ahead_dbfs())
    assert dbfs(sent) < -60


def test_echo_of_an_answer_the_reference_lost_is_ducked_until_it_ends():
    """The speaker side stops writing for 400 ms (a stall under load) while the mic goes
    on: the reference is silence, yet the speaker still plays (and echoes) what it was
    given. The ducker holds that until the speaker is given silence, then the tail."""
    timeline, duck = PlayedTimeline(), Ducker(EchoSettings())
    silence, answer = np.zeros(BLOCK, np.float32), np.full(BLOCK, 0.3, np.float32)
    for k in range(30):  # the answer, given up to 1.6 s; heard (and echoed) up to 2.0 s
        timeline.put(answer, 1.0 + 0.02 * k)
    sent = []
    for j in range(50):
        far, aligned = timeline.take(BLOCK, 1.0 + 0.02 * j)
        sent.append(duck.process(0.5 * answer, far, aligned, timeline.ahead_dbfs()))
    assert all(dbfs(s) < -60 for s in sent)  # no reference for the last 400 ms: ducked
    for k in range(50, 80):  # the speaker side catches up: the answer is over
        timeline.put(silence, 1.0 + 0.02 * k)
    user = np.full(BLOCK, 0.1, np.float32)  # -20 dBFS: quieter than the answer was
    assert dbfs(duck.process(user, silence, True, timeline.ahead_dbfs())) < -60
    for j in range(51, 71):  # 400 ms on: the speaker's silence is past the echo tail
        duck.process(silence, *timeline.take(BLOCK, 1.0 + 0.02 * j), timeline.ahead_dbfs())
    np.testing.assert_array_equal(duck.process(user, silence, True, timeline.ahead_dbfs()),
                                  user)


@pytest.mark.skipif(not aec_available(), reason="needs the pywebrtc-audio wheel")
def test_echo_is_never_sent_uncancelled_while_the_assistant_plays():
    run = simulate(_speech_like(4 * RATE_HZ, np.random.default_rng(3)), seed=3)
    echo = 0.5 * np.concatenate([np.zeros(ECHO_DELAY, np.float32), run.truth])  # -6 dB
    aec, meter, poorly_cancelled = _cancel(run, echo, check_guard=True)
    assert aec.guarded_blocks > 10 and meter.samples > 100 * BLOCK
    # a reference in play order, moved on every jittery reading, gave 11-25 dB here
    # and 8-40 blocks cancelled by less than 20 dB
    assert meter.summary()["echo_reduction_db"] > 30 and poorly_cancelled <= 3


def _cancel(run: Run, echo: np.ndarray, check_guard: bool = False):
    """Feed ``run``'s mic blocks of ``echo`` through AEC3: (canceller, meter, blocks
    cancelled by less than 20 dB)."""
    aec, meter, poorly_cancelled = WebRtcAec(EchoSettings()), EchoMeter(), 0
    for at, far, aligned in zip(run.captured, run.far, run.aligned, strict=True):
        mic = echo[at:at + BLOCK]
        sent = aec.process(mic, far, aligned)
        if dbfs(mic) < -45:
            continue
        meter.add(mic, sent)
        if check_guard and not aligned:  # no reference to trust: ducked, never sent raw
            assert dbfs(sent) < dbfs(mic) - 40, at / RATE_HZ
        poorly_cancelled += dbfs(sent) > dbfs(mic) - 20
    return aec, meter, poorly_cancelled


@pytest.mark.skipif(not aec_available(), reason="needs the pywebrtc-audio wheel")
def test_echo_ahead_of_a_late_calibration_is_cancelled_with_the_lead():
    """The clocks calibrated 15 ms late, so the echo comes before its reference (as in a
    clean-clone run on a loaded machine): AEC3 cannot cancel that, the default lead
    gives it the reference early enough. Without the lead, what it lets through while it
    converges is found ahead of its reference and held back (not searching there: 21 dB)."""
    late = 15 * RATE_HZ // 1000
    reductions, leaks = {}, {}
    for lead_ms in (0, PlayedTimeline().lead * 1000 // RATE_HZ):
        run = simulate(_speech_like(4 * RATE_HZ, np.random.default_rng(4)), seed=4,
                       lead_ms=lead_ms)
        echo = 0.5 * np.concatenate([run.truth[late:], np.zeros(late, np.float32)])
        aec, meter, poorly = _cancel(run, echo)
        reductions[lead_ms] = meter.summary()["echo_reduction_db"], poorly
        leaks[lead_ms] = aec.leaking_blocks
    (_, (worse_db, worse_poorly)), (_, (led_db, led_poorly)) = sorted(reductions.items())
    assert led_db > 30 and led_poorly <= 3 and worse_db > 30 and worse_poorly <= 3, reductions
    (_, unled_leaks), (_, led_leaks) = sorted(leaks.items())
    assert led_leaks == 0 < unled_leaks, leaks  # with the lead AEC3 cancels it all itself


def _voiced(n: int, rng, f0_hz: float = 140.0) -> np.ndarray:
    """A gliding harmonic voice in syllables: like speech, correlated over time."""
    t_s = np.arange(n) / RATE_HZ
    pitch_hz = f0_hz * (1 + 0.15 * np.sin(2 * np.pi * 1.3 * t_s + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch_hz) / RATE_HZ
    voice = sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in range(1, 25))
    envelope = np.repeat(rng.uniform(0.2, 1.0, n // 2400 + 1), 2400)[:n]
    envelope *= np.sin(2 * np.pi * 3.7 * t_s) > -0.4
    return (0.15 * voice * envelope).astype(np.float32)


@pytest.mark.skipif(not aec_available(), reason="needs the pywebrtc-audio wheel")
def test_echo_the_canceller_misses_is_ducked_and_a_user_over_it_is_not():
    """The echo path changes (100 ms later, 3 dB louder) with the reference trusted:
    AEC3 lets about 20 blocks of echo through before it has re-learned the path
    (more than enough for the server's VAD), unless what looks like the playback is
    held back."""
    rng = np.random.default_rng(0)
    far = np.concatenate([np.zeros(RATE_HZ // 4, np.float32), _voiced(3 * RATE_HZ, rng)])
    echo = 0.5 * np.roll(far, ECHO_DELAY)
    echo[3 * RATE_HZ // 2:] = 0.7 * np.roll(far, 2400)[3 * RATE_HZ // 2:]
    user = np.zeros_like(far)
    user[5 * RATE_HZ // 2:] = 2 * _voiced(len(far) - 5 * RATE_HZ // 2, rng, 230.0)
    aec = WebRtcAec(EchoSettings())
    leaked, heard = 0, []
    for i in range(0, len(far), BLOCK):
        sent = aec.process(echo[i:i + BLOCK] + user[i:i + BLOCK], far[i:i + BLOCK])
        if dbfs(user[i:i + BLOCK]) > -30:
            heard.append(dbfs(sent) > dbfs(user[i:i + BLOCK]) - 10)
        elif dbfs(echo[i:i + BLOCK]) > -45:
            leaked += dbfs(sent) > -45
    assert aec.leaking_blocks > 5 and leaked <= 8
    assert np.mean(heard) > 0.5  # the user talking over it is not taken for echo


def _answer(rng, seconds: int = 4) -> np.ndarray:
    """A quarter second of silence, then ``seconds`` of voiced playback."""
    return np.concatenate([np.zeros(RATE_HZ // 4, np.float32), _voiced(seconds * RATE_HZ, rng)])


def _through_canceller(aec: WebRtcAec, echo: np.ndarray, far: np.ndarray):
    """Each block of ``echo`` with ``far`` through ``aec``: (start sample, the echo's level,
    the level of what was sent), in dBFS."""
    for i in range(0, len(far), BLOCK):
        sent = aec.process(echo[i:i + BLOCK], far[i:i + BLOCK])
        yield i, dbfs(echo[i:i + BLOCK]), dbfs(sent)


@pytest.mark.skipif(not aec_available(), reason="needs the pywebrtc-audio wheel")
@pytest.mark.parametrize("gap_ms", [160, 480])
def test_echo_after_an_underrun_the_timeline_never_saw_is_ducked(gap_ms):
    """The sound server underran: the speaker played nothing for ``gap_ms``, then the
    rest of the answer that much later, and the client never knew (the reference stays
    trusted). The echo comes back 190-510 ms behind its reference, where AEC3 lets it
    through until it has re-learned the path; it must not reach the server. (Searching
    delays up to 200 ms and holding the playback's level 300 ms, 2-69 blocks got through,
    a second and more of echo at 320-480 ms; in replays of live dumps the server's VAD
    heard speech in it.)"""
    for seed in range(2):
        far = _answer(np.random.default_rng(seed))
        at, gap = 3 * RATE_HZ // 2, gap_ms * RATE_HZ // 1000
        played = np.concatenate([far[:at], np.zeros(gap, np.float32), far[at:len(far) - gap]])
        echo = 0.5 * np.roll(played, ECHO_DELAY)
        leaked = sum(i > at and echo_db > -45 and sent_db > -45 for i, echo_db, sent_db
                     in _through_canceller(WebRtcAec(EchoSettings()), echo, far))
        assert leaked <= 1, (seed, leaked)  # the block the echo comes back in, at most


@pytest.mark.skipif(not aec_available(), reason="needs the pywebrtc-audio wheel")
@pytest.mark.parametrize("ahead_ms", [30, 70])
@pytest.mark.parametrize("from_s", [0.0, 1.5])
def test_echo_that_comes_before_its_reference_is_ducked(ahead_ms, from_s):
    """An xrun measured wrong puts the reference behind the echo, from the answer's start
    or from a break in it: AEC3 cannot cancel echo it has no reference for yet, and the
    delay search behind the playback never finds it (56-112 blocks of it were sent, from
    the first 0.2 s on). Searched up to 100 ms ahead too, it is held back."""
    for seed in range(2):
        far = _answer(np.random.default_rng(seed))
        at = int(from_s * RATE_HZ)
        echo = 0.5 * np.roll(far, ECHO_DELAY)
        echo[at:] = 0.5 * np.roll(far, -ahead_ms * RATE_HZ // 1000)[at:]
        leaked = sum(echo_db > -45 and sent_db > -45 for _, echo_db, sent_db
                     in _through_canceller(WebRtcAec(EchoSettings()), echo, far))
        assert leaked <= 3, (seed, leaked)


@pytest.mark.skipif(not aec_available(), reason="needs the pywebrtc-audio wheel")
def test_echo_just_after_the_reference_came_back_is_ducked():
    """A clean clone's live run, replayed (``data/echo-after-underflow.npz``: 1.2 s of its
    ``--dump-audio``, int16, the session's first answer starting 0.5 s in, nobody talking
    over it). The output underflowed as the answer began, so the reference could not be
    vouched for (``aligned`` False, 28 blocks in a row) while its echo came in; when it
    lined up again AEC3, never converged, let 80 ms of echo through (up to -31 dBFS),
    before the leak detector had a delay to find echo by, and the server's VAD took it
    for the user: the answer barged in on itself 560 ms in."""
    dump = np.load(Path(__file__).parent / "data" / "echo-after-underflow.npz")
    mic, far = (dump[k].astype(np.float32) / 32767 for k in ("mic", "far"))
    aec, at, sent = WebRtcAec(EchoSettings()), 0, []
    for n, aligned, ahead in zip(dump["block_samples"], dump["aligned"], dump["ahead_dbfs"],
                                 strict=True):
        sent.append(dbfs(aec.process(mic[at:at + n], far[at:at + n], bool(aligned),
                                     float(ahead))))
        at += n
    assert max(dbfs(mic[i:i + 480]) for i in range(0, len(mic), 480)) > -20  # echo came in
    assert max(sent) <= -45, sent


@pytest.mark.skipif(not aec_available(), reason="needs the pywebrtc-audio wheel")
def test_once_echo_leaked_a_later_break_in_the_path_is_ducked_too():
    """The path breaks twice in one answer: 70 ms later (a leak the detector finds), then a
    second later 400 ms later and in noise, too weakly correlated to be found. The rest
    of the answer stays guarded after the first leak (a 300 ms hold let 12-20 blocks of
    the second break through)."""
    for seed in range(2):
        rng = np.random.default_rng(seed)
        far = _answer(rng)
        echo = 0.5 * np.roll(far, ECHO_DELAY)
        echo[3 * RATE_HZ // 2:] = 0.5 * np.roll(far, 2400)[3 * RATE_HZ // 2:]
        late = 0.5 * np.roll(far, 9600) + 0.05 * rng.standard_normal(len(far))
        echo[5 * RATE_HZ // 2:] = late[5 * RATE_HZ // 2:]
        aec = WebRtcAec(EchoSettings())
        leaked = sum(i >= 5 * RATE_HZ // 2 and sent_db > -45 for i, _, sent_db
                     in _through_canceller(aec, echo.astype(np.float32), far))
        assert aec.leaking_blocks > 5 and leaked <= 2, (seed, leaked)


def test_an_echo_found_at_the_longest_delay_searched_is_no_error():
    """An echo 599 ms behind the playback is found at the far end of the search, and the
    canceller's latency on top of it lies past it (the client's mic callback used to die
    of an empty slice there)."""
    from voxloop.client.echo import EchoLeakDetector

    detector = EchoLeakDetector(latency_samples=224)
    lag = 599 * RATE_HZ // 1000
    far = (0.1 * np.random.default_rng(0).standard_normal(2 * RATE_HZ)).astype(np.float32)
    mic = np.concatenate([np.zeros(lag, np.float32), far[:-lag]])
    for i in range(0, len(far), BLOCK):
        detector.leaking(mic[i:i + BLOCK], mic[i:i + BLOCK], far[i:i + BLOCK])
    assert detector.delay == lag


@pytest.mark.skipif(not aec_available(), reason="needs the pywebrtc-audio wheel")
def test_the_guard_ducks_echo_but_lets_a_louder_user_through():
    rng = np.random.default_rng(4)
    far = 0.3 * _speech_like(2 * RATE_HZ, rng)  # the assistant at about -25 dBFS
    echo = 0.5 * np.roll(far, ECHO_DELAY)
    wrong = np.roll(far, 2400)  # 100 ms late: it does not line up with the echo
    aec = WebRtcAec(EchoSettings())
    for i in range(0, RATE_HZ, BLOCK):
        sent = aec.process(echo[i:i + BLOCK], wrong[i:i + BLOCK], aligned=False)
        if i >= 2400 and dbfs(echo[i:i + BLOCK]) > -50:
            assert dbfs(sent) < dbfs(echo[i:i + BLOCK]) - 40
    assert aec.guarded_blocks > 0
    t_s = np.arange(RATE_HZ) / RATE_HZ  # a voiced user at -18 dBFS talks over it
    user = sum(0.15 * np.sin(2 * np.pi * 150 * k * t_s + k) / k for k in range(1, 12))
    through = []
    for i in range(RATE_HZ, 2 * RATE_HZ, BLOCK):  # the reference is right, not yet trusted
        mic = echo[i:i + BLOCK] + user[i - RATE_HZ:i - RATE_HZ + BLOCK]
        sent = aec.process(mic.astype(np.float32), far[i:i + BLOCK], aligned=False)
        through.append(dbfs(sent) > dbfs(user[:BLOCK]) - 10)
    assert np.mean(through[10:]) > 0.8  # once AEC3's own double-talk check lets it by
    silent = np.zeros(BLOCK, np.float32)
    for _ in range(20):  # the assistant stopped a while ago: nothing to guard
        aec.process(silent, silent, aligned=False)
    for i in range(0, 5 * BLOCK, BLOCK):
        sent = aec.process(user[i:i + BLOCK].astype(np.float32), silent, aligned=False)
        assert dbfs(sent) > dbfs(user[i:i + BLOCK]) - 10


@pytest.mark.skipif(not aec_available(), reason="needs the pywebrtc-audio wheel")
def test_a_flickering_reference_does_not_guard_the_blocks_between():
    """Under load the reference is unaligned one block in two, before the canceller has
    found the echo's delay. Its aligned blocks are guarded no more than with the reference
    aligned throughout (a user talking over the answer is not ducked for it); after a
    stretch of unaligned blocks the ``tail_ms`` that follows is."""
    rng = np.random.default_rng(5)
    far = _answer(rng, 2)
    t_s = np.arange(len(far)) / RATE_HZ  # a voiced user talks over the answer
    user = sum(0.1 * np.sin(2 * np.pi * 140 * k * t_s + k) / k for k in range(1, 12))
    mic = (0.5 * np.roll(far, ECHO_DELAY) + user).astype(np.float32)
    blocks = len(far) // BLOCK
    guarded = {}
    for name, aligned in (("always", [True] * blocks),
                          ("flicker", [i % 2 == 0 for i in range(blocks)]),
                          ("stretch", [not 10 <= i < 20 for i in range(blocks)])):
        aec, guarded[name] = WebRtcAec(EchoSettings()), set()
        for i, a in enumerate(aligned):
            before = aec.guarded_blocks
            aec.process(mic[i * BLOCK:(i + 1) * BLOCK], far[i * BLOCK:(i + 1) * BLOCK], a)
            if a and aec.guarded_blocks > before:
                guarded[name].add(i)
        assert aec._leaks.delay is None  # the canceller never converged on a delay
    assert guarded["flicker"] <= guarded["always"]
    assert set(range(20, 35)) <= guarded["stretch"] - guarded["always"]
