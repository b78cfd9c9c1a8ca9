#!/usr/bin/env bash
# mos_small.sh - the Mixture-of-Students flow of DeepSpeed-MoE on the CPU (examples/mos_small.moe):
#   1. train the PR-MoE teacher on the built-in corpus;
#   2. train its student (one block fewer) with staged KD from the teacher's checkpoint;
#   3. train the same student alone, on the same data and steps;
# then evaluate the three on the same windows, time the teacher's share of a KD step, and plot
# the LM losses (out/mos/mos.png; README.md shows docs/img/mos.png from a run of this script).
#   STEPS=N bash examples/mos_small.sh      (default 600; stop_step is 450 of the .moe)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-600}
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target moec moert moert_main
out=out/mos
mkdir -p "$out"
for m in mos_teacher mos_small mos_small_alone; do
    ./build/moec build examples/mos_small.moe --model "$m" -o "$out/$m"
done
train() {   # executable, log name, extra flags
    local exe=$1 log=$2; shift 2
    "$out/$exe" train --data synthetic --steps "$steps" --checkpoint "$out/$log-ckpt" --overwrite \
        --log "$out/$log.jsonl" "$@"
}
train mos_teacher teacher
train mos_small student-kd --teacher "$out/teacher-ckpt"
train mos_small_alone student-alone
echo "--- evaluation on the first 50 batches of the corpus (evaluation mode):"
for r in teacher:mos_teacher student-kd:mos_small student-alone:mos_small_alone; do
    log=${r%%:*} exe=${r#*:}
    printf '%-14s ' "$log"
    "$out/$exe" eval --checkpoint "$out/$log-ckpt" --data synthetic --max-batches 50 | jq -c '{lm_loss, perplexity}'
done
echo "--- the teacher's share of a distillation step:"
"$out/mos_small" bench --train --teacher "$out/teacher-ckpt" --steps 10 | head -2
"$out/mos_small_alone" bench --train --steps 10 | head -1
echo "--- step times from the student's log (ms, median): with the teacher, after stop_step"
jq -s -r '[.[] | select(.teacher == true) | .step_ms] | sort | .[length / 2 | floor]' "$out/student-kd.jsonl"
jq -s -r '[.[] | select(.teacher == false) | .step_ms] | sort | .[length / 2 | floor]' "$out/student-kd.jsonl"
/usr/bin/python3 scripts/plot.py --loss lm_loss --smooth 25 "$out/teacher.jsonl" "$out/student-kd.jsonl" \
    "$out/student-alone.jsonl" -o "$out/mos.png"
