#!/usr/bin/env bash
# tensor.sh MOEC WORKDIR ST_COMPARE JSON_COMPARE [all|quick] - tensor and expert slicing (parallel.tensor,
# expert_slicing) under mpirun against one process over the same sequences (tests/mpi/tensor.moe):
#   eval:  tensor groups of 2 on 2 processes, and data 2 x tensor 2 on 4, print the one-process
#          figures (GELU/layernorm/PR-MoE with drops, and SwiGLU/RMSNorm/RoPE/grouped-query);
#   grad:  they write the one-process gradient (of the mean over the data ranks' batches), also
#          with train.recompute (the blocks' sums and all-to-alls run again in the backward);
#   train: tensor 2 gives the losses, norms and weights of one process; data 2 x tensor 2, and
#          with expert groups of 2 inside it, those of its data-parallel twin on 2 processes;
#   expert slicing (alone, with tensor slicing, and data 2 x slicing 2) likewise;
#   checkpoints: written whole by tensor groups; one process resumes them and tensor groups
#          resume one process's, both to the uninterrupted losses;
#   refusals: a tensor-sliced executable in one process, and on too few processes.
# quick (the sanitizer build): the refusals, eval and grad, not the training runs.
# Skipped (77) without mpirun; not registered when moec was built without MPI.
set -uo pipefail
moec=$1; work=$2
here=$(cd "$(dirname "$0")" && pwd)
ref=$here/../reference; ref_cmp=$3; json_cmp=$4; mode=${5:-all}
fail() { echo "FAIL: $*"; exit 1; }
command -v mpirun >/dev/null || { echo "SKIP: no mpirun"; exit 77; }
mkdir -p "$work" && cd "$work" || exit 1
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader OMPI_MCA_rmaps_base_oversubscribe=1
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"     # Open MPI's plugins: see run.sh
mpi() { local np=$1; shift; timeout 300 mpirun -np "$np" "$@"; }
# (the C at -O1, two at a time: building takes most of this test's time otherwise; every
# executable compared is built alike)
# (recomputation is the compiler's: its executable is left out of the sanitizers' quick mode)
rc=gpt_d2t2e2_rc; [ "$mode" = quick ] && rc=
echo gpt gpt_t2 gpt_d2 gpt_d2t2 gpt_d2t2e2 $rc llama llama_t2 gpt_t4 gpt_x2 gpt_d2x2 llama_moe llama_moe_x2 | tr ' ' '\n' |
  xargs -P 2 -I{} "$moec" build "$here/tensor.moe" --model {} -o {} -O1 2> build.err || fail "moec build: $(cat build.err)"
# the split tensors: c_attn by columns (q, k, v parts), c_proj by rows, the MLPs' c_fc by columns
./llama_t2 info --json | jq -e '.tensor_parallel == 2 and .params == 47264' >/dev/null \
  || fail "info: $(./llama_t2 info --json | jq -c '{tensor_parallel, params}')"
./llama_t2 info | grep -q "split over tensor groups of 2 processes" || fail "info does not say the split"
# moec stats counts a rank's weights as the executable holds them (up to each tensor's 64-byte alignment)
for m in gpt_t2 llama_moe_x2; do
  sw=$("$moec" stats "$here/tensor.moe" --model $m --json | jq .memory_per_rank.weights)
  pb=$(./$m info --json | jq .param_bytes)
  awk -v w="$sw" -v p="$pb" 'BEGIN { exit !(w <= p && p - w < 64 * 48) }' || fail "$m: stats says $sw bytes of weights per rank, the executable holds $pb"
done
seq 1 20000 | awk '{ printf "%d squared is %d; ", $1, $1 * $1 }' | head -c 100000 > text.txt
# losses and norms of two logs agree to 1e-5 (relative)
same_losses() {
  paste <(jq -r '[.loss, .grad_norm] | @tsv' "$1") <(jq -r '[.loss, .grad_norm] | @tsv' "$2") |
    awk '{ for (i = 1; i <= 2; i++) { d = $i - $(i + 2); if (d < 0) d = -d; if (d > 1e-5 * $i) bad = 1 } }
         END { exit bad || NR == 0 }'
}
weights() { "$ref_cmp" --rtol 1e-4 --tol "h.*.attn.c_attn.bias=1e-3" "$1" "$2"; }   # c_attn.bias: see run.sh

