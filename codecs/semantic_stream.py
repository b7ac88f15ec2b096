"""Whisper's encoder run block by block while audio arrives, with explicit state.

``BlockEncoder(encoder, block_frames)`` shares the frozen ``WhisperEncoder``'s weights.
``init_state(batch_size)`` gives an ``EncoderStreamState``; ``step(state, wav)`` takes a
chunk ``[B, T]`` of 16 kHz audio of any length and returns the encoder features
``[B, n, D]`` (50 Hz) of every block the chunk completes; ``flush(state)`` ends the
stream and returns the rest. All rows of a batch advance together (one stream per row).

What changes against Whisper's offline encoder, so that a feature once out never changes:

- attention is block-causal: a block of ``block_frames`` encoder frames attends to
  itself and to the earlier blocks of its 30 s segment, whose keys/values the state
  keeps; every 30 s (1500 frames) a new segment starts with positions from 0;
- the log-mel floor is 8 below the running peak (at least ``MIN_PEAK_LOG10``), not below
  the whole utterance's peak (``causal_log_mel`` is the offline form).

The convolutions and the STFT are Whisper's exactly: a block waits for 12.5 ms of
audio past its end (the centered STFT frame and the two convolutions look ahead).
The work is cut into the same blocks however the audio is chunked (``step`` on the whole
signal, then ``flush``, is the offline path), so chunking changes no bit of the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from voxloop.codecs.whisper_encoder import (
    HOP_SAMPLES,
    LOG_FLOOR_RANGE,
    N_FFT,
    N_MELS,
    WhisperEncoder,
    log_mel_power,
    mel_filters,
)

MIN_PEAK_LOG10 = 0.0  # the floor never rises from below -8: silence before speech
HALF_WINDOW = N_FFT // 2


def normalize_causal(log_mel: Tensor, peak: Tensor) -> tuple[Tensor, Tensor]:
    """log10 mel ``[B, 80, n]`` and the peak so far ``[B]`` -> Whisper-scaled mel
    ``[B, 80, n]`` floored 8 below the running peak, and the new peak ``[B]``."""
    frame_peak = torch.maximum(log_mel.amax(dim=1), peak[:, None])  # [B, n]
    running = torch.cummax(frame_peak, dim=1).values
    floor = running.clamp(min=MIN_PEAK_LOG10) - LOG_FLOOR_RANGE
    scaled = (torch.maximum(log_mel, floor[:, None, :]) + 4.0) / 4.0
    return scaled, running[:, -1] if running.shape[1] else peak


def causal_log_mel(wav: Tensor) -> Tensor:
    """``[B, T]`` -> ``[B, 80, T // 160]``: Whisper's framing, the running-peak floor."""
    padded = F.pad(wav[:, None], (HALF_WINDOW, HALF_WINDOW), mode="reflect")[:, 0]
    frames = padded.unfold(-1, N_FFT, HOP_SAMPLES)[:, :-1]
    log_mel = log_mel_power(frames, torch.from_numpy(mel_filters()).to(wav))
    return normalize_causal(log_mel, wav.new_full((wav.shape[0],), -100.0))[0]


def block_causal_mask(num_frames: int, block_frames: int, segment_frames: int = 1500
                      ) -> Tensor:
    """``[E, E]`` True where frame i may attend to frame j: j's block is not after i's,
    and both lie in the same 30 s segment."""
    index = torch.arange(num_frames)
    block, segment = index // block_frames, index // segment_frames
    return (block[None, :] <= block[:, None]) & (segment[None, :] == segment[:, None])


@dataclass
class EncoderStreamState:
    samples: Tensor  # [B, S] audio from sample `samples_start` on that frames still need
    samples_start: int
    num_samples: int  # audio received so far
    mel: Tensor  # [B, 80, n] scaled mel frames from frame `mel_start` on
    mel_start: int
    peak: Tensor  # [B] running peak of log10 mel power
    blocks_done: int = 0
    past: list[tuple[Tensor, Tensor]] | None = None  # per layer keys/values [B, H, L, D/H]
    finished: bool = False

    @property
    def mel_end(self) -> int:
        return self.mel_start + self.mel.shape[-1]


class BlockEncoder:
    """Block-causal streaming front end + encoder; see the module docstring."""

    def __init__(self, encoder: WhisperEncoder, block_frames: int) -> None:
        if encoder.max_frames % block_frames:
            raise ValueError(f"block_frames must divide {encoder.max_frames} (30 s)")
        self.encoder, self.block_frames = encoder, block_frames
        self.segment_frames = encoder.max_frames
        self.filters = torch.from_numpy(mel_filters())

    def init_state(self, batch_size: int) -> EncoderStreamState:
        return EncoderStreamState(
            samples=torch.zeros(batch_size, 0), samples_start=0, num_samples=0,
            mel=torch.zeros(batch_size, N_MELS, 0), mel_start=0,
            peak=torch.full((batch_size,), -100.0))

    def step(self, state: EncoderStreamState, wav: Tensor) -> Tensor:
        """``wav [B, T]`` -> features ``[B, n, D]`` of the blocks it completes."""
        return self._cat(state, self.step_blocks(state, wav))

    def flush(self, state: EncoderStreamState) -> Tensor:
        """End of the stream: the features of the last (partial) blocks ``[B, n, D]``."""
        return self._cat(state, self.flush_blocks(state))

    @torch.no_grad()
    def step_blocks(self, state: EncoderStreamState, wav: Tensor) -> list[Tensor]:
        """``wav [B, T]`` -> one ``[B, block_frames, D]`` per block it completes."""
        if state.finished:
            raise ValueError("this stream was flushed: start a new state")
        state.samples = torch.cat([state.samples, wav.float()], dim=1)
        state.num_samples += wav.shape[1]
        outputs = []
        while True:
            end = (state.blocks_done + 1) * self.block_frames  # the block's last frame + 1
            if state.num_samples < 2 * HOP_SAMPLES * end + HALF_WINDOW:  # mel frame 2 * end
                return outputs
            outputs.append(self._block(state, end, num_mel=None))

    @torch.no_grad()
    def flush_blocks(self, state: EncoderStreamState) -> list[Tensor]:
        """End of the stream: one ``[B, n, D]`` per remaining (the last partial) block."""
        num_mel = state.num_samples // HOP_SAMPLES
        num_frames = (num_mel + 1) // 2
        outputs = []
        while state.blocks_done * self.block_frames < num_frames:
            end = min((state.blocks_done + 1) * self.block_frames, num_frames)
            outputs.append(self._block(state, end, num_mel=num_mel))
        state.finished = True
        return outputs

    def _cat(self, state: EncoderStreamState, outputs: list[Tensor]) -> Tensor:
        if outputs:
            return torch.cat(outputs, dim=1)
        return state.samples.new_zeros(state.samples.shape[0], 0, self.encoder.width)

    def _block(self, state: EncoderStreamState, end: int, num_mel: int | None) -> Tensor:
        """Frames ``[start, end)`` of the next block -> ``[B, end - start, D]``.
        ``num_mel`` is the stream's mel length once it has ended (None before)."""
        start = state.blocks_done * self.block_frames
        last_mel = 2 * end + 1 if num_mel is None else min(2 * end + 1, num_mel)
        if last_mel > state.mel_end:
            self._add_mel(state, last_mel, ended=num_mel is not None)
        x = self._convolve(state, start, end, num_mel)  # [B, n, D]
        offset = start % self.segment_frames
        if offset == 0:
            state.past = None  # a new 30 s segment
        x = x + self.encoder.positions[offset:offset + end - start]
        new_past = []
        for i, layer in enumerate(self.encoder.layers):
            x, keys_values = layer(x, None if state.past is None else state.past[i])
            new_past.append(keys_values)
        state.past, state.blocks_done = new_past, state.blocks_done + 1
        keep_from = max(0, 2 * end - 2)  # the next block's left context
        state.mel = state.mel[..., keep_from - state.mel_start:]
        state.mel_start = max(state.mel_start, keep_from)
        return self.encoder.ln_post(x)

    def _add_mel(self, state: EncoderStreamState, stop: int, ended: bool) -> None:
        """Compute scaled mel frames ``[mel_end, stop)`` from the buffered audio."""
        first = state.mel_end
        audio, audio_start = state.samples, state.samples_start
        reflect = state.num_samples > HALF_WINDOW  # else zeros, as for a too-short signal
        if first == 0:  # Whisper's centered STFT reflects the start
            left = audio[:, 1:HALF_WINDOW + 1].flip(-1) if reflect else \
                audio.new_zeros(audio.shape[0], HALF_WINDOW)
            audio, audio_start = torch.cat([left, audio], dim=1), audio_start - HALF_WINDOW
        if ended:  # ... and the end
            right = state.samples[:, -HALF_WINDOW - 1:-1].flip(-1) if reflect else \
                audio.new_zeros(audio.shape[0], HALF_WINDOW)
            audio = torch.cat([audio, right], dim=1)
        lo = HOP_SAMPLES * first - HALF_WINDOW - audio_start
        hi = HOP_SAMPLES * (stop - 1) + HALF_WINDOW - audio_start
        frames = audio[:, lo:hi].unfold(-1, N_FFT, HOP_SAMPLES)  # [B, stop - first, 400]
        scaled, state.peak = normalize_causal(log_mel_power(frames, self.filters), state.peak)
        state.mel = torch.cat([state.mel, scaled], dim=-1)
        drop = max(0, HOP_SAMPLES * stop - HALF_WINDOW - state.samples_start)
        state.samples, state.samples_start = state.samples[:, drop:], state.samples_start + drop

    def _convolve(self, state: EncoderStreamState, start: int, end: int,
                  num_mel: int | None) -> Tensor:
        """Both convolutions for frames ``[start, end)``, with Whisper's zero padding."""
        lo, hi = 2 * start - 2, 2 * end + 1  # mel frames the block's convolutions read
        first, stop = max(lo, 0), min(hi, state.mel_end)
        mel = state.mel[..., first - state.mel_start:stop - state.mel_start]
        mel = F.pad(mel, (first - lo, hi - stop))  # zeros before the start and past the end
        conv1, conv2 = self.encoder.conv1, self.encoder.conv2
        hidden = F.gelu(F.conv1d(mel, conv1.weight, conv1.bias))  # conv1 frames [lo+1, hi-1)
        index = torch.arange(lo + 1, hi - 1)
        limit = num_mel if num_mel is not None else hi
        hidden = hidden * ((index >= 0) & (index < limit)).to(hidden)  # conv2's zero padding
        return F.gelu(F.conv1d(hidden, conv2.weight, conv2.bias, stride=2)).transpose(1, 2)
