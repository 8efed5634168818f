/* bench_mlora.c: FusedMultiLoRA forward+backward of one layer, side by side in one run (Llama-3.1-8B shapes,
 * 8192 tokens, r = 16, alpha = 32, p = 0.1, bf16):
 *   floor   the frozen GEMMs alone: Y = X·Wᵀ, dX = dY·W (cuBLASLt)
 *   loop    unfused LoRA, one adapter at a time as mLoRA runs it: one dropout pass over X, then per segment
 *           the skinny GEMMs (T = Xd·Aᵀ, Y += s·T·Bᵀ; dT = s·dY·B, dB = s·dYᵀ·T, dA = dTᵀ·Xd, dXd = dT·A),
 *           one masked dropout backward and one add into dX
 *   single  single-adapter FusedLoRA (lg_lora.h) over the same tokens: what one adapter costs
 *   (a)     lg_mlora with strategy (a), extended K;  (b) strategy (b), expand;  auto: the heuristic's pick
 * for the adapter mixes 4 equal segments, 4 uneven (3000/1500/2500/1192), 16 and 64 equal; then merged q/k/v
 * and gate/up (one lg_mlora with nmod = 3 / 2) against three (two) separate layers on the same input, with one
 * adapter (separate = single FusedLoRA layers) and with the 4 uneven adapters (separate = one-module lg_mlora
 * layers). Every mix is validated first ((a) and (b) against the loop: Y, dX, adapter 0's dA and dB), then
 * timed as the median of interleaved rounds; --breakdown adds forward / backward / GEMMs / LoRA kernels of
 * (a) and (b).
 *
 * usage: bench_mlora [--tokens N] [--reps N] [--only LAYER] [--mix NAME] [--breakdown] [--no-merged] */
#include "lg_gen.h"
#include "lg_gpu_util.h"
#include "lg_half.h"
#include "lg_lora.h"
#include "lg_mlora.h"
#include "lg_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define R 16
#define ALPHA 32.0f
#define P 0.1f
#define MAXAD 64

struct mix {
    const char *name;
    int nad;
    int64_t len[MAXAD];
};

struct shape {
    const char *name;
    int64_t K, M;
};

static const struct shape shapes[] = {{"q_proj", 4096, 4096},     {"k_proj", 4096, 1024},  {"v_proj", 4096, 1024},
                                      {"o_proj", 4096, 4096},     {"gate_proj", 4096, 14336},
                                      {"up_proj", 4096, 14336},   {"down_proj", 14336, 4096}};

struct peft_fns {
    const struct lg_kernel *dropout, *dropout_bwd, *axpy;
};

struct bench {
    lg_ctx_t *ctx;
    lg_blas_t *blas;
    struct peft_fns pf;
    int64_t n, K, MT;
    int nmod;
    int64_t M[3];
    const struct mix *mx;
    /* shared inputs: xc [n,K], dyc [n,MT], w [MT,K] (W of every module stacked) */
    CUdeviceptr xc, dyc, w;
    /* loop */
    CUdeviceptr a[MAXAD], b[MAXAD], da_l[MAXAD], db_l[MAXAD], yl, dxl, xd, mask, t1, dt, dxd;
    /* mlora */
    lg_mlora_t *ml;
    lg_mlora_segments_t *sg;
    CUdeviceptr xm, dym, ym, dxm;
    int64_t ldxm, lddym;
    enum lg_mlora_strategy force;
    /* single FusedLoRA */
    lg_lora_t *single;
    CUdeviceptr xs, dys, ys, dxs, das, dbs;
    unsigned th;
    float ks;
};

static void gemm(struct bench *B, int64_t m, int64_t n, int64_t k, int ta, int tb, CUdeviceptr a, int64_t lda,
                 CUdeviceptr b, int64_t ldb, CUdeviceptr c, int64_t ldc, float alpha, float beta)
{
    struct lg_gemm g = {.dtype = LG_BF16, .m = m, .n = n, .k = k, .trans_a = ta, .trans_b = tb, .a = (void *)a,
                        .lda = lda, .b = (void *)b, .ldb = ldb, .c = (void *)c, .ldc = ldc, .alpha = alpha,
                        .beta = beta};
    CHECK(lg_blas_gemm(B->blas, &g, 0));
}

static void launch1d(const struct lg_kernel *k, int64_t items, void **params)
{
    unsigned blocks = (unsigned)((items + k->threads - 1) / k->threads);
    CU_CHECK(cuLaunchKernel(k->fn, blocks, 1, 1, (unsigned)k->threads, 1, 1, k->smem, 0, params, NULL));
}

