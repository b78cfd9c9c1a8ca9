/* st.c - safetensors reader and writer (see st.h for the format).
 *
 * Reading: the 8-byte length and the JSON header are read first and checked in full
 * (sizes, dtypes, shapes, offsets, overlaps) before any tensor data is touched; then one
 * 64-byte aligned buffer holds all tensors, each read straight from the file into its
 * place with pread, so a loaded checkpoint costs its size once and every `data` pointer
 * is aligned whatever the offsets in the file. F32 and I8 are accepted; a file that holds
 * anything else is rejected by name rather than half-loaded.
 * Writing: header in the caller's tensor order, data contiguous, header padded with
 * spaces to a multiple of 8; written to PATH.tmp.<pid>, fsync'ed, renamed over PATH,
 * then the directory is fsync'ed. On failure the temporary file is removed.
 * Not done here: other dtypes (BF16, F16, ...), byte-swapping (the host must be little-endian, checked
 * at compile time), memory mapping.
 */
#include "st.h"
#include "errbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "st.c stores fp32 in host byte order; safetensors is little-endian"
#endif

#define ST_MAX_HEADER (100ull * 1000 * 1000) /* 100 MB: far above any real header */
#define ST_ALIGN 64

struct moe_st {
    json_t *root;       /* the parsed header: tensor names point into it */
    json_t *index;      /* name -> position in tensors[] */
    json_t *meta;       /* "__metadata__" object or NULL (borrowed from root) */
    moe_st_tensor *tensors;
    int n;
    unsigned char *data;    /* all tensor data, ST_ALIGN-aligned */
};

static const char *const st_dtype_name[] = {"F32", "I8"};
static const uint64_t st_dtype_size[] = {4, 1};
static uint64_t st_bytes(const moe_st_tensor *t) { return (uint64_t)t->numel * st_dtype_size[t->dtype]; }


/* A name fit for a one-line message: control characters become '?', long names are cut. */
static const char *st_show(const char *name, char buf[80]) {
    size_t i = 0;
    for (; name[i] && i < 64; i++) buf[i] = ((unsigned char)name[i] < 0x20 || name[i] == 0x7f) ? '?' : name[i];
    if (name[i]) { memcpy(buf + i, "...", 3); i += 3; }
    buf[i] = 0;
    return buf;
}

/* Reads exactly n bytes at offset off; 0, or -1 with errno (0 = file ended early). */
static int st_pread_all(int fd, void *buf, size_t n, uint64_t off) {
    char *p = buf;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        ssize_t r = pread(fd, p, chunk, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) { errno = 0; return -1; }
        p += r; off += (uint64_t)r; n -= (size_t)r;
    }
    return 0;
}

typedef struct st_span { uint64_t begin, end; int idx; } st_span;

