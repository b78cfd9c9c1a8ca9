/* rt.c - buffers, initialisation, statistics and the executor of a generated program. */
#include "rt.h"
#include "moe_rng.h"
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

moe_lr_sched moe_lr_program(const moe_program *p) {
    return (moe_lr_sched){p->schedule, p->lr, p->min_lr, p->warmup, p->train_steps};
}

double moe_lr_at(const moe_lr_sched *s, int64_t step) {
    if (step < s->warmup) return s->lr * (double)(step + 1) / (double)s->warmup;
    double f = s->steps > s->warmup ? (double)(step - s->warmup) / (double)(s->steps - s->warmup) : 1.0;
    if (f > 1.0) f = 1.0;
    if (s->kind == MOE_SCHED_COSINE) return s->min_lr + 0.5 * (s->lr - s->min_lr) * (1.0 + cos(3.14159265358979323846 * f));
    if (s->kind == MOE_SCHED_LINEAR) return s->lr - (s->lr - s->min_lr) * f;
    return s->lr;
}

double moe_train_flops_per_token(const moe_program *p, int64_t T) {
    double active = 0.0;
    for (int i = 0; i < p->n_params; i++) {
        const moe_param_info *q = &p->params[i];
        active += q->expert ? (double)q->numel * p->top_k / (double)q->shape[0] : (double)q->numel;
    }
    return 6.0 * active + 12.0 * (double)p->layers * (double)T * (double)p->hidden;
}

double moe_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The first device call that fails is remembered (sticky): later calls still run, and the
 * commands check moe_rt_error at the points where a result leaves the runtime. */
static void check(moe_rt *rt, int rc, const char *what) {
    if (rc == 0 || rt->err[0]) return;
    snprintf(rt->err, sizeof rt->err, "device %s: %s failed: %s", rt->dev->ops->name, what, rt->dev->err);
}

const char *moe_rt_error(const moe_rt *rt) { return rt->err[0] ? rt->err : NULL; }

/* a launch's library GEMM, its token dimension sized by the step's batch */
static void rt_gemm(moe_ctx *c, const moe_gemm_def *g) {
    moe_rt *rt = c->exec;
    int64_t rows = (int64_t)c->B * c->T;
    moe_gemm m = {g->trans_a, g->trans_b, (int)(g->rows == MOE_GEMM_ROWS_M ? rows * g->m : g->m), (int)g->n,
                  (int)(g->rows == MOE_GEMM_ROWS_K ? rows * g->k : g->k), g->alpha, g->beta,
                  (const float *)(c->buf[g->buf[0]] + g->off[0]), (const float *)(c->buf[g->buf[1]] + g->off[1]),
                  (float *)(c->buf[g->buf[2]] + g->off[2]), (int)g->ld[0], (int)g->ld[1], (int)g->ld[2], 1, 0, 0, 0,
                  g->dtype};
    check(rt, rt->dev->ops->gemm(rt->dev, &m), "gemm");
}

/* a launch's GEMM per expert (the expert GEMMs' library variant): the layer's expert offsets
 * downloaded (a wait), then a product per expert with rows */
