#!/usr/bin/env bash
# run_bad.sh MOEC - `moec build` and `moec tune` on bad command lines and inputs: each case's
# stderr and exit status against bad/build.expected. UPDATE_GOLDEN=1 rewrites it.
set -uo pipefail
moec=$1
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
small=tests/e2e/small.moe
export XDG_CACHE_HOME=$out/cache       # never the user's tuning database
{
  while IFS= read -r args; do
    [ -z "$args" ] && continue
    echo "== moec ${args//$out/OUT}"
    # shellcheck disable=SC2086
    $moec $args 2>&1 >/dev/null | sed "s#$out#OUT#g"
    echo "exit ${PIPESTATUS[0]}"
  done <<CASES
build $small
build $small -o $out/x --target gpu
build $small --target all --emit c
build $small -o $out/x --gemm generated
build $small -o $out/x --tune-db $out/missing.json
build $small -o $out/x --target cuda --gemm tiled
build $small --emit bogus
build $small --emit cuda
build $small -o
build $small -o $out/x -O7
build $small -o $out/x --frobnicate
build $small $small -o $out/x
build nonexistent.moe -o $out/x
build $small --model nope -o $out/x
build tests/front/bad/unknown_key_moe.moe -o $out/x
build tests/compiler/bad/unimplemented.moe --model unimplemented -o $out/x
build tests/compiler/bad/unimplemented.moe --model warned --emit ir
build tests/compiler/bad/unimplemented.moe --model sliced --target cuda -o $out/x
build tests/compiler/bad/unimplemented.moe --model xsliced --target cuda -o $out/x
build tests/compiler/bad/unimplemented.moe --model xsliced_ep -o $out/x
build tests/compiler/bad/unimplemented.moe --model xsliced_t4 -o $out/x
build tests/compiler/bad/unimplemented.moe --model xsliced_dense -o $out/x
build tests/compiler/bad/unimplemented.moe --model ineffective --emit ir
tune $small --budget 0
tune $small --budget soon
tune $small --target gpu
tune $small --device cuda-emu
tune $small --target cuda --device gpu
tune $small --db $out
tune nonexistent.moe --db $out/db.json
CASES
} > "$out/got"
[ -e "$out/x" ] && { echo "FAIL: an executable was written on bad input"; exit 1; }
if [ -n "${UPDATE_GOLDEN:-}" ]; then cp "$out/got" "$here/bad/build.expected"; echo updated; exit 0; fi
diff -u "$here/bad/build.expected" "$out/got" && echo ok