static int st_span_cmp(const void *a, const void *b) {
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

void moe_st_free(moe_st *st) {
    if (!st) return;
    json_decref(st->root);
    json_decref(st->index);
    free(st->tensors);
    free(st->data);
    free(st);
}

/* Checks one header entry and fills t (data still unset) and its byte span. */
static int st_parse_entry(const char *path, const char *name, json_t *v, uint64_t data_size,
                          moe_st_tensor *t, st_span *sp, char *err, size_t errlen) {
    char nb[80];
    const char *sn = st_show(name, nb);
    if (!json_is_object(v)) { moe_errf(err, errlen, path, "tensor '%s': entry is not an object", sn); return -1; }
    json_t *dt = json_object_get(v, "dtype");
    if (!json_is_string(dt)) { moe_errf(err, errlen, path, "tensor '%s': dtype is missing or not a string", sn); return -1; }
    if (!strcmp(json_string_value(dt), "F32")) t->dtype = MOE_ST_F32;
    else if (!strcmp(json_string_value(dt), "I8")) t->dtype = MOE_ST_I8;
    else {
        char db[80];
        moe_errf(err, errlen, path, "tensor '%s' has dtype %s; only F32 and I8 are supported", sn,
               st_show(json_string_value(dt), db));
        return -1;
    }
    json_t *shape = json_object_get(v, "shape");
    if (!json_is_array(shape)) { moe_errf(err, errlen, path, "tensor '%s': shape is missing or not a list", sn); return -1; }
    size_t nd = json_array_size(shape);
    if (nd > MOE_ST_MAX_DIMS) {
        moe_errf(err, errlen, path, "tensor '%s': shape has %zu dimensions (at most %d)", sn, nd, MOE_ST_MAX_DIMS);
        return -1;
    }
    t->name = name;
    t->ndim = (int)nd;
    int zero = 0;
    for (size_t d = 0; d < nd; d++) {
        json_t *e = json_array_get(shape, d);
        if (!json_is_integer(e) || json_integer_value(e) < 0) {
            moe_errf(err, errlen, path, "tensor '%s': shape is not a list of non-negative integers", sn);
            return -1;
        }
        t->shape[d] = (int64_t)json_integer_value(e);
        zero |= t->shape[d] == 0;
    }
    for (size_t d = nd; d < MOE_ST_MAX_DIMS; d++) t->shape[d] = 0;
    uint64_t numel = zero ? 0 : 1;
    for (size_t d = 0; d < nd && !zero; d++) {
        uint64_t s = (uint64_t)t->shape[d];
        if (numel > (UINT64_MAX / 8) / s) {   /* keeps numel * 4 far from wrapping */
            moe_errf(err, errlen, path, "tensor '%s': shape product overflows", sn);
            return -1;
        }
        numel *= s;
    }
    t->numel = (int64_t)numel;
    json_t *off = json_object_get(v, "data_offsets");
    json_t *b = json_array_get(off, 0), *e = json_array_get(off, 1);
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(b) || !json_is_integer(e) ||
        json_integer_value(b) < 0 || json_integer_value(e) < json_integer_value(b)) {
        moe_errf(err, errlen, path, "tensor '%s': data_offsets is not [begin, end] with 0 <= begin <= end", sn);
        return -1;
    }
    uint64_t ob = (uint64_t)json_integer_value(b), oe = (uint64_t)json_integer_value(e);
    if (oe > data_size) {
        moe_errf(err, errlen, path, "tensor '%s': data_offsets [%llu, %llu] lie outside the data section (%llu bytes)",
               sn, (unsigned long long)ob, (unsigned long long)oe, (unsigned long long)data_size);
        return -1;
    }
    uint64_t need = numel * st_dtype_size[t->dtype];
    if (oe - ob != need) {
        moe_errf(err, errlen, path, "tensor '%s': data_offsets span %llu bytes but the shape needs %llu",
               sn, (unsigned long long)(oe - ob), (unsigned long long)need);
        return -1;
    }
    sp->begin = ob;
    sp->end = oe;
    return 0;
}

