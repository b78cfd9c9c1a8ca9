#!/usr/bin/env bash
# run_nvcc.sh MOEC MODEL.moe... - the models' kernels compile for sm_80 and sm_90.
#
# `moec build --target cuda --emit cuda` of each model is compiled as one translation unit
# with `nvcc -cubin`: the first two models for both architectures, the others for one each,
# taking turns (their kernels are the same templates at other sizes: both architectures still
# see every kind of kernel, in half the time); ptxas's report gives per kernel the registers,
# shared memory and spills, printed as a table. Fails on any compile error, and on local-
# memory spills in the gate, dispatch, combine and norm kernels (which must stay in
# registers). Skipped (exit 77) where the CUDA toolkit is not installed.
set -uo pipefail
moec=$1; shift
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$nvcc" ] || { echo "SKIP: nvcc not found (the CUDA toolkit is not installed)"; exit 77; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
fail=0
compile() {    # model arch -> $work/NAME.ARCH.log
    local m=$1 arch=$2 name=$3
    "$nvcc" -cubin -arch="$arch" -Xptxas -v -o "$work/$name.$arch.cubin" "$work/$name.cu" >"$work/$name.$arch.log" 2>&1
}
i=0
for m in "$@"; do
    archs="sm_80 sm_90"
    [ $i -ge 2 ] && { [ $((i % 2)) = 0 ] && archs=sm_80 || archs=sm_90; }
    i=$((i + 1))
    name=$(echo "$m" | tr '/.' '__')
    if ! "$moec" build "$m" --target cuda --emit cuda >"$work/$name.cu" 2>"$work/$name.err"; then
        echo "FAIL: $m: moec build --target cuda --emit cuda"; cat "$work/$name.err"; fail=1; continue
    fi
    p80=0 p90=0
    case $archs in *sm_80*) compile "$m" sm_80 "$name" & p80=$! ;; esac
    case $archs in *sm_90*) compile "$m" sm_90 "$name" & p90=$! ;; esac
    for arch in $archs; do
        if [ $arch = sm_80 ]; then wait $p80; rc=$?; else wait $p90; rc=$?; fi
        log="$work/$name.$arch.log"
        if [ $rc -ne 0 ]; then echo "FAIL: $m ($arch) does not compile:"; grep -v "^ptxas info" "$log" | head -30; fail=1; continue; fi
        # ptxas -v: "Function properties for F" / "N bytes stack frame, N bytes spill stores, ..." /
        # "Used N registers, used N barriers, N bytes smem"
        awk -v model="$m" -v arch="$arch" '
            /Function properties for/ { f = $NF; gsub(/[^A-Za-z0-9_]/, "", f) }
            /bytes spill stores/ { st[f] = $5; ld[f] = $9 }
            /Used [0-9]+ registers/ { reg[f] = $5; sm = 0; if (match($0, /[0-9]+ bytes smem/)) sm = substr($0, RSTART, RLENGTH - 11); smem[f] = sm + 0 }
            END {
                n = 0; bad = 0
                for (f in reg) {
                    n++
                    printf "%-10s %-6s %-40s regs %3d smem %5d spill %d/%d\n", model, arch, f, reg[f], smem[f], st[f], ld[f]
                    if ((st[f] > 0 || ld[f] > 0) && f ~ /(gate|dispatch|combine|norm)/) { print "FAIL: spills in " f; bad = 1 }
                }
                printf "%s %s: %d kernels\n", model, arch, n
                exit bad
            }' "$log" | sort || fail=1
    done
done
[ $fail -eq 0 ] && echo "ok: the kernels compile for sm_80 and sm_90"
exit $fail
