#!/usr/bin/env python3
"""plot.py - pictures of training logs (the JSONL of `OUT train --log`).

    python3 scripts/plot.py run.jsonl [other.jsonl ...] -o loss.png [--smooth N] [--loss KEY]

Four panels over optimizer steps, one line per log (labelled by file name):
  - loss: the training loss (or the log's KEY, e.g. lm_loss: a distilled student's LM loss
    without its KD term), and the evaluation loss (`eval_loss`, dots) where it was measured;
  - learning rate;
  - gradient norm (before clipping), on a log scale, with the spike detector's warnings marked;
  - expert load balance per MoE layer: the busiest expert's share of the token-choices times
    the number of experts (1 = perfectly balanced, E = every choice on one expert).
Needs matplotlib (Debian: python3-matplotlib). Lines that are not step objects are skipped,
so a log cut short by a crash still plots.
"""
import argparse
import json
import os
import sys


def read_log(path):
    """The step objects of a log, in order; a later line of the same step replaces an earlier one."""
    steps = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                o = json.loads(line)
            except ValueError:
                continue
            if isinstance(o, dict) and isinstance(o.get("step"), int):
                steps[o["step"]] = o
    return [steps[k] for k in sorted(steps)]


def smooth(values, n):
    """Trailing mean over n points (n <= 1: unchanged); None values are skipped."""
    if n <= 1:
        return values
    out, window = [], []
    for v in values:
        if v is not None:
            window.append(v)
            window = window[-n:]
        out.append(sum(window) / len(window) if window else None)
    return out


def main(argv):
    ap = argparse.ArgumentParser(description="Plot moec training logs (JSONL).")
    ap.add_argument("logs", nargs="+", help="JSONL files written by `OUT train --log`")
    ap.add_argument("-o", "--out", required=True, help="the picture to write (.png, .svg, .pdf)")
    ap.add_argument("--smooth", type=int, default=1, help="trailing mean of the training loss over N steps")
    ap.add_argument("--loss", default="loss", help="the log's key to plot as the training loss (default loss)")
    a = ap.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for path in a.logs:
        try:
            rows = read_log(path)
        except OSError as e:
            sys.exit("plot.py: %s: %s" % (path, e.strerror))
        if not rows:
            sys.exit("plot.py: %s holds no step of a training log" % path)
        runs.append((os.path.basename(path), rows))

    fig, ax = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    (loss_ax, lr_ax), (gn_ax, load_ax) = ax
    for label, rows in runs:
        x = [r["step"] for r in rows]
        line, = loss_ax.plot(x, smooth([r.get(a.loss) for r in rows], a.smooth), lw=1.2,
                         label="%s train%s" % (label, "" if a.loss == "loss" else " " + a.loss))
        ev = [(r["step"], r["eval_loss"]) for r in rows if r.get("eval_loss") is not None]
        if ev:
            held = any((r.get("run") or {}).get("eval_data") for r in rows)
            loss_ax.plot(*zip(*ev), "o--", color=line.get_color(), ms=4, lw=1,
                         label=label + (" eval (held out)" if held else " eval"))
        lr_ax.plot(x, [r.get("lr") for r in rows], lw=1.2, label=label)
        gn = [(r["step"], r["grad_norm"]) for r in rows if r.get("grad_norm")]
        if gn:
            gn_ax.plot(*zip(*gn), lw=1, color=line.get_color(), label=label)
        warn = [(r["step"], r["grad_norm"]) for r in rows if r.get("warning") and r.get("grad_norm")]
        if warn:
            gn_ax.plot(*zip(*warn), "x", color="red", ms=6, label=label + " spike warnings")
        layers = rows[-1].get("moe_layers") or []
        for i, layer in enumerate(layers):
            pts = []
            for r in rows:
                loads = r.get("expert_load") or []
                if i < len(loads) and loads[i]:
                    share = [v for v in loads[i] if v is not None]
                    if share:
                        pts.append((r["step"], max(share) * len(loads[i])))
            if pts:
                load_ax.plot(*zip(*pts), lw=1, label="%s layer %d" % (label, layer))

    loss_ax.set_title("loss" if a.loss == "loss" else a.loss)
    lr_ax.set_title("learning rate")
    gn_ax.set_title("gradient norm (before clipping)")
    gn_ax.set_yscale("log")
    load_ax.set_title("expert load: max share x experts (1 = balanced)")
    for axis in ax.flat:
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    if not load_ax.lines:
        load_ax.text(0.5, 0.5, "dense: no MoE layers", ha="center", va="center", transform=load_ax.transAxes)
    fig.savefig(a.out, dpi=110)
    print("plot.py: wrote %s (%d log%s)" % (a.out, len(runs), "s" if len(runs) > 1 else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
