#!/usr/bin/env bash
# run.sh MOEC WORKDIR ST_COMPARE JSON_COMPARE - runs under mpirun (Open MPI, oversubscribed on this machine's
# cores) against one process over the same sequences. Data-parallel:
#   train: 2 ranks x batch 4 give the losses, gradient norms and weights of 1 process x batch 8,
#          the same losses with the gradient sums made after the backward (--no-overlap),
#          and a 2-rank run resumed from its own checkpoint repeats the uninterrupted one;
#   eval:  1, 2 and 3 ranks (7 batches: uneven shares) print the one-process figures;
#   grad:  2 ranks write the mean of the one-process gradients of batches 0 and 1;
#   distillation: a student on 2 ranks x batch 4 logs the losses and kd_loss of 1 x 8;
#   expert-parallel (the experts spread over expert groups of 2 and 4 ranks, and a pyramid of
#          degrees 2 and 4): eval and grad equal one process, train equals the data-parallel
#          twin, the hierarchical all-to-all gives the flat one's losses with the formulas'
#          message counts, checkpoints hold every expert (one process evaluates them, other
#          layouts and one process resume them);
#   refusals: an expert-parallel layout in one process or on too few ranks, parallel.data = 3
#          on 2 processes, the cuda target's program, and a command that runs in one process
#          each stop with their message;
#   ranks of different executables or data stop at start; a rank killed mid-run ends the
#   job with mpirun's message.
# Skipped (77) without mpirun; not registered when moec was built without MPI.
set -uo pipefail
moec=$1; work=$2
here=$(cd "$(dirname "$0")" && pwd)
ref=$here/../reference; ref_cmp=$3; json_cmp=$4
fail() { echo "FAIL: $*"; exit 1; }
command -v mpirun >/dev/null || { echo "SKIP: no mpirun"; exit 77; }
mkdir -p "$work" && cd "$work" || exit 1
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader OMPI_MCA_rmaps_base_oversubscribe=1
# under AddressSanitizer: Open MPI's plugins leave allocations at exit, in modules already
# unloaded when LeakSanitizer reports (no suppression can name them); memory errors are
# still checked, and the one-process tests check our leaks
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
mpi() { local np=$1; shift; timeout 300 mpirun -np "$np" "$@"; }
# (the C at -O1, two at a time: building takes much of this test's time otherwise; every
# executable compared is built alike)
"$moec" build "$here/dp.moe" --model two --target cuda -o two_cuda -O1 --no-kernel-check 2> build_cuda.err & cuda_build=$!
echo two one moe ep ep4 ep4h pyr pyr_dp three kdtwo kdone | tr ' ' '\n' |
  xargs -P 2 -I{} "$moec" build "$here/dp.moe" --model {} -o {} -O1 2> build.err || fail "moec build: $(cat build.err)"
wait $cuda_build || fail "moec build --target cuda: $(cat build_cuda.err)"
./two info --json | jq -e '.params > 0' >/dev/null || fail "info"
mpi 2 ./two info > /dev/null 2> info.err && fail "info ran on 2 processes"
grep -q "but info runs in one process" info.err || fail "the one-process refusal: $(cat info.err)"

# a text that no edit elsewhere changes (the figures compared below depend on it): numbers
# with their squares, 100 KB
seq 1 20000 | awk '{ printf "%d squared is %d; ", $1, $1 * $1 }' | head -c 100000 > text.txt
# train: 2 x 4 against 1 x 8
rm -rf ck1 ck2 ck3 ckm
./one train --data text.txt --checkpoint ck1 --log one.jsonl 2>/dev/null || fail "train, 1 process"
mpi 2 ./two train --data text.txt --checkpoint ck2 --log two.jsonl 2> two.err || fail "train, 2 processes: $(cat two.err)"
grep -q "2 processes (data-parallel)" two.err || fail "the run header does not say 2 processes"
[ "$(jq -s 'length' two.jsonl)" = 6 ] || fail "the 2-process log does not have 6 lines (one writer)"
jq -s -e '.[0].run.processes == 2 and .[5].tokens == 6 * 8 * 32' two.jsonl >/dev/null || fail "processes or tokens in the log"
paste <(jq -r '[.loss, .grad_norm] | @tsv' one.jsonl) <(jq -r '[.loss, .grad_norm] | @tsv' two.jsonl) |
  awk '{ for (i = 1; i <= 2; i++) { d = $i - $(i + 2); if (d < 0) d = -d; if (d > 1e-6 * $i) bad = 1 } }
       END { exit bad }' || fail "losses or gradient norms differ: $(paste one.jsonl two.jsonl | head -3)"
