"""PyTorch eager baseline of a whole training step of a GPT-2 MoE model (moe-semantics.md s.1).

The same model moec compiles from the benchmark's .moe file: learned positions, LayerNorm
(eps 1e-5), causal attention with fp32 softmax, tanh GELU, tied embeddings, dense MLPs except on
the MoE layers, which use torch_moe.MoE (the sort/gather implementation by default, the faster
of the two baselines, so the comparison is against PyTorch's better showing; --impl deepspeed
picks the other). One step = forward, loss = cross-entropy + aux_loss * sum l_aux, backward,
global-norm clipping at 1.0 and AdamW (decay on 2-D weights only), as the spec's training step.
AdamW is PyTorch's fused CPU kernel (fused=True), 4-6x faster here than its default per-tensor
loop: the baseline is PyTorch's best showing. --compile puts the model (forward and, through
AOTAutograd, backward) under torch.compile; clipping and AdamW stay as they are.

    torch_model.py --vocab V --context T --layers L --hidden D --heads H [--ffn F]
                   --moe-layers 2,4 --experts 4,8 [--top-k K] [--residual] [--batch B]
                   [--threads N] [--warmup W] [--repeats R] [--impl sortgather|deepspeed]
                   [--compile]

prints one JSON object: tokens_per_s, ms (median step), peak_rss_bytes, params, compile_s.
"""
import argparse
import math
import sys

import torch
import torch.nn.functional as F

import torch_moe
from benchutil import emit, median_ms, peak_rss_bytes


