"""The judge behind every out-loud number: is an answer's key content in what Whisper heard?

An answer is right when the transcript holds the key content of the intended answer: its
numbers in order, with their signs (after ``normalize_for_wer``: "one hundred eighty
seven" -> 187, "one point eight" and Whisper's "1.8" alike, "minus six", "-6" and Whisper's
"is-6"), its spelled letters exactly, its negations, its last content word (where an answer
puts what was asked; at ``SLOT_WORD_SIMILARITY``, so "Thursday" is not "Tuesday"), and at
least ``KEY_WORD_RECALL`` of its content words (words that are not function words; fuzzy
match, so "cheetahs" finds "cheetah").
"""

from __future__ import annotations

from voxloop.distill.evals.metrics import normalize_for_wer

KEY_WORD_RECALL = 0.75
FUNCTION_WORDS = frozenset({
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "am", "of", "to", "in", "on",
    "at", "by", "for", "from", "with", "and", "or", "but", "as", "it", "its", "this", "that",
    "these", "those", "there", "here", "i", "you", "he", "she", "we", "they", "me", "my", "your",
    "our", "do", "does", "did", "can", "could", "will", "would", "should", "has", "have", "had",
    "so", "than", "then", "also", "about", "usually", "called", "into", "over", "just", "very"
})


NEGATIONS = frozenset({"not", "no", "never", "cannot", "nothing"})
SLOT_WORD_SIMILARITY = 0.9  # the last content word: "Tuesday" is not "Thursday" (0.8)


def judged_words(text: str) -> list[str]:
    """``normalize_for_wer``'s words ("=" read as "is"), with a minus that is a sign (not
    after a number: "is minus 6", "about minus 17.2") joined to its number ("-6")."""
    words, out = normalize_for_wer(text.replace("=", " is ")).split(), []
    for word in words:
        if out and out[-1] == "minus" and _is_number(word) and \
                (len(out) == 1 or not _is_number(out[-2])):
            out[-1] = f"-{word}"
        else:
            out.append(word)
    return out


def _is_number(word: str) -> bool:
    return word.lstrip("-").replace(".", "", 1).isdigit()


def key_content(answer: str | list[str]) -> tuple[list[str], list[str]]:
    """(numbers in order, signed; content words) of a teacher answer, normalized (or of
    its ``judged_words``)."""
    words = judged_words(answer) if isinstance(answer, str) else answer
    numbers = [w for w in words if _is_number(w)]
    content = [w for w in words if w not in FUNCTION_WORDS and not _is_number(w)]
    return numbers, content


SPELLED = ("spelled", "spell", "spelt", "spells")  # as Whisper writes "is spelled"


def spelled_letters(words: list[str]) -> list[str]:
    """The single letters said after "spelled" ("house is spelled h o u s e"; heard, also
    after "spell": "train this spell t r a i n")."""
    at = next((i for i, w in enumerate(words) if w in SPELLED), None)
    if at is None:
        return []
    rest = words[at + 1:]
    letters = []
    for word in rest:
        if len(word) != 1 or not word.isalpha():
            break
        letters.append(word)
    return letters


def judge(answer: str, transcript: str) -> bool:
    """Is the key content of ``answer`` (the teacher's text2) in ``transcript``? Its
    numbers in order and with their signs, its spelled letters exactly, its negations,
    and its last content word (where an answer puts what was asked: the day, the city)
    must be heard; of the rest of its content words, ``KEY_WORD_RECALL``."""
    from voxloop.distill.teachers.domain.text import word_similarity

    heard, said_words = judged_words(transcript), judged_words(answer)
    numbers, content = key_content(said_words)
    said = iter(w for w in heard if _is_number(w))
    if not all(n in said for n in numbers):  # an ordered subsequence, repeats counted
        return False
    letters = spelled_letters(said_words)
    if letters and spelled_letters(heard) != letters:
        return False
    if any(w in NEGATIONS and w not in heard for w in content):
        return False
    if not content:
        return bool(numbers) or bool(heard)
    if not any(word_similarity(content[-1], h) >= SLOT_WORD_SIMILARITY for h in heard):
        return False
    found = sum(any(word_similarity(w, h) >= 0.8 for h in heard) for w in content)
    return found / len(content) >= KEY_WORD_RECALL
