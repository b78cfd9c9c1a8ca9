"""Turn a run's Results into results.md, results.csv and results.svg.

derive_targets adds one 'target' row per ratio the project aims at, so the CSV carries them too;
the markdown shows those ratios first, then every measured number by section; the plot shows
tokens/s per configuration and implementation as grouped bars.
"""
import os
import textwrap

from benchutil import MIN_REPEATS
from results import Results

IMPL_NAMES = {"deepspeed": "DeepSpeed design", "sortgather": "sort/gather",
              "deepspeed_compile": "DeepSpeed design, torch.compile",
              "sortgather_compile": "sort/gather, torch.compile",
              "moec": "moec", "torch": "PyTorch eager", "torch_compile": "PyTorch torch.compile"}
MODE_NAMES = {"fwd": "forward", "fwdbwd": "forward+backward", "train": "training step"}
LAYER_TORCH = ("deepspeed", "deepspeed_compile", "sortgather", "sortgather_compile")
MODEL_TORCH = ("torch", "torch_compile")


def best_torch(res, section, config, mode, impls):
    """(row, impl) of the PyTorch form with the most tokens/s, or (None, None)."""
    rows = [(res.row(section, config, impl, mode, "tokens_per_s"), impl) for impl in impls]
    rows = [(row, impl) for row, impl in rows if row is not None and row.value is not None]
    return max(rows, key=lambda r: r[0].value) if rows else (None, None)


def add_best_torch(res, plan):
    """A 'torch_best' row per config and mode: the best PyTorch tokens/s, note = which form."""
    cases = [("moe_layer", c.name, mode, LAYER_TORCH) for c in plan.layers
             for mode in ("fwd", "fwdbwd")]
    cases += [(s, m.name, "train", MODEL_TORCH) for s in ("step", "step_loaded") for m in plan.models]
    cases += [("decode", m.name, f"B{b}", MODEL_TORCH) for m in plan.decode_models
              for b in plan.decode_batches]
    for section, config, mode, impls in cases:
        if not any(res.row(section, config, impl, mode, "tokens_per_s") for impl in impls):
            continue   # section not run
        row, impl = best_torch(res, section, config, mode, impls)
        res.add(section, config, "torch_best", mode, "tokens_per_s",
                row.value if row else None, "tok/s",
                IMPL_NAMES[impl] if impl else "no PyTorch figure")


# ---------------------------------------------------------------------------------------------
# Ratios against targets

def _ratio(res, section, config, mode, metric, num_impl, den_impl):
    """(value, note): num / den, or None with the reason one side is missing."""
    num = res.row(section, config, num_impl, mode, metric)
    den = res.row(section, config, den_impl, mode, metric)
    for row, impl in ((num, num_impl), (den, den_impl)):
        if row is None or row.value is None:
            return None, (row.note if row is not None and row.note else f"{impl}: not measured")
    return num.value / den.value, ""


def _add_target(res, config, what, mode, value, note, goal, at_least):
    if value is not None:
        met = value >= goal if at_least else value <= goal
        note = "met" if met else "missed"
    res.add("target", config, "moec", mode, what, value, "x",
            note=f"{'>=' if at_least else '<='} {goal:g}: {note}")