class Attention(torch.nn.Module):
    """Causal multi-head self-attention, scaled by 1/sqrt(head_dim), softmax in fp32."""

    def __init__(self, d, heads, proj_std):
        super().__init__()
        self.heads = heads
        self.c_attn = torch.nn.Linear(d, 3 * d)     # q, k, v in that order
        self.c_proj = torch.nn.Linear(d, d)
        torch.nn.init.normal_(self.c_proj.weight, std=proj_std)

    def forward(self, x):                           # x [B, T, d]
        B, T, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (t.view(B, T, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)   # [B, h, T, T]
        causal = torch.ones(T, T, dtype=torch.bool).triu(1)
        att = F.softmax(att.masked_fill(causal, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, d)
        return self.c_proj(y)


class MLP(torch.nn.Module):
    """The dense FFN: gelu(x W_fc + b_fc) W_proj + b_proj."""

    def __init__(self, d, f, proj_std):
        super().__init__()
        self.c_fc = torch.nn.Linear(d, f)
        self.c_proj = torch.nn.Linear(f, d)
        torch.nn.init.normal_(self.c_proj.weight, std=proj_std)

    def forward(self, x):
        return self.c_proj(torch_moe.gelu(self.c_fc(x))), None


class MoEFFN(torch.nn.Module):
    """The MoE FFN on [B, T, d]: flat token order s = b*T + t, as the spec fixes."""

    def __init__(self, d, f, experts, top_k, residual, proj_std, impl):
        super().__init__()
        params = torch_moe.MoEParams(d, f, experts, residual, proj_std=proj_std)
        self.moe = torch_moe.MoE(params, impl, top_k)

    def forward(self, x):
        out, l_aux = self.moe(x.reshape(-1, x.shape[-1]))
        return out.view_as(x), l_aux


class Block(torch.nn.Module):
    def __init__(self, d, heads, ffn, proj_std):
        super().__init__()
        self.ln_1 = torch.nn.LayerNorm(d, eps=1e-5)
        self.attn = Attention(d, heads, proj_std)
        self.ln_2 = torch.nn.LayerNorm(d, eps=1e-5)
        self.ffn = ffn

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        y, l_aux = self.ffn(self.ln_2(x))
        return x + y, l_aux


class GPTMoE(torch.nn.Module):
    """GPT-2 with MoE FFNs on the 1-based layers in moe_layers (experts[i] on the i-th of them)."""

    def __init__(self, a):
        super().__init__()
        d, std = a.hidden, 0.02
        proj_std = std / math.sqrt(2 * a.layers)
        self.wte = torch.nn.Embedding(a.vocab, d)
        self.wpe = torch.nn.Embedding(a.context, d)
        torch.nn.init.normal_(self.wte.weight, std=std)
        torch.nn.init.normal_(self.wpe.weight, std=std)
        experts = dict(zip(a.moe_layers, a.experts))
        blocks = []
        for layer in range(1, a.layers + 1):
            if layer in experts:
                ffn = MoEFFN(d, a.ffn, experts[layer], a.top_k, a.residual, proj_std, a.impl)
            else:
                ffn = MLP(d, a.ffn, proj_std)
            blocks.append(Block(d, a.heads, ffn, proj_std))
        self.h = torch.nn.ModuleList(blocks)
        self.ln_f = torch.nn.LayerNorm(d, eps=1e-5)

    def forward(self, idx, targets):
        """Loss = mean cross-entropy + AUX_LOSS * sum over MoE layers of l_aux."""
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        aux = 0.0
        for block in self.h:
            x, l_aux = block(x)
            if l_aux is not None:
                aux = aux + l_aux
        logits = self.ln_f(x) @ self.wte.weight.t()   # tied head
        lm = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
        return lm + torch_moe.AUX_LOSS * aux


def adamw(model):
    """AdamW with the train defaults of moe-language.md 4.4; decay on 2-D (and expert) weights.

    fused=True where this PyTorch has the fused CPU kernel (2.4 and later): the default on the
    CPU is a Python loop over the tensors, several times slower, which no user after speed keeps.
    """
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs), "fused"
    except (TypeError, RuntimeError):   # no fused kernel for the CPU in this version
        return torch.optim.AdamW(groups, **kwargs), "default"


def measure(a):
    """Median time of one full training step on random tokens (the data loader is not timed)."""
    torch.set_num_threads(a.threads)
    if a.compile:
        torch_moe.require_compile()
        # The MoE layer's dispatch stays eager: its per-expert row counts change with every
        # step's routing, and dynamo would recompile its pieces for each new count (the timed
        # steps measured 8x slower than eager so); attention, LayerNorm, the dense MLPs, the
        # PR-MoE residual branch and the loss are compiled.
        torch_moe.IMPLS[a.impl] = torch.compiler.disable(torch_moe.IMPLS[a.impl])
    torch.manual_seed(0)
    model = GPTMoE(a)
    opt, opt_kind = adamw(model)
    loss_of = torch_moe.compile_module(model) if a.compile else model
    idx = torch.randint(0, a.vocab, (a.batch, a.context))
    targets = torch.randint(0, a.vocab, (a.batch, a.context))

    def step():
        opt.zero_grad(set_to_none=True)
        loss_of(idx, targets).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    # Under torch.compile the first step compiles; it is timed apart and the warm-up steps
    # (which may still recompile as routing changes) come after it.
    compile_s = torch_moe.first_call_s(step) if a.compile else 0.0
    ms = median_ms(step, a.warmup, a.repeats, a.budget_s)
    tokens = a.batch * a.context
    emit({"ms": ms, "tokens_per_s": tokens / (ms / 1e3), "peak_rss_bytes": peak_rss_bytes(),
          "params": sum(p.numel() for p in model.parameters()), "impl": a.impl,
          "compiled": a.compile, "compile_s": compile_s, "adamw": opt_kind,
          "torch": torch.__version__})


def int_list(text):
    return [int(v) for v in text.split(",") if v]


def model_args(ap):
    """The model's shape flags, shared with torch_decode.py; check_model_args after parsing."""
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=0, help="default 4 x hidden")
    ap.add_argument("--moe-layers", type=int_list, default=[2, 4])
    ap.add_argument("--experts", type=int_list, default=[4, 8])
    ap.add_argument("--residual", action="store_true")


def check_model_args(ap, a):
    a.ffn = a.ffn or 4 * a.hidden
    if len(a.experts) != len(a.moe_layers):
        ap.error(f"{len(a.moe_layers)} MoE layers but {len(a.experts)} entries in --experts")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    model_args(ap)
    ap.add_argument("--top-k", type=int, choices=[1, 2], default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--impl", choices=["sortgather", "deepspeed"], default="sortgather")
    ap.add_argument("--compile", action="store_true", help="the model under torch.compile")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=0,
                    help="stop repeating after this many seconds (at least 3 repeats)")
    a = ap.parse_args(argv)
    check_model_args(ap, a)
    return a


if __name__ == "__main__":
    measure(parse_args(sys.argv[1:]))
    sys.exit(0)
