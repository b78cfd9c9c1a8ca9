#!/bin/sh
# run_case.sh - one golden test: build a case with moec, run eval and grad, compare.
#
#   run_case.sh MOEC CASE_DIR WORK_DIR ST_COMPARE JSON_COMPARE [ST_COMPARE_ARGS...]
#
# Builds CASE_DIR/model.moe into WORK_DIR/<case>.exe, then
#   <case>.exe eval --checkpoint weights.safetensors --data tokens.bin --batch 4 --seq 16
#     -> stdout must match CASE_DIR/eval.json (json_compare: reals rtol 1e-5, integers exact)
#   <case>.exe grad ... --out WORK_DIR/<case>.grads.safetensors
#     -> must match CASE_DIR/grads.safetensors (st_compare, per-tensor rtol; extra args such
#        as --rtol or --tol GLOB=R are passed on)
# A distillation case (CASE_DIR/teacher.safetensors exists; model.moe holds the teacher, then
# the student) builds the student with `--model <case>` and passes
# `--teacher CASE_DIR/teacher.safetensors` to eval (which must then print kd_loss) and grad
# (whose loss then has weight * kd_loss).
# Both are run even when the first fails, so one ctest log shows everything. The device is
# the executable's default unless MOE_REF_DEVICE is set (cpu, cuda, cuda-emu); the target is
# moec's default unless MOE_REF_TARGET is set (cpu, cuda). MOE_REF_RECOMPUTE=1 builds the case's
# model with train.recompute = true (a model derived from it): the same goldens must hold, since
# recomputing the blocks in the backward changes no value. MOEC "prebuilt" skips the build
# and runs WORK_DIR/<case>.exe as it is (bench/gpu.sh: executables built elsewhere).
# Exit 0 when both match, 1 otherwise.
set -u
if [ $# -lt 5 ]; then
    echo "usage: $0 MOEC CASE_DIR WORK_DIR ST_COMPARE JSON_COMPARE [ST_COMPARE_ARGS...]" >&2
    exit 2
fi
moec=$1 case_dir=$2 work=$3 st_compare=$4 json_compare=$5
shift 5
name=$(basename "$case_dir")
exe=$work/$name.exe
mkdir -p "$work" || exit 1
dev=""
if [ -n "${MOE_REF_DEVICE:-}" ]; then dev="--device $MOE_REF_DEVICE"; fi
# a student: build it by name (its teacher is in the same file) and give it the teacher's weights
# (${v:+--flag} ${v:+"$v"} is the flag and its quoted value when v is set, nothing otherwise)
model="" teacher=""
if [ -f "$case_dir/teacher.safetensors" ]; then
    model=$name
    teacher=$case_dir/teacher.safetensors
fi

src=$case_dir/model.moe
if [ "${MOE_REF_RECOMPUTE:-0}" = 1 ]; then
    base=$(sed -n 's/^model \([A-Za-z_0-9]*\).*/\1/p' "$src" | tail -n 1)
    { cat "$src"; printf 'model %s_recompute : %s {\n    train { recompute = true }\n}\n' "$base" "$base"; } \
        > "$work/$name.recompute.moe" || exit 1
    src=$work/$name.recompute.moe model=${base}_recompute
fi
if [ "$moec" != prebuilt ]; then
    echo "== $name: build"
    rm -f "$exe"
    "$moec" build "$src" -o "$exe" ${model:+--model} ${model:+"$model"} --target "${MOE_REF_TARGET:-cpu}" --no-kernel-check || { echo "FAIL: moec build"; exit 1; }
fi

status=0
echo "== $name: eval"
# shellcheck disable=SC2086  # $dev is empty or two words
if "$exe" eval --checkpoint "$case_dir/weights.safetensors" --data "$case_dir/tokens.bin" \
        --batch 4 --seq 16 ${teacher:+--teacher} ${teacher:+"$teacher"} $dev > "$work/$name.eval.json"; then
    cat "$work/$name.eval.json"
    "$json_compare" "$case_dir/eval.json" "$work/$name.eval.json" || status=1
else
    echo "FAIL: eval exited with $?"; status=1
fi

echo "== $name: grad"
rm -f "$work/$name.grads.safetensors"
# shellcheck disable=SC2086
if "$exe" grad --checkpoint "$case_dir/weights.safetensors" --data "$case_dir/tokens.bin" \
        --out "$work/$name.grads.safetensors" --batch 4 --seq 16 \
        ${teacher:+--teacher} ${teacher:+"$teacher"} $dev; then
    "$st_compare" "$@" "$case_dir/grads.safetensors" "$work/$name.grads.safetensors" || status=1
else
    echo "FAIL: grad exited with $?"; status=1
fi
[ $status -eq 0 ] && echo "== $name: ok" || echo "== $name: FAIL"
exit $status
