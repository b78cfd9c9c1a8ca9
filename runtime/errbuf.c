/* errbuf.c - see errbuf.h. */
#include "errbuf.h"
#include <unistd.h>
#include <sys/stat.h>
#include <string.h>
#include <fcntl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

void moe_errf(char *err, size_t errlen, const char *path, const char *fmt, ...) {
    if (!err || !errlen) return;
    int k = snprintf(err, errlen, "%s: ", path);
    if (k < 0 || (size_t)k >= errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
    va_end(ap);
    for (char *c = err; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
}

FILE *moe_afile_open(moe_afile *a, const char *path) {
    a->path = path;
    int k = snprintf(a->tmp, sizeof a->tmp, "%s.tmp.%ld", path, (long)getpid());
    if (k < 0 || (size_t)k >= sizeof a->tmp) { errno = ENAMETOOLONG; return a->f = NULL; }
    return a->f = fopen(a->tmp, "w");
}

int moe_afile_close(moe_afile *a, int ok) {
    int why = ok ? 0 : errno;
    if (!a->f) return -1;
    if (fclose(a->f) != 0 && ok) { ok = 0; why = errno; }
    a->f = NULL;
    if (ok && rename(a->tmp, a->path) == 0) return 0;
    if (ok) why = errno;
    unlink(a->tmp);
    errno = why;
    return -1;
}

int moe_open_regular(const char *path, int64_t *size, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) { moe_errf(err, errlen, path, "cannot open: %s", strerror(errno)); return -1; }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        moe_errf(err, errlen, path, "not a regular file");
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    *size = (int64_t)sb.st_size;
    return fd;
}
