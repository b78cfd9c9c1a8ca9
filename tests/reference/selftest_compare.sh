#!/bin/sh
# selftest_compare.sh - proves the comparators catch errors (ctest ref_compare_selftest).
#
#   selftest_compare.sh ST_COMPARE JSON_COMPARE ST_PERTURB REF_DIR WORK_DIR
#
# A golden against itself must pass; damaged copies (one element off by 1e-4 or 2e-5
# relative, a tensor missing or extra, other shapes, other values) must fail with exit 1;
# an element off by 5e-6 must pass at the default rtol 1e-5; --rtol and --tol must loosen
# it. Same for json_compare with the fixtures/ files, and every committed eval.json
# against itself.
set -u
stc=$1 jc=$2 stp=$3 ref=$4 work=$5
mkdir -p "$work" || exit 1
fails=0
expect() {   # expect STATUS CMD...
    want=$1; shift
    "$@" > "$work/log" 2>&1
    rc=$?
    if [ "$rc" -ne "$want" ]; then
        echo "FAIL: expected exit $want, got $rc: $*"; cat "$work/log"; fails=$((fails + 1))
    else
        echo "ok (exit $rc): $*"
    fi
}
g=$ref/cases/top2_drops/grads.safetensors
w=$ref/cases/top2_drops/weights.safetensors
other=$ref/cases/top1_drops/grads.safetensors

expect 0 "$stc" "$g" "$g"
expect 0 "$stp" "$g" "$work/copy.st" --copy
expect 0 "$stc" "$g" "$work/copy.st"
expect 0 "$stp" "$g" "$work/gate.st" --scale h.0.moe.gate.weight 1e-4
expect 1 "$stc" "$g" "$work/gate.st"
expect 0 "$stc" --rtol 1e-3 "$g" "$work/gate.st"
expect 0 "$stc" --tol 'h.*.moe.gate.weight=1e-3' "$g" "$work/gate.st"
expect 1 "$stc" --tol 'h.*.moe.experts.*=1e-3' "$g" "$work/gate.st"
expect 0 "$stp" "$g" "$work/above.st" --scale wte.weight 2e-5
expect 1 "$stc" "$g" "$work/above.st"
expect 0 "$stp" "$g" "$work/below.st" --scale wte.weight 5e-6
expect 0 "$stc" "$g" "$work/below.st"
expect 0 "$stp" "$g" "$work/drop.st" --drop ln_f.bias
expect 1 "$stc" "$g" "$work/drop.st"
expect 1 "$stc" "$work/drop.st" "$g"
expect 1 "$stc" "$g" "$w"
expect 1 "$stc" "$g" "$other"
expect 2 "$stc" "$g" "$work/does-not-exist.st"
expect 2 "$stc" --rtol x "$g" "$g"

f=$ref/fixtures
expect 0 "$jc" "$f/eval_ref.json" "$f/eval_ref.json"
expect 0 "$jc" "$f/eval_ref.json" "$f/eval_same.json"
expect 1 "$jc" "$f/eval_ref.json" "$f/eval_lm_off.json"
expect 0 "$jc" --rtol 1e-4 "$f/eval_ref.json" "$f/eval_lm_off.json"
expect 1 "$jc" "$f/eval_ref.json" "$f/eval_z_off.json"
expect 1 "$jc" "$f/eval_ref.json" "$f/eval_tokens_off.json"
expect 1 "$jc" "$f/eval_ref.json" "$f/eval_missing.json"
expect 1 "$jc" "$f/eval_ref.json" "$f/eval_string.json"
expect 2 "$jc" "$f/eval_ref.json" "$f/eval_nan.json"
expect 2 "$jc" "$f/eval_ref.json" "$f/eval_not_json.json"
for e in "$ref"/cases/*/eval.json; do
    expect 0 "$jc" "$e" "$e"
done
echo "$fails failures"
[ "$fails" -eq 0 ]