# the one-process runs: checkpoints to evaluate, and the figures to meet
rm -rf ckg ckl ckm ckr ckr1
./gpt train --data text.txt --checkpoint ckg --log gpt.jsonl 2>/dev/null || fail "train gpt"
./llama train --data text.txt --checkpoint ckl --log llama.jsonl 2>/dev/null || fail "train llama"
./llama_moe train --data text.txt --checkpoint ckm --log llama_moe.jsonl 2>/dev/null || fail "train llama_moe"
jq -s -e '.[3].dropped_fraction > 0' gpt.jsonl >/dev/null || fail "gpt drops no token: capacity would go untested"

# eval on tensor groups = one process
for run in "2 gpt_t2 gpt ckg" "2 llama_t2 llama ckl" "4 gpt_d2t2 gpt_d2 ckg" "4 gpt_d2t2e2 gpt_d2 ckg" "2 gpt_x2 gpt ckg" \
           "4 gpt_d2x2 gpt_d2 ckg" "2 llama_moe_x2 llama_moe ckm"; do
  set -- $run
  ./$3 eval --checkpoint $4 --data text.txt --max-batches 5 > ev_$3.json || fail "eval $3"
  mpi $1 ./$2 eval --checkpoint $4 --data text.txt --max-batches 5 > ev_$2.json 2> ev_$2.err \
    || fail "$2 eval on $1: $(cat ev_$2.err)"
  "$json_cmp" ev_$3.json ev_$2.json || fail "$2 eval on $1 processes: $(cat ev_$2.json) against $(cat ev_$3.json)"
done

# grad: tensor 2 = one process; data 2 x tensor 2 = the mean of batches 0 and 1 in one process
./gpt grad --checkpoint ckg --data text.txt --out g_gpt.st && ./llama grad --checkpoint ckl --data text.txt --out g_llama.st \
  && ./llama_moe grad --checkpoint ckm --data text.txt --out g_llama_moe.st || fail "grad"
for run in "gpt_t2 gpt ckg" "llama_t2 llama ckl" "gpt_x2 gpt ckg" "llama_moe_x2 llama_moe ckm"; do
  set -- $run
  mpi 2 ./$1 grad --checkpoint $3 --data text.txt --out g_$1.st 2> g_$1.err || fail "$1 grad: $(cat g_$1.err)"
  "$ref_cmp" g_$2.st g_$1.st > g_$1.cmp || fail "$1 grad on 2 processes: $(tail -3 g_$1.cmp)"
done
tail -c +$((4 * 32 + 1)) text.txt > text1.txt      # batch 1's windows first
./gpt_d2 grad --checkpoint ckg --data text.txt --out gd0.st && ./gpt_d2 grad --checkpoint ckg --data text1.txt --out gd1.st \
  || fail "grad gpt_d2"
python3 - "$ref" <<'PY' || fail "averaging the gradients"
import sys
sys.path.insert(0, sys.argv[1])
import st_io
g0, _ = st_io.read_safetensors("gd0.st")
g1, _ = st_io.read_safetensors("gd1.st")
st_io.write_safetensors("gdmean.st", [(k, g0[k][0], [(x + y) / 2 for x, y in zip(g0[k][1], g1[k][1])]) for k in g0])
PY
for m in gpt_d2t2 gpt_d2t2e2 $rc gpt_d2x2; do
  mpi 4 ./$m grad --checkpoint ckg --data text.txt --out g_$m.st 2> g_$m.err || fail "$m grad on 4: $(cat g_$m.err)"
  "$ref_cmp" gdmean.st g_$m.st > g_$m.cmp || fail "$m grad on 4 processes: $(tail -3 g_$m.cmp)"
done

# refusals
./gpt_t2 eval --checkpoint ckg --data text.txt 2> one.err && fail "a tensor-sliced executable ran in one process"
grep -q "model gpt_t2 is laid out for tensor slicing (parallel.tensor = 2): each process holds a slice" one.err \
  || fail "gpt_t2 in one process: $(cat one.err)"
./gpt_x2 eval --checkpoint ckg --data text.txt 2> x1.err && fail "an expert-sliced executable ran in one process"
grep -q "model gpt_x2 is laid out for expert slicing (parallel.expert_slicing = 2): each process holds a slice of the experts" \
  x1.err || fail "gpt_x2 in one process: $(cat x1.err)"