static void rt_grouped(moe_ctx *c, const moe_launch_def *l) {
    moe_rt *rt = c->exec;
    const moe_gemm_def *g = &l->gemm;
    const moe_grouped_def *d = &l->grouped;
    int32_t off[MOE_MAX_GROUPED + 1];
    if (rt->err[0]) return;
    if (d->E < 1 || d->E > MOE_MAX_GROUPED) {
        snprintf(rt->err, sizeof rt->err, "grouped gemm: %d experts (at most %d)", d->E, MOE_MAX_GROUPED);
        return;
    }
    const uint8_t *rec = c->buf[d->counts_buf] + d->counts_off + sizeof(int32_t) * MOE_OFF(d->E);
    check(rt, rt->dev->ops->download(rt->dev, off, rec, sizeof(int32_t) * (size_t)(d->E + 1)), "expert offsets");
    int64_t es[3] = {g->dtype == MOE_F32 ? 4 : 2, g->dtype == MOE_F32 ? 4 : 2, 4};   /* A, B in dtype; C f32 */
    for (int e = 0; e < d->E && !rt->err[0]; e++) {
        int rows = off[e + 1] - off[e];
        if (rows <= 0) continue;
        uint8_t *p[3];
        for (int j = 0; j < 3; j++)
            p[j] = c->buf[g->buf[j]] + g->off[j] + es[j] * ((int64_t)off[e] * d->row[j] + (int64_t)e * d->expert[j]);
        moe_gemm m = {g->trans_a, g->trans_b, (int)(g->rows == MOE_GEMM_ROWS_M ? rows : g->m), (int)g->n,
                      (int)(g->rows == MOE_GEMM_ROWS_K ? rows : g->k), g->alpha, g->beta, (const float *)p[0],
                      (const float *)p[1], (float *)p[2], (int)g->ld[0], (int)g->ld[1], (int)g->ld[2], 1, 0, 0, 0,
                      g->dtype};
        check(rt, rt->dev->ops->gemm(rt->dev, &m), "grouped gemm");
    }
}

/* ctx.launch: one launch of a device kernel with the step's scalars (moe_abi.h), or a GEMM */
static void rt_launch(moe_ctx *c, const moe_launch_def *l) {
    moe_rt *rt = c->exec;
    if (l->kernel == -2) { rt_grouped(c, l); return; }
    if (l->kernel < 0) { rt_gemm(c, &l->gemm); return; }
    moe_kargs ka;
    memset(&ka, 0, sizeof ka);
    for (int b = 0; b < MOE_BUF_COUNT; b++) { ka.buf[b] = c->buf[b]; ka.size[b] = c->size[b]; }
    ka.B = c->B; ka.T = c->T; ka.mode = c->mode;
    ka.rng = c->rng; ka.loss_scale = c->loss_scale; ka.lr = c->lr; ka.opt_step = c->opt_step;
    ka.grad_scale = c->grad_scale;
    moe_offs o;
    memset(&o, 0, sizeof o);
    for (int j = 0; j < l->n_offs; j++) o.off[j] = l->offs[j];
    moe_launch cfg = {{l->grid, 1, 1}, {MOE_BLOCK_THREADS, 1, 1}, 0, rt->prog->kernels[l->kernel].block_sync};
    void *args[2] = {&ka, &o};
    if (rt->dev->ops->launch(rt->dev, rt->kern[l->kernel], &cfg, args) == 0) return;
    char what[160];     /* named only on failure: launches are the step's hot path */
    snprintf(what, sizeof what, "launch of %s", rt->prog->kernels[l->kernel].name);
    check(rt, -1, what);
}

/* the program's device kernels, compiled (or found) by the device */
static int compile_kernels(moe_rt *rt, char *err, size_t errlen) {
    const moe_program *p = rt->prog;
    moe_device *d = rt->dev;
    if (!p->n_kernels) return 0;
    rt->kern = calloc((size_t)p->n_kernels, sizeof *rt->kern);
    if (!rt->kern) { snprintf(err, errlen, "out of memory"); return -1; }
    for (int i = 0; i < p->n_kernels; i++)
        if (d->ops->compile(d, p->kernels[i].name, p->kernel_source, &rt->kern[i])) {
            snprintf(err, errlen, "device %s: %s", d->ops->name, d->err);
            return -1;
        }
    return 0;
}

/* "1.50 GiB", "12.0 MiB" */
static const char *rt_size(char *buf, int64_t bytes) {
    if (bytes >= ((int64_t)1 << 30)) snprintf(buf, 32, "%.2f GiB", bytes / 1073741824.0);
    else snprintf(buf, 32, "%.1f MiB", bytes / 1048576.0);
    return buf;
}

