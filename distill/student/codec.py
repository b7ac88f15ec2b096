"""The codec a student speaks through: the one its training codes came from."""

from __future__ import annotations


def load_student_codec(name: str | None, vocab: dict, decoder: str = "answers"):
    """The codec named, else the one the model's training codes came from, decoding with
    ``decoder`` (``load_codec``'s names; ``answers``: the one trained on the assistant's
    voice where the codec ships it); warns when its weights are not the ones those codes
    were made with."""
    import warnings

    from voxloop.codecs.registry import codec_sha256, load_codec
    from voxloop.models import DEFAULT_CODEC

    trained_with = vocab.get("codec", {})
    codec = load_codec(name or trained_with.get("name") or DEFAULT_CODEC, decoder=decoder)
    sha = codec_sha256(codec.name)
    if trained_with.get("sha256") and sha and sha != trained_with["sha256"]:
        warnings.warn(f"codec {codec.name} has other weights ({sha[:12]}) than the "
                      f"codes the student learned ({trained_with['sha256'][:12]}): its speech "
                      "will decode badly; retrain the student on recoded data", stacklevel=2)
    return codec
