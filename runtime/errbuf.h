/* errbuf.h - one-line error messages into a caller's buffer: "PATH: what is wrong", the one
 * way input files are opened, and the one way small output files are written (whole or not
 * at all). */
#ifndef MOE_ERRBUF_H
#define MOE_ERRBUF_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Writes "path: " + the formatted text; control characters become '?' so the message
 * stays one line whatever a file put in it. No-op when err is NULL or errlen 0. */
void moe_errf(char *err, size_t errlen, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Opens path for reading if it is a regular file: a descriptor and its size, or -1 with
 * the reason in err. Opened without blocking, so a FIFO or a device is refused instead of
 * hanging in open(). */
int moe_open_regular(const char *path, int64_t *size, char *err, size_t errlen);

/* A file written whole or not at all: moe_afile_open opens PATH.tmp.<pid> for writing (NULL,
 * errno set, when it cannot); moe_afile_close(a, ok) closes it and, when ok and the close
 * succeeds, renames it over PATH, else removes it. 0, or -1 with errno saying why. A crash in
 * between leaves PATH as it was and a PATH.tmp.* file. (Checkpoints, which also need fsync,
 * have their own writer: st.c.) */
typedef struct moe_afile { FILE *f; const char *path; char tmp[4200]; } moe_afile;
FILE *moe_afile_open(moe_afile *a, const char *path);
int moe_afile_close(moe_afile *a, int ok);
#endif