/* ---- the variants ---- */

static void run_floor(void *arg)
{
    struct bench *B = arg;
    gemm(B, B->n, B->MT, B->K, 0, 1, B->xc, B->K, B->w, B->K, B->yl, B->MT, 1.f, 0.f);
    gemm(B, B->n, B->K, B->MT, 0, 0, B->dyc, B->MT, B->w, B->K, B->dxl, B->K, 1.f, 0.f);
}

static void run_loop(void *arg)
{
    struct bench *B = arg;
    const int64_t n = B->n, K = B->K, M = B->MT;
    const size_t e = 2;
    long long nk = n * K;
    unsigned long long seed = 1;
    unsigned layer = 0;
    const float s = ALPHA / R;
    gemm(B, n, M, K, 0, 1, B->xc, K, B->w, K, B->yl, M, 1.f, 0.f);
    void *pd[] = {&B->xc, &B->xd, &B->mask, &nk, &seed, &layer, &B->th, &B->ks};
    launch1d(B->pf.dropout, nk / 8, pd);
    gemm(B, n, K, M, 0, 0, B->dyc, M, B->w, K, B->dxl, K, 1.f, 0.f);
    int64_t t0 = 0;
    for (int i = 0; i < B->mx->nad; i++) {
        const int64_t len = B->mx->len[i];
        if (!len)
            continue;
        CUdeviceptr xd = B->xd + (CUdeviceptr)(t0 * K * e), t1 = B->t1 + (CUdeviceptr)(t0 * R * e);
        CUdeviceptr y = B->yl + (CUdeviceptr)(t0 * M * e), dy = B->dyc + (CUdeviceptr)(t0 * M * e);
        CUdeviceptr dt = B->dt + (CUdeviceptr)(t0 * R * e), dxd = B->dxd + (CUdeviceptr)(t0 * K * e);
        gemm(B, len, R, K, 0, 1, xd, K, B->a[i], K, t1, R, 1.f, 0.f);
        gemm(B, len, M, R, 0, 1, t1, R, B->b[i], R, y, M, s, 1.f);
        gemm(B, len, R, M, 0, 0, dy, M, B->b[i], R, dt, R, s, 0.f);
        gemm(B, M, R, len, 1, 0, dy, M, t1, R, B->db_l[i], R, s, 0.f);
        gemm(B, R, K, len, 1, 0, dt, R, xd, K, B->da_l[i], K, 1.f, 0.f);
        gemm(B, len, K, R, 0, 0, dt, R, B->a[i], K, dxd, K, 1.f, 0.f);
        t0 += len;
    }
    void *pb[] = {&B->dxd, &B->mask, &B->dxd, &nk, &B->ks};
    launch1d(B->pf.dropout_bwd, nk / 8, pb);
    float one = 1.f;
    void *px[] = {&B->dxl, &B->dxd, &one, &nk};
    launch1d(B->pf.axpy, nk / 8, px);
}

static void run_single(void *arg)
{
    struct bench *B = arg;
    const int64_t ldx = lg_lora_ext_ld(B->K, R), lddy = lg_lora_ext_ld(B->MT, R);
    struct lg_lora_fwd f = {.n = B->n, .x = B->xs, .ldx = ldx, .y = B->ys, .ldy = B->MT, .seed = 1};
    CHECK(lg_lora_forward(B->single, &f, 0));
    struct lg_lora_bwd b = {.n = B->n, .x = B->xs, .ldx = ldx, .dy = B->dys, .lddy = lddy, .dx = B->dxs,
                            .lddx = B->K, .da = B->das, .db = B->dbs, .seed = 1};
    CHECK(lg_lora_backward(B->single, &b, 0));
}

static void mlora_fwd(struct bench *B, enum lg_mlora_strategy st)
{
    struct lg_mlora_fwd f = {.n = B->n, .seg = B->sg, .x = B->xm, .ldx = B->ldxm, .y = B->ym, .ldy = B->MT,
                             .seed = 1, .strategy = st};
    CHECK(lg_mlora_forward(B->ml, &f, 0));
}

static void mlora_bwd(struct bench *B, enum lg_mlora_strategy st)
{
    struct lg_mlora_bwd b = {.n = B->n, .seg = B->sg, .x = B->xm, .ldx = B->ldxm, .dy = B->dym, .lddy = B->lddym,
                             .dx = B->dxm, .lddx = B->K, .seed = 1, .strategy = st};
    CHECK(lg_mlora_backward(B->ml, &b, 0));
}