def derive_targets(res, plan):
    """The project's ratios, one 'target' row each (value None when a side is missing).

    The MoE layer's goals are against the DeepSpeed design (eager), the design they were set
    on; the whole step's against the best PyTorch figure, eager or torch.compile."""
    for cfg in plan.layers:
        for mode, goal in (("fwd", 2.5), ("fwdbwd", 2.0)):
            v, why = _ratio(res, "moe_layer", cfg.name, mode, "tokens_per_s", "moec", "deepspeed")
            _add_target(res, cfg.name, "MoE layer tokens/s, moec / DeepSpeed design", mode,
                        v, why, goal, True)
    for cfg in plan.layers:
        for mode in ("fwd", "fwdbwd"):
            moec = res.row("moe_layer", cfg.name, "moec", mode, "expert_gflops")
            blas = res.value("sgemm", cfg.name, "openblas", mode, "gflops")
            v, why = None, (moec.note if moec is not None and moec.note else "not measured")
            if moec is not None and moec.value is not None and blas:
                v, why = moec.value / blas, ""
            _add_target(res, cfg.name, "expert GEMMs, GFLOP/s / sgemm GFLOP/s", mode, v, why,
                        0.8, True)
    for m in plan.models:
        v, why = _ratio(res, "step", m.name, "train", "tokens_per_s", "moec", "torch_best")
        _add_target(res, m.name, "training step tokens/s, moec / best PyTorch", "train",
                    v, why, 1.5, True)
    for m in plan.models:
        if res.row("step_loaded", m.name, "moec", "train", "tokens_per_s") is None:
            continue   # section not run
        v, why = _ratio(res, "step_loaded", m.name, "train", "tokens_per_s", "moec", "torch_best")
        _add_target(res, m.name, "training step tokens/s with one core busy, moec / best PyTorch",
                    "train", v, why, 1.0, True)
    for m in plan.models:
        v, why = _ratio(res, "step", m.name, "train", "peak_rss_bytes", "moec", "torch")
        _add_target(res, m.name, "peak RSS, moec / PyTorch eager", "train", v, why, 1.0, False)
    for cfg in plan.layers:
        v, why = _ratio(res, "moe_layer", cfg.name, "fwdbwd", "peak_rss_bytes", "moec",
                        "deepspeed")
        _add_target(res, cfg.name, "peak RSS, moec / DeepSpeed design", "fwdbwd", v, why,
                    1.0, False)


# ---------------------------------------------------------------------------------------------
# Markdown

def _cell(row, fmt):
    """A number formatted by fmt, or the reason it is missing."""
    if row is None:
        return "-"
    if row.value is None:
        return (row.note or "n/a").replace("|", "\\|")
    return fmt(row.value)


def _rate(v):
    return f"{v:,.0f}"


def _ms(v):
    return f"{v:,.1f}"


def _mib(v):
    return f"{v / 2**20:,.1f}"


def _x(v):
    return f"{v:.2f}x"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines + [""]


def machine_line(m):
    repeats = (f"{MIN_REPEATS}-{m['repeats']}" if m["repeats"] > MIN_REPEATS
               else str(m["repeats"]))
    source = f" from {m['torch_from']}" if m.get("torch_from") else ""
    return (f"Machine: {m['cpu']}, {m['cores']} cores ({m['logical_cpus']} logical CPUs), "
            f"BLAS = {m['blas']}, threads = {m['threads']}; PyTorch {m['torch']}{source} "
            f"(BLAS {m['torch_blas']}); {m['mode']} run of {m['date']}, "
            f"PyTorch: median of {repeats} after {m['warmup']} warm-up; "
            f"moec: {m['moec']}.")


def targets_md(res):
    rows = [(r.metric, r.config, MODE_NAMES.get(r.mode, r.mode),
             _x(r.value) if r.value is not None else "n/a", r.note)
            for r in res.rows if r.section == "target"]
    rows = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    return ["## Targets", ""] + _table(["ratio", "config", "mode", "value", "goal: status"], rows)


def _vs(res, section, config, mode, den_impl):
    """moec's tokens/s over den_impl's, formatted, or '-'."""
    v, _ = _ratio(res, section, config, mode, "tokens_per_s", "moec", den_impl)
    return "-" if v is None else _x(v)


def _best_cell(res, section, config, mode):
    """The best PyTorch tokens/s and which form it was."""
    row = res.row(section, config, "torch_best", mode, "tokens_per_s")
    if row is None or row.value is None:
        return "-"
    return f"{_rate(row.value)} ({row.note})"


