/* mem.c - how much memory this process may still take (rt.h, moe_mem_available).
 *
 * The smallest of: MemAvailable (/proc/meminfo); the cgroup's limit less its usage
 * (cgroup v2 memory.max and memory.current, or v1 memory.limit_in_bytes and usage_in_bytes);
 * and the address-space and data limits (ulimit -v, -d) less what the process maps now
 * (and, for -v, what its threads will map).
 * A container killed by its cgroup gives no message, so the runtime compares its plan with
 * this before it allocates and refuses with the numbers.
 */
#include "rt.h"
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* the first number in FILE (after `key`, when given), times `unit`; -1 if none */
static int64_t read_num(const char *path, const char *key, int64_t unit) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    long long v = -1;
    while (fgets(line, sizeof line, f)) {
        if (key && strncmp(line, key, strlen(key))) continue;
        if (sscanf(key ? line + strlen(key) : line, " %lld", &v) == 1) break;
        v = -1;     /* "max": no limit */
        break;
    }
    fclose(f);
    return v < 0 ? -1 : (int64_t)v * unit;
}

/* this process's cgroup (v2 "0::/PATH", or v1's memory controller), as a directory */
static int cgroup_dir(char *dir, size_t n, int *v2) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return -1;
    char line[1024];
    int found = -1;
    while (found && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *path = strrchr(line, ':');
        if (!path) continue;
        if (!strncmp(line, "0::", 3)) {
            snprintf(dir, n, "/sys/fs/cgroup%s", path + 1);
            *v2 = 1;
            found = 0;
        } else if (strstr(line, ":memory:")) {
            snprintf(dir, n, "/sys/fs/cgroup/memory%s", path + 1);
            *v2 = 0;
            found = 0;
        }
    }
    fclose(f);
    return found;
}

/* Address space that the threads map beside our plan: OpenBLAS's 128 MiB work buffer, a
 * malloc arena (reserved in 64 MiB heaps) and a stack per thread. Measured: below about
 * this, OpenBLAS retries its failing buffer allocation forever instead of failing. */
static int64_t address_reserve(void) {
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    return ((int64_t)128 + 160 * (int64_t)threads) << 20;
}

static int64_t clamp0(int64_t v) { return v > 0 ? v : 0; }

/* v < 0: unknown; a limit already passed is given as 0 */
static void take(int64_t *best, int64_t v, char *why, size_t n, const char *what) {
    if (v < 0 || (*best >= 0 && v >= *best)) return;
    *best = v;
    snprintf(why, n, "%s", what);
}

int64_t moe_mem_available(char *why, size_t n) {
    int64_t best = -1;
    snprintf(why, n, "unknown");
    take(&best, read_num("/proc/meminfo", "MemAvailable:", 1024), why, n, "MemAvailable");
    char dir[900], path[1024];
    int v2 = 0;
    if (cgroup_dir(dir, sizeof dir, &v2) == 0) {
        snprintf(path, sizeof path, "%s/%s", dir, v2 ? "memory.max" : "memory.limit_in_bytes");
        int64_t lim = read_num(path, NULL, 1);
        snprintf(path, sizeof path, "%s/%s", dir, v2 ? "memory.current" : "memory.usage_in_bytes");
        int64_t used = read_num(path, NULL, 1);
        if (lim >= 0 && lim < ((int64_t)1 << 60))
            take(&best, clamp0(lim - (used > 0 ? used : 0)), why, n, v2 ? "the cgroup's memory.max" : "the cgroup's limit");
    }
    int64_t vm = read_num("/proc/self/status", "VmSize:", 1024), data = read_num("/proc/self/status", "VmData:", 1024);
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && vm >= 0) {
        char what[96];
        snprintf(what, sizeof what, "ulimit -v, less %lld MiB kept for the threads' buffers and stacks",
                 (long long)(address_reserve() >> 20));
        take(&best, clamp0((int64_t)rl.rlim_cur - vm - address_reserve()), why, n, what);
    }
    if (getrlimit(RLIMIT_DATA, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && data >= 0)
        take(&best, clamp0((int64_t)rl.rlim_cur - data), why, n, "ulimit -d");
    return best;
}
