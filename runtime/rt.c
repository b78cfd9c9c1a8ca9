/* rt.c - buffers, initialisation and the executor of a generated program. */
#include "rt.h"
#include "k_common.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double moe_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

moe_rt *moe_rt_create(const moe_program *p, int need, int decode, char *err, size_t errlen) {
    if (p->abi != MOE_ABI_VERSION) {
        snprintf(err, errlen, "program ABI %d does not match the runtime's %d", p->abi, MOE_ABI_VERSION);
        return NULL;
    }
    moe_rt *rt = calloc(1, sizeof *rt);
    if (!rt) { snprintf(err, errlen, "out of memory"); return NULL; }
    rt->prog = p;
    rt->dev = moe_device_cpu();
    size_t pb = (size_t)p->param_floats * sizeof(float);
    int64_t S = p->B_max * p->T_max;
    for (int i = 0; i < p->n_moe; i++) rt->n_loads += p->experts[i];
    rt->params = rt->dev->alloc(pb);
    rt->arena = rt->dev->alloc((size_t)p->arena_floats * sizeof(float));
    rt->tokens = rt->dev->alloc((size_t)S * sizeof(int32_t));
    rt->targets = rt->dev->alloc((size_t)S * sizeof(int32_t));
    rt->stats = calloc((size_t)4 * (p->n_moe + 1), sizeof(double));
    rt->step_ms = calloc((size_t)p->n_steps + 1, sizeof(double));
    float *loads = calloc((size_t)rt->n_loads + 1, sizeof(float));
    int ok = rt->params && rt->arena && rt->tokens && rt->targets && rt->stats && rt->step_ms && loads;
    if (ok && need >= MOE_RT_GRADS) ok = (rt->grads = rt->dev->alloc(pb)) != NULL;
    if (ok && need >= MOE_RT_OPTIMIZER) {
        rt->adam_m = rt->dev->alloc(pb);
        rt->adam_v = rt->dev->alloc(pb);
        ok = rt->adam_m && rt->adam_v;
    }
    if (ok && decode) ok = (rt->dec_arena = rt->dev->alloc((size_t)p->dec_arena_floats * sizeof(float))) != NULL;
    moe_ctx *c = &rt->ctx;
    c->act = rt->arena; c->params = rt->params; c->grads = rt->grads;
    c->adam_m = rt->adam_m; c->adam_v = rt->adam_v;
    c->tokens = rt->tokens; c->targets = rt->targets;
    c->B = (int)p->B_max; c->T = (int)p->T_max;
    c->loss_scale = 1.0f;
    c->aux = rt->stats; c->z = rt->stats + p->n_moe; c->dropped = rt->stats + 2 * p->n_moe;
    c->choices = rt->stats + 3 * p->n_moe;
    c->loads = loads;
    c->comm = moe_comm_local();
    c->clip = 1.0;
    if (!ok) {
        snprintf(err, errlen, "out of memory allocating %.1f MiB of buffers",
                 ((double)pb * (need == MOE_RT_OPTIMIZER ? 4 : need + 1) + p->arena_floats * 4.0) / 1048576.0);
        moe_rt_destroy(rt);
        return NULL;
    }
    return rt;
}

void moe_rt_destroy(moe_rt *rt) {
    if (!rt) return;
    const moe_device *d = rt->dev;
    d->free(rt->params); d->free(rt->grads); d->free(rt->adam_m); d->free(rt->adam_v);
    d->free(rt->arena); d->free(rt->dec_arena); d->free(rt->tokens); d->free(rt->targets);
    free(rt->stats); free(rt->step_ms); free(rt->ctx.loads);
    free(rt);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* N(0, std) from a stream of (seed, tensor name, expert index): the same model for any
 * number of ranks and any expert-parallel layout; norm weights 1, biases 0. */
void moe_rt_init_params(moe_rt *rt, uint64_t seed) {
    const moe_program *p = rt->prog;
    for (int i = 0; i < p->n_params; i++) {
        const moe_param_info *q = &p->params[i];
        float *w = rt->params + q->offset;
        if (q->init_one) { for (int64_t j = 0; j < q->numel; j++) w[j] = 1.0f; continue; }
        if (q->init_std == 0.0f) { memset(w, 0, sizeof(float) * (size_t)q->numel); continue; }
        int64_t E = q->expert ? q->shape[0] : 1, per = q->numel / E;
        uint64_t h = fnv1a(q->name);
        for (int64_t e = 0; e < E; e++) {
            uint64_t stream = k_rng_stream(seed, h, (uint64_t)e);
            float *we = w + e * per;
            #pragma omp parallel for schedule(static)
            for (int64_t j = 0; j < per; j++) we[j] = (float)(q->init_std * k_normal(stream, (uint64_t)j));
        }
    }
}

int moe_rt_shape(moe_rt *rt, int B, int T, char *err, size_t errlen) {
    const moe_program *p = rt->prog;
    if (B < 1 || T < 1) { snprintf(err, errlen, "batch and sequence length must be positive"); return -1; }
    if (T > p->T_max) {
        snprintf(err, errlen, "sequence length %d is longer than the model's context (%lld)", T, (long long)p->T_max);
        return -1;
    }
    if ((int64_t)B * T > p->B_max * p->T_max) {
        snprintf(err, errlen, "batch %d x %d tokens exceeds the compiled maximum of %lld tokens per step "
                 "(train.batch x context); rebuild with a larger train.batch", B, T, (long long)(p->B_max * p->T_max));
        return -1;
    }
    rt->ctx.B = B; rt->ctx.T = T;
    return 0;
}

static void run_steps(moe_rt *rt, const moe_step *steps, int n, int first, int last, const char *skip) {
    for (int i = 0; i < n; i++) {
        const moe_step *s = &steps[i];
        if (s->phase < first || s->phase > last) continue;
        if (skip && !strcmp(s->name, skip)) continue;
        if (rt->timing && steps == rt->prog->steps) {
            double t0 = moe_now_ms();
            s->fn(&rt->ctx);
            rt->step_ms[i] += moe_now_ms() - t0;
        } else {
            s->fn(&rt->ctx);
        }
    }
}

void moe_rt_run(moe_rt *rt, int first, int last) {
    rt->ctx.act = rt->arena;
    run_steps(rt, rt->prog->steps, rt->prog->n_steps, first, last, NULL);
}

void moe_rt_logits(moe_rt *rt) {
    rt->ctx.act = rt->arena;
    run_steps(rt, rt->prog->steps, rt->prog->n_steps, MOE_PHASE_FWD, MOE_PHASE_FWD, "xent");
}

const float *moe_rt_decode(moe_rt *rt, int32_t token, int pos) {
    moe_ctx saved = rt->ctx;
    rt->tokens[0] = token;
    rt->ctx.act = rt->dec_arena;
    rt->ctx.B = 1; rt->ctx.T = 1; rt->ctx.pos = pos;
    rt->ctx.mode = MOE_MODE_INFER;
    run_steps(rt, rt->prog->dec_steps, rt->prog->n_dec_steps, MOE_PHASE_FWD, MOE_PHASE_FWD, NULL);
    rt->ctx = saved;
    return rt->dec_arena + rt->prog->dec_logits_off;
}

double moe_rt_lm_loss(const moe_rt *rt) {
    int64_t S = (int64_t)rt->ctx.B * rt->ctx.T;
    const float *l = rt->arena + rt->prog->loss_off;
    double sum = 0.0;
    for (int64_t s = 0; s < S; s++) sum += l[s];
    return sum / (double)S;
}

