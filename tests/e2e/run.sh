#!/usr/bin/env bash
# run.sh - end-to-end tests of a built executable: training makes progress, runs are
# bitwise reproducible, --resume repeats an uninterrupted run, the KV cache matches a
# full forward, gradient accumulation equals a larger batch, bad input gives its golden
# message with exit status 1, any path is safe to build from and to, kills and a full disk
# lose nothing, a diverging run is warned about, and the first-day flow works (held-out
# eval, overrides, Ctrl-C, token-id prompts).
#   run.sh MOEC WORKDIR TEST     (TEST: train | reproducible | resume | kv_cache | generate_batch | accumulate
#                                 | bad_input | paths
#                                 | kill9 | enospc | spike | first_day | export | quantize)
set -uo pipefail
moec=$1; work=$2; test=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
exe="$work/small"
fail() { echo "FAIL: $*"; exit 1; }

"$moec" build "$here/small.moe" -o "$exe" || fail "moec build"
export OMP_NUM_THREADS=2

# the loss column of a JSONL log, one value per line, exactly as printed
losses() { jq -r '.loss' "$1"; }

case "$test" in
train)
  rm -rf "$work/t"; "$exe" train --steps 40 --checkpoint "$work/t" --log "$work/t.jsonl" 2>/dev/null || fail "train"
  first=$(losses "$work/t.jsonl" | head -5 | awk '{s+=$1} END {print s/NR}')
  last=$(losses "$work/t.jsonl" | tail -5 | awk '{s+=$1} END {print s/NR}')
  echo "mean loss of steps 1-5: $first, of steps 36-40: $last"
  awk -v a="$first" -v b="$last" 'BEGIN {exit !(b < a - 1.0)}' || fail "the loss did not fall by 1.0"
  [ "$(jq -s 'length' "$work/t.jsonl")" = 40 ] || fail "the log does not have 40 lines"
  jq -e 'select(.step == 40) | (.lr | . > 0) and (.grad_norm > 0) and (.expert_load | length == 1) and .tokens == 5120
         and .step_ms > 0 and .gflops > 0' "$work/t.jsonl" >/dev/null \
    || fail "log line lacks lr, grad_norm, expert loads, tokens, step_ms or gflops"
  # the picture of the log (matplotlib from Debian's python3-matplotlib, which setup.sh installs)
  /usr/bin/python3 "$here/../../scripts/plot.py" "$work/t.jsonl" -o "$work/t.png" || fail "plot.py"
  [ "$(head -c 8 "$work/t.png" | od -An -tx1 | tr -d ' ')" = 89504e470d0a1a0a ] && [ "$(wc -c < "$work/t.png")" -gt 20000 ] \
    || fail "plot.py wrote no PNG"
  # eval_every = 20: an evaluation-mode loss at steps 20 and 40 only, falling
  [ "$(jq -s '[.[] | select(.eval_loss != null) | .step] == [20, 40]' "$work/t.jsonl")" = true ] || fail "eval_loss not at steps 20 and 40"
  jq -s -e '(.[19].eval_loss > .[39].eval_loss)' "$work/t.jsonl" >/dev/null || fail "eval_loss did not fall"
  ls "$work/t"/step-00000040.safetensors >/dev/null || fail "no final checkpoint"
  "$exe" eval --checkpoint "$work/t" --data "$here/small.moe" --batch 2 --seq 16 | jq -e '.lm_loss > 0 and .tokens > 0' >/dev/null \
    || fail "eval on a bytes file"
  ;;
reproducible)
  for r in a b; do
    "$exe" train --steps 8 --log "$work/rep-$r.jsonl" 2>/dev/null || fail "train $r"
  done
  diff <(losses "$work/rep-a.jsonl") <(losses "$work/rep-b.jsonl") || fail "losses differ between two runs"
  "$exe" train --steps 8 --seed 8 --log "$work/rep-c.jsonl" 2>/dev/null || fail "train c"
  ! diff -q <(losses "$work/rep-a.jsonl") <(losses "$work/rep-c.jsonl") >/dev/null || fail "--seed changes nothing"
  ;;
resume)
  rm -rf "$work/full" "$work/part"
  "$exe" train --steps 20 --checkpoint "$work/full" --log "$work/full.jsonl" 2>/dev/null || fail "uninterrupted run"
  "$exe" train --steps 10 --checkpoint "$work/part" --log "$work/part.jsonl" 2>/dev/null || fail "first half"
  # as if the run had gone on past its checkpoint and been killed while logging step 12
  printf '{"step": 11, "loss": 9}\n{"step": 12, "lo' >> "$work/part.jsonl"
  "$exe" train --steps 20 --checkpoint "$work/part" --log "$work/part.jsonl" --resume 2>/dev/null || fail "resumed half"
  diff <(losses "$work/full.jsonl") <(losses "$work/part.jsonl") || fail "resumed losses differ from the uninterrupted run"
  jq -s -e '.[10].elapsed_s > .[9].elapsed_s and .[10].run.resumed_from == 10' "$work/part.jsonl" >/dev/null \
    || fail "the resumed run's clock starts again or its header is missing"
  cmp "$work/full/step-00000020.safetensors" "$work/part/step-00000020.safetensors" || fail "final weights differ"
  ;;
