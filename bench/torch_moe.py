"""PyTorch baselines for the MoE layer of moe-semantics.md (sections 2-3), on one rank.

Two implementations of the same function, both differentiable end to end (gate included):
  * deepspeed_moe  - DeepSpeed's design (deepspeed/moe/sharded_moe.py): fp32 gate, one-hot
    capacity masks [S, E, C] built from cumsum slot locations (top1gating / top2gating), einsum
    dispatch "sec,sm->ecm" into [E, C, d] buffers, the experts as one batched matmul over
    [E, C, d], einsum combine "sec,ecm->sm".
  * sortgather_moe - sort tokens by expert (stable, so each expert's queue keeps the spec's slot
    order), index_select them into contiguous per-expert blocks, one matmul pair per expert on
    only the rows it received, index_add the weighted rows back to token order.
`reference_moe` is a per-token loop written straight from the spec; only --selftest uses it.

Scope (what the benchmark's .moe files ask for too): deterministic routing, i.e. no gate noise,
no random token selection, no second-expert sampling; drop_tokens = true; top_k 1 or 2.

    torch_moe.py --selftest
    torch_moe.py --impl deepspeed|sortgather --hidden D --ffn F --experts E --tokens S
                 --top-k K [--residual] --mode fwd|fwdbwd [--compile] [--threads N] [--warmup W]
                 [--repeats R]

The second form prints one JSON object: tokens_per_s, ms (median per call), peak_rss_bytes,
compile_s (the first call, which compiled, with --compile).
"""
import argparse
import math
import sys
import time

import torch
import torch.nn.functional as F

from benchutil import emit, median_ms, peak_rss_bytes

AUX_LOSS = 0.01  # moe.aux_loss default: the benchmark's loss carries l_aux like a training step


def gelu(x):
    """GPT-2's GELU, the tanh approximation."""
    return F.gelu(x, approximate="tanh")


def _fp32(v):
    """v rounded to the nearest float32 (ties to even), in plain Python arithmetic."""
    mantissa, exponent = math.frexp(v)
    return math.ldexp(round(mantissa * 2**24), exponent - 24)


def capacity(tokens, experts, top_k, capacity_factor=1.0, min_capacity=4):
    """Slots per expert, C = max(ceil(S / E * cf_eff), min_capacity), computed in fp32.

    Plain Python, not a tensor and .item(): torch.compile folds it to a constant instead of
    breaking the graph there (the product of two fp32 values is exact in a double, so rounding
    it once to fp32 is the fp32 product).
    """
    cf_eff = capacity_factor * (2.0 if top_k == 2 else float(top_k))
    per_expert = _fp32(_fp32(tokens / experts) * _fp32(cf_eff))
    return max(math.ceil(per_expert), min_capacity)


class MoEParams(torch.nn.Module):
    """The weights of one MoE layer, in the checkpoint layout of moe-language.md section 7.

    Weights are [in, out] so that y = x W + b; expert tensors hold all E experts.
    """

    def __init__(self, hidden, ffn, experts, residual=False, init_std=0.02, proj_std=None):
        super().__init__()
        d, f, E = hidden, ffn, experts
        proj_std = init_std if proj_std is None else proj_std
        P = torch.nn.Parameter
        self.gate = P(torch.randn(d, E) * init_std)             # [d, E], no bias
        self.fc_w = P(torch.randn(E, d, f) * init_std)          # [E, d, f]
        self.fc_b = P(torch.zeros(E, f))                        # [E, f]
        self.proj_w = P(torch.randn(E, f, d) * proj_std)        # [E, f, d]
        self.proj_b = P(torch.zeros(E, d))                      # [E, d]
        self.residual = residual
        if residual:
            self.mlp_fc_w = P(torch.randn(d, f) * init_std)      # [d, f]
            self.mlp_fc_b = P(torch.zeros(f))                    # [f]
            self.mlp_proj_w = P(torch.randn(f, d) * proj_std)    # [f, d]
            self.mlp_proj_b = P(torch.zeros(d))                  # [d]
            self.coef_w = P(torch.randn(d, 2) * init_std)        # [d, 2]
            self.coef_b = P(torch.zeros(2))                      # [2]

    @property
    def experts(self):
        return self.gate.shape[1]


