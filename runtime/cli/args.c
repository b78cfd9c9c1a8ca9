/* args.c - see args.h. */
#include "args.h"
#include "cli.h"
#include "moe_nearest.h"
#include <errno.h>
#include <float.h>
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(const char *prog, const char *cmd, const moe_flag *f, int n, FILE *out) {
    fprintf(out, "usage: %s %s [options]\n", prog, cmd);
    for (int i = 0; i < n; i++)
        fprintf(out, "  %s%s%*s%s\n", f[i].name, f[i].takes_value ? " V" : "",
                (int)(18 - strlen(f[i].name) - (f[i].takes_value ? 2 : 0)), "", f[i].help);
}

int moe_args_parse(const char *prog, const char *cmd, int argc, char **argv, moe_flag *flags, int n) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(prog, cmd, flags, n, stdout); return 1; }
        int k = 0;
        while (k < n && strcmp(flags[k].name, a)) k++;
        if (k == n) {
            const char *near = moe_nearest(a, flags, n, sizeof *flags);
            if (near) {
                fprintf(stderr, "%s %s: unknown option '%s'; did you mean '%s'? (%s %s -h lists the options)\n", prog,
                        cmd, a, near, prog, cmd);
            } else {
                fprintf(stderr, "%s %s: unknown option '%s'\n", prog, cmd, a);
                usage(prog, cmd, flags, n, stderr);
            }
            return -1;
        }
        if (flags[k].takes_value) {
            if (i + 1 >= argc) { fprintf(stderr, "%s %s: %s needs a value\n", prog, cmd, a); return -1; }
            flags[k].value = argv[++i];
        } else {
            flags[k].value = "1";
        }
    }
    return 0;
}

const char *moe_arg(const moe_flag *flags, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(flags[i].name, name)) return flags[i].value;
    return NULL;
}

/* parsed in 64 bits and range-checked, so that no value is cut to fit an int */
int moe_arg_int(const moe_flag *flags, int n, const char *name, long long def, long long min, long long max,
                long long *out) {
    const char *v = moe_arg(flags, n, name);
    if (!v) { *out = def; return 0; }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end || end == v || x < min || x > max) {
        fprintf(stderr, "%s %s: %s expects an integer from %lld to %lld, got '%s'\n", moe_prog_name, moe_cmd_name,
                name, min, max, v);
        return -1;
    }
    *out = x;
    return 0;
}

int moe_arg_double(const moe_flag *flags, int n, const char *name, double def, double *out) {
    const char *v = moe_arg(flags, n, name);
    if (!v) { *out = def; return 0; }
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno == ERANGE && fabs(x) <= DBL_MIN) errno = 0;     /* underflow: a tiny number is a number */
    if (errno || *end || end == v || !isfinite(x)) {
        fprintf(stderr, "%s %s: %s expects a number, got '%s'\n", moe_prog_name, moe_cmd_name, name, v);
        return -1;
    }
    *out = x;
    return 0;
}
