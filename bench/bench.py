"""Run every benchmark of the project on this machine and write results.md, .csv and .svg.

bench/run.sh installs what is missing (PyTorch 2 from PyPI in build-bench/venv), builds moec and
sgemm_rate, then calls this with the venv's python, whose PyTorch every child uses. Each
measurement runs in its own process so that its peak RSS is its own; all of them use the same
thread count (PyTorch's decoding: the better of 1 thread and that count). What each section
measures and why is in bench/README.md.

    bench.py [--quick] [--threads N] [--moec PATH] [--sgemm PATH] [--out DIR] [--work DIR]
             [--only moe,sgemm,step,loaded,decode,compile] [--torch-from TEXT]
"""
import argparse
import glob
import json
import os
import platform
import re
import subprocess
import sys
import time

import configs
import moec_side
import report
from moec_side import MoecUnavailable
from benchutil import run_isolated
from results import Results
from torch_moe import capacity

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECTIONS = ("moe", "sgemm", "step", "loaded", "decode", "compile")
TORCH_TIMEOUT_S = 900


class Context:
    """Where things are and how every child process runs (threads, environment)."""

    def __init__(self, args):
        self.threads = args.threads
        self.python = sys.executable
        self.torch_from = args.torch_from
        self.work = args.work
        self.sgemm = args.sgemm
        threads = str(args.threads)
        base = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
        # Every child gets the OpenBLAS kernels moec's executables choose for themselves
        # (kernels/common/moe_start.h): sgemm_rate's ceiling and PyTorch, which calls
        # Debian's OpenBLAS, would otherwise run the Prescott fallback on a processor newer
        # than OpenBLAS's table, a 4-7x handicap that no fair comparison keeps.
        if "OPENBLAS_CORETYPE" not in base and blas_core_class():
            base["OPENBLAS_CORETYPE"] = blas_core_class()
        self.env = base
        self.torch_env = self.torch_env_for(args.threads)
        self.moec = moec_side.Moec(args.moec, base)
        # moec as a user starts it: its own thread count (the processors not busy at start)
        own = {k: v for k, v in base.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        self.moec_own_threads = moec_side.Moec(args.moec, own)
        self.step_exes = {}   # the whole-model executables, built once for sections 3 and 3b

    def torch_env_for(self, threads):
        """The environment of a PyTorch child at `threads` threads.

        OMP_WAIT_POLICY=PASSIVE: PyTorch's OpenMP pool and a BLAS's own threads otherwise spin
        against each other on the same cores (a 2-10x slower backward with Debian's PyTorch
        and OpenBLAS); passive waiting is PyTorch's best. torch.compile's inductor cache is
        kept in the work folder, one per thread count (the generated C++ has the thread
        count in it), so that a second run compiles from the cache.
        """
        t = str(threads)
        return dict(self.env, OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, MKL_NUM_THREADS=t,
                    OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=HERE,
                    TORCHINDUCTOR_CACHE_DIR=os.path.join(self.work, f"inductor-t{t}"))


def blas_core_class():
    """The OpenBLAS kernel class this processor supports, as moe_start.h decides it."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l.split(":", 1)[1].split() for l in f if l.startswith("flags")), [])
    except OSError:
        return None
    if "avx512_bf16" in flags:
        return "Cooperlake"
    if all(x in flags for x in ("avx512f", "avx512bw", "avx512dq", "avx512vl")):
        return "SkylakeX"
    if "avx2" in flags and "fma" in flags:
        return "Haswell"
    return None


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_json(argv, env, timeout_s):
    """Run a measuring child process; return the JSON object on its last stdout line."""
    name = " ".join(os.path.basename(str(a)) for a in argv[:2])
    try:
        proc = run_isolated(argv, env, timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{name} timed out after {timeout_s} s")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = " / ".join(proc.stderr.strip().splitlines()[-2:])
        raise RuntimeError(f"{name} failed (rc {proc.returncode}): {tail}")
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise RuntimeError(f"{name} printed no JSON: {lines[-1][:100]}")


# ---------------------------------------------------------------------------------------------
# Machine

def cpu_description():
    """CPU model, physical cores and logical CPUs from /proc/cpuinfo."""
    model, cores, physical = platform.processor() or "unknown CPU", set(), None
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = (s.strip() for s in line.partition(":"))
            if key == "model name":
                model = value
            elif key == "physical id":
                physical = value
            elif key == "core id":
                cores.add((physical, value))
    return model, len(cores) or os.cpu_count(), os.cpu_count()


def torch_blas():
    """The BLAS this PyTorch calls: MKL (with its version) for PyPI's wheels, read from
    torch.__config__.show(); for Debian's (BLAS_INFO=generic), the libblas.so.3 it resolves to."""
    import torch
    config = torch.__config__.show()
    info = re.search(r"BLAS_INFO=(\w+)", config)
    if info and info.group(1) == "mkl":
        mkl = re.search(r"Math Kernel Library Version ([\w.]+)", config)
        return "MKL" + (f" {mkl.group(1)}" if mkl else "")
    for arch in ("x86_64", "aarch64"):
        path = f"/usr/lib/{arch}-linux-gnu/libblas.so.3"
        if os.path.exists(path):
            return os.path.realpath(path)
    return info.group(1) if info else "unknown"


def openblas_version(ctx):
    """OpenBLAS's own config string (from sgemm_rate), else the Debian package version."""
    if ctx.sgemm and os.access(ctx.sgemm, os.X_OK):
        try:
            out = subprocess.run([ctx.sgemm, "--threads", "1", "--min-ms", "0", "8,8,8"],
                                 capture_output=True, text=True, timeout=30, env=ctx.env).stdout
            return json.loads(out.splitlines()[0])["blas"]
        except (OSError, ValueError, IndexError, KeyError, subprocess.TimeoutExpired):
            pass
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libopenblas0-pthread"],
                          capture_output=True, text=True)
    return f"OpenBLAS {proc.stdout.strip()}" if proc.returncode == 0 else "unknown BLAS"


