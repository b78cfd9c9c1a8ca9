#!/usr/bin/python3
"""gen_goldens.py - regenerates every golden under tests/reference/cases/ (deterministic).

    /usr/bin/python3 tests/reference/gen_goldens.py [CASE ...]

For each case of configs.py it writes cases/<name>/:
  model.moe            the model, from the config dict
  weights.safetensors  random F32 weights (the checkpoint the executable is given)
  tokens.bin           llm.c token file: 3 full batches of 4 x 16 windows + a partial batch
  eval.json            what `OUT eval --checkpoint weights.safetensors --data tokens.bin
                       --batch 4 --seq 16` must print
  grads.safetensors    what `OUT grad ... --out FILE --batch 4 --seq 16` must write
  detail.json          not compared: per-layer capacities, loads, drops, losses of every
                       batch, routing margins and an fp32 error estimate, for debugging
and for a distillation case (a "teacher" in configs.py) also
  teacher.safetensors  random F32 weights of the teacher (`--teacher`), drawn as the student's
                       from a seed of its own; eval.json then has kd_loss and the gradients
                       include weight * kd (the teacher in evaluation mode)

Weights are drawn so that every code path matters (biases and norm weights random,
matrices ~ N(0, 1/fan_in) so that activations sit in the non-linear range), then rounded
to fp32; the reference computes in float64 from the rounded values. A draw is rejected
and the seed advanced when any discrete decision is fragile: a top-k choice whose
probability gap to the next candidate is below MARGIN (relative), a relu input within
RELU_MARGIN of 0, or a float32 run of the same reference that routes differently (the
teacher's routing, in evaluation mode, is held to the same margins). Each
case also asserts what it claims to test (configs.EXPECT: tokens really drop, ...).
Then runs test_ref_selfcheck.py unless --no-selfcheck.
"""
import json
import os
import subprocess
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import blas_env  # noqa: E402,F401  (before torch: pins OpenBLAS's kernel, see blas_env.py)
import torch  # noqa: E402

import configs  # noqa: E402
import moe_ref  # noqa: E402
import st_io  # noqa: E402

MARGIN = 1e-5        # relative gap between consecutive ranked probs (first k+1 ranks)
RELU_MARGIN = 1e-6   # |pre-activation| for relu
MAX_TRIES = 64
FP32_WARN = 1e-6     # an fp32 run of the reference should land this close; we warn beyond


def draw(r, seed, n_tokens):
    """Random fp32-representable parameters (as float64) and tokens for resolved config r."""
    g = torch.Generator().manual_seed(seed)
    p = {}
    for name, shape, kind in moe_ref.param_specs(r):
        z = torch.randn(shape, generator=g, dtype=torch.float64)
        if kind == "embed":
            t = 0.3 * z
        elif kind == "weight":
            t = z / (shape[-2] ** 0.5)            # [in, out] or [E, in, out]: fan_in = in
        elif kind == "gate":
            t = 0.5 * z / (shape[-2] ** 0.5)      # softer: routing not too lopsided
        elif kind == "bias":
            t = 0.1 * z
        elif kind == "norm_w":
            t = 1.0 + 0.1 * z
        elif kind == "norm_b":
            t = 0.1 * z
        else:
            raise ValueError(kind)
        p[name] = t.to(torch.float32).to(torch.float64)
    tokens = torch.randint(0, r["vocab"], (n_tokens,), generator=g).tolist()
    return p, tokens


def routing_margin(info):
    """Smallest relative gap between consecutive ranked probabilities within the first
    k+1 ranks, over all tokens of all MoE layers in info."""
    m = float("inf")
    for l in info:
        ps, _ = torch.sort(l["probs"], dim=-1, descending=True)
        for j in range(min(l["k"], l["E"] - 1)):
            gap = (ps[:, j] - ps[:, j + 1]) / ps[:, j]
            m = min(m, float(gap.min()))
    return m


def layer_facts(info):
    return [dict(block=l["block"], experts=l["E"], capacity=l["C"], load_before_drop=l["load"],
                 dropped=l["dropped"], choices=l["choices"], l_aux=l["l_aux"], z=l["z"]) for l in info]


def same_routing(a, b):
    return all(torch.equal(x["choice"], y["choice"]) and torch.equal(x["keep"], y["keep"])
               for x, y in zip(a, b))


def rel_err(a, b):
    den = max(float(b.abs().max()), 1e-30)
    return float((a.double() - b.double()).abs().max()) / den


def teacher_seed(c, i):
    """The seed of the teacher's weights at attempt i (the student's is base + i)."""
    return (zlib.crc32((c["name"] + "/teacher").encode()) & 0x7FFFFFFF) + i


