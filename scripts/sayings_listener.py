"""Two tables of sayings of one student, heard by a listener neither was chosen with.

For every answer whose saying differs between the two tables, decode each saying with the
student's answer decoder and ask Whisper tiny.en with a beam of 5 (the tables were chosen
by greedy Whisper), once clean and three times with white noise at 20 dB SNR (seeds 0-2),
whether it says the answer (``voxloop eval student``'s judge). Prints one line per answer
and a JSON summary.

Usage: python scripts/sayings_listener.py OLD_FOLDER NEW_FOLDER [--snr-db 20] [--noisy 3]
"""

from __future__ import annotations

import argparse
import json

import torch

from voxloop.distill.evals.judge import judge
from voxloop.distill.evals.renditions import noisy_right
from voxloop.distill.evals.student import decode_codes, heard_in
from voxloop.distill.student.codec import load_student_codec
from voxloop.distill.student.model import load_student
from voxloop.distill.student.said_codes import load_said_codes
from voxloop.distill.student.vocab import Tokenizer
from voxloop.distill.teachers.asr import ASRSettings, load_asr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new", help="a student folder with the same weights as OLD")
    parser.add_argument("--snr-db", type=float, default=20.0)
    parser.add_argument("--noisy", type=int, default=3, help="noisy listens per saying")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, vocab = load_student(args.new)
    tokenizer = Tokenizer(vocab)
    tables = {}
    for name, folder in (("old", args.old), ("new", args.new)):
        table = load_said_codes(folder, any_weights=True)
        if table is None:
            raise SystemExit(f"error: {folder} has no said_codes.safetensors: write one with "
                             f"`voxloop distill sayings {folder}`")
        tables[name] = dict(table.items())
    codec = load_student_codec(None, vocab, "answers")
    asr = load_asr(ASRSettings(beam_size=5, threads=args.threads))
    changed = [w for w, codes in tables["new"].items()
               if w in tables["old"] and not torch.equal(tables["old"][w], codes)]
    right = {name: {"clean": 0, "noisy": 0} for name in tables}
    for words in changed:
        text, line = tokenizer.decode_answer(words), {}
        for name, table in tables.items():
            wav = decode_codes(codec, table[words][:model.config.k_out].numpy())
            clean = judge(text, heard_in(asr, wav, codec.sample_rate))
            noisy = noisy_right(asr, wav, codec.sample_rate, text, args.noisy, args.snr_db)
            right[name]["clean"] += clean
            right[name]["noisy"] += noisy
            line[name] = f"clean {'right' if clean else 'wrong'}, noisy {noisy}/{args.noisy}"
        print(f"{text!r}: old {line['old']}; new {line['new']}", flush=True)
    print(json.dumps({"changed": len(changed), "noisy_listens": args.noisy,
                      "snr_db": args.snr_db, "right": right}))


if __name__ == "__main__":
    main()
