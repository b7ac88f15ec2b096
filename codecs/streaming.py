"""Streaming execution of encodec's SEANet modules with explicit state.

``streamify(module)`` mirrors a module tree (Sequential, SConv1d,
SConvTranspose1d, SLSTM, SEANetResnetBlock, pointwise activations) with
small streaming wrappers that share its weights. Each wrapper has
``init_state(batch_size)``, returning a dataclass of its own, and
``step(state, x)``, which consumes a chunk ``x [B, C, T]`` of any length,
updates ``state`` in place and returns every output sample that the chunk
completes, and ``flush(state)``, which ends the stream and returns what only
the end of the input determines. Fed in chunks and flushed, the outputs
concatenate to the offline forward pass of the module on the whole input (when
the input length is a multiple of the total stride, as ``NeuralCodec.encode``
guarantees by zero padding).

Only reflect padding (EnCodec's pretrained weights) needs the flush: offline,
a layer whose whole input is shorter than its padding pads it differently.

For speed (one 40 ms frame per call is hundreds of small calls) the wrappers
call the functional ops directly on weights taken once, when the stream is
made (weight norm applied, or already folded by ``NeuralCodec.fold_weight_norm``),
and step the LSTM frame by frame with ``torch.lstm_cell``, so a stream sees the
weights of its creation time. ``NeuralCodec.encode``/``decode`` run this same
code on the whole signal, so chunking cannot change a single code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from encodec.modules import SLSTM, SConv1d, SConvTranspose1d
from encodec.modules.seanet import SEANetResnetBlock
from torch import Tensor, nn
from torch.nn.utils.weight_norm import WeightNorm


def effective_weight(layer: nn.Module) -> Tensor:
    """``layer.weight`` as its forward uses it: with encodec's (hook) weight norm applied."""
    with torch.no_grad():
        for hook in layer._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm):
                return hook.compute_weight(layer).detach()
        return layer.weight.detach()


def _detached(bias: Tensor | None) -> Tensor | None:
    return None if bias is None else bias.detach()


@dataclass
class ConvState:
    pending: Tensor  # [B, C, n] padded input not yet consumed by a full window
    started: bool = False  # the left padding has been added


class StreamingConv1d:
    """Causal SConv1d: left padding (zero or reflect) once, then sliding windows."""

    def __init__(self, module: SConv1d) -> None:
        conv = module.conv.conv
        if not module.causal:
            raise ValueError("only causal convolutions can stream")
        self.module = module
        self.weight, self.bias = effective_weight(conv), _detached(conv.bias)
        self.dilation = conv.dilation[0]
        self.stride = conv.stride[0]
        self.window = (conv.kernel_size[0] - 1) * conv.dilation[0] + 1
        self.padding = self.window - self.stride
        self.reflect = module.pad_mode == "reflect"

    def init_state(self, batch_size: int) -> ConvState:
        channels = self.module.conv.conv.in_channels
        return ConvState(torch.zeros(batch_size, channels, 0))

    def step(self, state: ConvState, x: Tensor) -> Tensor:
        if self.window == 1 and self.stride == 1 and x.shape[-1]:  # pointwise: no carry-over
            return F.conv1d(x, self.weight, self.bias)
        buffer = torch.cat([state.pending, x], dim=-1) if state.pending.shape[-1] else x
        if not state.started:
            if self.reflect and buffer.shape[-1] <= self.padding:
                state.pending = buffer  # reflect padding needs padding + 1 samples
                return buffer.new_zeros(buffer.shape[0], self._out_channels(), 0)
            mode = "reflect" if self.reflect and self.padding else "constant"
            buffer = F.pad(buffer, (self.padding, 0), mode=mode)
            state.started = True
        frames = (buffer.shape[-1] - self.window) // self.stride + 1
        if frames <= 0:
            state.pending = buffer
            return buffer.new_zeros(buffer.shape[0], self._out_channels(), 0)
        used = (frames - 1) * self.stride + self.window
        y = F.conv1d(buffer[..., :used], self.weight, self.bias, self.stride, 0, self.dilation)
        state.pending = buffer[..., frames * self.stride:]
        return y

    def flush(self, state: ConvState) -> Tensor:
        """A stream shorter than the reflect padding: pad it as encodec's ``pad1d`` does."""
        if state.started or state.pending.shape[-1] == 0:
            return state.pending.new_zeros(state.pending.shape[0], self._out_channels(), 0)
        x = state.pending
        extra = self.padding - x.shape[-1] + 1
        padded = F.pad(F.pad(x, (0, extra)), (self.padding, 0), mode="reflect")[..., :-extra]
        state.pending, state.started = padded, True
        return self.step(state, padded[..., :0])

    def _out_channels(self) -> int:
        return self.module.conv.conv.out_channels


