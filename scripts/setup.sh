#!/usr/bin/env bash
# setup.sh - installs what a fresh Debian 12 machine lacks to build and test moec.
# Does nothing when everything is present. Needs root (apt-get) only when installing.
set -euo pipefail

# command or file that proves a package is there -> Debian package
need=()
check() { if ! eval "$1" >/dev/null 2>&1; then need+=("$2"); fi; }
check "command -v cmake"                       cmake
check "command -v cc"                          gcc
check "command -v g++"                         g++
check "command -v make"                        make
check "command -v flex"                        flex
check "command -v bison"                       bison
check "command -v pkg-config"                  pkg-config
check "dpkg-query -W -f='\${Status}' libopenblas-dev | grep -q 'ok installed'" libopenblas-dev
check "ls /usr/lib/*/openblas-openmp/libopenblas.so" libopenblas-openmp-dev
check "pkg-config --exists jansson"            libjansson-dev
check "command -v clang"                       clang
check "command -v clang++"                     clang
check "command -v jq"                          jq
check "command -v mpirun"                      openmpi-bin                # multi-process runs
check "pkg-config --exists ompi-c"             libopenmpi-dev
check "command -v python3"                     python3
check "/usr/bin/python3 -c 'import matplotlib'" python3-matplotlib   # scripts/plot.py
check "ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" libclang-rt-dev
check "ls /usr/lib/llvm-*/lib/libomp.so* || ls /usr/lib/x86_64-linux-gnu/libomp.so*" libomp-dev

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "setup: installing ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
