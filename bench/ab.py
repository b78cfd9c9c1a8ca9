#!/usr/bin/env python3
"""A/B: two moec builds on the benchmark's shapes, interleaved, for compiler changes.

    python3 bench/ab.py OLD_MOEC NEW_MOEC [--rounds 5] [--threads N] [--work DIR] [--quick]

Builds every model of bench/configs.py (the MoE layers and the whole-step models) with both
compilers, then runs `EXE bench --json` of each A and B in alternation, `--rounds` times, so that
both see the same machine (this VM's speed drifts by 10-15% over minutes). Prints, per shape and
mode, the median tokens/s of each and B/A with the spread of the per-round ratios. Layers are
timed by their `.moe.` kernels (the sum bench/README.md describes); whole steps by step_ms.
No PyTorch: bench/run.sh measures against the baselines.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from configs import SEQ, make_plan            # noqa: E402
from moec_side import layer_model_text, moe_layer_ms, whole_model_text   # noqa: E402


def build(moec, text, path, exe):
    with open(path, "w") as f:
        f.write(text)
    subprocess.run([moec, "build", path, "-o", exe], check=True, stdout=subprocess.DEVNULL)


def bench(exe, mode, steps, env):
    out = subprocess.run([exe, "bench", "--" + mode, "--steps", str(steps), "--json"], check=True,
                         capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", default="build-bench/ab")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads))
    plan = make_plan(a.quick)
    cases = []      # (label, mode, exe_old, exe_new, measure)
    for i, c in enumerate(plan.layers):
        exes = []
        for tag, moec in (("a", a.old), ("b", a.new)):
            exe = os.path.join(a.work, f"layer{i}.{tag}")
            build(moec, layer_model_text(c, SEQ), exe + ".moe", exe)
            exes.append(exe)
        for mode in ("infer", "grad"):
            cases.append((c.name, "forward" if mode == "infer" else "forward+backward", mode, exes,
                          lambda r, c=c: c.tokens / (moe_layer_ms(r["kernels"]) / 1e3)))
    for i, m in enumerate(plan.models):
        exes = []
        for tag, moec in (("a", a.old), ("b", a.new)):
            exe = os.path.join(a.work, f"model{i}.{tag}")
            build(moec, whole_model_text(m), exe + ".moe", exe)
            exes.append(exe)
        cases.append((m.name, "training step", "train", exes, lambda r: r["tokens_per_s"]))
    res = {k: ([], []) for k in range(len(cases))}
    for rnd in range(a.rounds):
        for k, (_, _, mode, exes, measure) in enumerate(cases):
            order = (0, 1) if rnd % 2 == 0 else (1, 0)      # alternate who goes first
            for side in order:
                res[k][side].append(measure(bench(exes[side], mode, a.steps, env)))
        print(f"round {rnd + 1}/{a.rounds} done", file=sys.stderr)
    print(f"| shape | mode | A tokens/s | B tokens/s | B / A (per-round min..max) |")
    print("|---|---|---|---|---|")
    for k, (name, mode, _, _, _) in enumerate(cases):
        old, new = res[k]
        ratios = [n / o for o, n in zip(old, new)]
        print(f"| {name} | {mode} | {statistics.median(old):,.0f} | {statistics.median(new):,.0f} | "
              f"{statistics.median(new) / statistics.median(old):.3f} ({min(ratios):.2f}..{max(ratios):.2f}) |")


if __name__ == "__main__":
    main()
