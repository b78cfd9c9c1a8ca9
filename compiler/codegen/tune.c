/* tune.c - the variant registry, the tuning database and its application (tune.h). The
 * database is read and written here only, through jansson:
 *   {"version": 1, "entries": [{"target", "device", "compiler", "template", "kernel",
 *     "shape", "ms": {"1": 1.23, "2": 0.98}, "best": 2}, ...]}
 */
#include "tune.h"
#include "target.h"
#include "moe_hash.h"
#include "cuda_probe.h"
#include "nvrtc.h"
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the registry: kernels with numbered variants, per target (the cpu's are measured by
 * kernels/cpu/k_tune.h, the cuda's in the model's executable: driver/cmd_tune.c) */
static const struct {
    const char *target, *kernel;
    tune_kind kind;
    int variants;
    const char *template_file;
} registry[] = {
    {"cpu", "moe_expert_fwd", TUNE_EXPERT, 3, "k_moe.h"},  /* experts in turn, BLAS threading each / experts
                                                             * across threads / rows in turn, BLAS's gemv */
    {"cpu", "moe_expert_bwd", TUNE_EXPERT, 2, "k_moe.h"},
    {"cpu", "attention_fwd", TUNE_ATTENTION, 3, "k_attn.h"},   /* tiles of 64 x 64, 128 x 64, 64 x 32 */
    {"cpu", "attention_bwd", TUNE_ATTENTION, 3, "k_attn.h"},
    /* the thread split (k_common.h): threads from K_OMP_MIN_WORK elements / one thread / threads
     * from an eighth of that */
    {"cpu", "layernorm_fwd", TUNE_SPLIT, 3, "k_norm.h"},
    {"cpu", "layernorm_bwd", TUNE_SPLIT, 3, "k_norm.h"},
    {"cpu", "rmsnorm_fwd", TUNE_SPLIT, 3, "k_norm.h"},
    {"cpu", "rmsnorm_bwd", TUNE_SPLIT, 3, "k_norm.h"},
    {"cpu", "act_fwd", TUNE_SPLIT, 3, "k_act.h"},
    {"cpu", "act_bwd", TUNE_SPLIT, 3, "k_act.h"},
    {"cpu", "add_fwd", TUNE_SPLIT, 3, "k_act.h"},
    {"cpu", "accumulate", TUNE_SPLIT, 3, "k_act.h"},
    /* the generated grouped GEMM (cu_moe.cuh): tiles of 64 rows / of 32 rows / a thread per output;
     * v4 a cuBLAS GEMM per expert (the host waits for the gate's offsets: codegen/cuda.c) */
    {"cuda", "moe_expert_fwd", TUNE_EXPERT, 4, "cu_moe.cuh"},
    {"cuda", "moe_expert_bwd", TUNE_EXPERT, 4, "cu_moe.cuh"},
    /* attention: a thread per query (key) row / tiles of 64 rows x 32 keys (queries) in shared memory */
    {"cuda", "attention_fwd", TUNE_ATTENTION, 2, "cu_attn.cuh"},
    {"cuda", "attention_bwd", TUNE_ATTENTION, 2, "cu_attn.cuh"},
};

static int find_kernel(const char *target, const char *kernel) {
    for (int i = 0; i < (int)(sizeof registry / sizeof registry[0]); i++)
        if ((!target || !strcmp(registry[i].target, target)) && !strcmp(registry[i].kernel, kernel)) return i;
    return -1;
}

int tune_variants(const char *target, const char *kernel, const char **template_file) {
    int i = find_kernel(target, kernel);
    if (i >= 0 && template_file) *template_file = registry[i].template_file;
    return i >= 0 ? registry[i].variants : 0;
}

tune_kind tune_kind_of(const char *kernel) {
    int i = find_kernel(NULL, kernel);
    return i >= 0 ? registry[i].kind : TUNE_NONE;
}

void tune_target_rule(lw_program *p, const char *target) {
    if (!strcmp(target, "cpu")) return;     /* the lowering's rules are the cpu's */
    for (int i = 0; i < p->nsteps; i++)
        for (int c = 0; c < p->steps[i].ncalls; c++) {
            lw_call *k = &p->steps[i].calls[c];
            k->variant = tune_variants(target, k->kernel, NULL) ? 1 : 0;
            k->tuned = 0;
        }
}

