/* test_decoder_ops_gpu_norm.c: the norm family, the decoder ops (lg_decoder_ops.h) on the GPU against the CPU reference
 * (lg_ref_ops.h, lg_ref.h) and FusedLoRA's own kernels, as a table of cases
 * in the style of ggml's test-backend-ops:
 *   norm      fused add + RMSNorm forward (plain, with S of 1-3 readers: S bit for bit FusedLoRA's down kernel),
 *             backward (plain, accumulating, with the masked dX correction of 1-3 readers), odd token counts
 *   place     the dX correction folded into the norm backward vs done by FusedLoRA's dA pass: they agree
 * Fresh seeded inputs (the seed is printed), every output poisoned with NaN first and every element checked (NaN
 * never passes), dtype-aware tolerances; one PASS/FAIL line per output with its worst error and, on failure, the
 * first mismatch and its index. Helpers and the loop test: tests/util/lg_dec_gpu_util.c. Exits 77 without a GPU. */
#include "lg_dec_gpu_util.h"
#include "lg_decoder_ops.h"
#include "lg_gpu_util.h"
#include "lg_half.h"
#include "lg_lora.h"
#include "lg_ref.h"
#include "lg_ref_ops.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- norm ---- */

static int run_norm_fwd(const struct tcase *c, uint64_t seed)
{
    const enum lg_dtype t = c->t;
    const size_t e = lg_dtype_size(t);
    const int64_t n = c->n, H = c->k, pad = (c->flags & F_PAD) ? 24 : 0;
    const int add = !(c->flags & F_NOADD), inplace = (c->flags & F_INPLACE) != 0;
    int rsum = 0;
    for (int i = 0; i < c->nlora; i++)
        rsum += c->rank[i];
    const int64_t ld = H + pad, ldh = inplace ? ld : H + 8, ldy = (c->nlora ? lg_lora_ext_ld(H, rsum) : H) + pad;
    float *x = dec_rnd((size_t)(n * H), seed + 10, 1.0f, t), *res = dec_rnd((size_t)(n * H), seed + 11, 1.0f, t);
    float *gam = dec_rnd((size_t)H, seed + 12, 0.25f, t);
    for (int64_t i = 0; i < H; i++)
        gam[i] = lg_round_to(t, 1.0f + gam[i]);
    lg_lora_t *L[3] = {0};
    float *ah[3] = {0};
    for (int i = 0; i < c->nlora; i++)
        L[i] = dec_reader_layer(c, i, H, seed + 100 * (uint64_t)(i + 1), &ah[i]);

    CUdeviceptr dx = add ? dec_upload_new(x, ld, n, H, t) : 0, dres = dec_upload_new(res, ld, n, H, t);
    CUdeviceptr dh = inplace ? dres : lg_dev_alloc((size_t)(n * ldh) * e), dy = lg_dev_alloc((size_t)(n * ldy) * e);
    CUdeviceptr drs = lg_dev_alloc((size_t)n * 4), dg = dec_upload_new(gam, H, 1, H, t);
    if (!inplace)
        lg_dev_poison(dh, (size_t)(n * ldh) * e);
    lg_dev_poison(dy, (size_t)(n * ldy) * e), lg_dev_poison(drs, (size_t)n * 4);

    struct lg_norm_params np = {.hidden = H, .eps = 1e-5f, .dtype = t, .nlora = c->nlora};
    for (int i = 0; i < c->nlora; i++)
        np.lora[i] = dec_reader(c, i);
    lg_norm_t *N;
    CHECK(lg_norm_init(dec_ctx, &np, &N));
    struct lg_norm_fwd f = {.n = n, .x = dx, .ldx = ld, .res = dres, .ldres = ld, .h = dh, .ldh = ldh, .gamma = dg,
                            .y = dy, .ldy = ldy, .rstd = drs, .with_s = c->nlora > 0, .seed = seed};
    int64_t col = H;
    for (int i = 0; i < c->nlora; i++) {
        f.lora[i] = (struct lg_lora_reader_io){.a = dec_reader_a(L[i], H, c->rank[i], t),
                                               .lda = lg_lora_ext_ld(H, c->rank[i]), .s_col = col};
        col += c->rank[i];
    }
    CHECK(lg_norm_forward(N, &f, 0));
    CU_CHECK(cuCtxSynchronize());

    int ok = 1;
    float *hg = dec_download(inplace ? dres : dh, inplace ? ld : ldh, n, H, t), *yg = dec_download(dy, ldy, n, H, t);
    float *rg = dec_download(drs, n, 1, n, LG_FP32);
    float *href = malloc(sizeof(float) * (size_t)(n * H)), *yref = malloc(sizeof(float) * (size_t)(n * H));
    float *rref = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n * H; i++)
        href[i] = add ? lg_round_to(t, x[i] + res[i]) : res[i];
    ok &= dec_same_bits(add ? "h = x + res" : "h = res (copied)", hg, href, n, H);
    struct lg_ref_rmsnorm rn = {.H = H, .eps = 1e-5f, .w = gam};
    lg_ref_rmsnorm_forward(&rn, n, href, yref, rref);
    ok &= dec_close_f("y", yg, yref, n, H, dec_ulp(t), 0.01 * dec_ulp(t));
    ok &= dec_close_f("rstd", rg, rref, 1, n, 2e-6, 0);
    col = H;
    for (int i = 0; i < c->nlora; i++) {
        const int r = c->rank[i];
        char what[64];
        float *sg = dec_download(dy + (CUdeviceptr)((size_t)col * e), ldy, n, r, t);
        double *sr = dec_ref_s(c, i, yg, n, H, ah[i], seed);
        snprintf(what, sizeof what, "S[%d] (r=%d) vs reference", i, r);
        ok &= dec_close_to(what, sg, sr, n, r, dec_ulp(t), 0.05 * dec_ulp(t));
        /* FusedLoRA's own down kernel on the same y */
        const int64_t ldl = lg_lora_ext_ld(H, r);
        CUdeviceptr xl = lg_dev_alloc((size_t)(n * ldl) * e), yl = lg_dev_alloc((size_t)(n * 64) * e);
        lg_dev_poison(xl, (size_t)(n * ldl) * e);
        dec_copy_rows(xl, ldl, dy, ldy, n, H, e);
        struct lg_lora_fwd lf = {.n = n, .x = xl, .ldx = ldl, .y = yl, .ldy = 64, .seed = seed};
        CHECK(lg_lora_forward(L[i], &lf, 0));
        CU_CHECK(cuCtxSynchronize());
        float *sl = dec_download(xl + (CUdeviceptr)((size_t)H * e), ldl, n, r, t);
        snprintf(what, sizeof what, "S[%d] vs FusedLoRA down kernel", i);
        ok &= dec_same_bits(what, sg, sl, n, r);
        free(sg), free(sr), free(sl);
        cuMemFree(xl), cuMemFree(yl);
        col += r;
    }
    if (pad) { /* y's columns past H + its S blocks were never written */
        float *tail = dec_download(dy + (CUdeviceptr)((size_t)col * e), ldy, n, ldy - col, t);
        int untouched = 1;
        for (int64_t i = 0; i < n * (ldy - col); i++)
            untouched &= isnan(tail[i]);
        printf("  %s y padding untouched\n", untouched ? "PASS" : "FAIL");
        ok &= untouched;
        free(tail);
    }
    lg_norm_free(N);
    for (int i = 0; i < c->nlora; i++)
        lg_lora_free(L[i]), free(ah[i]);
    if (dx)
        cuMemFree(dx);
    if (!inplace)
        cuMemFree(dh);
    cuMemFree(dres), cuMemFree(dy), cuMemFree(drs), cuMemFree(dg);
    free(x), free(res), free(gam), free(hg), free(yg), free(rg), free(href), free(yref), free(rref);
    return ok;
}

