#!/usr/bin/env bash
# run_half.sh MOEC MODEL.moe STEPS - mixed precision on the cuda target, under cuda-emu.
#
# MODEL (an f32 model) is built three times: for the cpu target as it is, and for the cuda
# target with dtype = bf16 and dtype = fp16 added. Then:
#   - the half models' GEMMs read half copies: --emit kernels has cast calls writing bf16
#     (f16) tensors, and the decode program has none (it computes in f32);
#   - their kernels compile with nvcc for sm_80 and sm_90 (run_nvcc.sh; skipped without nvcc);
#   - STEPS training steps under cuda-emu give the cpu target's f32 losses within 1e-2
#     (bf16) and 2e-3 (fp16) relative, and gradient norms within 5e-2 and 1e-2, yet not
#     the same numbers (they do compute in the half type); the dropped fractions are not
#     compared: a gate logit that moves by a rounding may send a token elsewhere;
#   - fp16 logs its loss scale (65536 at the start) and whether each step was skipped, and
#     resuming from the checkpoint of step STEPS/2 gives the straight run's losses bit for bit
#     (the checkpoint carries the scaler: metadata loss_scale, scale_good, skipped_steps), and
#     the bf16 run's checkpoint, which has no scaler, resumes in fp16 with a fresh one;
#   - an fp16 model whose gradients overflow at the initial scale (weights of std 2, one
#     8-token sequence a step) skips such steps (the log: skipped, a null gradient norm),
#     halves the scale for the next step, and trains to the end;
#   - generate --check-cache passes from each checkpoint: the f32 decode program's logits
#     against the half forward's, within the half tolerance (seen on tests/e2e/small.moe:
#     2e-3 bf16, 3e-4 fp16).
set -euo pipefail
moec=$1; model=$2; steps=$3
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
bad=0
fail() { echo "FAIL: $*"; bad=1; }
"$moec" build "$model" -o "$work/cpu" --target cpu
"$work/cpu" train --steps "$steps" --log "$work/cpu.jsonl" > /dev/null
fields='select(.loss) | [.step, .loss, .grad_norm] | @tsv'
for dt in bf16 fp16; do
    # dtype goes into the model block's first line (the key may sit anywhere in the block)
    sed "0,/^model [^{]*{/s//&\n    dtype = $dt/" "$model" > "$work/$dt.moe"
    "$moec" build "$work/$dt.moe" --target cuda --emit kernels > "$work/$dt.kernels"
    h=$([ $dt = bf16 ] && echo bf16 || echo f16)
    casts=$(awk '/^kernels .*\(decode\)/ { dec = 1 } /^  cast\(/ { if (dec) d++; else t++ } END { printf "%d %d", t, d }' "$work/$dt.kernels")
    grep -q "^  cast(y=act:$h@" "$work/$dt.kernels" || fail "$dt: no cast writes an $h tensor"
    [ "${casts% *}" -gt 0 ] && [ "${casts#* }" = 0 ] || fail "$dt: casts in training and decoding: $casts (want some, none)"
    "$moec" build "$work/$dt.moe" -o "$work/$dt" --target cuda --no-kernel-check
    "$work/$dt" train --device cuda-emu --steps "$steps" --log "$work/$dt.jsonl" --checkpoint "$work/ck_$dt" > /dev/null
    tol=$([ $dt = bf16 ] && echo "1e-2 5e-2" || echo "2e-3 1e-2")
    paste <(jq -r "$fields" "$work/cpu.jsonl") <(jq -r "$fields" "$work/$dt.jsonl") | awk -v dt=$dt -v steps="$steps" \
        -v tl="${tol% *}" -v tg="${tol#* }" '
        function rel(a, b) { d = a - b; if (d < 0) d = -d; m = a < 0 ? -a : a; return m > 0 ? d / m : d }
        {
            n++
            if ($1 != $4) { printf "FAIL: %s: step %s against %s\n", dt, $1, $4; bad = 1 }
            if (rel($2, $5) > tl) { printf "FAIL: %s: step %d loss: cpu f32 %s, cuda-emu %s\n", dt, $1, $2, $5; bad = 1 }
            if (rel($3, $6) > tg) { printf "FAIL: %s: step %d gradient norm: cpu f32 %s, cuda-emu %s\n", dt, $1, $3, $6; bad = 1 }
            if (rel($2, $5) > worst) worst = rel($2, $5)
        }
        END {
            if (n != steps) { printf "FAIL: %s: %d logged steps, want %d\n", dt, n, steps; bad = 1 }
            if (worst < 1e-6) { printf "FAIL: %s: the losses are as close as f32 computes them (%.2g): no half precision\n", dt, worst; bad = 1 }
            if (!bad) printf "ok: %s: %d steps within %s of f32 (largest relative loss difference %.2g)\n", dt, n, tl, worst
            exit bad
        }' || bad=1
