/* ckpt.c - checkpoints: the model's tensors in a safetensors file, the optimizer state
 * beside it, and the "newest complete checkpoint in DIR" rule of --resume.
 *
 * In a directory, step N is DIR/step-NNNNNNNN.safetensors (weights, names of
 * moe-language.md section 7) and DIR/step-NNNNNNNN.optim.safetensors (AdamW moments
 * "m.NAME" and "v.NAME", metadata "step"). The optimizer file is written first and the
 * weights file last, each atomically, so a weights file under its final name means the
 * checkpoint is complete. Every file says what it holds (metadata "content": weights,
 * optimizer or gradients), and a reader refuses a file that holds something else. Loaded
 * values must be finite.
 */
#include "rt.h"
#include "st.h"
#include "quant.h"
#include "moe_hash.h"
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

/* A model's parameter table: the program's, or its distillation teacher's. */
typedef struct ptable { const char *model; int n; const moe_param_info *params; } ptable;

static ptable program_table(const moe_program *p) { return (ptable){p->model, p->n_params, p->params}; }

/* A tensor's shape in a file: expert tensors hold every expert, and split tensors every part,
 * whatever share a rank holds. */
static void file_shape(const moe_param_info *q, int64_t shape[3]) {
    for (int d = 0; d < 3; d++) shape[d] = q->shape[d];
    if (q->expert) shape[0] = q->experts_all;
    if (q->tp > 1) shape[q->tp_dim] *= q->tp;
}

/* The model's identity in a checkpoint: FNV-1a over its name and parameter table (names and
 * shapes in the file), so that --resume refuses another model's run even where tensor names
 * agree, and takes the same model's run in any layout. */
static uint64_t model_hash(const moe_program *p) {
    uint64_t h = util_hash_str(p->model);
    for (int i = 0; i < p->n_params; i++) {
        int64_t shape[3];
        file_shape(&p->params[i], shape);
        h = (h ^ util_hash_str(p->params[i].name)) * 1099511628211ull;
        h = (h ^ util_hash_bytes(shape, sizeof shape)) * 1099511628211ull;
    }
    return h;
}

/* A checkpoint file holds one or more groups: a device buffer in the parameter layout whose
 * tensors are named PREFIX + parameter name ("" for weights, "m." and "v." for AdamW). */
typedef struct group { uint8_t *buf; const char *prefix; } group;

/* moe_st_fetch: tensor data comes from the device, a piece at a time, or from the host copy
 * that gathered an expert tensor's shares */
typedef struct fetch_ctx { moe_device *dev; const moe_st_out *t0; float **host; } fetch_ctx;
static int fetch(void *ctx, const moe_st_out *t, size_t off, void *dst, size_t n) {
    fetch_ctx *f = ctx;
    const float *host = f->host[t - f->t0];
    if (host) return memcpy(dst, (const char *)host + off, n), 0;
    return f->dev->ops->download(f->dev, dst, (const uint8_t *)t->data + off, n);
}

/* An expert tensor spread over an expert group: every rank sends its share to the group's
 * first rank, which gets them whole in *all (host memory). 0, or -1 out of memory. */
static int gather_experts(const moe_rt *rt, const moe_param_info *q, const uint8_t *buf, float **all) {
    const moe_comm *c = rt->ctx.comm;
    int P = moe_param_degree(q), first = moe_comm_data_rank(c) % P == 0;
    float *mine = malloc(sizeof(float) * (size_t)q->numel);
    *all = first ? malloc(sizeof(float) * (size_t)(q->numel * P)) : NULL;
    int can = mine && (*all || !first);
    int ok = can && !rt->dev->ops->download(rt->dev, mine, buf + q->offset, sizeof(float) * (size_t)q->numel);
    /* a rank that cannot take part leaves the others waiting: the watchdog (--comm-timeout) ends the job */
    if (can) c->gather_f32(c, P, mine, *all, q->numel);
    free(mine);
    return ok ? 0 : -1;
}

/* A tensor split over the tensor groups: the parts of this rank's group, put together whole in
 * *all (host memory) on the first rank of the world (NULL elsewhere). 0, or -1 out of memory. */
