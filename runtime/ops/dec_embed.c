/* dec_embed.c: the embedding gather (lg_decoder_ops.h). The ids were checked by the trainer on the host when it
 * read the dataset; on the device an id outside the table cannot be reported without a synchronisation, so
 * the kernel writes a zero row instead, never reads outside the table, and counts it in a device counter
 * that lg_embed_bad_ids reads when the caller synchronises anyway. */
#include "dec_internal.h"
#include "lg_base.h"
#include "lg_gpu.h"

#include <stdlib.h>

struct lg_embed {
    lg_ctx_t *ctx;
    struct lg_embed_params p;
    CUdeviceptr bad; /* int: out-of-range ids seen */
    const struct lg_kernel *k;
};

enum lg_status lg_embed_init(lg_ctx_t *ctx, const struct lg_embed_params *p, lg_embed_t **out)
{
    static const char *fn = "lg_embed_init";
    if (!p || !out)
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    enum lg_status st = lg_ops_dec_check_dtype(fn, p->dtype);
    if (st != LG_OK)
        return st;
    if (p->hidden < 8 || p->hidden % 8)
        return lg_fail(LG_ERR_INVALID, "%s: hidden = %lld must be a positive multiple of 8", fn, (long long)p->hidden);
    if (p->vocab < 1 || p->vocab > INT32_MAX)
        return lg_fail(LG_ERR_INVALID, "%s: vocab = %lld must be in 1..%d", fn, (long long)p->vocab, INT32_MAX);
    if (!ctx)
        return lg_fail(LG_ERR_INVALID, "%s: ctx is NULL", fn);
    lg_embed_t *e = calloc(1, sizeof *e);
    if (!e)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", fn);
    e->ctx = ctx;
    e->p = *p;
    struct lg_kernel_cfg c = {.op = LG_OP_EMBED, .dtype = p->dtype};
    st = lg_cu_check(cuMemAlloc(&e->bad, sizeof(int)), "lg_embed_init: counter");
    if (st == LG_OK)
        st = lg_cu_check(cuMemsetD32(e->bad, 0, 1), "lg_embed_init: counter");
    if (st == LG_OK)
        st = lg_ctx_kernel(ctx, &c, &e->k);
    if (st != LG_OK) {
        lg_embed_free(e);
        return lg_fail_wrap(st, "%s: ", fn);
    }
    *out = e;
    return LG_OK;
}

void lg_embed_free(lg_embed_t *e)
{
    if (!e)
        return;
    if (e->bad)
        cuMemFree(e->bad);
    free(e);
}

enum lg_status lg_embed_gather(lg_embed_t *e, const struct lg_embed_run *r, CUstream stream)
{
    static const char *fn = "lg_embed_gather";
    if (!e || !r)
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    const int64_t H = e->p.hidden;
    enum lg_status st = lg_ops_dec_check_n(fn, r->n);
    if (st == LG_OK)
        st = lg_ops_dec_check_ptr(fn, "ids", r->ids, 4);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "table", r->table, r->ldt, H);
    if (st == LG_OK)
        st = lg_ops_dec_check_rows(fn, "out", r->out, r->ldo, H);
    if (st != LG_OK)
        return st;
    struct lg_embed_args a = {.ids = (const int *)r->ids, .table = (const void *)r->table, .ldt = r->ldt,
                              .out = (void *)r->out, .ldo = r->ldo, .bad = (int *)e->bad, .vocab = e->p.vocab,
                              .n = (int)r->n, .h = (int)H};
    /* x over the row's 8-value vectors, y over tokens (the kernel walks tokens past 65535) */
    return lg_kernel_launch(e->k, (unsigned)lg_ops_dec_cdiv(H / 8, e->k->threads),
                            (unsigned)(r->n < 65535 ? r->n : 65535), &a, sizeof a, stream);
}

enum lg_status lg_embed_bad_ids(lg_embed_t *e, CUstream stream, int *count)
{
    if (!e || !count)
        return lg_fail(LG_ERR_INVALID, "lg_embed_bad_ids: null argument");
    enum lg_status st = lg_cu_check(cuStreamSynchronize(stream), "lg_embed_bad_ids: cuStreamSynchronize");
    if (st == LG_OK)
        st = lg_cu_check(cuMemcpyDtoH(count, e->bad, sizeof(int)), "lg_embed_bad_ids: read");
    return st;
}
