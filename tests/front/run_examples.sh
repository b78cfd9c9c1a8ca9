#!/bin/sh
# run_examples.sh MOEC ROOT GOLDEN WORKDIR - every example checks, and its syntax tree
# and stats match the goldens.
#
# From ROOT (so files read examples/NAME.moe): `moec check` must print nothing and
# exit 0; `moec check --dump-ast` must equal GOLDEN/NAME.ast; for every model the file
# defines, `moec stats --json` must equal GOLDEN/NAME.MODEL.json and the table
# GOLDEN/NAME.MODEL.txt. UPDATE_GOLDEN=1 rewrites the goldens instead.
set -u
moec=$1 root=$2 golden=$3 work=$4
case $moec in /*) ;; *) moec=$(pwd)/$moec ;; esac
update=${UPDATE_GOLDEN:-0}
mkdir -p "$work" "$golden" || exit 1
fails=0 count=0

# same OUTPUT GOLDEN WHAT
same() {
    count=$((count + 1))
    [ "$update" = 1 ] && cp "$1" "$2"
    if [ ! -f "$2" ]; then
        echo "FAIL $3: no golden $2 (run with UPDATE_GOLDEN=1)"; fails=$((fails + 1))
    elif ! cmp -s "$1" "$2"; then
        echo "FAIL $3: output differs from $2"
        diff -u "$2" "$1" | head -40
        fails=$((fails + 1))
    fi
}

cd "$root" || exit 1
for f in examples/*.moe; do
    name=$(basename "$f" .moe)
    count=$((count + 1))
    if ! "$moec" check "$f" >"$work/$name.out" 2>&1 || [ -s "$work/$name.out" ]; then
        echo "FAIL $f: moec check is not silent and successful:"; cat "$work/$name.out"
        fails=$((fails + 1))
        continue
    fi
    "$moec" check --dump-ast "$f" >"$work/$name.ast" 2>&1
    same "$work/$name.ast" "$golden/$name.ast" "$f --dump-ast"
    for model in $(sed -n 's/^[[:space:]]*model[[:space:]]\{1,\}\([A-Za-z_][A-Za-z0-9_]*\).*/\1/p' "$f"); do
        "$moec" stats "$f" --model "$model" --json >"$work/$name.$model.json" 2>&1
        same "$work/$name.$model.json" "$golden/$name.$model.json" "$f stats --json $model"
        "$moec" stats "$f" --model "$model" >"$work/$name.$model.txt" 2>&1
        same "$work/$name.$model.txt" "$golden/$name.$model.txt" "$f stats $model"
    done
done
echo "$count example checks, $fails failures"
[ "$fails" = 0 ]