/* Parses and checks the header of an open file; fills st (no data yet) and spans. */
static int st_parse_header(const char *path, int fd, uint64_t fsize, moe_st *st, st_span **spans_out,
                           uint64_t *data_start, char *err, size_t errlen) {
    if (fsize < 8) {
        moe_errf(err, errlen, path, "file is too short (%llu bytes) to be safetensors", (unsigned long long)fsize);
        return -1;
    }
    unsigned char lb[8];
    if (st_pread_all(fd, lb, 8, 0) != 0) {
        moe_errf(err, errlen, path, "cannot read: %s", errno ? strerror(errno) : "file ended early");
        return -1;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | lb[i];
    if (hlen > ST_MAX_HEADER) {
        moe_errf(err, errlen, path, "header length %llu exceeds the 100 MB limit", (unsigned long long)hlen);
        return -1;
    }
    if (hlen > fsize - 8) {
        moe_errf(err, errlen, path, "header length %llu exceeds the file size (%llu bytes)",
               (unsigned long long)hlen, (unsigned long long)fsize);
        return -1;
    }
    char *hdr = malloc(hlen ? hlen : 1);
    if (!hdr) { moe_errf(err, errlen, path, "out of memory reading the header"); return -1; }
    if (st_pread_all(fd, hdr, hlen, 8) != 0) {
        moe_errf(err, errlen, path, "cannot read the header: %s", errno ? strerror(errno) : "file ended early");
        free(hdr);
        return -1;
    }
    json_error_t je;
    st->root = json_loadb(hdr, hlen, JSON_REJECT_DUPLICATES, &je);
    free(hdr);
    if (!st->root) {
        if (json_error_code(&je) == json_error_duplicate_key)
            moe_errf(err, errlen, path, "header has a duplicate key (byte %d)", je.position);
        else
            moe_errf(err, errlen, path, "header is not valid JSON: %s (byte %d)", je.text, je.position);
        return -1;
    }
    if (!json_is_object(st->root)) { moe_errf(err, errlen, path, "header is not a JSON object"); return -1; }

    uint64_t data_size = fsize - 8 - hlen;
    *data_start = 8 + hlen;
    size_t nkeys = json_object_size(st->root);
    st->tensors = calloc(nkeys ? nkeys : 1, sizeof *st->tensors);
    st_span *spans = calloc(nkeys ? nkeys : 1, sizeof *spans);
    st->index = json_object();
    *spans_out = spans;
    if (!st->tensors || !spans || !st->index) { moe_errf(err, errlen, path, "out of memory"); return -1; }

    const char *name;
    json_t *v;
    json_object_foreach(st->root, name, v) {
        if (strcmp(name, "__metadata__") == 0) {
            if (!json_is_object(v)) { moe_errf(err, errlen, path, "__metadata__ is not an object"); return -1; }
            const char *k;
            json_t *mv;
            json_object_foreach(v, k, mv) {
                if (!json_is_string(mv)) {
                    char kb[80];
                    moe_errf(err, errlen, path, "__metadata__ value of '%s' is not a string", st_show(k, kb));
                    return -1;
                }
            }
            st->meta = v;
            continue;
        }
        int i = st->n;
        if (st_parse_entry(path, name, v, data_size, &st->tensors[i], &spans[i], err, errlen) != 0) return -1;
        spans[i].idx = i;
        if (json_object_set_new(st->index, name, json_integer(i)) != 0) {
            moe_errf(err, errlen, path, "out of memory");
            return -1;
        }
        st->n++;
    }

    /* Overlapping tensors would alias in a writer that trusted the file: reject them. */
    qsort(spans, (size_t)st->n, sizeof *spans, st_span_cmp);
    int prev = -1;
    for (int i = 0; i < st->n; i++) {
        if (spans[i].begin == spans[i].end) continue;   /* empty tensors occupy nothing */
        if (prev >= 0 && spans[i].begin < spans[prev].end) {
            char b1[80], b2[80];
            moe_errf(err, errlen, path, "tensors '%s' and '%s' overlap in the data section",
                   st_show(st->tensors[spans[prev].idx].name, b1), st_show(st->tensors[spans[i].idx].name, b2));
            return -1;
        }
        prev = i;
    }
    return 0;
}

int moe_st_read(const char *path, moe_st **out, char *err, size_t errlen) {
    *out = NULL;
    int64_t size = 0;
    int fd = moe_open_regular(path, &size, err, errlen);
    if (fd < 0) return -1;
    moe_st *st = calloc(1, sizeof *st);
    st_span *spans = NULL;
    uint64_t data_start = 0;
    if (!st) { moe_errf(err, errlen, path, "out of memory"); close(fd); return -1; }
    if (st_parse_header(path, fd, (uint64_t)size, st, &spans, &data_start, err, errlen) != 0) goto fail;

    /* One aligned buffer; tensors packed in header order, each rounded up to ST_ALIGN. */
    uint64_t total = 0;
    for (int i = 0; i < st->n; i++)     /* bounded by the file size */
        total += (st_bytes(&st->tensors[i]) + ST_ALIGN - 1) / ST_ALIGN * ST_ALIGN;
    if (total > 0) {
        void *p = NULL;
        if (total > SIZE_MAX || posix_memalign(&p, ST_ALIGN, (size_t)total) != 0) {
            moe_errf(err, errlen, path, "out of memory (%llu bytes of tensor data)", (unsigned long long)total);
            goto fail;
        }
        st->data = p;
    }
    unsigned char *dst = st->data;
    /* Place in header order, read in file order (sequential I/O). */
    uint64_t *place = calloc((size_t)(st->n ? st->n : 1), sizeof *place);
    if (!place) { moe_errf(err, errlen, path, "out of memory"); goto fail; }
    for (int i = 1; i < st->n; i++)
        place[i] = place[i - 1] + (st_bytes(&st->tensors[i - 1]) + ST_ALIGN - 1) / ST_ALIGN * ST_ALIGN;
    for (int j = 0; j < st->n; j++) {
        int i = spans[j].idx;
        moe_st_tensor *t = &st->tensors[i];
        uint64_t bytes = st_bytes(t);
        const void *at = dst ? dst + place[i] : NULL;
        t->data = t->dtype == MOE_ST_F32 ? at : NULL;
        t->i8 = t->dtype == MOE_ST_I8 ? at : NULL;
        if (bytes && st_pread_all(fd, dst + place[i], (size_t)bytes, data_start + spans[j].begin) != 0) {
            char nb[80];
            moe_errf(err, errlen, path, "cannot read tensor '%s': %s", st_show(t->name, nb),
                   errno ? strerror(errno) : "file ended early");
            free(place);
            goto fail;
        }
    }
    free(place);
    free(spans);
    close(fd);
    *out = st;
    return 0;
fail:
    free(spans);
    moe_st_free(st);
    close(fd);
    return -1;
}

int moe_st_count(const moe_st *st) { return st ? st->n : 0; }

const moe_st_tensor *moe_st_get(const moe_st *st, int i) {
    return (st && i >= 0 && i < st->n) ? &st->tensors[i] : NULL;
}

const moe_st_tensor *moe_st_find(const moe_st *st, const char *name) {
    if (!st || !name) return NULL;
    json_t *v = json_object_get(st->index, name);
    return v ? &st->tensors[json_integer_value(v)] : NULL;
}

const char *moe_st_meta(const moe_st *st, const char *key) {
    if (!st || !st->meta || !key) return NULL;
    return json_string_value(json_object_get(st->meta, key));
}

/* ---- writer ---- */

static int st_write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        ssize_t w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w; n -= (size_t)w;
    }
    return 0;
}