moe_rt *moe_rt_create(const moe_program *p, const char *device, int need, int decode, char *err, size_t errlen) {
    if (p->abi != MOE_ABI_VERSION) {
        snprintf(err, errlen, "program ABI %d does not match the runtime's %d", p->abi, MOE_ABI_VERSION);
        return NULL;
    }
    moe_rt *rt = calloc(1, sizeof *rt);
    if (!rt) { snprintf(err, errlen, "out of memory"); return NULL; }
    rt->prog = p;
    rt->dev = moe_device_open(device, p->target, err, errlen);
    if (!rt->dev) { free(rt); return NULL; }
    moe_device *d = rt->dev;
    const moe_device_ops *o = d->ops;
    /* which classes this command needs: the optimizer state only for training, ... */
    int want[MOE_BUF_COUNT] = {0};
    want[MOE_BUF_PARAM] = want[MOE_BUF_IO] = want[MOE_BUF_STAGING] = 1;
    want[MOE_BUF_GRAD] = need >= MOE_RT_GRADS;
    want[MOE_BUF_OPT] = need >= MOE_RT_OPTIMIZER;
    want[MOE_BUF_COMM] = p->buf_bytes[MOE_BUF_COMM] > 0;
    /* a host-memory device: refuse a plan the machine (or its cgroup, or a ulimit) cannot hold,
     * rather than be killed half-way with no message */
    int64_t plan = decode > 0 ? p->decode.act_bytes + (int64_t)decode * p->buf_bytes[MOE_BUF_KV] : 0;
    for (int b = 0; b < MOE_BUF_COUNT; b++) plan += want[b] ? p->buf_bytes[b] : 0;     /* (KV above) */
    plan += p->train.act_bytes;
    char why[128];
    int64_t avail = o->host_memory ? moe_mem_available(why, sizeof why) : -1;
    if (avail >= 0 && plan > avail) {
        char a[32], b[32], c[32], e[32];
        snprintf(err, errlen, "this run needs %s of memory (parameters %s, activations %s) but %s %s available (%s); %s",
                 rt_size(a, plan), rt_size(b, p->buf_bytes[MOE_BUF_PARAM]), rt_size(c, p->train.act_bytes),
                 rt_size(e, avail), avail == 0 ? "is" : "are", why,
                 !strncmp(why, "ulimit -v", 9) ? "raise ulimit -v, or use fewer threads (OMP_NUM_THREADS)"
                                               : "lower train.batch or the context");
        moe_device_close(rt->dev);
        free(rt);
        return NULL;
    }
    int ok = 1;
    for (int b = 0; b < MOE_BUF_COUNT && ok; b++) {
        if (!want[b]) continue;
        size_t bytes = (size_t)p->buf_bytes[b];
        rt->buf[b] = b == MOE_BUF_STAGING ? o->host_alloc(d, bytes) : o->alloc(d, bytes);
        ok = rt->buf[b] != NULL;
    }
    if (ok) { rt->act = o->alloc(d, (size_t)p->train.act_bytes); ok = rt->act != NULL; }
    if (ok && decode > 0) {
        rt->n_slots = decode;
        rt->dec_logits = malloc(sizeof(float) * (size_t)(p->vocab * decode));    /* a row per slot */
        rt->dec_act = o->alloc(d, (size_t)p->decode.act_bytes);
        rt->buf[MOE_BUF_KV] = o->alloc(d, (size_t)(decode * p->buf_bytes[MOE_BUF_KV]));
        ok = rt->dec_logits && rt->dec_act && rt->buf[MOE_BUF_KV];
    }
    rt->step_ms = calloc((size_t)p->train.n_steps + 1, sizeof(double));
    ok = ok && rt->step_ms;
    if (!ok) {
        snprintf(err, errlen, "out of memory allocating %.1f MiB of buffers on device %s%s%s", plan / 1048576.0,
                 o->name, d->err[0] ? ": " : "", d->err);
        moe_rt_destroy(rt);
        return NULL;
    }
    if (compile_kernels(rt, err, errlen)) { moe_rt_destroy(rt); return NULL; }
    rt->tokens = (int32_t *)(rt->buf[MOE_BUF_STAGING] + p->tokens_off);
    rt->targets = (int32_t *)(rt->buf[MOE_BUF_STAGING] + p->targets_off);
    moe_ctx *c = &rt->ctx;
    for (int b = 0; b < MOE_BUF_COUNT; b++) {
        c->buf[b] = rt->buf[b];
        c->size[b] = rt->buf[b] ? p->buf_bytes[b] : 0;
    }
    c->size[MOE_BUF_KV] *= rt->n_slots;
    c->buf[MOE_BUF_ACT] = rt->act;
    c->size[MOE_BUF_ACT] = p->train.act_bytes;
    c->launch = rt_launch;
    c->exec = rt;
    c->comm = moe_comm_world();
    c->B = (int)p->train.B_max;
    c->T = (int)p->train.T_max;
    c->loss_scale = 1.0f;
    c->grad_scale = 1.0f;
    rt->scaler.scale = p->half == MOE_F16 ? MOE_SCALE_INIT : 1.0;
    return rt;
}

