"""The end-of-turn model: P(the user has finished) from what the semantic tokenizer heard so far.

It hears what the semantic tokenizer already computes (``semantic``: Whisper tiny.en's
frozen encoder, block-causal, pooled to 25 Hz, + one VQ codebook), as one of three
``inputs``: ``codes``, each token looked up in the tokenizer's own codebook
(``codebook_vectors() [N, D]``, frozen, never stored here); ``pooled``, the vectors the VQ
would quantize (the same ``[F, D]``, without the VQ's loss of detail); or ``encoder``, the
mean of the Whisper encoder frames each token pools (``[F, 384]``: before the pooler and VQ
that were trained for words, so what they dropped, pitch and timing, is still there, as in
smart-turn's classifier on the same encoder). A small head turns the sequence into one
logit. Two heads (``arch``):

- ``gru``: a linear projection ``D -> hidden`` and a one-layer GRU over the tokens; the
  logit is read from its last state (it hears the order: "seven times" vs "times seven");
- ``pool``: the mean of all vectors, the mean of the last ``tail_tokens`` and the last
  one, through a two-layer MLP (cheaper, blind to order).

A model folder holds one head, or several (``members`` in its config, trained on other
inputs or seeds) whose logits are averaged: the heads are tiny next to the encoder, and
their average ranks held-out examples better than any one of them.

``EndOfTurn`` wraps tokenizer + heads for a stream: ``init_state()``, ``push(state, wav)``
while the user speaks (the stream keeps the encoder frames of each token, from which every
input is made at a pause; ``gru`` heads also carry their state along as blocks come),
``probability(state)`` at a pause (the partial block as a flush would give it now, on a
snapshot: the stream goes on; ``gru`` heads run over that tail only, those on one input as
one ``GruGroup``: one batched product per frame for all of them). Saved as a folder:
``config.json`` (with the tokenizer's weights sha256, checked at load) and a float16
``model.safetensors``.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn

from voxloop.errors import VoxloopError
from voxloop.models import find_model, load_model_folder, save_model_folder, weights_sha256

END_OF_TURN_KIND = "voxloop-end-of-turn"
DEFAULT_END_OF_TURN = "voxloop-end-of-turn"  # bundled under models/
# the longest wait of each eagerness (OpenAI's semantic_vad: 8 s, 4 s, 2 s; auto = medium)
EAGERNESS_CAP_MS = {"low": 8000, "medium": 4000, "high": 2000, "auto": 4000}
WAIT_POWER = 2.0
INPUTS = ("codes", "pooled", "encoder")


def wait_ms(p_finished: float, eagerness: str) -> int:
    """The silence to wait for before the turn ends: the eagerness's cap x (1 - P)^2, so
    ~0 when the turn is clearly finished (P 0.95: 10 ms at medium), 1 s at P 0.5, the
    whole cap when it is clearly not."""
    return round(EAGERNESS_CAP_MS[eagerness] * (1.0 - p_finished) ** WAIT_POWER)


@dataclass(frozen=True)
class EndOfTurnConfig:
    arch: str = "gru"  # gru | pool
    inputs: str = "codes"  # codes (the tokens' codebook vectors) | pooled (before the VQ)
    #                        | encoder (the mean of the encoder frames each token pools)
    hidden_dim: int = 64
    tail_tokens: int = 8  # pool: the last 320 ms at 25 Hz
    code_dim: int = 256  # the width of what it hears: the codebook's, or the encoder's 384
    codebook_size: int = 1024
    semantic: str = "voxloop-semantic"  # the tokenizer it hears (name or folder)
    semantic_sha256: str = ""  # ... and its weights, checked at load
    kind: str = END_OF_TURN_KIND

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> EndOfTurnConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class EndOfTurnHead(nn.Module):
    """Codebook vectors of a turn so far ``[B, F, D]`` (right-padded) and their lengths
    ``[B]`` -> logits ``[B]`` of "finished"."""

    def __init__(self, config: EndOfTurnConfig) -> None:
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.code_dim)  # the codebook's scale is the VQ's
        if config.arch == "gru":
            self.proj = nn.Linear(config.code_dim, config.hidden_dim)
            self.gru = nn.GRU(config.hidden_dim, config.hidden_dim, batch_first=True)
            self.out = nn.Linear(config.hidden_dim, 1)
        elif config.arch == "pool":
            self.mlp = nn.Sequential(nn.Linear(3 * config.code_dim, config.hidden_dim),
                                     nn.GELU(), nn.Linear(config.hidden_dim, 1))
        else:
            raise VoxloopError(f"unknown end-of-turn arch {config.arch!r}: gru or pool")
        if config.inputs not in INPUTS:
            raise VoxloopError(f"unknown end-of-turn inputs {config.inputs!r}: one of "
                               f"{', '.join(INPUTS)}")

    def forward(self, vectors: Tensor, lengths: Tensor) -> Tensor:
        vectors = self.norm(vectors)
        batch = torch.arange(vectors.shape[0])
        last = (lengths - 1).clamp(min=0)
        if self.config.arch == "gru":
            states, _ = self.gru(torch.tanh(self.proj(vectors)))  # [B, F, H]
            return self.out(states[batch, last])[:, 0]
        index = torch.arange(vectors.shape[1])[None]  # [1, F]
        valid = (index < lengths[:, None]).to(vectors)  # [B, F]
        tail = valid * (index >= lengths[:, None] - self.config.tail_tokens).to(vectors)
        mean_all = (vectors * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
        mean_tail = (vectors * tail[..., None]).sum(1) / tail.sum(1, keepdim=True).clamp(min=1)
        return self.mlp(torch.cat([mean_all, mean_tail, vectors[batch, last]], dim=-1))[:, 0]


class GruGroup:
    """``gru`` heads that hear one input, run as one for streaming: their weights stacked,
    so a piece of a turn costs one batched product per frame, not one recurrence per head.
    Each head's arithmetic is its ``forward`` (torch's GRU cell), a piece at a time."""

    def __init__(self, heads: list[EndOfTurnHead]) -> None:
        def stack(get, transpose: bool = False) -> Tensor:
            return torch.stack([get(h).detach().T if transpose else get(h).detach()
                                for h in heads])

        self.heads, self.inputs, self.eps = heads, heads[0].config.inputs, heads[0].norm.eps
        self.gamma, self.beta = stack(lambda h: h.norm.weight)[:, None], \
            stack(lambda h: h.norm.bias)[:, None]  # [G, 1, D]
        self.w_proj, self.b_proj = stack(lambda h: h.proj.weight, True), \
            stack(lambda h: h.proj.bias)[:, None]  # [G, D, H], [G, 1, H]
        self.w_ih, self.b_ih = stack(lambda h: h.gru.weight_ih_l0, True), \
            stack(lambda h: h.gru.bias_ih_l0)[:, None]  # [G, H, 3H], [G, 1, 3H]
        self.w_hh, self.b_hh = stack(lambda h: h.gru.weight_hh_l0, True), \
            stack(lambda h: h.gru.bias_hh_l0)[:, None]
        self.w_out, self.b_out = stack(lambda h: h.out.weight, True), \
            stack(lambda h: h.out.bias)[:, None]  # [G, H, 1], [G, 1, 1]

    def steps(self, vectors: Tensor, hidden: Tensor | None) -> tuple[Tensor, Tensor]:
        """More of one turn ``[f, D]`` (f >= 1) from the heads' states after the turn before
        (``[G, 1, H]``; None: the start) -> (each head's logit after them ``[G]``, their
        states ``[G, 1, H]``)."""
        x = nn.functional.layer_norm(vectors, vectors.shape[-1:], eps=self.eps)
        x = torch.tanh(torch.baddbmm(self.b_proj, x * self.gamma + self.beta, self.w_proj))
        gates_in = torch.baddbmm(self.b_ih, x, self.w_ih)  # [G, f, 3H]
        h = x.new_zeros(len(self.heads), 1, x.shape[-1]) if hidden is None else hidden
        for t in range(x.shape[1]):
            in_r, in_z, in_n = gates_in[:, t:t + 1].chunk(3, dim=-1)
            h_r, h_z, h_n = torch.baddbmm(self.b_hh, h, self.w_hh).chunk(3, dim=-1)
            r, z = torch.sigmoid(in_r + h_r), torch.sigmoid(in_z + h_z)
            h = (1 - z) * torch.tanh(in_n + r * h_n) + z * h
        return self.logits(h), h

    def logits(self, hidden: Tensor) -> Tensor:
        """The heads' logits ``[G]`` at their states ``[G, 1, H]``."""
        return torch.baddbmm(self.b_out, hidden, self.w_out)[:, 0, 0]


