/* dec_xent.c: the LM head with cross-entropy, in chunks of tokens (lg_decoder_ops.h). Per chunk:
 *   1. logits = x·Wᵀ                 cuBLASLt, into the object's chunk buffer [chunk, vocab]
 *   2. softmax, loss, dlogits         one generated kernel (templates/decoder/xent.cuh), in place
 *   3. dx = beta·dx + dlogits·W       cuBLASLt (alpha = 1/grad_scale)
 * so the [n x vocab] logits never exist: the working memory is the chunk buffer alone (chunk·vocab·2 bytes,
 * 512 MiB by default) besides the context's cuBLASLt workspace. Deterministic: cuBLASLt's algorithm is fixed
 * per shape, the kernel reduces in a fixed order. */
#include "dec_internal.h"
#include "lg_base.h"
#include "lg_gpu.h"

#include <math.h>
#include <stdlib.h>

#define XENT_DEFAULT_BYTES ((size_t)512 << 20)

struct lg_xent {
    lg_ctx_t *ctx;
    struct lg_xent_params p;
    size_t esz;
    int64_t chunk;
    CUdeviceptr buf; /* [chunk, vocab] */
    size_t buf_bytes;
    CUdeviceptr bad;
    const struct lg_kernel *k;
};

static enum lg_status check_params(const struct lg_xent_params *p)
{
    static const char *fn = "lg_xent_init";
    enum lg_status st = lg_ops_dec_check_dtype(fn, p->dtype);
    if (st != LG_OK)
        return st;
    if (p->hidden < 8 || p->hidden % 8)
        return lg_fail(LG_ERR_INVALID, "%s: hidden = %lld must be a positive multiple of 8", fn, (long long)p->hidden);
    if (p->vocab < 8 || p->vocab % 8 || p->vocab > INT32_MAX / 2)
        return lg_fail(LG_ERR_INVALID, "%s: vocab = %lld must be a multiple of 8 (16-byte rows of logits)", fn,
                       (long long)p->vocab);
    if (p->chunk < 0 || p->chunk > INT32_MAX)
        return lg_fail(LG_ERR_INVALID, "%s: chunk = %lld is out of range", fn, (long long)p->chunk);
    return LG_OK;
}

enum lg_status lg_xent_init(lg_ctx_t *ctx, const struct lg_xent_params *p, lg_xent_t **out)
{
    static const char *fn = "lg_xent_init";
    if (!p || !out)
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    enum lg_status st = check_params(p);
    if (st != LG_OK)
        return st;
    if (!ctx)
        return lg_fail(LG_ERR_INVALID, "%s: ctx is NULL", fn);
    lg_xent_t *x = calloc(1, sizeof *x);
    if (!x)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", fn);
    x->ctx = ctx;
    x->p = *p;
    x->esz = lg_dtype_size(p->dtype);
    const size_t row = (size_t)p->vocab * x->esz, budget = p->max_bytes ? p->max_bytes : XENT_DEFAULT_BYTES;
    x->chunk = p->chunk;
    if (!x->chunk) {
        x->chunk = (int64_t)(budget / row) / 64 * 64; /* whole 64-row GEMM tiles */
        if (x->chunk < 1)
            x->chunk = (int64_t)(budget / row) > 0 ? (int64_t)(budget / row) : 1;
    }
    x->buf_bytes = (size_t)x->chunk * row;
    struct lg_kernel_cfg c = {.op = LG_OP_XENT, .dtype = p->dtype};
    st = lg_cu_check(cuMemAlloc(&x->buf, x->buf_bytes), "lg_xent_init: chunk buffer");
    if (st == LG_OK)
        st = lg_cu_check(cuMemAlloc(&x->bad, sizeof(int)), "lg_xent_init: counter");
    if (st == LG_OK)
        st = lg_cu_check(cuMemsetD32(x->bad, 0, 1), "lg_xent_init: counter");
    if (st == LG_OK)
        st = lg_ctx_kernel(ctx, &c, &x->k);
    if (st != LG_OK) {
        lg_xent_free(x);
        return lg_fail_wrap(st, "%s: ", fn);
    }
    *out = x;
    return LG_OK;
}

void lg_xent_free(lg_xent_t *x)
{
    if (!x)
        return;
    if (x->buf)
        cuMemFree(x->buf);
    if (x->bad)
        cuMemFree(x->bad);
    free(x);
}

int64_t lg_xent_chunk(const lg_xent_t *x) { return x->chunk; }
size_t lg_xent_workspace_bytes(const lg_xent_t *x) { return x->buf_bytes + sizeof(int); }