@dataclass
class ConvTransposeState:
    tail: Tensor | None = None  # [B, C, kernel - stride] overlap still to be added


class StreamingConvTranspose1d:
    """Causal SConvTranspose1d by overlap-add; a frame completes ``stride`` samples."""

    def __init__(self, module: SConvTranspose1d) -> None:
        if not module.causal or module.trim_right_ratio != 1.0:
            raise ValueError("only causal transposed convolutions trimmed on the right can stream")
        conv = module.convtr.convtr
        self.module = module
        self.stride = conv.stride[0]
        self.weight, self.bias = effective_weight(conv), _detached(conv.bias)

    def init_state(self, batch_size: int) -> ConvTransposeState:
        return ConvTransposeState()

    def step(self, state: ConvTransposeState, x: Tensor) -> Tensor:
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.module.convtr.convtr.out_channels, 0)
        full = F.conv_transpose1d(x, self.weight, None, self.stride)  # [B, C, (T-1)*stride+k]
        if state.tail is not None:
            overlap = state.tail.shape[-1]
            full = torch.cat([full[..., :overlap] + state.tail, full[..., overlap:]], dim=-1)
        done = x.shape[-1] * self.stride
        state.tail = full[..., done:]
        y = full[..., :done]
        return y + self.bias.view(1, -1, 1) if self.bias is not None else y

    def flush(self, state: ConvTransposeState) -> None:
        return None  # the overlap tail lies past the end: offline trims it too


@dataclass
class LSTMState:
    hidden: list[tuple[Tensor, Tensor]] | None = None  # per layer (h, c), each [B, H]


