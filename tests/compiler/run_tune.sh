#!/usr/bin/env bash
# run_tune.sh MOEC WORKDIR - `moec tune` and the tuning database:
#   tune measures every distinct (kernel, shape) with variants of tests/e2e/small.moe, passes
#   every variant's check, and records a winner per shape (in --db, or the default location
#   under XDG_CACHE_HOME); `build --tune-db` then emits exactly the recorded variants, marked
#   as coming from the database, where the rule's marks were; an entry of another machine is
#   ignored; a damaged database is a clear error for build and tune and is left as it is;
#   two runs at once into one file keep both runs' entries.
set -uo pipefail
moec=$1; work=$2
model=$(cd "$(dirname "$0")/../e2e" && pwd)/small.moe
fail() { echo "FAIL: $*"; exit 1; }
rm -rf "$work"; mkdir -p "$work" && cd "$work" || exit 1
export XDG_CACHE_HOME=$work/cache OMP_NUM_THREADS=2
# the calls of --emit kernels with numbered variants: "kernel vN database|rule", one line each
calls() { "$moec" build "$model" --emit kernels "$@" | grep -F "[variant " |
          sed -E 's/^ *([a-z_]+)\.v([0-9]+)\(.*\[variant (from the tuning database|by rule)\]$/\1 v\2 \3/;
                  s/ from the tuning database$/ database/; s/ by rule$/ rule/'; }
calls > rule.txt || fail "--emit kernels"
[ -s rule.txt ] && ! grep -qv " rule$" rule.txt || fail "without a database every variant is the rule's: $(cat rule.txt)"
grep -q "^attention_fwd v1 rule$" rule.txt && grep -q "^moe_expert_bwd v" rule.txt && grep -q "^layernorm_fwd v1 rule$" rule.txt || fail "the calls: $(cat rule.txt)"

"$moec" tune "$model" --db db.json --budget 3 > table.txt 2> tune.err || fail "tune: $(cat tune.err)"
n=$(jq '.entries | length' db.json)
[ "$n" -ge 4 ] || fail "tune recorded $n entries"
jq -e '.version == 1 and all(.entries[]; .target == "cpu" and (.ms["1"] > 0) and (.ms["2"] > 0) and
       if (.kernel == "moe_expert_fwd") then (.best >= 1 and .best <= 3) and (.ms["3"] > 0) and
          (.shape | test("^E=4 K=[0-9]+ N=[0-9]+ R=[0-9]+$"))
       elif (.kernel == "moe_expert_bwd") then (.best == 1 or .best == 2) and (.ms["3"] == null) and
          (.shape | test("^E=4 K=[0-9]+ N=[0-9]+ R=[0-9]+$"))
       elif (.kernel | startswith("attention_")) then (.best >= 1 and .best <= 3) and (.ms["3"] > 0) and
          (.shape | test("^B=4 T=32 C=32 H=2 KV=2$"))
       elif (.kernel | startswith("act_")) then (.best >= 1 and .best <= 3) and (.ms["3"] > 0) and
          (.shape | test("^fn=0 R=(128|32) W=128$"))
       else (.kernel | startswith("layernorm_")) and (.best >= 1 and .best <= 3) and (.ms["3"] > 0) and
          (.shape | test("^S=(128|32) C=32$")) end)
       and ([.entries[].kernel] | unique == ["act_bwd", "act_fwd", "attention_bwd", "attention_fwd", "layernorm_bwd",
                                             "layernorm_fwd", "moe_expert_bwd", "moe_expert_fwd"])' \
  db.json >/dev/null || fail "the database: $(head -c 600 db.json)"
[ "$(grep -cE "^(moe_expert|attention|act|layernorm)_" table.txt)" = "$n" ] || fail "the table has not one line per entry: $(cat table.txt)"
grep -q "wrong" table.txt && fail "a variant failed its check: $(cat table.txt)"

