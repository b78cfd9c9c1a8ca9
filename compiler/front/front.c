/* front.c - the front end's driver: files and imports in, one md_model out.
 *
 * Reads the file (regular files only, at most FRONT_MAX_FILE bytes; or standard input),
 * parses it, follows its imports depth first (paths relative to the importing file; a
 * file reached twice is loaded once, by its real path; a cycle is an error at the import
 * that closes it), then runs the semantic pass over every model of every file and
 * picks the one asked for. Any error anywhere means no model: all of them are kept
 * for front_print_diagnostics.
 */
#include "front.h"
#include "arena.h"
#include "diag.h"
#include "dsl.h"
#include "sema.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { FRONT_MAX_FILE = 64 << 20, FRONT_MAX_IMPORT_DEPTH = 64 };

typedef struct ffile {
    ast_file *ast;
    const char *real;           /* realpath, for identity */
    bool loading;
} ffile;

struct front {
    arena *a;
    diag_ctx *d;
    ffile *files;
    int nfiles, cap;
    const char *chain[FRONT_MAX_IMPORT_DEPTH + 1];    /* files being loaded */
    int parse_errors;
    bool no_imports;
    sema_out sem;
};

front *front_create(void) { return front_create_limit(0); }

front *front_create_limit(size_t arena_bytes) {
    front *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->a = arena_create(arena_bytes);
    f->d = diag_create(100);
    if (!f->a || !f->d) { front_destroy(f); return NULL; }
    return f;
}

void front_destroy(front *f) {
    if (!f) return;
    diag_destroy(f->d);
    arena_destroy(f->a);
    free(f->files);
    free(f);
}

int front_error_count(const front *f) { return f ? diag_count(f->d) : 1; }
void front_print_diagnostics(const front *f, FILE *out) { if (f) diag_print(f->d, out); }
struct arena *front_arena(front *f) { return f ? f->a : NULL; }
struct diag_ctx *front_diag(front *f) { return f ? f->d : NULL; }
void front_allow_imports(front *f, bool allow) { if (f) f->no_imports = !allow; }

static const char not_regular_fifo[] = "a named pipe (FIFO), not a regular file";

/* What a path that is not a regular file is, for the message. */
static const char *not_regular(mode_t mode) {
    if (S_ISFIFO(mode)) return not_regular_fifo;
    if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device, not a regular file";
    if (S_ISSOCK(mode)) return "a socket, not a regular file";
    return "not a regular file";
}

/* Reads a whole regular file into the arena; NULL with *err (why) on failure. */
static char *read_file(arena *a, const char *path, size_t *len, const char **err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);   /* a FIFO must not block */
    if (fd < 0) { *err = strerror(errno); return NULL; }
    struct stat st;
    char *buf = NULL;
    *err = NULL;
    if (fstat(fd, &st) < 0) goto fail;
    if (S_ISDIR(st.st_mode)) { errno = EISDIR; goto fail; }
    if (!S_ISREG(st.st_mode)) { *err = not_regular(st.st_mode); goto fail; }
    if (st.st_size > FRONT_MAX_FILE) { *err = "larger than 64 MiB"; goto fail; }
    size_t size = (size_t)st.st_size, got = 0;
    buf = arena_alloc(a, size + 1);
    if (!buf) { errno = ENOMEM; goto fail; }
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) goto fail;
        if (r == 0) break;          /* the file shrank */
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return buf;
fail:
    if (!*err) *err = strerror(errno);
    close(fd);
    return NULL;
}