kv_cache)
  rm -rf "$work/kv"; "$exe" train --steps 10 --checkpoint "$work/kv" 2>/dev/null || fail "train"
  out=$("$exe" generate --checkpoint "$work/kv" --prompt "The cat sat on the mat and the" --check-cache) || fail "check-cache: $out"
  echo "$out"
  echo "$out" | jq -e '.positions == 30 and .eval_dropped == 0 and .max_abs_diff <= 1e-4' >/dev/null || fail "cache mismatch"
  # decoding several sequences at once: 40 copies of the prompt, copy j starting j rounds later
  # in slot j (rows at different positions and slots in every pass, two passes per round)
  out=$("$exe" generate --checkpoint "$work/kv" --prompt "The cat sat on the mat and the" --check-cache --batch 40) \
    || fail "check-cache --batch 40: $out"
  echo "$out" | jq -e '.sequences == 40 and .max_abs_diff <= 1e-4' >/dev/null || fail "batched cache mismatch: $out"
  # with train.recompute the head is fused with the loss (no logits tensor in the plan): the
  # full forward's logits are then made from the head's input on the host; its eval agrees and
  # its arena is smaller
  { cat "$here/small.moe"; printf 'model small_rc : small { train { recompute = true } }\n'; } > "$work/rc.moe"
  "$moec" build "$work/rc.moe" --model small_rc -o "$work/small_rc" -O1 || fail "moec build small_rc"
  out=$("$work/small_rc" generate --checkpoint "$work/kv" --prompt "The cat sat on the mat and the" --check-cache) \
    || fail "check-cache with the fused head: $out"
  echo "$out" | jq -e '.positions == 30 and .max_abs_diff <= 1e-4' >/dev/null || fail "fused head: cache mismatch: $out"
  seq 1 3000 | tr '\n' ' ' > "$work/ev.txt"
  "$exe" eval --checkpoint "$work/kv" --data "$work/ev.txt" > "$work/ev0.json" \
    && "$work/small_rc" eval --checkpoint "$work/kv" --data "$work/ev.txt" > "$work/ev1.json" || fail "eval with recompute"
  jq -e -s '((.[0].lm_loss - .[1].lm_loss) | fabs) < 1e-5 * .[0].lm_loss' "$work/ev0.json" "$work/ev1.json" >/dev/null \
    || fail "eval with the fused head: $(cat "$work/ev1.json") against $(cat "$work/ev0.json")"
  "$exe" info --json > "$work/i0.json" && "$work/small_rc" info --json > "$work/i1.json" || fail "info"
  jq -e -s '.[1].train.recompute and (.[0].train.recompute | not) and .[1].arena_bytes < .[0].arena_bytes' \
    "$work/i0.json" "$work/i1.json" >/dev/null || fail "info with recompute: $(jq -c '{arena_bytes, train}' "$work/i1.json")"
  text=$("$exe" generate --checkpoint "$work/kv" --prompt "ab" --tokens 20 --temperature 0.7 --top-k 5 --seed 3)
  [ "$(printf '%s' "$text" | wc -c)" -ge 22 ] || fail "generate printed too little"
  # bench --decode: latency per token, and bytes per token between the non-expert weights
  # (less wpe) and all the weights
  "$exe" bench --decode --prompt-len 4 --tokens 8 --json > "$work/dec.json" || fail "bench --decode"
  "$exe" info --json > "$work/info.json"
  jq -e -s '.[0] as $d | .[1] as $i | $d.tokens == 8 and $d.prompt_len == 4 and $d.latency_ms_median > 0
            and $d.latency_ms_p90 >= $d.latency_ms_median and $d.tokens_per_s > 0 and $d.probe_gbs > 0
            and $d.bytes_per_token > 4 * ($i.params - $i.expert_params - $i.context * $i.hidden)
            and $d.bytes_per_token < 4 * $i.params' "$work/dec.json" "$work/info.json" >/dev/null \
    || fail "bench --decode: $(cat "$work/dec.json")"
  "$exe" bench --decode --prompt-len 30 --tokens 10 2>/dev/null && fail "bench --decode past the context"
  # 40 sequences together: two passes of the decode program's 32 rows; a pass reads each
  # weight once for its rows, so fewer bytes per token than one sequence alone
  "$exe" bench --decode --batch 40 --prompt-len 2 --tokens 3 --json > "$work/dec40.json" || fail "bench --decode --batch 40"
  jq -e -s '.[0].batch == 40 and .[0].tokens_per_s > 0 and .[0].bytes_per_token < .[1].bytes_per_token' \
    "$work/dec40.json" "$work/dec.json" >/dev/null || fail "bench --decode --batch 40: $(cat "$work/dec40.json")"
  # bench's roofline: model FLOPs per step between 6 x the non-expert and 6 x all parameters
  # per token (plus attention's 12 L T d), the rate they make in the step's time, an sgemm
  # probe and the share (printed to 3 digits, as the rates are: compared within 1e-3), the
  # plan's bytes at least the arena and the weights; a forward is a third of it
  "$exe" bench --steps 2 --warmup 1 --json > "$work/tr.json" && "$exe" bench --infer --steps 2 --json > "$work/in.json" \
    || fail "bench"
  jq -e -s '.[0] as $b | .[1] as $n | .[2] as $i | ($b.batch * $b.seq) as $S | ($i.params - $i.expert_params) as $dense
            | (12 * $i.layers * $b.seq * $i.hidden * $S) as $att
            | $b.flops_per_step >= 6 * $dense * $S + $att and $b.flops_per_step <= 6 * $i.params * $S + $att
            and (($b.gflops * $b.step_ms * 1e6 / $b.flops_per_step) - 1 | fabs) < 1e-3 and $b.sgemm_gflops > 0
            and (($b.sgemm_share - $b.gflops / $b.sgemm_gflops) | fabs) < 1e-3
            and $b.plan_bytes >= $i.arena_bytes + $i.param_bytes
            and (($n.flops_per_step * 3 / $b.flops_per_step) - 1 | fabs) < 1e-9' \
     "$work/tr.json" "$work/in.json" "$work/info.json" > /dev/null \
    || fail "bench's roofline: $(jq -c '{flops_per_step, gflops, step_ms, sgemm_gflops, sgemm_share, plan_bytes}' "$work/tr.json")"
  ;;
generate_batch)
  rm -rf "$work/gb"; "$exe" train --steps 40 --checkpoint "$work/gb" 2>/dev/null || fail "train"
  # prompts of different lengths and budgets, more of them than slots (slots refill), one that
  # reaches the context (32) and one that ends at a newline
  printf '%s\n' '"The "' '{"prompt": "12+35=", "tokens": 6}' '"abcabc"' '{"prompt": "x", "tokens": 40}' '"7 9 11 "' \
    '{"prompt": "Q", "tokens": 3}' > "$work/p.jsonl"
  # greedy: every result equals that prompt generated alone
  "$exe" generate --checkpoint "$work/gb" --prompts "$work/p.jsonl" --batch 3 --temperature 0 --tokens 12 \
    --out "$work/g3.jsonl" 2>/dev/null || fail "generate --prompts"
  [ "$(jq -s 'length' "$work/g3.jsonl")" = 6 ] || fail "not one result per prompt"
  for i in 0 1 2 3 4 5; do
    pr=$(jq -s -r ".[$i].prompt" "$work/g3.jsonl"); want=$(jq -s -r ".[$i].prompt" "$work/p.jsonl" 2>/dev/null)
    n=$(jq -s -r ".[$i].tokens" "$work/g3.jsonl")
    alone=$("$exe" generate --checkpoint "$work/gb" --prompt "$pr" --temperature 0 --tokens "$n" | head -c -1 | od -An -tu1 | tr -s ' \n' ' ')
    batch=$(jq -s -r ".[$i] | (.prompt | explode) + .ids | map(tostring) | join(\" \")" "$work/g3.jsonl")
    [ "$(echo $alone)" = "$(echo $batch)" ] || fail "prompt $i: batched '$batch', alone '$alone'"
  done
  jq -s -e '.[1].tokens == 6 and .[3].stop == "context" and .[3].tokens == 31 and .[5].tokens == 3
            and all(.[]; .stop != null)' "$work/g3.jsonl" >/dev/null || fail "budgets or stops: $(cat "$work/g3.jsonl")"
  # sampling (temperature, top-k, top-p): sequence j draws from its own stream, so the
  # results do not depend on the slots, and the first equals --prompt with the same seed
  for b in 1 4; do
    "$exe" generate --checkpoint "$work/gb" --prompts "$work/p.jsonl" --batch $b --temperature 0.9 --top-k 20 --top-p 0.9 \
      --seed 5 --end 10 --out "$work/s$b.jsonl" 2>/dev/null || fail "sampled generate --prompts --batch $b"
  done
  cmp -s "$work/s1.jsonl" "$work/s4.jsonl" || fail "sampled results depend on --batch"
  jq -s -e 'any(.[]; .stop == "end") and all(.[] | select(.stop == "end"); .ids[-1] == 10)' "$work/s1.jsonl" \
    >/dev/null || fail "no sequence ended at --end 10: $(cat "$work/s1.jsonl")"
  n0=$(jq -s -r '.[0].tokens' "$work/s1.jsonl")
  one=$("$exe" generate --checkpoint "$work/gb" --prompt "The " --temperature 0.9 --top-k 20 --top-p 0.9 --seed 5 \
    --end 10 --tokens "$n0" | od -An -tu1 | tr -s ' \n' ' ')
  first=$(jq -s -r '.[0] | (.prompt | explode) + .ids + [10] | map(tostring) | join(" ")' "$work/s1.jsonl")   # + its newline
  [ "$(echo $one)" = "$(echo $first)" ] || fail "sequence 0 differs from --prompt: '$first' against '$one'"
  # bad prompt files: the line named
  printf '"ok"\n{"prompt": 3}\n' > "$work/bad.jsonl"
  "$exe" generate --checkpoint "$work/gb" --prompts "$work/bad.jsonl" 2> "$work/bad.err" && fail "a bad prompt ran"
  grep -qF "$work/bad.jsonl:2: a prompt is a JSON string or" "$work/bad.err" || fail "bad line: $(cat "$work/bad.err")"
  ;;