def _layer_row(res, cfg, mode, impls):
    def rate(impl):
        return _cell(res.row("moe_layer", cfg.name, impl, mode, "tokens_per_s"), _rate)
    return ((cfg.name, MODE_NAMES[mode]) + tuple(rate(i) for i in impls)
            + (rate("moec"), _best_cell(res, "moe_layer", cfg.name, mode),
               _vs(res, "moe_layer", cfg.name, mode, "torch_best"),
               _vs(res, "moe_layer", cfg.name, mode, "deepspeed")))


def _expert_row(res, cfg, mode):
    def moec(metric):
        return res.row("moe_layer", cfg.name, "moec", mode, metric)
    return (cfg.name, MODE_NAMES[mode], _cell(moec("expert_ms"), _ms),
            _cell(moec("expert_gflops"), _rate),
            _cell(res.row("sgemm", cfg.name, "openblas", mode, "gflops"), _rate))


def layers_md(res, plan):
    pairs = [(cfg, mode) for cfg in plan.layers for mode in ("fwd", "fwdbwd")]
    impls = [i for i in LAYER_TORCH if any(r.section == "moe_layer" and r.impl == i
                                            for r in res.rows)] or ["deepspeed", "sortgather"]
    out = ["## 1. MoE layer, tokens/s (median)", ""]
    out += _table(["config", "mode"] + [IMPL_NAMES[i] for i in impls]
                  + ["moec", "best PyTorch", "moec / best PyTorch", "moec / DeepSpeed"],
                  [_layer_row(res, cfg, mode, impls) for cfg, mode in pairs])
    out += ["moec's time is the sum of its kernels named `.moe.` (forward, and `.bwd` in "
            "forward+backward); PyTorch's is the layer call (forward under no_grad, or forward "
            "plus backward of out.sum() + 0.01 l_aux); torch.compile's compiling call is not "
            "timed, its warm-up calls come after it.", ""]
    out += ["### Expert GEMMs against the sgemm rate", ""]
    out += _table(["config", "mode", "moec expert ms", "moec expert GFLOP/s",
                   "cblas_sgemm GFLOP/s, same shapes"],
                  [_expert_row(res, cfg, mode) for cfg, mode in pairs])
    return out


def sgemm_md(res, plan):
    rows = []
    for cfg in plan.layers:
        ours = [r for r in res.rows if r.section == "sgemm" and r.config == cfg.name]
        rows += [(cfg.name, r.mode, _cell(r, _rate)) for r in ours
                 if r.mode not in ("fwd", "fwdbwd")]
        rows += [(cfg.name, f"**all {MODE_NAMES[r.mode]} shapes**", _cell(r, _rate))
                 for r in ours if r.mode in ("fwd", "fwdbwd")]
    return (["## 2. BLAS limit: cblas_sgemm GFLOP/s on the expert shapes", "",
             "Shape MxNxK and op(A) op(B) (n/t); M = the expert capacity C. A set's rate is "
             "its total FLOPs over its total time.", ""]
            + _table(["config", "shape", "GFLOP/s"], rows))


def _steps_table(res, plan, section):
    rows = []
    for m in plan.models:
        def rate(impl):
            return _cell(res.row(section, m.name, impl, "train", "tokens_per_s"), _rate)
        rows.append((m.name, m.tokens, rate("torch"), rate("torch_compile"), rate("moec"),
                     _best_cell(res, section, m.name, "train"),
                     _vs(res, section, m.name, "train", "torch_best")))
    return _table(["model", "tokens/step", "PyTorch eager", "PyTorch torch.compile", "moec",
                   "best PyTorch", "moec / best PyTorch"], rows)


def steps_md(res, plan):
    torch_note = next((r.note for r in res.rows if r.section == "step" and r.impl == "torch"
                       and r.metric == "tokens_per_s" and r.value is not None), "")
    out = (["## 3. Whole training step (forward, backward, AdamW), tokens/s", "",
            f"PyTorch side: {torch_note or 'PyTorch eager'}; the same under torch.compile "
            "(the model: forward and backward; clipping and AdamW as they are); same model, "
            "batch and sequence.", ""]
           + _steps_table(res, plan, "step"))
    if any(r.section == "step_loaded" for r in res.rows):
        out += ["With one core busy (another program spinning on it while each side runs; PyTorch "
                "at the thread count above, moec choosing its own):", ""] + _steps_table(res, plan, "step_loaded")
    return out


