#!/usr/bin/env bash
# run_arch.sh MOEC WORKDIR - moec build --arch: the executable records the processor it was
# compiled for and refuses to start on one without the extensions that allowed, with a message
# instead of SIGILL. A baseline build (x86-64) records none and runs anywhere; a native build
# records this processor's; a build for a processor with an extension this one lacks (AMD's
# sse4a on an Intel machine, AVX-512 on an AMD one without it) stops at once with exit 1.
# Also what an executable sets up at start: the OpenBLAS kernels it runs are never below what the
# processor supports, idle OpenMP threads spin only briefly, and the thread count's sources.
set -uo pipefail
moec=$1; work=$2
here=$(cd "$(dirname "$0")" && pwd)
model=$here/../e2e/small.moe
fail() { echo "FAIL: $*"; exit 1; }
mkdir -p "$work" && cd "$work" || exit 1
[ "$(uname -m)" = x86_64 ] || { echo "SKIP: the check is for x86-64 processors"; exit 77; }

"$moec" build "$model" --arch x86-64 -o base || fail "build --arch x86-64"
./base info --json | jq -e '.arch == "x86-64" and .isa == []' >/dev/null || fail "baseline: $(./base info --json)"
./base train --steps 2 2>/dev/null || fail "the baseline executable does not train"

"$moec" build "$model" -o native || fail "build (native)"
./native info --json | jq -e '.arch == "native" and (.isa | index("sse4.2"))' >/dev/null || fail "native: $(./native info --json)"
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
for isa in $(./native info --json | jq -r '.isa[]'); do      # what the compiler saw is what /proc/cpuinfo says
  f=$(echo "$isa" | sed 's/^sse4\.\([12]\)$/sse4_\1/; s/^bmi$/bmi1/; s/^avx512fp16$/avx512_fp16/; s/^avx512bf16$/avx512_bf16/;
                          s/^avx512vnni$/avx512_vnni/; s/^sse3$/pni/')
  case "$flags" in *" $f "*) ;; *) fail "native records $isa, which /proc/cpuinfo does not list" ;; esac
done

foreign=""
case "$flags" in *" sse4a "*) ;; *) foreign=znver3 ;; esac
[ -z "$foreign" ] && case "$flags" in *" avx512f "*) ;; *) foreign=skylake-avx512 ;; esac
if [ -n "$foreign" ]; then
  "$moec" build "$model" --arch "$foreign" -o foreign || fail "build --arch $foreign"
  ./foreign train --steps 1 > out.txt 2> err.txt; rc=$?
  [ $rc = 1 ] || fail "an executable for $foreign exited $rc here (1 expected): $(cat err.txt)"
  grep -q "^./foreign: this executable was built for -march=$foreign, and this processor lacks .*: it cannot run here" \
    err.txt || fail "the message: $(cat err.txt)"
  [ ! -s out.txt ] || fail "it printed on stdout"
else
  echo "note: this processor has every extension this test knows to be missing elsewhere: the refusal is not run"
fi

# OpenBLAS's kernels: never below what this processor supports (the executable restarts itself
# with OPENBLAS_CORETYPE when OpenBLAS's table does not know the model), and a user's
# OPENBLAS_CORETYPE always stands
class_of() { case "${1,,}" in haswell|zen) echo 1 ;; skylakex) echo 2 ;; cooperlake|sapphirerapids) echo 3 ;; *) echo 0 ;; esac; }
can=0
case "$flags" in *" avx2 "*) case "$flags" in *" fma "*) can=1 ;; esac ;; esac
case "$flags" in *" avx512f "*" avx512dq "*) case "$flags" in *" avx512bw "*" avx512vl "*) can=2 ;; esac ;; esac
case "$flags" in *" avx512_bf16 "*) can=3 ;; esac
clean="env -u OPENBLAS_CORETYPE -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT -u OMP_NUM_THREADS -u MOE_START_DONE
     -u MOE_START_BLAS_WAS -u MOE_START_WAIT -u OMPI_COMM_WORLD_LOCAL_SIZE -u MPI_LOCALNRANKS"