static void run_a(void *arg) { mlora_fwd(arg, LG_MLORA_EXT_K), mlora_bwd(arg, LG_MLORA_EXT_K); }
static void run_b(void *arg) { mlora_fwd(arg, LG_MLORA_EXPAND), mlora_bwd(arg, LG_MLORA_EXPAND); }
static void run_auto(void *arg) { mlora_fwd(arg, LG_MLORA_AUTO), mlora_bwd(arg, LG_MLORA_AUTO); }
static void run_fwd_forced(void *arg) { mlora_fwd(arg, ((struct bench *)arg)->force); }
static void run_bwd_forced(void *arg) { mlora_bwd(arg, ((struct bench *)arg)->force); }
/* the GEMMs inside lg_mlora alone: the forward GEMM (k = K + the present columns for (a)) and dX = dY·W */
static void run_gemms_forced(void *arg)
{
    struct bench *B = arg;
    const int ext = B->force == LG_MLORA_EXT_K;
    int64_t ldw;
    CUdeviceptr w = lg_mlora_weights(B->ml, &ldw);
    gemm(B, B->n, B->MT, B->K + (ext ? lg_mlora_ext_cols(B->ml) : 0), 0, 1, B->xm, B->ldxm, w, ldw, B->ym, B->MT,
         1.f, 0.f);
    gemm(B, B->n, B->K, B->MT, 0, 0, B->dym, B->lddym, w, ldw, B->dxm, B->K, 1.f, 0.f);
}

/* ---- setup ---- */

static CUdeviceptr dev_random(int64_t rows, int64_t cols, int64_t ld, float scale, uint64_t seed, uint16_t **host)
{
    CUdeviceptr p = lg_dev_alloc((size_t)(rows * ld) * 2);
    float *h = malloc(sizeof(float) * (size_t)(rows * cols));
    lg_test_fill(h, (size_t)(rows * cols), seed, scale);
    lg_dev_upload(p, ld, h, rows, cols, LG_BF16);
    if (host) {
        *host = malloc(2 * (size_t)(rows * cols));
        for (int64_t i = 0; i < rows * cols; i++)
            (*host)[i] = lg_f32_to_half(LG_BF16, h[i]);
    }
    free(h);
    return p;
}

static void copy2d(CUdeviceptr dst, int64_t ldd, CUdeviceptr src, int64_t lds, int64_t rows, int64_t cols)
{
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = c.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    c.srcDevice = src, c.srcPitch = (size_t)lds * 2, c.dstDevice = dst, c.dstPitch = (size_t)ldd * 2;
    c.WidthInBytes = (size_t)cols * 2, c.Height = (size_t)rows;
    CU_CHECK(cuMemcpy2D(&c));
}

