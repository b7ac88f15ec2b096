#!/usr/bin/env bash
# make demo: start `voxloop serve` on the bundled models, speak a question to it with
# `voxloop client` (streamed at real-time pace, as a microphone would), save the answer and
# transcribe what it says.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=out
QUESTION=${QUESTION:-"What is the capital of France?"}
VOICE=${VOICE:-festival:slt-hts}
ENGINE=${ENGINE:-hybrid}  # hybrid: the student for speech, the cascade for text; native; cascade
mkdir -p "$OUT"

"$BIN/voxloop" tts --voice "$VOICE" --text "$QUESTION" --out "$OUT/demo-question.wav"

"$BIN/voxloop" serve --engine "$ENGINE" --port 0 >"$OUT/demo-server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT

URL=""
for _ in $(seq 1 240); do  # models load in a few seconds; allow for a slow first start
    URL=$(sed -n 's/.*event=listening url=\([^ ]*\).*/\1/p' "$OUT/demo-server.log" | head -n1)
    [ -n "$URL" ] && break
    if ! kill -0 $SERVER 2>/dev/null; then
        echo "demo: the server failed to start:" >&2; cat "$OUT/demo-server.log" >&2; exit 1
    fi
    sleep 0.5
done
[ -n "$URL" ] || { echo "demo: the server did not start in 120 s; the end of its log" \
    "($OUT/demo-server.log):" >&2; tail -n 20 "$OUT/demo-server.log" >&2; exit 1; }
echo "server        $URL, engine $ENGINE (log: $OUT/demo-server.log)"

"$BIN/voxloop" client --url "$URL" --input "$OUT/demo-question.wav" --output "$OUT/demo-answer.wav"
# what a listener hears: the answer audio through Whisper (the engines' transcript above is
# what they meant to say; the student can say it less clearly than it writes it)
echo "heard         $("$BIN/voxloop" asr "$OUT/demo-answer.wav" 2>/dev/null || echo '(asr failed)')"