# ---------------------------------------------------------------------------------------------
# (a) DeepSpeed's design

def ds_top1gating(logits, cap):
    """top1gating without noise or random token selection: returns l_aux, combine [S, E, C]."""
    gates = F.softmax(logits, dim=1)                          # [S, E]
    E = gates.shape[1]
    indices1_s = torch.argmax(gates, dim=1)                   # [S]
    mask1 = F.one_hot(indices1_s, num_classes=E)              # [S, E]
    me = torch.mean(gates, dim=0)
    ce = torch.mean(mask1.float(), dim=0)
    l_aux = torch.sum(me * ce) * E
    locations1 = torch.cumsum(mask1, dim=0) - 1               # [S, E] slot in the expert's queue
    mask1 = mask1 * torch.lt(locations1, cap)                 # keep the lowest token indices
    locations1_s = torch.sum(locations1 * mask1, dim=1)       # [S]
    gates = gates * mask1.float()                             # weight probs[s, e1], 0 if dropped
    locations1_sc = F.one_hot(locations1_s, num_classes=cap).float()  # [S, C]
    combine = torch.einsum("se,sc->sec", gates, locations1_sc)
    return l_aux, combine


def ds_top2gating(logits, cap):
    """top2gating without second-expert sampling: returns l_aux, combine [S, E, C]."""
    gates = F.softmax(logits, dim=1)                          # [S, E]
    E = gates.shape[1]
    indices1_s = torch.argmax(gates, dim=1)
    mask1 = F.one_hot(indices1_s, num_classes=E)
    logits_except1 = logits.masked_fill(mask1.bool(), float("-inf"))
    indices2_s = torch.argmax(logits_except1, dim=1)
    mask2 = F.one_hot(indices2_s, num_classes=E)
    locations1 = torch.cumsum(mask1, dim=0) - 1
    locations2 = torch.cumsum(mask2, dim=0) - 1
    locations2 = locations2 + torch.sum(mask1, dim=0, keepdim=True)  # second choices queue behind
    me = torch.mean(gates, dim=0)
    ce = torch.mean(mask1.float(), dim=0)
    l_aux = torch.mean(me * ce) * E * E
    mask1 = mask1 * torch.lt(locations1, cap)
    mask2 = mask2 * torch.lt(locations2, cap)
    locations1_s = torch.sum(locations1 * mask1, dim=1)
    locations2_s = torch.sum(locations2 * mask2, dim=1)
    mask1_float, mask2_float = mask1.float(), mask2.float()
    gates1_s = torch.einsum("se,se->s", gates, mask1_float)
    gates2_s = torch.einsum("se,se->s", gates, mask2_float)
    denom_s = torch.clamp(gates1_s + gates2_s, min=torch.finfo(gates.dtype).eps)
    gates1 = torch.einsum("s,se->se", gates1_s / denom_s, mask1_float)
    gates2 = torch.einsum("s,se->se", gates2_s / denom_s, mask2_float)
    locations1_sc = F.one_hot(locations1_s, num_classes=cap).float()
    locations2_sc = F.one_hot(locations2_s, num_classes=cap).float()
    combine = (torch.einsum("se,sc->sec", gates1, locations1_sc)
               + torch.einsum("se,sc->sec", gates2, locations2_sc))
    return l_aux, combine