quantize)
  rm -rf "$work/qz"; "$exe" train --steps 100 --checkpoint "$work/qz" 2>/dev/null || fail "train"
  "$exe" quantize --checkpoint "$work/qz" --out "$work/q8.safetensors" 2> "$work/q.err" || fail "quantize: $(cat "$work/q.err")"
  grep -qF "largest error 0.500 of a channel's scale" "$work/q.err" || fail "quantize's report: $(cat "$work/q.err")"
  # the held-out loss within 1% of fp32 (this repository's text; the model trained on synthetic)
  for w in qz q8.safetensors; do
    "$exe" eval --checkpoint "$work/$w" --data "$here/../../docs/design.md" --max-batches 20 > "$work/ev-$w.json" || fail "eval $w"
  done
  jq -e -s '(.[0].lm_loss - .[1].lm_loss | fabs) / .[0].lm_loss < 0.01' "$work/ev-qz.json" "$work/ev-q8.safetensors.json" \
    >/dev/null || fail "int8 changes the held-out loss by 1% or more: $(cat "$work"/ev-*.json)"
  # decoding reads the int8 weights: its logits against the evaluation forward of the dequantised ones
  out=$("$exe" generate --checkpoint "$work/q8.safetensors" --prompt "The cat sat on the mat and the" --check-cache) \
    || fail "check-cache: $out"
  echo "$out" | jq -e '.positions == 30 and .max_abs_diff <= 1e-4' >/dev/null || fail "int8 decode against the forward: $out"
  # greedy tokens agree with fp32's in at least 90% of the positions (measured: all)
  printf '%s\n' '"The "' '"abcabc"' '"7 9 11 "' '"Q"' '"hello wor"' '"12+35="' '"model "' '"xyz"' > "$work/p.jsonl"
  for w in qz q8.safetensors; do
    "$exe" generate --checkpoint "$work/$w" --prompts "$work/p.jsonl" --batch 4 --temperature 0 --tokens 20 \
      --out "$work/g-$w.jsonl" 2>/dev/null || fail "generate $w"
  done
  agree=$(jq -s -r '[.[0:8], .[8:16]] | transpose | map([.[0].ids, .[1].ids] | transpose | map(select(.[0] == .[1])) | length)
                    | add' <(cat "$work/g-qz.jsonl" "$work/g-q8.safetensors.jsonl"))
  total=$(jq -s '[.[].ids | length] | add' "$work/g-qz.jsonl")
  echo "greedy agreement int8 / fp32: $agree of $total tokens"
  [ $((agree * 10)) -ge $((total * 9)) ] || fail "greedy agreement $agree of $total"
  "$exe" bench --decode --checkpoint "$work/q8.safetensors" --prompt-len 4 --tokens 8 --json > "$work/d8.json" || fail "bench int8"
  "$exe" bench --decode --checkpoint "$work/qz" --prompt-len 4 --tokens 8 --json > "$work/d32.json" || fail "bench f32"
  jq -e -s '.[0].expert_weights == "int8" and .[1].expert_weights == "f32" and .[0].bytes_per_token < .[1].bytes_per_token' \
    "$work/d8.json" "$work/d32.json" >/dev/null || fail "bench --decode int8: $(cat "$work/d8.json")"
  # refusals: quantizing twice, resuming training from int8, int8 scales that are missing
  "$exe" quantize --checkpoint "$work/q8.safetensors" --out "$work/qq.safetensors" 2> "$work/e1" && fail "quantized twice"
  grep -qF "holds int8 expert weights already" "$work/e1" || fail "quantize twice: $(cat "$work/e1")"
  mkdir -p "$work/r"; cp "$work/q8.safetensors" "$work/r/step-00000100.safetensors"
  cp "$work/qz/step-00000100.optim.safetensors" "$work/r/"
  "$exe" train --steps 110 --checkpoint "$work/r" --resume 2> "$work/e2" && fail "resumed from int8"
  grep -qF "holds weights-int8, not weights" "$work/e2" || fail "resume from int8: $(cat "$work/e2")"
  python3 - "$work/q8.safetensors" "$work/noscale.safetensors" <<'PYEOF2'
import json, struct, sys
raw = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
del hdr[next(k for k in hdr if k.endswith('_scale'))]
h = json.dumps(hdr).encode()
h += b' ' * (-len(h) % 8)
open(sys.argv[2], 'wb').write(struct.pack('<Q', len(h)) + h + raw[8 + n:])
PYEOF2
  "$exe" eval --checkpoint "$work/noscale.safetensors" --data synthetic 2> "$work/e3" && fail "int8 without scales"
  grep -qE "int8 tensor 'h\.1\.moe\.experts\.c_(fc|proj)\.weight' needs its scales" "$work/e3" || fail "no scales: $(cat "$work/e3")"
  ;;
accumulate)
  for m in whole split; do
    "$moec" build "$here/accum.moe" --model $m -o "$work/$m" || fail "moec build $m"
    "$work/$m" train --steps 6 --log "$work/$m.jsonl" 2>/dev/null || fail "train $m"
  done
  # loss and gradient norm of every step (the norm sees a wrongly scaled accumulation)
  paste <(jq -r '.loss, .grad_norm' "$work/whole.jsonl") <(jq -r '.loss, .grad_norm' "$work/split.jsonl") | tee "$work/pairs" |
    awk '{d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * $1) bad = 1} END {exit bad}' \
    || { cat "$work/pairs"; fail "accumulate 2 x 2 differs from 1 x 4"; }
  cat "$work/pairs"
  ;;
