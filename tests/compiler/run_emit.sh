#!/usr/bin/env bash
# run_emit.sh MOEC FILE FORM GOLDEN - `moec build --emit FORM` must print GOLDEN exactly,
# twice in a row (deterministic). UPDATE_GOLDEN=1 rewrites the golden instead.
set -euo pipefail
moec=$1; file=$2; form=$3; golden=$4
export XDG_CACHE_HOME=/nonexistent      # no tuning database: the built-in rule's variants
a=$("$moec" build "$file" --emit "$form")
b=$("$moec" build "$file" --emit "$form")
[ "$a" = "$b" ] || { echo "FAIL: --emit $form is not deterministic"; exit 1; }
if [ -n "${UPDATE_GOLDEN:-}" ]; then printf '%s\n' "$a" > "$golden"; echo "updated $golden"; exit 0; fi
diff -u "$golden" <(printf '%s\n' "$a") && echo ok