def deepspeed_moe(p, x, top_k, cap):
    """MOELayer.forward on one rank: gate, einsum dispatch, batched experts, einsum combine."""
    logits = x.float() @ p.gate                               # the gate is fp32
    gating = ds_top1gating if top_k == 1 else ds_top2gating
    l_aux, combine = gating(logits, cap)                      # [S, E, C]
    dispatch = combine.bool().type_as(x)
    buf = torch.einsum("sec,sm->ecm", dispatch, x)            # [E, C, d]
    h = gelu(torch.baddbmm(p.fc_b.unsqueeze(1), buf, p.fc_w))  # [E, C, f]
    y = torch.baddbmm(p.proj_b.unsqueeze(1), h, p.proj_w)     # [E, C, d]
    out = torch.einsum("sec,ecm->sm", combine.type_as(x), y)  # [S, d]
    return out, l_aux


# ---------------------------------------------------------------------------------------------
# (b) sort / gather

def choose_experts(logits, top_k):
    """The spec's choices, rank-major [k*S]: all first choices in token order, then all second.

    e1 = argmax(probs); e2 = argmax of the logits over e != e1 (argmax ties go to the lower index).
    """
    probs = F.softmax(logits, dim=1)
    e1 = torch.argmax(probs, dim=1)
    choices = [e1]
    if top_k == 2:
        taken = F.one_hot(e1, num_classes=logits.shape[1]).bool()
        choices.append(torch.argmax(logits.masked_fill(taken, float("-inf")), dim=1))
    return probs, torch.cat(choices)


def sortgather_route(logits, top_k, cap):
    """Route without [S, E, C] masks; returns (token, weight, counts, l_aux).

    token [N]: source token of each surviving choice, grouped by expert in slot order;
    weight [N]: its output weight; counts [E]: surviving rows per expert (N = counts.sum()).
    """
    S, E = logits.shape
    probs, expert = choose_experts(logits, top_k)             # [S, E], [k*S]
    counts = torch.bincount(expert, minlength=E)
    order = torch.sort(expert, stable=True).indices           # stable: queue order inside an expert
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(expert.numel()) - starts[expert[order]]  # slot of order[i]
    kept = order[slot < cap]                                  # surviving choices, by expert
    token = kept % S
    gate = probs.gather(1, expert.view(top_k, S).t()).t().reshape(-1)  # [k*S], rank-major
    keep = torch.zeros_like(gate, dtype=torch.bool).index_fill(0, kept, True)
    gate = gate * keep
    if top_k == 2:
        denom = torch.clamp(gate.view(2, S).sum(0), min=torch.finfo(gate.dtype).eps)
        gate = (gate.view(2, S) / denom).reshape(-1)
    l_aux = torch.sum(probs.mean(0) * torch.bincount(expert[:S], minlength=E).float() / S) * E
    return token, gate[kept], torch.clamp(counts, max=cap), l_aux


def sortgather_moe(p, x, top_k, cap):
    """Gather each expert's rows into a contiguous block, run only those, scatter-add back."""
    logits = x.float() @ p.gate
    token, weight, counts, l_aux = sortgather_route(logits, top_k, cap)
    rows = x.index_select(0, token)                           # [N, d], expert-major
    # unbind once: indexing p.fc_w[e] per expert would make autograd add E full-size
    # [E, d, f] gradients; unbind's backward stacks the E per-expert gradients once.
    weights = zip(p.fc_w.unbind(0), p.fc_b.unbind(0), p.proj_w.unbind(0), p.proj_b.unbind(0))
    outs = []
    for block, (fc_w, fc_b, proj_w, proj_b) in zip(rows.split(counts.tolist()), weights):
        if block.shape[0] == 0:
            continue
        h = gelu(torch.addmm(fc_b, block, fc_w))              # [n_e, f]
        outs.append(torch.addmm(proj_b, h, proj_w))           # [n_e, d]
    y = torch.cat(outs) * weight.unsqueeze(1).type_as(x)
    out = torch.zeros_like(x).index_add(0, token, y)          # [S, d]
    return out, l_aux


# ---------------------------------------------------------------------------------------------
# The spec as a loop, for the self-test only