class StreamingLSTM:
    """SLSTM stepped one frame at a time with ``torch.lstm_cell`` (the fused CPU LSTM
    costs milliseconds per call for one frame)."""

    def __init__(self, module: SLSTM) -> None:
        lstm = module.lstm
        self.skip = module.skip
        self.layers = [tuple(getattr(lstm, f"{name}_l{i}").detach()
                             for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                       for i in range(lstm.num_layers)]
        self.hidden_size = lstm.hidden_size

    def init_state(self, batch_size: int) -> LSTMState:
        return LSTMState()

    def step(self, state: LSTMState, x: Tensor) -> Tensor:
        """``x [B, C, T]`` -> ``[B, C, T]``."""
        if x.shape[-1] == 0:
            return x
        if state.hidden is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            state.hidden = [(zeros, zeros)] * len(self.layers)
        outputs = []
        for frame in x.unbind(-1):  # [B, C]
            y = frame
            for i, weights in enumerate(self.layers):
                state.hidden[i] = torch.lstm_cell(y, state.hidden[i], *weights)
                y = state.hidden[i][0]
            outputs.append(y + frame if self.skip else y)
        return torch.stack(outputs, dim=-1)

    def flush(self, state: LSTMState) -> None:
        return None


@dataclass
class ResidualState:
    block: list
    shortcut: object
    pending_block: Tensor | None = None
    pending_shortcut: Tensor | None = None


class StreamingResidual:
    """``shortcut(x) + block(x)``; each branch's extra samples wait for the other."""

    def __init__(self, module: SEANetResnetBlock) -> None:
        self.block = streamify(module.block)
        self.shortcut = streamify(module.shortcut)

    def init_state(self, batch_size: int) -> ResidualState:
        return ResidualState(self.block.init_state(batch_size),
                             self.shortcut.init_state(batch_size))

    def step(self, state: ResidualState, x: Tensor) -> Tensor:
        a = self.block.step(state.block, x)
        b = self.shortcut.step(state.shortcut, x)
        return self._combine(state, a, b)

    def flush(self, state: ResidualState) -> Tensor | None:
        a, b = self.block.flush(state.block), self.shortcut.flush(state.shortcut)
        if a is None and b is None:
            return None
        empty = (a if a is not None else b)[..., :0]  # (pending_*: None before any step)
        return self._combine(state, empty if a is None else a, empty if b is None else b)

    @staticmethod
    def _combine(state: ResidualState, a: Tensor, b: Tensor) -> Tensor:
        waiting = state.pending_block is not None and (state.pending_block.shape[-1]
                                                       or state.pending_shortcut.shape[-1])
        if not waiting and a.shape[-1] == b.shape[-1]:
            state.pending_block, state.pending_shortcut = a[..., :0], b[..., :0]
            return a + b  # the usual case: both branches kept pace
        # One branch is ahead (a reflect-padded conv waits for padding + 1 samples while
        # the shortcut does not): the extra samples wait, even through steps that bring
        # nothing new to either branch.
        if state.pending_block is not None:
            a = torch.cat([state.pending_block, a], dim=-1)
            b = torch.cat([state.pending_shortcut, b], dim=-1)
        n = min(a.shape[-1], b.shape[-1])
        state.pending_block, state.pending_shortcut = a[..., n:], b[..., n:]
        return a[..., :n] + b[..., :n]


@dataclass
class SequentialState:
    children: list = field(default_factory=list)


class StreamingSequential:
    def __init__(self, module: nn.Sequential) -> None:
        self.children = [streamify(child) for child in module]

    def init_state(self, batch_size: int) -> SequentialState:
        return SequentialState([c.init_state(batch_size) for c in self.children])

    def step(self, state: SequentialState, x: Tensor) -> Tensor:
        for child, child_state in zip(self.children, state.children, strict=True):
            x = child.step(child_state, x)
        return x

    def flush(self, state: SequentialState) -> Tensor | None:
        """End the stream: each layer's flushed output still passes through the later ones."""
        x = None
        for child, child_state in zip(self.children, state.children, strict=True):
            y = child.step(child_state, x) if x is not None and x.shape[-1] else None
            tail = child.flush(child_state)
            parts = [t for t in (y, tail) if t is not None]
            x = torch.cat(parts, dim=-1) if parts else None
        return x


class StreamingPointwise:
    """Activations and identities: no memory across time."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.forward = module.forward  # no hooks on these: skip nn.Module.__call__

    def init_state(self, batch_size: int) -> None:
        return None

    def step(self, state: None, x: Tensor) -> Tensor:
        return self.forward(x)

    def flush(self, state: None) -> None:
        return None


POINTWISE = (nn.ELU, nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.GELU, nn.SiLU)


def streamify(module: nn.Module):
    """The streaming twin of a SEANet module tree (weights shared, not copied)."""
    if isinstance(module, nn.Sequential):
        return StreamingSequential(module)
    if isinstance(module, SConv1d):
        return StreamingConv1d(module)
    if isinstance(module, SConvTranspose1d):
        return StreamingConvTranspose1d(module)
    if isinstance(module, SLSTM):
        return StreamingLSTM(module)
    if isinstance(module, SEANetResnetBlock):
        return StreamingResidual(module)
    if isinstance(module, POINTWISE):
        return StreamingPointwise(module)
    if hasattr(module, "model") and isinstance(module.model, nn.Sequential):
        return StreamingSequential(module.model)  # SEANetEncoder / SEANetDecoder
    raise TypeError(f"no streaming implementation for {type(module).__name__}")