# concurrent runs add up: two tunes started together, on 1 and on 2 threads (two machines'
# keys), into one file; each loaded it empty, so without the locked merge the last would win
OMP_NUM_THREADS=1 "$moec" tune "$model" --db both.json --budget 2 > /dev/null 2> c1.err & p1=$!
OMP_NUM_THREADS=2 "$moec" tune "$model" --db both.json --budget 2 > /dev/null 2> c2.err & p2=$!
wait $p1 || fail "concurrent tune 1: $(cat c1.err)"
wait $p2 || fail "concurrent tune 2: $(cat c2.err)"
jq -e "(.entries | length) == 2 * $n and ([.entries[].device] | unique | length) == 2" both.json > /dev/null \
  || fail "concurrent runs: $(jq -c '[.entries[] | {device, shape}]' both.json)"
ls both.json.tmp.* > /dev/null 2>&1 && fail "a temporary file was left"

# the build follows the database, call by call
calls --tune-db db.json > tuned.txt || fail "build --tune-db"
[ "$(wc -l < tuned.txt)" = "$(wc -l < rule.txt)" ] || fail "not the same calls"
grep -qv " database$" tuned.txt && fail "a call kept the rule's variant: $(grep -v database tuned.txt)"
# flip every winner: the build flips with it
jq '.entries[].best |= (if . == 1 then 2 else 1 end)' db.json > flipped.json
calls --tune-db flipped.json > flipped.txt
paste -d' ' tuned.txt flipped.txt | awk '{ if ($2 == $5) bad = 1 } END { exit bad }' \
  || fail "flipping the winners did not flip the variants: $(paste tuned.txt flipped.txt)"
# entries of another machine are ignored
jq '.entries[].device = "another machine"' db.json > other.json
calls --tune-db other.json > other.txt
cmp -s rule.txt other.txt || fail "an entry of another machine was applied: $(diff rule.txt other.txt)"

# damaged databases: clear errors, nothing rewritten
echo '{"version": 1, "entries": [' > bad.json
cp bad.json bad.copy
"$moec" build "$model" --tune-db bad.json --emit kernels > /dev/null 2> bad.err && fail "build took a damaged database"
grep -q "^moec build: --tune-db bad.json:[0-9]*:[0-9]*: not a tuning database" bad.err || fail "build: $(cat bad.err)"
"$moec" tune "$model" --db bad.json --budget 1 > /dev/null 2> bad2.err && fail "tune took a damaged database"
grep -q "^moec tune: bad.json:.*not a tuning database" bad2.err || fail "tune: $(cat bad2.err)"
cmp -s bad.json bad.copy || fail "tune rewrote a damaged database"
echo '{"version": 2, "entries": []}' > v2.json
"$moec" build "$model" --tune-db v2.json --emit kernels > /dev/null 2> v2.err && fail "build took version 2"
grep -q "not a tuning database of this moec" v2.err || fail "version: $(cat v2.err)"
"$moec" build "$model" --tune-db missing.json --emit kernels > /dev/null 2> missing.err && fail "a missing --tune-db"
grep -q "missing.json" missing.err || fail "missing: $(cat missing.err)"

# the default location, written by tune and read by build
"$moec" tune "$model" --budget 1 > /dev/null 2>&1 || fail "tune to the default database"
[ -s "$XDG_CACHE_HOME/moec/tune.json" ] || fail "no database at the default location"
calls > default.txt
grep -qv " database$" default.txt && fail "build did not read the default database"
"$moec" build "$model" -o small > /dev/null 2>&1 && ./small train --steps 2 > /dev/null 2>&1 || fail "a tuned build does not train"
./small bench --json --steps 1 2>/dev/null | jq -e '(.variants | length) == '"$(wc -l < default.txt)"'
  and all(.variants[]; .from == "tuning database")' > /dev/null || fail "bench --json does not report the tuned variants"
echo "ok: tune measured $n shapes; the build follows the database"
