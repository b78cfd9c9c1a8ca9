/* st_compare.c - compares two safetensors files tensor by tensor (golden tests).
 *
 *   st_compare [--rtol R] [--tol GLOB=R]... [--quiet] REF.safetensors GOT.safetensors
 *
 * Both files must hold the same set of tensor names with the same shapes. Per tensor,
 *   err = max|got - ref| / max(max|ref|, 1e-30)
 * must be <= its tolerance: R (default 1e-5), or the R of the last --tol whose glob
 * (fnmatch) matches the tensor name. The error is relative to the largest reference value
 * of the tensor, not elementwise: gradients have many near-zero entries whose elementwise
 * relative error means nothing, while a wrong element of any size shows against the
 * tensor's scale. A NaN or Inf in GOT always fails. Prints one line per tensor and the worst.
 * Exit status: 0 all within tolerance, 1 a mismatch (names, shapes or values), 2 bad usage
 * or an unreadable file.
 * Reads through the project's reader (runtime/st.h), so it also exercises it.
 */
#include "st.h"

#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOL 32

typedef struct tol_rule { const char *glob; double rtol; } tol_rule;

static void usage(FILE *f) {
    fprintf(f, "usage: st_compare [--rtol R] [--tol GLOB=R]... [--quiet] REF.safetensors GOT.safetensors\n"
               "  per tensor: max|got-ref| / max(max|ref|, 1e-30) <= R (default 1e-5)\n"
               "  exit 0 = match, 1 = mismatch, 2 = usage or read error\n");
}

static int parse_double(const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0) || isinf(v)) return -1;
    *out = v;
    return 0;
}

static void shape_str(const moe_st_tensor *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static int same_shape(const moe_st_tensor *a, const moe_st_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

/* max|got - ref| / max(max|ref|, 1e-30); +inf when got holds a NaN or Inf. */
static double tensor_err(const moe_st_tensor *ref, const moe_st_tensor *got, double *maxdiff, double *maxref) {
    double md = 0, mr = 0;
    int bad = 0;
    for (int64_t i = 0; i < ref->numel; i++) {
        double r = ref->data[i], g = got->data[i];
        if (!isfinite(g)) bad = 1;
        double d = fabs(g - r);
        if (d > md) md = d;
        if (fabs(r) > mr) mr = fabs(r);
    }
    *maxdiff = bad ? INFINITY : md;
    *maxref = mr;
    return bad ? INFINITY : md / (mr > 1e-30 ? mr : 1e-30);
}

int main(int argc, char **argv) {
    double rtol = 1e-5;
    tol_rule rules[MAX_TOL];
    int n_rules = 0, quiet = 0;
    const char *paths[2];
    int n_paths = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--rtol") && i + 1 < argc) {
            if (parse_double(argv[++i], &rtol)) { fprintf(stderr, "st_compare: bad --rtol '%s'\n", argv[i]); return 2; }
        } else if (!strcmp(argv[i], "--tol") && i + 1 < argc) {
            char *eq = strrchr(argv[++i], '=');
            if (!eq || n_rules == MAX_TOL || parse_double(eq + 1, &rules[n_rules].rtol)) {
                fprintf(stderr, "st_compare: bad --tol '%s' (want GLOB=R)\n", argv[i]);
                return 2;
            }
            *eq = 0;
            rules[n_rules++].glob = argv[i];
        } else if (!strcmp(argv[i], "--quiet")) {
            quiet = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "st_compare: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (n_paths < 2) {
            paths[n_paths++] = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (n_paths != 2) { usage(stderr); return 2; }

    char err[512];
    moe_st *ref = NULL, *got = NULL;
    if (moe_st_read(paths[0], &ref, err, sizeof err)) { fprintf(stderr, "st_compare: %s\n", err); return 2; }
    if (moe_st_read(paths[1], &got, err, sizeof err)) {
        fprintf(stderr, "st_compare: %s\n", err);
        moe_st_free(ref);
        return 2;
    }

    int fails = 0;
    double worst = 0;
    const char *worst_name = "(none)";
    for (int i = 0; i < moe_st_count(ref); i++) {
        const moe_st_tensor *r = moe_st_get(ref, i), *g = moe_st_find(got, r->name);
        char rs[128], gs[128];
        shape_str(r, rs, sizeof rs);
        if (!g) {
            printf("%-40s %-16s MISSING in %s\n", r->name, rs, paths[1]);
            fails++;
            continue;
        }
        if (!same_shape(r, g)) {
            shape_str(g, gs, sizeof gs);
            printf("%-40s %-16s SHAPE %s in %s\n", r->name, rs, gs, paths[1]);
            fails++;
            continue;
        }
        double tol = rtol;
        for (int k = 0; k < n_rules; k++)
            if (!fnmatch(rules[k].glob, r->name, 0)) tol = rules[k].rtol;
        double md, mr, e = tensor_err(r, g, &md, &mr);
        int ok = e <= tol;
        if (!ok) fails++;
        if (!(e <= worst)) { worst = e; worst_name = r->name; }
        if (!ok || !quiet)
            printf("%-40s %-16s rel %.3e (max|diff| %.3e, max|ref| %.3e, tol %.0e)%s\n", r->name, rs, e, md, mr,
                   tol, ok ? "" : "  FAIL");
    }
    for (int i = 0; i < moe_st_count(got); i++) {
        const moe_st_tensor *g = moe_st_get(got, i);
        if (!moe_st_find(ref, g->name)) {
            printf("%-40s EXTRA in %s (not in %s)\n", g->name, paths[1], paths[0]);
            fails++;
        }
    }
    printf("worst: %s rel %.3e; %d of %d tensors fail -> %s\n", worst_name, worst, fails, moe_st_count(ref),
           fails ? "FAIL" : "ok");
    moe_st_free(ref);
    moe_st_free(got);
    return fails ? 1 : 0;
}
