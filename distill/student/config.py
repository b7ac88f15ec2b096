"""Settings of the student, its training and its evaluation (no torch: the CLI reads them)."""

from __future__ import annotations

from dataclasses import dataclass, field

CODEBOOK_SIZE = 1024
WORD_FRAMES_MAX = 32  # a word-pointer student counts frames into a word up to this (1.28 s)
TARGETS = ("teacher", "intended")  # what the student learns to answer (distill/targets.py)
# How the student hears the user: the acoustic codec's codes as learned embeddings
# ("codes") or as the codec's frozen codebook vectors ("latent"), or the semantic
# tokenizer's tokens as its frozen codebook vectors ("semantic", one token per frame).
USER_INPUTS = ("codes", "latent", "semantic")


@dataclass(frozen=True)
class StudentConfig:
    """Shape of the student. ``text_vocab`` and ``ctc_vocab`` come from the data."""

    text_vocab: int = field(default=512, metadata={"cli": False})  # set from the data
    ctc_vocab: int = field(default=512, metadata={"cli": False})  # text1 words + CTC blank
    k_in: int = field(default=8, metadata={"help": "user codebooks read"})
    k_out: int = field(default=4, metadata={"help": "assistant codebooks written (delayed)"})
    d_model: int = field(default=256, metadata={"help": "model width"})
    n_layers: int = field(default=6, metadata={"help": "transformer blocks"})
    n_heads: int = field(default=8, metadata={"help": "query heads"})
    n_kv_heads: int = field(default=2, metadata={"help": "key/value heads (GQA)"})
    ffn_mult: float = field(default=2.75, metadata={"help": "SwiGLU hidden width / d_model"})
    max_len: int = field(default=640, metadata={"help": "longest sequence (positions)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout in training"})
    rope_theta: float = field(default=10000.0, metadata={"help": "rotary base"})
    user_latent_dim: int = field(default=0, metadata={
        "help": "0: user frames enter as learned code embeddings; D: as the codec's own "
                "frozen codebook vectors (dimension D) summed and projected, so sounds the "
                "codec finds alike start close (generalizes far better on little data)"})
    user_input: str = field(default="codes", metadata={
        "choices": USER_INPUTS,
        "help": "what the student hears: codec codes (learned embeddings, or 'latent' with "
                "--student-user-latent-dim) or 'semantic' tokens (one per frame, the "
                "tokenizer's frozen codebook vectors projected; set from the packed data)"})
    user_vocab: int = field(default=CODEBOOK_SIZE, metadata={"cli": False})  # per codebook
    user_frame_rate_hz: float = field(default=25.0, metadata={"cli": False})  # user part only
    word_pointer: bool = field(default=False, metadata={
        "help": "every audio step also hears the answer word being spoken and how many "
                "frames into it it is (two more input channels), and predicts whether the "
                "next frame starts the next word; needs "
                "word times in the data (voxloop distill align). Turned on over --init-from"})
    mouth_d_model: int = field(default=0, metadata={"cli": False})  # set by `distill mouth`
    # > 0: a semantic student also hears each frame's residual levels (k_in - 1 of them;
    # distill.student.residual_levels), their codebook vectors at this weight
    residual_weight: float = field(default=0.0, metadata={"cli": False})

    def __post_init__(self) -> None:
        if self.user_input not in USER_INPUTS:
            raise ValueError(f"user_input must be one of {USER_INPUTS}, not {self.user_input!r}")
        if self.user_input == "codes" and self.user_latent_dim:  # configs made before
            object.__setattr__(self, "user_input", "latent")  # user_input existed
        if self.user_input == "latent" and not self.user_latent_dim:
            raise ValueError("user_input 'latent' needs user_latent_dim (the codec's)")
        if self.user_input == "semantic" and not self.residual_weight:
            object.__setattr__(self, "k_in", 1)  # one token per user frame
        if self.residual_weight and not (self.user_input == "semantic"
                                         and 2 <= self.k_in <= self.k_out):
            raise ValueError("residual levels are heard by a semantic student, 1 to k_out - 1 "
                             f"of them (k_in {self.k_in}, k_out {self.k_out})")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def channels(self) -> int:
        """Input ids per position: the user's ``K_in`` codebooks or the answer's ``K_out``,
        and with ``word_pointer`` two more: the answer word being spoken, and the frame
        within it."""
        return max(self.k_in, self.k_out) + 2 * int(self.word_pointer)

    @property
    def pointer_channel(self) -> int:
        """The input channel of the word being spoken (``word_pointer`` only)."""
        return self.channels - 2

    @property
    def word_frame_channel(self) -> int:
        """The input channel of the frame within the word, ``0 .. WORD_FRAMES_MAX - 1`` (its
        own small table; ``word_pointer`` only)."""
        return self.channels - 1

    # One embedding table: [user codebooks | text | audio codebooks (+special) | null].
    @property
    def user_offset(self) -> int:
        return 0

    @property
    def text_offset(self) -> int:
        return self.k_in * self.user_vocab

    @property
    def audio_offset(self) -> int:
        return self.text_offset + self.text_vocab

    @property
    def null_id(self) -> int:
        return self.audio_offset + self.k_out * (CODEBOOK_SIZE + 1)

    @property
    def n_embeddings(self) -> int:
        return self.null_id + 1


