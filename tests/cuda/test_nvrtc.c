/* test_nvrtc.c - the build-time NVRTC compile: a kernel error comes back with NVRTC's log
 * for each architecture, quoting the source line; good source compiles for sm_80 and sm_90 and
 * lands in the kernel cache, a second compile is a cache hit, a corrupt entry is rebuilt, and
 * the cubins come back to a caller that asks for them (the cuda device's path).
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
    moe_nvrtc_result r;
    char *log = NULL;
    const char *bad = "extern \"C\" __global__ void k(float *y) {\n    y[0] = undefined_name;\n}\n";
    int rc = moe_nvrtc_compile(bad, "kernels.cu", archs, 2, &r, &log, NULL);
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
    CHECK(moe_nvrtc_compile(good, "kernels.cu", archs, 2, &r, &log, NULL) == 0 && !log && r.cached == 0);
    CHECK(moe_nvrtc_compile(good, "kernels.cu", archs, 2, &r, &log, NULL) == 0 && r.cached == 2);
    /* truncate one entry: it is compiled again and replaced */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "for f in %s/kernels/*sm_80*.cubin; do truncate -s 100 \"$f\"; done", dir);
    CHECK(system(cmd) == 0);
    CHECK(moe_nvrtc_compile(good, "kernels.cu", archs, 2, &r, &log, NULL) == 0 && r.cached == 1);
    CHECK(moe_nvrtc_compile(good, "kernels.cu", archs, 2, &r, &log, NULL) == 0 && r.cached == 2);
    /* the cubins come back (ELF images), from the cache as from a compile */
    moe_cubin hit[2], fresh[2];
    CHECK(moe_nvrtc_compile(good, "kernels.cu", archs, 2, &r, &log, hit) == 0 && r.cached == 2);
    char nocache[sizeof dir + 32];     /* a cache directory that cannot be made: under a file */
    snprintf(nocache, sizeof nocache, "%s/file", dir);
    FILE *f = fopen(nocache, "w");
    CHECK(f && fclose(f) == 0);
    strcat(nocache, "/cache");
    setenv("MOEC_CACHE_DIR", nocache, 1);
    CHECK(moe_nvrtc_compile(good, "kernels.cu", archs, 2, &r, &log, fresh) == 0 && r.cached == 0);
    for (int i = 0; i < 2; i++) {
        CHECK(hit[i].data && hit[i].size > 4 && !memcmp(hit[i].data, "\177ELF", 4));
        CHECK(fresh[i].size == hit[i].size && fresh[i].data && !memcmp(fresh[i].data, hit[i].data, hit[i].size));
        free(hit[i].data);
        free(fresh[i].data);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
    if (failures) { fprintf(stderr, "test_nvrtc: %d failure(s)\n", failures); return 1; }
    printf("test_nvrtc: ok (NVRTC %d.%d)\n", r.major, r.minor);
    return 0;
}
