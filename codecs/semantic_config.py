"""Settings of the semantic tokenizer and its training: plain dataclasses, no torch import
(the command line is built from them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from voxloop.models import BUNDLED_WHISPER_SHA256

ENCODER_RATE_HZ = 50.0
SEMANTIC_KIND = "whisper-tiny-en-vq"
CTC_VOCAB = " abcdefghijklmnopqrstuvwxyz'"  # index 0 is CTC's blank, so char i is i + 1


@dataclass(frozen=True)
class SemanticConfig:
    """Architecture of the semantic tokenizer; saved as its config.json."""

    frame_rate_hz: float = field(default=25.0, metadata={
        "help": "token rate (the student's frame rate)", "choices": (25.0, 12.5)})
    block_ms: int = field(default=1000, metadata={
        "help": "block of block-causal attention (tokens come out block by block); "
                "a divisor of 30 s in 20 ms frames"})
    pooling: str = field(default="conv", metadata={
        "help": "50 Hz -> frame rate: mean of the frames or a strided linear layer (conv)",
        "choices": ("mean", "conv")})
    hidden_dim: int = field(default=512, metadata={"help": "pooler MLP width"})
    code_dim: int = field(default=256, metadata={"help": "codebook vector size"})
    codebook_size: int = field(default=1024, metadata={"help": "tokens (one codebook)"})
    quantizer: str = field(default="ema", metadata={
        "help": "ema: encodec's Euclidean EMA k-means codebook; cosine: nearest code by "
                "cosine in a small learned lookup space (semantic_vq)",
        "choices": ("ema", "cosine")})
    lookup_dim: int = field(default=16, metadata={
        "help": "cosine quantizer: size of the lookup space"})
    vq_decay: float = field(default=0.99, metadata={
        "help": "codebook EMA decay (ema: the codes; cosine: each code's use count)"})
    dead_code_threshold: float = field(default=0.05, metadata={
        "help": "restart a code whose EMA count per batch falls below this"})
    commitment_weight: float = field(default=0.25, metadata={"help": "VQ commitment loss"})
    head_dim: int = field(default=256, metadata={"help": "CTC head width (training only)"})
    ctc_rate_hz: float = field(default=50.0, metadata={
        "help": "CTC output rate: each token predicts ctc_rate / frame_rate characters"})
    whisper_sha256: str = field(default=BUNDLED_WHISPER_SHA256, metadata={"cli": False})
    kind: str = field(default=SEMANTIC_KIND, metadata={"cli": False})

    def __post_init__(self) -> None:
        if ENCODER_RATE_HZ / self.frame_rate_hz not in (2.0, 4.0):
            raise ValueError("frame_rate_hz must be 25 or 12.5 (50 Hz pooled by 2 or 4)")
        if self.block_ms <= 0 or self.block_ms % 20 or 1500 % (self.block_ms // 20):
            raise ValueError("block_ms must be a multiple of 20 ms dividing 30 s (500, 1000)")
        if (self.ctc_rate_hz / self.frame_rate_hz) % 1:
            raise ValueError("ctc_rate_hz must be a multiple of frame_rate_hz")

    @property
    def pool_frames(self) -> int:
        return round(ENCODER_RATE_HZ / self.frame_rate_hz)

    @property
    def block_frames(self) -> int:
        return self.block_ms // 20

    @property
    def ctc_per_token(self) -> int:
        return round(self.ctc_rate_hz / self.frame_rate_hz)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SemanticConfig:
        return cls(**{"quantizer": "ema", **data})  # saved before the cosine quantizer


@dataclass(frozen=True)
class SemanticTrainSettings:
    out: str = field(default="runs/semantic", metadata={"help": "run folder"})
    steps: int = field(default=3000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=16, metadata={"help": "clips per step"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    ckpt_every: int = field(default=250, metadata={"help": "checkpoint interval in steps"})
    eval_every: int = field(default=250, metadata={"help": "held-out evaluation interval"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: leave as is)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    tensorboard: bool = field(default=False, metadata={"help": "log to OUT/tensorboard"})
    vq_start_step: int = field(default=200, metadata={
        "help": "steps of unquantized warm-up before k-means seeds the codebook"})
    kmeans_frames: int = field(default=32768, metadata={
        "help": "pooled frames the codebook's k-means sees (sampled from the training set; "
                "0: the quantizer seeds itself, ema on its first batch)"})
    max_minutes: float = field(default=0.0, metadata={
        "help": "stop this run after so many minutes of training (0: no limit); "
                "it checkpoints and exports, and a later run resumes"})
