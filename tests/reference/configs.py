"""configs.py - the golden test cases, one Python dict each, and their .moe text.

Each case is {"name", "model": {4.1 keys}, "moe": {4.2 keys} or None, "data": {...}}.
Only keys that are written here appear in the .moe file; everything else takes the
language default, which moe_ref.resolve() fills in the same way (moe-language.md 4.1/4.2).
Every case is tiny (hidden 32, 4 heads, 2-3 layers) so that the goldens stay small and
the reference runs in seconds on one core.

Secondary settings vary between cases on purpose, so that every activation, norm and
position encoding is exercised somewhere:
  gelu (tanh): most cases; gelu_erf: pyramid; relu: explicit_layers; swiglu + rmsnorm + rope +
  untied head: modern, mixtral; rope with layernorm and a tied head: dropless.
kv_heads and bias are our own 4.1 keys (README.md): grouped-query attention in gqa and mixtral,
bias = false (bias-free layernorm, PR-MoE coefficient without bias) in nobias and mixtral.
Noise and random selection are switched ON where the language allows it, because eval and
grad must switch them off regardless (moe-language.md section 6).

Distillation cases (Mixture-of-Students, moe-language.md 4.5) also have "teacher": {"name",
"model", "moe"} (a whole model of its own, written first in the .moe file, so that the student
is the file's last model: the tools' default) and "distill": {4.5 keys}. The student is given
`--teacher teacher.safetensors` for eval and grad. Each teacher differs from its student in
shape, so that it is really the teacher's own config (depth, width, heads, top_k, residual,
eval capacity, activation, head) that the executable runs.
"""

# The run every golden is made for: OUT eval/grad --batch 4 --seq 16.
BATCH = 4
SEQ = 16
EVAL_BATCHES = 3          # full batches in tokens.bin
EXTRA_WINDOWS = 2         # a partial 4th batch that eval must ignore ("only full batches count")