void moe_rt_destroy(moe_rt *rt) {
    if (!rt) return;
    moe_device *d = rt->dev;
    if (d) {
        for (int b = 0; b < MOE_BUF_COUNT; b++) {
            if (!rt->buf[b]) continue;
            if (b == MOE_BUF_STAGING) d->ops->host_free(d, rt->buf[b]);
            else d->ops->free(d, rt->buf[b]);
        }
        if (rt->act) d->ops->free(d, rt->act);
        for (int i = 0; rt->kern && i < rt->prog->n_kernels; i++)
            if (rt->kern[i]) d->ops->release(d, rt->kern[i]);
        if (rt->dec_act) d->ops->free(d, rt->dec_act);
        moe_device_close(d);
    }
    free(rt->dec_logits);
    free(rt->step_ms);
    free(rt->kern);
    free(rt);
}

int moe_param_degree(const moe_param_info *q) { return q->expert ? (int)(q->experts_all / q->shape[0]) : 1; }

int64_t moe_rt_first_expert(const moe_rt *rt, const moe_param_info *q) {
    return moe_comm_data_rank(rt->ctx.comm) % moe_param_degree(q) * (q->expert ? q->shape[0] : 0);
}

int64_t moe_tp_index(const moe_param_info *q, int t, int64_t j) {
    if (q->tp <= 1) return j;
    int64_t inner = 1, len = q->shape[q->tp_dim], whole = 0;
    for (int d = q->tp_dim + 1; d < q->ndim; d++) inner *= q->shape[d];
    for (int s = 0; s < 3; s++) whole += q->tp_seg[s];
    int64_t outer = j / (len * inner), u = j / inner % len, in = j % inner, at = 0, seg0 = 0;
    for (int s = 0; s < 3 && q->tp_seg[s]; s++) {   /* u's segment, and its place in part t of it */
        int64_t part = q->tp_seg[s] / q->tp;
        if (u < at + part) return (outer * whole + seg0 + t * part + (u - at)) * inner + in;
        at += part;
        seg0 += q->tp_seg[s];
    }
    return -1;
}

/* N(0, std) from a stream of (seed, tensor name, expert index), each value the draw of its
 * index in the whole tensor: the same model for any number of ranks and any layout; norm
 * weights 1, biases 0. Values are made on the host a chunk at a time and uploaded. */