static int gather_slices(const moe_rt *rt, const moe_param_info *q, const uint8_t *buf, float **all) {
    const moe_comm *c = rt->ctx.comm;
    size_t n = (size_t)q->numel, T = (size_t)q->tp;
    float *mine = malloc(sizeof(float) * n), *parts = malloc(sizeof(float) * n * T);
    *all = c->rank == 0 ? malloc(sizeof(float) * n * T) : NULL;
    int can = mine && parts && (*all || c->rank);
    int ok = can && !rt->dev->ops->download(rt->dev, mine, buf + q->offset, sizeof(float) * n);
    /* a rank that cannot take part leaves the others waiting: the watchdog (--comm-timeout) ends the job */
    if (can) c->allgather_f32(c, MOE_GROUP_TENSOR, q->tp, mine, parts, q->numel);
    for (size_t t = 0; ok && *all && t < T; t++)
        for (size_t j = 0; j < n; j++) (*all)[moe_tp_index(q, (int)t, (int64_t)j)] = parts[t * n + j];
    free(mine);
    free(parts);
    return ok ? 0 : -1;
}

/* The groups' tensors into PATH, by the first rank. Under expert parallelism or tensor slicing
 * every rank calls it (each sends its share of the experts, or its slices) and only the first
 * writes. */
static int save_groups(const moe_rt *rt, const group *g, int ng, const char *path, const char *const *meta,
                       int n_meta, char *err, size_t errlen) {
    const moe_program *p = rt->prog;
    int n = p->n_params * ng, lead = rt->ctx.comm->rank == 0;
    moe_st_out *t = calloc((size_t)n, sizeof *t);
    float **host = calloc((size_t)n, sizeof *host);
    char *names = calloc((size_t)n, 256);
    int rc = -1, gathered = 0;
    for (int k = 0; k < ng; k++)      /* first, on every rank alike */
        for (int i = 0; i < p->n_params; i++) {
            const moe_param_info *q = &p->params[i];
            float *all = NULL;
            if (moe_param_degree(q) > 1) gathered |= gather_experts(rt, q, g[k].buf, &all);
            else if (q->tp > 1) gathered |= gather_slices(rt, q, g[k].buf, &all);
            if (host) host[k * p->n_params + i] = all;
            else free(all);
        }
    if (moe_rt_error(rt)) {
        snprintf(err, errlen, "%s: not written: %s", path, moe_rt_error(rt));
    } else if (!t || !names || !host || gathered) {
        snprintf(err, errlen, "out of memory");
    } else if (!lead) {
        rc = 0;
    } else {
        for (int k = 0; k < ng; k++)
            for (int i = 0; i < p->n_params; i++) {
                const moe_param_info *q = &p->params[i];
                int j = k * p->n_params + i;
                snprintf(names + 256 * j, 256, "%s%s", g[k].prefix, q->name);
                t[j].name = names + 256 * j;
                t[j].ndim = q->ndim;
                file_shape(q, t[j].shape);
                t[j].data = (const float *)(g[k].buf + q->offset);     /* a device address */
            }
        fetch_ctx fc = {rt->dev, t, host};
        rc = moe_st_write_fetch(path, t, n, meta, n_meta, fetch, &fc, err, errlen);
    }
    for (int j = 0; host && j < n; j++) free(host[j]);
    free(host);
    free(names);
    free(t);
    return rc;
}

/* PATH's optimizer file: "x.safetensors" -> "x.optim.safetensors". -1 if it does not fit. */
static int optim_path(const char *path, char *out, size_t n) {
    size_t len = strlen(path);
    const char *ext = ".safetensors";
    size_t el = strlen(ext);
    int k = len >= el && !strcmp(path + len - el, ext) ? snprintf(out, n, "%.*s.optim%s", (int)(len - el), path, ext)
                                                       : snprintf(out, n, "%s.optim", path);
    return k < 0 || (size_t)k >= n ? -1 : 0;
}

