/* st_perturb.c - writes a damaged copy of a safetensors file, to prove that st_compare
 * catches what it should (the `ref_compare_selftest` ctest).
 *
 *   st_perturb IN OUT --scale NAME REL   the largest-|value| element of NAME *= (1 + REL)
 *   st_perturb IN OUT --drop NAME        NAME left out
 *   st_perturb IN OUT --copy             unchanged copy (through moe_st_write)
 *
 * Reads and writes through runtime/st.h. Exit 0, or 2 on bad usage / IO error.
 */
#include "st.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void) {
    fprintf(stderr, "usage: st_perturb IN OUT (--scale NAME REL | --drop NAME | --copy)\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 4) return usage();
    const char *mode = argv[3], *name = argc > 4 ? argv[4] : NULL;
    double rel = 0;
    if (!strcmp(mode, "--scale")) {
        if (argc != 6) return usage();
        rel = strtod(argv[5], NULL);
    } else if (!strcmp(mode, "--drop")) {
        if (argc != 5) return usage();
    } else if (strcmp(mode, "--copy") || argc != 4) {
        return usage();
    }

    char err[512];
    moe_st *in = NULL;
    if (moe_st_read(argv[1], &in, err, sizeof err)) { fprintf(stderr, "st_perturb: %s\n", err); return 2; }
    int n = moe_st_count(in), m = 0, found = 0;
    moe_st_out *out = calloc((size_t)n + 1, sizeof *out);
    float *copy = NULL;
    for (int i = 0; i < n; i++) {
        const moe_st_tensor *t = moe_st_get(in, i);
        int hit = name && !strcmp(t->name, name);
        found |= hit;
        if (hit && !strcmp(mode, "--drop")) continue;
        moe_st_out *o = &out[m++];
        o->name = t->name;
        o->ndim = t->ndim;
        memcpy(o->shape, t->shape, sizeof o->shape);
        o->data = t->data;
        if (hit) {          /* --scale */
            copy = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *copy);
            if (!copy) { fprintf(stderr, "st_perturb: out of memory\n"); return 2; }
            memcpy(copy, t->data, (size_t)t->numel * sizeof *copy);
            int64_t at = 0;
            for (int64_t j = 1; j < t->numel; j++)
                if (fabsf(copy[j]) > fabsf(copy[at])) at = j;
            if (t->numel) copy[at] = (float)(copy[at] * (1.0 + rel));
            o->data = copy;
        }
    }
    int rc = 0;
    if (name && !found) {
        fprintf(stderr, "st_perturb: no tensor '%s' in %s\n", name, argv[1]);
        rc = 2;
    } else if (moe_st_write(argv[2], out, m, NULL, 0, err, sizeof err)) {
        fprintf(stderr, "st_perturb: %s\n", err);
        rc = 2;
    }
    free(copy);
    free(out);
    moe_st_free(in);
    return rc;
}