static int init_table(moe_rt *rt, const moe_param_info *params, int n_params, uint8_t *buf, uint64_t seed, char *err,
                      size_t errlen) {
    enum { CHUNK = 1 << 20 };
    moe_device *d = rt->dev;
    float *host = malloc(sizeof(float) * CHUNK);
    if (!host) { snprintf(err, errlen, "out of memory"); return -1; }
    for (int i = 0; i < n_params; i++) {
        const moe_param_info *q = &params[i];
        uint8_t *w = buf + q->offset;
        if (!q->init_one && q->init_std == 0.0f) {
            check(rt, d->ops->memset(d, w, 0, sizeof(float) * (size_t)q->numel), "memset");
            continue;
        }
        int64_t E = q->expert ? q->shape[0] : 1, per = q->numel / E, first = moe_rt_first_expert(rt, q);
        int t = moe_comm_tensor_rank(rt->ctx.comm);
        for (int64_t e = 0; e < E; e++) {
            uint64_t stream = moe_rng_stream(seed, q->name_hash, (uint64_t)(first + e));
            for (int64_t j0 = 0; j0 < per; j0 += CHUNK) {
                int64_t n = per - j0 < CHUNK ? per - j0 : CHUNK;
                #pragma omp parallel for schedule(static)
                for (int64_t j = 0; j < n; j++) {   /* the value's index in its whole expert (or tensor) */
                    int64_t at = moe_tp_index(q, t, e * per + j0 + j) - e * per * q->tp;
                    host[j] = q->init_one ? 1.0f : (float)(q->init_std * moe_normal(stream, (uint64_t)at));
                }
                check(rt, d->ops->upload(d, w + sizeof(float) * (size_t)(e * per + j0), host, sizeof(float) * (size_t)n),
                      "upload");
            }
        }
    }
    free(host);
    if (moe_rt_error(rt)) { snprintf(err, errlen, "%s", moe_rt_error(rt)); return -1; }
    return 0;
}

int moe_rt_init_params(moe_rt *rt, uint64_t seed, char *err, size_t errlen) {
    return init_table(rt, rt->prog->params, rt->prog->n_params, rt->buf[MOE_BUF_PARAM], seed, err, errlen);
}

/* buffer class c, which only some commands use, allocated at its first use (`what` names it) */
static int class_buffer(moe_rt *rt, moe_buf c, const char *what, char *err, size_t errlen) {
    moe_device *d = rt->dev;
    size_t bytes = (size_t)rt->prog->buf_bytes[c];
    if (!rt->buf[c] && !(rt->buf[c] = d->ops->alloc(d, bytes))) {
        snprintf(err, errlen, "out of memory allocating %.1f MiB of %s on device %s", bytes / 1048576.0, what,
                 d->ops->name);
        return -1;
    }
    rt->ctx.buf[c] = rt->buf[c];
    rt->ctx.size[c] = (int64_t)bytes;
    return 0;
}

int moe_rt_teacher_buffer(moe_rt *rt, char *err, size_t errlen) {
    if (!rt->prog->teacher) {
        snprintf(err, errlen, "model %s has no distill block, so it takes no teacher", rt->prog->model);
        return -1;
    }
    return class_buffer(rt, MOE_BUF_TPARAM, "the teacher's parameters", err, errlen);
}

int moe_rt_q8_buffer(moe_rt *rt, char *err, size_t errlen) {
    return class_buffer(rt, MOE_BUF_QPARAM, "int8 expert weights", err, errlen);
}

void moe_rt_q8_release(moe_rt *rt) {
    if (rt->buf[MOE_BUF_QPARAM]) rt->dev->ops->free(rt->dev, rt->buf[MOE_BUF_QPARAM]);
    rt->buf[MOE_BUF_QPARAM] = rt->ctx.buf[MOE_BUF_QPARAM] = NULL;
    rt->ctx.size[MOE_BUF_QPARAM] = 0;
}

int moe_rt_init_teacher(moe_rt *rt, uint64_t seed, char *err, size_t errlen) {
    if (moe_rt_teacher_buffer(rt, err, errlen)) return -1;
    const moe_teacher *t = rt->prog->teacher;
    if (init_table(rt, t->params, t->n_params, rt->buf[MOE_BUF_TPARAM], seed, err, errlen)) return -1;
    rt->kd = 1;
    return 0;
}

