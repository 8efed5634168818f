/* tuner_mlora.c: tunes one FusedMultiLoRA layer (lg_tuner_mlora) as the CUDA training backend runs it: X packed,
 * S in its own buffer, strategy (b) (frozen GEMM + segmented expand), dS apart from dY; nadapters adapters of
 * one rank, alpha and dropout on uneven segments (adapter a gets a share proportional to a + 1). Forward +
 * backward timed whole on the tuner's own layer and buffers (gradients overwritten, never accumulated), by
 * coordinate descent over the down (wm wk mt u minb), dY (nct st minb), dA (minb) and expand (nct) groups of the
 * pruned space, then cuBLASLt's candidates for the frozen GEMM and the dX GEMM, each candidate checked against the reference's Y and dX (sampled rows) and every slot's dA and
 * dB; a final side-by-side round keeps the winner only if it beats the reference (lg_mlora_arch_tiles). */
#include "tuner_internal.h"
#include "lg_base.h"
#include "lg_gpu.h"
#include "lg_half.h"
#include "lg_mlora.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLE_ROWS 128

struct mt_ {
    lg_ctx_t *ctx;
    lg_mlora_t *L;
    lg_mlora_segments_t *seg;
    struct lg_tuner_mlora_shape sh;
    int64_t n, MT, lds;
    CUdeviceptr x, s, y, dy, dx;
    int nrows;
    int64_t rows[SAMPLE_ROWS];
    float *ref, *got;
    size_t nref, ngrad;
    int have_ref;
    struct lg_mlora_tiles *cand, base;
    const struct lg_tuner_opts *o;
    struct lg_tuner_run run;
};

static uint16_t *host_random(enum lg_dtype t, size_t cnt, float scale, uint64_t seed)
{
    uint16_t *h = malloc(cnt * 2 + 2);
    for (size_t i = 0; h && i < cnt; i++)
        h[i] = lg_f32_to_half(t, (float)((double)(lg_tuner_mix(&seed) >> 11) / 9007199254740992.0 * 2 - 1) * scale);
    return h;
}

static enum lg_status dev_random(const struct mt_ *t, size_t cnt, uint64_t seed, CUdeviceptr *out)
{
    uint16_t *h = host_random(t->sh.dtype, cnt, 1.0f, seed);
    if (!h)
        return lg_fail(LG_ERR_OOM, "tuner: out of host memory");
    enum lg_status st = lg_cu_check(cuMemAlloc(out, cnt * 2), "tuner: scratch buffer");
    if (st == LG_OK)
        st = lg_cu_check(cuMemcpyHtoD(*out, h, cnt * 2), "tuner: uploading inputs");
    free(h);
    return st;
}

static enum lg_status set_weights(struct mt_ *t)
{
    const int64_t K = t->sh.in_features;
    const float sw = 1.0f / sqrtf((float)K);
    enum lg_status st = LG_OK;
    for (int m = 0; m < t->sh.nmod && st == LG_OK; m++) {
        const int64_t M = t->sh.out_features[m];
        uint16_t *w = host_random(t->sh.dtype, (size_t)(M * K), sw, 31 + (uint64_t)m);
        st = w ? lg_mlora_set_weights(t->L, m, w, NULL) : lg_fail(LG_ERR_OOM, "tuner: out of host memory");
        free(w);
        for (int a = 0; a < t->sh.nadapters && st == LG_OK; a++) {
            const int r = t->sh.rank;
            uint16_t *ha = host_random(t->sh.dtype, (size_t)(r * K), sw, 100 + (uint64_t)(a * 3 + m));
            uint16_t *hb = host_random(t->sh.dtype, (size_t)(M * r), 0.5f, 200 + (uint64_t)(a * 3 + m));
            st = ha && hb ? lg_mlora_set_adapter(t->L, a, m, ha, hb) : lg_fail(LG_ERR_OOM, "tuner: out of host memory");
            free(ha), free(hb);
        }
    }
    return st;
}

