/* tuner_attn.c: tunes the generated attention backend's tiles for one model shape (lg_tuner_attn): forward +
 * backward over packed causal samples, timed whole on the tuner's own buffers, by coordinate descent over the
 * forward's (bm, bn, nw, st), the dK/dV pass's (bm, nw, st) and, deterministic, the dQ pass's (bm, bn, nw, st),
 * each group the generator's variants pruned for the arch (lg_tune_space) and measured by lg_tune_measure
 * against the per-arch defaults' output (sampled token rows of O, dQ, dK, dV). A final side-by-side round
 * keeps the winner only if it beats the defaults. */
#include "tuner_internal.h"
#include "lg_attention.h"
#include "lg_base.h"
#include "lg_gpu.h"
#include "lg_half.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLE_ROWS 128

struct at {
    lg_ctx_t *ctx;
    lg_attn_t *A;
    struct lg_attn_params p;
    int64_t T;
    int nseq, maxlen;
    int32_t *cu_host;
    CUdeviceptr cu, q, k, v, o, lse, dout, dq, dk, dv;
    int nrows;
    int64_t rows[SAMPLE_ROWS];
    float *ref, *got;
    size_t nref;
    int have_ref;
    struct lg_attn_tiles *cand, base;
    const struct lg_tuner_opts *o_;
    struct lg_tuner_run r;
};

static enum lg_status dev_random(const struct at *t, size_t cnt, uint64_t seed, CUdeviceptr *out)
{
    uint16_t *h = malloc(cnt * 2);
    if (!h)
        return lg_fail(LG_ERR_OOM, "tuner: out of host memory");
    for (size_t i = 0; i < cnt; i++)
        h[i] = lg_f32_to_half(t->p.dtype, (float)((double)(lg_tuner_mix(&seed) >> 11) / 9007199254740992.0 * 2 - 1));
    enum lg_status st = lg_cu_check(cuMemAlloc(out, cnt * 2), "tuner: scratch buffer");
    if (st == LG_OK)
        st = lg_cu_check(cuMemcpyHtoD(*out, h, cnt * 2), "tuner: uploading inputs");
    free(h);
    return st;
}

static enum lg_status setup(struct at *t, int sample_len)
{
    const int64_t T = t->T, hq = t->p.hq, hkv = t->p.hkv, d = t->p.head_dim;
    t->maxlen = (int)(sample_len < T ? sample_len : T);
    t->nseq = (int)((T + t->maxlen - 1) / t->maxlen);
    t->cu_host = malloc(sizeof *t->cu_host * (size_t)(t->nseq + 1));
    if (!t->cu_host)
        return lg_fail(LG_ERR_OOM, "tuner: out of host memory");
    for (int i = 0; i <= t->nseq; i++)
        t->cu_host[i] = (int32_t)((int64_t)i * t->maxlen < T ? (int64_t)i * t->maxlen : T);
    enum lg_status st = lg_attn_init(t->ctx, &t->p, &t->A);
    if (st == LG_OK) /* the per-arch defaults, whatever the database says: the reference */
        st = lg_attn_set_tiles(t->A, &(struct lg_attn_tiles){0});
    if (st == LG_OK)
        lg_attn_get_tiles(t->A, &t->base);
    if (st == LG_OK)
        st = lg_cu_check(cuMemAlloc(&t->cu, sizeof *t->cu_host * (size_t)(t->nseq + 1)), "tuner: offsets");
    if (st == LG_OK)
        st = lg_cu_check(cuMemcpyHtoD(t->cu, t->cu_host, sizeof *t->cu_host * (size_t)(t->nseq + 1)), "tuner: offsets");
    const size_t nq = (size_t)(T * hq * d), nk = (size_t)(T * hkv * d);
    if (st == LG_OK && !(st = dev_random(t, nq, 21, &t->q)) && !(st = dev_random(t, nk, 22, &t->k)) &&
        !(st = dev_random(t, nk, 23, &t->v)) && !(st = dev_random(t, nq, 24, &t->dout)))
        if (!(st = lg_cu_check(cuMemAlloc(&t->o, nq * 2), "tuner: O")) &&
            !(st = lg_cu_check(cuMemAlloc(&t->lse, (size_t)(T * hq) * 4), "tuner: LSE")) &&
            !(st = lg_cu_check(cuMemAlloc(&t->dq, nq * 2), "tuner: dQ")) &&
            !(st = lg_cu_check(cuMemAlloc(&t->dk, nk * 2), "tuner: dK")))
            st = lg_cu_check(cuMemAlloc(&t->dv, nk * 2), "tuner: dV");
    if (st != LG_OK)
        return st;
    t->nrows = T < SAMPLE_ROWS ? (int)T : SAMPLE_ROWS;
    for (int i = 0; i < t->nrows; i++)
        t->rows[i] = t->nrows == 1 ? 0 : (int64_t)i * (T - 1) / (t->nrows - 1);
    t->nref = (size_t)t->nrows * (size_t)(2 * hq * d + 2 * hkv * d);
    t->ref = calloc(t->nref, sizeof *t->ref), t->got = calloc(t->nref, sizeof *t->got);
    return t->ref && t->got ? LG_OK : lg_fail(LG_ERR_OOM, "tuner: out of host memory");
}

static void teardown(struct at *t)
{
    CUdeviceptr *b[] = {&t->cu, &t->q, &t->k, &t->v, &t->o, &t->lse, &t->dout, &t->dq, &t->dk, &t->dv};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        if (*b[i])
            cuMemFree(*b[i]);
    lg_attn_free(t->A);
    free(t->cu_host), free(t->ref), free(t->got);
}

