"""moe_ref.py - an independent PyTorch reference of /work/shared/spec/moe-semantics.md.

Written from the specs alone (moe-semantics.md for the numerics, moe-language.md section 7
for parameter names and layouts), for golden tests of the compiled executables. It runs the
forward pass of one batch in evaluation or training mode, without noise, random token
selection or second-expert sampling (what `OUT eval` and `OUT grad` do), and autograd gives
the gradients. It computes in float64 by default: it is the reference the fp32 C code is
held to. float32 is supported to estimate how far an fp32 implementation may land from it.

Distillation (moe-semantics.md section 5, moe-language.md 4.5 and `--teacher` in section 6):
a case with a `distill` block resolves its teacher too (r["distill"]); given the teacher's
weights, `forward` runs the teacher's forward in evaluation mode without gradients (its own
config and eval_capacity_factor, S = B*T), and adds
  kd = tau^2 * mean over tokens of sum over vocab p_t (log p_t - log q_s),
  p_t = softmax(z_teacher / tau), q_s = softmax(z_student / tau),
to the training loss times `weight`. `evaluate` reports kd (before `weight`) as kd_loss, the
mean over batches; the teacher's routing statistics count nowhere. stop_step plays no part.

What it does not do: training steps, noise, random selection, staged KD (stop_step),
parallelism (with one rank, S = B*T is all the tokens of the batch), bf16/fp16.

Shapes: B batch, T sequence, d hidden, H heads, hd = d/H, KV key/value heads (G = H/KV query
heads per kv head), S = B*T tokens (s = b*T + t), E experts of the layer, f expert ffn, V vocab.

Two model keys of our own, beyond moe-language.md 4.1 (see README.md):
  kv_heads (default heads, divides heads): grouped-query attention; c_attn is
    [d, d + 2*KV*hd] = [q (d) | k (KV*hd) | v (KV*hd)], query head h uses kv head h // G
    (Hugging Face repeat_kv).
  bias (default true): false removes every `.bias` parameter (attention, dense and residual
    MLPs, experts, the PR-MoE coefficient, the layernorms: y = (x - mean) * rstd * w).
"""
import math

import torch
import torch.nn.functional as F

FLT_EPSILON = 1.1920928955078125e-07    # float.h FLT_EPSILON = 2^-23
NORM_EPS = 1e-5                          # LayerNorm eps (spec); RMSNorm uses the same (decision)
ROPE_THETA = 10000.0

# ---------------------------------------------------------------- configuration


def resolve(c):
    """Fills every default of moe-language.md 4.1/4.2 into a flat dict of derived facts."""
    m = c["model"]
    r = dict(vocab=m["vocab"], context=m["context"], layers=m["layers"], hidden=m["hidden"],
             heads=m["heads"])
    r["ffn"] = m.get("ffn", 4 * m["hidden"])
    r["activation"] = m.get("activation", "gelu")
    r["norm"] = m.get("norm", "layernorm")
    r["position"] = m.get("position", "learned")
    r["tie"] = m.get("tie_embeddings", True)
    r["kv_heads"] = m.get("kv_heads", m["heads"])
    assert r["kv_heads"] >= 1 and m["heads"] % r["kv_heads"] == 0, "kv_heads must divide heads"
    r["bias"] = m.get("bias", True)
    mo = c.get("moe")
    r["moe_blocks"] = []          # 0-based block indices of MoE layers, ascending
    r["experts"] = {}             # block -> E
    if mo:
        if "layers" in mo:
            ls = sorted(mo["layers"])
        else:
            every = mo.get("every", 2)
            ls = list(range(every, r["layers"] + 1, every))
        ex = mo["experts"]
        ex = ex if isinstance(ex, list) else [ex] * len(ls)
        assert len(ex) == len(ls), "experts list length must match the MoE layers"
        r["moe_blocks"] = [l - 1 for l in ls]
        r["experts"] = {l - 1: e for l, e in zip(ls, ex)}
        r["expert_ffn"] = mo.get("ffn", r["ffn"])
        r["top_k"] = mo.get("top_k", 1)
        r["residual"] = mo.get("residual", False)
        r["cf"] = mo.get("capacity_factor", 1.0)
        r["eval_cf"] = mo.get("eval_capacity_factor", 1.0)
        r["min_capacity"] = mo.get("min_capacity", 4)
        r["drop_tokens"] = mo.get("drop_tokens", True)
        r["aux_loss"] = mo.get("aux_loss", 0.01)
        r["z_loss"] = mo.get("z_loss", 0.0)
    di = c.get("distill")
    if di:
        # moe-language.md 4.5: teacher required, temperature and weight default to 1.0
        t = resolve(c["teacher"])
        assert t["vocab"] == r["vocab"], "teacher and student share the vocabulary"
        assert t["position"] != "learned" or t["context"] >= r["context"], "teacher context >= student's"
        r["distill"] = dict(teacher=t, teacher_name=c["teacher"]["name"],
                            tau=float(di.get("temperature", 1.0)), weight=float(di.get("weight", 1.0)),
                            stop_step=di.get("stop_step"))
    return r


