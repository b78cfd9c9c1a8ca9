/* test_nvrtc.c - the build-time NVRTC compile: a kernel error comes back with NVRTC's log
 * for each architecture, quoting the source line; good source compiles for sm_80 and sm_90 and
 * lands in the kernel cache, a second compile is a cache hit, a corrupt entry is rebuilt.
 * Skipped (77) where NVRTC is not installed. */
#include "nvrtc.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); failures++; } } while (0)

static const char *const archs[] = {"sm_80", "sm_90"};

int main(void) {
    char dir[] = "/tmp/moec-nvrtc-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    setenv("MOEC_CACHE_DIR", dir, 1);
    cg_nvrtc_result r;
    char *log = NULL;
    const char *bad = "extern \"C\" __global__ void k(float *y) {\n    y[0] = undefined_name;\n}\n";
    int rc = cg_nvrtc_check(bad, "kernels.cu", archs, 2, &r, &log);
    if (!r.available) { printf("SKIP: NVRTC is not installed\n"); return 77; }
    CHECK(rc == -1 && log);
    if (log) {
        fputs(log, stdout);
        CHECK(strstr(log, "sm_80:") && strstr(log, "sm_90:"));
        CHECK(strstr(log, "kernels.cu(2): error: identifier \"undefined_name\" is undefined"));
        CHECK(strstr(log, "\n      y[0] = undefined_name;\n"));
    }
    free(log);

    const char *good = "extern \"C\" __global__ void k(float *y) { y[threadIdx.x] = 1.0f; }\n";
    CHECK(cg_nvrtc_check(good, "kernels.cu", archs, 2, &r, &log) == 0 && !log && r.cached == 0);
    CHECK(cg_nvrtc_check(good, "kernels.cu", archs, 2, &r, &log) == 0 && r.cached == 2);
    /* truncate one entry: it is compiled again and replaced */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "for f in %s/kernels/*sm_80*.cubin; do truncate -s 100 \"$f\"; done", dir);
    CHECK(system(cmd) == 0);
    CHECK(cg_nvrtc_check(good, "kernels.cu", archs, 2, &r, &log) == 0 && r.cached == 1);
    CHECK(cg_nvrtc_check(good, "kernels.cu", archs, 2, &r, &log) == 0 && r.cached == 2);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
    if (failures) { fprintf(stderr, "test_nvrtc: %d failure(s)\n", failures); return 1; }
    printf("test_nvrtc: ok (NVRTC %d.%d)\n", r.major, r.minor);
    return 0;
}