# c_attn's key bias gets no gradient (softmax ignores a shift of every score of a row): it
# moves by AdamW's normalised rounding noise, which differs with the summation order, and
# that noise reaches the other attention weights at the rounding level, which AdamW's
# normalisation raises: 2e-6 relative with this text, 3e-5 with another. A wrong reduction over
# the ranks is off by orders more than 1e-4.
"$ref_cmp" --rtol 1e-4 --tol "h.*.attn.c_attn.bias=1e-3" ck1/step-00000006.safetensors ck2/step-00000006.safetensors > cmp.txt \
  || fail "weights after 6 steps: $(tail -3 cmp.txt)"
# the gradient sums started while the backward runs (the default) = made after it (--no-overlap)
mpi 2 ./two train --data text.txt --log nov.jsonl --no-overlap 2>/dev/null || fail "train --no-overlap"
cmp -s <(jq -r .loss two.jsonl) <(jq -r .loss nov.jsonl) || fail "--no-overlap: $(paste two.jsonl nov.jsonl | head -2)"
# resumed on 2 processes from step 3 (written by rank 0) = uninterrupted
mpi 2 ./two train --data text.txt --checkpoint ck3 --log three.jsonl --steps 3 --steps-total 6 2>/dev/null || fail "3 steps"
mpi 2 ./two train --data text.txt --checkpoint ck3 --log three.jsonl --resume 2>/dev/null || fail "resume"
cmp -s <(jq -r .loss two.jsonl) <(jq -r .loss three.jsonl) || fail "the resumed run differs: $(paste <(jq -r .loss two.jsonl) <(jq -r .loss three.jsonl))"

# eval: the same figures on 1, 2 and 3 processes
./moe train --data text.txt --checkpoint ckm 2>/dev/null || fail "train moe"
./moe eval --checkpoint ckm --data text.txt --max-batches 7 > eval1.json || fail "eval"
for np in 2 3; do
  mpi $np ./moe eval --checkpoint ckm --data text.txt --max-batches 7 > eval$np.json 2> eval$np.err || fail "eval on $np: $(cat eval$np.err)"
  [ "$(wc -l < eval$np.json)" = 1 ] || fail "eval on $np processes printed $(wc -l < eval$np.json) lines"
  "$json_cmp" eval1.json eval$np.json || fail "eval on $np processes: $(cat eval$np.json) against $(cat eval1.json)"
done
jq -e '.dropped_fraction > 0' eval1.json >/dev/null || fail "no token dropped: the test would not see capacity per rank"

# grad: 2 processes = the mean of batches 0 and 1 in one process
tail -c +$((4 * 32 + 1)) text.txt > text1.txt      # batch 1's windows first
./moe grad --checkpoint ckm --data text.txt --out g0.st && ./moe grad --checkpoint ckm --data text1.txt --out g1.st \
  || fail "grad"
mpi 2 ./moe grad --checkpoint ckm --data text.txt --out g2.st 2> g2.err || fail "grad on 2: $(cat g2.err)"
python3 - "$ref" <<'PY' || fail "averaging the gradients"
import sys
sys.path.insert(0, sys.argv[1])
import st_io
g0, _ = st_io.read_safetensors("g0.st")
g1, _ = st_io.read_safetensors("g1.st")
st_io.write_safetensors("gmean.st", [(k, g0[k][0], [(x + y) / 2 for x, y in zip(g0[k][1], g1[k][1])]) for k in g0])
PY
"$ref_cmp" gmean.st g2.st > gcmp.txt || fail "grad on 2 processes: $(tail -3 gcmp.txt)"

# expert parallelism: eval and grad as one process, expert groups of 2 (on 2 and 4 ranks) and of 4
for run in "2 ep" "4 ep" "4 ep4"; do
  set -- $run
  mpi $1 ./$2 eval --checkpoint ckm --data text.txt --max-batches 7 > ev$1$2.json 2> ev$1$2.err \
    || fail "$2 eval on $1: $(cat ev$1$2.err)"
  "$json_cmp" eval1.json ev$1$2.json || fail "$2 eval on $1 processes: $(cat ev$1$2.json) against $(cat eval1.json)"
