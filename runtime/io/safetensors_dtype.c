/* safetensors_dtype.c: the safetensors element types (names and sizes, one table for the reader and the
 * writer) and lg_st_read_f32, the one way the trainer reads a weight: the shape the config implies is checked
 * against the file's (a transposed or mis-sized tensor is an error naming both shapes, never a silent
 * reinterpretation), then BF16/F16/F32 elements are widened to fp32. The data is read with memcpy because a
 * header length that is not a multiple of 8 leaves tensors unaligned in the map. */
#include "lg_hf.h"
#include "lg_base.h"
#include "lg_half.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[LG_ST_DTYPE_COUNT] = {
    [LG_ST_BOOL] = {"BOOL", 1},       [LG_ST_U8] = {"U8", 1},     [LG_ST_I8] = {"I8", 1},
    [LG_ST_F8_E5M2] = {"F8_E5M2", 1}, [LG_ST_F8_E4M3] = {"F8_E4M3", 1},
    [LG_ST_F8_E8M0] = {"F8_E8M0", 1}, [LG_ST_I16] = {"I16", 2},   [LG_ST_U16] = {"U16", 2},
    [LG_ST_F16] = {"F16", 2},         [LG_ST_BF16] = {"BF16", 2}, [LG_ST_I32] = {"I32", 4},
    [LG_ST_U32] = {"U32", 4},         [LG_ST_F32] = {"F32", 4},   [LG_ST_F64] = {"F64", 8},
    [LG_ST_I64] = {"I64", 8},         [LG_ST_U64] = {"U64", 8},
};

const char *lg_st_dtype_name(enum lg_st_dtype t) { return (unsigned)t < LG_ST_DTYPE_COUNT ? dtypes[t].name : "?"; }
size_t lg_st_dtype_size(enum lg_st_dtype t) { return (unsigned)t < LG_ST_DTYPE_COUNT ? dtypes[t].size : 0; }

enum lg_st_dtype lg_st_dtype_of(enum lg_dtype t)
{
    return t == LG_BF16 ? LG_ST_BF16 : t == LG_FP16 ? LG_ST_F16 : LG_ST_F32;
}

static void fmt_shape(const int64_t *s, int n, char *buf, size_t cap)
{
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (k < cap)
        snprintf(buf + k, cap - k, "]");
}

static int same_shape(const struct lg_st_tensor *t, int ndim, const int64_t *shape)
{
    if (t->ndim != ndim)
        return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i])
            return 0;
    return 1;
}

/* Widens n 16-bit elements, a block at a time so the loop body stays branch-free. */
static void widen16(enum lg_dtype dt, const unsigned char *src, float *out, int64_t n)
{
    uint16_t blk[1024];
    for (int64_t i = 0; i < n;) {
        int64_t m = n - i < 1024 ? n - i : 1024;
        memcpy(blk, src + i * 2, (size_t)m * 2);
        if (dt == LG_BF16)
            for (int64_t j = 0; j < m; j++)
                out[i + j] = lg_bf16_to_f32(blk[j]);
        else
            for (int64_t j = 0; j < m; j++)
                out[i + j] = lg_f16_to_f32(blk[j]);
        i += m;
    }
}

enum lg_status lg_st_check(const lg_st_t *st, const char *name, int ndim, const int64_t *shape,
                           struct lg_st_tensor *out)
{
    if (!st || !name || (!shape && ndim > 0))
        return lg_fail(LG_ERR_INVALID, "lg_st_check: null argument");
    if (ndim < 0 || ndim > LG_ST_MAX_DIMS)
        return lg_fail(LG_ERR_INVALID, "lg_st_check: %s: ndim %d out of range", name, ndim);
    struct lg_st_tensor t;
    enum lg_status s = lg_st_find(st, name, &t);
    if (s != LG_OK)
        return s;
    if (!same_shape(&t, ndim, shape)) {
        char got[256], want[256];
        fmt_shape(t.shape, t.ndim, got, sizeof got);
        fmt_shape(shape, ndim, want, sizeof want);
        return lg_fail(LG_ERR_IO, "%s: tensor %s: shape %s, expected %s", t.file, name, got, want);
    }
    if (out)
        *out = t;
    return LG_OK;
}

enum lg_status lg_st_read_f32(const lg_st_t *st, const char *name, int ndim, const int64_t *shape, float *out)
{
    if (!out)
        return lg_fail(LG_ERR_INVALID, "lg_st_read_f32: null argument");
    struct lg_st_tensor t;
    enum lg_status s = lg_st_check(st, name, ndim, shape, &t);
    if (s != LG_OK)
        return s;
    switch (t.dtype) {
    case LG_ST_F32:
        memcpy(out, t.data, (size_t)t.nbytes);
        return LG_OK;
    case LG_ST_BF16:
        widen16(LG_BF16, t.data, out, t.numel);
        return LG_OK;
    case LG_ST_F16:
        widen16(LG_FP16, t.data, out, t.numel);
        return LG_OK;
    default:
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: tensor %s: dtype %s cannot be read as fp32 (BF16, F16 or F32 only)",
                       t.file, name, lg_st_dtype_name(t.dtype));
    }
}
