"""PyTorch baseline of KV-cache decoding of a GPT-2 MoE model: the other side of `EXE bench --decode`.

The model is torch_model.py's (learned positions, LayerNorm eps 1e-5, causal attention, tanh
GELU, tied embeddings, MoE FFN on the given 1-based layers, optionally the PR-MoE residual),
written for generation: one token per sequence per step against preallocated caches
k, v [B, heads, T_max, head_dim] per layer. A step writes position pos into the caches and
attends over positions 0..pos (F.scaled_dot_product_attention, PyTorch's fused kernel). The MoE
FFN at inference is top-1 without capacity: softmax gate, each token runs its argmax expert,
weighted by that expert's probability; nothing is dropped. Weights are random (decode time does
not depend on their values), with the shapes of the .moe model moec builds.

Like `bench --decode`: B sequences, a prompt of P tokens fed one by one (untimed; it is the
warm-up, and under --compile it compiles), then N timed rounds of one token for every sequence,
each the argmax of the last logits. Reported: median and 90th percentile of a round's time,
and tokens/s = B * N / the rounds' total time.

--compile: the step under torch.compile(dynamic=True), so that the growing position and the
batch need no recompiling. The expert dispatch stays eager (torch.compiler.disable): which
experts run, on how many rows, changes token by token, and each change would recompile.

    torch_decode.py --vocab V --context T --layers L --hidden D --heads H --ffn F
                    --moe-layers 2,4 --experts 8,8 [--residual] --batch 1,8,32 --prompt-len P
                    --tokens N [--threads N] [--compile]

prints one JSON object: {"results": [one per batch size: batch, latency_ms_median,
latency_ms_p90, tokens_per_s, compile_s (the first step's, which compiled)], peak_rss_bytes}.
The batch sizes run one after another in this process, each with a model of its own.
"""
import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import torch_moe
from benchutil import emit, peak_rss_bytes
from torch_model import check_model_args, int_list, model_args


def _param(*shape, std=0.02):
    return torch.nn.Parameter(torch.randn(*shape) * std, requires_grad=False)


def _zeros(*shape):
    return torch.nn.Parameter(torch.zeros(*shape), requires_grad=False)


def eager_only(fn):
    """torch.compiler.disable(fn) in PyTorch 2; PyTorch 1 (the fallback) compiles nothing."""
    compiler = getattr(torch, "compiler", None)
    return compiler.disable(fn) if hasattr(compiler, "disable") else fn


