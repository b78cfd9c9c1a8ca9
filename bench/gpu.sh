#!/usr/bin/env bash
# gpu.sh - the cuda target on a real GPU: the reference goldens under --device cuda, a loss
# curve against the CPU, and throughput with per-kernel times and achieved GEMM TFLOP/s.
#
#   bash bench/gpu.sh pack DIR   here, no GPU needed: build the executables into DIR
#   bash bench/gpu.sh run DIR    on the GPU machine: run them; results go to $OUT (or
#                                bench/results/gpu): gpu.md (the tables), gpu.log, and
#                                raw.tar.gz (every log and JSON); under 8 minutes
#   bash bench/gpu.sh all        a GPU machine with moec's build dependencies: both
# GPU_MODELS (default "tiny gpu_medium tiny_bf16 gpu_medium_bf16") and GPU_TINY_STEPS (300)
# shorten a run.
#
# pack needs a built moec (build/moec, or MOEC=...). Its executables carry both programs
# (--target all) and are compiled for x86-64-v3 (MOEC_MARCH), and DIR also holds the shared
# libraries they need (OpenBLAS, jansson, the OpenMP and Fortran runtimes), the reference
# cases and the comparators: `run` needs only a GPU, its driver, NVRTC and cuBLAS.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MOEC=${MOEC:-$ROOT/build/moec}
REFBIN=${REFBIN:-$ROOT/build/tests/reference}
mode=${1:-}; dir=${2:-$ROOT/.gpu}
log() { echo "[gpu.sh $(date +%H:%M:%S)] $*" >&2; }

