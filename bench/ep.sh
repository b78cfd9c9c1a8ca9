#!/usr/bin/env bash
# ep.sh [MOEC] - expert parallelism against data parallelism on this host: each model of
# bench/models/ep.moe trains 12 steps on 2 ranks (one thread each), the layouts interleaved
# round by round (this machine is noisy); prints per model and layout the median step time of
# the last 10 steps over the rounds, the parameter bytes a rank holds, and rank 0's all-to-all
# messages and bytes per step. Results go to bench/results/ep.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
moec=${1:-$here/../build-bench/moec}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
models="ep_dp ep_ep wide_dp wide_ep"
for m in $models; do "$moec" build "$here/models/ep.moe" --model $m -o "$work/$m"; done
awk 'BEGIN { for (i = 1; i <= 80000; i++) printf "%d squared is %d; ", i, i * i }' > "$work/text.txt"
for round in 1 2 3; do
  for m in $models; do
    mpirun -np 2 "$work/$m" train --data "$work/text.txt" --log "$work/$m.$round.jsonl" 2> /dev/null
  done
done
out=$here/results/ep.md
{
  echo "# Expert parallelism on one host: 2 ranks x 1 thread, $(nproc --all) cores ($(date -u +%Y-%m-%d))"
  echo
  echo "| model | layout | step ms (median) | parameter MiB per rank | all-to-all messages / step | all-to-all MiB / step |"
  echo "|---|---|---|---|---|---|"
  for m in $models; do
    ms=$(cat "$work/$m".*.jsonl | jq -s '[.[] | select(.step > 2) | .step_ms] | sort | .[length / 2 | floor]')
    mib=$("$work/$m" info --json | jq '.param_bytes / 1048576 | . * 100 | round / 100')
    a2a=$(jq -s -r '.[-1].alltoall // {messages: "-", bytes: null} | "\(.messages) | \(if .bytes then (.bytes / 1048576 * 100 | round / 100) else "-" end)"' "$work/$m.1.jsonl")
    layout=$([[ $m == *_ep ]] && echo "expert = 2" || echo "data-parallel")
    echo "| ${m%_*} | $layout | $(printf %.1f "$ms") | $mib | $a2a |"
  done
} > "$out"
cat "$out"