def param_specs(r):
    """[(name, shape, kind)] in checkpoint order (moe-language.md section 7).
    kind: 'embed', 'norm_w', 'norm_b', 'weight', 'bias', 'gate' (used by the generator
    to pick a random distribution; the model itself does not care)."""
    d, V = r["hidden"], r["vocab"]
    glu = r["activation"] == "swiglu"
    qkv = d + 2 * r["kv_heads"] * (d // r["heads"])        # [q | k | v]
    out = [("wte.weight", (V, d), "embed")]
    if r["position"] == "learned":
        out.append(("wpe.weight", (r["context"], d), "embed"))

    def lin(name, wshape, bshape):
        """A weight and, unless bias = false, its bias."""
        out.append((name + ".weight", wshape, "weight"))
        if r["bias"]:
            out.append((name + ".bias", bshape, "bias"))

    def norm(prefix):
        out.append((prefix + ".weight", (d,), "norm_w"))
        if r["norm"] == "layernorm" and r["bias"]:
            out.append((prefix + ".bias", (d,), "norm_b"))

    def mlp(prefix, f):
        fw = 2 * f if glu else f
        lin(prefix + ".c_fc", (d, fw), (fw,))
        lin(prefix + ".c_proj", (f, d), (d,))

    for i in range(r["layers"]):
        h = "h.%d" % i
        norm(h + ".ln_1")
        lin(h + ".attn.c_attn", (d, qkv), (qkv,))
        lin(h + ".attn.c_proj", (d, d), (d,))
        norm(h + ".ln_2")
        if i not in r["moe_blocks"]:
            mlp(h + ".mlp", r["ffn"])
            continue
        E, f = r["experts"][i], r["expert_ffn"]
        fw = 2 * f if glu else f
        out.append((h + ".moe.gate.weight", (d, E), "gate"))        # never a bias
        lin(h + ".moe.experts.c_fc", (E, d, fw), (E, fw))
        lin(h + ".moe.experts.c_proj", (E, f, d), (E, d))
        if r["residual"]:
            # the residual MLP has the model's ffn width (as the dense block it is named after)
            mlp(h + ".moe.mlp", r["ffn"])
            lin(h + ".moe.coefficient", (d, 2), (2,))
    norm("ln_f")
    if not r["tie"]:
        out.append(("lm_head.weight", (d, V), "weight"))
    return out

# ---------------------------------------------------------------- building blocks


def norm(r, x, p, prefix):
    w = p[prefix + ".weight"]
    if r["norm"] == "layernorm":
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)           # biased, as torch / GPT-2
        y = (x - mu) / torch.sqrt(var + NORM_EPS) * w
        return y + p[prefix + ".bias"] if r["bias"] else y      # bias = false: no norm bias
    ms = (x * x).mean(-1, keepdim=True)
    return x / torch.sqrt(ms + NORM_EPS) * w


def act(r, h):
    """h: [..., f] (or [..., 2f] for swiglu: gate half, then up half)."""
    a = r["activation"]
    if a == "gelu":
        return 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h ** 3)))
    if a == "gelu_erf":
        return 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
    if a == "relu":
        return torch.clamp(h, min=0.0)
    if a == "swiglu":
        f = h.shape[-1] // 2
        g, u = h[..., :f], h[..., f:]
        return g * torch.sigmoid(g) * u
    raise ValueError(a)


def pb(r, p, name):
    """The bias parameter `name`, or None when the model has no biases (bias = false)."""
    return p[name] if r["bias"] else None


def affine(x, w, b):
    """x W + b; b None (bias = false): x W."""
    y = x @ w
    return y if b is None else y + b


def mlp(r, x, wfc, bfc, wproj, bproj, record=None):
    """y = act(x W_fc + b_fc) W_proj + b_proj (biases None: none). record: list that collects
    pre-activations."""
    h = affine(x, wfc, bfc)
    if record is not None:
        record.append(h.detach())
    return affine(act(r, h), wproj, bproj)