done
mpi 2 ./ep grad --checkpoint ckm --data text.txt --out gep.st 2> gep.err || fail "ep grad on 2: $(cat gep.err)"
"$ref_cmp" gmean.st gep.st > gepcmp.txt || fail "expert-parallel grad on 2 processes: $(tail -3 gepcmp.txt)"
for b in 2 3; do
  tail -c +$((b * 4 * 32 + 1)) text.txt > text$b.txt
  ./moe grad --checkpoint ckm --data text$b.txt --out gb$b.st || fail "grad of batch $b"
done
python3 - "$ref" <<'PY' || fail "averaging 4 gradients"
import sys
sys.path.insert(0, sys.argv[1])
import st_io
g = [st_io.read_safetensors(f)[0] for f in ("g0.st", "g1.st", "gb2.st", "gb3.st")]
st_io.write_safetensors("gmean4.st", [(k, g[0][k][0], [sum(v) / 4 for v in zip(*(x[k][1] for x in g))]) for k in g[0]])
PY
mpi 4 ./ep4 grad --checkpoint ckm --data text.txt --out gep4.st 2> gep4.err || fail "ep4 grad on 4: $(cat gep4.err)"
"$ref_cmp" gmean4.st gep4.st > gep4cmp.txt || fail "grad with one expert per rank on 4 processes: $(tail -3 gep4cmp.txt)"

# expert-parallel training = its data-parallel twin: losses, norms and the weights after 3 steps
for run in "2 moe ep" "4 moe ep" "4 pyr_dp pyr"; do
  set -- $run
  rm -rf ck$1$2 ck$1$3
  mpi $1 ./$2 train --data text.txt --checkpoint ck$1$2 --log $1$2.jsonl 2> /dev/null || fail "train $2 on $1"
  mpi $1 ./$3 train --data text.txt --checkpoint ck$1$3 --log $1$3.jsonl 2> $1$3.err || fail "train $3 on $1: $(cat $1$3.err)"
  paste <(jq -r '[.loss, .grad_norm] | @tsv' $1$2.jsonl) <(jq -r '[.loss, .grad_norm] | @tsv' $1$3.jsonl) |
    awk '{ for (i = 1; i <= 2; i++) { d = $i - $(i + 2); if (d < 0) d = -d; if (d > 1e-6 * $i) bad = 1 } }
         END { exit bad }' || fail "$3 on $1: losses or gradient norms differ: $(paste $1$2.jsonl $1$3.jsonl | head -3)"
  "$ref_cmp" --rtol 1e-4 --tol "h.*.attn.c_attn.bias=1e-3" ck$1$2/step-00000003.safetensors ck$1$3/step-00000003.safetensors \
    > $1$3.cmp || fail "$3 on $1: weights after 3 steps: $(tail -3 $1$3.cmp)"
done
# the hierarchical all-to-all (2 "nodes" of 2 ranks) moves the same rows: the same losses;
# rank 0 sends 3 messages in each of the step's 5 exchanges (counts, then rows there and back,
# forward and backward) either way at P = 4, G = 2 (flat P - 1; hierarchical 2 (G - 1) + P/G - 1)
mpi 4 ./ep4 train --data text.txt --log 4ep4.jsonl 2> /dev/null || fail "train ep4 on 4"
mpi 4 ./ep4h train --data text.txt --log 4ep4h.jsonl 2> 4ep4h.err || fail "train ep4h on 4: $(cat 4ep4h.err)"
cmp -s <(jq -r .loss 4ep4.jsonl) <(jq -r .loss 4ep4h.jsonl) || fail "hierarchical losses: $(paste 4ep4.jsonl 4ep4h.jsonl)"
jq -s -e 'all(.alltoall.messages == 15 and .alltoall.bytes > 0)' 4ep4.jsonl 4ep4h.jsonl > /dev/null \
  || fail "all-to-all messages: $(jq -c .alltoall 4ep4.jsonl 4ep4h.jsonl)"
jq -s -e '.[0].alltoall.bytes != .[3].alltoall.bytes' 4ep4.jsonl 4ep4h.jsonl > /dev/null \
  || fail "the hierarchical exchange moved the flat one's bytes: it did not run"
