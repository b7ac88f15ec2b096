"""The audio-native student: one decoder-only transformer over codec and text tokens.

One sequence per dialogue turn (``layout.build_sequence`` builds it, ``pack.make_batch``
batches it):

    user frames (K_in codebooks, summed embeddings) | <sep> | answer words | <eot> |
    assistant frames with a delay pattern over K_out codebooks ... <eos>

Every position carries ``C = config.channels`` input ids (``max(K_in, K_out)``, two more
with the word pointer) into one shared embedding table
(unused channels hold ``null_id``, whose row is zero), so user frames, text
tokens and delayed audio frames all enter through one gather and a sum. With
``user_latent_dim`` set, user codes instead enter as the codec's latent: the
codec's codebook vectors (a frozen buffer, ``set_user_codebooks``), summed over
the ``K_in`` codebooks and projected to the model width. A semantic student
(``user_input="semantic"``) hears one semantic token per user frame the same way:
``K_in = 1``, the buffer holds the tokenizer's codebook ``[N, D]`` (with residual levels,
``distill.student.residual_levels``: ``K_in = 1 + levels``, their books after it, heard at
``residual_weight``) (saved with the model, so it answers exactly what it was trained on
whatever the tokenizer file becomes; ``vocab.json``'s tokenizer fingerprint says which).
Heads: ``text`` (next answer word), ``audio`` (K_out parallel codebook heads,
code 1024 is EOS on codebook 0) and ``ctc`` (the user's words, text1, over the
user-frame positions; an auxiliary loss that teaches recognition). A word-pointer
student (``layout``) also has a ``boundary`` logit beside the audio heads: the next frame
starts the next answer word. A student with a ``mouth`` (``voxloop distill mouth``) says
its words with it instead of the audio heads: every frame at once from the whole answer,
no frame fed back (``mouth.py``).

Blocks: RMSNorm, grouped-query attention with rotary positions, SwiGLU. The KV
cache is an explicit dataclass with one length per row, so rows of different
lengths (sessions) run as one batch; ``forward(ids, cache, n_new)`` appends
``n_new[b]`` positions to row ``b`` and serves training (no cache), chunked
prefill and single steps with one code path.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from voxloop.distill.student.audio_intents import load_audio_intents
from voxloop.distill.student.config import (
    CODEBOOK_SIZE,
    WORD_FRAMES_MAX,
    MouthConfig,
    StudentConfig,
)
from voxloop.distill.student.heard_intents import load_heard_intents
from voxloop.models import find_model, load_model_folder, save_model_folder

AUDIO_SPECIAL = CODEBOOK_SIZE  # input: "no code at this step"; output on codebook 0: EOS


@dataclass
class KVCache:
    """Keys and values of every layer, one length per row.

    ``keys[i]``, ``values[i]``: ``[B, capacity + 1, H_kv, D]``; ``lengths``: ``[B]``
    int64, how many positions of each row are filled (also the rotary position
    of the row's next token). The last slot is scratch: a batched call's padding past a
    row's end is written there, never over a position the row holds.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    lengths: torch.Tensor

    @classmethod
    def empty(cls, config: StudentConfig, batch: int, capacity: int | None = None,
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> KVCache:
        cap = capacity or config.max_len
        shape = (batch, cap + 1, config.n_kv_heads, config.head_dim)
        return cls([torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)],
                   [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)],
                   torch.zeros(batch, dtype=torch.long, device=device))

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[1] - 1  # the scratch slot holds no position

    def rows(self, rows: list[int]) -> KVCacheRows:
        """Some rows as a cache of their own that shares this one's storage (no copy):
        continuous batching runs the sessions that have work on one model call."""
        return KVCacheRows(self, torch.as_tensor(rows, dtype=torch.long,
                                                 device=self.lengths.device))

    def write(self, layer: int, positions: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor) -> None:
        """Store ``k, v [B, T, H_kv, D]`` at ``positions [B, T]``."""
        rows = torch.arange(len(positions), device=positions.device)[:, None]
        self.keys[layer][rows, positions] = k.to(self.keys[layer].dtype)
        self.values[layer][rows, positions] = v.to(self.values[layer].dtype)

    def read(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of positions ``0..end-1``: ``[B, end, H_kv, D]`` each."""
        return self.keys[layer][:, :end], self.values[layer][:, :end]


@dataclass
class KVCacheRows:
    """A view of some rows of a :class:`KVCache`: reads and writes go to the parent."""

    parent: KVCache
    index: torch.Tensor  # [B] row numbers in the parent

    @property
    def capacity(self) -> int:
        return self.parent.capacity

    @property
    def lengths(self) -> torch.Tensor:
        return self.parent.lengths[self.index]

    @lengths.setter
    def lengths(self, value: torch.Tensor) -> None:
        self.parent.lengths[self.index] = value

    def write(self, layer: int, positions: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor) -> None:
        rows = self.index[:, None]
        self.parent.keys[layer][rows, positions] = k.to(self.parent.keys[layer].dtype)
        self.parent.values[layer][rows, positions] = v.to(self.parent.values[layer].dtype)

    def read(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.parent.keys[layer][self.index, :end],
                self.parent.values[layer][self.index, :end])


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary_tables(config: StudentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[max_len, head_dim / 2]``."""
    half = config.head_dim // 2
    inv_freq = 1.0 / config.rope_theta ** (torch.arange(half, dtype=torch.float32) / half)
    angles = torch.arange(config.max_len, dtype=torch.float32)[:, None] * inv_freq[None]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x [B, T, H, D]``, ``cos``/``sin`` ``[B, T, 1, D/2]``: rotate pairs (x1, x2)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.type_as(x)


class Attention(nn.Module):
    """Grouped-query attention: ``n_heads`` queries share ``n_kv_heads`` keys/values."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.q = nn.Linear(c.d_model, c.n_heads * c.head_dim, bias=False)
        self.kv = nn.Linear(c.d_model, 2 * c.n_kv_heads * c.head_dim, bias=False)
        self.out = nn.Linear(c.n_heads * c.head_dim, c.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layer: int,
                cache: KVCache | KVCacheRows | None, positions: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """``x [B, T, C]`` at ``positions [B, T]`` -> ``[B, T, C]``; ``mask [B, 1, T, S]``
        (which of the first ``S`` cached keys each query sees) when there is a cache."""
        c = self.config
        batch, steps, _ = x.shape
        q = self.q(x).view(batch, steps, c.n_heads, c.head_dim)
        k, v = self.kv(x).view(batch, steps, 2, c.n_kv_heads, c.head_dim).unbind(2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:  # write this chunk's keys, then read the row's whole past
            cache.write(layer, positions, k, v)
            k, v = (t.to(q.dtype) for t in cache.read(layer, mask.shape[-1]))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=True,
            dropout_p=c.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(batch, steps, c.n_heads * c.head_dim))


class SwiGLU(nn.Module):
    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        hidden = int(config.ffn_mult * config.d_model) // 32 * 32
        self.gate_up = nn.Linear(config.d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.attn_norm, self.ffn_norm = RMSNorm(config.d_model), RMSNorm(config.d_model)
        self.attn, self.ffn = Attention(config), SwiGLU(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, layer, cache, positions, mask):
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, layer, cache, positions, mask))
        return x + self.drop(self.ffn(self.ffn_norm(x)))


@dataclass
class StudentOutput:
    """Logits: ``text [B, T, V_text]``, ``audio [B, T, K_out, 1025]``, ``ctc [B, T, V_ctc]``,
    ``boundary [B, T]`` (with the audio heads of a word-pointer student; None for a head
    not asked for)."""

    text: torch.Tensor | None
    audio: torch.Tensor | None
    ctc: torch.Tensor | None
    boundary: torch.Tensor | None = None


class Student(nn.Module):
    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.n_embeddings, c.d_model, padding_idx=c.null_id)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.d_model)
        self.text_head = nn.Linear(c.d_model, c.text_vocab, bias=False)
        self.audio_head = nn.Linear(c.d_model, c.k_out * (CODEBOOK_SIZE + 1), bias=False)
        self.ctc_head = nn.Linear(c.d_model, c.ctc_vocab)
        self.boundary_head = nn.Linear(c.d_model, 1) if c.word_pointer else None
        self.word_frame_embed = None  # frame within the spoken word (a word-pointer student)
        if c.word_pointer:
            self.word_frame_embed = nn.Embedding(WORD_FRAMES_MAX + 1, c.d_model,
                                                 padding_idx=WORD_FRAMES_MAX)
        self.mouth = None  # says the answer's words all at once (distill/student/mouth.py)
        if c.mouth_d_model:
            from voxloop.distill.student.mouth import Mouth

            self.mouth = Mouth(MouthConfig(text_vocab=c.text_vocab, k_out=c.k_out,
                                           d_model=c.mouth_d_model))
        self.user_proj = None
        if c.user_latent_dim:
            self.register_buffer("user_codebooks",
                                 torch.zeros(c.k_in * c.user_vocab, c.user_latent_dim))
            self.user_proj = nn.Linear(c.user_latent_dim, c.d_model, bias=False)
        cos, sin = rotary_tables(c)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        for name, module in self.named_children():
            if name != "mouth":  # the mouth keeps torch's own initialization
                module.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2 scaled init of residual projections
            if name.endswith(("attn.out.weight", "ffn.down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * c.n_layers))

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def set_user_codebooks(self, source) -> None:
        """Copy the first ``K_in`` codebooks of ``source`` (a ``NeuralCodec``), or the
        vectors ``[K_in * user_vocab, D]`` themselves (a semantic tokenizer's codebook),
        into the user-latent buffer; it is saved with the model from then on."""
        books = torch.as_tensor(source) if not hasattr(source, "codebook_vectors") else \
            torch.cat(source.codebook_vectors(self.config.k_in))
        books = books.detach().to(self.user_codebooks)
        if books.shape != self.user_codebooks.shape:
            raise ValueError(f"the codec's codebooks are {tuple(books.shape)}, the student "
                             f"expects {tuple(self.user_codebooks.shape)}")
        self.user_codebooks.copy_(books)

    def embed_inputs(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids [B, T, C]`` -> ``[B, T, d_model]``: the sum of each position's inputs."""
        frame = None
        if self.word_frame_embed is not None:  # its own table: 0 .. WORD_FRAMES_MAX - 1
            ids, frame = ids[..., :-1], ids[..., -1].clamp(max=WORD_FRAMES_MAX)
        x = self._embed_tokens(ids)
        return x if frame is None else x + self.word_frame_embed(frame)

    def _embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        if self.user_proj is None:
            return x.sum(dim=2)
        user = ids < self.config.text_offset  # [B, T, C]
        latent = self.user_codebooks[ids.clamp(max=self.config.text_offset - 1)]
        heard = user.to(latent.dtype)
        if self.config.residual_weight:  # a semantic student's residual levels, weighted
            heard[..., 1:self.config.k_in] *= self.config.residual_weight
        latent = (latent * heard[..., None]).sum(dim=2)  # [B, T, D]
        return x.masked_fill(user[..., None], 0.0).sum(dim=2) + self.user_proj(latent)

    def forward(self, ids: torch.Tensor, cache: KVCache | KVCacheRows | None = None,
                n_new: torch.Tensor | None = None,
                heads: tuple[str, ...] = ("text", "audio", "ctc")) -> StudentOutput:
        """``ids [B, T, C]`` (embedding-table ids) -> logits for every position.

        Without ``cache``: one causal pass over positions ``0..T-1``. With it:
        row ``b``'s ``T`` positions start at ``cache.lengths[b]`` and the row
        advances by ``n_new[b]`` (default ``T``); positions past ``n_new[b]``
        are padding whose outputs mean nothing and whose cache slots get
        overwritten later. Only the ``heads`` asked for are computed (prefill
        needs none).
        """
        batch, steps, _ = ids.shape
        start = cache.lengths if cache is not None else torch.zeros(
            batch, dtype=torch.long, device=ids.device)
        positions = start[:, None] + torch.arange(steps, device=ids.device)[None]
        limit = cache.capacity if cache is not None else self.config.max_len
        real = positions < start[:, None] + (n_new[:, None] if n_new is not None else steps)
        if bool((positions >= limit)[real].any()):
            raise ValueError(f"sequence longer than {limit} positions")
        # padding past the end: its outputs mean nothing, its keys go to the scratch slot
        positions = positions.clamp(max=limit)
        rotary = positions.clamp(max=self.config.max_len - 1)
        cos, sin = self.rope_cos[rotary][:, :, None], self.rope_sin[rotary][:, :, None]
        mask = None
        if cache is not None:
            key_pos = torch.arange(int(positions.max()) + 1, device=ids.device)
            mask = (key_pos[None, None, :] <= positions[:, :, None])[:, None]  # [B, 1, T, S]
        x = self.embed_inputs(ids)
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, layer, cache, positions, mask)
        if cache is not None:
            cache.lengths = cache.lengths + (n_new if n_new is not None else steps)
        x = self.norm(x) if heads else x
        audio = boundary = None
        if "audio" in heads:
            audio = self.audio_head(x).view(batch, steps, self.config.k_out, CODEBOOK_SIZE + 1)
            if self.boundary_head is not None:
                boundary = self.boundary_head(x)[..., 0]
        return StudentOutput(self.text_head(x) if "text" in heads else None, audio,
                             self.ctc_head(x) if "ctc" in heads else None, boundary)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def save_student(model: Student, vocab: dict, folder: str | Path, card: str | None = None,
                 dtype: torch.dtype = torch.float16, say: bool = True) -> Path:
    """``folder/config.json``, ``model.safetensors`` (``dtype``), ``vocab.json`` [, README.md],
    and with a mouth that remembers answers ``said_codes.safetensors`` (their codes, said
    from the saved weights: ``said_codes.py``; ``say`` False: none, for a caller that keeps
    another table, ``carry_said_codes``). Intents heads in ``folder`` (of another student)
    are removed: ``mouth_files.with_measured_heads`` carries a source's over. A semantic
    student's tokenizer is named by its bundled name when one has its weights."""
    from voxloop.distill.student.mouth_files import HEAD_FILES
    from voxloop.distill.student.said_codes import SAID_CODES_FILE, write_said_codes
    from voxloop.distill.student.user_tokens import bundled_name

    vocab = bundled_name(vocab)
    config = {"kind": "voxloop-student", **asdict(model.config)}
    folder = save_model_folder(folder, model.state_dict(), config, card, dtype,
                               files={"vocab.json": json.dumps(vocab, indent=1) + "\n"})
    for name in HEAD_FILES:  # an older student's in the folder: trained on other weights
        (folder / name).unlink(missing_ok=True)
    if say:
        write_said_codes(folder)  # its mouth's remembered answers, said as they will load
    else:
        (folder / SAID_CODES_FILE).unlink(missing_ok=True)  # a table of other weights
    return folder


def student_folder(name_or_dir: str | Path) -> Path:
    """The folder of a ``save_student`` student given as a path or a bundled name."""
    return find_model(name_or_dir, "student model", made_by="`voxloop distill export`",
                      marker="vocab.json")


def load_student(name_or_dir: str | Path, device: str = "cpu") -> tuple[Student, dict]:
    """The model (float32, eval mode) and its vocabulary from a ``save_student`` folder or a
    bundled student's name."""
    folder = student_folder(name_or_dir)
    raw, weights = load_model_folder(folder, "a student model", "voxloop distill train")
    raw.pop("kind", None)
    model = Student(StudentConfig(**raw))
    model.load_state_dict(weights)
    if model.mouth is not None:
        from voxloop.distill.student.said_codes import load_said_codes

        model.mouth.said_codes = load_said_codes(folder)
    model.heard_intents = load_heard_intents(folder)  # beside the weights, not among them:
    object.__setattr__(model, "audio_intents", load_audio_intents(folder, model))  # no child
    vocab = json.loads((folder / "vocab.json").read_text())
    return model.to(device).eval(), vocab