/* Reads standard input to its end into the arena; NULL with *err (why) on failure. */
static char *read_stdin(arena *a, size_t *len, const char **err) {
    size_t cap = 0, n = 0;
    char *buf = NULL;
    for (;;) {
        if (n == cap) {
            if (cap > FRONT_MAX_FILE) { *err = "larger than 64 MiB"; free(buf); return NULL; }
            size_t ncap = cap ? 2 * cap : 65536;
            if (ncap > (size_t)FRONT_MAX_FILE + 1) ncap = (size_t)FRONT_MAX_FILE + 1;
            char *nb = realloc(buf, ncap);
            if (!nb) { *err = strerror(ENOMEM); free(buf); return NULL; }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(STDIN_FILENO, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { *err = strerror(errno); free(buf); return NULL; }
        if (r == 0) break;
        n += (size_t)r;
    }
    char *text = arena_alloc(a, n + 1);
    if (text) { memcpy(text, buf, n); text[n] = 0; }
    else *err = strerror(ENOMEM);
    free(buf);
    *len = n;
    return text;
}

/* `rel` relative to the directory of `from` (as shown in messages). */
static const char *join(arena *a, const char *from, const char *rel) {
    if (rel[0] == '/') return arena_strdup(a, rel);
    const char *slash = strrchr(from, '/');
    if (!slash) return arena_strdup(a, rel);
    return arena_printf(a, "%.*s/%s", (int)(slash - from), from, rel);
}

static ffile *add_file(front *f) {
    if (f->nfiles == f->cap) {
        int cap = f->cap ? 2 * f->cap : 8;
        ffile *nf = realloc(f->files, sizeof *nf * (size_t)cap);
        if (!nf) return NULL;
        f->files = nf;
        f->cap = cap;
    }
    ffile *ff = &f->files[f->nfiles++];
    memset(ff, 0, sizeof *ff);
    return ff;
}

static void cycle_error(front *f, diag_loc at, int from, int depth, const char *again) {
    char buf[400];
    diag_error(f->d, at, "import cycle: %s", diag_chain(buf, sizeof buf, f->chain + from, depth - from, again));
}

/* Loads `shown` (or `text` when given) and, recursively, its imports. */
static void load(front *f, const char *shown, const char *text, size_t len, diag_loc at, int depth) {
    char realbuf[PATH_MAX];
    const char *real = shown;
    if (!text) {
        if (!realpath(shown, realbuf)) {
            diag_error(f->d, at, "cannot read '%s': %s", shown, strerror(errno));
            return;
        }
        real = realbuf;
    }
    for (int i = 0; i < f->nfiles; i++) {
        if (strcmp(f->files[i].real, real)) continue;
        if (!f->files[i].loading) return;                   /* already loaded */
        int from = 0;
        while (from < depth && strcmp(f->chain[from], f->files[i].ast->path)) from++;
        cycle_error(f, at, from, depth, shown);
        return;
    }
    if (depth > FRONT_MAX_IMPORT_DEPTH) {
        diag_error(f->d, at, "imports nested more than %d deep", FRONT_MAX_IMPORT_DEPTH);
        return;
    }
    if (!text) {
        const char *err;
        text = read_file(f->a, shown, &len, &err);
        if (!text) {
            diag_error(f->d, at, "cannot read '%s': %s", shown, err);
            if (depth == 0 && err == not_regular_fifo)
                diag_hint(f->d, "to read a pipe, give - as the file and redirect the pipe to standard input");
            return;
        }
    }
    ast_file *af = ARENA_NEW(f->a, ast_file);
    const char *realcopy = arena_strdup(f->a, real);
    ffile *ff = af && realcopy ? add_file(f) : NULL;
    if (!ff) { diag_error(f->d, at, "out of memory"); return; }
    int index = f->nfiles - 1;
    af->path = arena_strdup(f->a, shown);
    if (!af->path) { diag_error(f->d, at, "out of memory"); return; }
    af->text = text;
    af->len = len;
    ff->ast = af;
    ff->real = realcopy;
    ff->loading = true;
    diag_add_source(f->d, af->path, text, len);
    int errors = dsl_parse(f->a, f->d, af);
    f->chain[depth] = af->path;
    for (const ast_import *im = af->imports; im && errors == 0; im = im->next) {
        if (f->no_imports) { diag_error(f->d, im->loc, "imports are disabled here"); continue; }
        if (!im->path[0]) { diag_error(f->d, im->loc, "empty import path"); continue; }
        const char *path = join(f->a, af->path, im->path);
        if (!path) { diag_error(f->d, im->loc, "out of memory"); break; }
        load(f, path, NULL, 0, im->loc, depth + 1);
    }
    f->files[index].loading = false;      /* files may have moved */
}

/* The model the tool asked for (name NULL: the last model of the main file), before
 * the semantic pass; reports and returns NULL when there is none. */
static const ast_model *select_model(front *f, const char *path, const char *name) {
    diag_loc whole = {path, 0, 0};
    if (!name) {
        const ast_model *last = f->files[0].ast->last_model;
        if (!last) diag_error(f->d, whole, "no model in this file");
        return last;
    }
    const char *best = NULL;
    int bestd = 4;
    for (int i = 0; i < f->nfiles; i++)
        for (const ast_model *m = f->files[i].ast->models; m; m = m->next) {
            if (!strcmp(m->name, name)) return m;
            int d = diag_edit_distance(name, m->name, 3);
            if (d < bestd) { bestd = d; best = m->name; }
        }
    diag_error(f->d, whole, "no model named '%s'", name);
    if (best) diag_hint(f->d, "did you mean '%s'?", best);
    return NULL;
}

static const md_model *run(front *f, const char *path, const char *text, size_t len,
                           const char *name) {
    if (!f || !path) return NULL;
    if (f->nfiles) { diag_error(f->d, (diag_loc){path, 0, 0}, "one file per front end"); return NULL; }
    load(f, path, text, len, (diag_loc){path, 0, 0}, 0);
    f->parse_errors = diag_count(f->d);
    if (f->parse_errors || f->nfiles == 0) return NULL;
    ast_file **files = ARENA_ARRAY(f->a, ast_file *, f->nfiles);
    if (!files) { diag_error(f->d, (diag_loc){path, 0, 0}, "out of memory"); return NULL; }
    for (int i = 0; i < f->nfiles; i++) files[i] = f->files[i].ast;
    const ast_model *want = select_model(f, path, name);
    sema_run(f->a, f->d, files, f->nfiles, want, &f->sem);
    const md_model *m = NULL;
    for (int i = 0; i < f->sem.n; i++)
        if (f->sem.ast[i] == want) m = f->sem.md[i];
    return diag_count(f->d) ? NULL : m;
}

const md_model *front_load(front *f, const char *path, const char *name) {
    return run(f, path, NULL, 0, name);
}

const md_model *front_load_stdin(front *f, const char *name) {
    if (!f) return NULL;
    const char *err = NULL;
    size_t len = 0;
    char *text = read_stdin(f->a, &len, &err);
    if (!text) {
        diag_error(f->d, (diag_loc){"<stdin>", 0, 0}, "cannot read '<stdin>': %s", err);
        return NULL;
    }
    return run(f, "<stdin>", text, len, name);
}

const md_model *front_load_text(front *f, const char *path, const char *text, size_t len,
                                const char *name) {
    if (!text) return NULL;
    return run(f, path, text, len, name);
}

int front_dump_ast(const front *f, FILE *out) {
    if (!f || f->parse_errors || f->nfiles == 0) return -1;
    for (int i = 0; i < f->nfiles; i++) ast_dump(f->files[i].ast, out);
    return 0;
}
