/* tuner_lora.c: tunes one FusedLoRA layer (lg_tuner.h). The state below is the tuner's own layer and scratch
 * buffers; each group of the descent (down tiles, dY tiles, dA bound, forward GEMM algorithm, dX GEMM
 * algorithm) becomes one list of lg_lora_tiles measured by lg_tune_measure, whose check compares every
 * candidate with the reference's output: the configuration the layer runs without an entry (the defaults, or
 * lg_lora_arch_tiles' fix of one this arch cannot run). A last measurement puts the winner against the
 * reference side by side: the times in the entry come from it, and a winner that is not faster there is
 * dropped (the entry then holds the reference's tiles). */
#include "tuner_internal.h"
#include "lg_base.h"
#include "lg_gpu.h"
#include "lg_half.h"
#include "common/lg_philox.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLE_ROWS 128

struct lt {
    lg_ctx_t *ctx;
    lg_lora_t *L;
    struct lg_lora_params p;
    int64_t n, K, M, r, ldx, lddy;
    CUdeviceptr xe, dye, y, dx, da, db;
    int nrows;
    int64_t rows[SAMPLE_ROWS];
    float *ref, *got; /* sampled Y rows, sampled dX rows, all of dA, all of dB */
    size_t nref;
    int have_ref;
    double tol;
    struct lg_lora_tiles *cand;
    struct lg_lora_tiles base; /* the reference's tiles (lg_lora_arch_tiles) */
    const struct lg_tuner_opts *o;
    struct lg_tuner_run run;
};

/* ---- scratch buffers and inputs ---- */

/* rows x cols values in [-scale, scale) of the layer's dtype at row stride ld, uploaded to a fresh buffer. */
static enum lg_status upload_random(struct lt *t, int64_t rows, int64_t cols, int64_t ld, float scale, uint64_t seed,
                                    CUdeviceptr *out, uint16_t **keep)
{
    size_t cnt = (size_t)(rows * ld);
    uint16_t *h = calloc(cnt, sizeof *h);
    if (!h)
        return lg_fail(LG_ERR_OOM, "tuner: out of host memory");
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            float u = (float)(lg_tuner_mix(&seed) >> 40) / (float)(1 << 24);
            h[i * ld + j] = lg_f32_to_half(t->p.dtype, (2 * u - 1) * scale);
        }
    enum lg_status st = LG_OK;
    if (out) {
        st = lg_cu_check(cuMemAlloc(out, cnt * 2), "tuner: scratch buffer");
        if (st == LG_OK)
            st = lg_cu_check(cuMemcpyHtoD(*out, h, cnt * 2), "tuner: uploading inputs");
    }
    if (keep && st == LG_OK)
        *keep = h;
    else
        free(h);
    return st;
}

static enum lg_status setup(struct lt *t)
{
    const int64_t K = t->K, M = t->M, r = t->r, n = t->n;
    enum lg_status st = lg_lora_init(t->ctx, &t->p, &t->L);
    if (st != LG_OK)
        return st;
    uint16_t *w = NULL, *a = NULL, *b = NULL;
    float sw = 1.0f / sqrtf((float)K);
    if ((st = upload_random(t, M, K, K, sw, 11, NULL, &w)) || (st = upload_random(t, r, K, K, sw, 12, NULL, &a)) ||
        (st = upload_random(t, M, r, r, 0.5f, 13, NULL, &b)))
        goto done;
    if ((st = lg_lora_set_weights(t->L, w, a, b, NULL)))
        goto done;
    if ((st = upload_random(t, n, K, t->ldx, 1.0f, 14, &t->xe, NULL)) ||
        (st = upload_random(t, n, M, t->lddy, 1.0f, 15, &t->dye, NULL)))
        goto done;
    if ((st = lg_cu_check(cuMemAlloc(&t->y, (size_t)(n * M) * 2), "tuner: Y")) ||
        (st = lg_cu_check(cuMemAlloc(&t->dx, (size_t)(n * K) * 2), "tuner: dX")) ||
        (st = lg_cu_check(cuMemAlloc(&t->da, (size_t)(r * K) * 4), "tuner: dA")) ||
        (st = lg_cu_check(cuMemAlloc(&t->db, (size_t)(M * r) * 4), "tuner: dB")))
        goto done;
    t->nrows = n < SAMPLE_ROWS ? (int)n : SAMPLE_ROWS;
    for (int i = 0; i < t->nrows; i++)
        t->rows[i] = t->nrows == 1 ? 0 : (int64_t)i * (n - 1) / (t->nrows - 1);
    t->nref = (size_t)t->nrows * (size_t)(M + K) + (size_t)(2 * r * K > 0 ? r * K + M * r : 0);
    t->ref = calloc(t->nref, sizeof *t->ref), t->got = calloc(t->nref, sizeof *t->got);
    if (!t->ref || !t->got)
        st = lg_fail(LG_ERR_OOM, "tuner: out of host memory");
done:
    free(w), free(a), free(b);
    return st;
}

