#!/usr/bin/env bash
# demo.sh - the main job: build moec, compile examples/tiny.moe, train it on the
# built-in synthetic corpus for a few minutes on the CPU, print a generated sample, and draw
# the training log (out/tiny-train.png).
#   STEPS=N bash scripts/demo.sh   to change the number of training steps
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target moec moert moert_main
mkdir -p out
./build/moec stats examples/tiny.moe
./build/moec build examples/tiny.moe -o out/tiny
./out/tiny info
rm -rf out/tiny-ckpt
./out/tiny train --data synthetic --steps "${STEPS:-600}" --checkpoint out/tiny-ckpt --log out/tiny-train.jsonl
echo "--- eval on the synthetic corpus:"
./out/tiny eval --checkpoint out/tiny-ckpt --data synthetic --batch 8
echo "--- sample (temperature 0.8, top-k 40):"
./out/tiny generate --checkpoint out/tiny-ckpt --prompt "The " --tokens 300 --temperature 0.8 --top-k 40
/usr/bin/python3 scripts/plot.py out/tiny-train.jsonl -o out/tiny-train.png