bad_input)
  rm -rf "$work/ok"; "$exe" train --steps 1 --checkpoint "$work/ok" 2>/dev/null || fail "train"
  ck="$work/ok/step-00000001.safetensors"
  printf 'garbage' > "$work/garbage.safetensors"
  head -c 100 "$ck" > "$work/truncated.safetensors"
  # a checkpoint of another model: the e2e model with its gate renamed
  python3 - "$ck" "$work/other.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n]); h['h.1.moe.gatex.weight'] = h.pop('h.1.moe.gate.weight')
hb = json.dumps(h).encode(); hb += b' ' * (-len(hb) % 8)
open(sys.argv[2], 'wb').write(struct.pack('<Q', len(hb)) + hb + b[8 + n:])
PY
  python3 - "$work" <<'PY'
import struct, sys
w = sys.argv[1]
def binfile(path, toks, count=None):
    hdr = [20240520, 1, len(toks) if count is None else count] + [0] * 253
    open(path, 'wb').write(struct.pack('<256i', *hdr) + struct.pack('<%dH' % len(toks), *toks))
binfile(w + '/oov.bin', [1, 2, 3, 300, 5] * 40)
binfile(w + '/short.bin', list(range(100)), count=1000)
PY
  # a checkpoint with one NaN weight (element 7 of the first tensor's data)
  python3 - "$ck" "$work/nan.safetensors" <<'PY'
import json, struct, sys
b = bytearray(open(sys.argv[1], 'rb').read()); n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n]); name = min((k for k in h if k != '__metadata__'), key=lambda k: h[k]['data_offsets'][0])
struct.pack_into('<f', b, 8 + n + h[name]['data_offsets'][0] + 4 * 7, float('nan'))
open(sys.argv[2], 'wb').write(b)
print(name, file=open(sys.argv[2] + '.name', 'w'))
PY
  "$exe" grad --checkpoint "$ck" --data synthetic --out "$work/grads.safetensors" || fail "grad"
  # checkpoint directories for --resume: weights only; an optimizer file whose step is bad
  rm -rf "$work/wonly" "$work/badstep" "$work/otherstep"; mkdir -p "$work/wonly"; cp "$ck" "$work/wonly/"
  cp -r "$work/ok" "$work/badstep"; cp -r "$work/ok" "$work/otherstep"
  setmeta() {   # FILE KEY VALUE: rewrites one metadata entry of a safetensors header
    python3 - "$@" <<'PY'
import json, struct, sys
path, key, value = sys.argv[1:4]
b = open(path, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n]); h['__metadata__'][key] = value
hb = json.dumps(h).encode(); hb += b' ' * (-len(hb) % 8)
open(path, 'wb').write(struct.pack('<Q', len(hb)) + hb + b[8 + n:])
PY
  }
  setmeta "$work/badstep/step-00000001.optim.safetensors" step -4
  setmeta "$work/otherstep/step-00000001.optim.safetensors" step 5
  cp "$ck" "$work/ck.backup"
  pass=0; total=0
  check() {  # name, then the command; compares stderr (paths replaced by WORK) and the exit
    # status: $want, 1 (a failure) unless given, 2 for usage errors
    local name=$1; shift
    total=$((total + 1))
    "$@" >/dev/null 2>"$work/$name.err"; local rc=$?
    sed -e "s#$work#WORK#g" -e "s#$exe#EXE#g" "$work/$name.err" > "$work/$name.got"
    if [ "$rc" = "${want:-1}" ] && diff -u "$here/bad/$name.expected" "$work/$name.got"; then pass=$((pass + 1));
    else echo "FAIL: $name (status $rc)"; fi
  }
  check missing_checkpoint "$exe" eval --checkpoint "$work/nope.safetensors" --data synthetic
  check garbage_checkpoint "$exe" eval --checkpoint "$work/garbage.safetensors" --data synthetic
  check truncated_checkpoint "$exe" eval --checkpoint "$work/truncated.safetensors" --data synthetic
  check other_model "$exe" eval --checkpoint "$work/other.safetensors" --data synthetic
  check token_out_of_range "$exe" eval --checkpoint "$ck" --data "$work/oov.bin"
  check truncated_tokens "$exe" eval --checkpoint "$ck" --data "$work/short.bin"
  want=2 check missing_data "$exe" eval --checkpoint "$ck"
  check batch_too_large "$exe" eval --checkpoint "$ck" --data synthetic --batch 5 --seq 32
  check seq_too_long "$exe" grad --checkpoint "$ck" --data synthetic --seq 33 --out "$work/g.safetensors"
  want=2 check grad_without_out "$exe" grad --checkpoint "$ck" --data synthetic
  check cuda_device "$exe" info --device cuda
  want=2 check unknown_flag "$exe" train --stpes 3
  want=2 check resume_without_dir "$exe" train --resume
  want=2 check bad_number "$exe" bench --steps ten
  want=2 check max_batches_zero "$exe" eval --checkpoint "$work/nonexistent" --data synthetic --max-batches 0
  rm -f "$work/fifo"; mkfifo "$work/fifo"     # must be refused, not block in open()
  check fifo_data timeout 20 "$exe" eval --checkpoint "$ck" --data "$work/fifo"
  check fifo_checkpoint timeout 20 "$exe" eval --checkpoint "$work/fifo" --data synthetic
  want=2 check big_batch "$exe" eval --checkpoint "$ck" --data synthetic --batch 4294967297
  want=2 check big_top_k "$exe" generate --checkpoint "$ck" --top-k 4294967297
  check grad_over_checkpoint "$exe" grad --checkpoint "$ck" --data synthetic --out "$ck"
  check gradients_as_weights "$exe" eval --checkpoint "$work/grads.safetensors" --data synthetic
  check nonfinite_weights "$exe" eval --checkpoint "$work/nan.safetensors" --data synthetic
  check out_fifo timeout 20 "$exe" grad --checkpoint "$ck" --data synthetic --out "$work/fifo"
  check out_empty "$exe" grad --checkpoint "$ck" --data synthetic --out ""
  want=2 check prompt_too_long "$exe" generate --checkpoint "$ck" --prompt "$(printf '%040d' 0)"
  want=2 check negative_temperature "$exe" generate --checkpoint "$ck" --temperature -1
  check used_dir "$exe" train --steps 1 --checkpoint "$work/ok"
  want=2 check under_mpirun env OMPI_COMM_WORLD_SIZE=2 "$exe" generate --checkpoint "$ck" --tokens 1
  want=2 check unknown_device "$exe" eval --checkpoint "$ck" --data synthetic --device tpu
  check resume_other_seed "$exe" train --steps 2 --checkpoint "$work/ok" --resume --seed 5
  check resume_weights_only "$exe" train --steps 2 --checkpoint "$work/wonly" --resume
  check resume_bad_step "$exe" train --steps 2 --checkpoint "$work/badstep" --resume
  check resume_step_mismatch "$exe" train --steps 2 --checkpoint "$work/otherstep" --resume
  cmp -s "$ck" "$work/ck.backup" || fail "a refused command changed the checkpoint"
  [ -p "$work/fifo" ] || fail "the FIFO given as --out was replaced"
  [ -e "$work/g.safetensors" ] && fail "grad wrote a file on bad input"
  # eval needs weights only: a directory without optimizer files will do
  "$exe" eval --checkpoint "$work/wonly" --data synthetic --batch 2 --seq 16 >/dev/null || fail "eval on a weights-only directory"
  # a checkpoint directory that cannot be written is refused before the run (root writes anyway)
  if [ "$(id -u)" != 0 ]; then
    rm -rf "$work/ro"; mkdir "$work/ro"; chmod 555 "$work/ro"
    "$exe" train --steps 1 --checkpoint "$work/ro" 2>"$work/ro.err" >/dev/null && fail "train into a read-only directory"
    grep -q "cannot write checkpoints in $work/ro: Permission denied" "$work/ro.err" || fail "read-only: $(cat "$work/ro.err")"
    chmod 755 "$work/ro"
  fi
  # under an address-space limit too small for the threads beside the plan: refused with the
  # numbers, not hung in OpenBLAS's allocation loop (ASan builds map too much to be limited)
  if [ "$(nm "$exe" 2>/dev/null | grep -c __asan_init)" = 0 ]; then
    (ulimit -v 350000; OMP_NUM_THREADS=1 timeout 20 "$exe" train --steps 1) >/dev/null 2>"$work/ulimit.err"; rc=$?
    [ $rc = 1 ] && grep -q "of memory (parameters .*) but .* available (ulimit -v, less [0-9]* MiB kept for the threads' buffers and stacks); raise ulimit -v, or use fewer threads (OMP_NUM_THREADS)" \
      "$work/ulimit.err" || fail "ulimit -v: status $rc: $(cat "$work/ulimit.err")"
  fi
  # generating past the context says so; a tiny temperature is a number
  "$exe" generate --checkpoint "$ck" --tokens 100 --temperature 1e-320 2>"$work/gen.err" >/dev/null || fail "generate"
  grep -qx "EXE generate: generated 31 of 100 tokens: stopped at the model's context of 32" \
      <(sed "s#$exe#EXE#g" "$work/gen.err") || fail "generate past the context: $(cat "$work/gen.err")"
  # temporaries of killed writers are removed when a run starts in their directory
  pid=999999; while kill -0 $pid 2>/dev/null; do pid=$((pid + 1)); done
  touch "$work/ok/step-00000002.safetensors.tmp.$pid" "$work/ok/step-00000002.safetensors.tmp.$$"
  "$exe" train --steps 1 --checkpoint "$work/ok" --resume 2>"$work/stale.err" >/dev/null || fail "train --resume"
  [ -e "$work/ok/step-00000002.safetensors.tmp.$pid" ] && fail "a stale temporary was left"
  [ -e "$work/ok/step-00000002.safetensors.tmp.$$" ] || fail "the temporary of a live process was removed"
  grep -q "removed 1 temporary file of killed writers: step-00000002.safetensors.tmp.$pid" "$work/stale.err" \
      || fail "no word of the removed temporary: $(cat "$work/stale.err")"
  echo "$pass passed, $((total - pass)) failed"
  [ "$pass" = "$total" ] || exit 1
  ;;
