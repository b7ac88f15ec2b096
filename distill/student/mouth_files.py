"""A mouth file of ``voxloop distill mouth`` (``best.pt`` / ``checkpoint.pt``): read and
checked against a student, and given to it (``distill mouth --export``, ``eval
choose-mouth``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from voxloop.distill.student.audio_intents import FILENAME as AUDIO_INTENTS_FILE
from voxloop.distill.student.config import MouthConfig
from voxloop.distill.student.heard_intents import FILENAME as HEARD_INTENTS_FILE
from voxloop.distill.student.mouth import MOUTH_PREFIX
from voxloop.errors import VoxloopError
from voxloop.training import atomic_write, load_checkpoint

# heads trained on a student's ears and words: a student saved with new weights drops them
HEAD_FILES = (HEARD_INTENTS_FILE, AUDIO_INTENTS_FILE)


def read_mouth(checkpoint: str | Path, student_config, student_name: str | Path
               ) -> tuple[dict, MouthConfig]:
    """A mouth file of ``train_mouth`` and its config, refused unless it says the words and
    codebooks of the student (``student_config``, a ``StudentConfig``)."""
    state = load_checkpoint(checkpoint, "mouth checkpoint")
    config = MouthConfig(**state["config"])
    if (config.text_vocab, config.k_out) != (student_config.text_vocab, student_config.k_out):
        raise VoxloopError(f"{checkpoint} says {config.text_vocab} words in {config.k_out} "
                           f"codebooks; {student_name} writes {student_config.text_vocab} "
                           f"words in {student_config.k_out}")
    return state, config


def give_mouth(student_name: str, checkpoint: str | Path, folder: str | Path) -> Path:
    """Write ``folder``: the student ``student_name`` with the mouth of ``checkpoint`` (a
    ``best.pt``/``checkpoint.pt`` of ``train_mouth``), float16, its card kept, and what was
    measured on its words (the routing thresholds, the heard-intents head) and the audio
    intents head (it reads the user's codes, which a mouth does not change) carried over."""
    from voxloop.distill.student.model import Student, load_student, save_student, student_folder
    from voxloop.models import carried_card

    source = student_folder(student_name)
    student, vocab = load_student(source)
    state, config = read_mouth(checkpoint, student.config, student_name)
    with_mouth = Student(replace(student.config, mouth_d_model=config.d_model))
    if with_mouth.mouth.config != config:
        raise VoxloopError(f"{checkpoint} is a mouth of another shape ({config}) than a "
                           f"student builds ({with_mouth.mouth.config}): train it with "
                           "`voxloop distill mouth`")
    weights = {k: v for k, v in student.state_dict().items() if not k.startswith(MOUTH_PREFIX)}
    with_mouth.load_state_dict(weights, strict=False)
    with_mouth.mouth.load_state_dict(state["model"])
    return with_measured_heads(source, lambda: save_student(with_mouth.eval(), vocab, folder,
                                                            carried_card(source)))


def with_measured_heads(source: Path, save) -> Path:
    """The folder ``save()`` writes (a student whose ears and words are ``source``'s, its
    mouth new or changed), with what was measured on those words (the routing thresholds,
    the heard-intents head) and the audio intents head (it reads the user's codes, which a
    mouth does not change) carried over from ``source``, and none of another student's."""
    from voxloop.distill.student.confidence import ROUTING_FILE

    measured = {name: (source / name).read_bytes() for name in (ROUTING_FILE, *HEAD_FILES)
                if (source / name).is_file()}  # read first: the folder may be source itself
    folder = save()
    for name in (ROUTING_FILE, *HEAD_FILES):
        if name in measured:
            atomic_write(folder / name, lambda tmp, data=measured[name]: tmp.write_bytes(data))
        else:  # one measured on other words
            (folder / name).unlink(missing_ok=True)
    return folder