def reference_moe(p, x, top_k, cap):
    """Token by token, choice rank by choice rank, exactly as moe-semantics.md words it."""
    S, E = x.shape[0], p.experts
    logits = x.float() @ p.gate
    probs, expert = choose_experts(logits, top_k)
    expert = expert.view(top_k, S).tolist()
    load, survives = [0] * E, [[False] * S for _ in range(top_k)]
    for r in range(top_k):                                    # all first choices, then second
        for s in range(S):
            if load[expert[r][s]] < cap:
                load[expert[r][s]] += 1
                survives[r][s] = True
    rows = []
    for s in range(S):
        g = [probs[s, expert[r][s]] * float(survives[r][s]) for r in range(top_k)]
        if top_k == 2:
            denom = torch.clamp(g[0] + g[1], min=torch.finfo(probs.dtype).eps)
            g = [gi / denom for gi in g]
        row = torch.zeros_like(x[s])
        for r in range(top_k):
            if survives[r][s]:
                e = expert[r][s]
                h = gelu(x[s] @ p.fc_w[e] + p.fc_b[e])
                row = row + g[r] * (h @ p.proj_w[e] + p.proj_b[e])
        rows.append(row)
    first = torch.tensor(expert[0])
    f_e = torch.stack([(first == e).float().mean() for e in range(E)])
    l_aux = E * torch.sum(probs.mean(0) * f_e)
    return torch.stack(rows), l_aux


# ---------------------------------------------------------------------------------------------
# The layer: an implementation plus the PR-MoE residual

IMPLS = {"deepspeed": deepspeed_moe, "sortgather": sortgather_moe, "reference": reference_moe}


class MoE(torch.nn.Module):
    """One MoE layer: out = moe(x), or with residual a[0] * moe(x) + a[1] * mlp(x)."""

    def __init__(self, params, impl, top_k, capacity_factor=1.0, min_capacity=4):
        super().__init__()
        self.p = params
        self.impl = IMPLS[impl]
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.min_capacity = min_capacity

    def forward(self, x):
        """x [S, d] -> (out [S, d], l_aux)."""
        cap = capacity(x.shape[0], self.p.experts, self.top_k, self.capacity_factor,
                       self.min_capacity)
        out, l_aux = self.impl(self.p, x, self.top_k, cap)
        if self.p.residual:
            p = self.p
            mlp = gelu(torch.addmm(p.mlp_fc_b, x, p.mlp_fc_w)) @ p.mlp_proj_w + p.mlp_proj_b
            coef = F.softmax(torch.addmm(p.coef_b, x, p.coef_w), dim=-1)  # [S, 2]
            out = out * coef[:, 0:1] + mlp * coef[:, 1:2]
        return out, l_aux


# ---------------------------------------------------------------------------------------------
# Self-test

def _grads_after(layer, x, probe):
    """Forward, loss = <out, probe> + AUX_LOSS * l_aux, backward: the output, l_aux and grads."""
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out, l_aux = layer(x)
    ((out * probe).sum() + AUX_LOSS * l_aux).backward()
    grads = {name: t.grad.clone() for name, t in layer.p.named_parameters()}
    grads["x"] = x.grad.clone()
    return out.detach(), l_aux.detach(), grads


def _close(a, b, what):
    """Assert a == b to fp32 tolerance, scaled by the size of b; return the max error."""
    err = (a - b).abs().max().item()
    scale = max(1.0, b.abs().max().item())
    assert err <= 2e-5 * scale, f"{what}: max |diff| {err:.3g} (scale {scale:.3g})"
    return err