def _decode_cell(res, config, impl, mode):
    """'median / p90 ms (T thr)' of one decode measurement, or why it is missing."""
    med = res.row("decode", config, impl, mode, "latency_ms_median")
    if med is None or med.value is None:
        return _cell(med, _ms)
    p90 = res.value("decode", config, impl, mode, "latency_ms_p90")
    threads = res.value("decode", config, impl, mode, "threads")
    return (f"{med.value:,.2f} / {p90:,.2f}" + (f" ({threads:.0f} thr)" if threads else ""))


def decode_md(res, plan):
    rows = []
    for m in plan.decode_models:
        for b in plan.decode_batches:
            mode = f"B{b}"
            rows.append((m.name, b, _decode_cell(res, m.name, "torch", mode),
                         _decode_cell(res, m.name, "torch_compile", mode),
                         _decode_cell(res, m.name, "moec", mode),
                         _best_cell(res, "decode", m.name, mode),
                         _cell(res.row("decode", m.name, "moec", mode, "tokens_per_s"), _rate),
                         _vs(res, "decode", m.name, mode, "torch_best")))
    return (["## 6. KV-cache decoding", "",
             f"A prompt of {plan.decode_prompt} tokens per sequence (untimed), then "
             f"{plan.decode_tokens} timed rounds of one token for each of the B sequences. "
             "Latency: median / 90th percentile of a round, ms (B = 1: per token). PyTorch: "
             "the better of 1 thread and the bench's count; moec: the bench's count (its "
             "`bench --decode --batch B` puts the B sequences through its decode program "
             "together, 32 rows per pass). "
             "Random weights of the same shapes on the PyTorch side.", ""]
            + _table(["model", "B", "PyTorch eager ms", "PyTorch torch.compile ms", "moec ms",
                      "best PyTorch tokens/s", "moec tokens/s", "moec / best PyTorch"], rows))


def memory_md(res, plan):
    rows = []
    for r in res.rows:
        if r.metric == "peak_rss_bytes" and r.section in ("memory", "moe_layer", "step"):
            rows.append((r.config, IMPL_NAMES.get(r.impl, r.impl),
                         MODE_NAMES.get(r.mode, r.mode), _cell(r, _mib)))
    planned = [(r.config, _cell(r, _mib),
                _cell(res.row("memory", r.config, "moec", "", "param_bytes"), _mib))
               for r in res.rows if r.section == "memory" and r.metric == "arena_bytes"]
    out = ["## 4. Peak memory", "", "Peak RSS of each measurement in its own process, MiB.", ""]
    out += _table(["config", "implementation", "mode", "peak RSS MiB"], rows)
    out += ["moec's planned memory (`EXE info --json`), MiB:", ""]
    out += _table(["config", "arena", "parameters"], planned or [("-", "moec: not built", "-")])
    return out


def compile_md(res):
    names = sorted({r.config for r in res.rows if r.section == "compile"})
    keys = ("front_ms", "lower_ms", "codegen_ms", "cc_ms", "wall_ms")
    rows = [[n] + [_cell(res.row("compile", n, "moec", "", k), _ms) for k in keys] for n in names]
    return (["## 5. Compile time of `moec build`, ms", ""]
            + _table(["example", "front", "lower", "codegen", "cc", "wall"], rows))