static enum lg_status cb_select(void *u, int i)
{
    struct at *t = u;
    return lg_attn_set_tiles(t->A, &t->cand[i]);
}

static enum lg_status cb_run(void *u, CUstream s)
{
    struct at *t = u;
    struct lg_attn_seqs sq = {.nseq = t->nseq, .cu_host = t->cu_host, .cu = t->cu, .tokens = t->T, .max_len = t->maxlen};
    struct lg_attn_fwd f = {.seqs = sq, .q = t->q, .k = t->k, .v = t->v, .o = t->o, .lse = t->lse};
    enum lg_status st = lg_attn_forward(t->A, &f, s);
    struct lg_attn_bwd b = {.seqs = sq, .q = t->q, .k = t->k, .v = t->v, .o = t->o, .dout = t->dout, .lse = t->lse,
                            .dq = t->dq, .dk = t->dk, .dv = t->dv};
    return st == LG_OK ? lg_attn_backward(t->A, &b, s) : st;
}

static enum lg_status cb_check(void *u, int i, double *err, int *ok)
{
    struct at *t = u;
    const int64_t wq = (int64_t)t->p.hq * t->p.head_dim, wk = (int64_t)t->p.hkv * t->p.head_dim;
    float *dst = t->have_ref ? t->got : t->ref;
    const size_t n = (size_t)t->nrows;
    const size_t cut[5] = {0, n * (size_t)wq, 2 * n * (size_t)wq, 2 * n * (size_t)wq + n * (size_t)wk, t->nref};
    enum lg_status st = lg_tuner_fetch_rows(t->p.dtype, t->rows, t->nrows, t->o, wq, dst);
    if (st == LG_OK)
        st = lg_tuner_fetch_rows(t->p.dtype, t->rows, t->nrows, t->dq, wq, dst + cut[1]);
    if (st == LG_OK)
        st = lg_tuner_fetch_rows(t->p.dtype, t->rows, t->nrows, t->dk, wk, dst + cut[2]);
    if (st == LG_OK)
        st = lg_tuner_fetch_rows(t->p.dtype, t->rows, t->nrows, t->dv, wk, dst + cut[3]);
    if (st != LG_OK)
        return st;
    if (!t->have_ref) {
        t->have_ref = 1;
        *err = 0, *ok = 1;
        return LG_OK;
    }
    double e = lg_tuner_worst_err(t->got, t->ref, cut, 4);
    *err = e, *ok = !isnan(e) && e <= 1e-2;
    return LG_OK;
}

/* Tile group g (lg_tuner_attn_group) around the best so far. */
static enum lg_status group_run(struct at *t, int g, struct lg_tuner_outcome *out, double *ms)
{
    const int max = t->o_->max_cands > 0 ? t->o_->max_cands : 16;
    const struct lg_attn_tiles cur = t->cand[0];
    struct lg_tuner_space_info info;
    int n;
    enum lg_status st = lg_tuner_attn_group(lg_ctx_gen(t->ctx), lg_ctx_arch(t->ctx), &t->p, g, &cur, max, t->cand,
                                            &n, &info);
    if (st != LG_OK)
        return st;
    out->pruned += info.pruned;
    if (t->o_->verbose)
        lg_tuner_logf(t->o_, "  attn %s: %d variants, %d pruned for sm_%d, %d timed", lg_tuner_attn_group_name(g),
                      info.variants, info.pruned, lg_ctx_arch(t->ctx), info.timed);
    return n > 1 ? lg_tuner_measure(&t->r, lg_tuner_attn_group_name(g), n, out, ms) : LG_OK;
}

enum lg_status lg_tuner_attn(lg_ctx_t *ctx, const struct lg_attn_params *p, int64_t tokens, int sample_len,
                             const struct lg_tuner_opts *o, struct lg_tuner_outcome *out)
{
    static const struct lg_tuner_opts none = {0};
    if (!ctx || !p || !out || tokens < 1 || sample_len < 1 || p->backend != LG_ATTN_GENERATED)
        return lg_fail(LG_ERR_INVALID, "lg_tuner_attn: a context, generated-backend parameters, tokens >= 1 and a "
                       "sample length >= 1 are required");
    memset(out, 0, sizeof *out);
    struct at t = {.ctx = ctx, .p = *p, .T = tokens, .o_ = o ? o : &none};
    const int max = t.o_->max_cands > 0 ? t.o_->max_cands : 16;
    t.cand = calloc((size_t)max + 2, sizeof *t.cand);
    if (!t.cand)
        return lg_fail(LG_ERR_OOM, "tuner: out of memory");
    t.r = (struct lg_tuner_run){.o = t.o_, .u = &t, .select = cb_select, .run = cb_run, .check = cb_check,
                                .cand = t.cand, .csize = sizeof *t.cand};
    lg_attn_tune_key(ctx, p, &out->entry.key);
    enum lg_status st = setup(&t, sample_len);
    double ms[2] = {0, 0};
    t.cand[0] = t.base;
    for (int g = 0; g < lg_tuner_attn_groups(p) && st == LG_OK; g++)
        st = group_run(&t, g, out, ms);
    if (st == LG_OK) /* the winner against the defaults, side by side */
        st = lg_tuner_final(&t.r, &t.base, out);
    if (st == LG_OK)
        lg_attn_tiles_to_entry(&t.cand[0], &out->entry);
    teardown(&t);
    free(t.cand);
    return st == LG_OK ? LG_OK : lg_fail_wrap(st, "tuning attention %s: ", out->entry.key.shape);
}