kill9)
  # a run killed (SIGKILL) again and again, often while writing a checkpoint (one per step),
  # then resumed to the end: the weights of the uninterrupted run bit for bit, every step
  # logged once, no temporary left
  sed 's/checkpoint_every = 10/checkpoint_every = 1/' "$here/small.moe" > "$work/every.moe"
  "$moec" build "$work/every.moe" -o "$work/every" || fail "moec build"
  rm -rf "$work/full" "$work/part" "$work/part.jsonl"
  "$work/every" train --steps 40 --checkpoint "$work/full" --log "$work/full.jsonl" 2>/dev/null || fail "uninterrupted run"
  newest() { ls "$work/part" 2>/dev/null | sed -n 's/^step-0*\([0-9][0-9]*\)\.safetensors$/\1/p' | sort -n | tail -1; }
  # each run is killed once the newest checkpoint reaches its mark (so at a step's end, while
  # the next checkpoint may be being written), or after a short delay (mark 0: at start-up)
  kills=0
  for mark in 0 4 9 9 15 22 0 30; do
    flags=--resume; [ -d "$work/part" ] || flags=
    "$work/every" train --steps 40 --checkpoint "$work/part" --log "$work/part.jsonl" $flags 2>>"$work/kill.err" &
    pid=$!
    if [ $mark = 0 ]; then sleep 0.02; else
      until ! kill -0 $pid 2>/dev/null || [ "$(newest)" -ge $mark ] 2>/dev/null; do sleep 0.005; done
    fi
    kill -9 $pid 2>/dev/null && kills=$((kills + 1)); wait $pid 2>/dev/null
  done
  echo "killed $kills runs; the newest checkpoint: step $(newest)"
  [ "$kills" -ge 6 ] && [ "$(newest)" -lt 40 ] || fail "the runs ended before they could be killed"
  "$work/every" train --steps 40 --checkpoint "$work/part" --log "$work/part.jsonl" --resume 2>>"$work/kill.err" \
    || { cat "$work/kill.err"; fail "the final resumed run"; }
  cmp "$work/full/step-00000040.safetensors" "$work/part/step-00000040.safetensors" || fail "final weights differ"
  cmp "$work/full/step-00000040.optim.safetensors" "$work/part/step-00000040.optim.safetensors" || fail "optimizer state differs"
  [ "$(jq -c .step "$work/part.jsonl" | paste -sd,)" = "$(seq -s, 1 40)" ] || fail "the log's steps are not 1..40 once each"
  diff <(losses "$work/full.jsonl") <(losses "$work/part.jsonl") || fail "losses differ from the uninterrupted run"
  ls "$work/part" | grep -q tmp && fail "temporary files left: $(ls "$work/part" | grep tmp)"
  ;;
enospc)
  # a full disk (a small tmpfs; needs root): the save fails with the reason, the newest complete
  # checkpoint stays whole, no temporary stays behind, and once there is room --resume goes on to
  # the uninterrupted run's weights
  [ "$(id -u)" = 0 ] || { echo "skipped: needs root to mount a tmpfs"; exit 77; }
  rm -rf "$work/full" "$work/disk"; mkdir -p "$work/disk"
  "$exe" train --steps 30 --checkpoint "$work/full" 2>/dev/null || fail "uninterrupted run"
  one=$(du -cb "$work/full"/step-00000010*.safetensors | tail -1 | cut -f1)
  mount -t tmpfs -o size=$((one * 5 / 2)) tmpfs "$work/disk" 2>/dev/null || { echo "skipped: cannot mount a tmpfs"; exit 77; }
  trap 'umount "$work/disk"' EXIT
  "$exe" train --steps 30 --checkpoint "$work/disk/ck" --log "$work/disk/log.jsonl" 2>"$work/full.err" && fail "a run on a full disk succeeded"
  grep -q "No space left on device" "$work/full.err" || fail "no reason given: $(cat "$work/full.err")"
  ls "$work/disk/ck" | grep -q tmp && fail "temporary files left: $(ls "$work/disk/ck")"
  cmp "$work/full/step-00000010.safetensors" "$work/disk/ck/step-00000010.safetensors" || fail "the step-10 checkpoint is damaged"
  [ -z "$(tail -c 1 "$work/disk/log.jsonl")" ] || fail "the log ends in half a line"
  mount -o remount,size=$((one * 8)) "$work/disk" || fail "remount"
  "$exe" train --steps 30 --checkpoint "$work/disk/ck" --log "$work/disk/log.jsonl" --resume 2>/dev/null || fail "resume"
  cmp "$work/full/step-00000030.safetensors" "$work/disk/ck/step-00000030.safetensors" || fail "resumed weights differ"
  ;;