def write_markdown(res, plan, path):
    lines = [machine_line(res.machine), "", "# moec benchmark results", ""]
    lines += targets_md(res) + layers_md(res, plan) + sgemm_md(res, plan)
    lines += steps_md(res, plan) + memory_md(res, plan) + compile_md(res)
    if any(r.section == "decode" for r in res.rows):
        lines += decode_md(res, plan)
    with open(path, "w") as f:
        f.write("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Plot

COLORS = {"deepspeed": "tab:blue", "deepspeed_compile": "tab:cyan", "sortgather": "tab:orange",
          "sortgather_compile": "tab:red", "torch": "tab:orange", "torch_compile": "tab:red",
          "moec": "tab:green"}


def _short(v):
    return f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def _panel(ax, title, groups, impls, value):
    """Grouped bars: one group per config, one bar per implementation; no bar when missing."""
    from matplotlib.patches import Patch
    width, values = 0.8 / len(impls), []
    for i, impl in enumerate(impls):
        xs, ys = [], []
        for g, config in enumerate(groups):
            v = value(config, impl)
            if v:
                xs.append(g + (i - (len(impls) - 1) / 2) * width)
                ys.append(v)
        bars = ax.bar(xs, ys, width, color=COLORS[impl])
        ax.bar_label(bars, [_short(y) for y in ys], fontsize=6)
        values += ys
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([c.replace(" S", "\nS").replace(" B", "\nB") for c in groups], fontsize=7)
    if values:
        ax.set_yscale("log")   # configs differ by 10x and more; a log axis keeps all readable
        ax.set_ylim(min(values) / 3, max(values) * 8)   # headroom for the legend
    else:
        ax.text(0.5, 0.5, "not measured in this run", ha="center", transform=ax.transAxes)
    ax.set_ylabel("tokens/s")
    ax.set_title(title, fontsize=10)
    handles = [Patch(color=COLORS[i], label=_legend_label(i, groups, value)) for i in impls]
    ax.legend(handles=handles, fontsize=7, loc="upper left", ncol=len(impls))


def _legend_label(impl, groups, value):
    measured = any(value(config, impl) for config in groups)
    return IMPL_NAMES[impl] + ("" if measured else " (not measured)")


def _decode_label(name, batch):
    """A short two-line tick label: 'tiny' for the tiny model, 'every 2' on a line of its own."""
    return name.split(" (")[0].replace(" every", "\nevery") + f" B{batch}"


def write_plot(res, plan, path):
    """results.svg: MoE layer forward, forward+backward, and the whole step, tokens/s."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(4, 1, figsize=(11, 16))
    layers = [c.name for c in plan.layers]
    impls = [i for i in LAYER_TORCH if any(r.impl == i for r in res.rows)] or ["deepspeed"]
    for ax, mode in zip(axes, ("fwd", "fwdbwd")):
        _panel(ax, f"MoE layer, {MODE_NAMES[mode]}", layers, tuple(impls) + ("moec",),
               lambda c, i, mode=mode: res.value("moe_layer", c, i, mode, "tokens_per_s"))
    _panel(axes[2], "Whole training step", [m.name for m in plan.models],
           ("torch", "torch_compile", "moec"),
           lambda c, i: res.value("step", c, i, "train", "tokens_per_s"))
    cases = {_decode_label(m.name, b): (m.name, f"B{b}") for m in plan.decode_models
             for b in plan.decode_batches}
    _panel(axes[3], "KV-cache decoding (PyTorch: best of 1 and N threads)", list(cases),
           ("torch", "torch_compile", "moec"),
           lambda c, i: res.value("decode", cases[c][0], i, cases[c][1], "tokens_per_s"))
    fig.suptitle(textwrap.fill(machine_line(res.machine), 160), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.98))   # room for the machine line above the panels
    fig.savefig(path)
    plt.close(fig)


def write_all(res: Results, plan, out_dir):
    """Derive the target ratios, then write the three files; returns their paths."""
    add_best_torch(res, plan)
    derive_targets(res, plan)
    md, csv, svg = (os.path.join(out_dir, "results." + ext) for ext in ("md", "csv", "svg"))
    write_markdown(res, plan, md)
    res.write_csv(csv, machine_line(res.machine))
    try:
        write_plot(res, plan, svg)
    except ImportError:
        return [md, csv]           # matplotlib missing: run.sh installs it, bench.py alone may not
    return [md, csv, svg]