int moe_rt_shape(moe_rt *rt, int B, int T, char *err, size_t errlen) {
    const moe_schedule *s = &rt->prog->train;
    if (B < 1 || T < 1) { snprintf(err, errlen, "batch and sequence length must be positive"); return -1; }
    if (T > s->T_max) {
        snprintf(err, errlen, "sequence length %d is longer than the model's context (%lld)", T, (long long)s->T_max);
        return -1;
    }
    if ((int64_t)B * T > s->B_max * s->T_max) {
        snprintf(err, errlen, "batch %d x %d tokens exceeds the compiled maximum of %lld tokens per step "
                 "(train.batch x context); rebuild with a larger train.batch", B, T, (long long)(s->B_max * s->T_max));
        return -1;
    }
    rt->ctx.B = B; rt->ctx.T = T;
    return 0;
}

void moe_rt_upload_batch(moe_rt *rt) {
    const moe_program *p = rt->prog;
    size_t bytes = sizeof(int32_t) * (size_t)rt->ctx.B * (size_t)rt->ctx.T;
    moe_device *d = rt->dev;
    check(rt, d->ops->upload(d, rt->buf[MOE_BUF_IO] + p->tokens_off, rt->tokens, bytes), "upload");
    check(rt, d->ops->upload(d, rt->buf[MOE_BUF_IO] + p->targets_off, rt->targets, bytes), "upload");
}

/* the steps of `s` with phase in [first, last] and none of the kinds in `skip` */
static void run_steps(moe_rt *rt, const moe_schedule *s, int first, int last, unsigned skip, int timed) {
    moe_device *d = rt->dev;
    for (int i = 0; i < s->n_steps; i++) {
        const moe_step *st = &s->steps[i];
        if (st->phase < first || st->phase > last || (st->kind & skip)) continue;
        if (!timed) { st->fn(&rt->ctx); continue; }
        double t0 = moe_now_ms();
        st->fn(&rt->ctx);
        check(rt, d->ops->sync(d), "sync");
        rt->step_ms[i] += moe_now_ms() - t0;
    }
}

void moe_rt_run(moe_rt *rt, int first, int last) {
    rt->ctx.buf[MOE_BUF_ACT] = rt->act;
    run_steps(rt, &rt->prog->train, first, last, rt->kd ? 0 : MOE_STEP_KD, rt->timing);
}

void moe_rt_run_step(moe_rt *rt, int i) {
    rt->ctx.buf[MOE_BUF_ACT] = rt->act;
    rt->prog->train.steps[i].fn(&rt->ctx);
}

void moe_rt_logits(moe_rt *rt) {
    rt->ctx.buf[MOE_BUF_ACT] = rt->act;
    run_steps(rt, &rt->prog->train, MOE_PHASE_FWD, MOE_PHASE_FWD, MOE_STEP_LOSS | MOE_STEP_KD, 0);
}

/* The head fused with the loss (train.head_x_off): logits = x W on the host, from the head's
 * input rows and its weight (lm_head.weight [hidden, V], or the tied wte.weight [V, hidden]). */
static void head_logits(moe_rt *rt, int64_t row0, int64_t n, float *out) {
    const moe_program *p = rt->prog;
    const char *name = p->tied ? "wte.weight" : "lm_head.weight";
    const moe_param_info *w = NULL;
    for (int i = 0; i < p->n_params && !w; i++) w = !strcmp(p->params[i].name, name) ? &p->params[i] : NULL;
    size_t d = (size_t)p->hidden, V = (size_t)p->vocab;
    float *x = malloc(sizeof(float) * d * (size_t)n), *W = malloc(sizeof(float) * d * V);
    if (!w || !x || !W) {
        if (!rt->err[0])
            snprintf(rt->err, sizeof rt->err, "the logits: %s", !w ? "the program has no head weight" : "out of memory");
    } else {
        check(rt, rt->dev->ops->download(rt->dev, x, rt->act + p->train.head_x_off + sizeof(float) * d * (size_t)row0,
                                         sizeof(float) * d * (size_t)n), "download");
        check(rt, rt->dev->ops->download(rt->dev, W, rt->buf[MOE_BUF_PARAM] + w->offset, sizeof(float) * d * V),
              "download");
        cblas_sgemm(CblasRowMajor, CblasNoTrans, p->tied ? CblasTrans : CblasNoTrans, (int)n, (int)V, (int)d, 1.0f, x,
                    (int)d, W, p->tied ? (int)d : (int)V, 0.0f, out, (int)V);
    }
    free(x);
    free(W);
}