int moe_ckpt_save(const moe_rt *rt, const char *path, int64_t step, uint64_t seed, int with_optimizer, char *err,
                  size_t errlen) {
    char stepbuf[32], seedbuf[32], hashbuf[32], opath[4096];
    snprintf(stepbuf, sizeof stepbuf, "%" PRId64, step);
    snprintf(seedbuf, sizeof seedbuf, "%" PRIu64, seed);
    snprintf(hashbuf, sizeof hashbuf, "%016" PRIx64, model_hash(rt->prog));
    char scale[40], good[32], skipped[32];     /* fp16: the loss scaler (rt.h), to continue it exactly */
    snprintf(scale, sizeof scale, "%.17g", rt->scaler.scale);
    snprintf(good, sizeof good, "%" PRId64, rt->scaler.good);
    snprintf(skipped, sizeof skipped, "%" PRId64, rt->scaler.skipped);
    const char *meta[] = {"format", "moec-1", "model", rt->prog->model, "step", stepbuf, "seed", seedbuf,
                          "model_hash", hashbuf, "content", "optimizer", "loss_scale", scale, "scale_good", good,
                          "skipped_steps", skipped};
    int n_meta = rt->prog->half == MOE_F16 ? 9 : 6;
    if (with_optimizer && rt->buf[MOE_BUF_OPT]) {
        if (optim_path(path, opath, sizeof opath)) { snprintf(err, errlen, "%s: path too long", path); return -1; }
        group g[2] = {{rt->buf[MOE_BUF_OPT], "m."}, {rt->buf[MOE_BUF_OPT] + rt->prog->buf_bytes[MOE_BUF_PARAM], "v."}};
        if (save_groups(rt, g, 2, opath, meta, n_meta, err, errlen)) return -1;
    }
    meta[11] = "weights";
    group w = {rt->buf[MOE_BUF_PARAM], ""};
    return save_groups(rt, &w, 1, path, meta, n_meta, err, errlen);
}

int moe_ckpt_save_grads(const moe_rt *rt, const char *path, char *err, size_t errlen) {
    const char *meta[] = {"format", "moec-1", "model", rt->prog->model, "content", "gradients"};
    group g = {rt->buf[MOE_BUF_GRAD], ""};
    return save_groups(rt, &g, 1, path, meta, 3, err, errlen);
}

int moe_ckpt_save_hf(const moe_rt *rt, const char *path, char *err, size_t errlen) {
    const char *meta[] = {"format", "pt"};      /* what Hugging Face's loader requires */
    group w = {rt->buf[MOE_BUF_PARAM], ""};
    return save_groups(rt, &w, 1, path, meta, 1, err, errlen);
}

/* the name of the scales of int8 tensor `name` */
static void scale_name(char *out, size_t n, const char *name) { snprintf(out, n, "%s_scale", name); }