spike)
  # lr 30 diverges from step 2: warned on stderr (5 times, then in the log only) and in the
  # log at every step; a healthy run logs no warning
  sed 's/lr = 3e-3/lr = 30/' "$here/small.moe" > "$work/spike.moe"
  "$moec" build "$work/spike.moe" -o "$work/spike" || fail "moec build"
  "$work/spike" train --steps 10 --log "$work/spike.jsonl" 2>"$work/spike.err" || fail "train"
  grep '^warning' "$work/spike.err" | sed 's/loss [0-9.e+]* is/loss L is/' > "$work/spike.got"
  diff - "$work/spike.got" <<'EOF' || fail "the warnings on stderr"
warning: step 2: loss L is far above 5.545, the loss of uniform guessing (ln vocab): the run is diverging
warning: step 3: loss L is far above 5.545, the loss of uniform guessing (ln vocab): the run is diverging
warning: step 4: loss L is far above 5.545, the loss of uniform guessing (ln vocab): the run is diverging
warning: step 5: loss L is far above 5.545, the loss of uniform guessing (ln vocab): the run is diverging
warning: step 6: loss L is far above 5.545, the loss of uniform guessing (ln vocab): the run is diverging (further warnings go to the log only)
EOF
  [ "$(jq -s -c '[.[] | select(.warning) | .step]' "$work/spike.jsonl")" = "[2,3,4,5,6,7,8,9,10]" ] || fail "the log's warnings"
  "$exe" train --steps 10 --log "$work/calm.jsonl" 2>/dev/null || fail "train"
  [ "$(jq -s '[.[] | select(.warning)] | length' "$work/calm.jsonl")" = 0 ] || fail "warnings in a healthy run"
  ;;
first_day)
  # held-out evaluation, schedule overrides and the run header, eval's report, Ctrl-C, and
  # generation with token ids for a vocabulary that is not bytes
  head -c 20000 "$here/../../README.md" > "$work/held.txt"
  "$exe" train --steps 20 --eval-data "$work/held.txt" --eval-batches 2 --lr 1e-3 --warmup 2 --steps-total 20 \
    --checkpoint "$work/fd" --overwrite --log "$work/fd.jsonl" 2>"$work/fd.err" || fail "train"
  grep -q "^step 20: eval loss [0-9.]* (held out)$" "$work/fd.err" || fail "no held-out loss on the console: $(cat "$work/fd.err")"
  jq -s -e '.[0].run | .eval_data == "'"$work/held.txt"'" and .lr == 0.001 and .warmup == 2 and .steps_total == 20
            and .data == "synthetic" and .overrides == "--lr --warmup --steps-total --eval-batches --steps"' \
    "$work/fd.jsonl" >/dev/null || fail "run header: $(head -1 "$work/fd.jsonl" | jq -c .run)"
  jq -s -e '(.[0].lr - 0.0005 | fabs) < 1e-9 and (.[1].lr - 0.001 | fabs) < 1e-9 and (.[19].lr | . > 0.0003 and . < 0.00031)
            and ([.[] | select(.run)] | length == 1)' "$work/fd.jsonl" >/dev/null \
    || fail "the overridden schedule: $(jq -c '[.step, .lr]' "$work/fd.jsonl" | paste -sd' ')"
  # the held-out loss is eval's loss on the same 2 batches
  held=$(jq -s '.[19].eval_loss' "$work/fd.jsonl")
  out=$("$exe" eval --checkpoint "$work/fd" --data "$work/held.txt" --max-batches 2) || fail "eval"
  echo "$out" | jq -e --argjson h "$held" '.batches == 2 and .step == 20 and (.lm_loss - $h | fabs) < 1e-6
      and (.perplexity - (.lm_loss | exp) | fabs) < 1e-4 and (.bits_per_byte - .lm_loss / (2 | log) | fabs) < 1e-6
      and (.checkpoint | endswith("step-00000020.safetensors"))' >/dev/null || fail "eval: $out (held-out loss $held)"
  # a small lr alone takes min_lr = lr / 10; a constant schedule never uses min_lr
  sed 's/lr = 3e-3  min_lr = 3e-4/lr = 1e-5/' "$here/small.moe" > "$work/smalllr.moe"
  sed 's/lr = 3e-3  min_lr = 3e-4/lr = 1e-5  min_lr = 1e-3  schedule = constant/' "$here/small.moe" > "$work/const.moe"
  for m in smalllr const; do "$moec" build "$work/$m.moe" -o "$work/$m" || fail "moec build $m"; done
  "$work/smalllr" info --json | jq -e '.train.min_lr == 1e-6 and .train.eval_batches == 8' >/dev/null \
    || fail "min_lr of lr = 1e-5 alone, or eval_batches"
  "$work/smalllr" train --steps 1 --lr 1e-7 2>/dev/null >/dev/null || fail "--lr below the model's min_lr"
  # Ctrl-C: a checkpoint of the step the run was in, exit status 130
  rm -rf "$work/int" "$work/int.jsonl" "$work/int.err"
  "$exe" train --steps 100000 --checkpoint "$work/int" --log "$work/int.jsonl" 2>"$work/int.err" & pid=$!
  until [ -s "$work/int.jsonl" ] || ! kill -0 $pid 2>/dev/null; do sleep 0.05; done
  kill -INT $pid; wait $pid; rc=$?
  [ $rc = 130 ] || fail "Ctrl-C: status $rc: $(tail -3 "$work/int.err")"
  last=$(tail -1 "$work/int.jsonl" | jq .step)
  grep -q "^interrupted: saved $work/int/step-$(printf %08d "$last").safetensors; continue with --resume$" "$work/int.err" \
    || fail "Ctrl-C message: $(tail -2 "$work/int.err")"
  [ -e "$work/int/step-$(printf %08d "$last").optim.safetensors" ] || fail "Ctrl-C: no complete checkpoint of step $last"
  # a vocabulary of 300: the prompt and the output are token ids
  sed 's/vocab = 256/vocab = 300/' "$here/small.moe" > "$work/v300.moe"
  "$moec" build "$work/v300.moe" -o "$work/v300" || fail "moec build"
  "$work/v300" train --steps 2 --checkpoint "$work/v300ck" --overwrite 2>/dev/null || fail "train v300"
  ids=$("$work/v300" generate --checkpoint "$work/v300ck" --prompt "1, 2 299" --tokens 5 --temperature 0) || fail "generate ids"
  echo "$ids" | grep -Eq '^1 2 299( [0-9]+){5} $' || fail "generate printed '$ids'"
  rm -f "$work/ids.err"
  for bad in "1 300" "12 abc" "-1"; do
    "$work/v300" generate --checkpoint "$work/v300ck" --prompt "$bad" >/dev/null 2>>"$work/ids.err"; rc=$?
    [ $rc = 2 ] || fail "prompt '$bad': status $rc"
  done
  diff - <(sed "s#$work#WORK#g" "$work/ids.err") <<'EOF' || fail "messages for bad token ids"