/* One layer of nmod modules (M[m]) for mix mx: every variant's buffers and weights from the same values. */
static void setup(struct bench *B, int64_t K, int nmod, const int64_t *M, const struct mix *mx, int want_single)
{
    const int64_t n = B->n;
    B->K = K, B->nmod = nmod, B->mx = mx, B->MT = 0;
    for (int m = 0; m < nmod; m++)
        B->M[m] = M[m], B->MT += M[m];
    B->th = (unsigned)lround(P * 65536.0);
    B->ks = 65536.0f / (float)(65536 - B->th);
    const int64_t MT = B->MT;
    uint16_t *hw, *ha[MAXAD], *hb[MAXAD][3];
    B->w = dev_random(MT, K, K, 1.0f / sqrtf((float)K), 11, &hw);
    B->xc = dev_random(n, K, K, 1.0f, 14, NULL);
    B->dyc = dev_random(n, MT, MT, 1.0f, 15, NULL);
    struct lg_mlora_slot_params sp[MAXAD * 3];
    for (int i = 0; i < mx->nad; i++) {
        B->a[i] = dev_random(R, K, K, 1.0f / sqrtf((float)K), 20 + i, &ha[i]);
        B->b[i] = dev_random(MT, R, R, 0.5f, 100 + i, NULL);
        for (int m = 0; m < nmod; m++) {
            hb[i][m] = malloc(2 * (size_t)(M[m] * R));
            int64_t mo = 0;
            for (int q = 0; q < m; q++)
                mo += M[q];
            CU_CHECK(cuMemcpyDtoH(hb[i][m], B->b[i] + (CUdeviceptr)(mo * R * 2), 2 * (size_t)(M[m] * R)));
            sp[i * nmod + m] = (struct lg_mlora_slot_params){.rank = R, .alpha = ALPHA, .dropout = P};
        }
        B->da_l[i] = lg_dev_alloc((size_t)(R * K) * 2), B->db_l[i] = lg_dev_alloc((size_t)(MT * R) * 2);
    }
    /* the loop's per-segment GEMMs use one A per adapter for every module (the merged rows of B are stacked):
     * exact for nmod = 1, and the same work for merged layers */
    struct lg_mlora_params mp = {.in_features = K, .nmod = nmod, .nadapters = mx->nad, .slots = sp,
                                 .dtype = LG_BF16, .layer_id = 0};
    for (int m = 0; m < nmod; m++)
        mp.out_features[m] = M[m];
    CHECK(lg_mlora_init(B->ctx, &mp, &B->ml));
    int64_t mo = 0;
    for (int m = 0; m < nmod; m++) {
        CHECK(lg_mlora_set_weights(B->ml, m, hw + mo * K, NULL));
        for (int i = 0; i < mx->nad; i++)
            CHECK(lg_mlora_set_adapter(B->ml, i, m, ha[i], hb[i][m]));
        mo += M[m];
    }
    struct lg_mlora_seg seg[MAXAD];
    int64_t at = 0;
    for (int i = 0; i < mx->nad; i++)
        seg[i] = (struct lg_mlora_seg){.adapter = i, .start = at, .len = mx->len[i]}, at += mx->len[i];
    CHECK(lg_mlora_segments_init(B->ctx, MAXAD, &B->sg));
    CHECK(lg_mlora_segments_set(B->sg, n, mx->nad, seg, mx->nad, 0));
    B->ldxm = lg_mlora_ext_ld(B->ml), B->lddym = lg_lora_ext_ld(MT, lg_mlora_compact_cols(B->ml));
    B->xm = lg_dev_alloc((size_t)(n * B->ldxm) * 2), B->dym = lg_dev_alloc((size_t)(n * B->lddym) * 2);
    copy2d(B->xm, B->ldxm, B->xc, K, n, K), copy2d(B->dym, B->lddym, B->dyc, MT, n, MT);
    B->ym = lg_dev_alloc((size_t)(n * MT) * 2), B->dxm = lg_dev_alloc((size_t)(n * K) * 2);
    B->yl = lg_dev_alloc((size_t)(n * MT) * 2), B->dxl = lg_dev_alloc((size_t)(n * K) * 2);
    B->xd = lg_dev_alloc((size_t)(n * K) * 2), B->mask = lg_dev_alloc((size_t)(n * K));
    B->t1 = lg_dev_alloc((size_t)(n * R) * 2), B->dt = lg_dev_alloc((size_t)(n * R) * 2);
    B->dxd = lg_dev_alloc((size_t)(n * K) * 2);
    if (want_single) {
        struct lg_lora_params lp = {.in_features = K, .out_features = MT, .rank = R, .alpha = ALPHA, .dropout = P,
                                    .dtype = LG_BF16, .layer_id = 0};
        CHECK(lg_lora_init(B->ctx, &lp, &B->single));
        CHECK(lg_lora_set_weights(B->single, hw, ha[0], NULL, NULL));
        const int64_t ldx = lg_lora_ext_ld(K, R), lddy = lg_lora_ext_ld(MT, R);
        B->xs = lg_dev_alloc((size_t)(n * ldx) * 2), B->dys = lg_dev_alloc((size_t)(n * lddy) * 2);
        copy2d(B->xs, ldx, B->xc, K, n, K), copy2d(B->dys, lddy, B->dyc, MT, n, MT);
        B->ys = lg_dev_alloc((size_t)(n * MT) * 2), B->dxs = lg_dev_alloc((size_t)(n * K) * 2);
        B->das = lg_dev_alloc((size_t)(R * K) * 4), B->dbs = lg_dev_alloc((size_t)(MT * R) * 4);
    }
    free(hw);
    for (int i = 0; i < mx->nad; i++) {
        free(ha[i]);
        for (int m = 0; m < nmod; m++)
            free(hb[i][m]);
    }
}

