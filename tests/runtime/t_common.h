/* t_common.h - tiny assertion helpers shared by the runtime tests (static, test-only). */
#ifndef MOE_T_COMMON_H
#define MOE_T_COMMON_H
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

static int t_failures;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            t_failures++;                                                            \
        }                                                                            \
    } while (0)

/* Compares a produced message with the expected one. */
#define CHECK_STR(got, want) t_check_str(__FILE__, __LINE__, (got), (want))
static inline void t_check_str(const char *file, int line, const char *got, const char *want) {
    if (!got || strcmp(got, want) != 0) {
        fprintf(stderr, "%s:%d: got  \"%s\"\n%*s  want \"%s\"\n", file, line, got ? got : "(null)",
                (int)strlen(file) + 6, "", want);
        t_failures++;
    }
}

/* A fresh temporary directory (removed by t_rmdir at the end). */
static char t_dir[256];
static inline void t_mkdir(void) {
    const char *base = getenv("TMPDIR");
    snprintf(t_dir, sizeof t_dir, "%s/moe_rt_XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(t_dir)) {
        perror("mkdtemp");
        exit(2);
    }
}
static inline const char *t_path(const char *name) {
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", t_dir, name);
    return buf[k];
}
/* The test directory is flat: remove its files, then the directory. */
static inline void t_rmdir(void) {
    DIR *d = t_dir[0] ? opendir(t_dir) : NULL;
    struct dirent *e;
    char p[1024];
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", t_dir, e->d_name);
        remove(p);
    }
    if (d) closedir(d);
    if (t_dir[0] && rmdir(t_dir) != 0) fprintf(stderr, "warning: could not remove %s\n", t_dir);
}

static inline int t_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = (n == 0 || fwrite(data, 1, n, f) == n);
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* Whole file into a malloc'd buffer (NUL-terminated); NULL when missing. */
static inline char *t_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)sz + 1);
    if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) buf[sz] = 0;
    if (n) *n = (size_t)sz;
    return buf;
}

static inline int t_done(const char *name) {
    t_rmdir();
    if (t_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, t_failures);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}
#endif