static enum lg_status setup(struct mt_ *t)
{
    const struct lg_tuner_mlora_shape *s = &t->sh;
    const int ns = s->nadapters * s->nmod;
    struct lg_mlora_slot_params *sp = calloc((size_t)ns, sizeof *sp);
    struct lg_mlora_seg *sg = calloc((size_t)s->nadapters, sizeof *sg);
    if (!sp || !sg) {
        free(sp), free(sg);
        return lg_fail(LG_ERR_OOM, "tuner: out of memory");
    }
    for (int i = 0; i < ns; i++)
        sp[i] = (struct lg_mlora_slot_params){.rank = s->rank, .alpha = s->alpha, .dropout = s->dropout};
    struct lg_mlora_params mp = {.in_features = s->in_features, .nmod = s->nmod, .nadapters = s->nadapters,
                                 .slots = sp, .dtype = s->dtype, .layer_id = 5};
    t->MT = 0;
    for (int m = 0; m < s->nmod; m++)
        mp.out_features[m] = s->out_features[m], t->MT += s->out_features[m];
    enum lg_status st = lg_mlora_init(t->ctx, &mp, &t->L);
    /* uneven segments: adapter a's share is (a + 1) / sum */
    const int64_t tot = (int64_t)s->nadapters * (s->nadapters + 1) / 2;
    int64_t at = 0;
    for (int a = 0; a < s->nadapters; a++) {
        int64_t len = a + 1 == s->nadapters ? t->n - at : t->n * (a + 1) / tot;
        sg[a] = (struct lg_mlora_seg){.adapter = a, .start = at, .len = len};
        at += len;
    }
    if (st == LG_OK)
        st = lg_mlora_segments_init(t->ctx, s->nadapters, &t->seg);
    if (st == LG_OK)
        st = lg_mlora_segments_set(t->seg, t->n, s->nadapters, sg, s->nadapters, 0);
    free(sp), free(sg);
    if (st == LG_OK)
        st = set_weights(t);
    if (st != LG_OK)
        return st;
    const int64_t K = s->in_features, n = t->n;
    t->lds = (lg_mlora_compact_cols(t->L) + 7) / 8 * 8;
    if (t->lds < 8)
        t->lds = 8;
    if ((st = dev_random(t, (size_t)(n * K), 41, &t->x)) || (st = dev_random(t, (size_t)(n * t->MT), 42, &t->dy)) ||
        (st = lg_cu_check(cuMemAlloc(&t->s, (size_t)(n * t->lds) * 2), "tuner: S")) ||
        (st = lg_cu_check(cuMemAlloc(&t->y, (size_t)(n * t->MT) * 2), "tuner: Y")) ||
        (st = lg_cu_check(cuMemAlloc(&t->dx, (size_t)(n * K) * 2), "tuner: dX")))
        return st;
    t->nrows = n < SAMPLE_ROWS ? (int)n : SAMPLE_ROWS;
    for (int i = 0; i < t->nrows; i++)
        t->rows[i] = t->nrows == 1 ? 0 : (int64_t)i * (n - 1) / (t->nrows - 1);
    t->ngrad = 0;
    for (int m = 0; m < s->nmod; m++)
        t->ngrad += (size_t)s->nadapters * (size_t)s->rank * (size_t)(K + s->out_features[m]);
    t->nref = (size_t)t->nrows * (size_t)(t->MT + K) + t->ngrad;
    t->ref = calloc(t->nref, sizeof *t->ref), t->got = calloc(t->nref, sizeof *t->got);
    return t->ref && t->got ? LG_OK : lg_fail(LG_ERR_OOM, "tuner: out of host memory");
}

static void teardown(struct mt_ *t)
{
    CUdeviceptr *b[] = {&t->x, &t->s, &t->y, &t->dy, &t->dx};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        if (*b[i])
            cuMemFree(*b[i]);
    lg_mlora_segments_free(t->seg);
    lg_mlora_free(t->L);
    free(t->ref), free(t->got);
}

static enum lg_status cb_select(void *u, int i)
{
    struct mt_ *t = u;
    return lg_mlora_set_tiles(t->L, &t->cand[i]);
}