/* the elementwise kernels' shapes: "S=2048 C=512" (norms), "fn=1 R=2048 W=2048" (the
 * activation of R rows of width W), "n=1048576" (add, accumulate) */
static int split_shape(const lw_program *p, const lw_call *k, char *shape, size_t n, int64_t dims[TUNE_DIMS]) {
    memset(dims, 0, sizeof(int64_t) * TUNE_DIMS);
    if (strstr(k->kernel, "norm_")) {
        dims[0] = lw_arg_max(p->g, k, "S", 1), dims[1] = lw_arg_max(p->g, k, "C", 1);
        snprintf(shape, n, "S=%lld C=%lld", (long long)dims[0], (long long)dims[1]);
    } else if (!strncmp(k->kernel, "act_", 4)) {
        const char *out = !strcmp(k->kernel, "act_fwd") ? "y" : "dy";     /* [R, W] */
        int64_t W = lw_arg_max(p->g, k, "width", 5), y = lw_arg_max(p->g, k, out, strlen(out));
        dims[0] = lw_arg_max(p->g, k, "fn", 2), dims[1] = W > 0 ? y / W : 0, dims[2] = W;
        snprintf(shape, n, "fn=%lld R=%lld W=%lld", (long long)dims[0], (long long)dims[1], (long long)dims[2]);
    } else {
        if (lw_arg_max(p->g, k, "acc", 3) == 0) return 0;   /* accumulate's copy: nothing to split */
        dims[0] = lw_arg_max(p->g, k, "n", 1);
        snprintf(shape, n, "n=%lld", (long long)dims[0]);
    }
    for (int i = 0; i < 3; i++)
        if (dims[i] < 0) return 0;
    return tune_cost(k->kernel, dims) > 0;
}

int tune_shape(const char *target, const lw_program *p, const lw_call *k, char *shape, size_t n,
               int64_t dims[TUNE_DIMS]) {
    tune_kind kind = tune_variants(target, k->kernel, NULL) ? tune_kind_of(k->kernel) : TUNE_NONE;
    if (kind == TUNE_NONE) return 0;
    if (kind == TUNE_SPLIT) return split_shape(p, k, shape, n, dims);
    if (kind == TUNE_ATTENTION) {
        static const char *const names[] = {"B", "T", "C", "H", "KV"};
        for (int i = 0; i < TUNE_DIMS; i++)
            if ((dims[i] = lw_arg_max(p->g, k, names[i], strlen(names[i]))) <= 0) return 0;
        snprintf(shape, n, "B=%lld T=%lld C=%lld H=%lld KV=%lld", (long long)dims[0], (long long)dims[1],
                 (long long)dims[2], (long long)dims[3], (long long)dims[4]);
        return 1;
    }
    const lw_arg *E = lw_arg_named(k, "E"), *K = lw_arg_named(k, "K"), *N = lw_arg_named(k, "N"), *x = lw_arg_named(k, "x");
    if (!E || !K || !N || !x || x->kind != LW_BUF || K->i <= 0) return 0;
    dims[0] = E->i, dims[1] = K->i, dims[2] = N->i, dims[3] = x->ref.bytes / (4 * K->i), dims[4] = 0;
    snprintf(shape, n, "E=%lld K=%lld N=%lld R=%lld", (long long)dims[0], (long long)dims[1], (long long)dims[2],
             (long long)dims[3]);
    return 1;
}

double tune_cost(const char *kernel, const int64_t dims[TUNE_DIMS]) {
    double a = (double)dims[0], b = (double)dims[1], c = (double)dims[2], d = (double)dims[3];
    switch (tune_kind_of(kernel)) {
    case TUNE_ATTENTION: return a * b * b * c;                      /* B T^2 C = B H T^2 hd */
    case TUNE_EXPERT: return (a + d) * b * c;                       /* E K N + R K N */
    case TUNE_SPLIT:    /* elements, a dozen bytes each: as long as some 32 flops of a GEMM */
        return 32.0 * (!strncmp(kernel, "act_", 4) ? b * c : strstr(kernel, "norm_") ? a * b : a);
    case TUNE_NONE: break;
    }
    return 0;
}

