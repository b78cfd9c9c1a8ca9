/* cg.h - an indenting code builder with a sticky error (SQLite's sqlite3_str habit).
 *
 * cg_line appends one line at the current indent; cg_open appends a line ending in
 * " {" and indents; cg_close dedents and closes. Any allocation failure is remembered
 * and cg_finish returns NULL, so emitters never check after each line.
 */
#ifndef MOE_CG_H
#define MOE_CG_H
#include <stddef.h>

typedef struct cg cg;
cg *cg_create(void);
void cg_destroy(cg *b);
void cg_line(cg *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cg_open(cg *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cg_close(cg *b, const char *suffix);   /* "}" + suffix ("" or ";") */
void cg_raw(cg *b, const char *text);       /* verbatim, no indent */
const char *cg_finish(cg *b);               /* the text, or NULL after any failure */
size_t cg_len(const cg *b);

struct arena;
/* `s` as a C string literal, quotes included: backslash, quote, '?' (trigraphs) and every
 * byte outside printable ASCII escaped, so any path or name is safe in generated C. */
const char *cg_cstr(struct arena *a, const char *s);
#endif
