"""The scripted assistant: every documented phrasing, compositional answers, fallback."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxloop.distill.teachers.domain.assistant import FALLBACK_INTENT
from voxloop.distill.teachers.domain.data import ALL_FILLS, examples, intent_ids, load_domain
from voxloop.distill.teachers.domain.numbers import int_to_words, number_to_words, words_to_digits
from voxloop.distill.teachers.domain.text import normalize
from voxloop.distill.teachers.heldout import HELDOUT_TEMPLATE

# sha256 of the first six phrasings / templates of every intent, as first released: a
# phrasing's index is its id (HELDOUT_TEMPLATE is one), so new ones are only appended.
FIRST_SIX_SHA256 = "d5cd4712e6f620199011fe0bbb68f6a1aac7c374d5dd9023f6fa3fa042e99675"
# sha256 of [text, intent, answer] of every in-domain question (examples(ALL_FILLS)): the
# training targets. Honest answers to unknown questions must not change a known one.
IN_DOMAIN_ANSWERS_SHA256 = "7355beed214f15d6103e52228505eebe4e61dbec4742d75e5e066c4cce08b9da"


def test_domain_size_meets_the_spec():
    domain = load_domain()
    assert len(intent_ids()) >= 60
    for intent in domain["intents"]:
        assert len(intent["phrasings"]) >= 12, intent["id"]
        assert len(set(intent["phrasings"])) == len(intent["phrasings"]), intent["id"]
    for intent in domain["compositional"]:
        assert len(intent["templates"]) >= 12, intent["id"]
        assert len(set(intent["templates"])) == len(intent["templates"]), intent["id"]
    assert len(domain["capitals"]) >= 30


def test_phrasings_are_only_ever_appended():
    domain = load_domain()
    rows = [[i["id"], i["phrasings"][:6]] for i in domain["intents"]] + [
        [i["id"], i["templates"][:6]] for i in domain["compositional"]]
    assert hashlib.sha256(json.dumps(rows).encode()).hexdigest() == FIRST_SIX_SHA256
    assert HELDOUT_TEMPLATE < 6


# Closer to "{country} has which capital" than any trained template: the first six more
# templates put the country first on purpose, and the card reports that phrasing apart.
CLOSER_BY_DESIGN = {"{country}, which city is its capital"}


def _word_jaccard(a: str, b: str) -> float:
    wa, wb = set(normalize(a).split()), set(normalize(b).split())
    return len(wa & wb) / len(wa | wb)


def test_more_phrasings_are_no_closer_to_the_held_out_one():
    """``more_phrasings``/``more_templates`` (training plans with --more-phrasings) say each
    intent another way; none may share more of its words with the held-out phrasing than
    the intent's closest training phrasing already does, or it would leak the held-out one."""
    domain = load_domain()
    said = {p.lower() for i in domain["intents"] for p in i["phrasings"]}  # "what's" is new
    for intent, key in [(i, "phrasings") for i in domain["intents"]] + [
            (i, "templates") for i in domain["compositional"]]:
        known, more = intent[key], intent.get(f"more_{key}", [])
        assert len(more) >= 6, intent["id"]
        held = known[HELDOUT_TEMPLATE]
        limit = max(_word_jaccard(p, held) for i, p in enumerate(known) if i != HELDOUT_TEMPLATE)
        for phrasing in more:
            assert (_word_jaccard(phrasing, held) <= limit or phrasing in CLOSER_BY_DESIGN), (
                intent["id"], phrasing, held)
            assert phrasing.lower() not in said, (intent["id"], phrasing)
        assert len({p.lower() for p in known + more}) == len(known) + len(more), intent["id"]


@pytest.fixture(scope="module")
def every_question_matched(assistant):
    """Every in-domain question (``examples(ALL_FILLS)``) with the assistant's match."""
    return [(e, assistant.match(e.text)) for e in examples(ALL_FILLS)]


@pytest.mark.slow
def test_every_phrasing_with_every_fill_gets_its_answer(assistant, every_question_matched):
    """Fixed intents: the intent's answer. Compositional templates: the same answer as
    the intent's first template with the same slots ("what is {a} plus {b}")."""
    domain = load_domain()
    answers = {i["id"]: i["answer"] for i in domain["intents"]}
    first = {i["id"]: i["templates"][0] for i in domain["compositional"]}
    misses = []
    for e, got in every_question_matched:
        want = answers.get(e.intent) or assistant.reply([], first[e.intent].format(**dict(e.slots)))
        if (got.intent, got.answer) != (e.intent, want):
            misses.append((e.text, e.intent, got.intent, got.answer, want))
    cases = len(every_question_matched)
    print(f"\n{cases - len(misses)}/{cases} phrasings and fills answered as intended")
    assert cases > 20_000
    assert not misses, misses[:20]