def teacher_infos(os_):
    """The teacher's routing facts of each forward dict in os_ (empty without a teacher)."""
    return [o["teacher"]["info"] for o in os_ if "teacher" in o]


def attempt(c, r, seed, n_tokens, tseed=None):
    """One draw. Returns (result dict, None) or (None, reason for rejecting it).
    tseed: the teacher's seed (a distillation case)."""
    p, tokens = draw(r, seed, n_tokens)
    tp = None
    if "distill" in r:
        assert r["distill"]["teacher"]["activation"] != "relu", "no relu margin check for teachers"
        tp, _ = draw(r["distill"]["teacher"], tseed, 0)
    B, T = configs.BATCH, configs.SEQ
    ev, per = moe_ref.evaluate(r, p, tokens, B, T, tp=tp)
    record = [] if r["activation"] == "relu" else None
    grads, go = moe_ref.gradients(r, p, tokens, B, T, record=record, tp=tp)
    infos = [o["info"] for o in per] + [go["info"]] + teacher_infos(per + [go])
    margin = min((routing_margin(i) for i in infos), default=float("inf"))
    if margin < MARGIN:
        return None, "routing margin %.2e" % margin
    if record is not None:
        rm = min(float(h.abs().min()) for h in record)
        if rm < RELU_MARGIN:
            return None, "relu margin %.2e" % rm
    exp = configs.EXPECT.get(c["name"], {})
    g_drop = sum(l["dropped"] for l in go["info"])
    if exp.get("grad_drops") and g_drop == 0:
        return None, "no token dropped in the grad batch"
    if exp.get("eval_drops") and ev["dropped_fraction"] == 0:
        return None, "no token dropped in eval"
    if exp.get("teacher_drops") and not any(l["dropped"] for i in teacher_infos(per) for l in i):
        return None, "the teacher drops no token"
    if exp.get("would_drop"):
        over = [max(l["load"]) > moe_ref.capacity(l["S"], l["E"], l["k"], r["cf"], r["min_capacity"])
                for l in go["info"]]
        if not any(over):
            return None, "dropless case would not drop with drop_tokens = true"
    # fp32 run of the same reference: same discrete decisions, and an error estimate
    p32 = {n: t.to(torch.float32) for n, t in p.items()}
    tp32 = None if tp is None else {n: t.to(torch.float32) for n, t in tp.items()}
    ev32, per32 = moe_ref.evaluate(r, p32, tokens, B, T, tp=tp32)
    grads32, go32 = moe_ref.gradients(r, p32, tokens, B, T, tp=tp32)
    if not all(same_routing(a["info"], b["info"]) for a, b in zip(per + [go], per32 + [go32])):
        return None, "float32 routes differently"
    if not all(same_routing(a, b) for a, b in zip(teacher_infos(per + [go]), teacher_infos(per32 + [go32]))):
        return None, "float32 routes the teacher differently"
    fp32 = {"eval": {k: abs(ev32[k] - ev[k]) / max(abs(ev[k]), 1e-30)
                     for k in ("lm_loss", "aux_loss", "z_loss", "kd_loss") if ev.get(k)},
            "grads": {n: rel_err(grads32[n], grads[n]) for n in grads}}
    return dict(p=p, tp=tp, tokens=tokens, ev=ev, per=per, grads=grads, go=go, margin=margin,
                fp32=fp32), None


