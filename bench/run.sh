#!/usr/bin/env bash
# Runs every benchmark of the project and writes bench/results/results.{md,csv,svg}.
#
#   bash bench/run.sh [--quick] [--threads N] [--no-build] [--only moe,sgemm,step,loaded,decode,compile]
#
# 1. installs python3-venv, python3-dev, g++, libopenblas-dev if missing (needs root);
# 2. makes build-bench/venv once (reused afterwards) with PyTorch 2 from PyPI (MKL), the baseline
#    a user would pick; if it cannot, falls back LOUDLY to Debian's PyTorch 1.13 (stderr and
#    results.md say so);
# 3. builds moec in build-bench/ (Release); a failed build is logged, not fatal: the tables then
#    say "moec: not built" where moec's numbers would be;
# 4. builds bench/sgemm_rate.c against OpenBLAS;
# 5. runs bench/bench.py with the venv's python, all at the same thread count ("loaded": the
#    training step again with another program spinning on one core);
# 6. writes bench/results/arena.md: every example's activation arena, without and with
#    train.recompute (bench/arena.sh).
# --quick scales the shapes down and repeats less: a smoke test of the harness, not the targets.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build-bench"
VENV="$BUILD/venv"
THREADS="$(nproc)"
BUILD_MOEC=1
PASS=()

# PyTorch from PyPI. Its x86_64 wheel requires the CUDA libraries as nvidia-* wheels (gigabytes).
# It needs them loaded, never run, on a CPU, so where a CUDA 13 toolkit is installed its
# libraries serve, linked where the wheel looks for them; only the ones a toolkit lacks, or has
# too old, come from PyPI, at the versions torch 2.15.0's wheel requires (change them with it).
TORCH_VERSION=2.15.0
TORCH_CUDA_EXTRAS=(nvidia-nccl-cu13==2.30.7 nvidia-cusparselt-cu13==0.8.1
                   nvidia-nvshmem-cu13==3.7.2 "nvidia-cufile==1.17.1.22.*")
TORCH_PURE_DEPS=(filelock "typing-extensions>=4.13.0" "setuptools>=77.0.3" "sympy>=1.13.3"
                 "networkx>=2.5.1" jinja2 "fsspec>=0.8.5" numpy)
CUDA_LIB=/usr/local/cuda/lib64

usage() {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "$1"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) PASS+=(--quick) ;;
        --threads) [ $# -ge 2 ] || usage 2; THREADS="$2"; shift ;;
        --no-build) BUILD_MOEC=0 ;;
        --only) [ $# -ge 2 ] || usage 2; PASS+=(--only "$2"); shift ;;
        -h|--help) usage 0 ;;
        *) echo "run.sh: unknown option '$1'" >&2; usage 2 ;;
    esac
    shift
done

log() { echo "[run.sh $(date +%H:%M:%S)] $*" >&2; }

# Debian packages the harness needs, installed only when missing: the venv module and the
# Python headers and C++ compiler torch.compile's inductor builds its kernels with.
ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        log "not root: install ${missing[*]} by hand"
        return 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

# moec itself; on failure the log's tail is shown and the harness goes on without moec.
build_moec() {
    mkdir -p "$BUILD"
    [ "$BUILD_MOEC" -eq 1 ] || { log "--no-build: using $BUILD/moec as it is"; return 0; }
    log "building moec in build-bench/ (log: build-bench/build.log)"
    if ! { cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
            && cmake --build "$BUILD" -j "$(nproc)"; } >"$BUILD/build.log" 2>&1; then
        tail -n 5 "$BUILD/build.log" >&2
        log "moec did not build; its columns will say so"
        rm -f "$BUILD/moec"   # never benchmark a stale binary
    fi
}

build_sgemm_rate() {
    local inc
    inc="$(dirname "$(find /usr/include -name cblas.h -path '*openblas*' | head -n 1)")"
    log "building build-bench/sgemm_rate"
    rm -f "$BUILD/sgemm_rate"
    cc -std=c11 -O2 -Wall -Wextra ${inc:+-I"$inc"} "$ROOT/bench/sgemm_rate.c" \
        -o "$BUILD/sgemm_rate" -lopenblas
}

# --- the PyTorch baseline: build-bench/venv -------------------------------------------------

venv_log() { echo "[run.sh $(date +%H:%M:%S)] $*" >>"$BUILD/venv.log"; }

# Does the venv import torch 2, and does torch.compile build and run a kernel on this CPU?
# Prints "torch VERSION, torch.compile ok|failed: why"; fails when torch 2 does not import.
check_venv() {
    "$VENV/bin/python" - <<'EOF'
import torch
assert torch.__version__.startswith("2."), torch.__version__
try:
    f = torch.compile(lambda x: torch.nn.functional.gelu(x) * 2)
    x = torch.linspace(-3, 3, 64)
    ok = torch.allclose(f(x), torch.nn.functional.gelu(x) * 2, atol=1e-5)
    how = "ok" if ok else "wrong result"
except Exception as e:                       # no C++ compiler, no Python headers, ...
    how = f"failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}"
print(f"torch {torch.__version__}, torch.compile {how}")
EOF
}