pack() {
    [ -x "$MOEC" ] || { echo "gpu.sh: no moec at $MOEC (build it, or set MOEC)" >&2; exit 1; }
    rm -rf "$dir" && mkdir -p "$dir/bin" "$dir/lib" "$dir/ref" || exit 1
    export MOEC_MARCH=${MOEC_MARCH:-x86-64-v3} MOEC_CACHE_DIR=$dir/kernel-cache
    log "building the benchmark models (--target all, -march=$MOEC_MARCH)"
    "$MOEC" build "$ROOT/examples/tiny.moe" -o "$dir/bin/tiny" --target all || exit 1
    "$MOEC" build "$ROOT/bench/models/gpu_medium.moe" -o "$dir/bin/gpu_medium" --target all || exit 1
    log "their bf16 forms (--target cuda: --target all computes in fp32)"
    for m in examples/tiny bench/models/gpu_medium; do
        sed "0,/^model [^{]*{/s//&\n    dtype = bf16/" "$ROOT/$m.moe" > "$dir/$(basename $m)_bf16.moe"
        "$MOEC" build "$dir/$(basename $m)_bf16.moe" -o "$dir/bin/$(basename $m)_bf16" --target cuda || exit 1
    done
    log "building the reference cases (--target cuda)"
    for c in "$ROOT"/tests/reference/cases/*/; do
        c=${c%/}
        "$MOEC" build "$c/model.moe" -o "$dir/ref/$(basename "$c").exe" --target cuda || exit 1
        mkdir -p "$dir/ref/cases/$(basename "$c")"
        cp "$c"/*.json "$c"/*.safetensors "$c"/tokens.bin "$dir/ref/cases/$(basename "$c")/"
    done
    cp "$REFBIN/st_compare" "$REFBIN/json_compare" "$ROOT/tests/reference/run_case.sh" "$dir/ref/" || exit 1
    # the shared libraries beyond the C library's own
    ldd "$dir/bin/tiny" "$dir/ref/st_compare" | awk '$3 ~ /^\// {print $3}' | sort -u | while read -r lib; do
        case $(basename "$lib") in libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*) ;; *) cp -L "$lib" "$dir/lib/" ;; esac
    done
    rm -rf "$dir/kernel-cache"
    log "packed: $(du -sh "$dir" | cut -f1) in $dir"
}

run() {
    local dest=${OUT:-$ROOT/bench/results/gpu} b=$dir/bin out
    out=$(mktemp -d)        # the raw results, packed into $dest at the end
    mkdir -p "$dest"
    export LD_LIBRARY_PATH="$dir/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export MOEC_CACHE_DIR=$out/kernel-cache OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
    exec > >(tee "$dest/gpu.log") 2>&1
    log "device"
    nvidia-smi -L || true
    "$b/tiny" info --device cuda || { echo "FAIL: no usable GPU"; exit 1; }
    local dev; dev=$("$b/tiny" info --device cuda --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["device_desc"])')

    log "verify: every op of the cuda program against the cpu program's, on the GPU"
    "$b/tiny" verify --device cuda > "$out/verify_tiny.txt" 2>&1 && tail -1 "$out/verify_tiny.txt" \
        || { echo "FAIL: verify"; grep -E "FAIL|verify" "$out/verify_tiny.txt"; }
    "$b/tiny_bf16" verify --device cuda --against cuda-emu --batch 2 > "$out/verify_tiny_bf16.txt" 2>&1 \
        && tail -1 "$out/verify_tiny_bf16.txt" || { echo "FAIL: verify, bf16"; grep -E "FAIL|verify" "$out/verify_tiny_bf16.txt"; }

    log "reference goldens under --device cuda (eval outputs and every gradient)"
    local pass=0 fail=0
    for c in "$dir"/ref/cases/*/; do
        c=${c%/}
        if MOE_REF_DEVICE=cuda sh "$dir/ref/run_case.sh" prebuilt "$c" "$dir/ref" "$dir/ref/st_compare" \
            "$dir/ref/json_compare" > "$out/ref_$(basename "$c").log" 2>&1; then pass=$((pass + 1)); else
            fail=$((fail + 1)); echo "FAIL: reference case $(basename "$c") (ref_$(basename "$c").log)"; fi
    done
    echo "reference goldens: $pass passed, $fail failed" | tee "$out/ref_summary.txt"

    local steps=${GPU_TINY_STEPS:-300}
    log "tiny: $steps training steps on the GPU (fp32, bf16) and on the CPU"
    "$b/tiny" train --steps "$steps" --device cuda --log "$out/tiny_cuda.jsonl" > /dev/null
    "$b/tiny_bf16" train --steps "$steps" --device cuda --log "$out/tiny_bf16.jsonl" > /dev/null
    "$b/tiny" train --steps "$steps" --device cpu --log "$out/tiny_cpu.jsonl" > /dev/null

    log "throughput (fp32 and bf16)"
    for m in ${GPU_MODELS:-tiny gpu_medium tiny_bf16 gpu_medium_bf16}; do
        for mode in train infer; do
            "$b/$m" bench --$mode --device cuda --steps 10 --warmup 3 --json > "$out/bench_${m}_$mode.json" \
                || echo "FAIL: bench $m --$mode"
        done
        "$b/$m" info --json > "$out/info_$m.json"
    done
    DEV="$dev" OUTDIR="$out" DEST="$dest" python3 - <<'PY'
import json, os
out, dev = os.environ["OUTDIR"], os.environ["DEV"]
hopper, ampere = "H100" in dev or "H200" in dev, "A100" in dev
peaks = {"fp32": 67.0 if hopper else 19.5 if ampere else None,        # dense TFLOP/s: fp32 (no TF32),
         "bf16": 989.0 if hopper else 312.0 if ampere else None}      # bf16 tensor cores
lines = [f"# moec cuda target on {dev}", ""]
def first_line(path, last=False):
    try:
        text = open(path).read().strip().splitlines()
        return text[-1] if last else text[0]
    except Exception as e: return f"(missing: {e})"
lines += ["- " + first_line(f"{out}/ref_summary.txt") + " (the PyTorch reference cases, --device cuda)",
          "- verify, tiny (each op on the GPU against the CPU, same inputs): " + first_line(f"{out}/verify_tiny.txt", True),
          "- verify, tiny in bf16 (each op on the GPU against the emulator): " + first_line(f"{out}/verify_tiny_bf16.txt", True), ""]
def curve(name):
    return [json.loads(l) for l in open(f"{out}/tiny_{name}.jsonl") if '"loss"' in l]
c = curve("cpu")
for name in ("cuda", "bf16"):
    try: g = curve(name)
    except Exception: continue
    rel = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(g, c)) if g and c else float("nan")
    lines += [f"## tiny, {len(g)} steps: GPU ({'fp32' if name == 'cuda' else 'bf16'}) against CPU (fp32)", "",
              f"final loss GPU {g[-1]['loss']:.5f}, CPU {c[-1]['loss']:.5f}; largest relative difference over the curve {rel:.2e}", ""]
