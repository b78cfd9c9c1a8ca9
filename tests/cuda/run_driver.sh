#!/usr/bin/env bash
# run_driver.sh MOEC MOCK.so MODEL.moe - the cuda device (runtime/device_cuda.c) through a
# stand-in driver and cuBLAS (mock_cuda.c) that run the kernels on the emulator: a short
# training run under --device cuda gives --device cuda-emu's figures bit for bit, with the
# kernels compiled by NVRTC at start (a cold kernel cache) and then found in the cache; a
# bf16 model's GEMMs go through cublasGemmEx, again as cuda-emu's bit for bit, and its ops pass
# `verify --against cuda-emu` (bf16 tensors with their own tolerance) unless the stand-in
# cuBLAS is made to err, when the GEMMs fail; a
# failing driver call stops the command with a message naming the call, its error, and the
# file and line, and a non-zero exit; the device frees what it allocated. An executable
# built with --target all runs its cuda program where a GPU answers and its cpu program
# where none does.
set -uo pipefail
moec=$1; mock=$2; model=$3
steps=${MOE_DRIVER_STEPS:-3}        # training steps of each compared run (1 under the sanitizers)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
"$moec" build "$model" -o "$work/m" --target cuda --no-kernel-check || exit 1
export MOEC_LIBCUDA=$mock MOEC_LIBCUBLAS=$mock MOEC_CACHE_DIR=$work/cache
fields='select(.loss) | [.step, .loss, .lm_loss, .aux_loss, .grad_norm, .dropped_fraction] | @tsv'
"$work/m" train --steps $steps --log "$work/emu.jsonl" --device cuda-emu > /dev/null 2>&1 || bad "cuda-emu run"
for run in cold warm; do
    "$work/m" train --steps $steps --log "$work/$run.jsonl" --device cuda > /dev/null 2> "$work/$run.err" || bad "$run run: $(cat "$work/$run.err")"
    if ! cmp -s <(jq -r "$fields" "$work/emu.jsonl") <(jq -r "$fields" "$work/$run.jsonl"); then
        bad "$run run under --device cuda differs from cuda-emu:"; diff <(jq -r "$fields" "$work/emu.jsonl") <(jq -r "$fields" "$work/$run.jsonl")
    fi
    grep -q "never freed" "$work/$run.err" && bad "$run run: $(grep "never freed" "$work/$run.err")"
