/* st.h - safetensors reader and writer: the one module that parses checkpoint files.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON header
 * {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}},
 * then the raw data. Reading bounds-checks everything (header length against the file
 * size, offsets against the data section, shape product against the byte count), so a
 * hostile file cannot make us read or write out of bounds. F32 and I8 tensors are loaded
 * (I8: `quantize`'s int8 expert weights); any other dtype is refused by name.
 * Writing goes to PATH.tmp.<pid>, is fsync'ed, then renamed over PATH (atomic).
 */
#ifndef MOE_ST_H
#define MOE_ST_H
#include <stddef.h>
#include <stdint.h>

#define MOE_ST_MAX_DIMS 8

typedef enum moe_st_dtype { MOE_ST_F32, MOE_ST_I8 } moe_st_dtype;

typedef struct moe_st moe_st;

typedef struct moe_st_tensor {
    const char *name;
    int ndim;
    int64_t shape[MOE_ST_MAX_DIMS];
    int64_t numel;
    moe_st_dtype dtype;
    const float *data;          /* F32: points into the loaded file, valid until moe_st_free; I8: NULL */
    const int8_t *i8;           /* I8: likewise; F32: NULL */
} moe_st_tensor;

/* Loads PATH. Returns 0, or -1 with a one-line message ("PATH: ...") in err. */
int moe_st_read(const char *path, moe_st **out, char *err, size_t errlen);
int moe_st_count(const moe_st *st);
const moe_st_tensor *moe_st_get(const moe_st *st, int i);
const moe_st_tensor *moe_st_find(const moe_st *st, const char *name);
/* The "__metadata__" string value for key, or NULL. */
const char *moe_st_meta(const moe_st *st, const char *key);
void moe_st_free(moe_st *st);

typedef struct moe_st_out {
    const char *name;
    int ndim;
    int64_t shape[MOE_ST_MAX_DIMS];
    const void *data;           /* F32 (the zero value) or I8 values, by dtype */
    moe_st_dtype dtype;
} moe_st_out;

/* Writes n tensors (in the given order) and optional string metadata pairs
 * (meta_kv[2*i] = key, meta_kv[2*i+1] = value) atomically. Returns 0 or -1 with err. */
int moe_st_write(const char *path, const moe_st_out *t, int n, const char *const *meta_kv,
                 int n_meta, char *err, size_t errlen);

/* As moe_st_write, for data the host cannot read directly (device memory): `data` is then
 * only a handle, and fetch(ctx, t, off, dst, n) copies bytes [off, off + n) of tensor t into
 * dst, a piece at a time (0, or -1 to abandon the file). */
typedef int (*moe_st_fetch)(void *ctx, const moe_st_out *t, size_t off, void *dst, size_t n);
int moe_st_write_fetch(const char *path, const moe_st_out *t, int n, const char *const *meta_kv, int n_meta,
                       moe_st_fetch fetch, void *ctx, char *err, size_t errlen);
#endif