/* The header text for the tensors, padded with spaces to a multiple of 8; NULL + err on bad input. */
static char *st_build_header(const char *path, const moe_st_out *t, int n, const char *const *meta_kv,
                             int n_meta, size_t *len, char *err, size_t errlen) {
    json_t *root = json_object();
    char *text = NULL, nb[80];
    if (!root) goto oom;
    if (n_meta > 0) {
        json_t *meta = json_object();
        if (!meta || json_object_set_new(root, "__metadata__", meta) != 0) goto oom;
        for (int i = 0; i < n_meta; i++) {
            if (!meta_kv || !meta_kv[2 * i] || !meta_kv[2 * i + 1]) {
                moe_errf(err, errlen, path, "metadata pair %d is NULL", i);
                goto fail;
            }
            if (json_object_set_new(meta, meta_kv[2 * i], json_string(meta_kv[2 * i + 1])) != 0) {
                moe_errf(err, errlen, path, "metadata pair %d is not valid UTF-8", i);
                goto fail;
            }
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const moe_st_out *o = &t[i];
        if (!o->name || !o->name[0] || strcmp(o->name, "__metadata__") == 0) {
            moe_errf(err, errlen, path, "tensor %d has an empty or reserved name", i);
            goto fail;
        }
        const char *sn = st_show(o->name, nb);
        if (json_object_get(root, o->name)) { moe_errf(err, errlen, path, "tensor '%s' is given twice", sn); goto fail; }
        if (o->ndim < 0 || o->ndim > MOE_ST_MAX_DIMS) {
            moe_errf(err, errlen, path, "tensor '%s' has %d dimensions (0 to %d allowed)", sn, o->ndim, MOE_ST_MAX_DIMS);
            goto fail;
        }
        if ((unsigned)o->dtype > MOE_ST_I8) { moe_errf(err, errlen, path, "tensor '%s' has an unknown dtype", sn); goto fail; }
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        /* set_new takes the reference even when it fails, so nothing leaks on the way out */
        int bad = !e;
        if (e) {
            bad |= json_object_set_new(e, "dtype", json_string(st_dtype_name[o->dtype])) != 0;
            bad |= json_object_set_new(e, "shape", shape) != 0;
            bad |= json_object_set_new(e, "data_offsets", offs) != 0;
        } else {
            json_decref(shape);
            json_decref(offs);
        }
        bad |= json_object_set_new(root, o->name, e) != 0;   /* e belongs to root from here on */
        if (bad) {
            moe_errf(err, errlen, path, "tensor '%s': name is not valid UTF-8 or out of memory", sn);
            goto fail;
        }
        uint64_t numel = 1;
        for (int d = 0; d < o->ndim; d++) {
            if (o->shape[d] < 0) { moe_errf(err, errlen, path, "tensor '%s' has a negative dimension", sn); goto fail; }
            uint64_t s = (uint64_t)o->shape[d];
            if (s && numel > (UINT64_MAX / 8) / s) { moe_errf(err, errlen, path, "tensor '%s': shape product overflows", sn); goto fail; }
            numel *= s;
            json_array_append_new(shape, json_integer(o->shape[d]));
        }
        if (numel && !o->data) { moe_errf(err, errlen, path, "tensor '%s' has no data", sn); goto fail; }
        json_array_append_new(offs, json_integer((json_int_t)off));
        off += numel * st_dtype_size[o->dtype];
        json_array_append_new(offs, json_integer((json_int_t)off));
    }
    char *dumped = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!dumped) goto oom;
    size_t raw = strlen(dumped), padded = (raw + 7) / 8 * 8;
    text = malloc(padded);
    if (!text) { free(dumped); goto oom; }
    memcpy(text, dumped, raw);
    memset(text + raw, ' ', padded - raw);
    free(dumped);
    *len = padded;
    json_decref(root);
    return text;
oom:
    moe_errf(err, errlen, path, "out of memory building the header");
fail:
    json_decref(root);
    return NULL;
}