info=$($clean ./base info --json) || fail "info"
core=$(echo "$info" | jq -r .blas_core); by=$(echo "$info" | jq -r .blas_core_chosen_by)
[ "$(class_of "$core")" -ge $can ] || fail "OpenBLAS runs $core kernels, below class $can of this processor: $info"
case $by in
  OpenBLAS) echo "$info" | jq -e 'has("blas_core_was") | not' >/dev/null || fail "blas_core_was without a restart" ;;
  moec) was=$(echo "$info" | jq -r .blas_core_was)
        [ "$(class_of "$was")" -lt $can ] || fail "restarted although OpenBLAS had picked $was: $info"
        echo "note: OpenBLAS picked $was for this processor; the executable runs $core" ;;
  *) fail "chosen by '$by' without OPENBLAS_CORETYPE: $info" ;;
esac
$clean OPENBLAS_CORETYPE=Prescott ./base info --json | jq -e '.blas_core == "Prescott" and .blas_core_chosen_by ==
  "OPENBLAS_CORETYPE"' >/dev/null || fail "the user's OPENBLAS_CORETYPE: $(OPENBLAS_CORETYPE=Prescott ./base info --json)"
$clean ./base train --steps 1 2>/dev/null >/dev/null || fail "a restarted executable does not train"

# idle OpenMP threads spin a bounded while, then sleep, unless the user says otherwise
echo "$info" | jq -e '.omp_wait == "spin 10000 rounds, then sleep (moec)"' >/dev/null || fail "wait policy: $info"
$clean OMP_WAIT_POLICY=active ./base info --json | jq -e '.omp_wait == "active"' >/dev/null || fail "the user's OMP_WAIT_POLICY"
$clean GOMP_SPINCOUNT=1000 ./base info --json | jq -e '.omp_wait == "GOMP_SPINCOUNT"' >/dev/null || fail "GOMP_SPINCOUNT"

# threads: --threads, OMP_NUM_THREADS, the processors shared by the MPI processes of a host, all of
# them, or those another program is not keeping busy (other tests may be running beside this one,
# so a quiet start may see some busy; with a busy loop of ours, at least one is)
procs=$(nproc)
echo "$info" | jq -e "(.threads == $procs and .threads_from == \"every processor\") or
  (.threads < $procs and (.threads_from | startswith(\"the processors not busy at start\")))" >/dev/null \
  || fail "threads: $info"
if [ "$procs" -gt 1 ] && grep -q "^procs_running" /proc/stat && [ "$(grep -c '^cpu[0-9]' /proc/stat)" = "$procs" ]; then
  sh -c 'while :; do :; done' & spin=$!
  sleep 0.2
  busy=$($clean ./base info --json)
  kill $spin; wait $spin 2>/dev/null
  echo "$busy" | jq -e ".threads < $procs and (.threads_from | test(\"^the processors not busy at start: [0-9]+ of $procs busy$\"))" \
    >/dev/null || fail "threads beside a busy loop: $busy"
fi
$clean ./base info --json --threads 3 | jq -e '.threads == 3 and .threads_from == "--threads"' >/dev/null || fail "--threads 3"
$clean OMP_NUM_THREADS=3 ./base info --json | jq -e '.threads == 3 and .threads_from == "OMP_NUM_THREADS"' >/dev/null \
  || fail "OMP_NUM_THREADS"
share=$((procs / 2)); [ $share -ge 1 ] || share=1
$clean OMPI_COMM_WORLD_LOCAL_SIZE=2 ./base info --json | jq -e ".threads == $share" >/dev/null || fail "2 ranks on this host"
$clean ./base train --steps 1 --threads 0 > /dev/null 2> threads.err; rc=$?
[ $rc = 2 ] && [ "$(cat threads.err)" = "./base train: --threads takes a number of threads from 1 to 4096, not '0'" ] \
  || fail "--threads 0: exit $rc, $(cat threads.err)"
$clean ./base train --steps 1 --threads 1 > /dev/null 2>&1 || fail "train --threads 1"

"$moec" build "$model" --arch 'x86-64;rm' -o bad 2> bad.err; rc=$?
[ $rc = 2 ] && grep -q "is not a processor name" bad.err || fail "a bad --arch: exit $rc, $(cat bad.err)"
echo "ok: --arch"
