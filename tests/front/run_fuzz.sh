#!/bin/sh
# run_fuzz.sh FUZZER EXAMPLES_DIR DICT WORKDIR SECONDS - runs the libFuzzer target.
# The seed corpus is a copy of examples/*.moe in WORKDIR (libFuzzer adds what it
# finds there, never in the source tree); crashes land in WORKDIR/artifacts.
set -u
fuzzer=$1 examples=$2 dict=$3 work=$4 seconds=$5
mkdir -p "$work/corpus" "$work/artifacts" || exit 1
cp "$examples"/*.moe "$work/corpus/" || exit 1
exec "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -dict="$dict" -artifact_prefix="$work/artifacts/" -print_final_stats=1 "$work/corpus"