/* fsync the directory holding path, so the rename itself survives a crash. */
static int st_sync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    free(dir);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    if (rc != 0 && (errno == EINVAL || errno == ENOTSUP)) rc = 0;   /* fs without dir fsync */
    close(fd);
    return rc;
}

/* tensor i's bytes: straight from memory, or through fetch in pieces of at most `cap` */
static int st_write_tensor(int fd, const moe_st_out *t, size_t bytes, moe_st_fetch fetch, void *ctx, char *piece,
                           size_t cap, const char **what) {
    if (!fetch) return st_write_all(fd, t->data, bytes);
    for (size_t off = 0; off < bytes; off += cap) {
        size_t n = bytes - off < cap ? bytes - off : cap;
        if (fetch(ctx, t, off, piece, n)) { *what = "reading the data"; errno = EIO; return -1; }
        if (st_write_all(fd, piece, n)) return -1;
    }
    return 0;
}

int moe_st_write(const char *path, const moe_st_out *t, int n, const char *const *meta_kv, int n_meta,
                 char *err, size_t errlen) {
    return moe_st_write_fetch(path, t, n, meta_kv, n_meta, NULL, NULL, err, errlen);
}

int moe_st_write_fetch(const char *path, const moe_st_out *t, int n, const char *const *meta_kv, int n_meta,
                       moe_st_fetch fetch, void *ctx, char *err, size_t errlen) {
    enum { PIECE = 8 << 20 };
    if (n < 0 || (n > 0 && !t)) { moe_errf(err, errlen, path, "bad tensor list"); return -1; }
    size_t hlen = 0;
    char *hdr = st_build_header(path, t, n, meta_kv, n_meta, &hlen, err, errlen);
    if (!hdr) return -1;

    if (!*path) { free(hdr); moe_errf(err, errlen, "(empty path)", "no file name given"); return -1; }
    struct stat sb;     /* the rename below would replace a device or FIFO with a file */
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        free(hdr);
        moe_errf(err, errlen, path, "exists and is not a regular file (a device, FIFO or directory); not replaced");
        return -1;
    }
    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    if (!tmp) { free(hdr); moe_errf(err, errlen, path, "out of memory"); return -1; }
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        moe_errf(err, errlen, path, "cannot create %s: %s", tmp, strerror(errno));
        free(hdr); free(tmp);
        return -1;
    }
    unsigned char lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    const char *what = "write";
    char *piece = fetch ? malloc(PIECE) : NULL;
    int ok = (!fetch || piece) && st_write_all(fd, lb, 8) == 0 && st_write_all(fd, hdr, hlen) == 0;
    if (fetch && !piece) { what = "allocating a buffer for"; errno = ENOMEM; }
    for (int i = 0; ok && i < n; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (uint64_t)t[i].shape[d];
        if (numel)
            ok = st_write_tensor(fd, &t[i], (size_t)(numel * st_dtype_size[t[i].dtype]), fetch, ctx, piece, PIECE,
                                 &what) == 0;
    }
    free(piece);
    if (ok && fsync(fd) != 0) { ok = 0; what = "fsync"; }
    int saved = errno;
    if (close(fd) != 0 && ok) { ok = 0; what = "close"; saved = errno; }
    if (ok && rename(tmp, path) != 0) { ok = 0; what = "rename"; saved = errno; }
    if (!ok) {
        unlink(tmp);
        moe_errf(err, errlen, path, "%s of %s failed: %s", what, tmp, strerror(saved));
        free(hdr); free(tmp);
        return -1;
    }
    free(hdr); free(tmp);
    if (st_sync_dir(path) != 0) {
        moe_errf(err, errlen, path, "written, but syncing its directory failed: %s", strerror(errno));
        return -1;
    }
    return 0;
}
