#!/usr/bin/env bash
# annotate-batch --workers 1 against --workers 2 on 20 copies (symlinks) of the test clip, alternated ROUNDS times
# in one run (this VM's speed drifts 10-30% between runs, so only side-by-side timings are compared).
# Usage: bash research/bench_batch.sh [METHOD=3dstn] [ROUNDS=2] [COPIES=20]
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
METHOD=${1:-3dstn}; ROUNDS=${2:-2}; COPIES=${3:-20}
CLIP=${FACEALIGN_DATA:-../shared/data}/video/obama.mp4
[ -f "$CLIP" ] || { echo "error: $CLIP not found (set FACEALIGN_DATA)" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/in"
for i in $(seq -w 1 "$COPIES"); do ln -s "$(realpath "$CLIP")" "$WORK/in/copy$i.mp4"; done
TIMEFORMAT="%R %U %S"
# CPU seconds the whole machine spent busy: other processes' share shows which rounds were disturbed
busy() { awk '/^cpu /{print ($2+$3+$4+$7+$8+$9)/100}' /proc/stat; }
for r in $(seq "$ROUNDS"); do
    for w in 1 2; do
        rm -rf "$WORK/out"
        b0=$(busy)
        t=$( { time python main.py annotate-batch "$WORK"/in/*.mp4 --out "$WORK/out" --methods "$METHOD" \
               --workers "$w" >/dev/null 2>&1 || true; } 2>&1 )
        read -r wall usr sys <<<"$t"
        other=$(awk -v a="$(busy)" -v b="$b0" -v u="$usr" -v s="$sys" 'BEGIN{printf "%.1f", a - b - u - s}')
        n=$(grep -c '"status": "done"' "$WORK/out/manifest.jsonl" || true)
        echo "round $r  --workers $w  ${wall} s  ($n/$COPIES inputs done; this command ${usr} s user + ${sys} s sys CPU;" \
             "other processes ${other} s CPU meanwhile)"
    done
done