CASES = [
    {
        "name": "dense",
        "doc": "plain GPT-2: tied head, learned positions, default ffn = 4*hidden; no MoE layer",
        "model": dict(vocab=64, context=16, layers=2, hidden=32, heads=4),
        "moe": None,
    },
    {
        "name": "top1_drops",
        "doc": "top-1 in both layers, training cf 1.0 (C=16) and eval cf 0.75 (C=12): tokens drop "
               "in grad and in eval; rsample noise and random selection are on but must be off",
        "model": dict(vocab=64, context=32, layers=2, hidden=32, heads=4, ffn=32),
        "moe": dict(every=1, experts=4, top_k=1, capacity_factor=1.0, eval_capacity_factor=0.75,
                    noisy_gate="rsample", random_token_selection=True, aux_loss=0.01),
    },
    {
        "name": "top2_drops",
        "doc": "top-2 in all 3 layers, cf 0.75 -> cf_eff 1.5 -> C=24 in training, eval cf 1.0 -> C=32; "
               "first choices queue before second choices; jitter and second-expert sampling must be off",
        "model": dict(vocab=96, context=16, layers=3, hidden=32, heads=4, ffn=32),
        "moe": dict(every=1, experts=4, top_k=2, capacity_factor=0.75, eval_capacity_factor=1.0,
                    noisy_gate="jitter", second_expert_sampling=True),
    },
    {
        "name": "topk4",
        "doc": "top-4 of 8 experts, cf 1.0 -> cf_eff 4 -> C=32 (training), eval cf 1.25 -> C=40; "
               "l_aux over the k-hot mask divided by k",
        "model": dict(vocab=64, context=16, layers=2, hidden=32, heads=4, ffn=32),
        "moe": dict(every=1, experts=8, top_k=4, capacity_factor=1.0, eval_capacity_factor=1.25),
    },
    {
        "name": "residual",
        "doc": "PR-MoE: every = 2 of 2 layers (block 1 only), top-1 beside a dense MLP mixed by a "
               "2-way softmax coefficient",
        "model": dict(vocab=64, context=16, layers=2, hidden=32, heads=4, ffn=32),
        "moe": dict(every=2, experts=4, top_k=1, residual=True),
    },
    {
        "name": "pyramid",
        "doc": "experts [4, 4, 8] over 3 MoE layers, gelu_erf, cf 0.5: C=8 with 4 experts and "
               "min_capacity 6 (> ceil(64/8*0.5)=4) with 8 experts",
        "model": dict(vocab=64, context=16, layers=3, hidden=32, heads=4, ffn=32,
                      activation="gelu_erf"),
        "moe": dict(every=1, experts=[4, 4, 8], top_k=1, capacity_factor=0.5,
                    eval_capacity_factor=0.5, min_capacity=6),
    },
    {
        "name": "dropless",
        "doc": "drop_tokens = false with a capacity factor (0.25) that would drop most tokens; "
               "rope with layernorm and a tied head",
        "model": dict(vocab=64, context=16, layers=2, hidden=32, heads=4, ffn=32, position="rope"),
        "moe": dict(every=1, experts=4, top_k=1, capacity_factor=0.25, eval_capacity_factor=0.25,
                    min_capacity=1, drop_tokens=False),
    },
    {
        "name": "explicit_layers",
        "doc": "moe.layers = [1, 3] of 3 (blocks 0 and 2 MoE, block 1 dense), relu",
        "model": dict(vocab=64, context=16, layers=3, hidden=32, heads=4, ffn=32, activation="relu"),
        "moe": dict(layers=[1, 3], experts=4, top_k=1, capacity_factor=1.0),
    },
    {
        "name": "zloss",
        "doc": "top-2 with z_loss = 0.01 and aux_loss = 0.05",
        "model": dict(vocab=64, context=16, layers=2, hidden=32, heads=4, ffn=32),
        "moe": dict(every=1, experts=4, top_k=2, capacity_factor=1.0, aux_loss=0.05, z_loss=0.01),
    },
    {
        "name": "expert_ffn",
        "doc": "model ffn 48, expert ffn 24 (moe.ffn), top-2",
        "model": dict(vocab=64, context=16, layers=2, hidden=32, heads=4, ffn=48),
        "moe": dict(every=1, experts=4, ffn=24, top_k=2, capacity_factor=1.0),
    },
    {
        "name": "modern",
        "doc": "swiglu (c_fc = [gate | up]), rmsnorm, rope, untied lm_head, top-2 of 4",
        "model": dict(vocab=96, context=32, layers=2, hidden=32, heads=4, ffn=32,
                      activation="swiglu", norm="rmsnorm", position="rope", tie_embeddings=False),
        "moe": dict(every=1, experts=4, top_k=2, capacity_factor=1.0),
    },
    {
        "name": "gqa",
        "doc": "grouped-query attention: 4 query heads share 2 key/value heads (query head h reads "
               "kv head h // 2), c_attn [32, 64]; layernorm, learned positions, tied head; "
               "a dense block then a top-1 MoE block",
        "model": dict(vocab=64, context=16, layers=2, hidden=32, heads=4, kv_heads=2, ffn=32),
        "moe": dict(every=2, experts=4, top_k=1),
    },
    {
        "name": "nobias",
        "doc": "bias = false: no .bias anywhere (bias-free layernorm y = (x - mean) * rstd * w, "
               "PR-MoE coefficient without bias); top-2 PR-MoE in both layers",
        "model": dict(vocab=64, context=16, layers=2, hidden=32, heads=4, ffn=32, bias=False),
        "moe": dict(every=1, experts=4, top_k=2, residual=True, capacity_factor=1.0),
    },
    {
        "name": "mixtral",
        "doc": "Mixtral-shaped: no biases, 4 query heads over 2 kv heads, swiglu, rmsnorm, rope, "
               "untied lm_head, dropless top-2 of 4 in every layer",
        "model": dict(vocab=96, context=32, layers=2, hidden=32, heads=4, kv_heads=2, ffn=32,
                      activation="swiglu", norm="rmsnorm", position="rope", tie_embeddings=False,
                      bias=False),
        "moe": dict(every=1, experts=4, top_k=2, drop_tokens=False, second_expert_sampling=False),
    },
    {
        "name": "kd_top1_residual",
        "doc": "distillation: a top-1 PR-MoE student (2 layers, eval cf 0.75 -> C=12: drops) from a "
               "deeper top-2 teacher (3 layers, 2 heads, context 32, eval cf 0.75 -> C=24: "
               "drops; training cf 2.0 would not); temperature 2, weight 0.5",
        "model": dict(vocab=64, context=16, layers=2, hidden=32, heads=4, ffn=32),
        "moe": dict(every=1, experts=4, top_k=1, residual=True, capacity_factor=1.0,
                    eval_capacity_factor=0.75, noisy_gate="rsample"),
        "teacher": {
            "name": "kd_top1_residual_teacher",
            "model": dict(vocab=64, context=32, layers=3, hidden=32, heads=2, ffn=32),
            "moe": dict(every=1, experts=4, top_k=2, capacity_factor=2.0, eval_capacity_factor=0.75,
                        noisy_gate="jitter", second_expert_sampling=True),
        },
        "distill": dict(temperature=2.0, weight=0.5, stop_step=1000),
    },
    {
        "name": "kd_top2_pyramid",
        "doc": "distillation: a top-2 pyramid student (experts [2, 4], cf 0.75 -> C=48/24, eval cf "
               "0.875 -> C=56/28, z_loss 0.01) from a wider top-1 PR-MoE teacher (hidden 48, 3 heads, "
               "gelu_erf, untied lm_head, MoE in block 1 only, eval cf 1.0 -> C=16, training cf 0.5 would "
               "drop more); temperature 0.5, weight 1.0",
        "model": dict(vocab=64, context=16, layers=2, hidden=32, heads=4, ffn=32),
        "moe": dict(every=1, experts=[2, 4], top_k=2, capacity_factor=0.75, eval_capacity_factor=0.875,
                    z_loss=0.01, second_expert_sampling=True),
        "teacher": {
            "name": "kd_top2_pyramid_teacher",
            "model": dict(vocab=64, context=16, layers=2, hidden=48, heads=3, ffn=48,
                          activation="gelu_erf", tie_embeddings=False),
            "moe": dict(every=2, experts=4, top_k=1, residual=True, capacity_factor=0.5,
                        eval_capacity_factor=1.0, random_token_selection=True),
        },
        "distill": dict(temperature=0.5, weight=1.0),
    },
]

