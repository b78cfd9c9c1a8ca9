#!/usr/bin/env bash
# run_cli.sh MOEC - moec's command line: exit status (0 success, 1 failure, 2 a bad command
# line), did-you-mean for misspelt options and commands, the model from standard input
# ("-"), paths that are not regular files (no hang), `build --emit FORM -o FILE` writing
# FILE, and the activations line of `moec stats`. Each case's output (stderr, and stdout
# where it says something) and exit status against bad/cli.expected; UPDATE_GOLDEN=1
# rewrites it.
set -uo pipefail
moec=$1
case $moec in /*) ;; *) moec=$(pwd)/$moec ;; esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
small=tests/e2e/small.moe
tiny=examples/tiny.moe

# case TITLE CMD...: runs CMD (a shell command line, moec as $moec), prints its stderr and
# stdout with the temporary directory as OUT, and its exit status
case_() {
    echo "== $1"
    shift
    (eval "$@") >"$out/stdout" 2>"$out/stderr"
    rc=$?
    sed "s#$out#OUT#g" "$out/stderr"
    [ -s "$out/stdout" ] && { echo "-- stdout:"; sed "s#$out#OUT#g" "$out/stdout" | head -5; }
    echo "exit $rc"
}

# same TITLE A B: whether files A and B are equal
same() { if cmp -s "$2" "$3"; then echo "== $1: same"; else echo "== $1: DIFFERENT"; fi; }

mkfifo "$out/fifo"
mkdir "$out/dir"
printf 'model m {\n    vocab = 256  context = 32  hiden = 32\n}\n' >"$out/bad.moe"
printf 'model deep {\n    vocab = 256  context = 32  layers = 129  hidden = 32  heads = 2\n}\n' >"$out/deep.moe"
printf 'model wide {\n    vocab = 256  context = 16777216  layers = 2  hidden = 1048576  heads = 1048576\n}\n' \
    >"$out/wide.moe"
{
    # usage errors: 2
    case_ "unknown command" '$moec chek $small'
    case_ "misspelt option of check" '$moec check $small --modle small'
    case_ "misspelt option of stats" '$moec stats $small --josn'
    case_ "misspelt option of build" '$moec build $small --ouput $out/x'
    case_ "option of another command" '$moec check $small --json'
    case_ "value given to a flag" '$moec stats $small --json=yes'
    case_ "missing value" '$moec check $small --model'
    case_ "no file" '$moec stats'
    case_ "two files" '$moec check $small $tiny'
    case_ "bad -O" '$moec build $small -O9 --emit ir'
    case_ "--model=NAME and -m NAME" '$moec check $small --model=small && $moec check -m small $small'
    # failures: 1
    case_ "errors in the model" '$moec check $out/bad.moe'
    case_ "a directory" '$moec check $out/dir'
    case_ "a FIFO (no hang)" 'timeout 10 $moec check $out/fifo'
    case_ "a FIFO to stats (no hang)" 'timeout 10 $moec stats $out/fifo'
    # an -o that is not a regular file: the executable is refused, an --emit form is written
    # into it (a FIFO, /dev/stdout), and neither is replaced by a rename
    case_ "build -o a FIFO (refused)" '$moec build $small -o $out/fifo'
    (timeout 20 cat "$out/fifo" >"$out/fromfifo") & reader=$!
    case_ "build --emit ir -o a FIFO" 'timeout 20 $moec build $small --emit ir -o $out/fifo'
    wait $reader
    if [ -p "$out/fifo" ] && grep -q . "$out/fromfifo"; then echo "== the FIFO is still a FIFO and got the IR";
    else echo "== the FIFO was replaced, or got nothing"; fi
    # standard input
    case_ "check - (a good model)" '$moec check - <$small'
    case_ "check - (errors: <stdin>:line:col)" '$moec check - <$out/bad.moe'
    case_ "check - (a directory)" '$moec check - <$out/dir'
    case_ "check - (imports resolve from the current directory)" 'cd examples && $moec check - <prmoe.moe'
    case_ "check - (empty)" '$moec check - </dev/null'
    "$moec" stats "$small" --json >"$out/file.json"
    "$moec" stats - --json <"$small" >"$out/stdin.json"
    same "stats - --json == stats FILE --json" "$out/file.json" "$out/stdin.json"
    "$moec" build - --emit c <"$small" | grep -c '<stdin>' | sed 's/^/== build - --emit c names <stdin>: /'
    # --emit FORM -o FILE: FILE holds what stdout would, nothing on stdout
    for form in ast ir schedule kernels c; do
        case_ "build --emit $form -o FILE" '$moec build $small --emit $form -o $out/$form.txt'
        "$moec" build "$small" --emit "$form" >"$out/$form.stdout"
        same "--emit $form: -o FILE == stdout" "$out/$form.txt" "$out/$form.stdout"
    done
    case_ "build --emit ir -o FILE of a bad model writes nothing" \
        '$moec build $out/bad.moe --emit ir -o $out/never.txt; rc=$?; ls $out | grep never; exit $rc'
    case_ "build --emit c -o into a missing directory" '$moec build $small --emit c -o $out/no/such/x.c'
    # stats: activations planned, or why not
    case_ "stats: activations" '$moec stats $small | tail -1'
    case_ "stats: a model moec build refuses" \
        '$moec stats tests/compiler/bad/unimplemented.moe --model unimplemented | tail -1'
    case_ "stats: more than 128 layers" '$moec stats $out/deep.moe | tail -1'
    case_ "stats: a step too large to plan" '$moec stats $out/wide.moe --json | grep -A2 activations_per_rank'
} >"$out/got"
if [ -n "${UPDATE_GOLDEN:-}" ]; then cp "$out/got" "$here/bad/cli.expected"; echo updated; exit 0; fi
diff -u "$here/bad/cli.expected" "$out/got" && echo ok
