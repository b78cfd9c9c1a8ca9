#!/usr/bin/env bash
# Runs every benchmark of the project and writes bench/results/results.{md,csv,svg}.
#
#   bash bench/run.sh [--quick] [--threads N] [--no-build] [--only moe,sgemm,step,compile]
#
# 1. installs python3-torch, python3-matplotlib and libopenblas-dev if missing (needs root);
# 2. builds moec in build-bench/ (Release); a failed build is logged, not fatal: the tables then
#    say "moec: not built" where moec's numbers would be;
# 3. builds bench/sgemm_rate.c against OpenBLAS;
# 4. runs bench/bench.py with the system python (Debian's PyTorch), all at the same thread count.
# --quick scales the shapes down and repeats less: a smoke test of the harness, not the targets.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build-bench"
PYTHON=/usr/bin/python3
THREADS="$(nproc)"
BUILD_MOEC=1
PASS=()

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
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

# Debian packages the harness needs, installed only when missing.
ensure_packages() {
    local missing=() pkg
    for pkg in python3-torch python3-matplotlib libopenblas-dev; do
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

ensure_packages
build_moec
build_sgemm_rate || log "sgemm_rate did not build; the BLAS columns will say so"
log "benchmarking with $THREADS threads"
"$PYTHON" "$ROOT/bench/bench.py" --threads "$THREADS" --moec "$BUILD/moec" \
    --sgemm "$BUILD/sgemm_rate" --out "$ROOT/bench/results" --work "$BUILD/bench" \
    ${PASS[@]+"${PASS[@]}"}