def describe_machine(ctx, plan, res):
    import torch
    model, cores, logical = cpu_description()
    res.machine = {
        "cpu": model, "cores": cores, "logical_cpus": logical, "threads": ctx.threads,
        "blas": openblas_version(ctx), "torch": torch.__version__, "torch_blas": torch_blas(),
        "torch_from": ctx.torch_from,
        "mode": "quick" if plan.quick else "full", "date": time.strftime("%Y-%m-%d %H:%M"),
        "warmup": plan.warmup, "repeats": plan.repeats,
        "moec": ctx.moec.path if ctx.moec.available() else "not built",
    }


# ---------------------------------------------------------------------------------------------
# Section 2: the BLAS limit on each layer's expert GEMM shapes

def expert_gemm_shapes(cfg):
    """The six expert GEMMs (M, N, K, op A, op B) of one expert with m = C rows.

    Forward: h = x W_fc [m,d]x[d,f], y = h W_proj [m,f]x[f,d]. Backward adds, per weight,
    the input gradient (times W^T) and the weight gradient (x^T times the output gradient).
    """
    m = capacity(cfg.tokens, cfg.experts, cfg.top_k)
    d, f = cfg.hidden, cfg.ffn
    forward = [(m, f, d, "n", "n"), (m, d, f, "n", "n")]
    backward = [(m, f, d, "n", "t"), (f, d, m, "t", "n"),    # through W_proj
                (m, d, f, "n", "t"), (d, f, m, "t", "n")]    # through W_fc
    return forward, backward