static void teardown(struct bench *B)
{
    CUdeviceptr bufs[] = {B->xc, B->dyc, B->w, B->yl, B->dxl, B->xd, B->mask, B->t1, B->dt, B->dxd, B->xm, B->dym,
                          B->ym, B->dxm, B->xs, B->dys, B->ys, B->dxs, B->das, B->dbs};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i])
            cuMemFree(bufs[i]);
    for (int i = 0; i < B->mx->nad; i++)
        cuMemFree(B->a[i]), cuMemFree(B->b[i]), cuMemFree(B->da_l[i]), cuMemFree(B->db_l[i]);
    lg_mlora_free(B->ml);
    lg_mlora_segments_free(B->sg);
    lg_lora_free(B->single);
    lg_ctx_t *ctx = B->ctx;
    lg_blas_t *blas = B->blas;
    struct peft_fns pf = B->pf;
    int64_t n = B->n;
    memset(B, 0, sizeof *B);
    B->ctx = ctx, B->blas = blas, B->pf = pf, B->n = n;
}

static double rel_err_dev(CUdeviceptr a, enum lg_dtype ta, CUdeviceptr b, enum lg_dtype tb, int64_t count)
{
    float *x = malloc(sizeof(float) * (size_t)count), *y = malloc(sizeof(float) * (size_t)count);
    lg_dev_download(x, a, count, 1, count, ta);
    lg_dev_download(y, b, count, 1, count, tb);
    double *yd = malloc(sizeof(double) * (size_t)count);
    for (int64_t i = 0; i < count; i++)
        yd[i] = y[i];
    double e = lg_test_rel_err(x, yd, (size_t)count);
    free(x), free(y), free(yd);
    return e;
}

/* (a) and (b) against the loop on the same masks (the loop's dropout pass is over the whole X with the layer's
 * counter, as the fused kernels draw it). Only for one module: the loop shares A across merged modules. */
static int validate(struct bench *B, const char *what)
{
    int ok = 1;
    for (int v = 0; v < 2; v++) {
        if (v == 0) run_a(B); else run_b(B);
        run_loop(B);
        CU_CHECK(cuCtxSynchronize());
        CUdeviceptr da, db;
        CHECK(lg_mlora_grads(B->ml, 0, 0, &da, &db));
        double ey = rel_err_dev(B->ym, LG_BF16, B->yl, LG_BF16, B->n * B->MT);
        double ex = rel_err_dev(B->dxm, LG_BF16, B->dxl, LG_BF16, B->n * B->K);
        double ea = rel_err_dev(da, LG_FP32, B->da_l[0], LG_BF16, R * B->K);
        double eb = rel_err_dev(db, LG_FP32, B->db_l[0], LG_BF16, B->MT * R);
        int good = ey < 1e-2 && ex < 1e-2 && ea < 2e-2 && eb < 2e-2;
        printf("  validate %-10s %-8s strategy %s vs loop: Y %.2e dX %.2e dA %.2e dB %.2e %s\n", what, B->mx->name,
               v ? "(b)" : "(a)", ey, ex, ea, eb, good ? "ok" : "MISMATCH");
        ok &= good;
    }
    return ok;
}

static double geomean(const double *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += log(v[i]);
    return n ? exp(s / n) : 0;
}


/* ---- merged projections against separate layers ---- */

struct sep {
    int nmod;
    lg_lora_t *l[3];    /* one adapter: single-adapter FusedLoRA per module */
    lg_mlora_t *ml[3];  /* four adapters: one-module lg_mlora per module */
    CUdeviceptr x, dy[3], y[3], dx[3], da, db;
    int64_t ldx, lddy[3];
    struct bench *B;
};

static void run_sep(void *arg)
{
    struct sep *S = arg;
    struct bench *B = S->B;
    for (int m = 0; m < S->nmod; m++) {
        if (S->l[m]) {
            struct lg_lora_fwd f = {.n = B->n, .x = S->x, .ldx = S->ldx, .y = S->y[m], .ldy = B->M[m], .seed = 1};
            CHECK(lg_lora_forward(S->l[m], &f, 0));
            struct lg_lora_bwd b = {.n = B->n, .x = S->x, .ldx = S->ldx, .dy = S->dy[m], .lddy = S->lddy[m],
                                    .dx = S->dx[m], .lddx = B->K, .da = S->da, .db = S->db, .seed = 1};
            CHECK(lg_lora_backward(S->l[m], &b, 0));
        } else {
            struct lg_mlora_fwd f = {.n = B->n, .seg = B->sg, .x = S->x, .ldx = S->ldx, .y = S->y[m], .ldy = B->M[m],
                                     .seed = 1};
            CHECK(lg_mlora_forward(S->ml[m], &f, 0));
            struct lg_mlora_bwd b = {.n = B->n, .seg = B->sg, .x = S->x, .ldx = S->ldx, .dy = S->dy[m],
                                     .lddy = S->lddy[m], .dx = S->dx[m], .lddx = B->K, .seed = 1};
            CHECK(lg_mlora_backward(S->ml[m], &b, 0));
        }
    }
}

