#!/usr/bin/env bash
# run_ops.sh MOEC MOCK.so MODEL.moe... - the op-level test (ggml's test-backend-ops, over
# real models): each model, built with --target all, runs `verify` under cuda-emu, with the
# linear layers on the library GEMM or as generated kernels (the first model both ways, the
# others taking turns, to keep the test short): every op of the cuda program, given the cpu
# program's inputs, must write what the cpu program writes (f32 nmse <= 1e-7, i32 exactly).
# Then the check must catch an error: through the stand-in driver, whose cuBLAS is made to
# err slightly (MOCK_CUBLAS_SKEW), verify must fail and name the linear layers.
set -uo pipefail
moec=$1; mock=$2; shift 2
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
export MOEC_CACHE_DIR=${MOEC_CACHE_DIR:-$work/cache}
fail=0
i=0
for model in "$@"; do
    forms="cublas generated"
    [ $i -gt 0 ] && { [ $((i % 2)) = 1 ] && forms=generated || forms=cublas; }
    i=$((i + 1))
    for gemm in $forms; do
        "$moec" build "$model" -o "$work/m" --target all --gemm $gemm --no-kernel-check || { echo "FAIL: build $model"; fail=1; continue; }
        if ! "$work/m" verify --device cuda-emu --batch 2 > "$work/out" 2>&1; then
            echo "FAIL: $model --gemm $gemm:"; grep -E "FAIL|verify:" "$work/out"; fail=1; continue
        fi
        checked=$(grep -c "^  " "$work/out")
        summary=$(tail -1 "$work/out")
        case $summary in *", $checked tensors: all within their tolerance") ;; *) echo "FAIL: $model: '$summary' after $checked lines"; fail=1 ;; esac
        [ "$checked" -gt 20 ] || { echo "FAIL: $model: only $checked tensors checked"; fail=1; }
        echo "ok: $model --gemm $gemm: $summary"
    done
done
# a slightly wrong GEMM is caught, and the ops it feeds are named
"$moec" build "$1" -o "$work/m" --target all --no-kernel-check || exit 1
MOEC_LIBCUDA=$mock MOEC_LIBCUBLAS=$mock MOCK_CUBLAS_SKEW=1 "$work/m" verify --device cuda --batch 2 > "$work/out" 2>&1
rc=$?
[ $rc = 1 ] || { echo "FAIL: a skewed cuBLAS passed verify (exit $rc)"; fail=1; }
grep -q "^  h.0.attn.c_attn .* FAIL$" "$work/out" || { echo "FAIL: the skewed GEMM of h.0.attn.c_attn is not named:"; head -20 "$work/out"; fail=1; }
grep -q "^  h.0.ln_1 .* FAIL$" "$work/out" && { echo "FAIL: an op without a GEMM was blamed"; fail=1; }
exit $fail
