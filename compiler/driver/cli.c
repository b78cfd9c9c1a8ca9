/* cli.c - the option parser, model loading and whole-file output moec's commands share;
 * see cli.h. */
#include "cli.h"
#include "diag.h"
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* the option of opts that `a` names (its name or alias; a long name may carry "=VALUE"),
 * with *inline_value set to what follows '=' */
static const cli_opt *find_opt(const cli_opt *opts, int n, const char *a, const char **inline_value) {
    *inline_value = NULL;
    for (int i = 0; i < n; i++) {
        const cli_opt *o = &opts[i];
        if (o->prefix) {
            if (!strncmp(a, o->name, strlen(o->name))) { *inline_value = a + strlen(o->name); return o; }
            continue;
        }
        if (!strcmp(a, o->name) || (o->alias && !strcmp(a, o->alias))) return o;
        size_t len = strlen(o->name);
        if (!strncmp(a, "--", 2) && !strncmp(a, o->name, len) && a[len] == '=') {
            *inline_value = a + len + 1;
            return o;
        }
    }
    return NULL;
}

/* The runtime's executables say it the same way (runtime/cli/args.c). */
static void unknown_option(const char *cmd, const char *a, const cli_opt *opts, int n, void (*usage)(FILE *)) {
    const char *words[64];
    int nw = 0;
    for (int i = 0; i < n && nw < 60; i++) {
        if (opts[i].prefix) continue;
        words[nw++] = opts[i].name;
        if (opts[i].alias) words[nw++] = opts[i].alias;
    }
    words[nw++] = "--help";
    char key[256];      /* "--modle=x" is compared as "--modle" */
    snprintf(key, sizeof key, "%s", a);
    if (strchr(key, '=')) *strchr(key, '=') = 0;
    const char *near = strlen(key) > 2 ? diag_nearest(key, words, nw) : NULL;
    if (near) {
        fprintf(stderr, "moec %s: unknown option '%s'; did you mean '%s'? (moec %s -h lists the options)\n", cmd, a,
                near, cmd);
    } else {
        fprintf(stderr, "moec %s: unknown option '%s'\n", cmd, a);
        usage(stderr);
    }
}

int cli_parse(const char *cmd, int argc, char **argv, const cli_opt *opts, int n, const char **file,
              int *help, void (*usage)(FILE *)) {
    int only_files = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        const cli_opt *o = NULL;
        if (!only_files && !strcmp(a, "--")) { only_files = 1; continue; }
        if (!only_files && (!strcmp(a, "-h") || !strcmp(a, "--help"))) { *help = 1; return CLI_OK; }
        if (!only_files && a[0] == '-' && a[1]) {
            o = find_opt(opts, n, a, &v);
            if (!o) { unknown_option(cmd, a, opts, n, usage); return CLI_USAGE; }
        }
        if (o && o->flag) {
            if (v) { fprintf(stderr, "moec %s: %s takes no value\n", cmd, o->name); return CLI_USAGE; }
            *o->flag = 1;
        } else if (o) {
            if (!v && i + 1 >= argc) { fprintf(stderr, "moec %s: %s needs a value\n", cmd, a); return CLI_USAGE; }
            *o->value = v ? v : argv[++i];
        } else if (*file) {
            fprintf(stderr, "moec %s: more than one input file ('%s' and '%s')\n", cmd, *file, a);
            return CLI_USAGE;
        } else {
            *file = a;
        }
    }
    if (!*file) {
        fprintf(stderr, "moec %s: no input file (give - to read standard input)\n", cmd);
        usage(stderr);
        return CLI_USAGE;
    }
    return CLI_OK;
}

const md_model *cli_load(front *f, const char *file, const char *model) {
    return strcmp(file, "-") ? front_load(f, file, model) : front_load_stdin(f, model);
}

const char *cli_file_name(const char *file) { return strcmp(file, "-") ? file : "<stdin>"; }

int cli_out_open(cli_out *o, const char *cmd, const char *path) {
    o->f = NULL;
    o->path = path;
    o->tmp[0] = 0;
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {     /* /dev/stdout, a FIFO: written, never replaced */
        if (!(o->f = fopen(path, "w"))) {
            fprintf(stderr, "moec %s: cannot write %s: %s\n", cmd, path, strerror(errno));
            return CLI_FAILED;
        }
        return CLI_OK;
    }
    int fd = -1;
    if (snprintf(o->tmp, sizeof o->tmp, "%s.tmp.XXXXXX", path) < (int)sizeof o->tmp) fd = mkstemp(o->tmp);
    else errno = ENAMETOOLONG;
    if (fd >= 0) {
        mode_t mask = umask(0);     /* mkstemp made it 0600: give it a text file's mode */
        umask(mask);
        if (fchmod(fd, 0666 & ~mask) == 0) o->f = fdopen(fd, "w");
        if (!o->f) { int e = errno; close(fd); unlink(o->tmp); errno = e; }
    }
    if (!o->f) {
        fprintf(stderr, "moec %s: cannot write %s: %s\n", cmd, path, strerror(errno));
        return CLI_FAILED;
    }
    return CLI_OK;
}

int cli_out_close(cli_out *o, const char *cmd, int ok) {
    if (!o->f) return CLI_FAILED;
    int bad = ferror(o->f);
    bad |= fclose(o->f) != 0;
    o->f = NULL;
    if (ok && !bad && (!o->tmp[0] || rename(o->tmp, o->path) == 0)) return CLI_OK;
    if (ok) fprintf(stderr, "moec %s: cannot write %s: %s\n", cmd, o->path, strerror(errno ? errno : EIO));
    if (o->tmp[0]) unlink(o->tmp);
    return CLI_FAILED;
}

extern char **environ;

/* Runs argv[0] with argv (no shell), its standard output into the file out (NULL: ours); 0
 * when it exits with status 0. */
static int run_argv(char *const *argv, const char *out) {
    pid_t pid;
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa)) return -1;
    if (out) posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "moec: cannot run '%s': %s\n", argv[0], strerror(rc));
        return CLI_USAGE;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int cli_run(const char **argv, int n, const char *what, const char *out) {
    for (int i = 0; i < n; i++)
        if (!argv[i]) { fprintf(stderr, "moec: out of memory\n"); return -1; }
    if (run_argv((char *const *)argv, out) == 0) return 0;
    fprintf(stderr, "moec: the %s failed:", what);
    for (int i = 0; i < n; i++) fprintf(stderr, " %s", argv[i]);
    fputc('\n', stderr);
    return -1;
}

int cli_write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

#ifndef MOE_CC
#define MOE_CC "cc"
#endif

const char *cli_cc(void) {
    const char *env = getenv("MOEC_CC");
    return env && *env ? env : MOE_CC;
}

const char *cli_march(void) {
    const char *env = getenv("MOEC_MARCH");
    return env && *env ? env : "native";
}

const char *cli_compiler_id(void) {
    static char id[512];
    snprintf(id, sizeof id, "%s (moec built by %s)", cli_cc(), __VERSION__);
    return id;
}