/* the frozen GEMMs of the separate layers: one Y and one dX GEMM per module */
static void run_floor_sep(void *arg)
{
    struct sep *S = arg;
    struct bench *B = S->B;
    int64_t mo = 0;
    for (int m = 0; m < S->nmod; m++) {
        CUdeviceptr w = B->w + (CUdeviceptr)(mo * B->K * 2);
        gemm(B, B->n, B->M[m], B->K, 0, 1, B->xc, B->K, w, B->K, S->y[m], B->M[m], 1.f, 0.f);
        gemm(B, B->n, B->K, B->M[m], 0, 0, B->dyc + (CUdeviceptr)(mo * 2), B->MT, w, B->K, S->dx[m], B->K, 1.f, 0.f);
        mo += B->M[m];
    }
}

static void sep_setup(struct sep *S, struct bench *B)
{
    memset(S, 0, sizeof *S);
    S->B = B, S->nmod = B->nmod;
    const int one = B->mx->nad == 1;
    struct lg_mlora_slot_params sp[MAXAD];
    for (int i = 0; i < B->mx->nad; i++)
        sp[i] = (struct lg_mlora_slot_params){.rank = R, .alpha = ALPHA, .dropout = P};
    S->ldx = one ? lg_lora_ext_ld(B->K, R) : 0;
    for (int m = 0; m < S->nmod; m++) {
        if (one) {
            struct lg_lora_params lp = {.in_features = B->K, .out_features = B->M[m], .rank = R, .alpha = ALPHA,
                                        .dropout = P, .dtype = LG_BF16, .layer_id = (uint32_t)m};
            CHECK(lg_lora_init(B->ctx, &lp, &S->l[m]));
            S->lddy[m] = lg_lora_ext_ld(B->M[m], R);
        } else {
            struct lg_mlora_params mp = {.in_features = B->K, .nmod = 1, .out_features = {B->M[m]},
                                         .nadapters = B->mx->nad, .slots = sp, .dtype = LG_BF16, .layer_id = (uint32_t)m};
            CHECK(lg_mlora_init(B->ctx, &mp, &S->ml[m]));
            S->ldx = lg_mlora_ext_ld(S->ml[m]);
            S->lddy[m] = lg_lora_ext_ld(B->M[m], lg_mlora_compact_cols(S->ml[m]));
        }
        S->dy[m] = lg_dev_alloc((size_t)(B->n * S->lddy[m]) * 2);
        S->y[m] = lg_dev_alloc((size_t)(B->n * B->M[m]) * 2), S->dx[m] = lg_dev_alloc((size_t)(B->n * B->K) * 2);
        CU_CHECK(cuMemsetD8(S->dy[m], 0, (size_t)(B->n * S->lddy[m]) * 2));
    }
    S->x = lg_dev_alloc((size_t)(B->n * S->ldx) * 2);
    copy2d(S->x, S->ldx, B->xc, B->K, B->n, B->K);
    int64_t mo = 0;
    for (int m = 0; m < S->nmod; m++)
        copy2d(S->dy[m], S->lddy[m], B->dyc + (CUdeviceptr)(mo * 2), B->MT, B->n, B->M[m]), mo += B->M[m];
    S->da = lg_dev_alloc((size_t)(R * B->K) * 4), S->db = lg_dev_alloc((size_t)(14336 * R) * 4);
}

static void sep_free(struct sep *S)
{
    for (int m = 0; m < S->nmod; m++) {
        lg_lora_free(S->l[m]), lg_mlora_free(S->ml[m]);
        cuMemFree(S->dy[m]), cuMemFree(S->y[m]), cuMemFree(S->dx[m]);
    }
    cuMemFree(S->x), cuMemFree(S->da), cuMemFree(S->db);
}

/* ---- main ---- */

struct opts {
    int tokens, reps, breakdown, no_merged;
    const char *only, *mix;
};

