/* sema_model.c - the semantic pass, second half: rules between keys, defaults, md_model.
 *
 * Runs on each model's effective entries (after inheritance). Every rule of
 * moe-language.md section 5 that relates keys lives here: required keys, heads
 * divides hidden, the MoE layers (every or an explicit ascending list in range), list
 * lengths against the number of MoE layers, top_k against the experts, the expert-
 * parallel degree against each layer's experts and the data degree, tensor slicing
 * against heads and ffn, the distillation teacher. An error at an entry a model
 * inherited says so in a hint. A rule whose inputs already had an error is skipped.
 * A model others inherit from may leave required keys to them (an abstract base),
 * unless the tool selected it or a model names it as its teacher.
 */
#include "sema.h"
#include "sema_int.h"
#include "arena.h"
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

typedef struct build {
    sema *s;
    smodel *m;
    md_model *md;
} build;

/* An error at an entry of model b->m; says so when the entry is inherited. */
static void err(build *b, const sval *v, diag_loc at, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static void err(build *b, const sval *v, diag_loc at, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    diag_verror(b->s->d, at, fmt, ap);
    va_end(ap);
    if (v && v->owner != b->m)
        diag_hint(b->s->d, "in model '%s', which inherits this from '%s'", b->m->ast->name,
                  v->owner->ast->name);
    b->m->failed = true;
}

static const sval *get(build *b, key_id k) {
    const sval *v = b->m->eff[k];
    if (v && v->bad) b->m->failed = true;
    return v && !v->bad ? v : NULL;
}
static int64_t get_int(build *b, key_id k, int64_t def) { const sval *v = get(b, k); return v ? v->i : def; }
static double get_f(build *b, key_id k, double def) { const sval *v = get(b, k); return v ? v->f : def; }
static bool get_b(build *b, key_id k, bool def) { const sval *v = get(b, k); return v ? v->b : def; }
static int get_w(build *b, key_id k, int def) { const sval *v = get(b, k); return v ? v->word : def; }

static diag_loc key_loc(const sval *v) { return v->e->loc; }
/* where key k of the model was written (its own entry or an inherited one), or nowhere */
static md_loc written_at(build *b, key_id k) {
    const sval *v = get(b, k);
    return v ? (md_loc){v->e->loc.file, v->e->loc.line, v->e->loc.col} : (md_loc){NULL, 0, 0};
}
static diag_loc val_loc(const sval *v) { return v->e->value->loc; }

/* The item of a list that holds entry i (for error locations). */
static diag_loc item_loc(const sval *v, int i) {
    if (!v->is_list) return val_loc(v);
    int64_t at = 0;
    for (const ast_item *it = v->e->value->items; it; it = it->next) {
        int64_t c = it->kind == AI_SCALAR ? 1 : it->kind == AI_REPEAT ? it->count
                    : it->hi->i - it->value->i + 1;
        if (i < at + c) return it->loc;
        at += c;
    }
    return val_loc(v);
}

static void required(build *b) {
    for (int k = 0; k < K_COUNT; k++) {
        const key_info *ki = &key_table[k];
        if (!ki->required) continue;
        if (ki->block != BLK_MODEL && !b->m->has_block[ki->block]) continue;
        if (b->m->eff[k]) continue;
        b->m->incomplete = true;
        if (b->m->may_be_abstract) { b->m->failed = true; continue; }
        if (ki->block == BLK_MODEL)
            err(b, NULL, b->m->ast->loc, "model '%s' is missing required key '%s'",
                b->m->ast->name, ki->name);
        else
            err(b, NULL, b->m->ast->loc, "model '%s' is missing required key '%s' (its %s block needs it)",
                b->m->ast->name, ki->qname, key_block_name(ki->block));
    }
}

static void model_keys(build *b) {
    md_model *md = b->md;
    md->vocab = get_int(b, K_VOCAB, 0);
    md->context = get_int(b, K_CONTEXT, 0);
    md->layers = get_int(b, K_LAYERS, 0);
    md->hidden = get_int(b, K_HIDDEN, 0);
    md->heads = get_int(b, K_HEADS, 0);
    md->kv_heads = get_int(b, K_KV_HEADS, md->heads);
    md->ffn = get_int(b, K_FFN, 4 * md->hidden);
    md->activation = (md_activation)get_w(b, K_ACTIVATION, MD_ACT_GELU);
    md->norm = (md_norm)get_w(b, K_NORM, MD_NORM_LAYERNORM);
    md->position = (md_position)get_w(b, K_POSITION, MD_POS_LEARNED);
    md->tie_embeddings = get_b(b, K_TIE, true);
    md->bias = get_b(b, K_BIAS, true);
    md->dropout = get_f(b, K_DROPOUT, 0.0);
    md->dtype = (md_dtype)get_w(b, K_DTYPE, MD_DT_FP32);
    md->init_std = get_f(b, K_INIT_STD, 0.02);

    const sval *heads = get(b, K_HEADS);
    if (heads && md->hidden > 0 && md->hidden % md->heads) {
        err(b, heads, key_loc(heads), "heads = %" PRId64 " does not divide hidden = %" PRId64,
            md->heads, md->hidden);
        return;
    }
    const sval *kv = get(b, K_KV_HEADS);
    if (kv && md->heads > 0 && md->heads % md->kv_heads) {
        err(b, kv, key_loc(kv), "kv_heads = %" PRId64 " does not divide heads = %" PRId64
            " (each key/value head serves heads / kv_heads query heads)", md->kv_heads, md->heads);
        return;
    }
    const sval *pos = get(b, K_POSITION);
    if (pos && md->position == MD_POS_ROPE && md->heads > 0 && md->hidden > 0 &&
        (md->hidden / md->heads) % 2)
        err(b, pos, key_loc(pos), "rope needs an even head size, but hidden / heads = %" PRId64,
            md->hidden / md->heads);
}

/* The MoE layers: from moe.layers, or every moe.every-th FFN layer. */
static void moe_layers(build *b) {
    md_model *md = b->md;
    const sval *every = get(b, K_MOE_EVERY), *list = get(b, K_MOE_LAYERS);
    if (b->m->eff[K_MOE_LAYERS] && !list) return;       /* bad list: reported */
    if (every && list) {
        const sval *later = every->e->loc.line > list->e->loc.line ||
            (every->e->loc.line == list->e->loc.line && every->e->loc.col > list->e->loc.col)
            ? every : list;
        err(b, later, key_loc(later), "give either moe.every or moe.layers, not both");
        return;
    }
    if (md->layers <= 0) return;
    if (list) {
        if (list->n == 0) { err(b, list, val_loc(list), "moe.layers is empty"); return; }
        int *l = sema_expand(b->s, list);
        if (!l) return;
        for (int i = 0; i < (int)list->n; i++) {
            if (l[i] > md->layers) {
                err(b, list, item_loc(list, i), "MoE layer %d is out of range: the model has %"
                    PRId64 " layers", l[i], md->layers);
                return;
            }
            if (i > 0 && l[i] == l[i - 1]) {
                err(b, list, item_loc(list, i), "moe.layers lists layer %d twice", l[i]);
                return;
            }
            if (i > 0 && l[i] < l[i - 1]) {
                err(b, list, item_loc(list, i), "moe.layers must be ascending: %d comes after %d",
                    l[i], l[i - 1]);
                return;
            }
        }
        md->moe.n_moe = (int)list->n;
        md->moe.layer = l;
        return;
    }
    if (b->m->eff[K_MOE_EVERY] && !every) return;
    int64_t e = every ? every->i : 2;
    int64_t n = md->layers / e;
    if (n == 0) {
        if (every)
            err(b, every, key_loc(every), "moe.every = %" PRId64 " leaves no MoE layer in a model of %"
                PRId64 " layer%s", e, md->layers, md->layers == 1 ? "" : "s");
        else
            err(b, NULL, b->m->block_loc[BLK_MOE], "no MoE layer: moe.every defaults to 2 and model '%s' has 1 layer",
                b->m->ast->name);
        return;
    }
    md->moe.layer = ARENA_ARRAY(b->s->a, int, n);
    if (!md->moe.layer) return;
    md->moe.n_moe = (int)n;
    for (int64_t i = 0; i < n; i++) md->moe.layer[i] = (int)((i + 1) * e);
}

/* An int-or-list key as one value per MoE layer; NULL when it cannot be (reported). */
static int *per_layer(build *b, key_id k, const sval *v, int def) {
    int n = b->md->moe.n_moe;
    if (v && v->is_list) {
        if (v->n == n) return sema_expand(b->s, v);
        err(b, v, val_loc(v), "%s: %d MoE layer%s but %" PRId64 " entr%s", key_table[k].qname, n,
            n == 1 ? "" : "s", v->n, v->n == 1 ? "y" : "ies");
        return NULL;
    }
    int *out = ARENA_ARRAY(b->s->a, int, n > 0 ? n : 1);
    for (int i = 0; out && i < n; i++) out[i] = v ? (int)v->i : def;
    return out;
}

static void moe_keys(build *b) {
    md_model *md = b->md;
    md->moe.ffn = get_int(b, K_MOE_FFN, md->ffn);
    md->moe.top_k = (int)get_int(b, K_MOE_TOP_K, 1);
    md->moe.residual = get_b(b, K_MOE_RESIDUAL, false);
    md->moe.capacity_factor = get_f(b, K_MOE_CF, 1.0);
    md->moe.eval_capacity_factor = get_f(b, K_MOE_EVAL_CF, 1.0);
    md->moe.min_capacity = (int)get_int(b, K_MOE_MIN_CAP, 4);
    md->moe.drop_tokens = get_b(b, K_MOE_DROP, true);
    md->moe.noisy_gate = (md_noise)get_w(b, K_MOE_NOISY, MD_NOISE_NONE);
    md->moe.random_token_selection = get_b(b, K_MOE_RTS, true);
    md->moe.second_expert_sampling = get_b(b, K_MOE_SES, true);
    md->moe.aux_loss = get_f(b, K_MOE_AUX, 0.01);
    md->moe.z_loss = get_f(b, K_MOE_Z, 0.0);
    if (!b->m->has_block[BLK_MOE]) {
        /* a dense model: MoE keys keep their defaults and nothing else */
        md->moe.layer = ARENA_ARRAY(b->s->a, int, 1);
        md->moe.experts = ARENA_ARRAY(b->s->a, int, 1);
        return;
    }
    moe_layers(b);
    const sval *ex = get(b, K_MOE_EXPERTS);
    if (md->moe.n_moe == 0 || !ex) { b->m->failed = true; return; }
    md->moe.experts = per_layer(b, K_MOE_EXPERTS, ex, 1);
    if (!md->moe.experts) return;
    const sval *k = get(b, K_MOE_TOP_K);
    for (int i = 0; k && i < md->moe.n_moe; i++)
        if (md->moe.experts[i] < md->moe.top_k) {
            err(b, k, key_loc(k), "moe.top_k = %d but MoE layer %d has only %d expert%s",
                md->moe.top_k, md->moe.layer[i], md->moe.experts[i],
                md->moe.experts[i] == 1 ? "" : "s");
            break;
        }
}

static void parallel_keys(build *b) {
    md_model *md = b->md;
    md->parallel.data = (int)get_int(b, K_PAR_DATA, 0);
    md->parallel.tensor = (int)get_int(b, K_PAR_TENSOR, 1);
    md->parallel.expert_slicing = (int)get_int(b, K_PAR_SLICING, 1);
    md->parallel.alltoall = (md_alltoall)get_w(b, K_PAR_A2A, MD_A2A_AUTO);
    md->parallel.ranks_per_node = (int)get_int(b, K_PAR_RPN, 0);

    const sval *ep = get(b, K_PAR_EXPERT);
    if (ep && !b->m->has_block[BLK_MOE]) {
        err(b, ep, key_loc(ep), "parallel.expert is set but model '%s' has no moe block",
            b->m->ast->name);
        return;
    }
    int n = md->moe.n_moe;
    if (b->m->has_block[BLK_MOE] && (n == 0 || !md->moe.experts)) return;
    md->parallel.expert = per_layer(b, K_PAR_EXPERT, ep, 1);
    if (!md->parallel.expert) return;
    for (int i = 0; ep && i < n; i++) {
        int p = md->parallel.expert[i];
        if (md->moe.experts[i] % p) {
            err(b, ep, item_loc(ep, i), "MoE layer %d has %d experts, not divisible by the "
                "expert-parallel degree %d", md->moe.layer[i], md->moe.experts[i], p);
            break;
        }
        const sval *data = get(b, K_PAR_DATA);
        if (data && md->parallel.data % p) {
            err(b, ep, item_loc(ep, i), "the expert-parallel degree %d does not divide "
                "parallel.data = %d", p, md->parallel.data);
            break;
        }
    }
    const sval *t = get(b, K_PAR_TENSOR);
    if (t && md->heads > 0 && md->heads % md->parallel.tensor)
        err(b, t, key_loc(t), "parallel.tensor = %d does not divide heads = %" PRId64,
            md->parallel.tensor, md->heads);
    else if (t && md->heads > 0 && md->kv_heads % md->parallel.tensor)
        err(b, t, key_loc(t), "parallel.tensor = %d does not divide kv_heads = %" PRId64,
            md->parallel.tensor, md->kv_heads);
    else if (t && md->ffn % md->parallel.tensor)
        err(b, t, key_loc(t), "parallel.tensor = %d does not divide ffn = %" PRId64,
            md->parallel.tensor, md->ffn);
    const sval *sl = get(b, K_PAR_SLICING);
    if (sl && md->moe.ffn % md->parallel.expert_slicing)
        err(b, sl, key_loc(sl), "parallel.expert_slicing = %d does not divide moe.ffn = %" PRId64,
            md->parallel.expert_slicing, md->moe.ffn);
}

/* train and distill: defaults, and min_lr <= lr (the teacher is linked later). */
static void train_keys(build *b) {
    md_model *md = b->md;
    md->train.batch = get_int(b, K_TR_BATCH, 8);
    md->train.accumulate = get_int(b, K_TR_ACCUM, 1);
    md->train.steps = get_int(b, K_TR_STEPS, 1000);
    md->train.seed = get_int(b, K_TR_SEED, 1234);
    md->train.optimizer = (md_optimizer)get_w(b, K_TR_OPT, MD_OPT_ADAMW);
    md->train.lr = get_f(b, K_TR_LR, 3e-4);
    md->train.min_lr = get_f(b, K_TR_MIN_LR, 3e-5);
    md->train.warmup = get_int(b, K_TR_WARMUP, 100);
    md->train.schedule = (md_schedule)get_w(b, K_TR_SCHED, MD_SCHED_COSINE);
    md->train.beta1 = get_f(b, K_TR_BETA1, 0.9);
    md->train.beta2 = get_f(b, K_TR_BETA2, 0.95);
    md->train.eps = get_f(b, K_TR_EPS, 1e-8);
    md->train.weight_decay = get_f(b, K_TR_WD, 0.1);
    md->train.grad_clip = get_f(b, K_TR_CLIP, 1.0);
    md->train.eval_every = get_int(b, K_TR_EVAL_EVERY, 100);
    md->train.eval_batches = get_int(b, K_TR_EVAL_BATCHES, 8);
    md->train.checkpoint_every = get_int(b, K_TR_CKPT_EVERY, 500);
    md->train.recompute = get_b(b, K_TR_RECOMPUTE, false);
    /* min_lr unwritten follows a small lr down (a tenth of it below the default); written, it
     * must not exceed lr where a schedule decays to it */
    const sval *min_lr = get(b, K_TR_MIN_LR);
    if (!min_lr && md->train.min_lr > md->train.lr) md->train.min_lr = md->train.lr / 10;
    if (min_lr && md->train.schedule != MD_SCHED_CONSTANT && md->train.min_lr > md->train.lr)
        err(b, min_lr, key_loc(min_lr), "train.min_lr = %g is larger than train.lr = %g", md->train.min_lr,
            md->train.lr);
    md->distill.temperature = get_f(b, K_DI_TEMP, 1.0);
    md->distill.weight = get_f(b, K_DI_WEIGHT, 1.0);
    md->distill.stop_step = get_int(b, K_DI_STOP, -1);
}

/* Parameters in double, before md_params runs, so that no later count overflows. */
static double approx_params(const md_model *md) {
    double d = (double)md->hidden, V = (double)md->vocab;
    double f = (double)md->ffn, fw = md->activation == MD_ACT_SWIGLU ? 2 * f : f;
    double ef = (double)md->moe.ffn, efw = md->activation == MD_ACT_SWIGLU ? 2 * ef : ef;
    double norm = md->norm == MD_NORM_LAYERNORM ? 2 * d : d;
    double mlp = d * fw + fw + f * d + d, expert = d * efw + efw + ef * d + d;
    double total = V * d + (md->position == MD_POS_LEARNED ? (double)md->context * d : 0) +
                   (md->tie_embeddings ? 0 : V * d) + norm;
    for (int64_t l = 1; l <= md->layers; l++) total += 4 * d * d + 4 * d + 2 * norm + mlp;
    for (int i = 0; i < md->moe.n_moe; i++) {
        double E = md->moe.experts ? md->moe.experts[i] : 1;
        total += d * E + E * expert - mlp + (md->moe.residual ? mlp + 2 * d + 2 : 0);
    }
    return total;
}

void sema_build(sema *s, smodel *m) {
    build b = {.s = s, .m = m};
    md_model *md = ARENA_NEW(s->a, md_model);
    if (!md) return;
    b.md = md;
    md->name = m->ast->name;
    md->loc = (md_loc){m->ast->loc.file, m->ast->loc.line, m->ast->loc.col};
    for (int k = 0; k < K_COUNT; k++) (void)get(&b, (key_id)k);     /* inherited errors */
    required(&b);
    model_keys(&b);
    moe_keys(&b);
    parallel_keys(&b);
    train_keys(&b);
    if (!m->failed && approx_params(md) > 9007199254740992.0)
        err(&b, NULL, m->ast->loc, "model '%s' has about %.3g parameters; the limit is 2^53",
            md->name, approx_params(md));
    md->where.dtype = written_at(&b, K_DTYPE);
    md->where.dropout = written_at(&b, K_DROPOUT);
    md->where.tensor = written_at(&b, K_PAR_TENSOR);
    md->where.expert_slicing = written_at(&b, K_PAR_SLICING);
    md->where.data = written_at(&b, K_PAR_DATA);
    md->where.expert = written_at(&b, K_PAR_EXPERT);
    md->where.teacher = written_at(&b, K_DI_TEACHER);
    md->where.noisy_gate = written_at(&b, K_MOE_NOISY);
    md->where.rts = written_at(&b, K_MOE_RTS);
    md->where.second_sampling = written_at(&b, K_MOE_SES);
    m->md = md;
}

void sema_link(sema *s, smodel *m) {
    build b = {.s = s, .m = m, .md = m->md};
    if (!m->has_block[BLK_DISTILL]) return;
    const sval *t = get(&b, K_DI_TEACHER);
    if (!t) return;
    const smodel *tm = sema_lookup(s, t->name);
    if (!tm) {
        err(&b, t, val_loc(t), "unknown teacher model '%s'", t->name);
        sema_hint_model(s, t->name);
        return;
    }
    if (tm == m) {
        err(&b, t, val_loc(t), "model '%s' cannot be its own teacher", m->ast->name);
        return;
    }
    if (tm->incomplete && tm->may_be_abstract) {
        err(&b, t, val_loc(t), "teacher '%s' is not a complete model", tm->ast->name);
        diag_hint(s->d, "'%s' leaves required keys to the models that inherit from it",
                  tm->ast->name);
        return;
    }
    if (!tm->md) { m->failed = true; return; }
    const md_model *tmd = tm->md, *md = m->md;
    if (tmd->vocab != md->vocab && tmd->vocab > 0 && md->vocab > 0) {
        err(&b, t, val_loc(t), "teacher '%s' has vocab %" PRId64 " but model '%s' has %" PRId64,
            tm->ast->name, tmd->vocab, m->ast->name, md->vocab);
        diag_hint(s->d, "distillation compares the two output distributions token by token");
        return;
    }
    if (tmd->position == MD_POS_LEARNED && tmd->context < md->context && tmd->context > 0) {
        err(&b, t, val_loc(t), "teacher '%s' has context %" PRId64 ", shorter than the %" PRId64
            " of model '%s'", tm->ast->name, tmd->context, md->context, m->ast->name);
        return;
    }
    m->md->distill.teacher = tmd;
}