# a checkpoint of 4 ranks holds every expert: one process and 2 ranks evaluate it alike, and
# expert groups of 4 resume what expert groups of 2 wrote (the same model, another layout)
./moe eval --checkpoint ck4ep --data text.txt --max-batches 4 > ck1.json || fail "one process reads the 4-rank checkpoint"
mpi 2 ./ep eval --checkpoint ck4ep --data text.txt --max-batches 4 > ck2.json || fail "2 ranks read the 4-rank checkpoint"
"$json_cmp" ck1.json ck2.json || fail "the 4-rank checkpoint evaluates differently: $(cat ck1.json ck2.json)"
sed 's/^model ep : moe { parallel { expert = 2 } }/model ep : moe { parallel { expert = 4 } }/' "$here/dp.moe" > dp4.moe
"$moec" build dp4.moe --model ep -o ep_4 -O1 2>/dev/null || fail "moec build ep with expert = 4"
rm -rf ckx
mpi 4 ./ep train --data text.txt --checkpoint ckx --log x.jsonl --steps 2 --steps-total 3 2>/dev/null || fail "2 steps"
mpi 4 ./ep_4 train --data text.txt --checkpoint ckx --log x.jsonl --resume 2> x.err || fail "resume in another layout: $(cat x.err)"
cmp -s <(jq -r .loss 4ep.jsonl) <(jq -r .loss x.jsonl) || fail "resumed in another layout: $(paste <(jq -r .loss 4ep.jsonl) <(jq -r .loss x.jsonl))"

# distillation: the KD term of 2 x 4 is that of 1 x 8, and stops at stop_step on every rank
./kdone train --data text.txt --teacher ck1 --log kdone.jsonl 2>/dev/null || fail "distillation, 1 process"
mpi 2 ./kdtwo train --data text.txt --teacher ck1 --log kdtwo.jsonl 2> kdtwo.err \
  || fail "distillation, 2 processes: $(cat kdtwo.err)"
paste <(jq -r '[.loss, .kd_loss, .grad_norm] | @tsv' kdone.jsonl) <(jq -r '[.loss, .kd_loss, .grad_norm] | @tsv' kdtwo.jsonl) |
  awk '{ for (i = 1; i <= 3; i++) { d = $i - $(i + 3); if (d < 0) d = -d; if (d > 1e-6 * $i) bad = 1 } }
       END { exit bad }' || fail "distillation: losses, kd_loss or norms differ: $(paste kdone.jsonl kdtwo.jsonl | head -2)"
jq -s -e '.[3].kd_loss > 0 and .[3].teacher and .[4].kd_loss == 0 and (.[4].teacher | not)' kdtwo.jsonl >/dev/null \
  || fail "distillation does not stop after step 4 on 2 processes"

# a checkpoint of 4 expert-parallel ranks continues on 2 ranks and in one process to the
# uninterrupted run's losses (a dropless model without auxiliary losses: no figure depends on
# how the tokens are split over ranks, and no gate noise)
# (model `free` of the same name in each layout: a checkpoint names its model)
for v in "1 1 16" "2 2 8" "4 4 4"; do
  set -- $v
  cat > free$1.moe <<EOF
model free {
    vocab = 256  context = 32  layers = 2  hidden = 32  heads = 4
    moe { every = 1  experts = 4  top_k = 2  drop_tokens = false  aux_loss = 0  second_expert_sampling = false }
    parallel { expert = $2 }
    train { batch = $3  steps = 4  lr = 1e-3  warmup = 2 }
}
EOF
  "$moec" build free$1.moe -o free$1 -O1 2> /dev/null || fail "moec build free$1"
done
rm -rf ckf ckf2 ckf1
mpi 4 ./free4 train --data text.txt --checkpoint ckf --log f4.jsonl 2> /dev/null || fail "free4"
mpi 4 ./free4 train --data text.txt --checkpoint ckf2 --steps 2 --steps-total 4 2> /dev/null || fail "free4, 2 steps"
cp -r ckf2 ckf1
mpi 2 ./free2 train --data text.txt --checkpoint ckf2 --log f2.jsonl --resume 2> f2.err || fail "free2 resumes: $(cat f2.err)"
./free1 train --data text.txt --checkpoint ckf1 --log f1.jsonl --resume 2> f1.err || fail "free1 resumes: $(cat f1.err)"
for f in f2 f1; do
  paste <(jq -r 'select(.step > 2) | .loss' f4.jsonl) <(jq -r .loss $f.jsonl) |
    awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-6 * $1) bad = 1 } END { exit bad || NR != 2 }' \
    || fail "resumed from 4 ranks ($f): $(paste <(jq -r .loss f4.jsonl) <(jq -r .loss $f.jsonl))"