static enum lg_status cb_run(void *u, CUstream s)
{
    struct mt_ *t = u;
    const int64_t K = t->sh.in_features;
    struct lg_mlora_fwd f = {.n = t->n, .seg = t->seg, .x = t->x, .ldx = K, .s = t->s, .lds = t->lds, .y = t->y,
                             .ldy = t->MT, .seed = 3, .strategy = LG_MLORA_EXPAND};
    enum lg_status st = lg_mlora_forward(t->L, &f, s);
    struct lg_mlora_bwd b = {.n = t->n, .seg = t->seg, .x = t->x, .ldx = K, .s = t->s, .lds = t->lds, .dy = t->dy,
                             .lddy = t->MT, .dx = t->dx, .lddx = K, .grad_beta = 0, .seed = 3,
                             .strategy = LG_MLORA_EXPAND};
    return st == LG_OK ? lg_mlora_backward(t->L, &b, s) : st;
}

static enum lg_status fetch_grads(const struct mt_ *t, float *dst)
{
    const int64_t K = t->sh.in_features, r = t->sh.rank;
    size_t off = 0;
    enum lg_status st = LG_OK;
    for (int a = 0; a < t->sh.nadapters && st == LG_OK; a++)
        for (int m = 0; m < t->sh.nmod && st == LG_OK; m++) {
            CUdeviceptr da, db;
            st = lg_mlora_grads(t->L, a, m, &da, &db);
            const size_t na = (size_t)(r * K), nb = (size_t)(t->sh.out_features[m] * r);
            if (st == LG_OK)
                st = lg_cu_check(cuMemcpyDtoH(dst + off, da, na * 4), "tuner: reading dA");
            if (st == LG_OK)
                st = lg_cu_check(cuMemcpyDtoH(dst + off + na, db, nb * 4), "tuner: reading dB");
            off += na + nb;
        }
    return st;
}

static enum lg_status cb_check(void *u, int i, double *err, int *ok)
{
    struct mt_ *t = u;
    float *dst = t->have_ref ? t->got : t->ref;
    const size_t ny = (size_t)t->nrows * (size_t)t->MT, nx = (size_t)t->nrows * (size_t)t->sh.in_features;
    enum lg_status st = lg_tuner_fetch_rows(t->sh.dtype, t->rows, t->nrows, t->y, t->MT, dst);
    if (st == LG_OK)
        st = lg_tuner_fetch_rows(t->sh.dtype, t->rows, t->nrows, t->dx, t->sh.in_features, dst + ny);
    if (st == LG_OK)
        st = fetch_grads(t, dst + ny + nx);
    if (st != LG_OK)
        return st;
    if (!t->have_ref) {
        t->have_ref = 1;
        *err = 0, *ok = 1;
        return LG_OK;
    }
    const size_t cut[4] = {0, ny, ny + nx, t->nref};
    double e = lg_tuner_worst_err(t->got, t->ref, cut, 3);
    *err = e, *ok = !isnan(e) && e <= 1e-2;
    return LG_OK;
}

/* The frozen GEMM's (fwd = 1) or the dX GEMM's cuBLASLt candidates, as the layer issues them under strategy (b). */
static enum lg_status algo_group(struct mt_ *t, int fwd, struct lg_tuner_outcome *out, double *ms)
{
    int64_t ldw;
    CUdeviceptr w = lg_mlora_weights(t->L, &ldw);
    const int64_t K = t->sh.in_features;
    struct lg_gemm g = {.dtype = t->sh.dtype, .alpha = 1.f, .m = t->n, .b = (const void *)w, .ldb = ldw};
    /* split: each module's GEMM has the first module's shape or a narrower one; count the first's candidates */
    const int64_t cols = t->cand[0].split && t->sh.nmod > 1 ? t->sh.out_features[0] : t->MT;
    if (fwd)
        g.n = cols, g.k = K, g.trans_b = 1, g.a = (const void *)t->x, g.lda = K, g.c = (void *)t->y, g.ldc = t->MT;
    else
        g.n = K, g.k = cols, g.a = (const void *)t->dy, g.lda = t->MT, g.c = (void *)t->dx, g.ldc = K;
    int cnt = lg_blas_algo_count(lg_ctx_blas(t->ctx), &g);
    if (cnt <= 0)
        return lg_fail_wrap(LG_ERR_CUBLAS, "tuner: cuBLASLt candidates of the %s GEMM: ", fwd ? "frozen" : "dX");
    const size_t field = fwd ? offsetof(struct lg_mlora_tiles, fwd_algo) : offsetof(struct lg_mlora_tiles, dx_algo);
    int n = lg_tuner_algo_cands(&t->run, field, cnt);
    if (t->o->verbose)
        lg_tuner_logf(t->o, "  mlora %s GEMM: %d cuBLASLt candidates", fwd ? "frozen" : "dX", cnt);
    return n > 1 ? lg_tuner_measure(&t->run, fwd ? "fwd_algo" : "dx_algo", n, out, ms) : LG_OK;
}

