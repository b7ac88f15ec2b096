#!/usr/bin/env bash
# Fine-tune the bundled codec (models/voxloop-codec-16k) on one GPU within a fixed wall
# time, on a bare machine with python3 + torch (as lent by the device tool), then put the
# float16 export, float32 weights and logs under $OUT.
#
# It expects the git-ignored folder .carry/ beside this repository's files:
#   .carry/whl/      soundfile, cffi, pycparser wheels (cp312, manylinux x86_64)
#   .carry/encodec/  the encodec package (pure Python)
#   .carry/corpus/   data/codec-corpus as Ogg/Opus, {train,heldout}/*.ogg (26 MB, not 179)
# Usage: OUT=out/gpu BUDGET_S=470 bash scripts/codec_finetune_gpu.sh
# (EXTRA: more `codec train` options; CORPUS, RUN: where the wavs and the run go)
set -euo pipefail
export BUDGET_S=${BUDGET_S:-470} RUN=${RUN:-runs/codec-gpu} CORPUS=${CORPUS:-data/codec-corpus}
OUT=${OUT:-out/gpu}
EXTRA=${EXTRA:-}
mkdir -p "$OUT" /tmp/site/voxloop
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/whl/*.whl
cp -r voxloop/*.py /tmp/site/voxloop/ && cp -r .carry/encodec /tmp/site/
ln -sfn "$PWD/codecs" /tmp/site/voxloop/codecs && ln -sfn "$PWD/distill" /tmp/site/voxloop/distill
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

python3 - <<'EOF'  # Opus -> 16-bit wav, the layout `voxloop codec train` reads
import glob, os
from concurrent.futures import ProcessPoolExecutor
import soundfile as sf
def one(path):
    split = os.path.basename(os.path.dirname(path))
    x, rate = sf.read(path, dtype="float32")
    os.makedirs(f"{os.environ['CORPUS']}/{split}", exist_ok=True)
    sf.write(f"{os.environ['CORPUS']}/{split}/{os.path.basename(path)[:-4]}.wav", x, rate,
             subtype="PCM_16")
paths = sorted(glob.glob(".carry/corpus/*/*.ogg"))
with ProcessPoolExecutor(16) as ex:
    list(ex.map(one, paths, chunksize=32))
print(f"decoded {len(paths)} clips")
EOF

# `voxloop codec train ...` through the codec commands alone (the other command groups
# are not needed here).
codec_train() {
    python3 -P -c 'import argparse, sys
from voxloop.codecs import cli
parser = argparse.ArgumentParser(prog="voxloop")
cli.register(parser.add_subparsers(), {})
args = parser.parse_args(sys.argv[1:])
sys.exit(args.run(args))' codec train --corpus "$CORPUS" --out "$RUN" \
        --init-from models/voxloop-codec-16k --steps 100000 --time-budget-s "$BUDGET_S" \
        --batch-size 64 --segment-s 1.6 --lr 5e-4 --warmup-steps 100 \
        --ckpt-every 250 --eval-every 250 --export "$RUN/bundle" "$@"
}
export -f codec_train
start=$(date +%s)
# shellcheck disable=SC2086
timeout $((BUDGET_S + 60)) bash -c "codec_train --precision bf16 $EXTRA" 2>&1 \
        | tee "$OUT/train.log" || {
    echo "bf16 run failed or timed out after $(( $(date +%s) - start )) s" | tee -a "$OUT/train.log"
    left=$(( BUDGET_S - ($(date +%s) - start) ))
    if [ ! -f "$RUN/checkpoint.pt" ] && [ $left -gt 120 ]; then
        BUDGET_S=$left timeout $((left + 45)) bash -c "codec_train --precision fp32 $EXTRA" \
            2>&1 | tee -a "$OUT/train.log" || true
    fi
}

python3 -P - "$RUN" "$OUT" <<'EOF'  # bring back: fp16 export, fp32 weights in shards, logs
import os, sys, tarfile
import torch
from safetensors.torch import save_file
from voxloop.codecs.train import export_checkpoint
run, out = sys.argv[1:]
export_checkpoint(f"{run}/checkpoint.pt", f"{out}/bundle")
state = torch.load(f"{run}/checkpoint.pt", map_location="cpu", weights_only=False)
print("checkpoint step", state["step"], "of", state.get("total_steps"))
weights = {f"{part}.{k}": v.contiguous() for part in ("model", "discriminator")
           for k, v in state.get(part, {}).items()}
shard, size, n = {}, 0, 0
for key, value in weights.items():
    nbytes = value.numel() * value.element_size()
    if shard and size + nbytes > 15 * 2**20:
        save_file(shard, f"{out}/fp32-{n}.safetensors"); shard, size, n = {}, 0, n + 1
    shard[key], size = value, size + nbytes
save_file(shard, f"{out}/fp32-{n}.safetensors")
with tarfile.open(f"{out}/logs.tgz", "w:gz") as tar:
    tar.add(f"{run}/tb", "tb"); tar.add(f"{run}/settings.json", "settings.json")
EOF
ls -la "$OUT" "$OUT/bundle"
