/* ckpt.c - checkpoints: the model's tensors in a safetensors file, the optimizer state
 * beside it, and the "newest complete checkpoint in DIR" rule of --resume.
 *
 * In a directory, step N is DIR/step-NNNNNNNN.safetensors (weights, names of
 * moe-language.md section 7) and DIR/step-NNNNNNNN.optim.safetensors (AdamW moments
 * "m.NAME" and "v.NAME", metadata "step"). The optimizer file is written first and the
 * weights file last, each atomically, so a weights file under its final name means the
 * checkpoint is complete.
 */
#include "rt.h"
#include "st.h"
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int save_buffer(const moe_rt *rt, const float *buf, const char *prefix, const char *path,
                       const char *const *meta, int n_meta, char *err, size_t errlen) {
    const moe_program *p = rt->prog;
    moe_st_out *t = calloc((size_t)p->n_params, sizeof *t);
    char **names = calloc((size_t)p->n_params, sizeof *names);
    int rc = -1;
    if (t && names) {
        int ok = 1;
        for (int i = 0; i < p->n_params && ok; i++) {
            const moe_param_info *q = &p->params[i];
            size_t n = strlen(prefix) + strlen(q->name) + 1;
            names[i] = malloc(n);
            if (!names[i]) { ok = 0; break; }
            snprintf(names[i], n, "%s%s", prefix, q->name);
            t[i].name = names[i];
            t[i].ndim = q->ndim;
            for (int j = 0; j < q->ndim; j++) t[i].shape[j] = q->shape[j];
            t[i].data = buf + q->offset;
        }
        rc = ok ? moe_st_write(path, t, p->n_params, meta, n_meta, err, errlen) : -1;
        if (!ok) snprintf(err, errlen, "out of memory");
    } else {
        snprintf(err, errlen, "out of memory");
    }
    for (int i = 0; names && i < p->n_params; i++) free(names[i]);
    free(names);
    free(t);
    return rc;
}

static void optim_path(const char *path, char *out, size_t n) {
    size_t len = strlen(path);
    const char *ext = ".safetensors";
    size_t el = strlen(ext);
    if (len >= el && !strcmp(path + len - el, ext)) snprintf(out, n, "%.*s.optim%s", (int)(len - el), path, ext);
    else snprintf(out, n, "%s.optim", path);
}

int moe_ckpt_save(const moe_rt *rt, const char *path, int64_t step, int with_optimizer, char *err, size_t errlen) {
    char stepbuf[32], opath[4096];
    snprintf(stepbuf, sizeof stepbuf, "%" PRId64, step);
    const char *meta[] = {"format", "moec-1", "model", rt->prog->model, "step", stepbuf};
    if (with_optimizer && rt->adam_m) {
        optim_path(path, opath, sizeof opath);
        /* one file of 2 x n_params tensors: write the two buffers as m.* and v.* */
        moe_st_out *t = calloc((size_t)rt->prog->n_params * 2, sizeof *t);
        char **names = calloc((size_t)rt->prog->n_params * 2, sizeof *names);
        int rc = -1;
        if (t && names) {
            int ok = 1;
            for (int k = 0; k < 2 && ok; k++)
                for (int i = 0; i < rt->prog->n_params && ok; i++) {
                    const moe_param_info *q = &rt->prog->params[i];
                    int j = k * rt->prog->n_params + i;
                    size_t n = strlen(q->name) + 3;
                    if (!(names[j] = malloc(n))) { ok = 0; break; }
                    snprintf(names[j], n, "%c.%s", k ? 'v' : 'm', q->name);
                    t[j].name = names[j];
                    t[j].ndim = q->ndim;
                    for (int d = 0; d < q->ndim; d++) t[j].shape[d] = q->shape[d];
                    t[j].data = (k ? rt->adam_v : rt->adam_m) + q->offset;
                }
            rc = ok ? moe_st_write(opath, t, 2 * rt->prog->n_params, meta, 3, err, errlen) : -1;
            if (!ok) snprintf(err, errlen, "out of memory");
        }
        for (int i = 0; names && i < 2 * rt->prog->n_params; i++) free(names[i]);
        free(names);
        free(t);
        if (rc) return -1;
    }
    return save_buffer(rt, rt->params, "", path, meta, 3, err, errlen);
}