def rope(x):
    """x: [B, H, T, hd]; HF Llama rotate-half within each head, positions 0..T-1, theta 1e4."""
    T, hd = x.shape[2], x.shape[3]
    inv = 1.0 / (ROPE_THETA ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))   # [hd/2]
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]                  # [T, hd/2]
    ang = torch.cat([ang, ang], dim=-1).to(x.dtype)                                     # [T, hd]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    rot = torch.cat([-x2, x1], dim=-1)
    return x * torch.cos(ang) + rot * torch.sin(ang)


def repeat_kv(x, G):
    """x: [B, KV, T, hd] -> [B, KV*G, T, hd], kv head j serving query heads j*G .. j*G+G-1
    (query head h reads kv head h // G), exactly as Hugging Face's repeat_kv."""
    if G == 1:
        return x
    Bn, KV, Tn, hd = x.shape
    return x[:, :, None, :, :].expand(Bn, KV, G, Tn, hd).reshape(Bn, KV * G, Tn, hd)


def attention(r, x, p, h):
    B, T, d = x.shape
    H, KV = r["heads"], r["kv_heads"]
    hd = d // H
    kvd = KV * hd
    qkv = affine(x, p[h + ".attn.c_attn.weight"], pb(r, p, h + ".attn.c_attn.bias"))   # [B, T, d + 2 kvd]
    q, k, v = qkv[..., :d], qkv[..., d:d + kvd], qkv[..., d + kvd:]
    # query head j owns columns [j*hd, (j+1)*hd) of q, kv head j the same columns of k and v
    q = q.reshape(B, T, H, hd).transpose(1, 2)                                 # [B, H, T, hd]
    k, v = (t.reshape(B, T, KV, hd).transpose(1, 2) for t in (k, v))          # [B, KV, T, hd]
    if r["position"] == "rope":
        q, k = rope(q), rope(k)
    k, v = repeat_kv(k, H // KV), repeat_kv(v, H // KV)                        # [B, H, T, hd]
    att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)                             # [B, H, T, T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    att = att.masked_fill(~causal, float("-inf")).softmax(-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, d)
    return affine(y, p[h + ".attn.c_proj.weight"], pb(r, p, h + ".attn.c_proj.bias"))

# ---------------------------------------------------------------- the gate


def capacity(S, E, k, cf, min_capacity):
    """C = max(ceil(S / E * cf_eff), min_capacity), in fp32 (moe-semantics.md 2.3).
    cf_eff = cf, 2 cf, k cf for k = 1, 2, > 2. As DeepSpeed's _capacity does it:
    cf_eff = (float)(k * cf) (product in double, rounded once), S / E in fp32, their
    product in fp32, then ceil; i.e. in C: ceilf((float)S / (float)E * (float)(k * cf))."""
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)
    cf_eff = f32(k * cf)
    c = torch.ceil((f32(float(S)) / f32(float(E))) * cf_eff)
    return max(int(c.item()), min_capacity)


def route(logits, k, C):
    """Routing of one MoE layer (moe-semantics.md section 2, without noise).

    logits: [S, E]. C: capacity, or None for dropless.
    Returns dict:
      combine [S, E]  weight of expert e in token s's output (0 where not chosen or dropped)
      choice  [S, k]  chosen experts, rank order (rank 0 = largest prob; ties to lower index)
      keep    [S, k]  bool, the choice survived capacity
      probs   [S, E], l_aux, z (scalars with gradients), dropped (int), load [E] (before dropping)
    """
    S, E = logits.shape
    probs = logits.softmax(-1)
    # top-k by probability; the stable sort sends ties to the lower expert index
    _, order = torch.sort(probs.detach(), dim=-1, descending=True, stable=True)
    choice = order[:, :k]                                                     # [S, k]
    masks = [F.one_hot(choice[:, j], E).to(probs.dtype) for j in range(k)]    # k x [S, E]

    # queueing: rank-1 choices of all tokens in token order, then rank 2, ...
    keep = []
    offset = torch.zeros(E, dtype=probs.dtype)
    for j in range(k):
        slot = torch.cumsum(masks[j], 0) - 1 + offset                        # [S, E]
        offset = offset + masks[j].sum(0)
        kept = masks[j] if C is None else masks[j] * (slot < C).to(probs.dtype)
        keep.append(kept.sum(-1) > 0)                                         # [S]
    keep = torch.stack(keep, 1)                                               # [S, k]
    g = probs.gather(1, choice) * keep.to(probs.dtype)                        # [S, k]
    if k > 1:   # renormalise over the surviving choices
        g = g / torch.clamp(g.sum(-1, keepdim=True), min=FLT_EPSILON)
    combine = torch.zeros_like(probs).scatter_add(1, choice, g)              # [S, E]

    me = probs.mean(0)                                                        # [E]
    if k <= 2:
        ce = masks[0].mean(0)
        l_aux = E * (me * ce).sum()
    else:
        ce = sum(masks).mean(0)
        l_aux = E * (me * ce).sum() / k
    z = (torch.logsumexp(logits, -1) ** 2).mean()
    load = sum(masks).sum(0)
    return dict(combine=combine, choice=choice, keep=keep, probs=probs, l_aux=l_aux, z=z,
                dropped=int((~keep).sum().item()), load=[int(v) for v in load.tolist()])