static void teardown(struct lt *t)
{
    CUdeviceptr *bufs[] = {&t->xe, &t->dye, &t->y, &t->dx, &t->da, &t->db};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (*bufs[i])
            cuMemFree(*bufs[i]);
    lg_lora_free(t->L);
    free(t->ref), free(t->got);
}

/* ---- the harness's callbacks ---- */

static enum lg_status cb_select(void *u, int i)
{
    struct lt *t = u;
    return lg_lora_set_tiles(t->L, &t->cand[i]);
}

static enum lg_status cb_run(void *u, CUstream s)
{
    struct lt *t = u;
    struct lg_lora_fwd f = {.n = t->n, .x = t->xe, .ldx = t->ldx, .y = t->y, .ldy = t->M, .seed = 1};
    enum lg_status st = lg_lora_forward(t->L, &f, s);
    struct lg_lora_bwd b = {.n = t->n, .x = t->xe, .ldx = t->ldx, .dy = t->dye, .lddy = t->lddy, .dx = t->dx,
                            .lddx = t->K, .da = t->da, .db = t->db, .grad_beta = 0, .seed = 1};
    return st == LG_OK ? lg_lora_backward(t->L, &b, s) : st;
}

static enum lg_status cb_check(void *u, int i, double *err, int *ok)
{
    struct lt *t = u;
    float *dst = t->have_ref ? t->got : t->ref;
    const size_t ny = (size_t)t->nrows * (size_t)t->M, nx = (size_t)t->nrows * (size_t)t->K;
    const size_t na = (size_t)(t->r * t->K);
    enum lg_status st = lg_tuner_fetch_rows(t->p.dtype, t->rows, t->nrows, t->y, t->M, dst);
    if (st == LG_OK)
        st = lg_tuner_fetch_rows(t->p.dtype, t->rows, t->nrows, t->dx, t->K, dst + ny);
    if (st == LG_OK)
        st = lg_cu_check(cuMemcpyDtoH(dst + ny + nx, t->da, na * 4), "tuner: reading dA");
    if (st == LG_OK)
        st = lg_cu_check(cuMemcpyDtoH(dst + ny + nx + na, t->db, (size_t)(t->M * t->r) * 4), "tuner: reading dB");
    if (st != LG_OK)
        return st;
    if (!t->have_ref) {
        t->have_ref = 1;
        *err = 0, *ok = 1;
        for (size_t k = 0; k < t->nref; k++)
            if (isnan(t->ref[k]) || isinf(t->ref[k])) {
                *ok = 0, *err = NAN;
                return lg_fail(LG_ERR_INTERNAL, "tuner: the default configuration's output is not finite");
            }
        return LG_OK;
    }
    const size_t cut[5] = {0, ny, ny + nx, ny + nx + na, t->nref};
    double e = lg_tuner_worst_err(t->got, t->ref, cut, 4);
    *err = e;
    *ok = !isnan(e) && e <= t->tol;
    return LG_OK;
}

/* ---- the descent ---- */

/* Tile group g (lg_tuner_lora_group: the generator's variants of the slot's kernel, pruned for the arch and
 * shape), around the best so far. */
static enum lg_status tile_group(struct lt *t, int g, struct lg_tuner_outcome *out, double *ms)
{
    const int max = t->o->max_cands > 0 ? t->o->max_cands : 16;
    const struct lg_lora_tiles cur = t->cand[0];
    struct lg_tuner_space_info info;
    int n;
    enum lg_status st = lg_tuner_lora_group(lg_ctx_gen(t->ctx), lg_ctx_arch(t->ctx), &t->p, g, &cur, max, t->cand,
                                            &n, &info);
    if (st != LG_OK)
        return st;
    out->pruned += info.pruned;
    if (t->o->verbose)
        lg_tuner_logf(t->o, "  %s: %d variants, %d pruned for sm_%d, %d timed", lg_tuner_lora_group_name(g),
                      info.variants, info.pruned, lg_ctx_arch(t->ctx), info.timed);
    return n > 1 ? lg_tuner_measure(&t->run, lg_tuner_lora_group_name(g), n, out, ms) : LG_OK;
}