def attend(q, k, v):
    """softmax(q k^T / sqrt(head_dim)) v: PyTorch's fused kernel, or the same written out
    where PyTorch (1.13, the fallback) has none."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v)
    return F.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v


@eager_only
def moe_experts(p, x):
    """Top-1 experts without capacity on x [B, d]: each row through its expert, times its gate.

    B = 1 runs the one expert on the row; otherwise the rows are sorted by expert and each
    expert that was chosen runs once on its rows (the sort/gather form, without dropping).
    """
    probs = F.softmax(x @ p.gate, dim=-1)
    weight, expert = probs.max(dim=-1)
    if x.shape[0] == 1:
        e = int(expert)
        h = torch_moe.gelu(torch.addmm(p.fc_b[e], x, p.fc_w[e]))
        return torch.addmm(p.proj_b[e], h, p.proj_w[e]) * weight.unsqueeze(1)
    order = torch.argsort(expert)
    counts = torch.bincount(expert, minlength=p.experts).tolist()
    outs = []
    for e, rows in enumerate(x.index_select(0, order).split(counts)):
        if rows.shape[0]:
            h = torch_moe.gelu(torch.addmm(p.fc_b[e], rows, p.fc_w[e]))
            outs.append(torch.addmm(p.proj_b[e], h, p.proj_w[e]))
    y = torch.cat(outs) * weight.index_select(0, order).unsqueeze(1)
    return torch.empty_like(y).index_copy_(0, order, y)


class DecodeBlock(torch.nn.Module):
    """One transformer block for one token per sequence, with its own KV cache."""

    def __init__(self, d, heads, ffn, experts, residual, batch, t_max):
        super().__init__()
        self.heads = heads
        self.ln_1 = torch.nn.LayerNorm(d, eps=1e-5)
        self.ln_2 = torch.nn.LayerNorm(d, eps=1e-5)
        self.attn_w, self.attn_b = _param(d, 3 * d), _zeros(3 * d)
        self.proj_w, self.proj_b = _param(d, d), _zeros(d)
        self.moe = None
        if experts:
            self.moe = torch_moe.MoEParams(d, ffn, experts, residual).requires_grad_(False)
        else:
            self.fc_w, self.fc_b = _param(d, ffn), _zeros(ffn)
            self.mlp_w, self.mlp_b = _param(ffn, d), _zeros(d)
        shape = (batch, heads, t_max, d // heads)
        self.register_buffer("k_cache", torch.zeros(shape), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape), persistent=False)

    def attention(self, x, pos):
        """x [B, d] at position pos: write its k, v into the caches, attend over 0..pos."""
        B, d = x.shape
        hd = d // self.heads
        q, k, v = torch.addmm(self.attn_b, x, self.attn_w).view(B, 3, self.heads, 1, hd).unbind(1)
        self.k_cache[:, :, pos:pos + 1] = k
        self.v_cache[:, :, pos:pos + 1] = v
        y = attend(q, self.k_cache[:, :, :pos + 1], self.v_cache[:, :, :pos + 1])
        return torch.addmm(self.proj_b, y.reshape(B, d), self.proj_w)

    def ffn(self, x):
        if self.moe is None:
            return torch.addmm(self.mlp_b, torch_moe.gelu(torch.addmm(self.fc_b, x, self.fc_w)),
                               self.mlp_w)
        out = moe_experts(self.moe, x)
        p = self.moe
        if p.residual:
            mlp = torch.addmm(p.mlp_proj_b, torch_moe.gelu(torch.addmm(p.mlp_fc_b, x, p.mlp_fc_w)),
                              p.mlp_proj_w)
            coef = F.softmax(torch.addmm(p.coef_b, x, p.coef_w), dim=-1)
            out = out * coef[:, 0:1] + mlp * coef[:, 1:2]
        return out

    def forward(self, x, pos):
        x = x + self.attention(self.ln_1(x), pos)
        return x + self.ffn(self.ln_2(x))


class DecodeModel(torch.nn.Module):
    """GPT-2 MoE for generation: step(tokens [B], pos) -> logits [B, vocab]."""

    def __init__(self, a, batch):
        super().__init__()
        # One spare slot: a slice 0..pos that covered the whole cache would be contiguous
        # and, under torch.compile, recompile at the last position (inside the timed rounds).
        d, t_max = a.hidden, max(1, a.prompt_len) + a.tokens + 1
        self.wte, self.wpe = _param(a.vocab, d), _param(a.context, d)
        experts = dict(zip(a.moe_layers, a.experts))
        self.h = torch.nn.ModuleList(
            DecodeBlock(d, a.heads, a.ffn, experts.get(layer, 0), a.residual, batch, t_max)
            for layer in range(1, a.layers + 1))
        self.ln_f = torch.nn.LayerNorm(d, eps=1e-5)

    def forward(self, tokens, pos):
        x = self.wte[tokens] + self.wpe[pos]
        for block in self.h:
            x = block(x, pos)
        return self.ln_f(x) @ self.wte.t()          # tied head


def compile_step(model):
    """torch.compile(model, dynamic=True), with room for one compiled graph per kind of block
    (dense, and MoE per expert count) and the first, static, position."""
    torch_moe.require_compile()
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    return torch.compile(model, dynamic=True)


def decode(a, batch):
    """One batch size: build the model, run the prompt, time the rounds; returns the figures."""
    torch.manual_seed(0)
    model = DecodeModel(a, batch).eval()
    step = compile_step(model) if a.compile else model
    prompt = torch.randint(0, a.vocab, (max(1, a.prompt_len), batch))
    rounds = []
    with torch.inference_mode():
        # The prompt, one token at a time, untimed: the first step compiles (--compile), the
        # next ones (positions 1, 2, ... are compiled apart at first) finish that and warm up.
        start = time.perf_counter()
        logits = step(prompt[0], 0)
        compile_s = time.perf_counter() - start if a.compile else 0.0
        for pos in range(1, a.prompt_len):
            logits = step(prompt[pos], pos)
        for pos in range(max(1, a.prompt_len), max(1, a.prompt_len) + a.tokens):
            t0 = time.perf_counter()
            logits = step(logits.argmax(dim=-1), pos)
            rounds.append((time.perf_counter() - t0) * 1e3)
    ordered = sorted(rounds)
    return {"batch": batch, "latency_ms_median": statistics.median(rounds),
            "latency_ms_p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "tokens_per_s": batch * len(rounds) / (sum(rounds) / 1e3), "compile_s": compile_s,
            "params": sum(p.numel() for p in model.parameters())}


def measure(a):
    """Every batch size in turn, in this one process (one model at a time)."""
    torch.set_num_threads(a.threads)
    results = [decode(a, batch) for batch in a.batch]
    emit({"prompt_len": a.prompt_len, "tokens": a.tokens, "compiled": a.compile,
          "threads": a.threads, "results": results, "peak_rss_bytes": peak_rss_bytes(),
          "torch": torch.__version__})


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    model_args(ap)
    ap.add_argument("--batch", type=int_list, default=[1], help="batch sizes, e.g. 1,8,32")
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="the step under torch.compile")
    a = ap.parse_args(argv)
    check_model_args(ap, a)
    if max(1, a.prompt_len) + a.tokens > a.context:
        ap.error(f"prompt {a.prompt_len} + tokens {a.tokens} exceed the context {a.context}")
    return a


if __name__ == "__main__":
    measure(parse_args(sys.argv[1:]))
    sys.exit(0)
