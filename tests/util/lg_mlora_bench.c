/* lg_mlora_bench.c: the layer, the variants, setup and validation of bench_mlora (lg_mlora_bench.h). */
#include "lg_mlora_bench.h"
#include "lg_half.h"
#include "lg_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mb_gemm(struct bench *B, int64_t m, int64_t n, int64_t k, int ta, int tb, CUdeviceptr a, int64_t lda,
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

void mb_run_floor(void *arg)
{
    struct bench *B = arg;
    mb_gemm(B, B->n, B->MT, B->K, 0, 1, B->xc, B->K, B->w, B->K, B->yl, B->MT, 1.f, 0.f);
    mb_gemm(B, B->n, B->K, B->MT, 0, 0, B->dyc, B->MT, B->w, B->K, B->dxl, B->K, 1.f, 0.f);
}

void mb_run_loop(void *arg)
{
    struct bench *B = arg;
    const int64_t n = B->n, K = B->K, M = B->MT;
    const size_t e = 2;
    long long nk = n * K;
    unsigned long long seed = 1;
    unsigned layer = 0;
    const float s = ALPHA / R;
    mb_gemm(B, n, M, K, 0, 1, B->xc, K, B->w, K, B->yl, M, 1.f, 0.f);
    void *pd[] = {&B->xc, &B->xd, &B->mask, &nk, &seed, &layer, &B->th, &B->ks};
    launch1d(B->pf.dropout, nk / 8, pd);
    mb_gemm(B, n, K, M, 0, 0, B->dyc, M, B->w, K, B->dxl, K, 1.f, 0.f);
    int64_t t0 = 0;
    for (int i = 0; i < B->mx->nad; i++) {
        const int64_t len = B->mx->len[i];
        if (!len)
            continue;
        CUdeviceptr xd = B->xd + (CUdeviceptr)(t0 * K * e), t1 = B->t1 + (CUdeviceptr)(t0 * R * e);
        CUdeviceptr y = B->yl + (CUdeviceptr)(t0 * M * e), dy = B->dyc + (CUdeviceptr)(t0 * M * e);
        CUdeviceptr dt = B->dt + (CUdeviceptr)(t0 * R * e), dxd = B->dxd + (CUdeviceptr)(t0 * K * e);
        mb_gemm(B, len, R, K, 0, 1, xd, K, B->a[i], K, t1, R, 1.f, 0.f);
        mb_gemm(B, len, M, R, 0, 1, t1, R, B->b[i], R, y, M, s, 1.f);
        mb_gemm(B, len, R, M, 0, 0, dy, M, B->b[i], R, dt, R, s, 0.f);
        mb_gemm(B, M, R, len, 1, 0, dy, M, t1, R, B->db_l[i], R, s, 0.f);
        mb_gemm(B, R, K, len, 1, 0, dt, R, xd, K, B->da_l[i], K, 1.f, 0.f);
        mb_gemm(B, len, K, R, 0, 0, dt, R, B->a[i], K, dxd, K, 1.f, 0.f);
        t0 += len;
    }
    void *pb[] = {&B->dxd, &B->mask, &B->dxd, &nk, &B->ks};
    launch1d(B->pf.dropout_bwd, nk / 8, pb);
    float one = 1.f;
    void *px[] = {&B->dxl, &B->dxd, &one, &nk};
    launch1d(B->pf.axpy, nk / 8, px);
}

void mb_run_single(void *arg)
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

void mb_run_a(void *arg) { mlora_fwd(arg, LG_MLORA_EXT_K), mlora_bwd(arg, LG_MLORA_EXT_K); }
void mb_run_b(void *arg) { mlora_fwd(arg, LG_MLORA_EXPAND), mlora_bwd(arg, LG_MLORA_EXPAND); }
void mb_run_auto(void *arg) { mlora_fwd(arg, LG_MLORA_AUTO), mlora_bwd(arg, LG_MLORA_AUTO); }
void mb_run_fwd_forced(void *arg) { mlora_fwd(arg, ((struct bench *)arg)->force); }
void mb_run_bwd_forced(void *arg) { mlora_bwd(arg, ((struct bench *)arg)->force); }
/* the GEMMs inside lg_mlora alone: the forward GEMM (k = K + the present columns for (a)) and dX = dY·W */
void mb_run_gemms_forced(void *arg)
{
    struct bench *B = arg;
    const int ext = B->force == LG_MLORA_EXT_K;
    int64_t ldw;
    CUdeviceptr w = lg_mlora_weights(B->ml, &ldw);
    mb_gemm(B, B->n, B->MT, B->K + (ext ? lg_mlora_ext_cols(B->ml) : 0), 0, 1, B->xm, B->ldxm, w, ldw, B->ym, B->MT,
         1.f, 0.f);
    mb_gemm(B, B->n, B->K, B->MT, 0, 0, B->dym, B->lddym, w, ldw, B->dxm, B->K, 1.f, 0.f);
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

void mb_copy2d(CUdeviceptr dst, int64_t ldd, CUdeviceptr src, int64_t lds, int64_t rows, int64_t cols)
{
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = c.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    c.srcDevice = src, c.srcPitch = (size_t)lds * 2, c.dstDevice = dst, c.dstPitch = (size_t)ldd * 2;
    c.WidthInBytes = (size_t)cols * 2, c.Height = (size_t)rows;
    CU_CHECK(cuMemcpy2D(&c));
}

/* One layer of nmod modules (M[m]) for mix mx: every variant's buffers and weights from the same values. */
void mb_setup(struct bench *B, int64_t K, int nmod, const int64_t *M, const struct mix *mx, int want_single)
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
    mb_copy2d(B->xm, B->ldxm, B->xc, K, n, K), mb_copy2d(B->dym, B->lddym, B->dyc, MT, n, MT);
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
        mb_copy2d(B->xs, ldx, B->xc, K, n, K), mb_copy2d(B->dys, lddy, B->dyc, MT, n, MT);
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

void mb_teardown(struct bench *B)
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
int mb_validate(struct bench *B, const char *what)
{
    int ok = 1;
    for (int v = 0; v < 2; v++) {
        if (v == 0) mb_run_a(B); else mb_run_b(B);
        mb_run_loop(B);
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

double mb_geomean(const double *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += log(v[i]);
    return n ? exp(s / n) : 0;
}