def moe_layer(r, x, p, h, training, info, record):
    """x: [S, d] (already ln_2'd). Appends this layer's routing facts to info."""
    S = x.shape[0]
    E, k = r["experts"][int(h.split(".")[1])], r["top_k"]
    logits = x @ p[h + ".moe.gate.weight"]                                     # [S, E]
    if r["drop_tokens"]:
        C = capacity(S, E, k, r["cf"] if training else r["eval_cf"], r["min_capacity"])
    else:
        C = None
    rt = route(logits, k, C)
    # every expert on every token, then the combine weights select: a dropped or unchosen
    # (token, expert) pair has weight exactly 0, so it contributes nothing, gradients included
    ys = []
    for e in range(E):
        bfc, bproj = pb(r, p, h + ".moe.experts.c_fc.bias"), pb(r, p, h + ".moe.experts.c_proj.bias")
        ys.append(mlp(r, x, p[h + ".moe.experts.c_fc.weight"][e], None if bfc is None else bfc[e],
                      p[h + ".moe.experts.c_proj.weight"][e], None if bproj is None else bproj[e],
                      record))
    y = sum(rt["combine"][:, e:e + 1] * ys[e] for e in range(E))              # [S, d]
    if r["residual"]:
        a = affine(x, p[h + ".moe.coefficient.weight"], pb(r, p, h + ".moe.coefficient.bias")).softmax(-1)
        dense = mlp(r, x, p[h + ".moe.mlp.c_fc.weight"], pb(r, p, h + ".moe.mlp.c_fc.bias"),
                    p[h + ".moe.mlp.c_proj.weight"], pb(r, p, h + ".moe.mlp.c_proj.bias"), record)
        y = a[:, 0:1] * y + a[:, 1:2] * dense
    info.append(dict(block=int(h.split(".")[1]), E=E, C=C, S=S, k=k, dropped=rt["dropped"],
                     choices=S * k, load=rt["load"], l_aux=float(rt["l_aux"]), z=float(rt["z"]),
                     probs=rt["probs"].detach(), choice=rt["choice"], keep=rt["keep"]))
    return y, rt["l_aux"], rt["z"]

# ---------------------------------------------------------------- the model


