/* nvrtc.c - NVRTC and the kernel cache (nvrtc.h). */
#define _GNU_SOURCE
#include "nvrtc.h"
#include "moe_hash.h"
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* the few entries of NVRTC's C API we use (nvrtc.h of the CUDA toolkit) */
typedef struct nv_prog *nv_program;
typedef struct nvrtc_api {
    int (*version)(int *major, int *minor);
    int (*create)(nv_program *p, const char *src, const char *name, int nh, const char *const *h, const char *const *hn);
    int (*compile)(nv_program p, int nopt, const char *const *opt);
    int (*log_size)(nv_program p, size_t *n);
    int (*log)(nv_program p, char *log);
    int (*destroy)(nv_program *p);
    int (*cubin_size)(nv_program p, size_t *n);
    int (*cubin)(nv_program p, char *out);
    const char *(*error_string)(int rc);
} nvrtc_api;

static int load(nvrtc_api *api) {
    static const char *const names[] = {"libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12",
                                        "/usr/local/cuda/lib64/libnvrtc.so", NULL};
    void *h = NULL;
    for (int i = 0; names[i] && !h; i++) h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) return -1;
    struct { const char *sym; void **dst; } syms[] = {
        {"nvrtcVersion", (void **)&api->version}, {"nvrtcCreateProgram", (void **)&api->create},
        {"nvrtcCompileProgram", (void **)&api->compile}, {"nvrtcGetProgramLogSize", (void **)&api->log_size},
        {"nvrtcGetProgramLog", (void **)&api->log}, {"nvrtcDestroyProgram", (void **)&api->destroy},
        {"nvrtcGetErrorString", (void **)&api->error_string}, {"nvrtcGetCUBINSize", (void **)&api->cubin_size},
        {"nvrtcGetCUBIN", (void **)&api->cubin},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++)
        if (!(*syms[i].dst = dlsym(h, syms[i].sym))) return -1;
    return 0;       /* the library stays loaded for the life of the process */
}

/* ---- the kernel cache ---- */
#define CACHE_MAGIC "MOECUBIN"

/* DIR/kernels, created; 0, or -1 when there is no place for it */
static int cache_dir(char *dir, size_t n) {
    const char *env = getenv("MOEC_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int w = env && *env ? snprintf(dir, n, "%s/kernels", env)
          : xdg && *xdg ? snprintf(dir, n, "%s/moec/kernels", xdg)
          : home && *home ? snprintf(dir, n, "%s/.cache/moec/kernels", home) : -1;
    if (w < 0 || (size_t)w >= n) return -1;
    for (char *p = dir + 1; *p; p++) {     /* mkdir -p */
        if (*p != '/') continue;
        *p = 0;
        int bad = mkdir(dir, 0755) && errno != EEXIST;
        *p = '/';
        if (bad) return -1;
    }
    return mkdir(dir, 0755) && errno != EEXIST ? -1 : 0;
}

/* the cubin of a whole, uncorrupted entry (malloc'ed, its size in *len), or NULL */
static char *cache_read(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char magic[8];
    uint64_t n = 0, sum = 0;
    int ok = fread(magic, 1, 8, f) == 8 && !memcmp(magic, CACHE_MAGIC, 8) && fread(&n, 8, 1, f) == 1 &&
             fread(&sum, 8, 1, f) == 1 && n > 0 && n < ((uint64_t)1 << 32);
    char *data = ok ? malloc((size_t)n + 1) : NULL;
    ok = ok && data && fread(data, 1, (size_t)n + 1, f) == (size_t)n && util_hash_bytes(data, (size_t)n) == sum;
    fclose(f);
    if (!ok) { free(data); return NULL; }
    *len = (size_t)n;
    return data;
}

static void cache_write(const char *path, const char *data, size_t len) {
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return;
    uint64_t n = len, sum = util_hash_bytes(data, len);
    int ok = fwrite(CACHE_MAGIC, 1, 8, f) == 8 && fwrite(&n, 8, 1, f) == 1 && fwrite(&sum, 8, 1, f) == 1 &&
             fwrite(data, 1, len, f) == len;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path)) unlink(tmp);     /* a cache that cannot be written only costs time */
}