/* dy + Σ keep_i · mask_i ⊙ (dS_i·A_i), in double, rounded to fp32. */
static float *ref_dy_eff(const struct tcase *c, int64_t n, int64_t H, const float *dy, float *const *ds,
                         float *const *a, uint64_t seed)
{
    double *acc = dec_dbl(dy, (size_t)(n * H));
    uint8_t *mask = malloc((size_t)(n * H));
    for (int i = 0; i < c->nlora; i++) {
        const struct lg_lora_reader r = dec_reader(c, i);
        lg_ref_dropout_mask(seed, r.layer_id, r.dropout, n, H, mask);
        const double keep = lg_ref_keep_scale(r.dropout);
        for (int64_t t = 0; t < n; t++)
            for (int64_t k = 0; k < H; k++) {
                if (!mask[t * H + k])
                    continue;
                double v = 0;
                for (int j = 0; j < r.rank; j++)
                    v += (double)ds[i][t * r.rank + j] * a[i][j * H + k];
                acc[t * H + k] += keep * v;
            }
    }
    float *out = malloc(sizeof(float) * (size_t)(n * H));
    for (int64_t i = 0; i < n * H; i++)
        out[i] = (float)acc[i];
    free(acc), free(mask);
    return out;
}

static int run_norm_bwd(const struct tcase *c, uint64_t seed)
{
    const enum lg_dtype t = c->t;
    const size_t e = lg_dtype_size(t);
    const int64_t n = c->n, H = c->k, pad = (c->flags & F_PAD) ? 40 : 0, ld = H + pad;
    const int acc = (c->flags & F_ACC) != 0, inplace = (c->flags & F_INPLACE) != 0;
    float *h = dec_rnd((size_t)(n * H), seed + 20, 1.0f, t), *dy = dec_rnd((size_t)(n * H), seed + 21, 1.0f, t);
    float *gam = dec_rnd((size_t)H, seed + 22, 0.25f, t), *d0 = dec_rnd((size_t)(n * H), seed + 23, 1.0f, t);
    for (int64_t i = 0; i < H; i++)
        gam[i] = lg_round_to(t, 1.0f + gam[i]);
    float *rstd = malloc(sizeof(float) * (size_t)n), *tmp = malloc(sizeof(float) * (size_t)(n * H));
    struct lg_ref_rmsnorm rn = {.H = H, .eps = 1e-5f, .w = gam};
    lg_ref_rmsnorm_forward(&rn, n, h, tmp, rstd);
    float *ds[3] = {0}, *a[3] = {0};
    CUdeviceptr dds[3] = {0}, da[3] = {0};
    struct lg_norm_params np = {.hidden = H, .eps = 1e-5f, .dtype = t, .nlora = c->nlora};
    struct lg_norm_bwd b = {.n = n, .lddy = ld, .ldh = ld, .lddres = ld, .accumulate = acc,
                            .correct = c->nlora > 0, .seed = seed};
    for (int i = 0; i < c->nlora; i++) {
        const int r = c->rank[i];
        np.lora[i] = dec_reader(c, i);
        ds[i] = dec_rnd((size_t)(n * r), seed + 30 + (uint64_t)i, 0.5f, t);
        a[i] = dec_rnd((size_t)(r * H), seed + 40 + (uint64_t)i, 1.0f / sqrtf((float)H), t);
        dds[i] = dec_upload_new(ds[i], r + 8, n, r, t);
        da[i] = dec_upload_new(a[i], H + 8, r, H, t);
        b.lora[i] = (struct lg_lora_reader_io){.a = da[i], .lda = H + 8, .ds = dds[i], .ldds = r + 8};
    }
    CUdeviceptr ddy = dec_upload_new(dy, ld, n, H, t), dh = dec_upload_new(h, ld, n, H, t), dg = dec_upload_new(gam, H, 1, H, t);
    CUdeviceptr drs = dec_upload_new(rstd, n, 1, n, LG_FP32);
    CUdeviceptr dres = inplace ? ddy : (acc ? dec_upload_new(d0, ld, n, H, t) : lg_dev_alloc((size_t)(n * ld) * e));
    if (!inplace && !acc)
        lg_dev_poison(dres, (size_t)(n * ld) * e);
    b.dy = ddy, b.h = dh, b.rstd = drs, b.gamma = dg, b.dres = dres;
    lg_norm_t *N;
    CHECK(lg_norm_init(dec_ctx, &np, &N));
    CHECK(lg_norm_backward(N, &b, 0));
    CU_CHECK(cuCtxSynchronize());

    float *got = dec_download(dres, ld, n, H, t);
    float *dyeff = ref_dy_eff(c, n, H, dy, ds, a, seed);
    lg_ref_rmsnorm_backward(&rn, n, h, rstd, dyeff, tmp);
    double *ref = dec_dbl(tmp, (size_t)(n * H));
    if (acc)
        for (int64_t i = 0; i < n * H; i++)
            ref[i] += d0[i];
    int ok = dec_close_to(c->nlora ? "dres (with the dX correction)" : "dres", got, ref, n, H, dec_ulp(t), dec_ulp(t));
    lg_norm_free(N);
    for (int i = 0; i < c->nlora; i++)
        free(ds[i]), free(a[i]), cuMemFree(dds[i]), cuMemFree(da[i]);
    if (!inplace)
        cuMemFree(dres);
    cuMemFree(ddy), cuMemFree(dh), cuMemFree(dg), cuMemFree(drs);
    free(h), free(dy), free(gam), free(d0), free(rstd), free(tmp), free(got), free(dyeff), free(ref);
    return ok;
}