def test_more_phrasings_are_answered_as_their_intent(assistant):
    """The intended answer of a phrasing the matcher may not know (``more_phrasings``,
    "if I take 3 from 7 what is left": it answers the refusal) is its intent's, from the
    canonical question; for a phrasing it knows, that is the answer it gives anyway."""
    from voxloop.distill.teachers.domain.data import canonical_question, more_phrasings_written

    more = [e for e in examples(1, seed=3, more=more_phrasings_written()) if e.template >= 12]
    for e in more:
        canonical = canonical_question(e.intent, e.slots, e.text)
        assert assistant.match(canonical).intent == e.intent, (e.text, canonical)
    take = next(e for e in more if e.text.startswith("if I take"))
    assert assistant.reply([], take.text) == load_domain()["fallback"]  # the matcher
    a, b = dict(take.slots)["a"], dict(take.slots)["b"]
    assert canonical_question(take.intent, take.slots, take.text) == f"what is {a} minus {b}"
    known = examples(1, seed=3)
    assert all(assistant.reply([], canonical_question(e.intent, e.slots, e.text)) ==
               assistant.reply([], e.text) for e in known)


@pytest.mark.slow
def test_in_domain_answers_are_unchanged(every_question_matched):
    rows = [[e.text, got.intent, got.answer] for e, got in every_question_matched]
    assert hashlib.sha256(json.dumps(rows).encode()).hexdigest() == IN_DOMAIN_ANSWERS_SHA256


def test_all_fills_cover_the_slot_ranges():
    adds = [e for e in examples(ALL_FILLS) if e.intent == "add" and e.template == 0]
    assert len(adds) == 21 * 20  # a in 0..20, b in 1..20
    capitals = {dict(e.slots)["country"] for e in examples(ALL_FILLS) if e.intent == "capital"}
    assert capitals == set(load_domain()["capitals"])
    assert examples(ALL_FILLS) == examples(ALL_FILLS, seed=9)  # no randomness


@pytest.mark.parametrize(("question", "answer"), [
    ("What is 7 plus 5?", "Seven plus five is twelve."),
    ("what's seventeen minus twenty", "Seventeen minus twenty is minus three."),
    ("subtract three from nine", "Nine minus three is six."),
    ("take 4 away from 10", "Ten minus four is six."),
    ("what is 3 less than 10", "Ten minus three is seven."),
    ("what is 6 times 7", "Six times seven is forty two."),
    ("what is 9 divided by 2", "Nine divided by two is four point five."),
    ("divide 10 by 3", "Ten divided by three is about three point three."),
    ("divide five by zero", "You can't divide by zero."),
    ("what is 1 divided by 4", "One divided by four is zero point two five."),  # exact: said
    ("what is 2 divided by 3", "Two divided by three is about zero point six seven."),
    ("what is seven multi plied by three", "Seven times three is twenty one."),  # ASR split
    ("what is six sub tract two", "Six minus two is four."),  # the operator in two
    ("what is the capital of japan", "The capital of Japan is Tokyo."),
    ("whats the capitol of frants", "The capital of France is Paris."),
    ("capital of england", "The capital of United Kingdom is London."),
    ("how do you spell horse", "Horse is spelled H, O, R, S, E."),
    ("letter by letter, how do you spell cat", "Cat is spelled C, A, T."),  # how, not what
    ("how do you spell letter", "Letter is spelled L, E, T, T, E, R."),
    ("convert 5 kilometers to miles", "Five kilometers is about three point one miles."),
    ("what is 20 degrees celsius in fahrenheit", "Twenty degrees Celsius is sixty eight degrees "
                                                  "Fahrenheit."),
    ("how many minutes is 1 hour", "One hour is sixty minutes."),
    ("convert 50 degrees f to degrees c", "Fifty degrees Fahrenheit is ten degrees Celsius."),
    ("what day comes after sunday", "After Sunday comes Monday."),
    ("if today is friday what day is tomorrow", "After Friday comes Saturday."),
    ("tuesday is followed by which day", "After Tuesday comes Wednesday."),
    ("how many legs does a spyder have", "A spider has eight legs."),
])
def test_compositional_and_noisy_questions(assistant, question, answer):
    assert assistant.reply([], question) == answer