typedef struct job {
    const nvrtc_api *api;
    const char *source, *name, *arch;
    const char *cache;  /* the entry's path, or NULL */
    int rc, hit;
    char *log;      /* NVRTC's log on failure */
    moe_cubin *out; /* where the cubin goes, or NULL */
} job;

static void *compile_one(void *arg) {
    job *j = arg;
    const nvrtc_api *api = j->api;
    size_t n = 0;
    char *hit = j->cache ? cache_read(j->cache, &n) : NULL;
    if (hit) {
        j->hit = 1;
        if (j->out) *j->out = (moe_cubin){hit, n};
        else free(hit);
        return NULL;
    }
    nv_program p = NULL;
    char opt_arch[64];
    snprintf(opt_arch, sizeof opt_arch, "--gpu-architecture=%s", j->arch);
    const char *opts[] = {opt_arch, "--std=c++17"};
    int rc = api->create(&p, j->source, j->name, 0, NULL, NULL);
    if (rc == 0) rc = api->compile(p, 2, opts);
    if (p && api->log_size(p, &n) == 0 && n > 1 && rc != 0) {
        j->log = malloc(n);
        if (j->log && api->log(p, j->log) != 0) { free(j->log); j->log = NULL; }
    }
    if (rc == 0 && (j->cache || j->out) && api->cubin_size(p, &n) == 0 && n > 0) {
        char *bin = malloc(n);
        if (bin && api->cubin(p, bin) == 0) {
            if (j->cache) cache_write(j->cache, bin, n);
            if (j->out) { *j->out = (moe_cubin){bin, n}; bin = NULL; }
        }
        free(bin);
    }
    if (rc != 0 && !j->log) {
        const char *why = api->error_string(rc);
        j->log = strdup(why ? why : "NVRTC failed");
    }
    if (p) api->destroy(&p);
    j->rc = rc;
    return NULL;
}

/* NVRTC's entries, loaded once; NULL where it is missing */
static const nvrtc_api *nvrtc(void) {
    static nvrtc_api api;
    static int loaded = 0;          /* 0 not tried, 1 loaded, -1 missing */
    if (!loaded) loaded = load(&api) == 0 ? 1 : -1;
    return loaded > 0 ? &api : NULL;
}

int moe_nvrtc_version(int *major, int *minor) {
    const nvrtc_api *api = nvrtc();
    return api && api->version(major, minor) == 0 ? 0 : -1;
}

int moe_nvrtc_compile(const char *source, const char *name, const char *const *archs, int narch, moe_nvrtc_result *r,
                      char **log, moe_cubin *out) {
    memset(r, 0, sizeof *r);
    *log = NULL;
    if (out) memset(out, 0, sizeof *out * (size_t)(narch < 8 ? narch : 8));
    const nvrtc_api *api = nvrtc();
    if (!api) return 0;
    r->available = 1;
    api->version(&r->major, &r->minor);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    job jobs[8];
    pthread_t th[8];
    int started[8] = {0};
    char dir[PATH_MAX], paths[8][PATH_MAX + 96];
    int have_dir = cache_dir(dir, sizeof dir) == 0;
    unsigned long long key = (unsigned long long)util_hash_str(source);
    if (narch > 8) narch = 8;
    for (int i = 0; i < narch; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/%016llx-%s-nvrtc%d.%d.cubin", dir, key, archs[i], r->major, r->minor);
        jobs[i] = (job){api, source, name, archs[i], have_dir ? paths[i] : NULL, 0, 0, NULL, out ? &out[i] : NULL};
        started[i] = pthread_create(&th[i], NULL, compile_one, &jobs[i]) == 0;
        if (!started[i]) compile_one(&jobs[i]);
    }
    for (int i = 0; i < narch; i++)
        if (started[i]) pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    r->ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    int rc = 0;
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    for (int i = 0; i < narch; i++) {
        r->cached += jobs[i].hit;
        if (jobs[i].rc == 0) continue;
        rc = -1;
        if (m) {
            fprintf(m, "NVRTC %d.%d, %s:\n", r->major, r->minor, archs[i]);
            fputs(jobs[i].log ? jobs[i].log : "", m);
        }
        free(jobs[i].log);
    }
    if (m) fclose(m);
    if (rc) *log = text;
    else free(text);
    return rc;
}
