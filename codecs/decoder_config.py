"""Settings of the frame-rate decoders and their training: plain dataclasses, no torch import."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

DECODER_KIND = "frame-decoder"
DECODERS_DIR = "decoders"  # inside a codec folder: decoders/NAME/{config.json,model.safetensors}
SEANET = "seanet"  # the codec's own SEANet decoder, always there


@dataclass(frozen=True)
class FrameDecoderConfig:
    """ConvNeXt blocks at the codec's frame rate, upsampled to STFT frames, an inverse-STFT
    head; saved as the decoder's config.json."""

    latent_dim: int = field(default=128, metadata={"help": "the codec's latent size per frame"})
    num_codebooks: int = field(default=8, metadata={"help": "codebooks the decoder accepts"})
    frame_width: int = field(default=384, metadata={"help": "channels of the frame-rate blocks"})
    frame_blocks: int = field(default=6, metadata={"help": "ConvNeXt blocks at the frame rate"})
    upsample: int = field(default=4, metadata={"help": "STFT frames per codec frame"})
    fine_width: int = field(default=256, metadata={"help": "channels of the STFT-rate blocks"})
    fine_blocks: int = field(default=2, metadata={"help": "ConvNeXt blocks at the STFT rate"})
    kernel: int = field(default=7, metadata={"help": "causal depthwise kernel (frames)"})
    mlp_ratio: int = field(default=3, metadata={"help": "hidden size of a block / its width"})
    n_fft: int = field(default=640, metadata={"help": "inverse STFT size (samples)"})
    stft_hop_samples: int = field(default=160, metadata={"help": "inverse STFT hop (samples)"})
    sample_rate_hz: int = field(default=16000, metadata={"cli": False})
    kind: str = field(default=DECODER_KIND, metadata={"cli": False})

    @property
    def hop_samples(self) -> int:
        """Samples per codec frame."""
        return self.upsample * self.stft_hop_samples

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> FrameDecoderConfig:
        return cls(**data)


@dataclass(frozen=True)
class DecoderTrainSettings:
    data: str = field(default="data/decoder-joe", metadata={
        "help": "decoder data folder (`voxloop distill decoder-data`): audio + cached codes"})
    out: str = field(default="runs/decoder-assistant", metadata={
        "help": "run folder (checkpoint.pt, tb/, final/)"})
    codec: str = field(default="voxloop-codec-16k", metadata={
        "help": "the frozen codec whose codes the data holds (its codebooks make the latent)"})
    steps: int = field(default=6000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "segments per step"})
    segment_frames: int = field(default=40, metadata={
        "help": "codec frames per segment (the first one warms up and is not scored)"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    ckpt_minutes: float = field(default=3.0, metadata={
        "help": "write checkpoint.pt at least this often (wall-clock minutes)"})
    eval_every: int = field(default=250, metadata={"help": "held-out loss interval (steps)"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (0: all cores)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    max_minutes: float = field(default=0.0, metadata={
        "help": "if > 0: stop (checkpoint written) after this many wall-clock minutes of "
                "training in all, over resumed runs too; raise it to train on"})
    init_from: str = field(default="", metadata={
        "help": "a decoder folder (e.g. models/voxloop-codec-16k/decoders/assistant) whose "
                "weights start a new run (same architecture); ignored when resuming"})
    k_main: tuple[int, ...] = field(default=(4, 8), metadata={
        "help": "codebook counts drawn more often (what the student and the datasets use)"})
    k_main_fraction: float = field(default=0.7, metadata={
        "help": "share of samples with a K from --k-main; the rest draw K uniformly in 1..8"})
    mel_weight: float = field(default=1.0, metadata={"help": "multi-scale mel loss weight"})
    stft_weight: float = field(default=1.0, metadata={
        "help": "multi-resolution STFT loss weight"})
    whisper_mel_weight: float = field(default=4.0, metadata={
        "help": "L1 on Whisper's own log-mel features (what the judge hears)"})
    whisper_encoder_weight: float = field(default=0.0, metadata={
        "help": "L1 on the frozen Whisper tiny.en encoder's features (0: off)"})
