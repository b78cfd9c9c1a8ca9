#!/usr/bin/env bash
# tune_table.sh [MOEC] [ROUNDS] - `moec tune` against the built-in rule on three models:
# examples/tiny.moe, a perf-like model (4 layers, d 512, 8 experts in every layer) and a
# many-small-experts model (64 experts of ffn 256). For each: the time `moec tune` takes,
# then the rule's executable and the tuned one (built with --tune-db) measured in turns,
# ROUNDS rounds (default 3), median of each: a training step (`bench --train`, tokens/s) and
# decoding (`bench --decode`, tokens/s). Writes bench/results/tune.md and prints it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
moec=${1:-$here/../build-bench/moec}
rounds=${2:-3}
work=$(mktemp -d /tmp/moec-tune-table-XXXXXX)
trap 'rm -rf "$work"' EXIT
cat > "$work/models.moe" <<'MOE'
model perf {
    vocab = 256  context = 256  layers = 4  hidden = 512  heads = 8  ffn = 2048 ;
    moe { every = 1  experts = 8  top_k = 1  noisy_gate = none }
    train { batch = 8  steps = 10 }
}
model small_experts {
    vocab = 256  context = 256  layers = 4  hidden = 512  heads = 8  ffn = 2048 ;
    moe { every = 1  experts = 64  ffn = 256  top_k = 1  noisy_gate = none }
    train { batch = 8  steps = 10 }
}
MOE
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo '{"version": 1, "entries": []}' > "$work/none.json"     # the rule everywhere, whatever the cache holds
variants() { "$moec" build "$1" --model "$2" --emit kernels --tune-db "$3" 2>/dev/null | grep -o '^ *[a-z_]*\.v[0-9]'; }
out=$here/results/tune.md
{
  echo "# moec tune against the built-in rule"
  echo
  echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) threads; medians of $rounds interleaved rounds; $(date -u +%Y-%m-%d)."
  echo
  echo "| model | tune (s) | train tok/s, rule | train tok/s, tuned | tuned / rule | decode tok/s, rule | decode tok/s, tuned | tuned / rule | variants the database changed |"
  echo "|---|---|---|---|---|---|---|---|---|"
} > "$out"
for spec in "$here/../examples/tiny.moe:tiny" "$work/models.moe:perf" "$work/models.moe:small_experts"; do
  file=${spec%:*}; model=${spec##*:}
  db=$work/$model.json
  "$moec" build "$file" --model "$model" --tune-db "$work/none.json" -o "$work/$model.rule" > /dev/null 2>&1
  t0=$(date +%s.%N)
  "$moec" tune "$file" --model "$model" --db "$db" --budget 30 > "$work/$model.table" 2> /dev/null
  t1=$(date +%s.%N)
  "$moec" build "$file" --model "$model" --tune-db "$db" -o "$work/$model.tuned" > /dev/null 2>&1
  calls=$(variants "$file" "$model" "$db" | wc -l)
  differ=$(paste -d' ' <(variants "$file" "$model" "$work/none.json") <(variants "$file" "$model" "$db") |
           awk '$1 != $2' | wc -l)
  for r in $(seq "$rounds"); do
    for k in rule tuned; do
      "$work/$model.$k" bench --steps 3 --warmup 1 --json | jq .tokens_per_s >> "$work/$model.$k.train"
      "$work/$model.$k" bench --decode --tokens 32 --json | jq .tokens_per_s >> "$work/$model.$k.decode"
    done
  done
  tr=$(median < "$work/$model.rule.train"); tt=$(median < "$work/$model.tuned.train")
  dr=$(median < "$work/$model.rule.decode"); dt=$(median < "$work/$model.tuned.decode")
  awk -v m="$model" -v s="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" -v tr="$tr" -v tt="$tt" -v dr="$dr" \
      -v dt="$dt" -v d="$differ" -v c="$calls" \
      'BEGIN { printf "| %s | %.1f | %.0f | %.0f | %.2fx | %.0f | %.0f | %.2fx | %d of %d calls |\n", m, s, tr, tt, tt / tr,
               dr, dt, dt / dr, d, c }' >> "$out"
  { echo; echo "\`moec tune\` on $model:"; echo '```'; cat "$work/$model.table"; echo '```'; } >> "$work/tables.md"
done
cat "$work/tables.md" >> "$out"
cat "$out"
