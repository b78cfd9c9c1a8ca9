#!/bin/sh
# front_parse_bench.sh [MOEC] [BYTES] - times `moec check` on a generated .moe file
# (default 10 MiB; the target is under 1 s). Prints the best of 3 runs.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
moec=${1:-$here/../build/moec}
bytes=${2:-10485760}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sh "$here/../tests/front/gen_big.sh" "$tmp/big.moe" "$bytes"
best=""
for run in 1 2 3; do
    start=$(date +%s%N)
    "$moec" check "$tmp/big.moe"
    end=$(date +%s%N)
    ms=$(( (end - start) / 1000000 ))
    if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
done
size=$(wc -c <"$tmp/big.moe")
models=$(grep -c '^model' "$tmp/big.moe")
echo "moec check: $size bytes, $models models: best of 3 = $best ms (target < 1000 ms)"