def selftest():
    """deepspeed, sortgather and the spec loop agree on output, l_aux and every gradient.

    Small shapes with a skewed gate, so experts overflow and the capacity path is exercised.
    """
    torch.manual_seed(0)
    for tokens, experts, cf in [(2048, 8, 1.0), (48, 6, 2.0), (1000, 7, 1.25), (12345, 31, 1.1)]:
        fp32 = torch.ceil(torch.tensor(tokens / experts, dtype=torch.float32) * cf).item()
        assert capacity(tokens, experts, 1, cf, 1) == int(fp32), f"capacity({tokens}, {experts})"
    S, d, f = 48, 16, 24
    for E, top_k, residual in [(4, 1, False), (4, 2, False), (6, 1, True), (3, 2, True)]:
        p = MoEParams(d, f, E, residual, init_std=0.3)
        with torch.no_grad():
            p.gate[:, 0] += 0.2                               # expert 0 overloaded: drops
        x, probe = torch.randn(S, d), torch.randn(S, d)
        ref = _grads_after(MoE(p, "reference", top_k), x, probe)
        cap = capacity(S, E, top_k)
        _, expert = choose_experts(x @ p.gate, top_k)
        assert torch.bincount(expert, minlength=E).max().item() > cap, "no token was dropped"
        for impl in ("deepspeed", "sortgather"):
            out, l_aux, grads = _grads_after(MoE(p, impl, top_k), x, probe)
            where = f"{impl} E={E} k={top_k} residual={residual}"
            _close(out, ref[0], f"{where} output")
            _close(l_aux, ref[1], f"{where} l_aux")
            for name, g in grads.items():
                _close(g, ref[2][name], f"{where} grad {name}")
        print(f"selftest E={E} k={top_k} residual={residual} C={cap}: deepspeed == sortgather"
              f" == spec loop (output, l_aux, {len(ref[2])} gradients)")
    print("selftest passed")


# ---------------------------------------------------------------------------------------------
# Measurement

def measure(args):
    """Tokens/s of one implementation in one mode; the caller runs each in a fresh process.

    fwd: forward under no_grad. fwdbwd: forward, loss = out.sum() + AUX_LOSS * l_aux, backward
    through everything (experts, gate, residual and the input), parameter grads zeroed each call.
    --compile: the layer under torch.compile (default mode); the first call, which compiles, is
    timed apart (compile_s) and the warm-up calls come after it.
    """
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    p = MoEParams(args.hidden, args.ffn, args.experts, args.residual)
    layer = MoE(p, args.impl, args.top_k)
    run = compile_module(layer) if args.compile else layer
    x = torch.randn(args.tokens, args.hidden)

    def forward():
        with torch.no_grad():
            run(x)

    def forward_backward():
        layer.zero_grad(set_to_none=True)
        xg = x.detach().requires_grad_(True)
        out, l_aux = run(xg)
        (out.sum() + AUX_LOSS * l_aux).backward()

    step = forward if args.mode == "fwd" else forward_backward
    compile_s = first_call_s(step) if args.compile else 0.0
    ms = median_ms(step, args.warmup, args.repeats, args.budget_s)
    emit({"impl": args.impl, "mode": args.mode, "compiled": args.compile, "ms": ms,
          "tokens_per_s": args.tokens / (ms / 1e3), "peak_rss_bytes": peak_rss_bytes(),
          "compile_s": compile_s, "torch": torch.__version__,
          "capacity": capacity(args.tokens, args.experts, args.top_k)})


def require_compile():
    """Exit with a clear reason where this PyTorch has no torch.compile (1.13, the fallback)."""
    if not hasattr(torch, "compile"):
        raise SystemExit(f"torch.compile: not in PyTorch {torch.__version__}")


def compile_module(module):
    """torch.compile(module) in its default mode, or a clear error where PyTorch has none."""
    require_compile()
    return torch.compile(module)


def first_call_s(fn):
    """Seconds of one call of fn: under torch.compile, the call that compiles (not timed)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--selftest", action="store_true")
    ap.add_argument("--impl", choices=["deepspeed", "sortgather"], default="sortgather")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--ffn", type=int, default=2048)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--top-k", type=int, choices=[1, 2], default=1)
    ap.add_argument("--residual", action="store_true")
    ap.add_argument("--mode", choices=["fwd", "fwdbwd"], default="fwd")
    ap.add_argument("--compile", action="store_true", help="the layer under torch.compile")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=0,
                    help="stop repeating after this many seconds (at least 3 repeats)")
    return ap.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    if args.selftest:
        selftest()
    else:
        measure(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
