/* dec_util.c: the argument checks and LoRA-reader blocks the decoder ops share (dec_internal.h). Every message
 * names the function and the argument, so a bad call reads as what to fix. */
#include "dec_internal.h"
#include "lg_base.h"
#include "common/lg_philox.h"

#include <math.h>

enum lg_status lg_ops_dec_check_rows(const char *fn, const char *name, CUdeviceptr p, int64_t ld, int64_t cols)
{
    if (!p)
        return lg_fail(LG_ERR_INVALID, "%s: %s is NULL", fn, name);
    if (p % 16)
        return lg_fail(LG_ERR_INVALID, "%s: %s is not 16-byte aligned", fn, name);
    if (ld < cols)
        return lg_fail(LG_ERR_INVALID, "%s: leading dimension of %s = %lld is below its row length %lld", fn, name,
                       (long long)ld, (long long)cols);
    if (ld % 8)
        return lg_fail(LG_ERR_INVALID, "%s: leading dimension of %s = %lld is not a multiple of 8 (16-byte rows)",
                       fn, name, (long long)ld);
    return LG_OK;
}

enum lg_status lg_ops_dec_check_ptr(const char *fn, const char *name, CUdeviceptr p, unsigned align)
{
    if (!p)
        return lg_fail(LG_ERR_INVALID, "%s: %s is NULL", fn, name);
    if (p % align)
        return lg_fail(LG_ERR_INVALID, "%s: %s is not %u-byte aligned", fn, name, align);
    return LG_OK;
}

enum lg_status lg_ops_dec_check_dtype(const char *fn, enum lg_dtype t)
{
    if (t == LG_BF16 || t == LG_FP16)
        return LG_OK;
    if (t == LG_FP32)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: dtype fp32 is not supported (bf16 or fp16)", fn);
    return lg_fail(LG_ERR_INVALID, "%s: dtype %d is not a valid lg_dtype", fn, (int)t);
}

enum lg_status lg_ops_dec_check_reader(const char *fn, int i, const struct lg_lora_reader *r)
{
    if (r->rank < 8 || r->rank > 128 || r->rank % 8)
        return lg_fail(LG_ERR_INVALID, "%s: lora[%d].rank = %d must be a multiple of 8 in 8..128", fn, i, r->rank);
    if (!(r->alpha > 0) || !isfinite(r->alpha))
        return lg_fail(LG_ERR_INVALID, "%s: lora[%d].alpha = %g must be positive", fn, i, r->alpha);
    if (!(r->dropout >= 0 && r->dropout < 1))
        return lg_fail(LG_ERR_INVALID, "%s: lora[%d].dropout = %g must be in [0, 1)", fn, i, r->dropout);
    return LG_OK;
}

enum lg_status lg_ops_dec_check_n(const char *fn, int64_t n)
{
    if (n < 1 || n > INT32_MAX)
        return lg_fail(LG_ERR_INVALID, "%s: n = %lld tokens is out of range (1..%d)", fn, (long long)n, INT32_MAX);
    return LG_OK;
}

int lg_ops_dec_drops(const struct lg_lora_reader *r) { return lg_dropout_thresh16(r->dropout) != 0; }

struct lg_dec_lora lg_ops_dec_lora(const struct lg_lora_reader *r, const struct lg_lora_reader_io *io, uint64_t seed,
                                   int backward, CUdeviceptr s_base, int64_t lds, size_t esz)
{
    const unsigned th = lg_dropout_thresh16(r->dropout);
    const float keep = lg_dropout_keep_scale(th);
    const float s = r->alpha / (float)r->rank; /* lora.c's l->s, then l->s * l->keep_scale: same roundings */
    struct lg_dec_lora L = {.a = (const void *)io->a, .lda = io->lda, .rank = r->rank,
                            .scale = backward ? keep : s * keep,
                            .drop = {.seed = seed, .layer = r->layer_id, .thresh16 = th}};
    if (backward) {
        L.ds = (const void *)io->ds;
        L.ldds = io->ldds;
    } else {
        L.s = (void *)(s_base + (CUdeviceptr)((size_t)io->s_col * esz));
        L.lds = lds;
    }
    return L;
}
