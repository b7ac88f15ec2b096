#!/bin/bash
# Train the student on one GPU (a bare machine with python3 + torch, as the device tool
# lends it): three settings in parallel, the best by valid answer_err + audio loss goes out as
# float16 (split in 15 MB parts so it comes back through $OUT), with logs and TensorBoard.
#
# It expects the codes-only export beside the repository's files (git-ignored runs/):
#   voxloop distill pack data/distill-v1 runs/gpu/codes.npz      # 1.3 MB, no audio
# or, to train on the intended answers plus the codec corpus's questions (DATA=...):
#   voxloop distill pack data/distill-v1 runs/gpu/codes-intended.npz --targets intended \
#       --corpus data/codec-corpus
# Usage: [DATA=runs/gpu/codes.npz] OUT=out/gpu bash scripts/student_gpu.sh STEPS MAX_MINUTES [cuda|cpu]
# Settings a, b, c below are the second GPU run (`bash scripts/student_gpu.sh 3000 5.0`); back
# here: cat model.safetensors.part-* > model.safetensors.
set -u
STEPS=${1:-3000}; MINUTES=${2:-5.0}; DEVICE=${3:-cuda}
DATA=$(realpath "${DATA:-runs/gpu/codes.npz}")
OUT=$(realpath -m "${OUT:-/tmp/out}"); mkdir -p "$OUT"
PKG=/tmp/pkg; rm -rf $PKG; mkdir -p $PKG/voxloop
cp -r voxloop/* $PKG/voxloop/ && cp -r distill $PKG/voxloop/distill && cp -r codecs $PKG/voxloop/codecs
export PYTHONPATH=$PKG PYTHONUNBUFFERED=1 DATA VOXLOOP_MODELS=$(pwd)/models
PY=${PY:-python3}; export REPO=$(pwd); cd /tmp
train() {  # name, then StudentTrainSettings / StudentConfig overrides as python kwargs
  $PY - "$1" "$2" "$3" <<PYEOF > "$OUT/train-$1.log" 2>&1
import sys
from voxloop.distill.student.config import StudentConfig, StudentTrainSettings
from voxloop.distill.student.train import train
name, train_kw, model_kw = sys.argv[1], eval(sys.argv[2]), eval(sys.argv[3])
kw = dict(data="$DATA", out=f"/tmp/runs/{name}", steps=$STEPS,
                         batch_size=64, max_minutes=$MINUTES, device="$DEVICE", threads=2,
                         eval_every=100, ckpt_every=500, select_on="answer_err+audio")
s = StudentTrainSettings(**{**kw, **train_kw})
train(s, StudentConfig(**model_kw))
PYEOF
}
train a "dict(weight_decay=0.2, ctc_weight=1.0)" "dict(dropout=0.2)" &
train b "dict(weight_decay=0.2, ctc_weight=1.0)" "dict(dropout=0.2, k_in=4)" &
train c "dict(weight_decay=0.2)" "dict(dropout=0.3, k_in=4)" &
wait
$PY - <<'PYEOF' | tee "$OUT/summary.txt"
import torch, json, time, numpy as np
from voxloop.distill.student.train import export_student
from voxloop.distill.student.model import load_student
from voxloop.distill.student.pack import PackedData
from voxloop.distill.student.vocab import Tokenizer
from voxloop.distill.student.one_turn import generate
best = {}
for name in "abc":
    st = torch.load(f"/tmp/runs/{name}/best.pt", map_location="cpu", weights_only=False)
    ck = torch.load(f"/tmp/runs/{name}/checkpoint.pt", map_location="cpu", weights_only=False)
    print(name, "best step", st["step"], "of", ck["step"], json.dumps(st["valid"]))
    best[name] = st["valid"].get("answer_err", 1e9) + st["valid"].get("audio", 0)
pick = min(best, key=best.get)
print("picked", pick)
export_student(f"/tmp/runs/{pick}/best.pt", "/tmp/student")
model, vocab = load_student("/tmp/student")
import os; data = PackedData.load(os.environ["DATA"])
torch.set_num_threads(1)
tok, audio_s, gen_s = Tokenizer(vocab), 0.0, 0.0
for i in data.indices("valid")[:20]:
    r = generate(model, tok, data.user(i), chunk_frames=5)
    audio_s += r.codes.shape[1] / 25; gen_s += r.generate_s
print(f"speed on this machine's CPU, 1 thread: {audio_s / max(gen_s, 1e-9):.1f}x real time")
PYEOF
cd /tmp/student && split -b 15M model.safetensors model.safetensors.part- && cp config.json vocab.json model.safetensors.part-* "$OUT"/
cp "$OUT"/train-*.log /tmp/runs/ && rm "$OUT"/train-*.log
cd /tmp/runs && tar czf "$OUT/runs.tgz" */tb */settings.json train-*.log
ls -la "$OUT"