int moe_ckpt_save_q8(const moe_rt *rt, const char *path, int64_t step, double *max_err, int64_t bytes[2], char *err,
                     size_t errlen) {
    const moe_program *p = rt->prog;
    int n = 0, rc = -1;
    moe_st_out *t = calloc((size_t)p->n_params * 2 + 1, sizeof *t);
    void **mem = calloc((size_t)p->n_params * 3 + 1, sizeof *mem);     /* weights, int8, scales */
    char *names = calloc((size_t)p->n_params + 1, 600);
    *max_err = 0.0;
    bytes[0] = bytes[1] = 0;
    if (!t || !mem || !names) { snprintf(err, errlen, "out of memory"); goto done; }
    for (int i = 0; i < p->n_params; i++) {
        const moe_param_info *q = &p->params[i];
        float *w = mem[3 * i] = malloc(sizeof(float) * (size_t)q->numel);
        if (!w) { snprintf(err, errlen, "out of memory"); goto done; }
        if (rt->dev->ops->download(rt->dev, w, rt->buf[MOE_BUF_PARAM] + q->offset, sizeof(float) * (size_t)q->numel)) {
            snprintf(err, errlen, "%s: not written: reading '%s' from device %s failed", path, q->name, rt->dev->ops->name);
            goto done;
        }
        moe_st_out *o = &t[n++];
        *o = (moe_st_out){.name = q->name, .ndim = q->ndim, .shape = {q->shape[0], q->shape[1], q->shape[2]}, .data = w};
        if (q->qoffset < 0) continue;
        int64_t E = q->shape[0], K = q->shape[1], N = q->shape[2];
        int8_t *qv = mem[3 * i + 1] = malloc((size_t)q->numel);
        float *s = mem[3 * i + 2] = malloc(sizeof(float) * (size_t)(E * N));
        if (!qv || !s) { snprintf(err, errlen, "out of memory"); goto done; }
        moe_q8_quantize(w, E, K, N, qv, s);
        for (int64_t j = 0; j < q->numel; j++) {
            float sc = s[(j / (K * N)) * N + j % N];
            if (sc > 0) *max_err = fmax(*max_err, fabs(w[j] - sc * qv[j]) / sc);
        }
        o->data = qv;
        o->dtype = MOE_ST_I8;
        scale_name(names + 600 * i, 600, q->name);
        t[n++] = (moe_st_out){.name = names + 600 * i, .ndim = 2, .shape = {E, N}, .data = s};
        bytes[0] += 4 * q->numel;
        bytes[1] += q->numel + 4 * E * N;
    }
    char stepbuf[32], hashbuf[32];
    snprintf(stepbuf, sizeof stepbuf, "%" PRId64, step);
    snprintf(hashbuf, sizeof hashbuf, "%016" PRIx64, model_hash(p));
    const char *meta[] = {"format", "moec-1", "model", p->model, "model_hash", hashbuf, "content", "weights-int8",
                          "quantization", "int8, symmetric, one scale per output channel", "step", stepbuf};
    rc = moe_st_write(path, t, n, meta, step > 0 ? 6 : 5, err, errlen);     /* the step where the input had one */
done:
    for (int i = 0; mem && i < 3 * p->n_params; i++) free(mem[i]);
    free(mem);
    free(names);
    free(t);
    return rc;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && o < n; i++) o += (size_t)snprintf(buf + o, n - o, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* the index of the first value of t that is not finite, or -1 */
static int64_t first_nonfinite(const moe_st_tensor *t, int64_t numel) {
    for (int64_t i = 0; i < numel; i++)
        if (!isfinite(t->data[i])) return i;
    return -1;
}

/* the metadata a resume checks */
typedef struct run_meta { char step[32], seed[32], hash[32], scale[40], good[32], skipped[32]; } run_meta;


/* Expert weight q from int8 tensor t (named `name`) and its scales: dequantised into the
 * parameter buffer `buf`, and as they are into QPARAM where the decode program reads int8.
 * This rank's experts only. */
static int load_q8(moe_rt *rt, const char *path, const char *name, const moe_param_info *q, const moe_st_tensor *t,
                   const moe_st *st, uint8_t *buf, char *err, size_t errlen) {
    char sname[600];
    scale_name(sname, sizeof sname, name);
    const moe_st_tensor *s = moe_st_find(st, sname);
    int64_t E = q->shape[0], K = q->shape[1], N = q->shape[2], first = moe_rt_first_expert(rt, q);
    if (q->qoffset < 0) {
        snprintf(err, errlen, "%s: tensor '%s' is int8, but only expert weights [E, K, N] may be", path, name);
        return -1;
    }
    if (!s || s->dtype != MOE_ST_F32 || s->ndim != 2 || s->shape[0] != q->experts_all || s->shape[1] != N) {
        snprintf(err, errlen, "%s: int8 tensor '%s' needs its scales '%s', F32 [%lld, %lld]", path, name, sname,
                 (long long)q->experts_all, (long long)N);
        return -1;
    }
    for (int64_t i = 0; i < s->numel; i++)
        if (!isfinite(s->data[i]) || s->data[i] < 0) {
            snprintf(err, errlen, "%s: tensor '%s' holds %g at element %lld (scales must be finite and >= 0)", path,
                     sname, (double)s->data[i], (long long)i);
            return -1;
        }
    const int8_t *qs = t->i8 + first * K * N;
    const float *ss = s->data + first * N;
    float *w = malloc(sizeof(float) * (size_t)q->numel);
    if (!w) { snprintf(err, errlen, "out of memory"); return -1; }
    moe_q8_dequantize(qs, ss, E, K, N, w);
    const moe_device_ops *o = rt->dev->ops;
    int bad = o->upload(rt->dev, buf + q->offset, w, sizeof(float) * (size_t)q->numel);
    free(w);
    if (!bad && rt->prog->buf_bytes[MOE_BUF_QPARAM] > 0) {
        if (moe_rt_q8_buffer(rt, err, errlen)) return -1;
        bad = o->upload(rt->dev, rt->buf[MOE_BUF_QPARAM] + q->qoffset, qs, (size_t)q->numel) ||
              o->upload(rt->dev, rt->buf[MOE_BUF_QPARAM] + q->qscale, ss, sizeof(float) * (size_t)(E * N));
    }
    if (bad) snprintf(err, errlen, "%s: uploading '%s' to device %s failed: %s", path, name, o->name, rt->dev->err);
    return bad ? -1 : 0;
}

/* this rank's part of parameter q (its experts, or its slice) from the whole tensor `whole` of
 * a file, into the device buffer at dst: 0, -1 when the upload fails, -2 out of memory */
static int upload_part(moe_rt *rt, uint8_t *dst, const moe_param_info *q, const float *whole) {
    moe_device *d = rt->dev;
    size_t bytes = sizeof(float) * (size_t)q->numel;
    whole += moe_rt_first_expert(rt, q) * (q->numel / q->shape[0]) * q->tp;     /* this rank's first expert */
    if (q->tp <= 1) return d->ops->upload(d, dst, whole, bytes);
    float *part = malloc(bytes);
    if (!part) return -2;
    int t = moe_comm_tensor_rank(rt->ctx.comm);
    for (int64_t j = 0; j < q->numel; j++) part[j] = whole[moe_tp_index(q, t, j)];
    int rc = d->ops->upload(d, dst, part, bytes);
    free(part);
    return rc;
}

/* whether `name` is the scales tensor of an int8 tensor of st */
static int is_scales(const moe_st *st, const char *name) {
    size_t n = strlen(name), sl = strlen("_scale");
    char base[512];
    if (n <= sl || n - sl >= sizeof base || strcmp(name + n - sl, "_scale")) return 0;
    memcpy(base, name, n - sl);
    base[n - sl] = 0;
    const moe_st_tensor *t = moe_st_find(st, base);
    return t && t->dtype == MOE_ST_I8;
}

/* Reads PATH into the groups' buffers: every parameter of table p in every group must be
 * there with its exact shape, and nothing else may be. `role` (may be NULL) names what the
 * file must be a checkpoint of ("the teacher"): then a file whose metadata names another model
 * is refused as such. q8 (may be NULL): int8 expert weights are accepted (`quantize`'s files,
 * content "weights-int8"), *q8 counts them. */
static int load_groups(moe_rt *rt, const ptable *p, const char *role, const char *path, const group *g, int ng,
                       const char *content, run_meta *meta, int *q8, char *err, size_t errlen) {
    moe_st *st = NULL;
    if (moe_st_read(path, &st, err, errlen)) return -1;
    char name[512];
    int rc = 0, n_q8 = 0;
    const char *holds = moe_st_meta(st, "content"), *of = moe_st_meta(st, "model");   /* absent in other tools' files */
    if (holds && strcmp(holds, content) && !(q8 && !strcmp(holds, "weights-int8"))) {
        snprintf(err, errlen, "%s holds %s, not %s", path, holds, content);
        rc = -1;
    } else if (role && of && strcmp(of, p->model)) {
        snprintf(err, errlen, "%s is a checkpoint of model %s, not of %s (model %s)", path, of, role, p->model);
        rc = -1;
    }
    for (int k = 0; k < ng && !rc; k++)
        for (int i = 0; i < p->n && !rc; i++) {
            const moe_param_info *q = &p->params[i];
            snprintf(name, sizeof name, "%s%s", g[k].prefix, q->name);
            const moe_st_tensor *t = moe_st_find(st, name);
            int same = t && t->ndim == q->ndim;
            int64_t at, shape[3];
            int up;
            file_shape(q, shape);
            for (int j = 0; same && j < q->ndim; j++) same = t->shape[j] == shape[j];
            if (!t) {
                snprintf(err, errlen, "%s: missing tensor '%s' of model %s (a checkpoint of another model?)", path, name,
                         p->model);
                rc = -1;
            } else if (!same) {
                char a[128], b[128];
                shape_str(a, sizeof a, t->ndim, t->shape);
                shape_str(b, sizeof b, q->ndim, shape);
                snprintf(err, errlen, "%s: tensor '%s' has shape %s but model %s needs %s", path, name, a, p->model, b);
                rc = -1;
            } else if (t->dtype == MOE_ST_I8 && !q8) {
                snprintf(err, errlen, "%s: tensor '%s' is int8 (a file `quantize` wrote): only the model's own "
                         "weights may be, for eval, grad, generate, export and bench", path, name);
                rc = -1;
            } else if (t->dtype == MOE_ST_I8) {
                rc = load_q8(rt, path, name, q, t, st, g[k].buf, err, errlen);
                n_q8++;
            } else if ((at = first_nonfinite(t, t->numel)) >= 0) {
                snprintf(err, errlen, "%s: tensor '%s' holds %g at element %" PRId64 " (values must be finite)", path,
                         name, (double)t->data[at], at);
                rc = -1;
            } else if ((up = upload_part(rt, g[k].buf + q->offset, q, t->data)) != 0) {
                if (up == -2) snprintf(err, errlen, "out of memory");
                else snprintf(err, errlen, "%s: uploading '%s' to device %s failed: %s", path, name, rt->dev->ops->name,
                              rt->dev->err);
                rc = -1;
            }
        }
    if (!rc && moe_st_count(st) != p->n * ng + n_q8) {
        /* names are unique in a file, so a surplus means a tensor the model does not have */
        for (int i = 0; i < moe_st_count(st) && !rc; i++) {
            const char *n = moe_st_get(st, i)->name;
            int known = 0;
            for (int k = 0; k < ng && !known; k++) {
                size_t pl = strlen(g[k].prefix);
                if (strncmp(n, g[k].prefix, pl)) continue;
                for (int j = 0; j < p->n && !known; j++) known = !strcmp(n + pl, p->params[j].name);
            }
            if (!known && !is_scales(st, n)) {
                snprintf(err, errlen, "%s: tensor '%s' is not a parameter of model %s (a checkpoint of another model?)",
                         path, n, p->model);
                rc = -1;
            }
        }
    }
    if (!rc && meta) {
        const char *v;
        snprintf(meta->step, sizeof meta->step, "%s", (v = moe_st_meta(st, "step")) ? v : "");
        snprintf(meta->seed, sizeof meta->seed, "%s", (v = moe_st_meta(st, "seed")) ? v : "");
        snprintf(meta->hash, sizeof meta->hash, "%s", (v = moe_st_meta(st, "model_hash")) ? v : "");
        snprintf(meta->scale, sizeof meta->scale, "%s", (v = moe_st_meta(st, "loss_scale")) ? v : "");
        snprintf(meta->good, sizeof meta->good, "%s", (v = moe_st_meta(st, "scale_good")) ? v : "");
        snprintf(meta->skipped, sizeof meta->skipped, "%s", (v = moe_st_meta(st, "skipped_steps")) ? v : "");
    }
    if (q8) *q8 = n_q8;
    moe_st_free(st);
    return rc;
}

static int64_t parse_step(const char *s);

int moe_ckpt_load(moe_rt *rt, const char *path, int64_t *step, char *err, size_t errlen) {
    group w = {rt->buf[MOE_BUF_PARAM], ""};
    run_meta m;
    ptable t = program_table(rt->prog);
    int n_q8 = 0, n_quantizable = 0;
    for (int i = 0; i < t.n; i++) n_quantizable += t.params[i].qoffset >= 0;
    int rc = load_groups(rt, &t, NULL, path, &w, 1, "weights", &m, &n_q8, err, errlen);
    if (!rc && n_q8 && n_q8 < n_quantizable) {     /* decoding reads all of them as int8, or none */
        snprintf(err, errlen, "%s: %d of the model's %d expert weights are int8: all or none must be", path, n_q8,
                 n_quantizable);
        rc = -1;
    }
    if (rc || !n_q8) moe_rt_q8_release(rt);
    rt->q8 = rc || !n_q8 ? 0 : rt->buf[MOE_BUF_QPARAM] ? 2 : 1;
    if (step) *step = rc ? -1 : parse_step(m.step);
    return rc;
}

int moe_ckpt_load_teacher(moe_rt *rt, const char *path, char *err, size_t errlen) {
    const moe_program *p = rt->prog;
    const moe_teacher *tc = p->teacher;
    char file[4096];
    if (moe_rt_teacher_buffer(rt, err, errlen) || moe_ckpt_resolve(path, file, sizeof file, err, errlen)) return -1;
    group w = {rt->buf[MOE_BUF_TPARAM], ""};
    ptable t = {tc->model, tc->n_params, tc->params};
    char role[160];
    snprintf(role, sizeof role, "the teacher of %s", p->model);
    if (load_groups(rt, &t, role, file, &w, 1, "weights", NULL, NULL, err, errlen)) return -1;
    rt->kd = 1;
    return 0;
}

/* a step written by us: decimal digits only, 1 .. 10^15 */
static int64_t parse_step(const char *s) {
    if (!*s || strlen(s) > 15) return -1;
    for (const char *c = s; *c; c++)
        if (*c < '0' || *c > '9') return -1;
    int64_t v = strtoll(s, NULL, 10);
    return v >= 1 ? v : -1;
}

int moe_ckpt_resume(moe_rt *rt, const char *path, int64_t step, uint64_t seed, char *err, size_t errlen) {
    char opath[4096], want_seed[32], want_hash[32];
    if (optim_path(path, opath, sizeof opath)) { snprintf(err, errlen, "%s: path too long", path); return -1; }
    run_meta mw, mo;
    group w = {rt->buf[MOE_BUF_PARAM], ""};
    group g[2] = {{rt->buf[MOE_BUF_OPT], "m."}, {rt->buf[MOE_BUF_OPT] + rt->prog->buf_bytes[MOE_BUF_PARAM], "v."}};
    ptable t = program_table(rt->prog);
    if (load_groups(rt, &t, NULL, path, &w, 1, "weights", &mw, NULL, err, errlen) ||
        load_groups(rt, &t, NULL, opath, g, 2, "optimizer", &mo, NULL, err, errlen))
        return -1;
    snprintf(want_seed, sizeof want_seed, "%" PRIu64, seed);
    snprintf(want_hash, sizeof want_hash, "%016" PRIx64, model_hash(rt->prog));
    /* every piece of metadata must be there and agree: the file name, both files, the run */
    const run_meta *m[2] = {&mw, &mo};
    const char *name[2] = {path, opath};
    for (int i = 0; i < 2; i++) {
        int64_t s = parse_step(m[i]->step);
        if (s < 0) {
            snprintf(err, errlen, "%s: its step metadata '%s' is missing or not a step number", name[i], m[i]->step);
            return -1;
        }
        if (s != step) {
            snprintf(err, errlen, "%s: its step metadata says %" PRId64 " but its name says %" PRId64, name[i], s, step);
            return -1;
        }
        if (strcmp(m[i]->hash, want_hash)) {
            snprintf(err, errlen, "%s: a checkpoint of another model (model hash '%s', this model's %s)", name[i],
                     m[i]->hash, want_hash);
            return -1;
        }
        if (strcmp(m[i]->seed, want_seed)) {
            snprintf(err, errlen, "%s: a run with seed '%s', not %s (pass --seed %s to continue it)", name[i],
                     m[i]->seed, want_seed, m[i]->seed);
            return -1;
        }
    }
    /* the loss scaler continues where it was; a checkpoint without it (an f32 or bf16 run of
     * the model, resumed in fp16) starts it afresh */
    if (rt->prog->half == MOE_F16 && (mw.scale[0] || mw.good[0] || mw.skipped[0])) {
        char *e1, *e2, *e3;
        double scale = strtod(mw.scale, &e1);
        long long good = strtoll(mw.good, &e2, 10), skipped = strtoll(mw.skipped, &e3, 10);
        if (!mw.scale[0] || *e1 || !(scale >= 1.0) || !mw.good[0] || *e2 || good < 0 || !mw.skipped[0] || *e3 ||
            skipped < 0 || skipped > step) {
            snprintf(err, errlen, "%s: its fp16 loss scale metadata (loss_scale '%s', scale_good '%s', skipped_steps "
                     "'%s') is missing or not valid", path, mw.scale, mw.good, mw.skipped);
            return -1;
        }
        rt->scaler = (moe_scaler){scale, good, skipped};
    }
    return 0;
}

/* the step of a checkpoint file's name: step-N.safetensors (weights, *optim = 0) or
 * step-N.optim.safetensors (*optim = 1); -1 for any other name */
static int64_t name_step(const char *name, int *optim) {
    long long step;
    int used = 0;
    if (sscanf(name, "step-%lld.%n", &step, &used) != 1 || used == 0) return -1;
    *optim = !strcmp(name + used, "optim.safetensors");
    return *optim || !strcmp(name + used, "safetensors") ? step : -1;
}

int moe_ckpt_scan(const char *dir, int64_t *newest) {
    DIR *d = opendir(dir);
    *newest = -1;
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int optim;
        int64_t step = name_step(e->d_name, &optim);
        if (step < 0) continue;
        n++;
        if (step > *newest) *newest = step;
    }
    closedir(d);
    return n;
}