WORK/v300 generate: --prompt: token id 300 is outside the vocabulary (0 to 299)
WORK/v300 generate: --prompt: 'abc' is not a token id (this model's vocabulary of 300 is not bytes: the prompt is token ids from 0 to 299 separated by spaces)
WORK/v300 generate: --prompt: token id -1 is outside the vocabulary (0 to 299)
EOF
  ;;
export)
  # export --hf of a GPT-2-shaped model: the names, shapes, metadata and config fields of
  # Hugging Face's GPT-2 (scripts/check_hf.sh loads it in transformers); other shapes refused;
  # every checkpoint directory holds a config.json
  "$moec" build "$here/gpt2.moe" -o "$work/gpt2" || fail "moec build"
  rm -rf "$work/ck" "$work/hf"
  "$work/gpt2" train --steps 3 --checkpoint "$work/ck" 2>/dev/null || fail "train"
  "$work/gpt2" export --hf "$work/hf" --checkpoint "$work/ck" 2>/dev/null || fail "export"
  python3 - "$work/hf" <<'PY' || fail "the export is not GPT-2's layout"
import json, struct, sys
d = sys.argv[1]
c = json.load(open(d + "/config.json"))
want = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 256, "n_positions": 32,
        "n_embd": 32, "n_layer": 2, "n_head": 2, "n_inner": 128, "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True}
bad = {k: (c.get(k), v) for k, v in want.items() if c.get(k) != v}
assert not bad, "config.json: %s" % bad
b = open(d + "/model.safetensors", "rb").read(); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); meta = h.pop("__metadata__")
assert meta.get("format") == "pt", meta
E, L, F, V, P = 32, 2, 128, 256, 32
shapes = {"wte.weight": [V, E], "wpe.weight": [P, E], "ln_f.weight": [E], "ln_f.bias": [E]}
for i in range(L):
    for k, s in {"ln_1.weight": [E], "ln_1.bias": [E], "ln_2.weight": [E], "ln_2.bias": [E],
                 "attn.c_attn.weight": [E, 3 * E], "attn.c_attn.bias": [3 * E], "attn.c_proj.weight": [E, E],
                 "attn.c_proj.bias": [E], "mlp.c_fc.weight": [E, F], "mlp.c_fc.bias": [F],
                 "mlp.c_proj.weight": [F, E], "mlp.c_proj.bias": [E]}.items():
        shapes["h.%d.%s" % (i, k)] = s
got = {k: v["shape"] for k, v in h.items()}
assert got == shapes, "tensors: missing %s, extra %s, shapes %s" % (
    sorted(set(shapes) - set(got)), sorted(set(got) - set(shapes)),
    {k: (got[k], shapes[k]) for k in got if k in shapes and got[k] != shapes[k]})
assert all(v["dtype"] == "F32" for v in h.values())
PY
  jq -e --rawfile src "$here/gpt2.moe" '.moec.model == "gpt2" and .model_type == "gpt2" and .n_layer == 2
         and .moec.moe_text == "# file: \(.moec.source)\n\($src)\n"' "$work/ck/config.json" >/dev/null \
    || fail "no config.json in the checkpoint directory"
  # a refused --resume leaves the directory's config.json alone
  "$exe" train --steps 5 --checkpoint "$work/ck" --resume 2>/dev/null && fail "small resumed gpt2's checkpoint"
  jq -e '.moec.model == "gpt2"' "$work/ck/config.json" >/dev/null || fail "a refused run rewrote config.json"
  # the .moe text survives C's trigraphs, and a path that is not UTF-8 is null, not an error
  { printf '# what??/ ??) ??= ??!\n'; cat "$here/gpt2.moe"; } > "$work/tri.moe"
  "$moec" build "$work/tri.moe" -o "$work/tri" || fail "moec build of a file with trigraphs"
  "$work/tri" train --steps 1 --checkpoint "$work/cktri" --overwrite --data "$here/gpt2.moe" 2>/dev/null || fail "train tri"
  jq -e --rawfile src "$work/tri.moe" '.moec.moe_text == "# file: \(.moec.source)\n\($src)\n"' "$work/cktri/config.json" \
    >/dev/null || fail "the .moe text in config.json differs from the file"
  cp "$here/gpt2.moe" "$work/$(printf 'd\377.txt')"
  "$work/tri" train --steps 2 --data "$work/$(printf 'd\377.txt')" --log "$work/nonutf8.jsonl" 2>/dev/null \
    || fail "train on a path that is not UTF-8"
  jq -s -e '.[0].run.data == null and length == 2' "$work/nonutf8.jsonl" >/dev/null || fail "the log of a non-UTF-8 path"
  "$exe" train --steps 1 --checkpoint "$work/ckm" --overwrite 2>/dev/null || fail "train small"
  jq -e '.model_type == "moec" and .moec.num_local_experts == [4] and .moec.moe_blocks == [1]' "$work/ckm/config.json" \
    >/dev/null || fail "the MoE model's config.json: $(cat "$work/ckm/config.json")"
  "$exe" export --hf "$work/hfm" --checkpoint "$work/ckm" 2>"$work/exm.err" && fail "a MoE model was exported as GPT-2"
  diff - <(sed "s#$exe#EXE#g" "$work/exm.err") <<'EOF' || fail "the refusal"
EXE export: export --hf writes GPT-2-shaped models (dense, layernorm, gelu or relu, learned positions, tied embeddings, biases) and Mixtral-shaped ones (every block MoE with the same experts, rmsnorm, rope, swiglu, bias = false, untied embeddings, no residual, top_k >= 2); model small is neither: not GPT-2 because it has MoE layers (GPT-2 is dense); not Mixtral because not every block is an MoE block.
EOF
  # export --hf of a Mixtral-shaped model: Mixtral's names, [out, in] layouts (each tensor the
  # transposed slice of ours) and config fields; a note that Mixtral never drops tokens only
  # where this model may drop them (not here: drop_tokens = false)
  "$moec" build "$here/mixtral.moe" -o "$work/mixtral" || fail "moec build mixtral"
  rm -rf "$work/ckx" "$work/hfx"
  "$work/mixtral" train --steps 3 --checkpoint "$work/ckx" 2>/dev/null || fail "train mixtral"
  "$work/mixtral" export --hf "$work/hfx" --checkpoint "$work/ckx" 2>"$work/exx.err" || fail "export mixtral"
  grep -q "^note: Mixtral never drops tokens" "$work/exx.err" && fail "a note on dropped tokens for a dropless model"
  jq -e '.model_type == "mixtral" and .architectures == ["MixtralForCausalLM"]' "$work/ckx/config.json" >/dev/null \
    || fail "the Mixtral model's checkpoint config.json: $(cat "$work/ckx/config.json")"
  python3 - "$work/hfx" "$work/ckx/step-00000003.safetensors" <<'PY' || fail "the export is not Mixtral's layout"