def kd_term(zs, zt, tau):
    """tau^2 * mean over tokens of KL(p_t || q_s), the KL summed over the vocabulary, with
    p_t = softmax(zt / tau), q_s = softmax(zs / tau) (moe-semantics.md section 5).
    zs, zt: [..., V] student and teacher logits; every leading index is a token."""
    lp = (zt / tau).log_softmax(-1)
    lq = (zs / tau).log_softmax(-1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    return tau * tau * kl.mean()


def teacher_forward(r, tp, x_tok, y_tok):
    """The teacher of student config r on one batch: evaluation mode (its own
    eval_capacity_factor, no noise), no gradient. Returns its forward dict (logits detached)."""
    with torch.no_grad():
        o = forward(r["distill"]["teacher"], tp, x_tok, y_tok, training=False)
    o["logits"] = o["logits"].detach()
    return o


def forward(r, p, x_tok, y_tok, training, record=None, tp=None):
    """One batch. x_tok, y_tok: [B, T] int64. p: name -> tensor (float64 or float32).
    tp: the teacher's weights (a student, r["distill"]) or None: no KD term.
    Returns dict: loss (training loss, a tensor), lm_loss, aux_sum, z_sum (tensors),
    logits [B, T, V], info (per MoE layer routing facts); with tp also kd (the KD term
    before `weight`, a tensor) and teacher (the teacher's forward dict)."""
    B, T = x_tok.shape
    x = p["wte.weight"][x_tok]                                                  # [B, T, d]
    if r["position"] == "learned":
        x = x + p["wpe.weight"][:T][None]
    info = []
    aux_sum = torch.zeros((), dtype=x.dtype)
    z_sum = torch.zeros((), dtype=x.dtype)
    for i in range(r["layers"]):
        h = "h.%d" % i
        x = x + attention(r, norm(r, x, p, h + ".ln_1"), p, h)
        hn = norm(r, x, p, h + ".ln_2")
        if i in r["moe_blocks"]:
            y, la, z = moe_layer(r, hn.reshape(B * T, -1), p, h, training, info, record)
            aux_sum, z_sum = aux_sum + la, z_sum + z
            x = x + y.reshape(B, T, -1)
        else:
            x = x + mlp(r, hn, p[h + ".mlp.c_fc.weight"], pb(r, p, h + ".mlp.c_fc.bias"),
                        p[h + ".mlp.c_proj.weight"], pb(r, p, h + ".mlp.c_proj.bias"), record)
    x = norm(r, x, p, "ln_f")
    head = p["wte.weight"].t() if r["tie"] else p["lm_head.weight"]            # [d, V]
    logits = x @ head                                                           # [B, T, V]
    lm = F.cross_entropy(logits.reshape(B * T, -1), y_tok.reshape(-1))
    loss = lm
    if r["moe_blocks"]:
        loss = lm + r["aux_loss"] * aux_sum + r["z_loss"] * z_sum
    out = dict(loss=loss, lm_loss=lm, aux_sum=aux_sum, z_sum=z_sum, logits=logits, info=info)
    if tp is not None:
        di = r["distill"]
        t = teacher_forward(r, tp, x_tok, y_tok)
        kd = kd_term(logits, t["logits"], di["tau"])
        out.update(loss=loss + di["weight"] * kd, kd=kd, teacher=t)
    return out


def windows(tokens, B, T):
    """Batches of consecutive windows (moe-language.md section 6): sequence i reads
    tokens[i*T : (i+1)*T] and predicts tokens[i*T+1 : (i+1)*T+1]; only full batches."""
    tok = torch.as_tensor(tokens, dtype=torch.int64)
    n_win = (len(tok) - 1) // T
    out = []
    for b in range(n_win // B):
        xs = torch.stack([tok[(b * B + i) * T:(b * B + i + 1) * T] for i in range(B)])
        ys = torch.stack([tok[(b * B + i) * T + 1:(b * B + i + 1) * T + 1] for i in range(B)])
        out.append((xs, ys))
    return out


def evaluate(r, p, tokens, B, T, tp=None):
    """What `OUT eval` prints (with tp, the teacher's weights: `--teacher`, adding kd_loss),
    plus per-batch details."""
    per = []
    lm = aux = z = kd = 0.0
    dropped = choices = 0
    batches = windows(tokens, B, T)
    with torch.no_grad():
        for xs, ys in batches:
            o = forward(r, p, xs, ys, training=False, tp=tp)
            if tp is not None:
                kd += float(o["kd"])
            lm += float(o["lm_loss"])
            aux += float(o["aux_sum"])
            z += float(o["z_sum"])
            dropped += sum(l["dropped"] for l in o["info"])
            choices += sum(l["choices"] for l in o["info"])
            per.append(o)
    n = len(batches)
    res = dict(lm_loss=lm / n, aux_loss=aux / n, z_loss=z / n, tokens=n * B * T,
               dropped_fraction=(dropped / choices) if choices else 0.0)
    if tp is not None:
        res["kd_loss"] = kd / n         # mean over batches of each batch's mean, as aux_loss
    return res, per


def gradients(r, p, tokens, B, T, record=None, tp=None):
    """What `OUT grad` writes: d(training loss of the first batch)/d(every parameter).
    With tp (the teacher's weights: `--teacher`) the loss has weight * kd; the teacher gets
    no gradient and only the student's parameters are returned."""
    xs, ys = windows(tokens, B, T)[0]
    q = {n: t.detach().clone().requires_grad_(True) for n, t in p.items()}
    o = forward(r, q, xs, ys, training=True, record=record, tp=tp)
    o["loss"].backward()
    return {n: q[n].grad.detach().clone() for n in p}, o