def run_sgemm_rate(ctx, plan, shapes):
    """sgemm_rate on the shapes: one {m, n, k, ta, tb, ms, gflops} per shape, in order."""
    if not (ctx.sgemm and os.access(ctx.sgemm, os.X_OK)):
        raise RuntimeError("sgemm_rate not built")
    argv = [ctx.sgemm, "--threads", str(ctx.threads), "--min-ms", str(plan.sgemm_min_ms)]
    argv += [",".join(str(v) for v in s) for s in shapes]
    proc = run_isolated(argv, env=ctx.env, timeout_s=600)
    timed = [json.loads(line) for line in proc.stdout.splitlines()[1:]]
    if proc.returncode != 0 or len(timed) != len(shapes):
        raise RuntimeError(f"sgemm_rate failed (rc {proc.returncode}): {proc.stderr.strip()}")
    return timed


def measure_sgemm(ctx, plan, res):
    """sgemm GFLOP/s per shape, and per mode the rate of the whole set (sum FLOPs / sum time)."""
    for cfg in plan.layers:
        forward, backward = expert_gemm_shapes(cfg)
        log(f"sgemm {cfg.name}")
        try:
            timed = run_sgemm_rate(ctx, plan, forward + backward)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
            for mode in ("fwd", "fwdbwd"):
                res.missing("sgemm", cfg.name, "openblas", mode, ["gflops"], str(e)[:200])
            continue
        for t in timed:
            res.add("sgemm", cfg.name, "openblas", f"{t['m']}x{t['n']}x{t['k']} {t['ta']}{t['tb']}",
                    "gflops", t["gflops"], "GFLOP/s")
        for mode, part in (("fwd", timed[:2]), ("fwdbwd", timed)):
            flops = sum(2.0 * t["m"] * t["n"] * t["k"] for t in part)
            res.add("sgemm", cfg.name, "openblas", mode, "gflops",
                    flops / (sum(t["ms"] for t in part) * 1e6), "GFLOP/s")


# ---------------------------------------------------------------------------------------------
# Section 1: the MoE layer

def torch_runs(impls, compiled_forms):
    """(impl, compiled, key) for every PyTorch form: eager, and compiled where listed; key is
    the impl column of the results ('sortgather', 'sortgather_compile', ...)."""
    runs = [(impl, False, impl) for impl in impls]
    return runs + [(impl, True, impl + "_compile") for impl in impls if impl in compiled_forms]


def measure_layer_torch(ctx, plan, res, cfg):
    """Both PyTorch designs eager, and the ones of COMPILED_LAYER_FORMS under torch.compile,
    forward and forward+backward, each in its own process."""
    for mode in ("fwd", "fwdbwd"):
        for impl, compiled, key in torch_runs(("deepspeed", "sortgather"),
                                              configs.COMPILED_LAYER_FORMS):
            log(f"moe layer {cfg.name} torch {key} {mode}")
            argv = [ctx.python, os.path.join(HERE, "torch_moe.py"), "--impl", impl,
                    "--mode", mode, "--hidden", str(cfg.hidden), "--ffn", str(cfg.ffn),
                    "--experts", str(cfg.experts), "--tokens", str(cfg.tokens),
                    "--top-k", str(cfg.top_k), "--threads", str(ctx.threads),
                    "--warmup", str(plan.warmup), "--repeats", str(plan.repeats),
                    "--budget-s", str(plan.budget_s)]
            argv += ["--residual"] if cfg.residual else []
            argv += ["--compile"] if compiled else []
            try:
                r = run_json(argv, ctx.torch_env, TORCH_TIMEOUT_S)
            except RuntimeError as e:
                res.missing("moe_layer", cfg.name, key, mode,
                            ["tokens_per_s", "ms", "peak_rss_bytes"], str(e)[:200])
                continue
            res.add("moe_layer", cfg.name, key, mode, "tokens_per_s", r["tokens_per_s"], "tok/s")
            res.add("moe_layer", cfg.name, key, mode, "ms", r["ms"], "ms")
            res.add("moe_layer", cfg.name, key, mode, "peak_rss_bytes", r["peak_rss_bytes"], "B")
            if compiled:
                res.add("moe_layer", cfg.name, key, mode, "compile_s", r["compile_s"], "s")


