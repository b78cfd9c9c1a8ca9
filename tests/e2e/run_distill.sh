#!/usr/bin/env bash
# run_distill.sh - Mixture-of-Students end to end (tests/e2e/distill.moe): a teacher trained by
# its own executable, then its student trained with staged KD from that checkpoint.
#   run_distill.sh MOEC WORKDIR TEST     (TEST: flow | resume | bad)
# flow: the KD term and the teacher's steps run on steps 1..stop_step and stop after it (log,
#   console; the step times are printed), the logged loss adds weight x kd_loss, eval and grad take
#   --teacher, checkpoints hold the student alone; resume: runs resumed before and after
#   stop_step repeat an uninterrupted run exactly; bad: missing, absent or wrong teachers give
#   their golden messages (tests/e2e/bad/distill_*.expected) and exit statuses.
set -uo pipefail
moec=$1; work=$2; test=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
export OMP_NUM_THREADS=2
"$moec" build "$here/distill.moe" --model big -o "$work/teacher" || fail "moec build teacher"
"$moec" build "$here/distill.moe" --model small -o "$work/student" || fail "moec build student"
rm -rf "$work/tck"
"$work/teacher" train --checkpoint "$work/tck" 2>/dev/null || fail "teacher training"
tck="$work/tck/step-00000010.safetensors"
[ -f "$tck" ] || fail "no teacher checkpoint"
losses() { jq -r '.loss' "$1"; }
median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

case "$test" in
flow)
  rm -rf "$work/s"
  "$work/student" train --teacher "$tck" --checkpoint "$work/s" --log "$work/s.jsonl" 2> "$work/s.err" \
    || { cat "$work/s.err"; fail "student training"; }
  grep -qF "distilling from teacher big ($tck) until step 10: temperature 2, weight 0.5" "$work/s.err" \
    || fail "the run does not say it distils"
  grep -qF "step 10: distillation ends (distill.stop_step): from step 11 on the teacher no longer runs" "$work/s.err" \
    || fail "the run does not say where distillation ends"
  jq -s -e 'length == 16 and all(.[:10][]; .teacher == true and .kd_loss > 0)
            and all(.[10:][]; .teacher == false and .kd_loss == 0)' "$work/s.jsonl" >/dev/null \
    || fail "kd_loss and teacher are not on for steps 1-10 and off for 11-16"
  # loss = lm_loss + aux coef x aux_loss + weight x kd_loss (aux_loss 0.01, z_loss 0)
  jq -s -e 'all(.[]; (.loss - .lm_loss - 0.01 * .aux_loss - 0.5 * .kd_loss) | fabs < 1e-6)' \
    "$work/s.jsonl" >/dev/null || fail "the logged loss is not lm + aux + weight x kd_loss"
  # the step times (shown, not asserted: timing belongs to bench, examples/mos_small.sh)
  before=$(jq -s -r '.[2:10][].step_ms' "$work/s.jsonl" | median)
  after=$(jq -s -r '.[10:][].step_ms' "$work/s.jsonl" | median)
  echo "median step with the teacher $before ms, without $after ms"
  # eval: kd_loss only with --teacher; the student's own numbers do not change
  ck="$work/s/step-00000016.safetensors"
  "$work/student" eval --checkpoint "$ck" --data synthetic --max-batches 4 > "$work/e0.json" || fail "eval"
  "$work/student" eval --checkpoint "$ck" --data synthetic --max-batches 4 --teacher "$tck" > "$work/e1.json" \
    || fail "eval --teacher"
  jq -e 'has("kd_loss") | not' "$work/e0.json" >/dev/null || fail "kd_loss without --teacher"
  jq -e '.kd_loss > 0' "$work/e1.json" >/dev/null || fail "no kd_loss with --teacher"
  [ "$(jq -c 'del(.kd_loss)' "$work/e1.json")" = "$(jq -c . "$work/e0.json")" ] || fail "the teacher changed the student's eval"
  # grad: the KD term moves the gradient (its exact values: the reference goldens kd_*)
  "$work/student" grad --checkpoint "$ck" --data synthetic --out "$work/g0.safetensors" || fail "grad"
  "$work/student" grad --checkpoint "$ck" --data synthetic --out "$work/g1.safetensors" --teacher "$tck" \
    || fail "grad --teacher"
  ! cmp -s "$work/g0.safetensors" "$work/g1.safetensors" || fail "grad --teacher equals grad without"
  # the checkpoints hold the student alone
  python3 - "$ck" <<'PY' || fail "a student checkpoint holds teacher tensors"