def pad_rows(sequences: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Rows ``[F]`` (tokens) or ``[F, D]`` (vectors) of any length -> (``[B, F]`` or
    ``[B, F, D]`` right-padded with 0, lengths ``[B]``)."""
    lengths = torch.tensor([max(1, len(s)) for s in sequences])
    first = sequences[0]
    rows = torch.zeros(len(sequences), int(lengths.max()), *first.shape[1:], dtype=first.dtype)
    for i, s in enumerate(sequences):
        rows[i, :len(s)] = s
    return rows, lengths


def head_inputs(rows: list[Tensor], table: Tensor) -> tuple[Tensor, Tensor]:
    """Token rows ``[F]`` (looked up in ``table [N, D]``) or vector rows ``[F, D]`` ->
    the head's vectors ``[B, F, D]`` (right-padded) and lengths ``[B]``."""
    padded, lengths = pad_rows(rows)
    return (table[padded] if padded.dim() == 2 else padded.float()), lengths


@dataclass
class EndOfTurnState:
    semantic: object  # the tokenizer's SemanticStreamState
    rows: list[Tensor]  # [1, f, pool_frames, 384] encoder frames of the tokens so far
    # gru heads: each group's states after those tokens ([G, 1, H]; None before any),
    # updated as blocks come, so a pause runs the heads over the flushed tail only
    hidden: list[Tensor] | None = None


class EndOfTurn:
    """Tokenizer + codebook table + head(s): one set of weights for every stream."""

    def __init__(self, tokenizer, heads: EndOfTurnHead | list[EndOfTurnHead]) -> None:
        self.tokenizer = tokenizer
        self.heads = [h.eval() for h in ([heads] if isinstance(heads, EndOfTurnHead)
                                         else heads)]
        self.table = tokenizer.codebook_vectors()  # [N, D]
        self.inputs = sorted({h.config.inputs for h in self.heads})
        self.streams_heads = all(h.config.arch == "gru" for h in self.heads)
        self.groups = [GruGroup([h for h in self.heads if h.config.inputs == inputs])
                       for inputs in self.inputs] if self.streams_heads else []

    @torch.no_grad()
    def probabilities(self, views: dict[str, list[Tensor]]) -> Tensor:
        """Rows of every input the heads hear (``views[inputs]``: token rows ``[F]`` for
        ``codes``, vector rows ``[F, D]`` otherwise) -> P(finished) ``[B]``: the sigmoid
        of the heads' mean logit."""
        logits = [h(*head_inputs(views[h.config.inputs], self.table)) for h in self.heads]
        return torch.sigmoid(torch.stack(logits).mean(0))

    def views(self, frames: Tensor) -> dict[str, list[Tensor]]:
        """One turn's encoder frames ``[F, pool_frames, 384]`` -> its row of each input the
        heads hear (``probabilities``' argument)."""
        views = {}
        if "encoder" in self.inputs:
            views["encoder"] = [frames.mean(1)]
        if {"codes", "pooled"} & set(self.inputs):
            pooled = self.tokenizer.pool_groups(frames[None])  # [1, F, D]
            views["pooled"] = [pooled[0]]
            if "codes" in self.inputs:
                views["codes"] = [self.tokenizer.quantize(pooled)[0]]
        return views

    def init_state(self) -> EndOfTurnState:
        return EndOfTurnState(self.tokenizer.init_state(1), [])

    @torch.no_grad()
    def push(self, state: EndOfTurnState, wav_16k: Tensor) -> None:
        """More of the turn's audio ``[T]`` at 16 kHz (tokens come a block at a time)."""
        row = self.tokenizer.step(state.semantic, wav_16k[None], "frames")
        state.rows.append(row)
        if self.streams_heads and row.shape[1]:
            state.hidden = self._gru_steps(row[0], state.hidden)[1]

    @torch.no_grad()
    def probability(self, state: EndOfTurnState) -> float:
        """P(finished) of the turn so far: its rows and those a flush would add now,
        computed on a snapshot (the stream's fields are replaced, never changed in place,
        so a shallow copy is one). ``gru`` heads go on from their states over the tail
        only; others hear the whole turn again."""
        snapshot = copy.copy(state.semantic)
        snapshot.encoder = copy.copy(state.semantic.encoder)
        tail = self.tokenizer.flush(snapshot, "frames")
        if self.streams_heads and (tail.shape[1] or state.hidden is not None):
            if tail.shape[1]:
                logits = self._gru_steps(tail[0], state.hidden)[0]
            else:  # nothing since the last block: each head's output there
                logits = torch.cat([g.logits(h) for g, h in zip(self.groups, state.hidden,
                                                                 strict=True)])
            return float(torch.sigmoid(logits.mean()))
        frames = torch.cat([*state.rows, tail], dim=1)[0]
        return float(self.probabilities(self.views(frames))[0])

    def _gru_steps(self, frames: Tensor, hidden: list[Tensor] | None
                   ) -> tuple[Tensor, list[Tensor]]:
        """Every gru head over more frames ``[f, pool_frames, 384]`` of one turn, from
        ``hidden`` (one per group; None: the turn's start) -> (every head's logit ``[N]``,
        each group's states)."""
        views = self.views(frames)
        hidden = hidden or [None] * len(self.groups)
        out = [g.steps(head_inputs(views[g.inputs], self.table)[0][0], h)
               for g, h in zip(self.groups, hidden, strict=True)]
        return torch.cat([logits for logits, _ in out]), [h for _, h in out]


def save_end_of_turn(heads: EndOfTurnHead | list[EndOfTurnHead], folder: str | Path,
                     card: str | None = None) -> Path:
    """Write config.json and a float16 model.safetensors of one head or of several (an
    average of their logits; their configs under ``members``) atomically into ``folder``."""
    if isinstance(heads, EndOfTurnHead):
        return save_model_folder(folder, heads.state_dict(), heads.config.to_json(), card)
    first = heads[0].config
    config = {"kind": first.kind, "semantic": first.semantic,
              "semantic_sha256": first.semantic_sha256,
              "members": [h.config.to_json() for h in heads]}
    state = {f"members.{i}.{k}": v for i, h in enumerate(heads)
             for k, v in h.state_dict().items()}
    return save_model_folder(folder, state, config, card)


def load_heads(folder: str | Path) -> list[EndOfTurnHead]:
    """The head(s) of a model folder: one, or every member of an average."""
    data, weights = load_model_folder(folder, "an end-of-turn model",
                                      "voxloop distill end-of-turn", kind=END_OF_TURN_KIND)
    if "members" not in data:
        head = EndOfTurnHead(EndOfTurnConfig.from_json(data))
        head.load_state_dict(weights)
        return [head]
    heads = []
    for i, member in enumerate(data["members"]):
        head = EndOfTurnHead(EndOfTurnConfig.from_json(member))
        prefix = f"members.{i}."
        head.load_state_dict({k[len(prefix):]: v for k, v in weights.items()
                              if k.startswith(prefix)})
        heads.append(head)
    return heads


def load_end_of_turn(name_or_dir: str | Path) -> EndOfTurn:
    """An end-of-turn model (bundled name or folder) with the tokenizer it was trained on;
    a tokenizer whose weights changed since is a clear error."""
    from voxloop.codecs.semantic_tokens import find_semantic, load_semantic_model

    folder = find_model(name_or_dir, "end-of-turn model", marker="model.safetensors",
                        config_kinds=(END_OF_TURN_KIND,))
    heads = load_heads(folder)
    config = heads[0].config
    semantic = find_semantic(config.semantic)
    sha = weights_sha256(semantic)
    other = next((h for h in heads if h.config.semantic_sha256 not in ("", sha)), None)
    if other is not None:
        raise VoxloopError(f"{folder} was trained on the tokens of a semantic tokenizer with "
                           f"sha256 {other.config.semantic_sha256[:12]}, but {semantic} has "
                           f"{sha[:12]}: retrain it (voxloop distill end-of-turn)")
    return EndOfTurn(load_semantic_model(semantic), heads)