int moe_ckpt_remove_all(const char *dir, char *err, size_t errlen) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) && !rc) {
        int optim;
        if (name_step(e->d_name, &optim) < 0) continue;
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        if (unlink(full) != 0) {
            snprintf(err, errlen, "cannot remove %s: %s", full, strerror(errno));
            rc = -1;
        }
    }
    closedir(d);
    return rc;
}

int64_t moe_ckpt_latest(const char *dir, int need_optimizer, char *path, size_t pathlen) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int64_t best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        int optim;
        int64_t step = name_step(e->d_name, &optim);
        if (step < 0 || optim) continue;
        char opath[4096], full[4096];
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (need_optimizer && (optim_path(full, opath, sizeof opath) || stat(opath, &sb) != 0)) continue;
        if (step > best) { best = step; snprintf(path, pathlen, "%s", full); }
    }
    closedir(d);
    return best;
}

int moe_ckpt_writable(const char *dir, char *err, size_t errlen) {
    char probe[4096];
    if (snprintf(probe, sizeof probe, "%s/.moec-probe-XXXXXX", dir) >= (int)sizeof probe) {
        snprintf(err, errlen, "%s: path too long", dir);
        return -1;
    }
    int fd = mkstemp(probe);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write checkpoints in %s: %s", dir, strerror(errno));
        return -1;
    }
    close(fd);
    unlink(probe);
    return 0;
}

