#!/usr/bin/env bash
# test.sh - the test command: set-up, build, and the whole ctest suite.
#   bash scripts/test.sh            build in build/ and run every test
#   MOE_SANITIZE=address,undefined  also build build-san/ with ASan+UBSan and run the suite there
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc)

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOE_WERROR=ON -DMOE_FUZZ=OFF >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

if [ -n "${MOE_SANITIZE:-}" ]; then
  # the sanitizer build also hosts the fuzzer (clang + libFuzzer), run for about a minute
  cmake -S . -B build-san -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
        -DMOE_SANITIZE="${MOE_SANITIZE//,/;}" -DMOE_FUZZ=ON >/dev/null
  cmake --build build-san -j"$jobs"
  # not again under the sanitizers: the reference goldens, nvcc, the emulator's numerics runs
  # (cuda_emu.train, .ops, .tune, .half: the emulator runs under them in cuda_emu.driver), the resumes of a
  # distillation run (e2e.resume resumes under them) and the processor check (built executables
  # starting, three times)
  ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-san --output-on-failure -j"$jobs" \
    -E '^ref_|^cuda[.]nvcc_compile$|^cuda_emu[.](train|ops|tune|half)$|^e2e[.]distill_resume$|^compiler[.]arch$'
fi