static void parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.tokens = 8192, .reps = 20};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            o->tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            o->reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            o->only = argv[++i];
        else if (!strcmp(argv[i], "--mix") && i + 1 < argc)
            o->mix = argv[++i];
        else if (!strcmp(argv[i], "--breakdown"))
            o->breakdown = 1;
        else if (!strcmp(argv[i], "--no-merged"))
            o->no_merged = 1;
        else {
            fprintf(stderr, "usage: bench_mlora [--tokens N] [--reps N] [--only LAYER] [--mix 4eq|4uneven|16|64] "
                            "[--breakdown] [--no-merged]\n");
            exit(2);
        }
    }
}

/* 4 equal, 4 uneven (3000/1500/2500/1192 at 8192 tokens, scaled otherwise), 16 and 64 equal. */
static void make_mixes(int64_t n, struct mix mx[4])
{
    static const int64_t uneven[4] = {3000, 1500, 2500, 1192};
    const int counts[4] = {4, 4, 16, 64};
    static const char *names[4] = {"4eq", "4uneven", "16", "64"};
    for (int k = 0; k < 4; k++) {
        memset(&mx[k], 0, sizeof mx[k]);
        mx[k].name = names[k], mx[k].nad = counts[k];
        int64_t left = n;
        for (int i = 0; i < counts[k]; i++) {
            int64_t len = k == 1 ? uneven[i] * n / 8192 : n / counts[k];
            if (i == counts[k] - 1)
                len = left;
            mx[k].len[i] = len, left -= len;
        }
    }
}

static void print_breakdown(struct bench *B, const char *layer, int reps)
{
    static const char *sname[2] = {"(a)", "(b)"};
    for (int v = 0; v < 2; v++) {
        B->force = v ? LG_MLORA_EXPAND : LG_MLORA_EXT_K;
        void (*const fns[])(void *) = {run_fwd_forced, run_bwd_forced, run_gemms_forced, run_floor};
        double t[4];
        lg_time_interleaved(fns, B, 4, 0, 2, reps, t);
        printf("  breakdown %-10s %-8s %s fwd %.3f bwd %.3f | its GEMMs %.3f, LoRA kernels %.3f ms (floor %.3f)\n",
               layer, B->mx->name, sname[v], t[0], t[1], t[2], t[0] + t[1] - t[2], t[3]);
    }
}

static int bench_mixes(struct bench *B, const struct opts *o, char *table, size_t cap, size_t *tl)
{
    struct mix mx[4];
    make_mixes(B->n, mx);
    int bad = 0;
    for (int k = 0; k < 4; k++) {
        if (o->mix && strcmp(o->mix, mx[k].name))
            continue;
        double r_single[8], r_auto[8], r_a[8], r_b[8], r_loop[8], r_as[8];
        int cnt = 0;
        *tl += (size_t)snprintf(table + *tl, cap - *tl,
                                "\nmix %-7s (%d adapters) floor   loop single   (a)    (b)   auto pick | loop/fl single/fl "
                                "auto/fl auto/single (a)/single (b)/single\n", mx[k].name, mx[k].nad);
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            if (o->only && strcmp(o->only, shapes[si].name))
                continue;
            setup(B, shapes[si].K, 1, &shapes[si].M, &mx[k], 1);
            bad |= !validate(B, shapes[si].name);
            void (*const fns[])(void *) = {run_floor, run_loop, run_single, run_a, run_b, run_auto};
            double t[6];
            lg_time_interleaved(fns, B, 6, 0, 3, o->reps, t);
            const int pick = lg_mlora_pick(B->ml, B->sg, B->ldxm) == LG_MLORA_EXT_K;
            *tl += (size_t)snprintf(table + *tl, cap - *tl,
                                    "%-10s %17.3f %6.3f %6.3f %6.3f %6.3f %6.3f  %s  | %7.3f %9.3f %7.3f %11.3f %10.3f %10.3f\n",
                                    shapes[si].name, t[0], t[1], t[2], t[3], t[4], t[5], pick ? "(a)" : "(b)",
                                    t[1] / t[0], t[2] / t[0], t[5] / t[0], t[5] / t[2], t[3] / t[2], t[4] / t[2]);
            r_loop[cnt] = t[1] / t[0], r_single[cnt] = t[2] / t[0], r_auto[cnt] = t[5] / t[0];
            r_as[cnt] = t[5] / t[2], r_a[cnt] = t[3] / t[2], r_b[cnt] = t[4] / t[2];
            cnt++;
            if (o->breakdown)
                print_breakdown(B, shapes[si].name, o->reps);
            teardown(B);
        }
        *tl += (size_t)snprintf(table + *tl, cap - *tl,
                                "%-10s %52s | %7.3f %9.3f %7.3f %11.3f %10.3f %10.3f\n", "geomean", "",
                                geomean(r_loop, cnt), geomean(r_single, cnt), geomean(r_auto, cnt), geomean(r_as, cnt),
                                geomean(r_a, cnt), geomean(r_b, cnt));
    }
    return bad;
}

