#!/usr/bin/env bash
# The training activation arena of every model of every example, as `moec stats` plans it
# (batch x context of each model's train block), without and with train.recompute; with OLD,
# also as another moec plans it (an earlier build: "before").
#
#   bash bench/arena.sh MOEC [OLD_MOEC] > bench/results/arena.md
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
moec=$1 old=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$ROOT"/examples/*.moe "$work"/

# stats --json's activation bytes of MODEL in FILE, in GiB
arena() {
    "$1" stats "$2" --model "$3" --json | python3 -c \
        'import json, sys; print("%.2f" % (json.load(sys.stdin)["activations_per_rank"]["bytes"] / 2**30))'
}

echo "| example | model | batch x context |${old:+ before (GiB) |} arena (GiB) | with recompute (GiB) | ratio |"
echo "|---|---|---|${old:+---|}---|---|---|"
for f in "$work"/*.moe; do
    for m in $(sed -n 's/^model \([A-Za-z_0-9]*\).*/\1/p' "$f"); do
        # the same model with recompute, derived from it in a copy of its file
        rc="$work/rc_$(basename "$f")"
        { cat "$f"; printf 'model %s_rc : %s {\n    train { recompute = true }\n}\n' "$m" "$m"; } > "$rc"
        shape=$("$moec" stats "$f" --model "$m" --json |
                python3 -c 'import json, sys; a = json.load(sys.stdin)["activations_per_rank"]; print(a["batch"], "x", a["context"])')
        now=$(arena "$moec" "$f" "$m")
        with=$(arena "$moec" "$rc" "${m}_rc")
        before=""
        [ -n "$old" ] && before="$(arena "$old" "$f" "$m") | "
        ratio=$(python3 -c "print('%.1fx' % ($now / $with) if $with > 0 else '-')")
        echo "| $(basename "$f") | $m | $shape | $before$now | $with | $ratio |"
    done
done