void moe_rt_read_logits(moe_rt *rt, int64_t row0, int64_t n, float *out) {
    size_t V = (size_t)rt->prog->vocab;
    if (rt->prog->train.logits_off < 0) {
        head_logits(rt, row0, n, out);
        return;
    }
    const uint8_t *src = rt->act + rt->prog->train.logits_off + sizeof(float) * V * (size_t)row0;
    check(rt, rt->dev->ops->download(rt->dev, out, src, sizeof(float) * V * (size_t)n), "download");
}

moe_ctx moe_rt_decode_begin(moe_rt *rt, int k, const int32_t *tok, const int32_t *pos, const int32_t *slot) {
    const moe_program *p = rt->prog;
    moe_device *d = rt->dev;
    moe_ctx saved = rt->ctx;
    uint8_t *io = rt->buf[MOE_BUF_IO];
    size_t bytes = sizeof(int32_t) * (size_t)k;
    check(rt, d->ops->upload(d, io + p->tokens_off, tok, bytes), "upload");
    check(rt, d->ops->upload(d, io + p->pos_off, pos, bytes), "upload");
    check(rt, d->ops->upload(d, io + p->slot_off, slot, bytes), "upload");
    rt->ctx.buf[MOE_BUF_ACT] = rt->dec_act;
    rt->ctx.size[MOE_BUF_ACT] = p->decode.act_bytes;
    rt->ctx.B = k;
    rt->ctx.T = 1;
    rt->ctx.mode = MOE_MODE_INFER;
    return saved;
}

void moe_rt_run_decode_step(moe_rt *rt, int i) { rt->prog->decode.steps[i].fn(&rt->ctx); }

const float *moe_rt_decode_rows(moe_rt *rt, int n, const int32_t *tok, const int32_t *pos, const int32_t *slot) {
    const moe_program *p = rt->prog;
    moe_device *d = rt->dev;
    if (n < 1 || n > rt->n_slots) {
        if (!rt->err[0]) snprintf(rt->err, sizeof rt->err, "decode of %d rows (%d slots)", n, rt->n_slots);
        return rt->dec_logits;
    }
    moe_ctx saved = rt->ctx;
    for (int r0 = 0; r0 < n; r0 += (int)p->decode.B_max) {     /* passes of the program's rows */
        int k = n - r0 < p->decode.B_max ? n - r0 : (int)p->decode.B_max;
        moe_rt_decode_begin(rt, k, tok + r0, pos + r0, slot + r0);
        run_steps(rt, &p->decode, MOE_PHASE_FWD, MOE_PHASE_FWD, 0, 0);
        check(rt, d->ops->download(d, rt->dec_logits + (size_t)r0 * p->vocab, rt->dec_act + p->decode.logits_off,
                                   sizeof(float) * (size_t)(p->vocab * k)), "download");
    }
    rt->ctx = saved;
    return rt->dec_logits;
}

const float *moe_rt_decode(moe_rt *rt, int slot, int32_t token, int pos) {
    return moe_rt_decode_rows(rt, 1, &token, &(int32_t){pos}, &(int32_t){slot});
}

void moe_rt_zero_grads(moe_rt *rt) {
    check(rt, rt->dev->ops->memset(rt->dev, rt->buf[MOE_BUF_GRAD], 0, (size_t)rt->prog->buf_bytes[MOE_BUF_GRAD]),
          "memset");
}