static void bench_merged(struct bench *B, const struct opts *o, char *table, size_t cap, size_t *tl)
{
    struct mix mx[4];
    make_mixes(B->n, mx);
    struct mix one = {.name = "1", .nad = 1, .len = {B->n}};
    const struct {
        const char *name;
        int nmod;
        int64_t M[3];
    } groups[] = {{"q/k/v", 3, {4096, 1024, 1024}}, {"gate/up", 2, {14336, 14336}}};
    *tl += (size_t)snprintf(table + *tl, cap - *tl,
                            "\nmerged      adapters  floor(merged) floor(sep) merged   sep | merged/floor sep/floor "
                            "merged/sep\n");
    for (int gi = 0; gi < 2; gi++)
        for (int k = 0; k < 2; k++) {
            const struct mix *m = k ? &mx[1] : &one;
            setup(B, 4096, groups[gi].nmod, groups[gi].M, m, 0);
            struct sep S;
            sep_setup(&S, B);
            void (*const fns[])(void *) = {run_floor, run_floor_sep, run_auto, run_sep};
            void *args[] = {B, &S, B, &S};
            (void)args;
            /* the four variants take different argument blocks: time them in two interleaved pairs */
            void (*const f1[])(void *) = {fns[0], fns[2]};
            void (*const f2[])(void *) = {fns[1], fns[3]};
            double t1[2], t2[2];
            lg_time_interleaved(f1, B, 2, 0, 3, o->reps, t1);
            lg_time_interleaved(f2, &S, 2, 0, 3, o->reps, t2);
            *tl += (size_t)snprintf(table + *tl, cap - *tl, "%-10s %-9s %13.3f %10.3f %6.3f %5.3f | %12.3f %9.3f %10.3f\n",
                                    groups[gi].name, m->name, t1[0], t2[0], t1[1], t2[1], t1[1] / t1[0], t2[1] / t1[0],
                                    t1[1] / t2[1]);
            if (o->breakdown)
                print_breakdown(B, groups[gi].name, o->reps);
            sep_free(&S);
            teardown(B);
        }
}

int main(int argc, char **argv)
{
    struct opts o;
    parse(argc, argv, &o);
    lg_test_require_gpu();
    struct bench B;
    memset(&B, 0, sizeof B);
    struct lg_ctx_params cp = {.device = 0};
    CHECK(lg_ctx_init(&cp, &B.ctx));
    B.blas = lg_ctx_blas(B.ctx);
    B.n = o.tokens;
    struct {
        enum lg_kernel_op op;
        const struct lg_kernel **k;
    } want[] = {{LG_OP_PEFT_DROPOUT, &B.pf.dropout}, {LG_OP_PEFT_DROPOUT_BWD, &B.pf.dropout_bwd},
                {LG_OP_PEFT_AXPY, &B.pf.axpy}};
    for (int i = 0; i < 3; i++) {
        struct lg_kernel_cfg c = {.op = want[i].op, .dtype = LG_BF16};
        CHECK(lg_ctx_kernel(B.ctx, &c, want[i].k));
    }
    printf("bench_mlora: Llama-3.1-8B shapes on %s (%d SMs), %lld tokens, r=%d, alpha=%g, p=%g, bf16\n",
           lg_ctx_device_name(B.ctx), lg_ctx_sm_count(B.ctx), (long long)B.n, R, ALPHA, P);
    static char table[16384];
    size_t tl = 0;
    int bad = bench_mixes(&B, &o, table, sizeof table, &tl);
    if (!o.no_merged && !o.only)
        bench_merged(&B, &o, table, sizeof table, &tl);
    printf("%s", table);
    printf("(ms, median of %d interleaved rounds; floor = frozen GEMMs; single = one-adapter FusedLoRA on the same "
           "tokens; targets: 4 adapters auto/single <= 1.05, 16 <= 1.10; merged q/k/v (1 adapter) merged/floor <= "
           "1.10, gate/up <= 1.05)\n", o.reps);
    lg_ctx_free(B.ctx);
    return bad ? 1 : 0;
}