./gpt_x2 info --json | jq -e '.expert_slicing == 2 and .tensor_parallel == 1' >/dev/null || fail "info of gpt_x2"
mpi 2 ./gpt_t4 train --steps 1 2> t4.err && fail "tensor groups of 4 ran on 2 processes"
grep -q "model gpt_t4 splits its layers over tensor groups of 4 processes (parallel.tensor), which do not divide the 2 started" \
  t4.err || fail "gpt_t4 on 2: $(cat t4.err)"
[ "$(grep -c "do not divide" t4.err)" = 1 ] || fail "the refusal is not printed once"
[ "$mode" = quick ] && { echo "ok (quick): tensor and expert slicing match one process in eval and grad"; exit 0; }

# train: tensor 2 on 2 processes = one process
for run in "gpt_t2 gpt ckg" "llama_t2 llama ckl" "gpt_x2 gpt ckg" "llama_moe_x2 llama_moe ckm"; do
  set -- $run
  rm -rf ck_$1
  mpi 2 ./$1 train --data text.txt --checkpoint ck_$1 --log $1.jsonl 2> $1.err || fail "train $1: $(cat $1.err)"
  grep -q "2 processes (1 data-parallel x tensor groups of 2)" $1.err || fail "the run header: $(head -1 $1.err)"
  same_losses $2.jsonl $1.jsonl || fail "$1: losses or norms differ: $(paste $2.jsonl $1.jsonl | head -3)"
  weights $3/step-00000004.safetensors ck_$1/step-00000004.safetensors > $1.cmp || fail "$1: weights: $(tail -3 $1.cmp)"
done
# data 2 x tensor 2 (and with expert groups of 2) on 4 processes = the data-parallel twin on 2
rm -rf ckd2
mpi 2 ./gpt_d2 train --data text.txt --checkpoint ckd2 --log gpt_d2.jsonl 2>/dev/null || fail "train gpt_d2 on 2"
for m in gpt_d2t2 gpt_d2t2e2 gpt_d2x2; do
  rm -rf ck_$m
  mpi 4 ./$m train --data text.txt --checkpoint ck_$m --log $m.jsonl 2> $m.err || fail "train $m on 4: $(cat $m.err)"
  same_losses gpt_d2.jsonl $m.jsonl || fail "$m: losses or norms differ: $(paste gpt_d2.jsonl $m.jsonl | head -3)"
  weights ckd2/step-00000004.safetensors ck_$m/step-00000004.safetensors > $m.cmp || fail "$m: weights: $(tail -3 $m.cmp)"
done

# checkpoints in either direction: tensor groups resume one process's step 2, one process
# resumes theirs, both to the uninterrupted losses of steps 3 and 4 (model `gpt` in either
# layout: a checkpoint names its model)
for t in 1 2; do
  sed "s/^model gpt_t2 : gpt { parallel { tensor = 2 } }/model gpt_t2 : gpt { parallel { tensor = $t } }/" "$here/tensor.moe" > r$t.moe
  "$moec" build r$t.moe --model gpt_t2 -o r$t -O1 2>/dev/null || fail "moec build gpt_t2 with tensor = $t"
done
./r1 train --data text.txt --checkpoint ckr --steps 2 --steps-total 4 2>/dev/null || fail "one process, 2 steps"
mpi 2 ./r2 train --data text.txt --checkpoint ckr --log r_t2.jsonl --resume 2> r_t2.err || fail "tensor 2 resumes: $(cat r_t2.err)"
mpi 2 ./r2 train --data text.txt --checkpoint ckr1 --steps 2 --steps-total 4 2>/dev/null || fail "tensor 2, 2 steps"
./r1 train --data text.txt --checkpoint ckr1 --log r_1.jsonl --resume 2> r_1.err || fail "one process resumes: $(cat r_1.err)"
for f in r_t2 r_1; do
  same_losses <(jq -c 'select(.step > 2)' gpt.jsonl) $f.jsonl || fail "resumed ($f): $(paste <(jq -r .loss gpt.jsonl) <(jq -r .loss $f.jsonl))"
done

echo "ok: tensor and expert slicing (2, and data 2 x 2, with expert groups) match one process in eval, grad and train"