def generate(c, outdir):
    r = moe_ref.resolve(c)
    B, T = configs.BATCH, configs.SEQ
    n_windows = configs.EVAL_BATCHES * B + configs.EXTRA_WINDOWS
    n_tokens = n_windows * T + 1 + 7          # +7: a tail shorter than a window, ignored
    base = zlib.crc32(c["name"].encode()) & 0x7FFFFFFF
    res, why = None, []
    for i in range(MAX_TRIES):
        tseed = teacher_seed(c, i) if "distill" in r else None
        res, reason = attempt(c, r, base + i, n_tokens, tseed)
        if res:
            seed = base + i
            break
        why.append(reason)
    if not res:
        raise SystemExit("%s: no acceptable draw in %d tries: %s" % (c["name"], MAX_TRIES, why[-5:]))
    assert len(moe_ref.windows(res["tokens"], B, T)) == configs.EVAL_BATCHES

    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "model.moe"), "w") as f:
        f.write(configs.moe_text(c))
    specs = moe_ref.param_specs(r)
    meta = {"generator": "tests/reference/gen_goldens.py", "case": c["name"], "seed": seed}
    st_io.write_safetensors(os.path.join(outdir, "weights.safetensors"),
                            [(n, s, res["p"][n].reshape(-1).tolist()) for n, s, _ in specs], meta)
    st_io.write_safetensors(os.path.join(outdir, "grads.safetensors"),
                            [(n, s, res["grads"][n].reshape(-1).tolist()) for n, s, _ in specs],
                            dict(meta, what="d(training loss of batch 0)/d(parameter)"))
    if res["tp"] is not None:
        di = r["distill"]
        tspecs = moe_ref.param_specs(di["teacher"])
        st_io.write_safetensors(os.path.join(outdir, "teacher.safetensors"),
                                [(n, s, res["tp"][n].reshape(-1).tolist()) for n, s, _ in tspecs],
                                {"generator": meta["generator"], "case": c["name"], "seed": tseed,
                                 "model": di["teacher_name"], "what": "the teacher's weights"})
    st_io.write_tokens(os.path.join(outdir, "tokens.bin"), res["tokens"])
    ev = res["ev"]
    keys = ["lm_loss", "aux_loss", "z_loss", "tokens", "dropped_fraction"] + (["kd_loss"] if "kd_loss" in ev else [])
    with open(os.path.join(outdir, "eval.json"), "w") as f:
        json.dump({k: ev[k] for k in keys}, f, indent=1)
        f.write("\n")
    go = res["go"]
    detail = {
        "case": c["name"], "doc": c["doc"], "seed": seed, "rejected_draws": why,
        "routing_margin_min": res["margin"],
        "grad_batch": {"loss": float(go["loss"]), "lm_loss": float(go["lm_loss"]),
                       "aux_sum": float(go["aux_sum"]), "z_sum": float(go["z_sum"]),
                       "moe_layers": layer_facts(go["info"])},
        "eval_batches": [{"lm_loss": float(o["lm_loss"]), "aux_sum": float(o["aux_sum"]),
                          "z_sum": float(o["z_sum"]), "moe_layers": layer_facts(o["info"])}
                         for o in res["per"]],
        "fp32_reference_rel_err": {"eval": res["fp32"]["eval"],
                                   "grads_max": max(res["fp32"]["grads"].values()),
                                   "grads": res["fp32"]["grads"]},
    }
    if res["tp"] is not None:
        di = r["distill"]
        detail["grad_batch"]["kd"] = float(go["kd"])
        for d, o in zip(detail["eval_batches"], res["per"]):
            d["kd"] = float(o["kd"])
        tf = lambda o: {"lm_loss": float(o["lm_loss"]), "aux_sum": float(o["aux_sum"]),
                        "z_sum": float(o["z_sum"]), "moe_layers": layer_facts(o["info"])}
        detail["teacher"] = {
            "model": di["teacher_name"], "seed": tseed, "temperature": di["tau"], "weight": di["weight"],
            "what": "the teacher in evaluation mode; its losses and routing count nowhere",
            "grad_batch": tf(go["teacher"]),
            "eval_batches": [tf(o["teacher"]) for o in res["per"]]}
    with open(os.path.join(outdir, "detail.json"), "w") as f:
        json.dump(detail, f, indent=1)
        f.write("\n")
    worst = max(res["fp32"]["grads"].items(), key=lambda kv: kv[1])
    sizes = sum(os.path.getsize(os.path.join(outdir, n)) for n in os.listdir(outdir))
    kd = "  kd %.6f" % ev["kd_loss"] if "kd_loss" in ev else ""
    print("%-16s seed %d (%d rejected)  lm %.6f aux %.6f z %.6f dropped %.4f%s  margin %.1e  "
          "fp32 grads %.1e (%s)  %d KB" % (c["name"], seed, len(why), ev["lm_loss"], ev["aux_loss"],
                                           ev["z_loss"], ev["dropped_fraction"], kd, res["margin"],
                                           worst[1], worst[0], sizes // 1024))
    if worst[1] > FP32_WARN:
        print("  warning: an fp32 run of the reference is %.1e from float64 on %s" % (worst[1], worst[0]))


def main(argv):
    torch.set_num_threads(1)
    args = [a for a in argv if not a.startswith("--")]
    names = args or [c["name"] for c in configs.CASES]
    for n in names:
        generate(configs.case(n), os.path.join(HERE, "cases", n))
    if "--no-selfcheck" not in argv:
        rc = subprocess.call([sys.executable, os.path.join(HERE, "test_ref_selfcheck.py")])
        if rc:
            raise SystemExit("selfcheck failed")


if __name__ == "__main__":
    main(sys.argv[1:])