/* The two placements of one projection's masked dX correction, then the norm backward over that dX:
 *   da:   FusedLoRA's backward with dX (its dA pass adds the correction; with p = 0 the extended-K GEMM
 *         [dY|dS]·[W;A] gives it), then the plain norm backward;
 *   norm: FusedLoRA's backward without dX (dS left in dY's tail), dX = dY·W by cuBLASLt, then the norm
 *         backward folding the correction in.
 * They must agree with each other and with the reference. */
static int run_placement(const struct tcase *c, uint64_t seed)
{
    const enum lg_dtype t = c->t;
    const size_t e = lg_dtype_size(t);
    const int64_t n = c->n, K = c->k, M = 256, r = c->rank[0];
    const int64_t ldx = lg_lora_ext_ld(K, (int)r), lddy = lg_lora_ext_ld(M, (int)r);
    const struct lg_lora_reader rd = dec_reader(c, 0);
    struct lg_lora_params lp = {.in_features = K, .out_features = M, .rank = (int)r, .alpha = rd.alpha,
                                .dropout = rd.dropout, .dtype = t, .layer_id = rd.layer_id};
    lg_lora_t *L;
    CHECK(lg_lora_init(dec_ctx, &lp, &L));
    float *w = dec_rnd((size_t)(M * K), seed + 1, 1.0f / sqrtf((float)K), t), *a = dec_rnd((size_t)(r * K), seed + 2, 1.0f / sqrtf((float)K), t);
    float *bm = dec_rnd((size_t)(M * r), seed + 3, 0.5f, t), *x = dec_rnd((size_t)(n * K), seed + 4, 1.0f, t);
    float *dy = dec_rnd((size_t)(n * M), seed + 5, 1.0f, t), *h = dec_rnd((size_t)(n * K), seed + 6, 1.0f, t);
    float *gam = dec_rnd((size_t)K, seed + 7, 0.25f, t);
    for (int64_t i = 0; i < K; i++)
        gam[i] = lg_round_to(t, 1.0f + gam[i]);
    uint16_t *wh = dec_to_half(w, (size_t)(M * K), t), *ahh = dec_to_half(a, (size_t)(r * K), t), *bh = dec_to_half(bm, (size_t)(M * r), t);
    CHECK(lg_lora_set_weights(L, wh, ahh, bh, NULL));
    float *rstd = malloc(sizeof(float) * (size_t)n), *tmp = malloc(sizeof(float) * (size_t)(n * K));
    struct lg_ref_rmsnorm rn = {.H = K, .eps = 1e-5f, .w = gam};
    lg_ref_rmsnorm_forward(&rn, n, h, tmp, rstd);

    CUdeviceptr X = dec_upload_new(x, ldx, n, K, t), Y = lg_dev_alloc((size_t)(n * M) * e);
    CUdeviceptr DY1 = dec_upload_new(dy, lddy, n, M, t), DY2 = dec_upload_new(dy, lddy, n, M, t);
    CUdeviceptr DX1 = lg_dev_alloc((size_t)(n * K) * e), DX2 = lg_dev_alloc((size_t)(n * K) * e);
    CUdeviceptr DA = lg_dev_alloc((size_t)(r * K) * 4), DB = lg_dev_alloc((size_t)(M * r) * 4);
    CUdeviceptr Hd = dec_upload_new(h, K, n, K, t), G = dec_upload_new(gam, K, 1, K, t), RS = dec_upload_new(rstd, n, 1, n, LG_FP32);
    CUdeviceptr R1 = lg_dev_alloc((size_t)(n * K) * e), R2 = lg_dev_alloc((size_t)(n * K) * e);
    lg_dev_poison(DX1, (size_t)(n * K) * e), lg_dev_poison(DX2, (size_t)(n * K) * e);
    lg_dev_poison(R1, (size_t)(n * K) * e), lg_dev_poison(R2, (size_t)(n * K) * e);
    struct lg_lora_fwd lf = {.n = n, .x = X, .ldx = ldx, .y = Y, .ldy = M, .seed = seed};
    CHECK(lg_lora_forward(L, &lf, 0));

    struct lg_norm_params np = {.hidden = K, .eps = 1e-5f, .dtype = t, .nlora = 1, .lora = {rd}};
    lg_norm_t *N;
    CHECK(lg_norm_init(dec_ctx, &np, &N));
    /* placement da (or gemm) */
    struct lg_lora_bwd lb = {.n = n, .x = X, .ldx = ldx, .dy = DY1, .lddy = lddy, .dx = DX1, .lddx = K, .da = DA,
                             .db = DB, .seed = seed};
    CHECK(lg_lora_backward(L, &lb, 0));
    struct lg_norm_bwd nb = {.n = n, .dy = DX1, .lddy = K, .h = Hd, .ldh = K, .rstd = RS, .gamma = G, .dres = R1,
                             .lddres = K, .seed = seed};
    CHECK(lg_norm_backward(N, &nb, 0));
    /* placement norm */
    lb.dy = DY2, lb.dx = 0;
    CHECK(lg_lora_backward(L, &lb, 0));
    const int64_t ldw = lg_lora_ext_ld(K, (int)r);
    struct lg_gemm gx = {.dtype = t, .m = n, .n = K, .k = M, .a = (const void *)DY2, .lda = lddy,
                         .b = (const void *)lg_lora_weights(L), .ldb = ldw, .c = (void *)DX2, .ldc = K, .alpha = 1.f};
    CHECK(lg_blas_gemm(lg_ctx_blas(dec_ctx), &gx, 0));
    nb.dy = DX2, nb.dres = R2, nb.correct = 1;
    nb.lora[0] = (struct lg_lora_reader_io){.a = lg_lora_weights(L) + (CUdeviceptr)((size_t)(M * ldw) * e),
                                            .lda = ldw, .ds = DY2 + (CUdeviceptr)((size_t)M * e), .ldds = lddy};
    CHECK(lg_norm_backward(N, &nb, 0));
    CU_CHECK(cuCtxSynchronize());

    enum lg_dx_placement pl_n, pl_o;
    CHECK(lg_gen_dx_correction(lg_ctx_gen(dec_ctx), lg_ref_dropout_thresh16(c->p) ? c->p : 0.0, 1, 1, &pl_n));
    CHECK(lg_gen_dx_correction(lg_ctx_gen(dec_ctx), lg_ref_dropout_thresh16(c->p) ? c->p : 0.0, 1, 0, &pl_o));
    static const char *pn[] = {"gemm", "norm", "da"};
    printf("  generator: p=%g, dS in dY's tail: correction in the %s (a norm reads dX next), else the %s\n", c->p,
           pn[pl_n], pn[pl_o]);
    int ok = (c->p == 0.0f || lg_ref_dropout_thresh16(c->p) == 0) ? pl_n == LG_DX_IN_GEMM : pl_n == LG_DX_IN_NORM;
    float *r1 = dec_download(R1, K, n, K, t), *r2 = dec_download(R2, K, n, K, t);
    ok &= dec_close_f("dres: dX pass vs folded into norm", r2, r1, n, K, 2 * dec_ulp(t), 2 * dec_ulp(t));
    /* the reference: FusedLoRA's dX in double, then the norm backward */
    struct lg_ref_lora R = {.K = K, .M = M, .r = (int)r, .alpha = rd.alpha, .dropout = rd.dropout, .round = t,
                            .seed = seed, .layer = rd.layer_id, .w = w, .a = a, .b = bm};
    double *yr = malloc(sizeof(double) * (size_t)(n * M)), *dxr = malloc(sizeof(double) * (size_t)(n * K));
    double *dar = malloc(sizeof(double) * (size_t)(r * K)), *dbr = malloc(sizeof(double) * (size_t)(M * r));
    float *sr = malloc(sizeof(float) * (size_t)(n * r)), *dsr = malloc(sizeof(float) * (size_t)(n * r));
    lg_ref_lora_forward(&R, n, x, yr, sr);
    lg_ref_lora_backward(&R, n, x, sr, dy, dxr, dar, dbr, dsr);
    float *dxf = malloc(sizeof(float) * (size_t)(n * K));
    for (int64_t i = 0; i < n * K; i++)
        dxf[i] = (float)dxr[i];
    lg_ref_rmsnorm_backward(&rn, n, h, rstd, dxf, tmp);
    ok &= dec_close_f("dres (dX pass) vs reference", r1, tmp, n, K, 2 * dec_ulp(t), 2 * dec_ulp(t));
    ok &= dec_close_f("dres (folded) vs reference", r2, tmp, n, K, 2 * dec_ulp(t), 2 * dec_ulp(t));
    lg_norm_free(N);
    lg_lora_free(L);
    cuMemFree(X), cuMemFree(Y), cuMemFree(DY1), cuMemFree(DY2), cuMemFree(DX1), cuMemFree(DX2), cuMemFree(DA);
    cuMemFree(DB), cuMemFree(Hd), cuMemFree(G), cuMemFree(RS), cuMemFree(R1), cuMemFree(R2);
    free(w), free(a), free(bm), free(x), free(dy), free(h), free(gam), free(wh), free(ahh), free(bh), free(rstd);
    free(tmp), free(r1), free(r2), free(yr), free(dxr), free(dar), free(dbr), free(sr), free(dsr), free(dxf);
    return ok;
}

