"""Settings of the codec and its training: plain dataclasses, no torch import."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class CodecConfig:
    """Architecture of a SEANet + RVQ codec; saved as config.json next to the weights."""

    sample_rate_hz: int = field(default=16000, metadata={"help": "audio sample rate"})
    ratios: tuple[int, ...] = field(default=(8, 5, 4, 4), metadata={
        "help": "up-sampling ratios of the decoder; hop = their product"})
    n_filters: int = field(default=24, metadata={"help": "base channel width"})
    dimension: int = field(default=128, metadata={"help": "latent size per frame"})
    lstm_layers: int = field(default=1, metadata={"help": "LSTM layers at the bottleneck"})
    num_codebooks: int = field(default=8, metadata={"help": "RVQ codebooks (K)"})
    cardinality: int = field(default=1024, metadata={"help": "codes per codebook"})
    pad_mode: str = field(default="constant", metadata={"cli": False})  # encodec: "reflect"
    true_skip: bool = field(default=True, metadata={"cli": False})
    kind: str = field(default="seanet-rvq", metadata={"cli": False})

    @property
    def hop_samples(self) -> int:
        return math.prod(self.ratios)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> CodecConfig:
        data = dict(data)
        data["ratios"] = tuple(data["ratios"])
        return cls(**data)


@dataclass(frozen=True)
class CodecTrainSettings:
    corpus: str = field(default="data/codec-corpus", metadata={"help": "corpus folder"})
    out: str = field(default="runs/codec", metadata={"help": "run folder (checkpoints, logs)"})
    steps: int = field(default=6000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "segments per step per process"})
    segment_s: float = field(default=1.0, metadata={"help": "training segment length"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    warmup_steps: int = field(default=200, metadata={"help": "linear warm-up steps"})
    ckpt_every: int = field(default=200, metadata={"help": "checkpoint interval in steps"})
    eval_every: int = field(default=500, metadata={"help": "held-out loss interval"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: all cores)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    quantizer_dropout: bool = field(default=True, metadata={
        "help": "train with a random number of codebooks so fewer also decode well"})
    adversarial: bool = field(default=True, metadata={
        "help": "add encodec's MS-STFT discriminator: hinge + feature-matching losses"})
    adversarial_weight: float = field(default=0.1, metadata={
        "help": "weight of the generator's hinge loss (mel loss has weight 1)"})
    feature_weight: float = field(default=1.0, metadata={
        "help": "weight of the discriminator feature-matching loss"})
    adversarial_start_step: int = field(default=0, metadata={
        "help": "the generator ignores the discriminator before this step (it trains already)"})
    init_from: str = field(default="", metadata={
        "help": "fine-tune: start from this codec folder or checkpoint.pt (fresh run only)"})
    device: str = field(default="auto", metadata={
        "help": "cpu, cuda, or auto (cuda when available)", "choices": ("auto", "cpu", "cuda")})
    precision: str = field(default="auto", metadata={
        "help": "fp32 (TF32 on GPU), bf16 autocast, or auto (bf16 on cuda, fp32 on cpu)",
        "choices": ("auto", "fp32", "bf16")})
    time_budget_s: float = field(default=0.0, metadata={
        "help": "if > 0: after 20 timed steps, shrink --steps to end within this wall time "
                "(the chosen total is kept in the checkpoint, so resuming stays exact)"})
