#!/usr/bin/python3
"""test_ref_selfcheck.py - checks of the reference itself (needs torch and numpy).

    /usr/bin/python3 tests/reference/test_ref_selfcheck.py      (gen_goldens.py runs it too)

Not a ctest: the C build must not depend on torch. What it checks:
  1. files      the committed goldens are what moe_ref computes from the committed weights
                and tokens (no stale golden, the safetensors/token writers round-trip).
  2. numpy      a second, independent forward in numpy written the way a C backend works
                (loops over heads and positions, kv head j // G per query head j, pairwise rope,
                an explicit [E, C] slot queue per expert) reproduces eval.json and every batch's routing of every case.
  3. dense      on `dense`, a plain GPT-2 forward with torch.nn.functional building blocks
                (layer_norm, gelu(approximate='tanh'), cross_entropy) gives the same loss.
  4. fd         autograd against float64 central finite differences: for every case and every
                tensor, the derivative along a random direction, routing held fixed.
  5. routing    capacity and queueing on hand-made examples with hand-worked answers.
  6. mistakes   plausible implementation mistakes move the goldens far beyond the test
                tolerance (1e-5) - by > 1e-4 - so the ctests would catch them.
  7. distill    the KD term: a hand-worked value, 0 when the teacher is the student, its
                gradient on the logits is tau (q_s - p_t) / N (autograd and float64 finite
                differences), the whole KD gradient vanishes with a teacher identical to the
                student; (1, 2, 4 and 6 cover the distillation cases too: the numpy forward
                runs the teacher and computes kd_loss, fd differentiates the loss with the KD term).
Exits 1 on the first failure.
"""
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import blas_env  # noqa: E402,F401  (before numpy and torch: pins OpenBLAS's kernel)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import configs  # noqa: E402
import moe_ref  # noqa: E402
import st_io  # noqa: E402

B, T = configs.BATCH, configs.SEQ


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        raise SystemExit(1)


def load_case(name):
    c = configs.case(name)
    r = moe_ref.resolve(c)
    d = os.path.join(HERE, "cases", name)
    w, _ = st_io.read_safetensors(os.path.join(d, "weights.safetensors"))
    g, _ = st_io.read_safetensors(os.path.join(d, "grads.safetensors"))
    p = {n: torch.tensor(a, dtype=torch.float64).reshape(s) for n, (s, a) in w.items()}
    grads = {n: torch.tensor(a, dtype=torch.float64).reshape(s) for n, (s, a) in g.items()}
    tokens = st_io.read_tokens(os.path.join(d, "tokens.bin"))
    ev = json.load(open(os.path.join(d, "eval.json")))
    detail = json.load(open(os.path.join(d, "detail.json")))
    return c, r, p, grads, tokens, ev, detail


def load_teacher(name):
    """The teacher's weights of a distillation case (float64), or None."""
    path = os.path.join(HERE, "cases", name, "teacher.safetensors")
    if not os.path.exists(path):
        return None
    w, _ = st_io.read_safetensors(path)
    return {n: torch.tensor(a, dtype=torch.float64).reshape(s) for n, (s, a) in w.items()}


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def trel(a, b):
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-30)

# ------------------------------------------------------------------ 1. files


def check_files(name):
    c, r, p, grads, tokens, ev, _ = load_case(name)
    tp = load_teacher(name)
    names = [n for n, _, _ in moe_ref.param_specs(r)]
    check(list(p) == names, "%s: weights tensor names/order" % name)
    check(list(grads) == names, "%s: grads tensor names/order" % name)
    check((tp is not None) == ("distill" in r) == ("kd_loss" in ev),
          "%s: teacher.safetensors and kd_loss iff a distill block" % name)
    if tp is not None:
        check(list(tp) == [n for n, _, _ in moe_ref.param_specs(r["distill"]["teacher"])],
              "%s: teacher tensor names/order" % name)
    e2, _ = moe_ref.evaluate(r, p, tokens, B, T, tp=tp)
    for k in ev:
        check(rel(e2[k], ev[k]) < 1e-12 if isinstance(ev[k], float) else e2[k] == ev[k],
              "%s: eval.json %s stale (%r vs %r)" % (name, k, e2[k], ev[k]))
    g2, _ = moe_ref.gradients(r, p, tokens, B, T, tp=tp)
    for n in names:
        check(torch.equal(g2[n].to(torch.float32).to(torch.float64), grads[n]),
              "%s: grads.safetensors %s stale" % (name, n))

# ------------------------------------------------------------------ 2. numpy, the C way

FLT_EPSILON = np.float64(np.finfo(np.float32).eps)
_erf = np.vectorize(math.erf)


def np_norm(r, x, P, prefix):
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        v = x[idx]
        if r["norm"] == "layernorm":
            mu = sum(v) / len(v)
            var = sum((vi - mu) ** 2 for vi in v) / len(v)
            out[idx] = (v - mu) / math.sqrt(var + 1e-5) * P[prefix + ".weight"]
            if r["bias"]:
                out[idx] += P[prefix + ".bias"]
        else:
            ms = sum(vi * vi for vi in v) / len(v)
            out[idx] = v / math.sqrt(ms + 1e-5) * P[prefix + ".weight"]
    return out