static const struct tcase cases[] = {
    /* op        dtype    n     k     nl ranks        p     flags */
    {T_NORM_FWD, LG_BF16, 77, 256, 0, {0}, 0, 0, 0, 0, 0},
    {T_NORM_FWD, LG_FP16, 1, 4096, 0, {0}, 0, F_INPLACE, 0, 0, 0},
    {T_NORM_FWD, LG_BF16, 1000, 3584, 0, {0}, 0, F_NOADD | F_PAD, 0, 0, 0},
    {T_NORM_FWD, LG_BF16, 333, 512, 3, {16, 16, 16}, 0.1f, F_INPLACE, 0, 0, 0},
    {T_NORM_FWD, LG_FP16, 129, 1024, 2, {8, 24, 0}, 0.05f, 0, 0, 0, 0},
    {T_NORM_FWD, LG_BF16, 1, 256, 1, {16, 0, 0}, 0.0f, F_NOADD, 0, 0, 0},
    {T_NORM_FWD, LG_BF16, 200, 1024, 1, {128, 0, 0}, 0.1f, F_PAD, 0, 0, 0},
    {T_NORM_FWD, LG_BF16, 2049, 4096, 3, {16, 16, 16}, 0.1f, F_INPLACE, 0, 0, 0},
    {T_NORM_BWD, LG_BF16, 77, 256, 0, {0}, 0, 0, 0, 0, 0},
    {T_NORM_BWD, LG_FP16, 1, 4096, 0, {0}, 0, F_ACC, 0, 0, 0},
    {T_NORM_BWD, LG_BF16, 513, 3584, 0, {0}, 0, F_INPLACE | F_PAD, 0, 0, 0},
    {T_NORM_BWD, LG_BF16, 333, 512, 3, {16, 16, 16}, 0.1f, F_ACC, 0, 0, 0},
    {T_NORM_BWD, LG_FP16, 129, 1024, 2, {8, 24, 0}, 0.2f, 0, 0, 0, 0},
    {T_NORM_BWD, LG_BF16, 1, 256, 1, {64, 0, 0}, 0.0f, F_PAD, 0, 0, 0},
    {T_NORM_BWD, LG_BF16, 1025, 4096, 3, {16, 16, 16}, 0.1f, F_ACC, 0, 0, 0},
    {T_PLACE, LG_BF16, 333, 512, 1, {16, 0, 0}, 0.1f, 0, 0, 0, 0},
    {T_PLACE, LG_FP16, 97, 1024, 1, {32, 0, 0}, 0.0f, 0, 0, 0, 0},
    {T_PLACE, LG_BF16, 1, 256, 1, {8, 0, 0}, 0.3f, 0, 0, 0, 0},
};

static int run_case(const struct tcase *c, uint64_t seed)
{
    switch (c->op) {
    case T_NORM_FWD: return run_norm_fwd(c, seed);
    case T_NORM_BWD: return run_norm_bwd(c, seed);
    case T_PLACE: return run_placement(c, seed);
    default: return 0;
    }
}

int main(void)
{
    return lg_dec_gpu_main("decoder_ops_gpu_norm", cases, (int)(sizeof cases / sizeof cases[0]), run_case, NULL);
}