def expert_flops(cfg, mode, dropped_fraction=0.0):
    """FLOPs the expert GEMMs need for the routed tokens: 2 GEMMs of 2*d*f per kept
    token-choice (moec computes no dropped or padded rows, so those are not counted)."""
    forward = cfg.tokens * cfg.top_k * (1.0 - dropped_fraction) * 2 * 2 * cfg.hidden * cfg.ffn
    return forward if mode == "fwd" else 3 * forward


def build_with_plan(ctx, res, config, text, stem):
    """Write text to STEM.moe, build it, record moec's planned memory; returns the executable."""
    source = os.path.join(ctx.work, stem + ".moe")
    with open(source, "w") as f:
        f.write(text)
    exe = os.path.join(ctx.work, stem)
    ctx.moec.build(source, exe)
    info = ctx.moec.info(exe)
    res.add("memory", config, "moec", "", "arena_bytes", info["arena_bytes"], "B")
    res.add("memory", config, "moec", "", "param_bytes", info.get("param_bytes"), "B")
    return exe


def measure_layer_moec(ctx, plan, res, cfg):
    """moec's MoE-layer time (sum of '.moe.' kernels) and expert-GEMM time per step."""
    metrics = ["tokens_per_s", "ms", "peak_rss_bytes", "expert_ms", "expert_gflops"]
    try:
        log(f"moe layer {cfg.name} moec build")
        exe = build_with_plan(ctx, res, cfg.name, moec_side.layer_model_text(cfg, configs.SEQ),
                              f"layer_{cfg.slug}")
    except MoecUnavailable as e:
        for mode in ("fwd", "fwdbwd"):
            res.missing("moe_layer", cfg.name, "moec", mode, metrics, str(e))
        return
    batch, steps = cfg.tokens // configs.SEQ, plan.repeats   # moec warms up on its own
    for mode in ("fwd", "fwdbwd"):
        log(f"moe layer {cfg.name} moec {mode}")
        try:
            r = ctx.moec.bench(exe, "grad" if mode == "fwdbwd" else "infer", batch, configs.SEQ, steps)
        except MoecUnavailable as e:
            res.missing("moe_layer", cfg.name, "moec", mode, metrics, str(e))
            continue
        layer_ms = moec_side.moe_layer_ms(r["kernels"])
        expert_ms = moec_side.expert_gemm_ms(r["kernels"])
        note = "" if layer_ms > 0 else "no '.moe.' kernels in the breakdown"
        res.add("moe_layer", cfg.name, "moec", mode, "tokens_per_s",
                cfg.tokens / (layer_ms / 1e3) if layer_ms > 0 else None, "tok/s", note)
        res.add("moe_layer", cfg.name, "moec", mode, "ms", layer_ms or None, "ms", note)
        res.add("moe_layer", cfg.name, "moec", mode, "peak_rss_bytes", r["peak_rss_bytes"], "B")
        res.add("moe_layer", cfg.name, "moec", mode, "expert_ms", expert_ms or None, "ms")
        res.add("moe_layer", cfg.name, "moec", mode, "expert_gflops",
                expert_flops(cfg, mode, r.get("dropped_fraction", 0.0)) / (expert_ms * 1e6) if expert_ms > 0 else None,
                "GFLOP/s")


def measure_torch_baseline(ctx, res):
    """Peak RSS of a process that only imports PyTorch: the floor under every PyTorch number."""
    argv = [ctx.python, "-c", "import torch, benchutil; print(benchutil.peak_rss_bytes())"]
    try:
        value = run_json(argv, ctx.torch_env, 120)
    except RuntimeError as e:
        res.missing("memory", "import torch only", "torch", "", ["peak_rss_bytes"], str(e))
        return
    res.add("memory", "import torch only", "torch", "", "peak_rss_bytes", value, "B")


def measure_layers(ctx, plan, res):
    measure_torch_baseline(ctx, res)
    for cfg in plan.layers:
        measure_layer_torch(ctx, plan, res, cfg)
        measure_layer_moec(ctx, plan, res, cfg)


# ---------------------------------------------------------------------------------------------
# Section 3: the whole training step

