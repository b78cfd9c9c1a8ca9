#!/usr/bin/env bash
# ep.sh [MOEC] - the layouts of several processes on this host: each 2-rank model of
# bench/models/ep.moe (data-parallel, expert = 2, tensor = 2, expert_slicing = 2; the sliced
# ones take the batch of both ranks, as the two ranks of a tensor group read the same
# sequences) trains 12 steps on 2 ranks (one thread each), the layouts interleaved round by
# round (this machine is noisy); prints per model and layout the median step time of the last
# 10 steps over the rounds, the parameter bytes a rank holds, and rank 0's all-to-all messages
# and bytes per step. Then expert = 4 on 4 ranks, flat and hierarchical (2 "nodes" of 2), 3
# steps: rank 0's messages and bytes per exchange (an MoE layer makes 5 a step: the counts,
# the rows there and back, forward and backward). Results go to bench/results/ep.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
moec=${1:-$here/../build-bench/moec}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
models="ep_dp ep_ep ep_tp ep_xs wide_dp wide_ep"
for m in $models ep4_flat ep4_hier; do "$moec" build "$here/models/ep.moe" --model $m -o "$work/$m"; done
awk 'BEGIN { for (i = 1; i <= 80000; i++) printf "%d squared is %d; ", i, i * i }' > "$work/text.txt"
for round in 1 2 3; do
  for m in $models; do
    mpirun -np 2 "$work/$m" train --data "$work/text.txt" --log "$work/$m.$round.jsonl" 2> /dev/null
  done
  # the gradient sums after the backward instead of while it runs
  mpirun -np 2 "$work/ep_dp" train --data "$work/text.txt" --log "$work/nov.$round.jsonl" --no-overlap 2> /dev/null
done
out=$here/results/ep.md
{
  echo "# Several processes on one host: 2 ranks x 1 thread, $(nproc --all) cores ($(date -u +%Y-%m-%d))"
  echo
  echo "| model | layout | step ms (median) | parameter MiB per rank | all-to-all messages / step | all-to-all MiB / step |"
  echo "|---|---|---|---|---|---|"
  for m in $models; do
    ms=$(cat "$work/$m".*.jsonl | jq -s '[.[] | select(.step > 2) | .step_ms] | sort | .[length / 2 | floor]')
    mib=$("$work/$m" info --json | jq '.param_bytes / 1048576 | . * 100 | round / 100')
    a2a=$(jq -s -r '.[-1].alltoall // {messages: "-", bytes: null} | "\(.messages) | \(if .bytes then (.bytes / 1048576 * 100 | round / 100) else "-" end)"' "$work/$m.1.jsonl")
    case $m in
      *_ep) layout="expert = 2";; *_tp) layout="tensor = 2 (batch 8)";; *_xs) layout="expert_slicing = 2 (batch 8)";;
      *) layout="data-parallel";;
    esac
    echo "| ${m%_*} | $layout | $(printf %.1f "$ms") | $mib | $a2a |"
    if [ $m = ep_dp ]; then
      ms=$(cat "$work"/nov.*.jsonl | jq -s '[.[] | select(.step > 2) | .step_ms] | sort | .[length / 2 | floor]')
      echo "| ep | data-parallel, --no-overlap | $(printf %.1f "$ms") | $mib | - | - |"
    fi
  done
  echo
  echo "The all-to-all of expert = 4 on 4 ranks (8 experts, 2 MoE layers: 10 exchanges a step), rank 0:"
  echo
  echo "| all-to-all | messages / exchange | KiB / exchange |"
  echo "|---|---|---|"
  for m in ep4_flat ep4_hier; do
    mpirun --oversubscribe -np 4 "$work/$m" train --data "$work/text.txt" --steps 3 --log "$work/$m.jsonl" 2> /dev/null
    jq -s -r '.[-1].alltoall | "| '"${m#ep4_}"' | \(.messages / 10) | \(.bytes / 10 / 1024 * 10 | round / 10) |"' "$work/$m.jsonl"
  done
} > "$out"
cat "$out"
