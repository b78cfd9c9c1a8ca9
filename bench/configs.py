"""What the benchmark measures: the MoE layer shapes, the whole models, repeat counts.

Full sizes are the project's targets. --quick divides hidden, ffn and tokens by 4 (experts and
top_k unchanged, so routing and capacity behave alike), decodes fewer tokens of smaller models
and repeats less: it checks that the harness runs end to end, its numbers are not the targets'.
"""
from dataclasses import dataclass, field, replace
from typing import List

SEQ = 256          # tokens per sequence in the MoE-layer models: batch = tokens / SEQ
LAYER_HEADS = 8    # heads of the one-block models that carry an MoE layer


@dataclass(frozen=True)
class LayerConfig:
    """One MoE layer benchmark: S = tokens routed to E experts, k per token."""
    hidden: int
    ffn: int
    experts: int
    tokens: int
    top_k: int
    residual: bool = False

    @property
    def name(self):
        res = " PR-MoE" if self.residual else ""
        return (f"d{self.hidden} f{self.ffn} E{self.experts} S{self.tokens}"
                f" k{self.top_k}{res}")

    @property
    def slug(self):
        return self.name.replace(" ", "_").replace("-", "").lower()


@dataclass(frozen=True)
class ModelConfig:
    """One whole-model training-step benchmark (moe-language.md keys)."""
    name: str
    vocab: int
    context: int
    layers: int
    hidden: int
    heads: int
    ffn: int
    moe_layers: List[int] = field(default_factory=list)  # 1-based FFN layers that are MoE
    experts: List[int] = field(default_factory=list)     # one entry per MoE layer
    top_k: int = 1
    residual: bool = False
    batch: int = 8

    @property
    def tokens(self):
        return self.batch * self.context


@dataclass(frozen=True)
class Plan:
    """Everything one run measures, and how often."""
    quick: bool
    layers: List[LayerConfig]
    models: List[ModelConfig]
    warmup: int
    repeats: int
    budget_s: float          # PyTorch stops repeating after this long (at least 3 repeats)
    sgemm_min_ms: int
    compile_timeout_s: int
    decode_models: List[ModelConfig] = field(default_factory=list)
    decode_batches: List[int] = field(default_factory=list)
    decode_prompt: int = 32  # prompt tokens per sequence, untimed (PyTorch: warm-up, compiling)
    decode_tokens: int = 64  # timed rounds of one token per sequence


FULL_LAYERS = [
    LayerConfig(512, 2048, 8, 2048, 1),
    LayerConfig(512, 2048, 32, 2048, 1),
    LayerConfig(1024, 4096, 16, 4096, 1),
    LayerConfig(512, 2048, 8, 2048, 2),
    LayerConfig(512, 2048, 8, 2048, 1, residual=True),
]

# (a) mirrors examples/tiny.moe; (b) a 4-layer GPT with 8 experts on every other layer.
TINY = ModelConfig("tiny (as examples/tiny.moe)", vocab=256, context=128, layers=4, hidden=128,
                   heads=4, ffn=512, moe_layers=[2, 4], experts=[4, 8], top_k=1,
                   residual=True, batch=8)
GPT_512 = ModelConfig("4L d512 E8 every 2", vocab=256, context=256, layers=4, hidden=512,
                      heads=8, ffn=2048, moe_layers=[2, 4], experts=[8, 8], top_k=1,
                      residual=False, batch=8)


# The forms of the PyTorch MoE layer that are also run under torch.compile. Only sort/gather:
# compiled, the DeepSpeed design stayed slower than sort/gather (eager or compiled) in both
# modes here (d512 E8, 2 threads: forward 98 against 62-65 ms, forward+backward 527 against
# 353-463 ms), so compiling it costs run time and never changes the best PyTorch figure.
COMPILED_LAYER_FORMS = ("sortgather",)

# Decoding: the tiny and perf-like models above and a wider one, at these batch sizes.
WIDE = ModelConfig("8L d1024 E16 every 2", vocab=256, context=256, layers=8, hidden=1024,
                   heads=16, ffn=4096, moe_layers=[2, 4, 6, 8], experts=[16, 16, 16, 16],
                   top_k=1, residual=False, batch=8)
DECODE_BATCHES = [1, 8, 32]


def _quick_layer(c):
    return replace(c, hidden=c.hidden // 4, ffn=c.ffn // 4, tokens=c.tokens // 4)


def make_plan(quick):
    """The full plan, or its scaled-down --quick version."""
    if not quick:
        return Plan(False, FULL_LAYERS, [TINY, GPT_512], warmup=1, repeats=5, budget_s=8,
                    sgemm_min_ms=300, compile_timeout_s=300,
                    decode_models=[TINY, GPT_512, WIDE], decode_batches=DECODE_BATCHES,
                    decode_prompt=32, decode_tokens=64)
    small = replace(GPT_512, name="4L d128 E8 every 2 (quick)", hidden=128, ffn=512, batch=2)
    return Plan(True, [_quick_layer(c) for c in FULL_LAYERS], [TINY, small], warmup=1,
                repeats=3, budget_s=1, sgemm_min_ms=50, compile_timeout_s=60,
                decode_models=[TINY, small], decode_batches=[1, 8], decode_prompt=8,
                decode_tokens=16)