def model_args(m):
    """torch_model.py's / torch_decode.py's arguments for the model m."""
    return ["--vocab", str(m.vocab), "--context", str(m.context), "--layers", str(m.layers),
            "--hidden", str(m.hidden), "--heads", str(m.heads), "--ffn", str(m.ffn),
            "--moe-layers", ",".join(map(str, m.moe_layers)),
            "--experts", ",".join(map(str, m.experts))] + (["--residual"] if m.residual else [])


def measure_step_torch(ctx, plan, res, m, section="step"):
    """PyTorch eager, then under torch.compile: median time of forward, backward, clipping and
    AdamW (torch_model.py, sort/gather MoE, fused AdamW)."""
    for compiled, key in ((False, "torch"), (True, "torch_compile")):
        log(f"{section} {m.name} {key}")
        argv = [ctx.python, os.path.join(HERE, "torch_model.py")] + model_args(m)
        argv += ["--top-k", str(m.top_k), "--batch", str(m.batch), "--threads", str(ctx.threads),
                 "--warmup", str(plan.warmup), "--repeats", str(plan.repeats),
                 "--budget-s", str(plan.budget_s)]
        argv += ["--compile"] if compiled else []
        try:
            r = run_json(argv, ctx.torch_env, TORCH_TIMEOUT_S)
        except RuntimeError as e:
            res.missing(section, m.name, key, "train", ["tokens_per_s", "ms", "peak_rss_bytes"],
                        str(e)[:200])
            continue
        how = "torch.compile" if compiled else "eager"
        res.add(section, m.name, key, "train", "tokens_per_s", r["tokens_per_s"], "tok/s",
                f"PyTorch {how}, {r['impl']} MoE, {r.get('adamw', 'default')} AdamW")
        res.add(section, m.name, key, "train", "ms", r["ms"], "ms")
        res.add(section, m.name, key, "train", "peak_rss_bytes", r["peak_rss_bytes"], "B")
        res.add(section, m.name, key, "train", "params", r["params"], "")
        if compiled:
            res.add(section, m.name, key, "train", "compile_s", r["compile_s"], "s")


def measure_step_moec(ctx, plan, res, m, index, section="step", moec=None):
    """moec: EXE bench --train on the same model written as a .moe file."""
    metrics = ["tokens_per_s", "ms", "peak_rss_bytes"]
    log(f"{section} {m.name} moec")
    try:
        if index not in ctx.step_exes:
            ctx.step_exes[index] = build_with_plan(ctx, res, m.name, moec_side.whole_model_text(m),
                                                   f"model_{index}")
        r = (moec or ctx.moec).bench(ctx.step_exes[index], "train", m.batch, m.context, plan.repeats)
    except MoecUnavailable as e:
        res.missing(section, m.name, "moec", "train", metrics, str(e))
        return
    res.add(section, m.name, "moec", "train", "tokens_per_s", r["tokens_per_s"], "tok/s")
    res.add(section, m.name, "moec", "train", "ms", r["step_ms"], "ms")
    res.add(section, m.name, "moec", "train", "peak_rss_bytes", r["peak_rss_bytes"], "B")


def measure_steps(ctx, plan, res):
    for index, m in enumerate(plan.models):
        measure_step_torch(ctx, plan, res, m)
        measure_step_moec(ctx, plan, res, m, index)


class BusyCore:
    """Another program keeping one core busy (a shell loop at normal priority) while a
    measurement runs: a shared machine, the normal case for a login node or a CI runner."""

    def __enter__(self):
        self.proc = subprocess.Popen(["sh", "-c", "while :; do :; done"])
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def measure_steps_loaded(ctx, plan, res):
    """The whole training step again, each side with one core taken by another program, each
    started as a user starts it: PyTorch at its thread count of section 3 (its default, the
    physical cores, on a machine whose processors are all its cores), moec without a thread
    count, so that it chooses one (the processors not busy when it starts)."""
    for index, m in enumerate(plan.models):
        with BusyCore():
            measure_step_torch(ctx, plan, res, m, "step_loaded")
        with BusyCore():
            measure_step_moec(ctx, plan, res, m, index, "step_loaded", ctx.moec_own_threads)


