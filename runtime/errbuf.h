/* errbuf.h - one-line error messages into a caller's buffer: "PATH: what is wrong". */
#ifndef MOE_ERRBUF_H
#define MOE_ERRBUF_H
#include <stddef.h>

/* Writes "path: " + the formatted text; control characters become '?' so the message
 * stays one line whatever a file put in it. No-op when err is NULL or errlen 0. */
void moe_errf(char *err, size_t errlen, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#endif