done
ls "$work"/cache/kernels/*-sm_90-*.cubin > /dev/null 2>&1 || bad "no sm_90 cubin in the kernel cache"
[ "$(ls "$work"/cache/kernels | wc -l)" = 1 ] || bad "the warm run compiled again: $(ls "$work"/cache/kernels)"
"$work/m" info --device cuda | grep -qx "  device cuda: mock GPU 0, the cuda-emu emulator (compute capability 9.0)" \
    || bad "info --device cuda does not describe the GPU"

# a bf16 model: the GEMMs' half operands through cublasGemmEx
sed "0,/^model [^{]*{/s//&\n    dtype = bf16/" "$model" > "$work/bf16.moe"
"$moec" build "$work/bf16.moe" -o "$work/bf16" --target cuda --no-kernel-check || exit 1
"$work/bf16" train --steps $steps --log "$work/bf16_emu.jsonl" --device cuda-emu > /dev/null 2>&1 || bad "bf16: cuda-emu run"
"$work/bf16" train --steps $steps --log "$work/bf16_cuda.jsonl" --device cuda > /dev/null 2> "$work/bf16.err" ||
    bad "bf16: --device cuda: $(cat "$work/bf16.err")"
cmp -s <(jq -r "$fields" "$work/bf16_emu.jsonl") <(jq -r "$fields" "$work/bf16_cuda.jsonl") ||
    bad "bf16: the run under --device cuda differs from cuda-emu"
"$work/bf16" verify --device cuda --against cuda-emu --batch 2 > "$work/verify" 2>&1 || bad "bf16 verify: $(grep -E 'FAIL|verify' "$work/verify")"
grep -q "^  h.0.ln_1 .* bf16 nmse 0.00e+00" "$work/verify" && tail -1 "$work/verify" | grep -q "all within their tolerance$" ||
    bad "bf16 verify: no bf16 tensor compared, or not all within: $(tail -3 "$work/verify")"
MOCK_CUBLAS_SKEW=1 "$work/bf16" verify --device cuda --against cuda-emu --batch 2 > "$work/verify" 2>&1 &&
    bad "bf16 verify passes a skewed cuBLAS"
grep -q "^  h.0.attn.c_attn .* FAIL$" "$work/verify" && ! grep -q "^  h.0.ln_1 .* FAIL$" "$work/verify" ||
    bad "bf16 verify with a skewed cuBLAS: the GEMMs are not (only) named: $(grep FAIL "$work/verify" | head -3)"

# --target all: the GPU by default where there is one (here, the stand-in), else the CPU
"$moec" build "$model" -o "$work/all" --target all --no-kernel-check || exit 1
carries="(this executable carries cpu, cuda)"
[ "$("$work/all" info | head -1)" = "model small (from $model), target cuda $carries" ] || bad "all: $("$work/all" info | head -1)"
[ "$(MOEC_LIBCUDA=$work/none.so "$work/all" info | head -1)" = "model small (from $model), target cpu $carries" ] \
    || bad "all without a driver: $(MOEC_LIBCUDA=$work/none.so "$work/all" info | head -1)"
"$work/all" train --steps $steps --log "$work/all.jsonl" > /dev/null 2>&1 || bad "all: train on the GPU"
cmp -s <(jq -r "$fields" "$work/emu.jsonl") <(jq -r "$fields" "$work/all.jsonl") || bad "all: the GPU run differs from cuda-emu"
MOEC_LIBCUDA=$work/none.so "$work/all" train --steps $steps --log "$work/allcpu.jsonl" > /dev/null 2>&1 || bad "all: train on the CPU"
paste <(jq -r "$fields" "$work/emu.jsonl") <(jq -r "$fields" "$work/allcpu.jsonl") | awk -v steps="$steps" '
    function rel(a, b) { d = a - b; if (d < 0) d = -d; return d / (a < 0 ? -a : a) }
    { n++; if (rel($2, $8) > 1e-4) bad = 1 }
    END { exit bad || n != steps }' || bad "all: the CPU run's losses are not cuda-emu's"

# expect ENV... -- MESSAGE: train fails with exit 1 and MESSAGE on stderr
expect() {
    local envs=() msg
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    msg=$2
    env "${envs[@]}" "$work/m" train --steps 2 --device cuda > "$work/out" 2> "$work/err"
    local rc=$?
    [ $rc = 1 ] || bad "${envs[*]}: exit $rc, want 1"
    grep -qF -- "$msg" "$work/err" || bad "${envs[*]}: want '$msg' in: $(cat "$work/err")"
    [ -s "$work/out" ] && bad "${envs[*]}: printed steps after the failure: $(cat "$work/out")"
}
hint="; without a GPU, --device cuda-emu runs the same kernels on the CPU"
expect MOEC_LIBCUDA=$work/none.so -- "device cuda: no CUDA driver: cannot load $work/none.so ($work/none.so: cannot open shared object file: No such file or directory)$hint"
expect MOCK_CUDA_NO_DEVICE=1 -- "device cuda: cuInit failed: CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected) at device_cuda.c:"
expect MOCK_CUDA_CC=7.5 -- "device cuda: mock GPU 0, the cuda-emu emulator has compute capability 7.5; the cuda target needs 8.0 or newer$hint"
expect MOCK_CUDA_FAIL=cuMemAlloc -- "on device cuda: cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY (out of memory) at device_cuda.c:"
expect MOCK_CUDA_FAIL=cuModuleLoadData -- "device cuda: cuModuleLoadData failed: CUDA_ERROR_OUT_OF_MEMORY"
expect MOCK_CUDA_FAIL=cuLaunchKernel -- "device cuda: launch of k0_embed_fwd_p0 failed: cuLaunchKernel failed: CUDA_ERROR_OUT_OF_MEMORY (out of memory) at device_cuda.c:"
expect MOCK_CUDA_FAIL=cuMemcpyDtoHAsync -- "device cuda: download failed: cuMemcpyDtoHAsync failed:"
# a cache entry that is not a CUDA image is refused by the driver, not run
for f in "$work"/cache/kernels/*.cubin; do printf 'MOECUBIN' > "$f"; done
"$work/m" train --steps 1 --device cuda > /dev/null 2> "$work/err" || bad "a corrupt cache entry is not rebuilt: $(cat "$work/err")"
[ $fail = 0 ] && echo "ok: --device cuda through the stand-in driver matches cuda-emu; driver failures are reported; --target all picks its device"
exit $fail