done

# refusals
./ep train --steps 1 2> ep.err && fail "an expert-parallel layout ran in one process"
grep -q "model ep is laid out for expert parallelism (parallel.expert = 2): each process holds a share" ep.err \
  || fail "ep in one process: $(cat ep.err)"
mpi 2 ./ep4 train --steps 1 2> ep4.err && fail "expert groups of 4 ran on 2 processes"
grep -q "spreads the experts of h.1.moe.experts.c_fc.weight over 4 processes (parallel.expert), which do not divide the 2 started" ep4.err \
  || fail "ep4 on 2: $(cat ep4.err)"
[ "$(grep -c "do not divide" ep4.err)" = 1 ] || fail "the refusal is not printed once"
# the cuda target's program makes no collective calls: several processes refuse it
mpi 2 ./two_cuda train --steps 1 --device cuda-emu 2> cuda.err && fail "the cuda target's program ran on 2 processes"
grep -q "several processes run the cpu target's program (--device cpu): the cuda target's collectives need NCCL" cuda.err \
  || fail "cuda on 2: $(cat cuda.err)"
mpi 2 ./three train --steps 1 2> three.err && fail "parallel.data = 3 ran on 2"
grep -q "asks for parallel.data = 3 processes, but 2 were started" three.err || fail "data: $(cat three.err)"
# ranks that run different executables, or read different data, stop at once (MPMD mpirun)
head -c 20000 text.txt > half.txt
timeout 120 mpirun -np 1 ./two train --steps 1 : -np 1 ./one train --steps 1 2> mixed.err && fail "two executables ran"
grep -q "do not run the same executable" mixed.err || fail "mixed executables: $(cat mixed.err)"
timeout 120 mpirun -np 1 ./two train --steps 1 --data text.txt : -np 1 ./two train --steps 1 --data half.txt \
  2> data.err && fail "two data files ran"
grep -q "do not read the same data" data.err || fail "mixed data: $(cat data.err)"

# a rank killed mid-run ends the job (mpirun stops the other), never a hang
rm -f kill.jsonl
timeout 120 mpirun -np 2 ./two train --data text.txt --steps 100000 --log kill.jsonl > kill.out 2>&1 &
job=$!
for _ in $(seq 100); do [ -s kill.jsonl ] && break; sleep 0.2; done
victim=$(pgrep -f "^[.]/two train --data text.txt --steps 100000" | tail -1)     # a rank, not mpirun
[ -n "$victim" ] || fail "no rank to kill"
kill -9 "$victim"
wait $job; rc=$?
[ $rc != 0 ] && [ $rc != 124 ] || fail "a job with a killed rank exited $rc (124: it hung): $(tail -5 kill.out)"
grep -q "exited on signal 9" kill.out || fail "mpirun did not name the killed rank: $(tail -5 kill.out)"

# a rank that stops answering (SIGSTOP) leaves the other waiting in a collective: past
# --comm-timeout the waiting rank ends the job with a message naming itself and the step
rm -f stall.jsonl
timeout 120 mpirun -np 2 ./two train --data text.txt --steps 100000 --log stall.jsonl --comm-timeout 3 > stall.out 2>&1 &
job=$!
for _ in $(seq 100); do [ -s stall.jsonl ] && break; sleep 0.2; done
victim=$(pgrep -f "^[.]/two train --data text.txt --steps 100000 --log stall" | tail -1)
[ -n "$victim" ] || fail "no rank to stop"
kill -STOP "$victim"
wait $job; rc=$?
[ $rc != 0 ] && [ $rc != 124 ] || fail "a job with a stopped rank exited $rc (124: it hung): $(tail -5 stall.out)"
grep -qE "^[.]/two train \(rank [01] of 2, step [0-9]+\): a collective \(a sum of [0-9]+ values\) has waited 3 s for the other ranks \(--comm-timeout\)" \
  stall.out || fail "no watchdog message: $(tail -5 stall.out)"
echo "ok: data- and expert-parallel train, eval and grad on 2 to 4 processes match one process"