# ---------------------------------------------------------------------------------------------
# Section 6: KV-cache decoding

DECODE_METRICS = ["latency_ms_median", "latency_ms_p90", "tokens_per_s", "threads"]


def decode_thread_counts(ctx):
    """PyTorch decodes at 1 thread and at the bench's count, and the better one is kept: one
    token's small GEMVs often run faster on one thread than split over two."""
    return sorted({1, ctx.threads})


def measure_decode_torch(ctx, plan, res, m):
    """torch_decode.py eager and compiled, at each thread count, all batch sizes per process;
    per batch size the thread count with the higher tokens/s is recorded."""
    batches = ",".join(str(b) for b in plan.decode_batches)
    for compiled, key in ((False, "torch"), (True, "torch_compile")):
        best = {}
        errors = []
        for threads in decode_thread_counts(ctx):
            log(f"decode {m.name} {key} threads {threads}")
            argv = [ctx.python, os.path.join(HERE, "torch_decode.py")] + model_args(m)
            argv += ["--batch", batches, "--prompt-len", str(plan.decode_prompt),
                     "--tokens", str(plan.decode_tokens), "--threads", str(threads)]
            argv += ["--compile"] if compiled else []
            try:
                r = run_json(argv, ctx.torch_env_for(threads), TORCH_TIMEOUT_S)
            except RuntimeError as e:
                errors.append(f"{threads} thread(s): {e}"[:200])
                continue
            for one in r["results"]:
                one["threads"] = threads
                b = one["batch"]
                if b not in best or one["tokens_per_s"] > best[b]["tokens_per_s"]:
                    best[b] = one
        for b in plan.decode_batches:
            mode = f"B{b}"
            if b not in best:
                res.missing("decode", m.name, key, mode, DECODE_METRICS,
                            "; ".join(errors) or "not measured")
                continue
            one = best[b]
            for metric in DECODE_METRICS:
                res.add("decode", m.name, key, mode, metric, one[metric],
                        {"tokens_per_s": "tok/s", "threads": ""}.get(metric, "ms"))
            if compiled:
                res.add("decode", m.name, key, mode, "compile_s", one["compile_s"], "s")


def measure_decode_moec(ctx, plan, res, m, index):
    """moec: EXE bench --decode at each batch size, at the bench's thread count."""
    try:
        log(f"decode {m.name} moec build")
        exe = build_with_plan(ctx, res, m.name, moec_side.whole_model_text(m), f"decode_{index}")
    except MoecUnavailable as e:
        for b in plan.decode_batches:
            res.missing("decode", m.name, "moec", f"B{b}", DECODE_METRICS, str(e))
        return
    for b in plan.decode_batches:
        log(f"decode {m.name} moec B{b}")
        try:
            r = ctx.moec.decode(exe, b, plan.decode_prompt, plan.decode_tokens)
        except MoecUnavailable as e:
            res.missing("decode", m.name, "moec", f"B{b}", DECODE_METRICS, str(e))
            continue
        for metric in DECODE_METRICS[:3]:
            res.add("decode", m.name, "moec", f"B{b}", metric, r[metric],
                    "tok/s" if metric == "tokens_per_s" else "ms")
        res.add("decode", m.name, "moec", f"B{b}", "threads", r.get("threads", ctx.threads), "")
        res.add("decode", m.name, "moec", f"B{b}", "peak_rss_bytes", r.get("peak_rss_bytes"), "B")


def measure_decode(ctx, plan, res):
    for index, m in enumerate(plan.decode_models):
        measure_decode_torch(ctx, plan, res, m)
        measure_decode_moec(ctx, plan, res, m, index)


# ---------------------------------------------------------------------------------------------
# Section 5: compile time

