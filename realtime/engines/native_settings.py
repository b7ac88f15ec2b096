"""The native engine's settings (``voxloop serve --native-*``): which student, codec and
tokenizer, and how the model thread batches and votes."""

from __future__ import annotations

from dataclasses import dataclass, field

from voxloop.distill.student.drafts import MAX_DRAFT_WORDS
from voxloop.models import DEFAULT_STUDENT

ANSWER_DECODER = "answers"  # the codec's decoder for its assistant voice, if it ships one


@dataclass(frozen=True)
class NativeSettings:
    student: str = field(default=DEFAULT_STUDENT, metadata={
        "help": "the student model: a bundled model name or a folder", "flag": "--native-student"})
    codec: str | None = field(default=None, metadata={
        "help": "codec for the user's and the answer's audio (default: the one the student "
                "was trained with)", "flag": "--native-codec"})
    decoder: str = field(default=ANSWER_DECODER, metadata={
        "help": "the codec's decoder for the answers: answers (the one trained on the "
                "assistant's voice where the codec ships it, else auto), assistant, general, "
                "seanet (the codec's own), a decoder folder, or auto",
        "flag": "--native-decoder"})
    semantic: str | None = field(default=None, metadata={
        "help": "a semantic student's tokenizer for the user's audio (default: the one it "
                "was trained with)", "flag": "--native-semantic"})
    speculative: bool = field(default=True, metadata={
        "help": "start answering at the first silent VAD window and send the audio once the "
                "silence is confirmed (rolled back if the user goes on)",
        "flag": "--native-speculative"})
    slots: int = field(default=20, metadata={
        "help": "sessions the model thread can hold at once (at least --max-sessions + 4)",
        "flag": "--native-slots"})
    draft_words: int = field(default=MAX_DRAFT_WORDS, metadata={
        "help": "answer words checked ahead per call, along the answers the student knows "
                "(the same words, fewer calls; 0: one per call)", "flag": "--native-draft-words"})
    heard_intents: bool = field(default=True, metadata={
        "help": "let the student's heard-intents head (where its folder has one) say the "
                "fixed answer it reads where it all but rules out the student's own",
        "flag": "--native-heard-intents"})
    torch_threads: int = field(default=1, metadata={
        "help": "torch's intra-op threads (the engine's ops are small and sessions run in "
                "parallel threads, so 1 avoids oversubscribing the cores; 0: torch's default)",
        "flag": "--native-torch-threads"})
    max_prefill_frames: int = field(default=25, metadata={
        "help": "user frames a session prefills per model call at most (bounds the delay "
                "it adds to other sessions' steps)", "flag": "--native-max-prefill-frames"})
    votes: int = field(default=4, metadata={
        "help": "hear each turn on this many alignments of the ear's frames (1/N of a frame "
                "apart; N slots and ears per session) and say the wording most wrote: more "
                "right answers for N times the listening CPU (1: off; semantic_vad: one)",
        "flag": "--native-votes"})
    voting_sessions: int = field(default=1, metadata={
        "help": "sessions that hear with --native-votes ears at once (the first to open; "
                "the others hear with one until one of those closes); 0: every session",
        "flag": "--native-voting-sessions"})
    votes_up_to_sessions: int = field(default=2, metadata={
        "help": "a voting session hears a turn with its ears only while at most this many "
                "sessions are open, else with one (near the cores' capacity the extra ears "
                "cost every session latency); 0: however many are open",
        "flag": "--native-votes-up-to-sessions"})
    votes_quick_turns: bool = field(default=False, metadata={
        "help": "hear semantic_vad's turns with the votes too (their answer is due about "
                "100 ms after the speech, so the extra ears' answers add to its latency)",
        "flag": "--native-votes-quick-turns"})