done
# fp16's loss scaler: logged, and carried through a checkpoint
jq -e -s '.[0].loss_scale == 65536 and all(.[]; (.skipped | type) == "boolean")' "$work/fp16.jsonl" > /dev/null ||
    fail "fp16: the log lacks loss_scale 65536 at step 1 or the skipped flags: $(head -c 300 "$work/fp16.jsonl")"
jq -e -s 'all(.[]; has("loss_scale") | not)' "$work/bf16.jsonl" > /dev/null || fail "bf16 logs a loss scale"
half=$((steps / 2))
mid=$(printf '%s/step-%08d.safetensors' "$work/ck_fp16" "$half")
[ -f "$mid" ] || fail "fp16: no checkpoint at step $half (the model's checkpoint_every must divide $half)"
head -c 4096 "$mid" | grep -aq '"loss_scale"' || fail "fp16: the checkpoint has no loss_scale metadata"
rm -f "$work"/ck_fp16/step-"$(printf %08d "$steps")".*
cp "$work/fp16.jsonl" "$work/straight.jsonl"
"$work/fp16" train --device cuda-emu --steps "$steps" --log "$work/fp16.jsonl" --checkpoint "$work/ck_fp16" --resume > /dev/null
cmp -s <(jq -c '[.step, .loss, .grad_norm, .loss_scale]' "$work/straight.jsonl") \
       <(jq -c '[.step, .loss, .grad_norm, .loss_scale]' "$work/fp16.jsonl") ||
    { fail "fp16: the run resumed at step $half differs from the straight run"; diff <(jq -c '[.step, .loss]' "$work/straight.jsonl") <(jq -c '[.step, .loss]' "$work/fp16.jsonl") | head; }
cat > "$work/overflow.moe" <<'EOF'
model overflow {
    vocab = 256  context = 8  layers = 2  hidden = 32  heads = 2  init_std = 2.0  dtype = fp16
    train { batch = 1  steps = 12  lr = 3e-3  warmup = 2  seed = 7 }
}
EOF
"$moec" build "$work/overflow.moe" -o "$work/overflow" --target cuda --no-kernel-check
"$work/overflow" train --device cuda-emu --log "$work/overflow.jsonl" > /dev/null 2> "$work/overflow.err" ||
    fail "fp16 overflow: training stopped: $(tail -3 "$work/overflow.err")"
jq -e -s 'length == 12 and any(.[]; .skipped) and all(.[]; .skipped == (.grad_norm == null)) and
          ([range(1; length) as $i | select(.[$i - 1].skipped) | .[$i].loss_scale == .[$i - 1].loss_scale / 2] | all)' \
    "$work/overflow.jsonl" > /dev/null ||
    fail "fp16 overflow: want a skipped step with a null norm and the scale halved after it: $(jq -c '[.step, .loss_scale, .skipped]' "$work/overflow.jsonl" | tr '\n' ' ')"
grep -q "fp16 gradients overflowed at loss scale 65536: the step is skipped and the scale is now 32768" "$work/overflow.err" ||
    fail "fp16 overflow: no message: $(cat "$work/overflow.err")"
for dt in bf16 fp16; do
    "$work/$dt" generate --device cuda-emu --checkpoint "$work/ck_$dt" --prompt "the cat sat on the mat" --check-cache \
        > "$work/cache_$dt" 2>&1 || { fail "$dt: generate --check-cache"; cat "$work/cache_$dt"; }
done
cp -r "$work/ck_bf16" "$work/ck_mixed"
"$work/fp16" train --device cuda-emu --steps $((steps + 2)) --log "$work/mixed.jsonl" --checkpoint "$work/ck_mixed" --resume \
    > /dev/null 2> "$work/mixed.err" || fail "fp16 from a bf16 checkpoint: $(tail -2 "$work/mixed.err")"
jq -e -s 'length == 2 and .[0].step == '$((steps + 1))' and all(.[]; .loss_scale == 65536)' "$work/mixed.jsonl" > /dev/null ||
    fail "fp16 from a bf16 checkpoint: want a fresh scale: $(cat "$work/mixed.jsonl" | head -c 300)"
# the half kernels compile for the GPUs (skipped without nvcc)
rc=0; bash "$here/run_nvcc.sh" "$moec" "$work/bf16.moe" "$work/fp16.moe" > "$work/nvcc.log" 2>&1 || rc=$?
case $rc in 0) echo "ok: the bf16 and fp16 kernels compile with nvcc for sm_80 and sm_90" ;;
            77) echo "skipped: nvcc (not installed)" ;;
            *) cat "$work/nvcc.log"; fail "the half kernels do not compile with nvcc" ;; esac
[ $bad = 0 ] && echo "ok: mixed precision under cuda-emu"
exit $bad
