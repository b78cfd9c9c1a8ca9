#!/usr/bin/env bash
# run_train.sh MOEC MODEL.moe STEPS - a short training run of the cuda target's kernels under
# --device cuda-emu, with the linear layers on the library GEMM (cuBLAS's entry, OpenBLAS
# here) and as generated kernels, gives the cpu target's losses: per step, the total loss,
# the LM loss and the gradient norm agree within a relative 1e-4 (the kernels sum in
# different orders; seen: 2e-8 after 20 steps of tests/e2e/small.moe), and the dropped
# fraction exactly. The build compiles the kernels with NVRTC unless --no-kernel-check.
# Then the decode program on cuda-emu, from the cpu run's checkpoint: three sequences in
# three KV-cache slots decode greedily to the cpu's tokens, and --check-cache (each slot's
# cached logits against a full forward; the model's evaluation never drops) agrees within
# 1e-4.
set -euo pipefail
moec=$1; model=$2; steps=$3
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
"$moec" build "$model" -o "$work/cpu" --target cpu
"$work/cpu" train --steps "$steps" --log "$work/cpu.jsonl" --checkpoint "$work/ck" > /dev/null
fields='select(.loss) | [.step, .loss, .lm_loss, .grad_norm, .dropped_fraction] | @tsv'
bad=0
for gemm in cublas generated; do
    # the first build compiles the kernels with NVRTC (sm_80, sm_90) as moec build does by
    # default; the second is told not to
    check=$([ $gemm = generated ] && echo --no-kernel-check || true)
    "$moec" build "$model" -o "$work/emu" --target cuda --gemm $gemm $check --timings > "$work/timings" 2> "$work/build.err"
    if [ -n "$check" ]; then
        jq -e '.nvrtc_ms == 0' "$work/timings" > /dev/null || { echo "FAIL: --no-kernel-check ran NVRTC: $(cat "$work/timings")"; bad=1; }
    elif ! grep -q "NVRTC (libnvrtc.so) was not found" "$work/build.err"; then
        jq -e '.nvrtc_ms > 0 or .nvrtc_cached == 1' "$work/timings" > /dev/null || { echo "FAIL: no build-time NVRTC compile: $(cat "$work/timings")"; bad=1; }
    fi
    "$work/emu" train --steps "$steps" --log "$work/emu.jsonl" --device cuda-emu > /dev/null
    paste <(jq -r "$fields" "$work/cpu.jsonl") <(jq -r "$fields" "$work/emu.jsonl") | awk -v steps="$steps" -v gemm=$gemm '
        function rel(a, b) { d = a - b; if (d < 0) d = -d; m = a < 0 ? -a : a; return m > 0 ? d / m : d }
        {
            n++
            if ($1 != $6) { printf "FAIL: step %s against %s\n", $1, $6; bad = 1 }
            for (i = 2; i <= 4; i++) if (rel($i, $(i + 5)) > 1e-4) { printf "FAIL: --gemm %s: step %d field %d: cpu %s, cuda-emu %s\n", gemm, $1, i, $i, $(i + 5); bad = 1 }
            if ($5 != $10) { printf "FAIL: --gemm %s: step %d dropped fraction: cpu %s, cuda-emu %s\n", gemm, $1, $5, $10; bad = 1 }
            last = sprintf("step %d: loss cpu %s, cuda-emu %s", $1, $2, $7)
        }
        END {
            if (n != steps) { printf "FAIL: %d logged steps, want %d\n", n, steps; bad = 1 }
            if (!bad) print "ok: --gemm " gemm ": " n " steps agree; " last
            exit bad
        }' || bad=1
    [ $gemm = cublas ] && cp "$work/emu" "$work/emu_cublas"
done
printf '"the cat sat"\n"on a mat"\n"x"\n' > "$work/prompts.jsonl"
gen() { "$1" generate --checkpoint "$work/ck" --prompts "$work/prompts.jsonl" --batch 3 --tokens 12 --temperature 0 "${@:2}" 2> /dev/null; }
if ! cmp -s <(gen "$work/cpu") <(gen "$work/emu_cublas" --device cuda-emu); then
    echo "FAIL: greedy decoding of 3 slots differs between cpu and cuda-emu:"; diff <(gen "$work/cpu") <(gen "$work/emu_cublas" --device cuda-emu); bad=1
fi
"$work/emu_cublas" generate --checkpoint "$work/ck" --prompt "the cat sat on" --check-cache --batch 3 --device cuda-emu \
    > "$work/cache.json" 2> "$work/cache.err" || { echo "FAIL: --check-cache on cuda-emu: $(cat "$work/cache.err")"; bad=1; }
jq -e '.sequences == 3 and .eval_dropped == 0 and .max_abs_diff <= 1e-4' "$work/cache.json" > /dev/null \
    || { echo "FAIL: --check-cache on cuda-emu: $(cat "$work/cache.json")"; bad=1; }
[ $bad = 0 ] && echo "ok: cuda-emu decodes 3 slots as the cpu does; its KV cache matches its full forward"
exit $bad