def np_act(r, h):
    a = r["activation"]
    if a == "gelu":
        return 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h * h * h)))
    if a == "gelu_erf":
        return 0.5 * h * (1 + _erf(h / math.sqrt(2)))
    if a == "relu":
        return np.where(h > 0, h, 0.0)
    f = h.shape[-1] // 2
    g, u = h[..., :f], h[..., f:]
    return g / (1 + np.exp(-g)) * u


def np_lin(x, P, name, e=None):
    """x W + b of the linear layer `name` (b only if the checkpoint has it); e: expert index."""
    w, b = P[name + ".weight"], P.get(name + ".bias")
    if e is not None:
        w, b = w[e], None if b is None else b[e]
    return x @ w if b is None else x @ w + b


def np_mlp(r, x, P, prefix, e=None):
    return np_lin(np_act(r, np_lin(x, P, prefix + ".c_fc", e)), P, prefix + ".c_proj", e)


def np_rope(v, pos):
    """v: [hd] of one head at position pos; rotates pairs (i, i + hd/2) by pos * theta_i."""
    hd = len(v)
    out = v.copy()
    for i in range(hd // 2):
        a = pos * 10000.0 ** (-2.0 * i / hd)
        x1, x2 = v[i], v[i + hd // 2]
        out[i] = x1 * math.cos(a) - x2 * math.sin(a)
        out[i + hd // 2] = x2 * math.cos(a) + x1 * math.sin(a)
    return out


def np_attn(r, x, P, h):
    Bn, Tn, d = x.shape
    H, KV = r["heads"], r["kv_heads"]
    hd = d // H
    G = H // KV                          # query heads per key/value head
    qkv = np_lin(x, P, h + ".attn.c_attn")                   # [q (d) | k (KV*hd) | v (KV*hd)]
    check(qkv.shape[-1] == d + 2 * KV * hd, "c_attn width")
    kb, vb = d, d + KV * hd              # where the k and v parts start
    y = np.zeros_like(x)
    for b in range(Bn):
        for j in range(H):
            g = j // G                   # the kv head of query head j (HF repeat_kv)
            q = [qkv[b, t, j * hd:(j + 1) * hd] for t in range(Tn)]
            k = [qkv[b, t, kb + g * hd:kb + (g + 1) * hd] for t in range(Tn)]
            v = [qkv[b, t, vb + g * hd:vb + (g + 1) * hd] for t in range(Tn)]
            if r["position"] == "rope":
                q = [np_rope(q[t], t) for t in range(Tn)]
                k = [np_rope(k[t], t) for t in range(Tn)]
            for t in range(Tn):
                s = np.array([q[t] @ k[u] / math.sqrt(hd) for u in range(t + 1)])
                w = np.exp(s - s.max())
                w /= w.sum()
                y[b, t, j * hd:(j + 1) * hd] = sum(w[u] * v[u] for u in range(t + 1))
    return np_lin(y, P, h + ".attn.c_proj")


def np_moe(r, x, P, h, training, facts):
    """x: [S, d]. Dispatch into per-expert slot buffers exactly as the spec describes."""
    S = x.shape[0]
    blk = int(h.split(".")[1])
    E, k = r["experts"][blk], r["top_k"]
    logits = x @ P[h + ".moe.gate.weight"]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    if r["drop_tokens"]:
        cf = r["cf"] if training else r["eval_cf"]
        cf_eff = np.float32(k * cf)
        C = max(int(np.ceil(np.float32(np.float32(S) / np.float32(E)) * cf_eff)), r["min_capacity"])
    else:
        C = None
    choice = [sorted(range(E), key=lambda e: (-probs[s, e], e))[:k] for s in range(S)]
    slots_used = [0] * E                    # slot index handed out so far (kept or not)
    buffers = [[] for _ in range(E)]        # buffer of expert e: (token, rank), in slot order
    kept = [[False] * k for _ in range(S)]
    for rank in range(k):                   # all rank-1 choices, then all rank-2, ...
        for s in range(S):                  # in token order
            e = choice[s][rank]
            if C is None or slots_used[e] < C:
                buffers[e].append((s, rank))
                kept[s][rank] = True
            slots_used[e] += 1
    weight = np.zeros((S, k))
    for s in range(S):
        g = [probs[s, choice[s][j]] if kept[s][j] else 0.0 for j in range(k)]
        if k == 1:
            weight[s, 0] = g[0]
        else:
            den = max(sum(g), FLT_EPSILON)
            weight[s] = [gi / den for gi in g]
    y = np.zeros_like(x)
    for e in range(E):
        for s, rank in buffers[e]:
            y[s] += weight[s, rank] * np_mlp(r, x[s], P, h + ".moe.experts", e)
    if r["residual"]:
        z = np_lin(x, P, h + ".moe.coefficient")
        a = np.exp(z - z.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        dense = np_mlp(r, x, P, h + ".moe.mlp")
        y = a[:, :1] * y + a[:, 1:] * dense
    f = np.zeros(E)                         # fraction of tokens choosing e (first / all k)
    for s in range(S):
        for j in range(1 if k <= 2 else k):
            f[choice[s][j]] += 1.0 / S
    l_aux = E * sum(probs[:, e].mean() * f[e] for e in range(E)) / (k if k > 2 else 1)
    m = logits.max(-1)
    lse = m + np.log(np.exp(logits - m[:, None]).sum(-1))
    facts.append(dict(capacity=C, dropped=sum(not kk for row in kept for kk in row),
                      load=[sum(1 for s in range(S) for e2 in choice[s] if e2 == e) for e in range(E)],
                      l_aux=l_aux, z=float((lse ** 2).mean())))
    return y


def np_forward(r, P, xs, ys, training):
    Bn, Tn = xs.shape
    x = np.array([[P["wte.weight"][xs[b, t]] + (P["wpe.weight"][t] if r["position"] == "learned" else 0)
                   for t in range(Tn)] for b in range(Bn)])
    facts = []
    for i in range(r["layers"]):
        h = "h.%d" % i
        x = x + np_attn(r, np_norm(r, x, P, h + ".ln_1"), P, h)
        a = np_norm(r, x, P, h + ".ln_2")
        if i in r["moe_blocks"]:
            x = x + np_moe(r, a.reshape(Bn * Tn, -1), P, h, training, facts).reshape(Bn, Tn, -1)
        else:
            x = x + np_mlp(r, a, P, h + ".mlp")
    x = np_norm(r, x, P, "ln_f")
    head = P["wte.weight"].T if r["tie"] else P["lm_head.weight"]
    ce = 0.0
    logits = x @ head
    for b in range(Bn):
        for t in range(Tn):
            z = logits[b, t]
            m = z.max()
            ce += m + math.log(np.exp(z - m).sum()) - z[ys[b, t]]
    return ce / (Bn * Tn), facts, logits


def np_kd(zs, zt, tau):
    """tau^2 * mean over tokens of sum_v p_t (log p_t - log q_s), token by token."""
    tot, n = 0.0, 0
    for idx in np.ndindex(zs.shape[:-1]):
        a, b = zt[idx] / tau, zs[idx] / tau
        la = a - a.max() - math.log(np.exp(a - a.max()).sum())
        lb = b - b.max() - math.log(np.exp(b - b.max()).sum())
        tot += sum(math.exp(la[v]) * (la[v] - lb[v]) for v in range(len(a)))
        n += 1
    return tau * tau * tot / n


def check_numpy(name):
    c, r, p, _, tokens, ev, detail = load_case(name)
    P = {n: t.numpy() for n, t in p.items()}
    tp = load_teacher(name)
    Pt = None if tp is None else {n: t.numpy() for n, t in tp.items()}
    kd = 0.0
    # np_lin adds a bias wherever the checkpoint has one: the checkpoint has them all or none
    check(any(n.endswith(".bias") for n in P) == r["bias"], "%s: biases present iff bias = true" % name)
    lm = aux = z = 0.0
    dropped = choices = 0
    batches = moe_ref.windows(tokens, B, T)
    for bi, (xs, ys) in enumerate(batches):
        loss, facts, zs = np_forward(r, P, xs.numpy(), ys.numpy(), training=False)
        if Pt is not None:       # the teacher: evaluation mode; its routing counts nowhere
            _, tfacts, zt = np_forward(r["distill"]["teacher"], Pt, xs.numpy(), ys.numpy(), training=False)
            kd += np_kd(zs, zt, r["distill"]["tau"])
            for f, want in zip(tfacts, detail["teacher"]["eval_batches"][bi]["moe_layers"]):
                check(f["capacity"] == want["capacity"] and f["dropped"] == want["dropped"]
                      and f["load"] == want["load_before_drop"], "%s: numpy teacher routing, batch %d" % (name, bi))
        lm += loss
        aux += sum(f["l_aux"] for f in facts)
        z += sum(f["z"] for f in facts)
        dropped += sum(f["dropped"] for f in facts)
        choices += len(facts) * B * T * r.get("top_k", 1)
        for f, want in zip(facts, detail["eval_batches"][bi]["moe_layers"]):
            check(f["capacity"] == want["capacity"] and f["dropped"] == want["dropped"]
                  and f["load"] == want["load_before_drop"], "%s: numpy routing of eval batch %d" % (name, bi))
    # the grad batch routes with the training capacity
    xs, ys = batches[0]
    _, facts, _ = np_forward(r, P, xs.numpy(), ys.numpy(), training=True)
    for f, want in zip(facts, detail["grad_batch"]["moe_layers"]):
        check(f["capacity"] == want["capacity"] and f["dropped"] == want["dropped"],
              "%s: numpy routing of the grad batch" % name)
    n = len(batches)
    got = dict(lm_loss=lm / n, aux_loss=aux / n, z_loss=z / n, tokens=n * B * T,
               dropped_fraction=dropped / choices if choices else 0.0, kd_loss=kd / n)
    for k in ev:
        check(rel(got[k], ev[k]) < 1e-10 or got[k] == ev[k],
              "%s: numpy %s = %r, golden %r" % (name, k, got[k], ev[k]))

# ------------------------------------------------------------------ 3. dense GPT-2 with torch.nn.functional


def check_dense_functional():
    c, r, p, _, tokens, ev, _ = load_case("dense")
    d, H = r["hidden"], r["heads"]
    lm = 0.0
    for xs, ys in moe_ref.windows(tokens, B, T):
        x = F.embedding(xs, p["wte.weight"]) + F.embedding(torch.arange(T), p["wpe.weight"])
        for i in range(r["layers"]):
            h = "h.%d." % i
            a = F.layer_norm(x, (d,), p[h + "ln_1.weight"], p[h + "ln_1.bias"], 1e-5)
            q, k, v = F.linear(a, p[h + "attn.c_attn.weight"].t(), p[h + "attn.c_attn.bias"]).split(d, -1)
            q, k, v = (t.view(B, T, H, d // H).permute(0, 2, 1, 3) for t in (q, k, v))
            s = torch.einsum("bhtc,bhuc->bhtu", q, k) * (d // H) ** -0.5
            s = s + torch.triu(torch.full((T, T), float("-inf"), dtype=s.dtype), 1)
            o = torch.einsum("bhtu,bhuc->bhtc", F.softmax(s, -1), v).permute(0, 2, 1, 3).reshape(B, T, d)
            x = x + F.linear(o, p[h + "attn.c_proj.weight"].t(), p[h + "attn.c_proj.bias"])
            a = F.layer_norm(x, (d,), p[h + "ln_2.weight"], p[h + "ln_2.bias"], 1e-5)
            m = F.gelu(F.linear(a, p[h + "mlp.c_fc.weight"].t(), p[h + "mlp.c_fc.bias"]), approximate="tanh")
            x = x + F.linear(m, p[h + "mlp.c_proj.weight"].t(), p[h + "mlp.c_proj.bias"])
        x = F.layer_norm(x, (d,), p["ln_f.weight"], p["ln_f.bias"], 1e-5)
        lm += float(F.cross_entropy(F.linear(x, p["wte.weight"]).reshape(-1, r["vocab"]), ys.reshape(-1)))
    lm /= configs.EVAL_BATCHES
    check(rel(lm, ev["lm_loss"]) < 1e-12, "dense: functional GPT-2 %r vs golden %r" % (lm, ev["lm_loss"]))

# ------------------------------------------------------------------ 4. finite differences


def check_fd(name, seed=7):
    c, r, p, _, tokens, _, _ = load_case(name)
    tp = load_teacher(name)        # a student: the loss has weight * kd (the teacher fixed)
    xs, ys = moe_ref.windows(tokens, B, T)[0]
    grads, o0 = moe_ref.gradients(r, p, tokens, B, T, tp=tp)
    route0 = [(l["choice"], l["keep"]) for l in o0["info"]]
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for n in p:
        v = torch.randn(p[n].shape, generator=g, dtype=torch.float64)
        eps = 1e-5 * max(float(p[n].abs().max()), 1e-2) / float(v.abs().max())
        ls = []
        with torch.no_grad():
            for sgn in (1, -1):
                q = dict(p)
                q[n] = p[n] + sgn * eps * v
                o = moe_ref.forward(r, q, xs, ys, training=True, tp=tp)
                check(all(torch.equal(a[0], l["choice"]) and torch.equal(a[1], l["keep"])
                          for a, l in zip(route0, o["info"])), "%s: fd step changed routing (%s)" % (name, n))
                ls.append(float(o["loss"]))
        fd = (ls[0] - ls[1]) / (2 * eps)
        an = float((grads[n] * v).sum())
        # relative to |g| |v| (the bound of |an|), so that a tiny directional derivative
        # does not turn the fd rounding noise (~1e-16 * loss / eps) into a failure
        err = abs(fd - an) / max(float(grads[n].norm() * v.norm()), 1e-12)
        worst = max(worst, err)
        check(err < 1e-7, "%s: d/d%s along v: autograd %.10e, fd %.10e" % (name, n, an, fd))
    return worst

# ------------------------------------------------------------------ 5. hand-made routing


def check_routing():
    cap = moe_ref.capacity
    check(cap(64, 4, 1, 1.0, 4) == 16 and cap(64, 4, 1, 0.75, 4) == 12, "capacity top-1")
    check(cap(64, 4, 2, 0.75, 4) == 24 and cap(64, 4, 2, 1.0, 4) == 32, "capacity top-2: cf_eff = 2 cf")
    check(cap(64, 8, 4, 1.0, 4) == 32 and cap(64, 8, 4, 1.25, 4) == 40, "capacity top-4: cf_eff = 4 cf")
    check(cap(64, 8, 1, 0.5, 6) == 6 and cap(64, 4, 1, 0.25, 1) == 4, "capacity min_capacity")
    # fp32 matters: 25/2 = 12.5, 12.5 * 1.2f = 15.0000006 in fp32 -> 16 (double: exactly 15)
    check(cap(25, 2, 1, 1.2, 0) == 16, "capacity is computed in fp32")

    # top-1, S=6, E=3, C=2. choices by argmax: tokens 0..5 -> 0, 0, 1, 0, 0, 2
    L = torch.tensor([[2., 0, 0], [3, 1, 0], [0, 2, 1], [1, 0, 0], [4, 0, 1], [0, 0, 1]], dtype=torch.float64)
    rt = moe_ref.route(L, 1, 2)
    check(rt["choice"][:, 0].tolist() == [0, 0, 1, 0, 0, 2], "top-1 choice")
    check(rt["keep"][:, 0].tolist() == [True, True, True, False, False, True], "top-1 keeps lowest token indices")
    check(rt["dropped"] == 2 and rt["load"] == [4, 1, 1], "top-1 drop count and load before dropping")
    pr = L.softmax(-1)
    want = torch.zeros(6, 3, dtype=torch.float64)
    for s, e in [(0, 0), (1, 0), (2, 1), (5, 2)]:
        want[s, e] = pr[s, e]                      # unnormalised probability
    check(torch.allclose(rt["combine"], want, rtol=0, atol=1e-15), "top-1 weights = probs, 0 when dropped")
    me = pr.mean(0)
    check(abs(float(rt["l_aux"]) - 3 * float((me * torch.tensor([4, 1, 1.]) / 6).sum())) < 1e-15, "top-1 l_aux")
    rt = moe_ref.route(L, 1, None)
    check(rt["dropped"] == 0 and bool(rt["keep"].all()), "dropless keeps everything")

    # top-2, S=4, E=3, C=3. (e1, e2) per token: (0,1) (0,2) (0,1) (1,0)
    # slots: expert 0 gets first choices of tokens 0,1,2 -> slots 0,1,2; then token 3's second
    #   choice -> slot 3 >= C: dropped. expert 1: token 3 first (slot 0), then second choices of
    #   tokens 0, 2 (slots 1, 2). expert 2: token 1's second choice (slot 0).
    L = torch.tensor([[3., 2, 0], [3, 0, 1], [2, 1, 0], [1, 2, 0]], dtype=torch.float64)
    rt = moe_ref.route(L, 2, 3)
    check(rt["choice"].tolist() == [[0, 1], [0, 2], [0, 1], [1, 0]], "top-2 choices")
    check(rt["keep"].tolist() == [[True, True], [True, True], [True, True], [True, False]],
          "top-2: first choices queue before second choices")
    pr = L.softmax(-1)
    check(abs(float(rt["combine"][3, 1]) - 1.0) < 1e-15 and float(rt["combine"][3, 0]) == 0.0,
          "top-2: one surviving choice gets weight 1")
    g1, g2 = pr[0, 0], pr[0, 1]
    check(abs(float(rt["combine"][0, 0] - g1 / (g1 + g2))) < 1e-15, "top-2 renormalised weights")
    me = pr.mean(0)
    check(abs(float(rt["l_aux"]) - 3 * float((me * torch.tensor([3, 1, 0.]) / 4).sum())) < 1e-15,
          "top-2 l_aux counts first choices only")
    # C = 1: expert 0 keeps token 0 only; token 1 loses both (second choice 2 is free: kept)
    rt = moe_ref.route(L, 2, 1)
    check(rt["keep"].tolist() == [[True, False], [False, True], [False, False], [True, False]],
          "top-2 with C=1")
    check(float(rt["combine"][2].abs().sum()) == 0.0, "top-2: no surviving choice gets 0")

    # top-3 of 4, S=2, C=1: ranks queue rank by rank
    L = torch.tensor([[4., 3, 2, 0], [3, 4, 0, 2]], dtype=torch.float64)
    rt = moe_ref.route(L, 3, 1)
    check(rt["choice"].tolist() == [[0, 1, 2], [1, 0, 3]], "top-3 choices")
    # rank 1: t0->0 (slot 0), t1->1 (slot 0); rank 2: t0->1 (slot 1, drop), t1->0 (slot 1, drop);
    # rank 3: t0->2 (slot 0), t1->3 (slot 0)
    check(rt["keep"].tolist() == [[True, False, True], [True, False, True]], "top-3 queueing")
    pr = L.softmax(-1)
    ce = torch.tensor([2, 2, 1, 1.]) / 2            # k-hot mean
    check(abs(float(rt["l_aux"]) - 4 * float((pr.mean(0) * ce).sum()) / 3) < 1e-15, "top-k l_aux / k")
    z = float((torch.logsumexp(L, -1) ** 2).mean())
    check(abs(float(rt["z"]) - z) < 1e-13, "z-loss")

    # ties go to the lower expert index
    L = torch.tensor([[1., 1, 0], [0, 2, 2]], dtype=torch.float64)
    check(moe_ref.route(L, 2, None)["choice"].tolist() == [[0, 1], [1, 2]], "ties to the lower index")

# ------------------------------------------------------------------ 6. plausible mistakes


def perturbed(name, patch):
    """Max relative change of the goldens when the reference is patched with a mistake."""
    c, r, p, grads, tokens, ev, _ = load_case(name)
    tp = load_teacher(name)
    saved = {k: getattr(moe_ref, k) for k in patch if hasattr(moe_ref, k)}
    r2 = dict(r)
    p = dict(p)
    try:
        for k, v in patch.items():
            if k.startswith("r.distill."):
                r2["distill"] = dict(r2["distill"], **{k[10:]: v})
            elif k.startswith("r."):
                r2[k[2:]] = v
            elif k.startswith("p."):
                p[k[2:]] = v(p[k[2:]])
            else:
                setattr(moe_ref, k, v)
        e2, _ = moe_ref.evaluate(r2, p, tokens, B, T, tp=tp)
        g2, _ = moe_ref.gradients(r2, p, tokens, B, T, tp=tp)
    finally:
        for k, v in saved.items():
            setattr(moe_ref, k, v)
    d_eval = max(rel(e2[k], ev[k]) for k in ("lm_loss", "aux_loss", "z_loss", "dropped_fraction", "kd_loss")
                 if ev.get(k))
    d_grad = max(trel(g2[n], grads[n]) for n in grads) if not any(k.startswith("p.") for k in patch) else 0.0
    return d_eval, d_grad


def _route_variant(kind):
    base = moe_ref.route

    def route(logits, k, C):
        S, E = logits.shape
        if kind == "megatron_order":        # tokens in [T, B] order: s' = t*B + b
            perm = torch.arange(S).view(B, T).t().reshape(-1)
            inv = torch.argsort(perm)
            rt = base(logits[perm], k, C)
            for key in ("combine", "choice", "keep", "probs"):
                rt[key] = rt[key][inv]
            return rt
        if kind == "keep_highest":         # top-1 overflow keeps the highest token indices
            rt = base(logits.flip(0), k, C)
            for key in ("combine", "choice", "keep", "probs"):
                rt[key] = rt[key].flip(0)
            return rt
        if kind == "token_major":          # top-2 queue: both choices of token 0, then token 1, ...
            probs = logits.softmax(-1)
            _, order = torch.sort(probs.detach(), dim=-1, descending=True, stable=True)
            choice = order[:, :k]
            used = [0] * E
            keep = torch.zeros(S, k, dtype=torch.bool)
            for s in range(S):
                for j in range(k):
                    e = int(choice[s, j])
                    keep[s, j] = C is None or used[e] < C
                    used[e] += 1
            g = probs.gather(1, choice) * keep
            g = g / torch.clamp(g.sum(-1, keepdim=True), min=moe_ref.FLT_EPSILON)
            rt = base(logits, k, C)
            rt.update(combine=torch.zeros_like(probs).scatter_add(1, choice, g), keep=keep,
                      dropped=int((~keep).sum()))
            return rt
        if kind == "norm_all_chosen":      # renormalise over all k choices, then drop
            rt = base(logits, k, None)
            rt2 = base(logits, k, C)
            drop = torch.zeros_like(rt["combine"]).scatter_add(
                1, rt2["choice"], (~rt2["keep"]).to(logits.dtype))
            rt2["combine"] = rt["combine"] * (1 - drop)
            return rt2
        if kind == "aux_all_k":            # top-k l_aux without dividing by k
            rt = base(logits, k, C)
            rt["l_aux"] = rt["l_aux"] * k
            return rt
        raise ValueError(kind)
    return route


def rope_interleaved(x):
    """The GPT-NeoX / Meta-checkpoint pairing (2i, 2i+1) instead of HF's (i, i + hd/2)."""
    T, hd = x.shape[2], x.shape[3]
    inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = (torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]).repeat_interleave(2, -1)
    rot = torch.stack([-x[..., 1::2], x[..., 0::2]], -1).reshape(x.shape)
    return x * torch.cos(ang) + rot * torch.sin(ang)


def repeat_kv_tiled(x, G):
    """The wrong grouping map: query head h reads kv head h % kv_heads (x.repeat, tiling the kv
    heads) instead of h // G (repeat_interleave, HF repeat_kv)."""
    return x.repeat(1, G, 1, 1)


_kd_term = moe_ref.kd_term
_teacher_forward = moe_ref.teacher_forward
_evaluate = moe_ref.evaluate


def _kd_variant(kind):
    """Plausible ways to get the KD term wrong (moe_ref.kd_term is the right one)."""
    def kd(zs, zt, tau):
        if kind == "no_tau2":             # KL at temperature tau without the tau^2 factor
            return _kd_term(zs, zt, tau) / (tau * tau)
        if kind == "reverse":             # KL(q_s || p_t)
            return _kd_term(zt, zs, tau)
        if kind == "student_tau_only":    # the teacher's softmax at temperature 1
            return _kd_term(zs, zt * tau, tau)
        if kind == "vocab_mean":          # F.kl_div(reduction='mean'): also averaged over the vocabulary
            return _kd_term(zs, zt, tau) / zs.shape[-1]
        if kind == "batchmean":           # F.kl_div(reduction='batchmean') on [B, T, V]: / B, not / (B*T)
            return _kd_term(zs, zt, tau) * zs.shape[1]
        raise ValueError(kind)
    return kd


def _teacher_training(r, tp, x_tok, y_tok):
    """The teacher run in training mode (its training capacity factor)."""
    with torch.no_grad():
        o = moe_ref.forward(r["distill"]["teacher"], tp, x_tok, y_tok, training=True)
    o["logits"] = o["logits"].detach()
    return o


def _eval_variant(kind):
    def ev(r, p, tokens, Bn, Tn, tp=None):
        res, per = _evaluate(r, p, tokens, Bn, Tn, tp=tp)
        if kind == "kd_weighted":         # kd_loss reported after distill.weight
            res["kd_loss"] *= r["distill"]["weight"]
        if kind == "teacher_aux":         # the teacher's l_aux counted in aux_loss
            res["aux_loss"] += sum(float(o["teacher"]["aux_sum"]) for o in per) / len(per)
        return res, per
    return ev


MISTAKES = [
    ("dense", "gelu tanh -> erf", {"r.activation": "gelu_erf"}),
    ("pyramid", "gelu erf -> tanh", {"r.activation": "gelu"}),
    ("modern", "rmsnorm eps 1e-6", {"NORM_EPS": 1e-6}),
    ("modern", "rope pairs (2i, 2i+1)", {"rope": rope_interleaved}),
    ("top1_drops", "eval with the training cf", {"r.eval_cf": 1.0}),
    ("top1_drops", "grad with the eval cf", {"r.cf": 0.75}),
    ("top1_drops", "token order [T, B]", {"route": _route_variant("megatron_order")}),
    ("top1_drops", "overflow keeps highest indices", {"route": _route_variant("keep_highest")}),
    ("top2_drops", "token-major queueing", {"route": _route_variant("token_major")}),
    ("top2_drops", "renormalise before dropping", {"route": _route_variant("norm_all_chosen")}),
    ("topk4", "l_aux not divided by k", {"route": _route_variant("aux_all_k")}),
    ("dropless", "drop_tokens ignored", {"r.drop_tokens": True}),
    ("zloss", "no z-loss in the training loss", {"r.z_loss": 0.0}),
    ("residual", "coefficient halves swapped", {"p.h.1.moe.coefficient.weight": lambda t: t.flip(-1),
                                                "p.h.1.moe.coefficient.bias": lambda t: t.flip(-1)}),
    ("modern", "swiglu halves swapped", {"p.h.0.moe.experts.c_fc.weight": lambda t: t.roll(32, -1),
                                         "p.h.0.moe.experts.c_fc.bias": lambda t: t.roll(32, -1)}),
    ("explicit_layers", "relu -> gelu", {"r.activation": "gelu"}),
    ("gqa", "kv head h % kv_heads", {"repeat_kv": repeat_kv_tiled}),
    ("mixtral", "kv head h % kv_heads", {"repeat_kv": repeat_kv_tiled}),
    ("nobias", "bias-free layernorm as rmsnorm", {"r.norm": "rmsnorm"}),
    ("kd_top1_residual", "KD without tau^2 (tau 2)", {"kd_term": _kd_variant("no_tau2")}),
    ("kd_top2_pyramid", "KD without tau^2 (tau 0.5)", {"kd_term": _kd_variant("no_tau2")}),
    ("kd_top1_residual", "KL(q_s || p_t)", {"kd_term": _kd_variant("reverse")}),
    ("kd_top2_pyramid", "KL(q_s || p_t)", {"kd_term": _kd_variant("reverse")}),
    ("kd_top2_pyramid", "teacher softmax at tau 1", {"kd_term": _kd_variant("student_tau_only")}),
    ("kd_top1_residual", "KL averaged over the vocabulary", {"kd_term": _kd_variant("vocab_mean")}),
    ("kd_top1_residual", "KL divided by B, not B*T", {"kd_term": _kd_variant("batchmean")}),
    ("kd_top1_residual", "teacher in training mode", {"teacher_forward": _teacher_training}),
    ("kd_top2_pyramid", "teacher in training mode", {"teacher_forward": _teacher_training}),
    ("kd_top1_residual", "kd_loss after weight", {"evaluate": _eval_variant("kd_weighted")}),
    ("kd_top1_residual", "teacher's l_aux in aux_loss", {"evaluate": _eval_variant("teacher_aux")}),
    ("kd_top1_residual", "no KD term in grad", {"r.distill.weight": 0.0}),
    ("kd_top2_pyramid", "no KD term in grad", {"r.distill.weight": 0.0}),
]


def check_mistakes():
    for m in MISTAKES:
        name, what, patch = m
        d_eval, d_grad = perturbed(name, patch)
        print("  %-16s %-32s eval %.1e  grads %.1e" % (name, what, d_eval, d_grad))
        check(max(d_eval, d_grad) > 1e-4, "%s: mistake '%s' is not caught by 10x the tolerance" % (name, what))


# ------------------------------------------------------------------ 7. distillation


def check_distill():
    kd = moe_ref.kd_term
    # a hand-worked value: one token, V = 3, tau = 2
    zs, zt = [0.0, 1.0, 2.0], [2.0, 0.0, 1.0]
    a = [v / 2 for v in zt]
    b = [v / 2 for v in zs]
    pt = [math.exp(v) / sum(math.exp(u) for u in a) for v in a]
    qs = [math.exp(v) / sum(math.exp(u) for u in b) for v in b]
    want = 4 * sum(p * math.log(p / q) for p, q in zip(pt, qs))
    got = float(kd(torch.tensor([zs], dtype=torch.float64), torch.tensor([zt], dtype=torch.float64), 2.0))
    check(abs(got - want) < 1e-15 and want > 0.1, "kd: hand-worked value %r vs %r" % (got, want))

    # d kd / d z_s = tau^2 * (q_s - p_t) / tau / N = tau (q_s - p_t) / N, any leading shape
    g = torch.Generator().manual_seed(3)
    for tau in (0.5, 1.0, 2.0):
        zs = torch.randn(2, 3, 7, generator=g, dtype=torch.float64).requires_grad_(True)
        zt = 2 * torch.randn(2, 3, 7, generator=g, dtype=torch.float64)
        k = kd(zs, zt, tau)
        k.backward()
        want = tau * ((zs / tau).softmax(-1) - (zt / tau).softmax(-1)).detach() / 6
        check(float((zs.grad - want).abs().max()) < 1e-15, "kd: gradient on the logits, tau %g" % tau)
        # and float64 central differences along a random direction
        v = torch.randn(2, 3, 7, generator=g, dtype=torch.float64)
        eps = 1e-6
        with torch.no_grad():
            fd = (float(kd(zs + eps * v, zt, tau)) - float(kd(zs - eps * v, zt, tau))) / (2 * eps)
        check(abs(fd - float((want * v).sum())) < 1e-9, "kd: finite differences on the logits, tau %g" % tau)
        check(float(kd(zt, zt, tau)) == 0.0 and float(k) > 0, "kd: 0 iff q_s = p_t, > 0 otherwise")

    # a student distilled from itself (same config and weights): kd_loss is exactly 0 at any
    # tau (eval runs both in evaluation mode); in grad the student trains with its training cf,
    # so with cf = eval_cf the KD gradient vanishes and grad equals the plain gradient
    c, r, p, _, tokens, _, _ = load_case("kd_top1_residual")
    plain = {k: v for k, v in r.items() if k != "distill"}
    for tau in (1.0, 2.0):
        self_r = dict(plain, distill=dict(r["distill"], teacher=plain, tau=tau))
        ev, _ = moe_ref.evaluate(self_r, p, tokens, B, T, tp=p)
        check(ev["kd_loss"] == 0.0, "kd: a student distilled from itself has kd_loss 0 (tau %g): %r"
              % (tau, ev["kd_loss"]))
        same = dict(plain, cf=plain["eval_cf"])
        self_r = dict(same, distill=dict(r["distill"], teacher=same, tau=tau))
        g_kd, o = moe_ref.gradients(self_r, p, tokens, B, T, tp=p)
        g0, _ = moe_ref.gradients(same, p, tokens, B, T)
        check(abs(float(o["kd"])) < 1e-14 and max(trel(g_kd[n], g0[n]) for n in g0) < 1e-12,
              "kd: with the student as its own teacher the KD gradient vanishes (tau %g)" % tau)
    # the other way round: the KD term carries real weight in the goldens of both cases
    for name in ("kd_top1_residual", "kd_top2_pyramid"):
        c, r, p, grads, tokens, ev, _ = load_case(name)
        g0, _ = moe_ref.gradients(r, p, tokens, B, T)
        d = max(trel(g0[n], grads[n]) for n in grads)
        check(d > 1e-2, "%s: the KD term moves the gradients by only %.1e" % (name, d))


def main():
    torch.set_num_threads(1)
    names = [c["name"] for c in configs.CASES]
    for n in names:
        check_files(n)
    print("ok  1. committed goldens match the reference")
    for n in names:
        check_numpy(n)
    print("ok  2. independent numpy forward (explicit slot queues) reproduces eval.json and routing")
    check_dense_functional()
    print("ok  3. dense: torch.nn.functional GPT-2 gives the golden loss")
    worst = max(check_fd(n) for n in names)
    print("ok  4. autograd = finite differences on every tensor of every case (worst %.1e)" % worst)
    check_routing()
    print("ok  5. hand-made capacity / queueing / weight / l_aux examples")
    check_mistakes()
    print("ok  6. plausible mistakes move the goldens by > 1e-4 (10x the tolerance)")
    check_distill()
    print("ok  7. KD term: hand-worked value, logits gradient tau (q - p) / N = autograd = fd, "
          "0 with the student as its own teacher")
    return 0


if __name__ == "__main__":
    sys.exit(main())