import json, struct, sys
with open(sys.argv[1], 'rb') as f:
    n = struct.unpack('<Q', f.read(8))[0]
    head = json.loads(f.read(n))
names = [k for k in head if k != '__metadata__']
assert head["__metadata__"]["model"] == "small", head['__metadata__']
assert not any(k.startswith('teacher') for k in names) and 'h.2.ln_1.weight' not in names, names
PY
  ;;
resume)
  rm -rf "$work/full" "$work/a" "$work/b"
  "$work/student" train --teacher "$tck" --checkpoint "$work/full" --log "$work/full.jsonl" 2>/dev/null \
    || fail "uninterrupted run"
  # before stop_step: stopped at step 8, resumed with the teacher (and refused without it)
  "$work/student" train --teacher "$tck" --steps 8 --checkpoint "$work/a" --log "$work/a.jsonl" 2>/dev/null \
    || fail "first part"
  "$work/student" train --resume --checkpoint "$work/a" --log "$work/a.jsonl" 2> "$work/a.err" \
    && fail "a resume before stop_step ran without its teacher"
  grep -qF "model small distils from its teacher big until step 10: pass --teacher CHECKPOINT" "$work/a.err" \
    || { cat "$work/a.err"; fail "no message about the missing teacher"; }
  "$work/student" train --teacher "$tck" --resume --checkpoint "$work/a" --log "$work/a.jsonl" 2>/dev/null \
    || fail "resumed at step 8"
  diff <(losses "$work/full.jsonl") <(losses "$work/a.jsonl") || fail "resumed at step 8: losses differ"
  # after stop_step: resumed at step 12 with no teacher at all
  "$work/student" train --teacher "$tck" --steps 12 --checkpoint "$work/b" --log "$work/b.jsonl" 2>/dev/null \
    || fail "first part (12 steps)"
  "$work/student" train --resume --checkpoint "$work/b" --log "$work/b.jsonl" 2>/dev/null || fail "resumed at step 12"
  diff <(losses "$work/full.jsonl") <(losses "$work/b.jsonl") || fail "resumed at step 12: losses differ"
  ;;
bad)
  rm -rf "$work/out" "$work/s1" "$work/imp"; mkdir -p "$work/out"
  "$work/student" train --teacher "$tck" --steps 1 --checkpoint "$work/s1" 2>/dev/null || fail "one student step"
  sck="$work/s1/step-00000001.safetensors"
  # an impostor: a model named teacher, of another width
  sed 's/hidden = 48/hidden = 32/' "$here/distill.moe" > "$work/impostor.moe"
  "$moec" build "$work/impostor.moe" --model big -o "$work/impostor" || fail "moec build impostor"
  "$work/impostor" train --steps 1 --checkpoint "$work/imp" 2>/dev/null || fail "impostor step"
  run() {  # name, expected status, command...
    local name=$1 want=$2; shift 2
    "$@" > /dev/null 2> "$work/out/$name.err"; local rc=$?
    echo "exit status $rc" >> "$work/out/$name.err"
    sed -i "s|$work|WORK|g" "$work/out/$name.err"
    [ "$rc" = "$want" ] || { cat "$work/out/$name.err"; fail "$name: exit status $rc, not $want"; }
  }
  run no_teacher 2 "$work/student" train --steps 2
  run not_a_student 2 "$work/teacher" eval --checkpoint "$tck" --data synthetic --teacher "$tck"
  run teacher_missing 1 "$work/student" grad --checkpoint "$sck" --data synthetic --out "$work/g.st" --teacher "$work/none"
  run wrong_model 1 "$work/student" eval --checkpoint "$sck" --data synthetic --teacher "$sck"
  run wrong_shape 1 "$work/student" train --teacher "$work/imp" --steps 2
  for f in "$here"/bad/distill_*.expected; do
    name=$(basename "$f" .expected); name=${name#distill_}
    [ ! -e "$f" ] || [ -f "$work/out/$name.err" ] || fail "no run for $f"
  done
  for f in "$work"/out/*.err; do
    name=$(basename "$f" .err); want="$here/bad/distill_$name.expected"
    if [ -n "${UPDATE_GOLDEN:-}" ]; then cp "$f" "$want"; continue; fi
    diff -u "$want" "$f" || fail "$name: the message differs from $want"
  done
  ;;
*) fail "unknown test $test" ;;
esac
echo "ok: $test"