def models_in(source):
    """The names of the models a .moe file defines, in order (`model NAME` at a line start)."""
    with open(source, encoding="utf-8", errors="replace") as f:
        return re.findall(r"^\s*model\s+([A-Za-z_][A-Za-z0-9_]*)", f.read(), re.MULTILINE)


def machine_memory_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def training_state_bytes(stats):
    """Weights + gradients + optimizer state per rank from `moec stats --json`, else 16 B/param."""
    memory = stats.get("memory_per_rank") or {}
    total = sum(memory.get(k, 0) for k in ("weights", "grads", "optimizer"))
    return total or 16 * stats.get("params", {}).get("total", 0)


def model_to_compile(ctx, source):
    """(model, None) for the last model of the file that fits this machine, else (None, why).

    The last model is the file's default target. A model fits when its training state per
    rank (moec stats) fits in this machine's memory; bigger ones cannot train here.
    """
    why = "no model in the file"
    for model in reversed(models_in(source)):
        state = training_state_bytes(ctx.moec.stats(source, model) or {})
        if state <= machine_memory_bytes():
            return model, None
        why = f"skipped: no model fits ({model}: training state {state / 2**30:.0f} GiB)"
    return None, why


def measure_compile(ctx, plan, res):
    """moec build --model M --timings on each examples/*.moe (see model_to_compile)."""
    examples = sorted(glob.glob(os.path.join(ROOT, "examples", "*.moe")))
    if not examples:
        res.missing("compile", "examples/*.moe", "moec", "", ["wall_ms"], "no examples yet")
    for source in examples:
        model, why = model_to_compile(ctx, source)
        if model is None:
            res.missing("compile", os.path.relpath(source, ROOT), "moec", "", ["wall_ms"], why)
        else:
            compile_model(ctx, plan, res, source, model)


def compile_model(ctx, plan, res, source, model):
    name = f"{os.path.relpath(source, ROOT)} {model}"
    log(f"compile {name}")
    exe = os.path.join(ctx.work, f"compile_{model}")
    try:
        timings, wall_ms = ctx.moec.build(source, exe, timings=True,
                                          timeout_s=plan.compile_timeout_s, model=model)
    except MoecUnavailable as e:
        res.missing("compile", name, "moec", "", ["wall_ms"], str(e))
        return
    for key in ("front_ms", "lower_ms", "codegen_ms", "cc_ms"):
        res.add("compile", name, "moec", "", key, timings.get(key), "ms")
    res.add("compile", name, "moec", "", "wall_ms", wall_ms, "ms")


# ---------------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="scaled-down shapes, fewer repeats")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--moec", default=os.path.join(ROOT, "build-bench", "moec"))
    ap.add_argument("--sgemm", default=os.path.join(ROOT, "build-bench", "sgemm_rate"))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build-bench", "bench"))
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help="comma-separated subset of " + ",".join(SECTIONS))
    ap.add_argument("--torch-from", default="",
                    help="where this python's PyTorch comes from (run.sh says), for results.md")
    args = ap.parse_args(argv)
    args.only = set(args.only.split(","))
    if not args.only <= set(SECTIONS):
        ap.error(f"--only takes {', '.join(SECTIONS)}")
    return args


def main(argv):
    args = parse_args(argv)
    start = time.time()
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    ctx, plan, res = Context(args), configs.make_plan(args.quick), Results()
    describe_machine(ctx, plan, res)
    log(f"{res.machine['cpu']}, {ctx.threads} threads, moec: {res.machine['moec']}")
    if "sgemm" in args.only:
        measure_sgemm(ctx, plan, res)
    if "moe" in args.only:
        measure_layers(ctx, plan, res)
    if "step" in args.only:
        measure_steps(ctx, plan, res)
    if "loaded" in args.only:
        measure_steps_loaded(ctx, plan, res)
    if "decode" in args.only:
        measure_decode(ctx, plan, res)
    if "compile" in args.only:
        measure_compile(ctx, plan, res)
    paths = report.write_all(res, plan, args.out)
    log(f"wrote {', '.join(os.path.relpath(p) for p in paths)} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