int moe_ckpt_clean_stale(const char *dir, char *names, size_t n) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    size_t used = 0;
    if (n) names[0] = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *t = strstr(e->d_name, ".tmp.");
        char *end;
        if (!t) continue;
        long pid = strtol(t + 5, &end, 10);
        if (*end || end == t + 5 || pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char full[4096];
        if (snprintf(full, sizeof full, "%s/%s", dir, e->d_name) >= (int)sizeof full || unlink(full) != 0) continue;
        removed++;
        int w = snprintf(names + used, n > used ? n - used : 0, "%s%s", removed > 1 ? ", " : "", e->d_name);
        if (w > 0 && used + (size_t)w < n) used += (size_t)w;
    }
    closedir(d);
    return removed;
}

int moe_ckpt_resolve(const char *path, char *out, size_t outlen, char *err, size_t errlen) {
    struct stat sb;
    if (stat(path, &sb) != 0) { snprintf(err, errlen, "%s: no such checkpoint", path); return -1; }
    if (!S_ISDIR(sb.st_mode)) { snprintf(out, outlen, "%s", path); return 0; }
    if (moe_ckpt_latest(path, 0, out, outlen) < 0) {     /* weights are enough here */
        snprintf(err, errlen, "%s: no checkpoint (step-N.safetensors) in this directory", path);
        return -1;
    }
    return 0;
}
