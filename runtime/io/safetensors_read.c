/* safetensors_read.c: reading a tensor as the decoder wants it: the shape checked against what the model
 * config implies (the message names the file, the tensor, both shapes) and BF16/F16/F32 widened to fp32. Above
 * the reader (safetensors.c) and the dtype table (safetensors_dtype.c), so neither depends on the other. A
 * transposed or mis-sized tensor is an error naming both shapes, never a silent reinterpretation. The data is
 * read with memcpy because a header length that is not a multiple of 8 leaves tensors unaligned in the map. */
#include "lg_hf.h"
#include "lg_base.h"
#include "lg_half.h"

#include <stdio.h>
#include <string.h>

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