enum lg_status lg_tuner_mlora(lg_ctx_t *ctx, const struct lg_tuner_mlora_shape *s, int64_t n,
                              const struct lg_tuner_opts *o, struct lg_tuner_outcome *out)
{
    static const struct lg_tuner_opts none = {0};
    if (!ctx || !s || !out || n < s->nadapters || s->nadapters < 1 || s->nmod < 1 || s->nmod > LG_MLORA_MAX_MODULES)
        return lg_fail(LG_ERR_INVALID, "lg_tuner_mlora: a context, a shape with 1..%d modules and >= 1 adapters, "
                       "and at least one token per adapter are required", LG_MLORA_MAX_MODULES);
    memset(out, 0, sizeof *out);
    struct mt_ t = {.ctx = ctx, .sh = *s, .n = n, .o = o ? o : &none};
    const int max = t.o->max_cands > 0 ? t.o->max_cands : 16;
    t.cand = calloc((size_t)(max > 8 ? max : 8) + 2, sizeof *t.cand); /* a tile group, or 8 GEMM candidates */
    if (!t.cand)
        return lg_fail(LG_ERR_OOM, "tuner: out of memory");
    t.run = (struct lg_tuner_run){.o = t.o, .u = &t, .select = cb_select, .run = cb_run, .check = cb_check,
                                  .cand = t.cand, .csize = sizeof *t.cand};
    enum lg_status st = setup(&t);
    if (st == LG_OK) {
        lg_mlora_tune_key(t.L, n, &out->entry.key);
        st = lg_mlora_arch_tiles(t.L, &t.base);
    }
    double ms[2] = {0, 0};
    t.cand[0] = t.base;
    for (int g = 0; g < LG_TUNER_MLORA_GROUPS && st == LG_OK; g++) {
        const struct lg_mlora_tiles cur = t.cand[0];
        struct lg_tuner_space_info info;
        int nc;
        st = lg_tuner_mlora_group(lg_ctx_gen(ctx), lg_ctx_arch(ctx), s, g, &cur, max, t.cand, &nc, &info);
        if (st != LG_OK)
            break;
        out->pruned += info.pruned;
        if (t.o->verbose)
            lg_tuner_logf(t.o, "  mlora %s: %d variants, %d pruned for sm_%d, %d timed", lg_tuner_mlora_group_name(g),
                          info.variants, info.pruned, lg_ctx_arch(ctx), info.timed);
        if (nc > 1)
            st = lg_tuner_measure(&t.run, lg_tuner_mlora_group_name(g), nc, out, ms);
    }
    if (st == LG_OK && s->nmod > 1) { /* the modules' frozen GEMMs as one, or one per module */
        t.cand[1] = t.cand[0];
        t.cand[1].split = !t.cand[0].split;
        st = lg_tuner_measure(&t.run, "split", 2, out, ms);
    }
    if (st == LG_OK)
        st = algo_group(&t, 1, out, ms);
    if (st == LG_OK)
        st = algo_group(&t, 0, out, ms);
    if (st == LG_OK) /* the winner against the reference, side by side */
        st = lg_tuner_final(&t.run, &t.base, out);
    if (st == LG_OK)
        lg_mlora_tiles_to_entry(&t.cand[0], &out->entry);
    teardown(&t);
    free(t.cand);
    return st == LG_OK ? LG_OK : lg_fail_wrap(st, "tuning mlora %s: ", out->entry.key.shape);
}
