#!/usr/bin/env bash
# check_hf.sh - the Hugging Face export against transformers: trains the GPT-2-shaped test
# model (tests/e2e/gpt2.moe) for 300 steps on our docs, exports it with `export --hf`, loads the
# directory with transformers' GPT2LMHeadModel, and compares its mean cross-entropy over the
# same windows with what `eval` computes, and its greedy continuation of a prompt (the argmax
# of the logits at every position) with what `generate --temperature 0` prints. Makes its own virtual environment
# (build/hf-venv: transformers from PyPI over Debian's python3-torch, which it installs).
#   bash scripts/check_hf.sh            prints the figures; exit 1 if they differ
#   BUILD=DIR bash scripts/check_hf.sh  builds moec in DIR (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null || ! /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-torch python3-venv >/dev/null
fi
venv=build/hf-venv
if ! "$venv/bin/python" -c 'import transformers' 2>/dev/null; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  # the last transformers that supports Debian 12's torch 1.13
  "$venv/bin/pip" install -q "transformers>=4.30,<4.38" "safetensors"
fi
build=${BUILD:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target moec moert moert_main >/dev/null
work=$build/check-hf; rm -rf "$work"; mkdir -p "$work"
"$build/moec" build tests/e2e/gpt2.moe -o "$work/gpt2"
cat docs/design.md docs/language.md > "$work/train.txt"
head -c 40000 README.md > "$work/text.txt"
"$work/gpt2" train --data "$work/train.txt" --steps 300 --checkpoint "$work/ck" 2>/dev/null
"$work/gpt2" export --hf "$work/hf" --checkpoint "$work/ck"
"$work/gpt2" generate --checkpoint "$work/ck" --prompt "The model " --tokens 20 --temperature 0 > "$work/greedy.txt"
"$work/gpt2" eval --checkpoint "$work/ck" --data "$work/text.txt" --batch 4 --seq 32 --max-batches 8 > "$work/eval.json"
"$venv/bin/python" - "$work" <<'PY'
import json, math, sys
import torch
from transformers import GPT2LMHeadModel
work = sys.argv[1]
ours = json.load(open(work + "/eval.json"))
model = GPT2LMHeadModel.from_pretrained(work + "/hf").eval()
data = open(work + "/text.txt", "rb").read()
B, T, nb = 4, 32, ours["batches"]
losses = []
with torch.no_grad():
    for b in range(nb):      # eval's windows: sequence i reads tokens [i T, (i + 1) T]
        rows = [list(data[(b * B + r) * T:(b * B + r) * T + T + 1]) for r in range(B)]
        x = torch.tensor([r[:T] for r in rows]); y = torch.tensor([r[1:] for r in rows])
        logits = model(x).logits
        losses.append(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item())
hf = sum(losses) / len(losses)
diff = abs(hf - ours["lm_loss"])
print("transformers %s, torch %s" % (__import__("transformers").__version__, torch.__version__))
print("mean cross-entropy over %d x %d x %d tokens: moec eval %.7f, transformers GPT2LMHeadModel %.7f, |diff| %.2e"
      % (nb, B, T, ours["lm_loss"], hf, diff))
prompt = b"The model "
out = model.generate(torch.tensor([list(prompt)]), max_new_tokens=20, do_sample=False, eos_token_id=None,
                     pad_token_id=0)[0].tolist()
theirs = bytes(out)
mine = open(work + "/greedy.txt", "rb").read()[:-1]      # generate ends its output with a newline
print("greedy continuation of %r: moec %r, transformers %r: %s" % (prompt, mine[len(prompt):], theirs[len(prompt):],
      "same" if mine == theirs else "DIFFERENT"))
sys.exit(0 if diff < 1e-4 and mine == theirs else 1)
PY
