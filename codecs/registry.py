"""Load a codec by name or folder: the bundled compact codec, EnCodec 24 kHz, or a run."""

from __future__ import annotations

import warnings
from pathlib import Path

from voxloop.codecs.config import CodecConfig
from voxloop.codecs.decoder_config import SEANET
from voxloop.codecs.decoder_io import decoder_folder, load_frame_decoder, resolve_decoder
from voxloop.codecs.float16_linear import pack_float16_linears
from voxloop.codecs.io import load_codec_folder, new_codec
from voxloop.codecs.model import NeuralCodec
from voxloop.errors import VoxloopError
from voxloop.models import DEFAULT_CODEC, find_model

ENCODEC_24KHZ = "encodec_24khz"
ENCODEC_24KHZ_CONFIG = CodecConfig(
    sample_rate_hz=24000, ratios=(8, 5, 4, 2), n_filters=32, dimension=128, lstm_layers=2,
    num_codebooks=8, cardinality=1024, pad_mode="reflect", true_skip=False, kind=ENCODEC_24KHZ,
)  # 75 Hz x 8 codebooks x 10 bits = 6 kbps
CODEC_KINDS = (CodecConfig.__dataclass_fields__["kind"].default, ENCODEC_24KHZ)  # config kinds
ENCODEC_24KHZ_FILE = "encodec_24khz-d7cc33bc.th"  # the encodec package's checkpoint name


def wrap_encodec(model) -> NeuralCodec:
    """Our offline/streaming interface around an ``encodec.EncodecModel`` (24 kHz)."""
    return NeuralCodec(model.encoder, model.quantizer, model.decoder, ENCODEC_24KHZ_CONFIG,
                       name=ENCODEC_24KHZ).eval()


def load_encodec_24khz(repository: str | Path | None = None,
                       pretrained: bool = True) -> NeuralCodec:
    """EnCodec's pretrained causal 24 kHz model through the encodec package's own loader.

    It downloads the weights (into torch's hub cache, where a copy put there is used
    offline) unless ``repository`` is a folder holding ``ENCODEC_24KHZ_FILE`` (which
    ``load_codec`` takes for a codec folder). ``pretrained=False`` gives the same
    architecture with random weights (for tests).
    """
    from encodec import EncodecModel

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = EncodecModel.encodec_model_24khz(
                pretrained=pretrained, repository=Path(repository) if repository else None)
    except (OSError, ValueError, RuntimeError) as exc:  # URLError is an OSError
        import torch

        where = f"from {repository}" if repository else "(needs the internet)"
        raise VoxloopError(
            f"cannot load EnCodec's pretrained 24 kHz weights {where}: {exc}. Offline, use the "
            f"bundled compact codec (--codec {DEFAULT_CODEC}), or put {ENCODEC_24KHZ_FILE} "
            "in a folder and pass that folder as the codec (--codec FOLDER), or in "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'}, where {ENCODEC_24KHZ} finds it."
        ) from exc
    return wrap_encodec(model)


def encodec_repository(name_or_dir: str) -> Path | None:
    """``name_or_dir`` as a folder holding EnCodec's 24 kHz checkpoint, else None."""
    folder = Path(name_or_dir)
    return folder if (folder / ENCODEC_24KHZ_FILE).is_file() else None


def codec_folder(name_or_dir: str) -> Path:
    """The folder of a codec given by path or bundled name (not a student's or tokenizer's)."""
    return find_model(name_or_dir, "codec", marker="model.safetensors",
                      config_kinds=CODEC_KINDS)


def codec_sha256(name_or_dir: str) -> str | None:
    """sha256 of a codec folder's weights (None: a pretrained codec with no folder here,
    ``encodec_24khz``), what codes record to say which weights made them."""
    from voxloop.models import weights_sha256

    try:
        return weights_sha256(codec_folder(name_or_dir))
    except VoxloopError:
        return None


def load_codec(name_or_dir: str = DEFAULT_CODEC, decoder: str = "auto",
               float16_linears: bool = True) -> NeuralCodec:
    """``encodec_24khz``, a bundled model name under ``models/``, or a codec folder; for
    inference (weight norm folded, a frame decoder's linear layers packed as float16:
    use ``load_codec_folder`` for a codec to train).

    ``decoder``: ``seanet`` (the codec's own), a trained decoder the codec folder ships
    (``assistant``, ``general``), a decoder folder, or ``auto`` / ``answers`` (the best
    shipped one for any voice / for the assistant's voice: ``decoder_io``).
    ``float16_linears=False`` keeps a frame decoder's linear layers in float32 (the same
    audio within ~1e-6, slower: for measuring what the packing saves)."""
    repository = encodec_repository(name_or_dir)
    if name_or_dir == ENCODEC_24KHZ or repository is not None:
        if decoder not in ("auto", "answers", SEANET):
            raise VoxloopError(f"{ENCODEC_24KHZ} has only its own decoder, not {decoder!r}")
        return load_encodec_24khz(repository).fold_weight_norm()
    try:
        folder = codec_folder(name_or_dir)
    except VoxloopError as exc:
        raise VoxloopError(f"{exc}, or {ENCODEC_24KHZ}") from None
    codec = load_codec_folder(folder).fold_weight_norm()
    name = resolve_decoder(folder, decoder)
    if name == SEANET:
        return codec
    frame_decoder = load_frame_decoder(decoder_folder(folder, name))
    fits = (frame_decoder.hop_samples, frame_decoder.config.latent_dim,
            frame_decoder.config.sample_rate_hz) == (codec.hop, codec.config.dimension,
                                                     codec.sample_rate) \
        and frame_decoder.config.num_codebooks >= codec.num_codebooks
    if not fits:
        raise VoxloopError(f"decoder {name} does not fit codec {codec.name}: hop "
                           f"{frame_decoder.hop_samples} vs {codec.hop}, latent "
                           f"{frame_decoder.config.latent_dim} vs {codec.config.dimension}, "
                           f"{frame_decoder.config.sample_rate_hz} vs {codec.sample_rate} Hz, "
                           f"{frame_decoder.config.num_codebooks} codebooks for "
                           f"{codec.num_codebooks}")
    if float16_linears:  # its float16 weights read as such: a streamed frame 1.2-1.3x faster
        pack_float16_linears(frame_decoder)
    return codec.use_decoder(name, frame_decoder)


def random_codec(config: CodecConfig) -> NeuralCodec:
    """A codec with random weights and initialized codebooks: for tests and benchmarks."""
    return randomize_codebooks(new_codec(config, name="random")).eval()


def randomize_codebooks(codec: NeuralCodec) -> NeuralCodec:
    """Mark every codebook initialized with Gaussian codes (no k-means on a first batch)."""
    import torch

    for layer in codec.quantizer.vq.layers:
        layer._codebook.inited.fill_(1)
        layer._codebook.embed.copy_(torch.randn_like(layer._codebook.embed))
    return codec