@dataclass(frozen=True)
class StudentTrainSettings:
    data: str = field(default="data/distill-v2", metadata={
        "help": "dataset folder, or a packed .npz (voxloop distill pack)"})
    out: str = field(default="runs/student", metadata={"help": "run folder"})
    steps: int = field(default=1500, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=32, metadata={"help": "turns per step per process"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    warmup_steps: int = field(default=300, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    text_weight: float = field(default=1.0, metadata={"help": "weight of the answer-word loss"})
    ctc_weight: float = field(default=0.3, metadata={"help": "weight of the user-word CTC loss"})
    first_codebook_weight: float = field(default=1.0, metadata={
        "help": "weight of codebook 0's loss against the others' (1 each): the first "
                "level carries most of what makes speech intelligible"})
    answer_balance: float = field(default=0.0, metadata={
        "help": "draw training turns with weight (turns with the same answer)^-B: 0 "
                "draws turns uniformly, 1 answers uniformly (the domain's fixed answers, "
                "learned early, then stop crowding out the composed ones)"})
    refusal_share: float = field(default=0.0, metadata={
        "help": "draw the turns whose answer is the domain's refusal (questions outside it: "
                "synth --outside-questions) as this share of all draws, each as often as the "
                "others (0: as --answer-balance draws them)"})
    self_feed: float = field(default=0.0, metadata={
        "help": "share of the answer codes fed back that are the model's own greedy "
                "prediction (scheduled sampling; one extra forward pass without gradient "
                "per step): generating, it hears its own codes, not the teacher's"})
    words_only: bool = field(default=False, metadata={
        "help": "train the ears and the words only, for a student that speaks with its "
                "mouth: each turn ends after its answer's words, so the audio steps (unused "
                "by such a student) are not trained and a step costs about half"})
    boundary_weight: float = field(default=0.5, metadata={
        "help": "weight of the next-word-starts loss (a word-pointer student)"})
    augment: bool = field(default=True, metadata={"help": "perturb user codes (Augment)"})
    span_mask: float = field(default=0.0, metadata={
        "help": "with --augment: the share of turns with one stretch of the user's speech "
                "(up to a third of it) blanked, so that the answer must come from the words "
                "left, not from the whole phrasing"})
    neighbour_noise: float = field(default=0.0, metadata={
        "help": "with --augment, for a semantic student: the chance per user token to be "
                "replaced by one of its 8 nearest codes in the tokenizer's codebook (the near "
                "misses an unseen voice makes; 0: off)"})
    ema: float = field(default=0.0, metadata={
        "help": "keep an exponential moving average of the learned weights with this decay "
                "per step (e.g. 0.995) and judge, keep and export it instead of the raw "
                "weights (0: off)"})
    eval_every: int = field(default=100, metadata={"help": "valid-loss interval in steps"})
    ckpt_every: int = field(default=250, metadata={"help": "checkpoint interval in steps"})
    select_on: str = field(default="audio+text", metadata={
        "help": "valid losses ('+'-joined) whose sum picks the best model"})
    patience: int = field(default=0, metadata={
        "help": "stop after this many evals without a better valid loss (0: never)"})
    max_minutes: float = field(default=0.0, metadata={
        "help": "stop (with a checkpoint) after this many minutes (0: no limit)"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: all cores)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    init_from: str = field(default="", metadata={
        "help": "fine-tune this student model folder: its weights, config and vocabularies "
                "(pack the data with --vocab-from it); --student-* flags are then ignored but "
                "--student-word-pointer, which adds the word pointer to it"})
    new_ears: bool = field(default=False, metadata={
        "help": "with --init-from: the data was heard through another semantic tokenizer "
                "(one of the same size, e.g. retrained on more voices): its codebook replaces "
                "the student's and everything else (words, mouth) carries over to re-learn "
                "hearing; without it, another tokenizer is refused"})
    warm_from: str = field(default="", metadata={
        "help": "start a new student from this student model folder's weights where they "
                "carry over (blocks, audio embeddings and head, words both vocabularies "
                "hold), e.g. a semantic student from the bundled codec-hearing one; needs its "
                "width, depth and heads (--student-* flags)"})


@dataclass(frozen=True)
class MouthConfig:
    """Shape of the mouth (``mouth.py``); a student's ``mouth_d_model`` holds its width,
    the rest stays at these values. ``text_vocab`` and ``k_out`` are the student's."""

    text_vocab: int = 512
    k_out: int = 4
    d_model: int = 256
    char_layers: int = 2  # transformer layers over the answer's letters
    word_layers: int = 3  # transformer layers over the answer's words
    frame_blocks: int = 6  # ConvNeXt blocks over its frames
    n_heads: int = 4
    kernel: int = 7  # frames each frame block sees (3 on each side)
    dropout: float = 0.1
    max_words: int = 64
    max_chars: int = 16  # letters of a word read (longer ones are cut)

    @property
    def pad_word(self) -> int:
        return self.text_vocab


@dataclass(frozen=True)
class MouthTrainSettings:
    data: str = field(default="", metadata={
        "help": "an aligned pack (voxloop distill align) tokenized with --student's words"})
    student: str = field(default="voxloop-student", metadata={
        "help": "the student whose words the mouth says: a model folder or bundled name"})
    out: str = field(default="runs/mouth", metadata={"help": "run folder"})
    d_model: int = field(default=256, metadata={"help": "the mouth's width"})
    fresh: bool = field(default=False, metadata={
        "help": "start a new mouth even where the student has one of this width (by "
                "default training goes on from it, e.g. after new words: --init-from)"})
    steps: int = field(default=3000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=32, metadata={"help": "answers per step"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    first_codebook_weight: float = field(default=2.0, metadata={
        "help": "weight of codebook 0's loss against the others' (1 each)"})
    answer_balance: float = field(default=0.5, metadata={
        "help": "draw each distinct answer with weight (its train turns)^(1 - B): 1 draws "
                "answers uniformly (the domain's few fixed answers, most of what is said, "
                "then come up rarely), 0 as often as the turns say them"})
    retaken_weight: float = field(default=1.0, metadata={
        "help": "draw the answers `voxloop distill renditions` gave a new take (its report "
                "beside the pack) this many times as often: an answer of few turns comes up "
                "a few times in a short run, too few to learn its new take"})
    duration_weight: float = field(default=1.0, metadata={
        "help": "weight of the words' log-length loss"})
    own_lengths: float = field(default=0.0, metadata={
        "help": "train this share of the answers at the word lengths the mouth itself gives "
                "them (their codes resampled to fit), the lengths it will say them at, and "
                "the rest at the take's (0: all at the take's)"})
    ema: float = field(default=0.0, metadata={
        "help": "keep an exponential moving average of the weights with this decay per step "
                "(e.g. 0.99) and judge, keep and snapshot it instead of the raw weights (0: "
                "off)"})
    eval_every: int = field(default=100, metadata={"help": "valid-loss interval in steps"})
    ckpt_every: int = field(default=250, metadata={"help": "checkpoint interval in steps"})
    snapshot_every: int = field(default=0, metadata={
        "help": "also keep the mouth of every this many steps in OUT/snapshots/, for "
                "`voxloop distill choose-mouth` to judge by ear (0: none)"})
    max_minutes: float = field(default=0.0, metadata={
        "help": "stop (with a checkpoint) after this many minutes (0: no limit)"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: all cores)"})
    seed: int = field(default=0, metadata={"help": "random seed"})


@dataclass(frozen=True)
class StudentEvalSettings:
    data: str = field(default="data/distill-v2", metadata={
        "help": "dataset folder or packed .npz"})
    out: str = field(default="out/student-eval", metadata={"help": "where to write the report"})
    splits: tuple[str, ...] = field(default=("heldout_voice", "heldout_phrasing"), metadata={
        "help": "splits to evaluate"})
    limit: int = field(default=0, metadata={"help": "turns per split (0: all)"})
    codec: str = field(default="", metadata={
        "help": "codec to decode with (default: the one the model's data used)"})
    decoder: str = field(default="answers", metadata={
        "help": "the codec's decoder: answers (the assistant-voice decoder where the codec "
                "ships one, what the native engine speaks with), seanet, assistant, general"})
    chunk_frames: int = field(default=5, metadata={"help": "prefill chunk (frames of 40 ms)"})
    temperature: float = field(default=0.0, metadata={"help": "audio sampling (0: greedy)"})
    top_k: int = field(default=0, metadata={"help": "sample among the k best (0: all)"})
    ceiling: bool = field(default=True, metadata={
        "help": "also judge the teacher's own codes decoded (the codec ceiling)"})
    threads: int = field(default=1, metadata={"help": "torch threads while generating"})
    heard_intents: bool = field(default=True, metadata={
        "help": "where the student has a heard-intents head, let it override words it rules "
                "out (--no-heard-intents: the student's own words)"})


@dataclass(frozen=True)
class HeardIntentsConfig:
    """How the head is fitted and when it overrides the student's words (the defaults:
    chosen on valid turns, ``voxloop eval heard-intents``)."""

    min_prob: float = field(default=0.6, metadata={
        "help": "override only where the head's probability of its intent is at least this"})
    max_logprob: float = field(default=0.0, metadata={
        "help": "... the student's words' log-probability at most this (0: however sure "
                "the student is)"})
    max_own_prob: float = field(default=0.02, metadata={
        "help": "... and the head's probability of the student's own answer at most this"})
    rescore_top: int = field(default=3, metadata={
        "help": "where the head did not override: score the fixed answers of its likeliest "
                "this many intents with the student's own text head, and say the best by "
                "the student's log-probability + --rescore-weight x the head's log-probability "
                "where it beats the student's own answer by --rescore-margin (0: off)"})
    rescore_weight: float = field(default=1.5, metadata={
        "help": "the head's log-probability's weight in that score"})
    rescore_margin: float = field(default=1.0, metadata={
        "help": "how much more (nats) another answer must score than the student's own"})
    audio_weight: float = field(default=3.0, metadata={
        "help": "where the student has an audio intents head (audio_intents.safetensors), "
                "the power its probabilities are raised to before they multiply the words' "
                "(0: the words alone)"})
    refuse: bool = field(default=True, metadata={
        "help": "where the head, reading the sound too (an audio intents head), is as sure "
                "the question is outside the domain, the student says its refusal "
                "(--no-refuse: only the domain's fixed answers)"})
    slot_bonus: float = field(default=4.0, metadata={
        "help": "where the head reads a composed question, added to the logit of every slot "
                "value's answer word heard and not yet written (0: off)"})
    fills_per_template: int = field(default=10, metadata={
        "help": "slot fillings of each compositional template"})
    noisy_copies: int = field(default=8, metadata={
        "help": "misheard copies of every training question"})
    drop: float = field(default=0.15, metadata={"help": "chance per word to be left out"})
    replace: float = field(default=0.15, metadata={
        "help": "chance per word to be replaced by a random word of the ears' vocabulary"})
    insert: float = field(default=0.05, metadata={
        "help": "chance per word to be followed by a random one"})
    epochs: int = field(default=150, metadata={"help": "full-batch Adam steps"})
    lr: float = field(default=0.05, metadata={"help": "Adam's learning rate"})
    l2: float = field(default=1e-4, metadata={"help": "weight decay (sum of squares)"})
    seed: int = field(default=0, metadata={"help": "slot fillings and mishearings"})


@dataclass(frozen=True)
class AudioIntentsTrainSettings:
    """How ``voxloop distill audio-intents`` trains a student's audio intents head."""

    data: str = field(default="", metadata={
        "help": "the student's aligned pack (its train split's user codes and intents)"})
    steps: int = field(default=2000, metadata={"help": "batches"})
    batch_size: int = field(default=64, metadata={
        "help": "turns a batch, every intent drawn as often"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (one cycle)"})
    token_noise: float = field(default=0.1, metadata={
        "help": "chance per frame that its codes are replaced by random ones"})
    mask: float = field(default=0.15, metadata={
        "help": "half the turns get one span of random codes up to this share of the turn"})
    outside_per_question: int = field(default=3, metadata={
        "help": "voices that say each question outside the domain (the refusal's turns); "
                "every 4th question is kept out to measure the refusal"})
    more_per_phrasing: int = field(default=3, metadata={
        "help": "voices that say each of the domain's more phrasings and templates (which no "
                "pack asks; every 4th of an intent kept out to measure new phrasings; 0: none)"})
    width: int = field(default=192, metadata={"help": "channels of the convolutions"})
    layers: int = field(default=3, metadata={"help": "convolution blocks"})
    kernel: int = field(default=5, metadata={"help": "frames each depthwise convolution sees"})
    threads: int = field(default=2, metadata={"help": "torch threads"})
    seed: int = field(default=0, metadata={"help": "sampling, noise and the voices drawn"})
