/* tuner_attn.c: tunes the generated attention backend's tiles for one model shape (lg_tuner_attn): forward +
 * backward over packed causal samples, timed whole on the tuner's own buffers, by coordinate descent over the
 * forward's (bm, bn, nw, st), the dK/dV pass's (bm, nw, st) and, deterministic, the dQ pass's (bm, bn, nw, st),
 * each group the generator's variants pruned for the arch (lg_tune_space) and measured by lg_tune_measure
 * against the per-arch defaults' output (sampled token rows of O, dQ, dK, dV). A final side-by-side round
 * keeps the winner only if it beats the defaults. */
#include "lg_tuner.h"
#include "lg_attention.h"
#include "lg_base.h"
#include "lg_gpu.h"
#include "lg_half.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
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
};

static void logf_(const struct at *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(const struct at *t, const char *fmt, ...)
{
    if (!t->o_->log)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    t->o_->log(t->o_->log_u, line);
}

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static enum lg_status dev_random(const struct at *t, size_t cnt, uint64_t seed, CUdeviceptr *out)
{
    uint16_t *h = malloc(cnt * 2);
    if (!h)
        return lg_fail(LG_ERR_OOM, "tuner: out of host memory");
    for (size_t i = 0; i < cnt; i++)
        h[i] = lg_f32_to_half(t->p.dtype, (float)((double)(mix(&seed) >> 11) / 9007199254740992.0 * 2 - 1));
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

static enum lg_status fetch(const struct at *t, CUdeviceptr src, int64_t cols, float *dst)
{
    uint16_t *h = malloc((size_t)cols * 2);
    if (!h)
        return lg_fail(LG_ERR_OOM, "tuner: out of host memory");
    enum lg_status st = LG_OK;
    for (int i = 0; i < t->nrows && st == LG_OK; i++) {
        st = lg_cu_check(cuMemcpyDtoH(h, src + (CUdeviceptr)(t->rows[i] * cols * 2), (size_t)cols * 2),
                         "tuner: reading outputs");
        for (int64_t j = 0; j < cols && st == LG_OK; j++)
            dst[(size_t)i * (size_t)cols + (size_t)j] = lg_half_to_f32(t->p.dtype, h[j]);
    }
    free(h);
    return st;
}

static double rel_l2(const float *g, const float *r, size_t lo, size_t hi)
{
    double num = 0, den = 0;
    for (size_t i = lo; i < hi; i++) {
        double x = (double)g[i] - (double)r[i];
        num += x * x, den += (double)r[i] * r[i];
    }
    return isnan(num) ? NAN : den > 0 ? sqrt(num / den) : sqrt(num);
}

static enum lg_status cb_check(void *u, int i, double *err, int *ok)
{
    struct at *t = u;
    const int64_t wq = (int64_t)t->p.hq * t->p.head_dim, wk = (int64_t)t->p.hkv * t->p.head_dim;
    float *dst = t->have_ref ? t->got : t->ref;
    const size_t n = (size_t)t->nrows;
    const size_t cut[5] = {0, n * (size_t)wq, 2 * n * (size_t)wq, 2 * n * (size_t)wq + n * (size_t)wk, t->nref};
    enum lg_status st = fetch(t, t->o, wq, dst);
    if (st == LG_OK)
        st = fetch(t, t->dq, wq, dst + cut[1]);
    if (st == LG_OK)
        st = fetch(t, t->dk, wk, dst + cut[2]);
    if (st == LG_OK)
        st = fetch(t, t->dv, wk, dst + cut[3]);
    if (st != LG_OK)
        return st;
    if (!t->have_ref) {
        t->have_ref = 1;
        *err = 0, *ok = 1;
        return LG_OK;
    }
    double e = 0;
    for (int k = 0; k < 4; k++) {
        double ek = rel_l2(t->got, t->ref, cut[k], cut[k + 1]);
        e = isnan(ek) || ek > e ? ek : e;
    }
    *err = e, *ok = !isnan(e) && e <= 1e-2;
    return LG_OK;
}

static enum lg_status measure(struct at *t, const char *group, int n, struct lg_tuner_outcome *out, double *ms)
{
    struct lg_tune_result *res = calloc((size_t)n, sizeof *res);
    if (!res)
        return lg_fail(LG_ERR_OOM, "tuner: out of memory");
    struct lg_tune_bench b = {.ncand = n, .u = t, .select = cb_select, .run = cb_run, .check = cb_check,
                              .warmup = t->o_->warmup, .rounds = t->o_->rounds};
    int best = 0;
    enum lg_status st = lg_tune_measure(&b, res, &best);
    for (int i = 0; i < n && st == LG_OK; i++) {
        out->failed += res[i].outcome == LG_TUNE_FAILED;
        out->mismatched += res[i].outcome == LG_TUNE_MISMATCH;
        if (res[i].outcome != LG_TUNE_KEPT)
            logf_(t, "  %s candidate %d scores +inf: %s", group, i, res[i].why);
        else if (res[i].err > out->max_err)
            out->max_err = res[i].err;
    }
    if (st == LG_OK) {
        out->entry.candidates += n - 1;
        ms[0] = res[0].ms, ms[1] = res[best].ms;
        t->cand[0] = t->cand[best];
    }
    free(res);
    return st;
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
        logf_(t, "  attn %s: %d variants, %d pruned for sm_%d, %d timed", lg_tuner_attn_group_name(g), info.variants,
          info.pruned, lg_ctx_arch(t->ctx), info.timed);
    return n > 1 ? measure(t, lg_tuner_attn_group_name(g), n, out, ms) : LG_OK;
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
    lg_attn_tune_key(ctx, p, &out->entry.key);
    enum lg_status st = setup(&t, sample_len);
    double ms[2] = {0, 0};
    t.cand[0] = t.base;
    for (int g = 0; g < lg_tuner_attn_groups(p) && st == LG_OK; g++)
        st = group_run(&t, g, out, ms);
    if (st == LG_OK) { /* the winner against the defaults, side by side */
        struct lg_attn_tiles win = t.cand[0];
        t.cand[0] = t.base, t.cand[1] = win;
        int kept = out->entry.candidates;
        st = measure(&t, "final", 2, out, ms);
        out->entry.candidates = kept > 0 ? kept : 1;
        out->entry.default_ms = ms[0], out->entry.time_ms = ms[1];
        lg_attn_tiles_to_entry(&t.cand[0], &out->entry);
    }
    teardown(&t);
    free(t.cand);
    return st == LG_OK ? LG_OK : lg_fail_wrap(st, "tuning attention %s: ", out->entry.key.shape);
}
