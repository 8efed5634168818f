/* dec_rope.c: rotary position embedding, in place on q and k (lg_decoder_ops.h). The frequencies are the
 * caller's host array, lg_ref_rope_inv_freq's values (the one implementation of the frequencies, transformers'
 * fp32 roundings included), copied to the device once; positions come from the microbatch's cu_seqlens on the
 * device, angles and their cos/sin are computed in the kernel as lg_ref_rope_table does. */
#include "dec_internal.h"
#include "lg_base.h"
#include "lg_gpu.h"

#include <math.h>
#include <stdlib.h>

#define ROPE_DMAX 256 /* templates/decoder/rope.cuh: LG_ROPE_DMAX */
#define ROPE_TOK 8    /* tokens per block: LG_ROPE_TOK */

struct lg_rope {
    lg_ctx_t *ctx;
    struct lg_rope_params p;
    CUdeviceptr inv_freq;
    const struct lg_kernel *k;
};

enum lg_status lg_rope_init(lg_ctx_t *ctx, const struct lg_rope_params *p, lg_rope_t **out)
{
    static const char *fn = "lg_rope_init";
    if (!p || !out)
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    enum lg_status st = lg_ops_dec_check_dtype(fn, p->dtype);
    if (st != LG_OK)
        return st;
    if (p->head_dim < 16 || p->head_dim % 16 || p->head_dim > ROPE_DMAX)
        return lg_fail(LG_ERR_INVALID, "%s: head_dim = %lld must be a multiple of 16 in 16..%d", fn,
                       (long long)p->head_dim, ROPE_DMAX);
    if (!p->inv_freq)
        return lg_fail(LG_ERR_INVALID, "%s: inv_freq is NULL (lg_ref_rope_inv_freq's values)", fn);
    for (int64_t i = 0; i < p->head_dim / 2; i++)
        if (!(p->inv_freq[i] > 0) || !isfinite(p->inv_freq[i]))
            return lg_fail(LG_ERR_INVALID, "%s: inv_freq[%lld] = %g must be positive and finite", fn, (long long)i,
                           p->inv_freq[i]);
    if (!ctx)
        return lg_fail(LG_ERR_INVALID, "%s: ctx is NULL", fn);
    lg_rope_t *r = calloc(1, sizeof *r);
    if (!r)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", fn);
    r->ctx = ctx;
    r->p = *p;
    r->p.inv_freq = NULL; /* not kept: the caller's array */
    const size_t bytes = sizeof(float) * (size_t)(p->head_dim / 2);
    struct lg_kernel_cfg c = {.op = LG_OP_ROPE, .dtype = p->dtype};
    st = lg_cu_check(cuMemAlloc(&r->inv_freq, bytes), "lg_rope_init: inv_freq");
    if (st == LG_OK)
        st = lg_cu_check(cuMemcpyHtoD(r->inv_freq, p->inv_freq, bytes), "lg_rope_init: inv_freq upload");
    if (st == LG_OK)
        st = lg_ctx_kernel(ctx, &c, &r->k);
    if (st != LG_OK) {
        lg_rope_free(r);
        return lg_fail_wrap(st, "%s: ", fn);
    }
    *out = r;
    return LG_OK;
}

void lg_rope_free(lg_rope_t *r)
{
    if (!r)
        return;
    if (r->inv_freq)
        cuMemFree(r->inv_freq);
    free(r);
}

static enum lg_status check_run(const lg_rope_t *r, const struct lg_rope_run *x)
{
    static const char *fn = "lg_rope_apply";
    const int64_t d = r->p.head_dim;
    enum lg_status st = lg_ops_dec_check_n(fn, x->n);
    if (st == LG_OK && (x->hq < 1 || x->hk < 0 || (x->hk > 0) != (x->k != 0)))
        st = lg_fail(LG_ERR_INVALID, "%s: hq = %d must be >= 1 and hk = %d >= 0, with k given exactly when hk > 0",
                     fn, x->hq, x->hk);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "q", x->q, x->ldq, (int64_t)x->hq * d);
    if (st == LG_OK && x->hk)
        st = lg_ops_dec_check_rows(fn, "k", x->k, x->ldk, (int64_t)x->hk * d);
    if (st == LG_OK && (x->nseq < 1 || x->nseq > x->n))
        st = lg_fail(LG_ERR_INVALID, "%s: nseq = %d must be in 1..n (%lld)", fn, x->nseq, (long long)x->n);
    if (st == LG_OK)
        st = lg_ops_dec_check_ptr(fn, "cu_seqlens", x->cu_seqlens, 4);
    if (st == LG_OK && x->backward != 0 && x->backward != 1)
        st = lg_fail(LG_ERR_INVALID, "%s: backward = %d must be 0 or 1", fn, x->backward);
    return st;
}

enum lg_status lg_rope_apply(lg_rope_t *r, const struct lg_rope_run *x, CUstream stream)
{
    if (!r || !x)
        return lg_fail(LG_ERR_INVALID, "lg_rope_apply: null argument");
    enum lg_status st = check_run(r, x);
    if (st != LG_OK)
        return st;
    struct lg_rope_args a = {.q = (void *)x->q, .ldq = x->ldq, .k = (void *)x->k, .ldk = x->ldk,
                             .inv_freq = (const float *)r->inv_freq, .cu = (const int *)x->cu_seqlens,
                             .hq = x->hq, .hk = x->hk, .nseq = x->nseq, .n = (int)x->n, .d = (int)r->p.head_dim,
                             .sign = x->backward ? -1.0f : 1.0f};
    return lg_kernel_launch(r->k, (unsigned)lg_ops_dec_cdiv(x->n, ROPE_TOK), 1, &a, sizeof a, stream);
}