/* ---- this machine */
static const char *cpu_device(void) {
    static char dev[320];
    if (dev[0]) return dev;             /* once per process: it keys every lookup */
    char model[256] = "unknown CPU", line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            snprintf(model, sizeof model, "%s", strchr(line, ':') + 2);
            model[strcspn(model, "\n")] = 0;
            break;
        }
    if (f) fclose(f);
    const char *env = getenv("OMP_NUM_THREADS");
    long threads = env && atoi(env) > 0 ? atoi(env) : sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(dev, sizeof dev, "%s x %ld thread%s", model, threads, threads == 1 ? "" : "s");
    return dev;
}

const char *tune_device(const char *target) {
    if (strcmp(target, "cuda")) return cpu_device();
    static char gpu[320];
    if (!gpu[0] && moe_cuda_probe(gpu, sizeof gpu)) snprintf(gpu, sizeof gpu, "no GPU");
    return gpu;
}

const char *tune_kernel_compiler(const char *target, const char *cc) {
    if (strcmp(target, "cuda")) return cc;
    static char id[64];
    int major = 0, minor = 0;
    if (moe_nvrtc_version(&major, &minor)) snprintf(id, sizeof id, "no NVRTC");
    else snprintf(id, sizeof id, "NVRTC %d.%d", major, minor);
    return id;
}

const char *tune_default_path(void) {
    static char path[4096];
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg) snprintf(path, sizeof path, "%s/moec/tune.json", xdg);
    else snprintf(path, sizeof path, "%s/.cache/moec/tune.json", home && *home ? home : ".");
    return path;
}

/* the hash of a kernel's template, as text */
static const char *template_hash(const char *target, const char *kernel, char *buf, size_t n) {
    const char *file = NULL;
    tune_variants(target, kernel, &file);
    const char *text = file ? cg_embedded(file) : NULL;
    snprintf(buf, n, "%016llx", (unsigned long long)(text ? util_hash_str(text) : 0));
    return buf;
}

/* ---- the database */
struct tune_db { json_t *root, *entries; };

void tune_db_destroy(tune_db *db) {
    if (!db) return;
    json_decref(db->root);
    free(db);
}

tune_db *tune_db_load(const char *path, int missing_ok, char *err, size_t errlen) {
    tune_db *db = calloc(1, sizeof *db);
    if (!db) { snprintf(err, errlen, "out of memory"); return NULL; }
    if (missing_ok && access(path, F_OK) != 0 && errno == ENOENT) {
        db->root = json_pack("{s:i, s:[]}", "version", 1, "entries");
        db->entries = db->root ? json_object_get(db->root, "entries") : NULL;
        if (!db->entries) { snprintf(err, errlen, "out of memory"); tune_db_destroy(db); return NULL; }
        return db;
    }
    struct stat st = {0};
    if (stat(path, &st) || S_ISDIR(st.st_mode) || access(path, R_OK)) {
        snprintf(err, errlen, "%s: %s", path, S_ISDIR(st.st_mode) ? "a directory, not a tuning database" : strerror(errno));
        tune_db_destroy(db);
        return NULL;
    }
    json_error_t je;
    db->root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!db->root) {
        if (je.line > 0) snprintf(err, errlen, "%s:%d:%d: not a tuning database: %s", path, je.line, je.column, je.text);
        else snprintf(err, errlen, "%s: %s", path, je.text);
        tune_db_destroy(db);
        return NULL;
    }
    db->entries = json_object_get(db->root, "entries");
    json_t *v = json_object_get(db->root, "version");
    if (!json_is_array(db->entries) || !json_is_integer(v) || json_integer_value(v) != 1) {
        snprintf(err, errlen, "%s: not a tuning database of this moec (it needs \"version\": 1 and \"entries\")", path);
        tune_db_destroy(db);
        return NULL;
    }
    return db;
}

static int str_is(json_t *o, const char *key, const char *want) {
    const char *s = json_string_value(json_object_get(o, key));
    return s && !strcmp(s, want);
}

/* the index of the entry with this key, or -1 */
static long find(const tune_db *db, const tune_where *w, const char *kernel, const char *shape) {
    char hash[32];
    template_hash(w->target, kernel, hash, sizeof hash);
    size_t i;
    json_t *e;
    json_array_foreach(db->entries, i, e) {
        if (str_is(e, "target", w->target) && str_is(e, "device", w->device) && str_is(e, "compiler", w->compiler) &&
            str_is(e, "template", hash) && str_is(e, "kernel", kernel) && str_is(e, "shape", shape))
            return (long)i;
    }
    return -1;
}