void moe_rt_stats_clear(moe_rt *rt) {
    const moe_program *p = rt->prog;
    check(rt, rt->dev->ops->memset(rt->dev, rt->buf[MOE_BUF_IO] + p->stats_off, 0, sizeof(double) * (size_t)p->n_stats),
          "memset");
}

/* s from the record's host copy st */
static void stats_sum_up(const moe_program *p, const double *st, moe_stats *s) {
    memset(s, 0, sizeof *s);
    s->lm = st[MOE_STAT_LM];
    s->grad_norm = st[MOE_STAT_GNORM];
    s->kd = st[MOE_STAT_KD];
    for (int i = 0; i < p->n_moe; i++) {
        const double *l = st + MOE_STAT_LAYER(i);
        s->aux += l[MOE_STAT_AUX];
        s->z += l[MOE_STAT_Z];
        s->dropped += l[MOE_STAT_DROPPED];
        s->choices += l[MOE_STAT_CHOICES];
    }
    s->record = st;
}

void moe_rt_stats_read(moe_rt *rt, moe_stats *s) {
    const moe_program *p = rt->prog;
    double *st = (double *)(rt->buf[MOE_BUF_STAGING] + p->stats_off);
    check(rt, rt->dev->ops->download(rt->dev, st, rt->buf[MOE_BUF_IO] + p->stats_off, sizeof(double) * (size_t)p->n_stats),
          "download");
    stats_sum_up(p, st, s);
}

void moe_rt_stats_copy(moe_rt *rt, double *host, int back) {
    const moe_program *p = rt->prog;
    uint8_t *dev = rt->buf[MOE_BUF_IO] + p->stats_off;
    size_t n = sizeof(double) * (size_t)p->n_stats;
    if (back) check(rt, rt->dev->ops->upload(rt->dev, dev, host, n), "upload");
    else check(rt, rt->dev->ops->download(rt->dev, host, dev, n), "download");
}

void moe_rt_stats_reduce(moe_rt *rt, moe_stats *s, int mean) {
    const moe_program *p = rt->prog;
    const moe_comm *c = rt->ctx.comm;
    double *st = (double *)(rt->buf[MOE_BUF_STAGING] + p->stats_off);
    int R = moe_comm_data_size(c);     /* the ranks of a tensor group hold the same figures */
    if (R <= 1) return;
    c->group_sum(c, MOE_GROUP_DATA, 1, st, p->n_stats, 1);     /* host memory: staging */
    if (mean)
        for (int i = 0; i < p->n_stats; i++) st[i] /= R;
    stats_sum_up(p, st, s);
}

void moe_rt_grads_sum(moe_rt *rt) {
    const moe_comm *c = rt->ctx.comm;
    const moe_program *p = rt->prog;
    if (moe_comm_data_size(c) <= 1 || !rt->buf[MOE_BUF_GRAD]) return;
    if (p->par_expert <= 1) {
        c->group_sum(c, MOE_GROUP_DATA, 1, rt->buf[MOE_BUF_GRAD], p->buf_bytes[MOE_BUF_GRAD] / (int64_t)sizeof(float), 0);
        return;
    }
    /* an expert's gradient sums over the ranks that hold it (each has its group's tokens' part),
     * the others' over the data-parallel group (the expert-data group of degree 1) */
    for (int i = 0; i < p->n_params; i++) {
        const moe_param_info *q = &p->params[i];
        c->group_sum(c, MOE_GROUP_EXPERT_DATA, moe_param_degree(q), rt->buf[MOE_BUF_GRAD] + q->offset, q->numel, 0);
    }
}

int moe_scaler_update(moe_scaler *s, double grad_norm) {
    if (!isfinite(grad_norm)) {
        s->skipped++;
        s->good = 0;
        s->scale = s->scale > 2.0 ? s->scale / 2.0 : 1.0;
        return 1;
    }
    if (++s->good >= MOE_SCALE_WINDOW) {
        s->good = 0;
        if (s->scale < 16777216.0) s->scale *= 2.0;     /* (2^24: far beyond what fp16 needs) */
    }
    return 0;
}