int moe_ckpt_save_grads(const moe_rt *rt, const char *path, char *err, size_t errlen) {
    const char *meta[] = {"format", "moec-1", "model", rt->prog->model, "content", "gradients"};
    return save_buffer(rt, rt->grads, "", path, meta, 3, err, errlen);
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && o < n; i++) o += (size_t)snprintf(buf + o, n - o, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* Copies every parameter of the program from st (names with prefix) into buf. */
static int load_buffer(const moe_rt *rt, const moe_st *st, const char *path, const char *prefix, float *buf,
                       char *err, size_t errlen) {
    const moe_program *p = rt->prog;
    char name[512];
    int matched = 0;
    for (int i = 0; i < p->n_params; i++) {
        const moe_param_info *q = &p->params[i];
        snprintf(name, sizeof name, "%s%s", prefix, q->name);
        const moe_st_tensor *t = moe_st_find(st, name);
        if (!t) {
            snprintf(err, errlen, "%s: missing tensor '%s' of model %s (a checkpoint of another model?)", path, name,
                     p->model);
            return -1;
        }
        int same = t->ndim == q->ndim;
        for (int j = 0; same && j < q->ndim; j++) same = t->shape[j] == q->shape[j];
        if (!same) {
            char a[128], b[128];
            shape_str(a, sizeof a, t->ndim, t->shape);
            shape_str(b, sizeof b, q->ndim, q->shape);
            snprintf(err, errlen, "%s: tensor '%s' has shape %s but model %s needs %s", path, name, a, p->model, b);
            return -1;
        }
        memcpy(buf + q->offset, t->data, sizeof(float) * (size_t)q->numel);
        matched++;
    }
    if (moe_st_count(st) != matched) {
        for (int i = 0; i < moe_st_count(st); i++) {
            const char *n = moe_st_get(st, i)->name;
            int known = 0;
            for (int j = 0; j < p->n_params && !known; j++) {
                snprintf(name, sizeof name, "%s%s", prefix, p->params[j].name);
                known = !strcmp(name, n);
            }
            if (!known) {
                snprintf(err, errlen, "%s: tensor '%s' is not a parameter of model %s (a checkpoint of another model?)",
                         path, n, p->model);
                return -1;
            }
        }
    }
    return 0;
}

int moe_ckpt_load(moe_rt *rt, const char *path, int64_t *opt_step, char *err, size_t errlen) {
    moe_st *st = NULL;
    if (moe_st_read(path, &st, err, errlen)) return -1;
    int rc = load_buffer(rt, st, path, "", rt->params, err, errlen);
    const char *step = moe_st_meta(st, "step");
    moe_st_free(st);
    if (rc || !opt_step) return rc;
    char opath[4096];
    optim_path(path, opath, sizeof opath);
    if (moe_st_read(opath, &st, err, errlen)) return -1;
    rc = load_buffer(rt, st, opath, "m.", rt->adam_m, err, errlen);
    if (!rc) {
        /* the v.* half: load_buffer checks names against one prefix, so count separately */
        char name[512];
        for (int i = 0; i < rt->prog->n_params && !rc; i++) {
            const moe_param_info *q = &rt->prog->params[i];
            snprintf(name, sizeof name, "v.%s", q->name);
            const moe_st_tensor *t = moe_st_find(st, name);
            if (!t || t->numel != q->numel) {
                snprintf(err, errlen, "%s: missing or misshapen tensor '%s'", opath, name);
                rc = -1;
            } else {
                memcpy(rt->adam_v + q->offset, t->data, sizeof(float) * (size_t)q->numel);
            }
        }
    }
    moe_st_free(st);
    if (!rc) *opt_step = step ? strtoll(step, NULL, 10) : 0;
    return rc;
}

int64_t moe_ckpt_latest(const char *dir, char *path, size_t pathlen) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int64_t best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long step;
        int used = 0;
        if (sscanf(e->d_name, "step-%lld.safetensors%n", &step, &used) != 1 || e->d_name[used]) continue;
        char opath[4096], full[4096];
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        optim_path(full, opath, sizeof opath);
        struct stat sb;
        if (stat(opath, &sb) != 0) continue;
        if (step > best) { best = step; snprintf(path, pathlen, "%s", full); }
    }
    closedir(d);
    return best;
}

int moe_ckpt_resolve(const char *path, char *out, size_t outlen, char *err, size_t errlen) {
    struct stat sb;
    if (stat(path, &sb) != 0) { snprintf(err, errlen, "%s: no such checkpoint", path); return -1; }
    if (!S_ISDIR(sb.st_mode)) { snprintf(out, outlen, "%s", path); return 0; }
    if (moe_ckpt_latest(path, out, outlen) < 0) {
        snprintf(err, errlen, "%s: no complete checkpoint in this directory", path);
        return -1;
    }
    return 0;
}
