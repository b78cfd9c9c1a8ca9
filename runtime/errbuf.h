/* errbuf.h - one-line error messages into a caller's buffer: "PATH: what is wrong", and the
 * one way input files are opened. */
#ifndef MOE_ERRBUF_H
#define MOE_ERRBUF_H
#include <stddef.h>
#include <stdint.h>

/* Writes "path: " + the formatted text; control characters become '?' so the message
 * stays one line whatever a file put in it. No-op when err is NULL or errlen 0. */
void moe_errf(char *err, size_t errlen, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Opens path for reading if it is a regular file: a descriptor and its size, or -1 with
 * the reason in err. Opened without blocking, so a FIFO or a device is refused instead of
 * hanging in open(). */
int moe_open_regular(const char *path, int64_t *size, char *err, size_t errlen);
#endif