# The toolkit's libraries, linked into the directory the wheel's RPATH names for CUDA 13
# ($ORIGIN/../../nvidia/cu13/lib), next to (never over) what the PyPI wheels put there.
link_cuda_toolkit() {
    local site lib f
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    lib="$site/nvidia/cu13/lib"
    mkdir -p "$lib"
    for f in "$CUDA_LIB"/lib*.so.*; do
        [ -e "$lib/$(basename "$f")" ] || ln -s "$f" "$lib/"
    done
}

# Smallest install: torch without its dependencies, the few CUDA wheels a toolkit lacks, the
# toolkit for the rest, torch's pure-Python dependencies, and matplotlib for the plot.
install_minimal() {
    [ -e "$CUDA_LIB/libcudart.so.13" ] || { venv_log "no CUDA 13 toolkit in $CUDA_LIB"; return 1; }
    venv_log "minimal install: torch==$TORCH_VERSION --no-deps, ${TORCH_CUDA_EXTRAS[*]}"
    "$VENV/bin/pip" install -q --no-deps "torch==$TORCH_VERSION" "${TORCH_CUDA_EXTRAS[@]}" \
        >>"$BUILD/venv.log" 2>&1 || return 1
    "$VENV/bin/pip" install -q "${TORCH_PURE_DEPS[@]}" matplotlib >>"$BUILD/venv.log" 2>&1 \
        || return 1
    link_cuda_toolkit
}

# What a user types: torch with all its CUDA wheels (several GB).
install_full() {
    venv_log "full install: pip install torch==$TORCH_VERSION, with its CUDA wheels"
    "$VENV/bin/pip" install -q "torch==$TORCH_VERSION" numpy matplotlib >>"$BUILD/venv.log" 2>&1
}

# Sets PYTHON and TORCH_FROM: the venv's when it works, else Debian's, saying so loudly.
ensure_torch_venv() {
    local status="" start
    if [ -x "$VENV/bin/python" ] && status="$(check_venv 2>>"$BUILD/venv.log")"; then
        log "reusing build-bench/venv: $status"
    else
        start=$SECONDS
        log "making build-bench/venv: PyTorch $TORCH_VERSION from PyPI (log: build-bench/venv.log)"
        rm -rf "$VENV"
        if /usr/bin/python3 -m venv "$VENV" >>"$BUILD/venv.log" 2>&1 \
                && { { install_minimal && status="$(check_venv 2>>"$BUILD/venv.log")"; } \
                     || { install_full && status="$(check_venv 2>>"$BUILD/venv.log")"; }; }; then
            log "build-bench/venv ready in $((SECONDS - start)) s," \
                "$(du -sh "$VENV" | cut -f1): $status"
        else
            status=""
        fi
    fi
    if [ -n "$status" ]; then
        PYTHON="$VENV/bin/python"
        TORCH_FROM="PyPI (build-bench/venv; ${status#*, })"
        return 0
    fi
    tail -n 5 "$BUILD/venv.log" >&2 || true
    log "WARNING: PyTorch 2 from PyPI could not be installed in build-bench/venv" \
        "(see build-bench/venv.log); FALLING BACK to Debian's python3-torch (PyTorch 1.13," \
        "OpenBLAS, no torch.compile): a weaker baseline than the rule asks for"
    ensure_packages python3-torch python3-matplotlib || log "python3-torch is missing too"
    PYTHON=/usr/bin/python3
    TORCH_FROM="Debian python3-torch: FALLBACK, PyTorch 2 from PyPI could not be installed (see build-bench/venv.log)"
}

mkdir -p "$BUILD"
ensure_packages python3-venv python3-dev g++ libopenblas-dev
ensure_torch_venv
build_moec
build_sgemm_rate || log "sgemm_rate did not build; the BLAS columns will say so"
log "benchmarking with $THREADS threads"
"$PYTHON" "$ROOT/bench/bench.py" --threads "$THREADS" --moec "$BUILD/moec" \
    --sgemm "$BUILD/sgemm_rate" --out "$ROOT/bench/results" --work "$BUILD/bench" \
    --torch-from "$TORCH_FROM" ${PASS[@]+"${PASS[@]}"}
if [ -x "$BUILD/moec" ]; then
    bash "$ROOT/bench/arena.sh" "$BUILD/moec" > "$ROOT/bench/results/arena.md" \
        || log "bench/arena.sh failed; bench/results/arena.md is incomplete"
fi