# Expectations gen_goldens.py asserts, so a regenerated golden still tests what it claims.
EXPECT = {
    "top1_drops": dict(grad_drops=True, eval_drops=True),
    "top2_drops": dict(grad_drops=True, eval_drops=True),
    "topk4": dict(grad_drops=True),
    "pyramid": dict(grad_drops=True, eval_drops=True),
    # dropless: the same routing with drop_tokens = true would drop (so the case means something)
    "dropless": dict(would_drop=True),
    # teacher_drops: the teacher (in evaluation mode) drops tokens in some batch
    "kd_top1_residual": dict(grad_drops=True, eval_drops=True, teacher_drops=True),
    "kd_top2_pyramid": dict(grad_drops=True, eval_drops=True),
}


def case(name):
    for c in CASES:
        if c["name"] == name:
            return c
    raise KeyError(name)


def _scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return v            # enum words are identifiers
    raise TypeError(v)


def _value(v):
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    return _scalar(v)


def _model_lines(name, c):
    lines = ["model %s {" % name]
    for k, v in c["model"].items():
        lines.append("    %-14s = %s" % (k, _value(v)))
    for block in ("moe", "distill"):
        if c.get(block):
            lines.append("    %s {" % block)
            for k, v in c[block].items():
                lines.append("        %-22s = %s" % (k, _value(v)))
            lines.append("    }")
    lines.append("}")
    return lines


def moe_text(c):
    """The .moe file of case c: one model, named after the case; a distillation case has
    its teacher first and the student (named after the case, the default model) last."""
    lines = ["# generated by tests/reference/gen_goldens.py from configs.py - do not edit",
             "# " + c["doc"]]
    if c.get("teacher"):
        t = c["teacher"]
        lines += ["# the teacher: its weights are teacher.safetensors"] + _model_lines(t["name"], t)
        d = dict(c["distill"])
        c = dict(c, distill=dict(teacher=t["name"], **d))
        lines += ["# the student"]
    lines += _model_lines(c["name"], c)
    return "\n".join(lines) + "\n"