@pytest.mark.parametrize("question", [
    "what is the meaning of life", "who won the world cup", "play some music",
    "what is the population of france", "how tall is the eiffel tower", "who is the president",
    "how many wheels does a car have", "book me a flight to london",
])
def test_out_of_domain_gets_the_polite_fallback(assistant, question):
    match = assistant.match(question)
    assert match.intent == FALLBACK_INTENT, (question, match)
    assert match.answer == load_domain()["fallback"]


def test_every_question_outside_the_domain_gets_the_refusal(assistant):
    """``outside_questions`` teach a student to refuse (``--outside-questions``): each must be
    the scripted teacher's refusal, and none may be one of the questions ``eval routing``
    measures the refusal on, nor close to one (their words mostly shared)."""
    from voxloop.distill.evals.routing import OUT_OF_DOMAIN

    outside = load_domain()["outside_questions"]
    assert len(outside) >= 200 and len(set(outside)) == len(outside)
    refused = [q for q in outside if assistant.reply([], q) != load_domain()["fallback"]]
    assert not refused
    close = [(q, m) for q in outside for m in OUT_OF_DOMAIN if _word_jaccard(q, m) >= 0.5]
    assert not close


@pytest.mark.parametrize(("question", "place"), [
    ("what is the capital of mongolia", "Mongolia"),  # was "The capital of Italy is Rome."
    ("what is the capital of texas", "Texas"),
    ("capital of atlantis", "Atlantis"),
    ("what's the capital of the moon please", "the Moon"),
    ("what is the capital of georgia", "Georgia"),  # not Nigeria, 0.71 alike
    ("what is the capital of north korea", "North Korea"),  # not "korea", South Korea's alias
    ("what is mongolia's capital", "Mongolia"),
])
def test_an_unknown_place_gets_an_honest_answer(assistant, question, place):
    assert assistant.reply([], question) == f"I don't know the capital of {place}."


@pytest.mark.parametrize("question", [
    "how many legs does a centipede have", "How many legs has a centipede got?",  # not a dog's
    "how many legs does a cat have", "how many legs does a horse have",  # not hours in a day
    "what is a baby cow called", "what sound does a dog make", "how many sides does a pentagon "
    "have", "what is the capital",  # of nothing: was Italy
])
def test_a_question_about_another_subject_falls_back(assistant, question):
    match = assistant.match(question)
    assert (match.intent, match.answer) == (FALLBACK_INTENT, load_domain()["fallback"]), match


@pytest.mark.parametrize(("question", "answer"), [
    ("How long is a date in hours?", "There are twenty four hours in a day."),  # "date": "day"
    ("how many hexagon sides does a hex again have", "A hexagon has six sides."),
    ("what is the capital of south korea", "The capital of South Korea is Seoul."),
    ("what is the capital city of the united states", "The capital of United States is "
                                                      "Washington D C."),
])
def test_a_misheard_subject_still_matches(assistant, question, answer):
    assert assistant.reply([], question) == answer


@pytest.mark.slow
def test_answers_are_deterministic(assistant):
    from voxloop.distill.teachers.domain.assistant import ScriptedAssistant

    other = ScriptedAssistant()
    for e in examples(fills_per_template=1, seed=3):
        assert assistant.reply([], e.text) == other.reply([{"role": "user", "content": "hi"}],
                                                          e.text)


@given(st.integers(min_value=0, max_value=999_999))
def test_number_words_round_trip(n):
    assert words_to_digits(int_to_words(n)) == str(n)


def test_number_to_words_rounds_and_signs():
    assert number_to_words(3.5) == "three point five"
    assert number_to_words(-17.78) == "minus seventeen point eight"
    assert number_to_words(68.0) == "sixty eight"


def test_normalize_handles_symbols_contractions_and_number_words():
    assert normalize("What's 7 + five?") == "what is 7 plus 5"
    assert normalize("twenty-one × 3") == "21 times 3"
    assert normalize("It's 1,000 km.") == "it is 1000 km"


def test_numbers_of_a_million_and_more_are_said_and_read_back():
    """The scripted assistant's arithmetic can leave the domain's sizes ("1000 times
    1000"): it says the result rather than failing the answer."""
    for n in (1000, 1_000_000, 1_002_003, 2_500_000_000):
        assert words_to_digits(int_to_words(n)) == str(n)
    assert int_to_words(1_000_000) == "one million"
