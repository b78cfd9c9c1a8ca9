#!/bin/sh
# run_bad.sh MOEC SRCDIR WORKDIR - bad inputs must fail with exactly the golden stderr.
#
# Every bad/NAME.moe is checked as `moec check NAME.moe [ARGS]` from inside bad/
# (ARGS from bad/NAME.args if present). bad/NAME.expected holds the exact stderr
# followed by the line `exit status 1`; stdout must be empty. Inputs that are
# binary or huge are generated here into WORKDIR/gen (see gen_inputs below), with
# their goldens in bad/gen/NAME.expected.
# UPDATE_GOLDEN=1 rewrites the .expected files from the current output instead.
set -u
moec=$1 src=$2 work=$3
case $moec in /*) ;; *) moec=$(pwd)/$moec ;; esac
update=${UPDATE_GOLDEN:-0}
mkdir -p "$work/out" "$work/gen" || exit 1
fails=0 count=0

# check_one DIR NAME EXPECTED: runs moec in DIR on NAME.moe, compares with EXPECTED.
check_one() {
    dir=$1 name=$2 expected=$3
    args=""
    [ -f "$dir/$name.args" ] && args=$(cat "$dir/$name.args")
    err="$work/out/$name.err" out="$work/out/$name.out"
    # shellcheck disable=SC2086
    (cd "$dir" && "$moec" check "$name.moe" $args) >"$out" 2>"$err"
    rc=$?
    echo "exit status $rc" >>"$err"
    count=$((count + 1))
    if [ "$update" = 1 ]; then
        cp "$err" "$expected"
    fi
    if [ ! -f "$expected" ]; then
        echo "FAIL $name: no golden $expected (run with UPDATE_GOLDEN=1)"; fails=$((fails + 1)); return
    fi
    if [ "$rc" != 1 ]; then
        echo "FAIL $name: exit status $rc, expected 1"; fails=$((fails + 1))
    elif [ -s "$out" ]; then
        echo "FAIL $name: wrote to stdout"; fails=$((fails + 1))
    elif ! cmp -s "$err" "$expected"; then
        echo "FAIL $name: stderr differs from $expected"
        diff -u "$expected" "$err" | head -40
        fails=$((fails + 1))
    fi
}

# Inputs that would be awkward to commit: NUL and invalid bytes, huge and deep files.
gen_inputs() {
    g=$work/gen
    printf 'model m {\n    vocab = 256\000\n    # a comment with a NUL \000 in it\n}\n' >"$g/nul_byte.moe"
    printf 'model m {  # caf\303\251 is fine here, \377 is not\n    vocab = 256 \376\n    hidden = "\342\202"\n}\n' \
        >"$g/non_utf8.moe"
    printf 'model m {\n    vocab = \300\200 context = \355\240\200\n    heads = \364\220\200\200\n}\n' \
        >"$g/overlong_utf8.moe"
    printf 'model m {\001 vocab = 256 \033[31m\n}\r\nimport "\033[31mred.moe"\n' >"$g/control_chars.moe"
    {
        printf 'model '
        head -c 1000000 /dev/zero | tr '\000' 'a'
        printf ' {\n    '
        head -c 1048576 /dev/zero | tr '\000' 'k'
        printf ' = 1\n}\n'
    } >"$g/huge_identifier.moe"
    awk 'BEGIN { printf "model m "; for (i = 0; i < 100000; i++) printf "{ a "; print "" }' \
        >"$g/deep_nesting.moe"
    awk 'BEGIN { print "model m {"; for (i = 1; i <= 150; i++) print "    $ = " i; print "}" }' \
        >"$g/many_errors.moe"
    awk 'BEGIN { printf "model m { vocab = 256 context = 128 layers = 4 hidden = 128 heads = 4";
                 for (i = 0; i < 3000; i++) printf " "; printf "dropout = 2";
                 for (i = 0; i < 3000; i++) printf " "; print "}" }' >"$g/long_line.moe"
    i=0
    while [ $i -lt 256 ]; do
        # shellcheck disable=SC2059
        printf "\\$(printf %03o $i)"
        i=$((i + 1))
    done >"$g/all_bytes.moe"
    printf 'model m { moe { experts = 4 } vocab = 1 context = 1 layers = 2 hidden = 2 heads = 1 ' >"$g/unterminated_at_eof.moe"
    printf '"no newline at the end' >>"$g/unterminated_at_eof.moe"
}

for f in "$src"/bad/*.moe; do
    name=$(basename "$f" .moe)
    check_one "$src/bad" "$name" "$src/bad/$name.expected"
done
gen_inputs
for f in "$work"/gen/*.moe; do
    name=$(basename "$f" .moe)
    check_one "$work/gen" "$name" "$src/bad/gen/$name.expected"
done

echo "$count bad inputs, $fails failures"
[ "$fails" = 0 ]