lines += ["## throughput", "", "| model | mode | tokens/s | ms/step | dense GEMM TFLOP/s | expert GEMM TFLOP/s |",
          "| --- | --- | --- | --- | --- | --- |"]
for m in ("tiny", "gpu_medium", "tiny_bf16", "gpu_medium_bf16"):
    peak = peaks["bf16" if m.endswith("_bf16") else "fp32"]
    try: info = json.load(open(f"{out}/info_{m}.json"))
    except Exception: continue
    for mode in ("train", "infer"):
        try: r = json.load(open(f"{out}/bench_{m}_{mode}.json"))
        except Exception: lines.append(f"| {m} | {mode} | failed | | | |"); continue
        S, d = r["batch"] * r["seq"], info["hidden"]
        ffn, V, k = info["ffn"], info["vocab"], info["top_k"]
        def flops(name):   # forward FLOPs of one step's GEMMs; backward twice that
            base = name[:-4] if name.endswith(".bwd") else name
            mult = 2 if name.endswith(".bwd") else 1
            if base.endswith("attn.c_attn"): f = 2 * S * d * 3 * d
            elif base.endswith("attn.c_proj"): f = 2 * S * d * d
            elif base.endswith(("mlp.c_fc", "mlp.c_proj")): f = 2 * S * d * ffn
            elif base == "lm_head": f = 2 * S * d * V
            elif base.endswith(("moe.expert_fc", "moe.expert_proj")): f = 2 * S * k * d * ffn * (1 - r["dropped_fraction"])
            else: return None, None
            return ("expert" if "moe.expert" in base else "dense"), f * mult
        acc = {"dense": [0.0, 0.0], "expert": [0.0, 0.0]}
        for kern in r["kernels"]:
            kind, f = flops(kern["name"])
            if kind: acc[kind][0] += f; acc[kind][1] += kern["ms"]
        def rate(kind):
            f, ms = acc[kind]
            if ms <= 0: return "-"
            t = f / ms / 1e9
            return f"{t:.2f}" + (f" ({100 * t / peak:.0f}% of {peak:g})" if peak else "")
        lines.append(f"| {m} | {mode} | {r['tokens_per_s']:.0f} | {r['step_ms']:.2f} | {rate('dense')} | {rate('expert')} |")
lines += ["", "(bf16: the GEMMs' operands in bf16, everything else fp32; its peak is the bf16 tensor cores')"]
for m in ("gpu_medium", "gpu_medium_bf16"):
    lines += ["", f"## the 15 most expensive steps of {m}, train", "", "| step | ms | share |", "| --- | --- | --- |"]
    try:
        r = json.load(open(f"{out}/bench_{m}_train.json"))
        for kern in sorted(r["kernels"], key=lambda x: -x["ms"])[:15]:
            lines.append(f"| {kern['name']} | {kern['ms']:.3f} | {100 * kern['share']:.1f}% |")
    except Exception as e:
        lines.append(f"(no profile: {e})")
open(f"{os.environ['DEST']}/gpu.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
    rm -rf "$out/kernel-cache"
    tar -czf "$dest/raw.tar.gz" -C "$out" . && rm -rf "$out"
}

case $mode in
    pack) pack ;;
    run) run ;;
    all) pack && run ;;
    *) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
