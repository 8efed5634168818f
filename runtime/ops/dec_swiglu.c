/* dec_swiglu.c: SwiGLU forward and backward (lg_decoder_ops.h). The forward writes a with down_proj's extended-K
 * stride; with the reader's S it is the swiglu_lora_fwd kernel (lora_down's mapping: 16-row tiles), otherwise
 * the elementwise kernel. Kernels resolved at init. */
#include "dec_internal.h"
#include "lg_base.h"

#include <stdlib.h>

struct lg_swiglu {
    lg_ctx_t *ctx;
    struct lg_swiglu_params p;
    size_t esz;
    const struct lg_kernel *k_fwd, *k_bwd, *k_lfwd;
};

enum lg_status lg_swiglu_init(lg_ctx_t *ctx, const struct lg_swiglu_params *p, lg_swiglu_t **out)
{
    static const char *fn = "lg_swiglu_init";
    if (!p || !out)
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    enum lg_status st = lg_ops_dec_check_dtype(fn, p->dtype);
    if (st != LG_OK)
        return st;
    if (p->inter < 64 || p->inter % 64)
        return lg_fail(LG_ERR_INVALID, "%s: inter = %lld must be a positive multiple of 64", fn, (long long)p->inter);
    if (p->inter > INT32_MAX / 2)
        return lg_fail(LG_ERR_INVALID, "%s: inter = %lld is too large", fn, (long long)p->inter);
    if (p->with_lora != 0 && p->with_lora != 1)
        return lg_fail(LG_ERR_INVALID, "%s: with_lora = %d must be 0 or 1", fn, p->with_lora);
    if (p->with_lora && (st = lg_ops_dec_check_reader(fn, 0, &p->lora)) != LG_OK)
        return st;
    if (!ctx)
        return lg_fail(LG_ERR_INVALID, "%s: ctx is NULL", fn);
    lg_swiglu_t *s = calloc(1, sizeof *s);
    if (!s)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", fn);
    s->ctx = ctx;
    s->p = *p;
    s->esz = lg_dtype_size(p->dtype);
    struct lg_kernel_cfg c = {.op = LG_OP_SWIGLU_FWD, .dtype = p->dtype};
    st = lg_ctx_kernel(ctx, &c, &s->k_fwd);
    c.op = LG_OP_SWIGLU_BWD;
    if (st == LG_OK)
        st = lg_ctx_kernel(ctx, &c, &s->k_bwd);
    if (st == LG_OK && p->with_lora) {
        struct lg_kernel_cfg l = {.op = LG_OP_SWIGLU_LORA_FWD, .dtype = p->dtype, .rank = p->lora.rank,
                                  .drop = lg_ops_dec_drops(&p->lora)};
        st = lg_ctx_kernel(ctx, &l, &s->k_lfwd);
    }
    if (st != LG_OK) {
        free(s);
        return lg_fail_wrap(st, "%s: ", fn);
    }
    *out = s;
    return LG_OK;
}

void lg_swiglu_free(lg_swiglu_t *s) { free(s); }

/* Elementwise launches: x over the row's 8-value vectors, y over rows (the kernel walks rows past 65535). */
static unsigned grid_x(const lg_swiglu_t *s, const struct lg_kernel *k)
{
    return (unsigned)lg_ops_dec_cdiv(s->p.inter / 8, k->threads);
}
static unsigned grid_y(int64_t n) { return (unsigned)(n < 65535 ? n : 65535); }

enum lg_status lg_swiglu_forward(lg_swiglu_t *s, const struct lg_swiglu_fwd *f, CUstream stream)
{
    static const char *fn = "lg_swiglu_forward";
    if (!s || !f)
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    const int64_t I = s->p.inter;
    enum lg_status st = lg_ops_dec_check_n(fn, f->n);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "g", f->g, f->ldg, I);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "u", f->u, f->ldu, I);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "a", f->a, f->lda, I);
    if (st == LG_OK && (f->a == f->g || f->a == f->u))
        st = lg_fail(LG_ERR_INVALID, "%s: a must not overwrite g or u", fn);
    if (st == LG_OK && f->with_s && !s->p.with_lora)
        st = lg_fail(LG_ERR_INVALID, "%s: with_s but the op was built with with_lora = 0", fn);
    if (st == LG_OK && f->with_s) {
        st = lg_ops_dec_check_rows(fn, "lora.a", f->lora.a, f->lora.lda, I);
        if (st == LG_OK && (f->lora.s_col < I || f->lora.s_col + s->p.lora.rank > f->lda || f->lora.s_col % 2))
            st = lg_fail(LG_ERR_INVALID, "%s: lora.s_col = %lld: S (%d columns) must lie in a's tail, columns "
                         "%lld..%lld (lda), at an even column", fn, (long long)f->lora.s_col, s->p.lora.rank,
                         (long long)I, (long long)f->lda - 1);
    }
    if (st != LG_OK)
        return st;
    struct lg_swiglu_args a = {.g = (const void *)f->g, .ldg = f->ldg, .u = (const void *)f->u, .ldu = f->ldu,
                               .a = (void *)f->a, .lda = f->lda, .n = (int)f->n, .k = (int)I};
    if (!f->with_s)
        return lg_kernel_launch(s->k_fwd, grid_x(s, s->k_fwd), grid_y(f->n), &a, sizeof a, stream);
    a.lora = lg_ops_dec_lora(&s->p.lora, &f->lora, f->seed, 0, f->a, f->lda, s->esz);
    return lg_kernel_launch(s->k_lfwd, (unsigned)lg_ops_dec_cdiv(f->n, 16), 1, &a, sizeof a, stream);
}

enum lg_status lg_swiglu_backward(lg_swiglu_t *s, const struct lg_swiglu_bwd *b, CUstream stream)
{
    static const char *fn = "lg_swiglu_backward";
    if (!s || !b)
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    const int64_t I = s->p.inter;
    enum lg_status st = lg_ops_dec_check_n(fn, b->n);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "g", b->g, b->ldg, I);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "u", b->u, b->ldu, I);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "da", b->da, b->ldda, I);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "dg", b->dg, b->lddg, I);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "du", b->du, b->lddu, I);
    if (st == LG_OK && ((b->dg == b->g && b->lddg != b->ldg) || (b->du == b->u && b->lddu != b->ldu)))
        st = lg_fail(LG_ERR_INVALID, "%s: dg over g (du over u) needs the same leading dimension", fn);
    if (st == LG_OK && (b->dg == b->u || b->du == b->g || b->dg == b->du))
        st = lg_fail(LG_ERR_INVALID, "%s: dg may overwrite only g, du only u", fn);
    if (st != LG_OK)
        return st;
    struct lg_swiglu_args a = {.g = (const void *)b->g, .ldg = b->ldg, .u = (const void *)b->u, .ldu = b->ldu,
                               .da = (const void *)b->da, .ldda = b->ldda, .dg = (void *)b->dg, .lddg = b->lddg,
                               .du = (void *)b->du, .lddu = b->lddu, .n = (int)b->n, .k = (int)I};
    return lg_kernel_launch(s->k_bwd, grid_x(s, s->k_bwd), grid_y(b->n), &a, sizeof a, stream);
}