import json, struct, sys
from array import array
d, ck = sys.argv[1], sys.argv[2]
def load(path):
    b = open(path, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); meta = h.pop("__metadata__", {})
    t = {}
    for k, v in h.items():
        assert v["dtype"] == "F32", (k, v["dtype"])
        a = array("f"); a.frombytes(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
        t[k] = (v["shape"], a)
    return meta, t
c = json.load(open(d + "/config.json"))
V, D, L, H, KV, E, F = 256, 32, 2, 4, 2, 4, 48
want = {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "vocab_size": V, "hidden_size": D,
        "intermediate_size": F, "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": KV,
        "hidden_act": "silu", "max_position_embeddings": 32, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "num_local_experts": E, "num_experts_per_tok": 2,
        "router_aux_loss_coef": 0.01, "output_router_logits": False, "sliding_window": None,
        "attention_dropout": 0.0, "torch_dtype": "float32"}
bad = {k: (c.get(k, "absent"), v) for k, v in want.items() if c.get(k, "absent") != v}
assert not bad, "config.json: %s" % bad
meta, hf = load(d + "/model.safetensors")
assert meta.get("format") == "pt", meta
_, ours = load(ck)
kv = KV * D // H
# HF name -> (ours, expert, first column, columns): the transpose of those columns; None: as it is
table = {"model.embed_tokens.weight": ("wte.weight", None), "model.norm.weight": ("ln_f.weight", None),
         "lm_head.weight": ("lm_head.weight", 0, 0, V)}
for i in range(L):
    p, h = "model.layers.%d." % i, "h.%d." % i
    table.update({p + "input_layernorm.weight": (h + "ln_1.weight", None),
                  p + "post_attention_layernorm.weight": (h + "ln_2.weight", None),
                  p + "self_attn.q_proj.weight": (h + "attn.c_attn.weight", 0, 0, D),
                  p + "self_attn.k_proj.weight": (h + "attn.c_attn.weight", 0, D, kv),
                  p + "self_attn.v_proj.weight": (h + "attn.c_attn.weight", 0, D + kv, kv),
                  p + "self_attn.o_proj.weight": (h + "attn.c_proj.weight", 0, 0, D),
                  p + "block_sparse_moe.gate.weight": (h + "moe.gate.weight", 0, 0, E)})
    for e in range(E):
        x = p + "block_sparse_moe.experts.%d." % e
        table.update({x + "w1.weight": (h + "moe.experts.c_fc.weight", e, 0, F),
                      x + "w3.weight": (h + "moe.experts.c_fc.weight", e, F, F),
                      x + "w2.weight": (h + "moe.experts.c_proj.weight", e, 0, D)})
assert set(hf) == set(table), "tensors: missing %s, extra %s" % (sorted(set(table) - set(hf)),
                                                                 sorted(set(hf) - set(table)))
for name, spec in table.items():
    shape, a = ours[spec[0]]
    if spec[1] is None:
        want_shape, want = shape, list(a)
    else:
        e, c0, cols = spec[1:]
        rows, ld = shape[-2], shape[-1]
        base = e * rows * ld if len(shape) == 3 else 0
        want_shape = [cols, rows]
        want = [a[base + r * ld + c0 + j] for j in range(cols) for r in range(rows)]
    got_shape, got = hf[name]
    assert got_shape == want_shape, "%s: shape %s, want %s" % (name, got_shape, want_shape)
    assert list(got) == want, "%s: values differ from those of %s" % (name, spec[0])
# the question people ask: k_proj's row 0 is c_attn's column `hidden`
s, a = ours["h.0.attn.c_attn.weight"]
assert list(hf["model.layers.0.self_attn.k_proj.weight"][1][:D]) == [a[r * s[1] + D] for r in range(D)]
PY
  # top_k = 1 is not Mixtral's routing (it gives a lone expert weight 1): refused
  sed 's/top_k = 2/top_k = 1/' "$here/mixtral.moe" > "$work/top1.moe"
  "$moec" build "$work/top1.moe" -o "$work/top1" 2>/dev/null || fail "moec build top1"
  "$work/top1" export --hf "$work/hf1" --checkpoint "$work/ckx" 2>"$work/ex1.err" && fail "a top-1 model was exported"
  grep -q "not Mixtral because its top_k is 1 " "$work/ex1.err" || fail "the top-1 refusal: $(cat "$work/ex1.err")"
  # a model that may drop tokens exports with the note
  sed 's/drop_tokens = false/drop_tokens = true/' "$here/mixtral.moe" > "$work/drops.moe"
  "$moec" build "$work/drops.moe" -o "$work/drops" 2>/dev/null || fail "moec build drops"
  rm -rf "$work/hfd"
  "$work/drops" export --hf "$work/hfd" --checkpoint "$work/ckx" 2>"$work/exd.err" || fail "export drops"
  grep -q "^note: Mixtral never drops tokens.*drop_tokens = false" "$work/exd.err" || fail "no note on dropped tokens"
  ;;
paths)
  # a source directory with a quote and an output name that a shell would run as a command
  rm -rf "$work/paths"; mkdir -p "$work/paths/q\"dir it's"
  src="$work/paths/q\"dir it's/small.moe"
  cp "$here/small.moe" "$src"
  out="$work/paths/x'; touch PWNED; echo '"
  (cd "$work/paths" && "$moec" build "$src" -o "$out") || fail "moec build from a path with quotes"
  [ -e "$work/paths/PWNED" ] && fail "the output path ran a command"
  "$out" info --json | jq -e --arg s "$src" '.source == $s' >/dev/null || fail "the program does not record its source"
  # two builds of different models to one -o at once: both succeed, the output is one of
  # them whole and executable, and no temporary file is left beside it
  same="$work/paths/same"
  "$moec" build "$here/small.moe" -o "$same" & p1=$!
  "$moec" build "$here/accum.moe" --model whole -o "$same" & p2=$!
  wait $p1 || fail "the first of two concurrent builds failed"
  wait $p2 || fail "the second of two concurrent builds failed"
  m=$("$same" info --json | jq -r .model) || fail "the output of concurrent builds does not run"
  [ "$m" = small ] || [ "$m" = whole ] || fail "the output of concurrent builds is model '$m'"
  [ -x "$same" ] && [ -r "$same" ] || fail "the output is not a readable executable"
  ls "$work/paths"/same.tmp* >/dev/null 2>&1 && fail "temporary files left beside the output"
  ;;
*) fail "unknown test $test" ;;
esac
echo ok