/* The forward (fwd = 1) or dX GEMM's cuBLASLt candidates, as the layer issues them. */
static enum lg_status algo_group(struct lt *t, int fwd, struct lg_tuner_outcome *out, double *ms)
{
    CUdeviceptr w = lg_lora_weights(t->L);
    struct lg_gemm g = {.dtype = t->p.dtype, .alpha = 1.f, .m = t->n, .lda = fwd ? t->ldx : t->lddy, .ldb = t->ldx};
    g.a = (void *)(fwd ? t->xe : t->dye), g.b = (void *)w;
    if (fwd)
        g.n = t->M, g.k = t->K + t->r, g.trans_b = 1, g.c = (void *)t->y, g.ldc = t->M;
    else
        g.n = t->K, g.k = lg_dropout_thresh16(t->p.dropout) ? t->M : t->M + t->r, g.c = (void *)t->dx, g.ldc = t->K;
    int cnt = lg_blas_algo_count(lg_ctx_blas(t->ctx), &g);
    if (cnt <= 0)
        return lg_fail_wrap(LG_ERR_CUBLAS, "tuner: cuBLASLt candidates of the %s GEMM: ", fwd ? "forward" : "dX");
    const size_t field = fwd ? offsetof(struct lg_lora_tiles, fwd_algo) : offsetof(struct lg_lora_tiles, dx_algo);
    int n = lg_tuner_algo_cands(&t->run, field, cnt);
    if (t->o->verbose)
        lg_tuner_logf(t->o, "  %s GEMM: %d cuBLASLt candidates", fwd ? "forward" : "dX", cnt);
    return n > 1 ? lg_tuner_measure(&t->run, fwd ? "fwd_algo" : "dx_algo", n, out, ms) : LG_OK;
}

static enum lg_status descend(struct lt *t, struct lg_tuner_outcome *out)
{
    /* the reference: what the layer runs without an entry (the defaults, or the arch heuristic's fix of one
     * that cannot run here) */
    enum lg_status st = lg_lora_arch_tiles(t->ctx, &t->p, &t->cand[0]);
    if (st != LG_OK)
        return st;
    t->base = t->cand[0];
    double ms[2] = {0, 0};
    for (int g = 0; g < LG_TUNER_LORA_GROUPS && st == LG_OK; g++)
        st = tile_group(t, g, out, ms);
    if (st == LG_OK)
        st = algo_group(t, 1, out, ms);
    if (st == LG_OK)
        st = algo_group(t, 0, out, ms);
    return st;
}

enum lg_status lg_tuner_lora(lg_ctx_t *ctx, const struct lg_lora_params *p, int64_t n,
                             const struct lg_tuner_opts *o, struct lg_tuner_outcome *out)
{
    static const struct lg_tuner_opts none = {0};
    if (!ctx || !p || !out || n < 1)
        return lg_fail(LG_ERR_INVALID, "lg_tuner_lora: a context, layer parameters, n >= 1 and an outcome are required");
    memset(out, 0, sizeof *out);
    struct lt t = {.ctx = ctx, .p = *p, .n = n, .K = p->in_features, .M = p->out_features, .r = p->rank,
                   .o = o ? o : &none};
    t.p.base = LG_LORA_BASE_OWNED, t.p.has_bias = 0;
    t.ldx = lg_lora_ext_ld(t.K, p->rank), t.lddy = lg_lora_ext_ld(t.M, p->rank);
    t.tol = 1e-2; /* bf16/fp16 outputs; the fp32 dA and dB sums see the same rounding of S and dS */
    const int max = t.o->max_cands > 0 ? t.o->max_cands : 16;
    t.cand = calloc((size_t)(max > 8 ? max : 8) + 2, sizeof *t.cand);
    if (!t.cand)
        return lg_fail(LG_ERR_OOM, "tuner: out of memory");
    t.run = (struct lg_tuner_run){.o = t.o, .u = &t, .select = cb_select, .run = cb_run, .check = cb_check,
                                  .cand = t.cand, .csize = sizeof *t.cand};
    lg_lora_tune_key(ctx, p, n, &out->entry.key);
    enum lg_status st = setup(&t);
    if (st == LG_OK)
        st = descend(&t, out);
    if (st == LG_OK) /* the winner against the defaults, side by side: the entry's times, and the defaults
                      * when it does not win */
        st = lg_tuner_final(&t.run, &t.base, out);
    if (st == LG_OK)
        lg_lora_tiles_to_entry(&t.cand[0], &out->entry);
    teardown(&t);
    free(t.cand);
    return st == LG_OK ? LG_OK : lg_fail_wrap(st, "tuning lora %s at %lld tokens: ", out->entry.key.shape, (long long)n);
}
