/* json_compare.c - compares a JSON output (`OUT eval`) with its golden, key by key.
 *
 *   json_compare [--rtol R] [--atol A] [--quiet] REF.json GOT.json
 *
 * Every key of REF must be in GOT (GOT may have more: the spec welcomes extra keys; they
 * are listed, not judged). Values compare by the type in REF:
 *   integer   GOT must be the same integer (a count such as `tokens` is exact);
 *   real      |got - ref| <= R * |ref| + A  (R default 1e-5, A default 1e-9: A only matters
 *             where the golden is 0, e.g. aux_loss of a dense model, which must print ~0);
 *             GOT may be written as an integer (0 for 0.0);
 *   string, bool, null: equal; object: recursively; array: same length, element by element.
 * Exit status: 0 match, 1 mismatch, 2 bad usage or a file that is not one JSON value.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cmp { double rtol, atol; int quiet, fails; } cmp;

static void usage(FILE *f) {
    fprintf(f, "usage: json_compare [--rtol R] [--atol A] [--quiet] REF.json GOT.json\n"
               "  reals: |got-ref| <= R*|ref| + A (defaults 1e-5, 1e-9); integers, strings exact\n"
               "  exit 0 = match, 1 = mismatch, 2 = usage or parse error\n");
}

static void say(cmp *c, int ok, const char *path, const char *fmt, double a, double b) {
    if (!ok) c->fails++;
    if (ok && c->quiet) return;
    printf("%-24s ", path);
    printf(fmt, a, b);
    printf("%s\n", ok ? "" : "  FAIL");
}

static void compare(cmp *c, const char *path, json_t *ref, json_t *got) {
    char sub[256];
    if (!got) {
        printf("%-24s MISSING  FAIL\n", path);
        c->fails++;
        return;
    }
    if (json_is_integer(ref)) {
        double r = (double)json_integer_value(ref);
        int ok = json_is_number(got) && json_number_value(got) == r;
        say(c, ok, path, "ref %.17g got %.17g (exact)", r, json_is_number(got) ? json_number_value(got) : NAN);
    } else if (json_is_real(ref)) {
        double r = json_real_value(ref), g = json_is_number(got) ? json_number_value(got) : NAN;
        double d = fabs(g - r);
        int ok = d <= c->rtol * fabs(r) + c->atol;     /* false for NaN */
        if (!ok) c->fails++;
        if (!ok || !c->quiet)
            printf("%-24s ref %.17g got %.17g rel %.3e%s\n", path, r, g, d / (fabs(r) > 1e-30 ? fabs(r) : 1e-30),
                   ok ? "" : "  FAIL");
    } else if (json_is_object(ref)) {
        if (!json_is_object(got)) { printf("%-24s not an object  FAIL\n", path); c->fails++; return; }
        const char *key;
        json_t *v;
        json_object_foreach(ref, key, v) {
            snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", key);
            compare(c, sub, v, json_object_get(got, key));
        }
        json_object_foreach(got, key, v) {
            if (!json_object_get(ref, key) && !c->quiet) printf("%s%s%-20s (extra, not compared)\n", path, *path ? "." : "", key);
        }
    } else if (json_is_array(ref)) {
        if (!json_is_array(got) || json_array_size(got) != json_array_size(ref)) {
            printf("%-24s array of %zu expected  FAIL\n", path, json_array_size(ref));
            c->fails++;
            return;
        }
        for (size_t i = 0; i < json_array_size(ref); i++) {
            snprintf(sub, sizeof sub, "%s[%zu]", path, i);
            compare(c, sub, json_array_get(ref, i), json_array_get(got, i));
        }
    } else {
        int ok = json_equal(ref, got);
        if (!ok || !c->quiet) printf("%-24s %s%s\n", path, ok ? "equal" : "differs", ok ? "" : "  FAIL");
        if (!ok) c->fails++;
    }
}

static int parse_double(const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0) || isinf(v)) return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    cmp c = {.rtol = 1e-5, .atol = 1e-9};
    const char *paths[2];
    int n_paths = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(argv[i], "--rtol") || !strcmp(argv[i], "--atol")) && i + 1 < argc) {
            double *dst = argv[i][2] == 'r' ? &c.rtol : &c.atol;
            if (parse_double(argv[++i], dst)) { fprintf(stderr, "json_compare: bad value '%s'\n", argv[i]); return 2; }
        } else if (!strcmp(argv[i], "--quiet")) {
            c.quiet = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "json_compare: unknown option '%s'\n", argv[i]);
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
    json_t *doc[2];
    for (int k = 0; k < 2; k++) {
        json_error_t e;
        doc[k] = json_load_file(paths[k], JSON_REJECT_DUPLICATES, &e);
        if (!doc[k]) {
            fprintf(stderr, "json_compare: %s:%d:%d: %s\n", paths[k], e.line, e.column, e.text);
            if (k) json_decref(doc[0]);
            return 2;
        }
    }
    compare(&c, "", doc[0], doc[1]);
    printf("%d mismatches -> %s\n", c.fails, c.fails ? "FAIL" : "ok");
    json_decref(doc[0]);
    json_decref(doc[1]);
    return c.fails ? 1 : 0;
}
