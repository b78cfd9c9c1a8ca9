#!/usr/bin/env bash
# run_tune.sh MOEC MOCK.so MODEL.moe TINY.moe - `moec tune --target cuda`: the cuda variants of the
# expert GEMMs (tiles of 64 rows, of 32, a thread per output, a cuBLAS GEMM per expert) and of attention's forward and
# backward (a thread per query or key row, shared-memory tiles) on the model's training shapes.
#   - without a GPU it says so, measures nothing and writes nothing;
#   - under --device cuda-emu every variant passes verify (each op against the cpu program)
#     on examples/tiny.moe (attention over two tiles of query rows and four of keys), and
#     nothing is recorded (the emulator's times say nothing of a GPU);
#   - on a GPU (here the stand-in driver of mock_cuda.c, which runs the kernels on the
#     emulator) every variant is checked and timed, the winners are recorded under the GPU's
#     name and NVRTC's version, and `moec build --target cuda` follows them, there and only
#     there: on a machine without that GPU the rule stands.
set -uo pipefail
moec=$1; mock=$2; model=$3; tiny=$4
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
fail() { echo "FAIL: $*"; exit 1; }
export MOEC_CACHE_DIR=$work/cache
# "kernel vN database|rule" for each call with variants of the cuda target's training program
calls() { "$moec" build "$model" --target cuda --emit kernels "$@" | sed -n '/^kernels .* (decode)/q; p' |
          grep -F "[variant " | sed -E 's/^ *([a-z_]+)\.v([0-9]+)\(.*\[variant (from the tuning database|by rule)\]$/\1 v\2 \3/;
          s/ from the tuning database$/ database/; s/ by rule$/ rule/'; }

MOEC_LIBCUDA=$work/none.so "$moec" tune "$model" --target cuda --db none.json > none.out 2> none.err || fail "no GPU: exit $?"
grep -q "^moec tune: nothing measured for --target cuda: no CUDA driver" none.err && [ ! -e none.json ] \
  || fail "no GPU: $(cat none.err)"
"$moec" tune "$model" --device cuda-emu --db x.json > /dev/null 2> dev.err && fail "--device without --target cuda"
grep -q "with --target cuda" dev.err || fail "--device: $(cat dev.err)"

MOEC_LIBCUDA=$work/none.so "$moec" tune "$tiny" --target cuda --device cuda-emu --db emu.json > emu.out 2> emu.err \
  || fail "cuda-emu: $(cat emu.err)"
[ ! -e emu.json ] && grep -q "nothing recorded" emu.err || fail "cuda-emu recorded: $(cat emu.err)"
[ "$(grep -cE '^moe_expert_(fwd|bwd) +E=[48] .* ok +ok +ok +ok +none +\(checked, not timed\)$' emu.out)" = 8 ] &&
  [ "$(grep -cE '^attention_(fwd|bwd) +B=8 T=128 C=128 H=4 KV=4 +ok +ok +none +\(checked, not timed\)$' emu.out)" = 2 ] \
  || fail "cuda-emu: not every variant of tiny's 10 shapes checked ok: $(cat emu.out) $(cat emu.err)"

export MOEC_LIBCUDA=$mock MOEC_LIBCUBLAS=$mock
gpu="mock GPU 0, the cuda-emu emulator (compute capability 9.0)"
"$moec" tune "$model" --target cuda --db db.json > gpu.out 2> gpu.err || fail "on the GPU: $(cat gpu.err)"
jq -e --arg gpu "$gpu" '(.entries | length) == 6 and all(.entries[]; .target == "cuda" and .device == $gpu and
       (.compiler | test("^NVRTC [0-9]+[.][0-9]+$")) and .ms["1"] > 0 and .ms["2"] > 0 and
       if (.kernel | startswith("attention_")) then .shape == "B=4 T=32 C=32 H=2 KV=2" and .ms["3"] == null and .best <= 2
       else (.kernel | test("^moe_expert_(fwd|bwd)$")) and (.shape | test("^E=4 K=[0-9]+ N=[0-9]+ R=128$")) and
            .ms["3"] > 0 and .ms["4"] > 0 end and .best >= 1 and .best <= 4)' db.json > /dev/null || fail "the database: $(cat db.json)"
[ "$(grep -cE '^(moe_expert_(fwd|bwd)|attention_(fwd|bwd)) .* v[1-4] +[0-9.]+x \(rule: v1\)$' gpu.out)" = 6 ] \
  || fail "the table: $(cat gpu.out)"
calls > rule.txt
calls --tune-db db.json > tuned.txt
[ "$(grep -c ' v1 rule$' rule.txt)" = 8 ] && [ "$(wc -l < rule.txt)" = 8 ] || fail "the cuda rule: $(cat rule.txt)"
want=$(jq -r '.entries[] | "\(.kernel) v\(.best) database"' db.json | sort -u)
[ "$(wc -l < tuned.txt)" = "$(wc -l < rule.txt)" ] && [ "$(sort -u tuned.txt)" = "$want" ] \
  || fail "the build does not follow the database: $(cat tuned.txt) against $want"
MOEC_LIBCUDA=$work/none.so calls --tune-db db.json > elsewhere.txt
cmp -s rule.txt elsewhere.txt || fail "entries of another GPU were applied: $(cat elsewhere.txt)"
echo "ok: cuda variants checked under cuda-emu; measured, recorded and followed on the (stand-in) GPU"