static enum lg_status check_run(const lg_xent_t *x, const struct lg_xent_run *r)
{
    static const char *fn = "lg_xent_apply";
    enum lg_status st = lg_ops_dec_check_n(fn, r->n);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "x", r->x, r->ldx, x->p.hidden);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "w", r->w, r->ldw, x->p.hidden);
    if (st == LG_OK)
        st = lg_ops_dec_check_ptr(fn, "labels", r->labels, 4);
    if (st == LG_OK)
        st = lg_ops_dec_check_ptr(fn, "weight", r->weight, 4);
    if (st == LG_OK)
        st = lg_ops_dec_check_ptr(fn, "loss", r->loss, 4);
    if (st == LG_OK && r->lse % 4)
        st = lg_fail(LG_ERR_INVALID, "%s: lse is not 4-byte aligned", fn);
    if (st == LG_OK && r->dx)
        st = lg_ops_dec_check_rows(fn, "dx", r->dx, r->lddx, x->p.hidden);
    if (st == LG_OK && r->dx && r->dx == r->x)
        st = lg_fail(LG_ERR_INVALID, "%s: dx must not overwrite x (later chunks still read it)", fn);
    if (st == LG_OK && (!isfinite(r->dx_beta) || !isfinite(r->grad_scale) || r->grad_scale < 0))
        st = lg_fail(LG_ERR_INVALID, "%s: dx_beta = %g and grad_scale = %g must be finite (grad_scale >= 0)", fn,
                     r->dx_beta, r->grad_scale);
    return st;
}

enum lg_status lg_xent_apply(lg_xent_t *x, const struct lg_xent_run *r, CUstream stream)
{
    if (!x || !r)
        return lg_fail(LG_ERR_INVALID, "lg_xent_apply: null argument");
    enum lg_status st = check_run(x, r);
    if (st != LG_OK)
        return st;
    lg_blas_t *blas = lg_ctx_blas(x->ctx);
    const int64_t H = x->p.hidden, V = x->p.vocab;
    const float gs = r->grad_scale > 0 ? r->grad_scale : 1.0f;
    /* as many chunks as the buffer needs, of equal size (whole 64-row tiles): no small last chunk */
    const int64_t nch = lg_ops_dec_cdiv(r->n, x->chunk);
    int64_t step = lg_ops_dec_cdiv(lg_ops_dec_cdiv(r->n, nch), 64) * 64;
    step = step < x->chunk ? step : x->chunk;
    for (int64_t c0 = 0; c0 < r->n && st == LG_OK; c0 += step) {
        const int64_t rows = r->n - c0 < step ? r->n - c0 : step;
        struct lg_gemm lg = {.dtype = x->p.dtype, .m = rows, .n = V, .k = H, .trans_b = 1,
                             .a = (const void *)(r->x + (CUdeviceptr)((size_t)(c0 * r->ldx) * x->esz)),
                             .lda = r->ldx, .b = (const void *)r->w, .ldb = r->ldw, .c = (void *)x->buf, .ldc = V,
                             .alpha = 1.f, .beta = 0.f};
        if ((st = lg_blas_gemm(blas, &lg, stream)) != LG_OK)
            break;
        struct lg_xent_args a = {.logits = (void *)x->buf, .ldl = V,
                                 .labels = (const int *)(r->labels + (CUdeviceptr)(c0 * 4)),
                                 .weight = (const float *)(r->weight + (CUdeviceptr)(c0 * 4)),
                                 .loss = (float *)(r->loss + (CUdeviceptr)(c0 * 4)),
                                 .lse = r->lse ? (float *)(r->lse + (CUdeviceptr)(c0 * 4)) : NULL,
                                 .bad = (int *)x->bad, .rows = (int)rows, .v = (int)V, .grad = r->dx != 0,
                                 .grad_scale = gs};
        if ((st = lg_kernel_launch(x->k, (unsigned)rows, 1, &a, sizeof a, stream)) != LG_OK || !r->dx)
            continue;
        struct lg_gemm dg = {.dtype = x->p.dtype, .m = rows, .n = H, .k = V, .a = (const void *)x->buf, .lda = V,
                             .b = (const void *)r->w, .ldb = r->ldw,
                             .c = (void *)(r->dx + (CUdeviceptr)((size_t)(c0 * r->lddx) * x->esz)), .ldc = r->lddx,
                             .alpha = 1.0f / gs, .beta = r->dx_beta};
        st = lg_blas_gemm(blas, &dg, stream);
    }
    return st;
}

enum lg_status lg_xent_bad_labels(lg_xent_t *x, CUstream stream, int *count)
{
    if (!x || !count)
        return lg_fail(LG_ERR_INVALID, "lg_xent_bad_labels: null argument");
    enum lg_status st = lg_cu_check(cuStreamSynchronize(stream), "lg_xent_bad_labels: cuStreamSynchronize");
    if (st == LG_OK)
        st = lg_cu_check(cuMemcpyDtoH(count, x->bad, sizeof(int)), "lg_xent_bad_labels: read");
    return st;
}
