#!/bin/sh
# run_big.sh MOEC SRCDIR WORKDIR - a generated 10 MiB file must check successfully.
# (The time is bench/front_parse_bench.sh's business; here only success counts.)
set -u
moec=$1 src=$2 work=$3
case $moec in /*) ;; *) moec=$(pwd)/$moec ;; esac
mkdir -p "$work" || exit 1
sh "$src/gen_big.sh" "$work/big.moe" || exit 1
if ! "$moec" check "$work/big.moe"; then
    echo "FAIL: the generated 10 MiB file does not check"
    exit 1
fi
echo "ok: $(wc -c <"$work/big.moe") bytes checked"