int tune_db_lookup(const tune_db *db, const tune_where *w, const char *kernel, const char *shape) {
    long i = db ? find(db, w, kernel, shape) : -1;
    if (i < 0) return 0;
    json_t *best = json_object_get(json_array_get(db->entries, (size_t)i), "best");
    int v = json_is_integer(best) ? (int)json_integer_value(best) : 0;
    return v >= 1 && v <= tune_variants(w->target, kernel, NULL) ? v : 0;  /* a variant this moec has */
}

int tune_db_record(tune_db *db, const tune_where *w, const char *kernel, const char *shape, const double *ms, int nv,
                   int best) {
    char hash[32];
    json_t *times = json_object(), *e = NULL;
    int bad = !times;
    for (int v = 1; !bad && v <= nv; v++) {
        char key[16];
        snprintf(key, sizeof key, "%d", v);
        bad |= json_object_set_new(times, key, ms[v] >= 0 ? json_real(ms[v]) : json_null());
    }
    if (!bad)
        e = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:O, s:i}", "target", w->target, "device", w->device, "compiler",
                      w->compiler, "template", template_hash(w->target, kernel, hash, sizeof hash), "kernel", kernel, "shape",
                      shape, "ms", times, "best", best);
    json_decref(times);
    if (!e) return -1;
    long i = find(db, w, kernel, shape);
    return (i >= 0 ? json_array_set_new(db->entries, (size_t)i, e) : json_array_append_new(db->entries, e)) ? -1 : 0;
}

/* entries a and b have the same key */
static int same_key(json_t *a, json_t *b) {
    static const char *const keys[] = {"target", "device", "compiler", "template", "kernel", "shape"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *x = json_string_value(json_object_get(a, keys[i]));
        if (!x || !str_is(b, keys[i], x)) return 0;
    }
    return 1;
}

/* Under an exclusive lock on PATH.lock: what another `moec tune` saved since db was loaded
 * is read again, its entries that db has no key for are kept, and the whole is written to a
 * temporary file renamed over path. So concurrent runs add up instead of the last one
 * winning, and a reader never sees half a file. */
int tune_db_save(tune_db *db, const char *path, char *err, size_t errlen) {
    char tmp[4200], lock[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    snprintf(lock, sizeof lock, "%s.lock", path);
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    struct flock whole = {.l_type = F_WRLCK, .l_whence = SEEK_SET}; /* a POSIX lock on all of it */
    if (fd < 0 || fcntl(fd, F_SETLKW, &whole)) {
        snprintf(err, errlen, "cannot lock %s: %s", lock, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    int rc = 0;
    tune_db *now = tune_db_load(path, 1, err, errlen);
    size_t i, j, mine = json_array_size(db->entries);
    json_t *e;
    if (!now) rc = -1;      /* damaged since we read it: left as it is, err says why */
    json_array_foreach(now ? now->entries : NULL, i, e) {
        int ours = 0;
        for (j = 0; j < mine && !ours; j++) ours = same_key(e, json_array_get(db->entries, j));
        if (!ours && json_array_append(db->entries, e)) rc = -1;
    }
    if (!rc && (json_dump_file(db->root, tmp, JSON_INDENT(1) | JSON_SORT_KEYS) || rename(tmp, path))) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        rc = -1;
    }
    tune_db_destroy(now);
    close(fd);              /* and the lock with it */
    return rc;
}

int tune_apply(lw_program *p, const tune_db *db, const char *target, const char *cc) {
    size_t i;
    json_t *e;
    int ours = 0, n = 0;
    json_array_foreach(db ? db->entries : NULL, i, e) ours |= str_is(e, "target", target);
    if (!ours) return 0;
    tune_where where = {target, tune_device(target), tune_kernel_compiler(target, cc)}, *w = &where;
    for (int i = 0; i < p->nsteps; i++)
        for (int c = 0; c < p->steps[i].ncalls; c++) {
            lw_call *k = &p->steps[i].calls[c];
            char shape[96];
            int64_t dims[TUNE_DIMS];
            int v = tune_shape(w->target, p, k, shape, sizeof shape, dims) ? tune_db_lookup(db, w, k->kernel, shape) : 0;
            if (v) {
                k->variant = v;
                k->tuned = 1;
                n++;
            }
        }
    return n;
}
