#!/usr/bin/env bash
# check_hf.sh - the Hugging Face export against transformers, for both architectures it writes:
# trains the GPT-2-shaped test model (tests/e2e/gpt2.moe) and the Mixtral-shaped one
# (tests/e2e/mixtral.moe: top-2, grouped-query attention, rope, rmsnorm, swiglu, no biases,
# dropless) for 300 steps each on our docs (the learning-rate schedule spread over them),
# exports them with `export --hf`, loads each directory with transformers' GPT2LMHeadModel or
# MixtralForCausalLM, and compares its mean cross-entropy over the same windows with what
# `eval` computes (|diff| < 1e-4), and its greedy continuation of a prompt (the argmax of the
# logits at every position) with what `generate --temperature 0` prints. Makes its own
# virtual environment (build/hf-venv: transformers from PyPI over Debian's python3-torch,
# which it installs).
#   bash scripts/check_hf.sh            prints the figures; exit 1 if any differ
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
cat docs/design.md docs/language.md > "$work/train.txt"
head -c 40000 README.md > "$work/text.txt"
status=0
for m in gpt2 mixtral; do
  "$build/moec" build "tests/e2e/$m.moe" -o "$work/$m"
  "$work/$m" train --data "$work/train.txt" --steps 300 --steps-total 300 --checkpoint "$work/ck-$m" 2>/dev/null
  "$work/$m" export --hf "$work/hf-$m" --checkpoint "$work/ck-$m"
  "$work/$m" generate --checkpoint "$work/ck-$m" --prompt "The model " --tokens 20 --temperature 0 > "$work/greedy-$m.txt"
  "$work/$m" eval --checkpoint "$work/ck-$m" --data "$work/text.txt" --batch 4 --seq 32 --max-batches 8 > "$work/eval-$m.json"
  "$venv/bin/python" - "$work" "$m" <<'PY' || status=1
import json, math, sys
import torch
import transformers
work, m = sys.argv[1], sys.argv[2]
cls = {"gpt2": transformers.GPT2LMHeadModel, "mixtral": transformers.MixtralForCausalLM}[m]
ours = json.load(open("%s/eval-%s.json" % (work, m)))
model = cls.from_pretrained("%s/hf-%s" % (work, m), torch_dtype=torch.float32).eval()
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
print("%s: transformers %s, torch %s" % (m, transformers.__version__, torch.__version__))
print("%s: mean cross-entropy over %d x %d x %d tokens: moec eval %.7f, transformers %s %.7f, |diff| %.2e"
      % (m, nb, B, T, ours["lm_loss"], cls.__name__, hf, diff))
prompt = b"The model "
with torch.no_grad():
    out = model.generate(torch.tensor([list(prompt)]), max_new_tokens=20, do_sample=False, eos_token_id=None,
                         pad_token_id=0)[0].tolist()
theirs = bytes(out)
mine = open("%s/greedy-%s.txt" % (work, m), "rb").read()[:-1]      # generate ends its output with a newline
print("%s: greedy continuation of %r: moec %r, transformers %r: %s" % (m, prompt, mine[len(prompt):],
      theirs[len(prompt):], "same" if mine == theirs else "DIFFERENT"))
sys.exit(0 if diff < 1e-4 and mine == theirs else 1)
PY
done
exit $status
