/* test_decoder_ops_gpu.c: the decoder ops (lg_decoder_ops.h) on the GPU against the CPU reference (lg_ref_ops.h,
 * lg_ref.h) and against FusedLoRA's own kernels, as one table of cases (op, dtype, shape, switches) in the
 * style of ggml's test-backend-ops. Fresh seeded inputs (the seed is printed), every output poisoned with NaN
 * first and every element checked (NaN never passes), dtype-aware tolerances, odd token counts and samples of
 * length 1. Each case prints one PASS/FAIL line per output with its worst error and, on failure, the first
 * mismatch and its index.
 *   norm      fused add + RMSNorm forward (plain, with S of 1-3 readers: S bit for bit FusedLoRA's down kernel),
 *             backward (plain, accumulating, with the masked dX correction of 1-3 readers)
 *   place     the dX correction folded into the norm backward vs done by FusedLoRA's dA pass: they agree
 *   rope      llama3 and plain frequencies, packed samples, forward and backward, strided q/k
 *   swiglu    forward (plain and with down_proj's S, bit for bit FusedLoRA's), backward (in place too)
 *   embed     gather, with an out-of-range id (zero row, counted)
 *   xent      the chunked LM head against materialised logits: ignored labels, an all-ignored chunk, vocab
 *             128,256 and 152,064, tied and untied heads, accumulation into dx
 *   adamw     steps against lg_ref_adamw_step with clipping, the half copies inside FusedLoRA's buffer, an
 *             injected NaN (step skipped, nothing changed)
 * plus determinism and bad calls. Exits 77 without a GPU. */
#include "lg_decoder_ops.h"
#include "lg_gpu_util.h"
#include "lg_half.h"
#include "lg_lora.h"
#include "lg_ref.h"
#include "lg_ref_ops.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static lg_ctx_t *ctx;

/* ---- helpers ---- */

static float *rnd(size_t n, uint64_t seed, float scale, enum lg_dtype t)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    lg_test_fill(v, n, seed, scale);
    if (t != LG_FP32)
        lg_host_round(v, n, t);
    return v;
}

static uint16_t *to_half(const float *v, size_t n, enum lg_dtype t)
{
    uint16_t *h = malloc(sizeof(uint16_t) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        h[i] = lg_f32_to_half(t, v[i]);
    return h;
}

/* One unit in the last place of dtype, relative. */
static double ulp(enum lg_dtype t) { return t == LG_BF16 ? 1.0 / 128 : t == LG_FP16 ? 1.0 / 1024 : 1.2e-7; }

/* Every element: |got - ref| <= atol + rtol·|ref| with atol = aabs · rms(ref); NaN fails. Prints one line. */
static int close_to(const char *what, const float *got, const double *ref, int64_t rows, int64_t cols, double rtol,
                    double aabs)
{
    const size_t n = (size_t)(rows * cols);
    double ss = 0, worst = 0;
    for (size_t i = 0; i < n; i++)
        ss += ref[i] * ref[i];
    const double atol = aabs * sqrt(ss / (double)(n ? n : 1)) + 1e-30;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)got[i] - ref[i]);
        const double lim = atol + rtol * fabs(ref[i]);
        if (!(d <= lim)) {
            if (!bad++)
                first = i;
        }
        if (d / lim > worst || isnan(d))
            worst = isnan(d) ? INFINITY : d / lim;
    }
    const double l2 = lg_test_rel_err(got, ref, n);
    if (!bad)
        printf("  PASS %-34s worst %.2f of tolerance, rel L2 %.2e\n", what, worst, l2);
    else
        printf("  FAIL %-34s %zu of %zu outside tolerance, rel L2 %.2e; first at [%lld, %lld]: got %.7g, want %.7g\n",
               what, bad, n, l2, (long long)(first / (size_t)cols), (long long)(first % (size_t)cols),
               (double)got[first], ref[first]);
    return bad == 0;
}

static double *dbl(const float *v, size_t n)
{
    double *d = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        d[i] = v[i];
    return d;
}

static int close_f(const char *what, const float *got, const float *ref, int64_t rows, int64_t cols, double rtol,
                   double aabs)
{
    double *d = dbl(ref, (size_t)(rows * cols));
    int ok = close_to(what, got, d, rows, cols, rtol, aabs);
    free(d);
    return ok;
}

/* Bitwise equality of two dtype matrices read back as floats (NaN fails). */
static int same_bits(const char *what, const float *got, const float *want, int64_t rows, int64_t cols)
{
    size_t bad = 0, first = 0, n = (size_t)(rows * cols);
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) || isnan(got[i]))
            if (!bad++)
                first = i;
    if (!bad)
        printf("  PASS %-34s bit for bit (%zu values)\n", what, n);
    else
        printf("  FAIL %-34s %zu of %zu differ; first at [%lld, %lld]: got %.7g, want %.7g\n", what, bad, n,
               (long long)(first / (size_t)cols), (long long)(first % (size_t)cols), (double)got[first],
               (double)want[first]);
    return bad == 0;
}

static float *download(CUdeviceptr p, int64_t ld, int64_t rows, int64_t cols, enum lg_dtype t)
{
    float *h = malloc(sizeof(float) * (size_t)(rows * cols > 0 ? rows * cols : 1));
    lg_dev_download(h, p, ld, rows, cols, t);
    return h;
}

static CUdeviceptr upload_new(const float *v, int64_t ld, int64_t rows, int64_t cols, enum lg_dtype t)
{
    CUdeviceptr p = lg_dev_alloc((size_t)(rows * ld) * lg_dtype_size(t));
    lg_dev_poison(p, (size_t)(rows * ld) * lg_dtype_size(t));
    lg_dev_upload(p, ld, v, rows, cols, t);
    return p;
}

/* Copies rows x cols dtype elements between strided device buffers. */
static void copy_rows(CUdeviceptr dst, int64_t ldd, CUdeviceptr src, int64_t lds, int64_t rows, int64_t cols, size_t e)
{
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = c.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    c.srcDevice = src, c.srcPitch = (size_t)lds * e, c.dstDevice = dst, c.dstPitch = (size_t)ldd * e;
    c.WidthInBytes = (size_t)cols * e, c.Height = (size_t)rows;
    CU_CHECK(cuMemcpy2D(&c));
}

static uint64_t case_seed(int i) { return lg_test_seed() * 1000003u + (uint64_t)i * 7919u; }

/* ---- the table ---- */

enum op { T_NORM_FWD, T_NORM_BWD, T_PLACE, T_ROPE, T_SWIGLU, T_EMBED, T_XENT, T_ADAMW };
static const char *op_name[] = {"norm_fwd", "norm_bwd", "place", "rope", "swiglu", "embed", "xent", "adamw"};

enum {
    F_NOADD = 1,    /* norm: no x (h = res) */
    F_INPLACE = 2,  /* norm: h written over res; swiglu bwd: dg over g, du over u */
    F_ACC = 4,      /* norm bwd: accumulate into dres; xent: dx_beta = 1 */
    F_LLAMA3 = 8,   /* rope: llama3 scaling */
    F_TIED = 16,    /* xent: the head is the embedding table */
    F_WITHS = 32,   /* swiglu: with down_proj's S */
    F_PAD = 64,     /* padded leading dimensions, padding checked untouched */
};

struct tcase {
    enum op op;
    enum lg_dtype t;
    int64_t n, k; /* tokens; features (hidden, inter, head_dim, vocab-free width) */
    int nlora, rank[3];
    float p; /* readers' dropout */
    int flags;
    int a, b, c; /* rope: hq, hkv, nseq; xent: vocab/8, chunk, -; adamw: steps, nan_step, clip (x1000) */
};

/* The readers of a case: ranks from the table, alpha = 2r, layer ids 11, 12, 13. */
static struct lg_lora_reader reader(const struct tcase *c, int i)
{
    return (struct lg_lora_reader){.rank = c->rank[i], .alpha = 2.0f * c->rank[i], .dropout = c->p,
                                   .layer_id = 11u + (unsigned)i};
}

/* ---- norm ---- */

/* A FusedLoRA layer for reader i of a case (in = K, out = 64): its A block is where the norm reads A. */
static lg_lora_t *reader_layer(const struct tcase *c, int i, int64_t K, uint64_t seed, float **a_host)
{
    const struct lg_lora_reader r = reader(c, i);
    const int64_t M = 64;
    struct lg_lora_params lp = {.in_features = K, .out_features = M, .rank = r.rank, .alpha = r.alpha,
                                .dropout = r.dropout, .dtype = c->t, .layer_id = r.layer_id};
    lg_lora_t *L;
    CHECK(lg_lora_init(ctx, &lp, &L));
    float *w = rnd((size_t)(M * K), seed + 1, 1.0f / sqrtf((float)K), c->t);
    float *a = rnd((size_t)(r.rank * K), seed + 2, 1.0f / sqrtf((float)K), c->t);
    float *b = rnd((size_t)(M * r.rank), seed + 3, 0.5f, c->t);
    uint16_t *wh = to_half(w, (size_t)(M * K), c->t), *ah = to_half(a, (size_t)(r.rank * K), c->t);
    uint16_t *bh = to_half(b, (size_t)(M * r.rank), c->t);
    CHECK(lg_lora_set_weights(L, wh, ah, bh, NULL));
    free(w), free(b), free(wh), free(ah), free(bh);
    *a_host = a;
    return L;
}

static CUdeviceptr reader_a(lg_lora_t *L, int64_t K, int r, enum lg_dtype t)
{
    return lg_lora_weights(L) + (CUdeviceptr)((size_t)(64 * lg_lora_ext_ld(K, r)) * lg_dtype_size(t));
}

/* S = s·keep·(y ⊙ mask)·Aᵀ in double from the GPU's y. */
static double *ref_s(const struct tcase *c, int i, const float *y, int64_t n, int64_t K, const float *a, uint64_t seed)
{
    const struct lg_lora_reader r = reader(c, i);
    uint8_t *mask = malloc((size_t)(n * K));
    lg_ref_dropout_mask(seed, r.layer_id, r.dropout, n, K, mask);
    const double scale = (double)((r.alpha / (float)r.rank) * lg_ref_keep_scale(r.dropout));
    double *s = calloc((size_t)(n * r.rank), sizeof(double));
    for (int64_t t = 0; t < n; t++)
        for (int j = 0; j < r.rank; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += mask[t * K + k] ? (double)y[t * K + k] * a[j * K + k] : 0.0;
            s[t * r.rank + j] = scale * acc;
        }
    free(mask);
    return s;
}

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
    float *x = rnd((size_t)(n * H), seed + 10, 1.0f, t), *res = rnd((size_t)(n * H), seed + 11, 1.0f, t);
    float *gam = rnd((size_t)H, seed + 12, 0.25f, t);
    for (int64_t i = 0; i < H; i++)
        gam[i] = lg_round_to(t, 1.0f + gam[i]);
    lg_lora_t *L[3] = {0};
    float *ah[3] = {0};
    for (int i = 0; i < c->nlora; i++)
        L[i] = reader_layer(c, i, H, seed + 100 * (uint64_t)(i + 1), &ah[i]);

    CUdeviceptr dx = add ? upload_new(x, ld, n, H, t) : 0, dres = upload_new(res, ld, n, H, t);
    CUdeviceptr dh = inplace ? dres : lg_dev_alloc((size_t)(n * ldh) * e), dy = lg_dev_alloc((size_t)(n * ldy) * e);
    CUdeviceptr drs = lg_dev_alloc((size_t)n * 4), dg = upload_new(gam, H, 1, H, t);
    if (!inplace)
        lg_dev_poison(dh, (size_t)(n * ldh) * e);
    lg_dev_poison(dy, (size_t)(n * ldy) * e), lg_dev_poison(drs, (size_t)n * 4);

    struct lg_norm_params np = {.hidden = H, .eps = 1e-5f, .dtype = t, .nlora = c->nlora};
    for (int i = 0; i < c->nlora; i++)
        np.lora[i] = reader(c, i);
    lg_norm_t *N;
    CHECK(lg_norm_init(ctx, &np, &N));
    struct lg_norm_fwd f = {.n = n, .x = dx, .ldx = ld, .res = dres, .ldres = ld, .h = dh, .ldh = ldh, .gamma = dg,
                            .y = dy, .ldy = ldy, .rstd = drs, .with_s = c->nlora > 0, .seed = seed};
    int64_t col = H;
    for (int i = 0; i < c->nlora; i++) {
        f.lora[i] = (struct lg_lora_reader_io){.a = reader_a(L[i], H, c->rank[i], t),
                                               .lda = lg_lora_ext_ld(H, c->rank[i]), .s_col = col};
        col += c->rank[i];
    }
    CHECK(lg_norm_forward(N, &f, 0));
    CU_CHECK(cuCtxSynchronize());

    int ok = 1;
    float *hg = download(inplace ? dres : dh, inplace ? ld : ldh, n, H, t), *yg = download(dy, ldy, n, H, t);
    float *rg = download(drs, n, 1, n, LG_FP32);
    float *href = malloc(sizeof(float) * (size_t)(n * H)), *yref = malloc(sizeof(float) * (size_t)(n * H));
    float *rref = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n * H; i++)
        href[i] = add ? lg_round_to(t, x[i] + res[i]) : res[i];
    ok &= same_bits(add ? "h = x + res" : "h = res (copied)", hg, href, n, H);
    struct lg_ref_rmsnorm rn = {.H = H, .eps = 1e-5f, .w = gam};
    lg_ref_rmsnorm_forward(&rn, n, href, yref, rref);
    ok &= close_f("y", yg, yref, n, H, ulp(t), 0.01 * ulp(t));
    ok &= close_f("rstd", rg, rref, 1, n, 2e-6, 0);
    col = H;
    for (int i = 0; i < c->nlora; i++) {
        const int r = c->rank[i];
        char what[64];
        float *sg = download(dy + (CUdeviceptr)((size_t)col * e), ldy, n, r, t);
        double *sr = ref_s(c, i, yg, n, H, ah[i], seed);
        snprintf(what, sizeof what, "S[%d] (r=%d) vs reference", i, r);
        ok &= close_to(what, sg, sr, n, r, ulp(t), 0.05 * ulp(t));
        /* FusedLoRA's own down kernel on the same y */
        const int64_t ldl = lg_lora_ext_ld(H, r);
        CUdeviceptr xl = lg_dev_alloc((size_t)(n * ldl) * e), yl = lg_dev_alloc((size_t)(n * 64) * e);
        lg_dev_poison(xl, (size_t)(n * ldl) * e);
        copy_rows(xl, ldl, dy, ldy, n, H, e);
        struct lg_lora_fwd lf = {.n = n, .x = xl, .ldx = ldl, .y = yl, .ldy = 64, .seed = seed};
        CHECK(lg_lora_forward(L[i], &lf, 0));
        CU_CHECK(cuCtxSynchronize());
        float *sl = download(xl + (CUdeviceptr)((size_t)H * e), ldl, n, r, t);
        snprintf(what, sizeof what, "S[%d] vs FusedLoRA down kernel", i);
        ok &= same_bits(what, sg, sl, n, r);
        free(sg), free(sr), free(sl);
        cuMemFree(xl), cuMemFree(yl);
        col += r;
    }
    if (pad) { /* y's columns past H + its S blocks were never written */
        float *tail = download(dy + (CUdeviceptr)((size_t)col * e), ldy, n, ldy - col, t);
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
    double *acc = dbl(dy, (size_t)(n * H));
    uint8_t *mask = malloc((size_t)(n * H));
    for (int i = 0; i < c->nlora; i++) {
        const struct lg_lora_reader r = reader(c, i);
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
    float *h = rnd((size_t)(n * H), seed + 20, 1.0f, t), *dy = rnd((size_t)(n * H), seed + 21, 1.0f, t);
    float *gam = rnd((size_t)H, seed + 22, 0.25f, t), *d0 = rnd((size_t)(n * H), seed + 23, 1.0f, t);
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
        np.lora[i] = reader(c, i);
        ds[i] = rnd((size_t)(n * r), seed + 30 + (uint64_t)i, 0.5f, t);
        a[i] = rnd((size_t)(r * H), seed + 40 + (uint64_t)i, 1.0f / sqrtf((float)H), t);
        dds[i] = upload_new(ds[i], r + 8, n, r, t);
        da[i] = upload_new(a[i], H + 8, r, H, t);
        b.lora[i] = (struct lg_lora_reader_io){.a = da[i], .lda = H + 8, .ds = dds[i], .ldds = r + 8};
    }
    CUdeviceptr ddy = upload_new(dy, ld, n, H, t), dh = upload_new(h, ld, n, H, t), dg = upload_new(gam, H, 1, H, t);
    CUdeviceptr drs = upload_new(rstd, n, 1, n, LG_FP32);
    CUdeviceptr dres = inplace ? ddy : (acc ? upload_new(d0, ld, n, H, t) : lg_dev_alloc((size_t)(n * ld) * e));
    if (!inplace && !acc)
        lg_dev_poison(dres, (size_t)(n * ld) * e);
    b.dy = ddy, b.h = dh, b.rstd = drs, b.gamma = dg, b.dres = dres;
    lg_norm_t *N;
    CHECK(lg_norm_init(ctx, &np, &N));
    CHECK(lg_norm_backward(N, &b, 0));
    CU_CHECK(cuCtxSynchronize());

    float *got = download(dres, ld, n, H, t);
    float *dyeff = ref_dy_eff(c, n, H, dy, ds, a, seed);
    lg_ref_rmsnorm_backward(&rn, n, h, rstd, dyeff, tmp);
    double *ref = dbl(tmp, (size_t)(n * H));
    if (acc)
        for (int64_t i = 0; i < n * H; i++)
            ref[i] += d0[i];
    int ok = close_to(c->nlora ? "dres (with the dX correction)" : "dres", got, ref, n, H, ulp(t), ulp(t));
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
    const struct lg_lora_reader rd = reader(c, 0);
    struct lg_lora_params lp = {.in_features = K, .out_features = M, .rank = (int)r, .alpha = rd.alpha,
                                .dropout = rd.dropout, .dtype = t, .layer_id = rd.layer_id};
    lg_lora_t *L;
    CHECK(lg_lora_init(ctx, &lp, &L));
    float *w = rnd((size_t)(M * K), seed + 1, 1.0f / sqrtf((float)K), t), *a = rnd((size_t)(r * K), seed + 2, 1.0f / sqrtf((float)K), t);
    float *bm = rnd((size_t)(M * r), seed + 3, 0.5f, t), *x = rnd((size_t)(n * K), seed + 4, 1.0f, t);
    float *dy = rnd((size_t)(n * M), seed + 5, 1.0f, t), *h = rnd((size_t)(n * K), seed + 6, 1.0f, t);
    float *gam = rnd((size_t)K, seed + 7, 0.25f, t);
    for (int64_t i = 0; i < K; i++)
        gam[i] = lg_round_to(t, 1.0f + gam[i]);
    uint16_t *wh = to_half(w, (size_t)(M * K), t), *ahh = to_half(a, (size_t)(r * K), t), *bh = to_half(bm, (size_t)(M * r), t);
    CHECK(lg_lora_set_weights(L, wh, ahh, bh, NULL));
    float *rstd = malloc(sizeof(float) * (size_t)n), *tmp = malloc(sizeof(float) * (size_t)(n * K));
    struct lg_ref_rmsnorm rn = {.H = K, .eps = 1e-5f, .w = gam};
    lg_ref_rmsnorm_forward(&rn, n, h, tmp, rstd);

    CUdeviceptr X = upload_new(x, ldx, n, K, t), Y = lg_dev_alloc((size_t)(n * M) * e);
    CUdeviceptr DY1 = upload_new(dy, lddy, n, M, t), DY2 = upload_new(dy, lddy, n, M, t);
    CUdeviceptr DX1 = lg_dev_alloc((size_t)(n * K) * e), DX2 = lg_dev_alloc((size_t)(n * K) * e);
    CUdeviceptr DA = lg_dev_alloc((size_t)(r * K) * 4), DB = lg_dev_alloc((size_t)(M * r) * 4);
    CUdeviceptr Hd = upload_new(h, K, n, K, t), G = upload_new(gam, K, 1, K, t), RS = upload_new(rstd, n, 1, n, LG_FP32);
    CUdeviceptr R1 = lg_dev_alloc((size_t)(n * K) * e), R2 = lg_dev_alloc((size_t)(n * K) * e);
    lg_dev_poison(DX1, (size_t)(n * K) * e), lg_dev_poison(DX2, (size_t)(n * K) * e);
    lg_dev_poison(R1, (size_t)(n * K) * e), lg_dev_poison(R2, (size_t)(n * K) * e);
    struct lg_lora_fwd lf = {.n = n, .x = X, .ldx = ldx, .y = Y, .ldy = M, .seed = seed};
    CHECK(lg_lora_forward(L, &lf, 0));

    struct lg_norm_params np = {.hidden = K, .eps = 1e-5f, .dtype = t, .nlora = 1, .lora = {rd}};
    lg_norm_t *N;
    CHECK(lg_norm_init(ctx, &np, &N));
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
    CHECK(lg_blas_gemm(lg_ctx_blas(ctx), &gx, 0));
    nb.dy = DX2, nb.dres = R2, nb.correct = 1;
    nb.lora[0] = (struct lg_lora_reader_io){.a = lg_lora_weights(L) + (CUdeviceptr)((size_t)(M * ldw) * e),
                                            .lda = ldw, .ds = DY2 + (CUdeviceptr)((size_t)M * e), .ldds = lddy};
    CHECK(lg_norm_backward(N, &nb, 0));
    CU_CHECK(cuCtxSynchronize());

    enum lg_dx_placement pl_n, pl_o;
    CHECK(lg_gen_dx_correction(lg_ctx_gen(ctx), lg_ref_dropout_thresh16(c->p) ? c->p : 0.0, 1, 1, &pl_n));
    CHECK(lg_gen_dx_correction(lg_ctx_gen(ctx), lg_ref_dropout_thresh16(c->p) ? c->p : 0.0, 1, 0, &pl_o));
    static const char *pn[] = {"gemm", "norm", "da"};
    printf("  generator: p=%g, dS in dY's tail: correction in the %s (a norm reads dX next), else the %s\n", c->p,
           pn[pl_n], pn[pl_o]);
    int ok = (c->p == 0.0f || lg_ref_dropout_thresh16(c->p) == 0) ? pl_n == LG_DX_IN_GEMM : pl_n == LG_DX_IN_NORM;
    float *r1 = download(R1, K, n, K, t), *r2 = download(R2, K, n, K, t);
    ok &= close_f("dres: dX pass vs folded into norm", r2, r1, n, K, 2 * ulp(t), 2 * ulp(t));
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
    ok &= close_f("dres (dX pass) vs reference", r1, tmp, n, K, 2 * ulp(t), 2 * ulp(t));
    ok &= close_f("dres (folded) vs reference", r2, tmp, n, K, 2 * ulp(t), 2 * ulp(t));
    lg_norm_free(N);
    lg_lora_free(L);
    cuMemFree(X), cuMemFree(Y), cuMemFree(DY1), cuMemFree(DY2), cuMemFree(DX1), cuMemFree(DX2), cuMemFree(DA);
    cuMemFree(DB), cuMemFree(Hd), cuMemFree(G), cuMemFree(RS), cuMemFree(R1), cuMemFree(R2);
    free(w), free(a), free(bm), free(x), free(dy), free(h), free(gam), free(wh), free(ahh), free(bh), free(rstd);
    free(tmp), free(r1), free(r2), free(yr), free(dxr), free(dar), free(dbr), free(sr), free(dsr), free(dxf);
    return ok;
}

/* ---- rope ---- */

/* cu_seqlens of n tokens in nseq samples with random lengths, one of them (the middle one) of length 1. */
static int32_t *make_cu(int64_t n, int nseq, uint64_t seed)
{
    int32_t *cu = malloc(sizeof(int32_t) * (size_t)(nseq + 1));
    float *u = rnd((size_t)nseq, seed, 1.0f, LG_FP32);
    cu[0] = 0;
    int64_t left = n;
    for (int i = 0; i < nseq; i++) {
        const int rest = nseq - i - 1;
        int64_t len = rest == 0 ? left : (i == nseq / 2 ? 1 : 1 + (int64_t)((fabsf(u[i]) * 2.0f) * (double)(left - rest) / (rest + 1)));
        if (len > left - rest)
            len = left - rest;
        if (len < 1)
            len = 1;
        cu[i + 1] = cu[i] + (int32_t)len;
        left -= len;
    }
    free(u);
    return cu;
}

static int run_rope(const struct tcase *c, uint64_t seed)
{
    const enum lg_dtype t = c->t;
    const size_t e = lg_dtype_size(t);
    const int64_t n = c->n, d = c->k, hq = c->a, hk = c->b, pad = (c->flags & F_PAD) ? 16 : 0;
    const int64_t ldq = hq * d + pad, ldk = hk * d + 2 * pad;
    struct lg_ref_rope rp = {.d = d, .theta = 1000000.0, .scaling = LG_ROPE_NONE};
    if (c->flags & F_LLAMA3)
        rp = (struct lg_ref_rope){.d = d, .theta = 500000.0, .scaling = LG_ROPE_LLAMA3, .factor = 8.0,
                                  .low_freq_factor = 1.0, .high_freq_factor = 4.0, .original_max_pos = 8192};
    float *inv = malloc(sizeof(float) * (size_t)(d / 2));
    CHECK(lg_ref_rope_inv_freq(&rp, inv));
    int32_t *cu = make_cu(n, c->c, seed + 1);
    printf("  samples:");
    for (int i = 0; i < c->c && i < 12; i++)
        printf(" %d", cu[i + 1] - cu[i]);
    printf("%s\n", c->c > 12 ? " ..." : "");
    struct lg_rope_params rpp = {.head_dim = d, .dtype = t, .inv_freq = inv};
    lg_rope_t *R;
    CHECK(lg_rope_init(ctx, &rpp, &R));
    CUdeviceptr dcu = lg_dev_alloc(sizeof(int32_t) * (size_t)(c->c + 1));
    CU_CHECK(cuMemcpyHtoD(dcu, cu, sizeof(int32_t) * (size_t)(c->c + 1)));
    struct lg_ref_seqs sq = {.n = n, .nseq = c->c, .cu = cu};
    int ok = 1;
    for (int dir = 0; dir < 2; dir++) {
        float *q = rnd((size_t)(n * hq * d), seed + 10 + (uint64_t)dir, 1.0f, t);
        float *k = rnd((size_t)(n * hk * d), seed + 20 + (uint64_t)dir, 1.0f, t);
        CUdeviceptr dq = upload_new(q, ldq, n, hq * d, t), dk = upload_new(k, ldk, n, hk * d, t);
        struct lg_rope_run rr = {.n = n, .q = dq, .ldq = ldq, .hq = (int)hq, .k = dk, .ldk = ldk, .hk = (int)hk,
                                 .cu_seqlens = dcu, .nseq = c->c, .backward = dir};
        CHECK(lg_rope_apply(R, &rr, 0));
        CU_CHECK(cuCtxSynchronize());
        float *gq = download(dq, ldq, n, hq * d, t), *gk = download(dk, ldk, n, hk * d, t);
        float *rq = malloc(sizeof(float) * (size_t)(n * hq * d)), *rk = malloc(sizeof(float) * (size_t)(n * hk * d));
        if (dir == 0) {
            CHECK(lg_ref_rope_forward(&rp, &sq, hq, q, rq));
            CHECK(lg_ref_rope_forward(&rp, &sq, hk, k, rk));
        } else {
            CHECK(lg_ref_rope_backward(&rp, &sq, hq, q, rq));
            CHECK(lg_ref_rope_backward(&rp, &sq, hk, k, rk));
        }
        ok &= close_f(dir ? "dq (backward)" : "q (forward)", gq, rq, n, hq * d, ulp(t), 0.01 * ulp(t));
        ok &= close_f(dir ? "dk (backward)" : "k (forward)", gk, rk, n, hk * d, ulp(t), 0.01 * ulp(t));
        if (pad) {
            float *tail = download(dq + (CUdeviceptr)((size_t)(hq * d) * e), ldq, n, pad, t);
            int untouched = 1;
            for (int64_t i = 0; i < n * pad; i++)
                untouched &= isnan(tail[i]);
            printf("  %s q padding untouched\n", untouched ? "PASS" : "FAIL");
            ok &= untouched;
            free(tail);
        }
        free(q), free(k), free(gq), free(gk), free(rq), free(rk);
        cuMemFree(dq), cuMemFree(dk);
    }
    lg_rope_free(R);
    cuMemFree(dcu);
    free(inv), free(cu);
    return ok;
}

/* ---- swiglu ---- */

static int run_swiglu(const struct tcase *c, uint64_t seed)
{
    const enum lg_dtype t = c->t;
    const size_t e = lg_dtype_size(t);
    const int64_t n = c->n, I = c->k, pad = (c->flags & F_PAD) ? 8 : 0;
    const int withs = (c->flags & F_WITHS) != 0, inplace = (c->flags & F_INPLACE) != 0;
    const int r = withs ? c->rank[0] : 0;
    const int64_t ldgu = 2 * I + pad, lda = (withs ? lg_lora_ext_ld(I, r) : I) + pad;
    /* gate_up's output as one buffer: g in columns 0..I-1, u in I..2I-1 */
    float *g = rnd((size_t)(n * I), seed + 1, 3.0f, t), *u = rnd((size_t)(n * I), seed + 2, 1.0f, t);
    float *da = rnd((size_t)(n * I), seed + 3, 1.0f, t);
    CUdeviceptr gu = lg_dev_alloc((size_t)(n * ldgu) * e), A = lg_dev_alloc((size_t)(n * lda) * e);
    lg_dev_poison(gu, (size_t)(n * ldgu) * e), lg_dev_poison(A, (size_t)(n * lda) * e);
    lg_dev_upload(gu, ldgu, g, n, I, t);
    lg_dev_upload(gu + (CUdeviceptr)((size_t)I * e), ldgu, u, n, I, t);
    float *ah = NULL;
    lg_lora_t *L = withs ? reader_layer(c, 0, I, seed + 50, &ah) : NULL;
    struct lg_swiglu_params sp = {.inter = I, .dtype = t, .with_lora = withs, .lora = withs ? reader(c, 0) : (struct lg_lora_reader){0}};
    lg_swiglu_t *S;
    CHECK(lg_swiglu_init(ctx, &sp, &S));
    struct lg_swiglu_fwd f = {.n = n, .g = gu, .ldg = ldgu, .u = gu + (CUdeviceptr)((size_t)I * e), .ldu = ldgu, .a = A,
                              .lda = lda, .with_s = withs, .seed = seed};
    if (withs)
        f.lora = (struct lg_lora_reader_io){.a = reader_a(L, I, r, t), .lda = lg_lora_ext_ld(I, r), .s_col = I};
    CHECK(lg_swiglu_forward(S, &f, 0));
    CU_CHECK(cuCtxSynchronize());
    float *ag = download(A, lda, n, I, t), *ar = malloc(sizeof(float) * (size_t)(n * I));
    lg_ref_swiglu_forward(n * I, g, u, ar);
    int ok = close_f("a = silu(g)·u", ag, ar, n, I, ulp(t), 0.01 * ulp(t));
    if (withs) {
        float *sg = download(A + (CUdeviceptr)((size_t)I * e), lda, n, r, t);
        double *sr = ref_s(c, 0, ag, n, I, ah, seed);
        ok &= close_to("S (down_proj) vs reference", sg, sr, n, r, ulp(t), 0.05 * ulp(t));
        const int64_t ldl = lg_lora_ext_ld(I, r);
        CUdeviceptr xl = lg_dev_alloc((size_t)(n * ldl) * e), yl = lg_dev_alloc((size_t)(n * 64) * e);
        copy_rows(xl, ldl, A, lda, n, I, e);
        struct lg_lora_fwd lf = {.n = n, .x = xl, .ldx = ldl, .y = yl, .ldy = 64, .seed = seed};
        CHECK(lg_lora_forward(L, &lf, 0));
        CU_CHECK(cuCtxSynchronize());
        float *sl = download(xl + (CUdeviceptr)((size_t)I * e), ldl, n, r, t);
        ok &= same_bits("S vs FusedLoRA down kernel", sg, sl, n, r);
        free(sg), free(sr), free(sl);
        cuMemFree(xl), cuMemFree(yl);
    }
    /* backward: dg, du (over g and u in place, or into their own buffer) */
    CUdeviceptr DA = upload_new(da, I + pad, n, I, t), OUT = inplace ? gu : lg_dev_alloc((size_t)(n * ldgu) * e);
    if (!inplace)
        lg_dev_poison(OUT, (size_t)(n * ldgu) * e);
    struct lg_swiglu_bwd b = {.n = n, .g = gu, .ldg = ldgu, .u = f.u, .ldu = ldgu, .da = DA, .ldda = I + pad,
                              .dg = OUT, .lddg = ldgu, .du = OUT + (CUdeviceptr)((size_t)I * e), .lddu = ldgu};
    CHECK(lg_swiglu_backward(S, &b, 0));
    CU_CHECK(cuCtxSynchronize());
    float *dgg = download(b.dg, ldgu, n, I, t), *dug = download(b.du, ldgu, n, I, t);
    float *dgr = malloc(sizeof(float) * (size_t)(n * I)), *dur = malloc(sizeof(float) * (size_t)(n * I));
    lg_ref_swiglu_backward(n * I, g, u, da, dgr, dur);
    ok &= close_f("dg", dgg, dgr, n, I, ulp(t), 0.01 * ulp(t));
    ok &= close_f("du", dug, dur, n, I, ulp(t), 0.01 * ulp(t));
    lg_swiglu_free(S);
    if (L)
        lg_lora_free(L);
    if (!inplace)
        cuMemFree(OUT);
    cuMemFree(gu), cuMemFree(A), cuMemFree(DA);
    free(g), free(u), free(da), free(ah), free(ag), free(ar), free(dgg), free(dug), free(dgr), free(dur);
    return ok;
}

/* ---- embed ---- */

static int run_embed(const struct tcase *c, uint64_t seed)
{
    const enum lg_dtype t = c->t;
    const int64_t n = c->n, H = c->k, V = c->a, pad = (c->flags & F_PAD) ? 8 : 0;
    float *tab = rnd((size_t)(V * H), seed + 1, 1.0f, t), *u = rnd((size_t)n, seed + 2, 1.0f, LG_FP32);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    int nbad = 0;
    for (int64_t i = 0; i < n; i++) {
        ids[i] = (int32_t)((double)fabsf(u[i]) * (double)V);
        ids[i] = ids[i] >= V ? (int32_t)V - 1 : ids[i];
    }
    if (n > 2)
        ids[n / 2] = (int32_t)V, ids[1] = -1, nbad = 2; /* out of range both ways: zero rows, counted */
    CUdeviceptr T = upload_new(tab, H + pad, V, H, t), O = lg_dev_alloc((size_t)(n * (H + pad)) * lg_dtype_size(t));
    CUdeviceptr I = lg_dev_alloc(sizeof(int32_t) * (size_t)n);
    lg_dev_poison(O, (size_t)(n * (H + pad)) * lg_dtype_size(t));
    CU_CHECK(cuMemcpyHtoD(I, ids, sizeof(int32_t) * (size_t)n));
    struct lg_embed_params ep = {.hidden = H, .vocab = V, .dtype = t};
    lg_embed_t *E;
    CHECK(lg_embed_init(ctx, &ep, &E));
    struct lg_embed_run er = {.n = n, .ids = I, .table = T, .ldt = H + pad, .out = O, .ldo = H + pad};
    CHECK(lg_embed_gather(E, &er, 0));
    int bad = -1;
    CHECK(lg_embed_bad_ids(E, 0, &bad));
    float *got = download(O, H + pad, n, H, t), *want = calloc((size_t)(n * H), sizeof(float));
    for (int64_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < V)
            memcpy(want + i * H, tab + (int64_t)ids[i] * H, sizeof(float) * (size_t)H);
    int ok = same_bits("out = table[ids] (bad ids: zero rows)", got, want, n, H);
    printf("  %s out-of-range ids counted: %d (want %d)\n", bad == nbad ? "PASS" : "FAIL", bad, nbad);
    ok &= bad == nbad;
    lg_embed_free(E);
    cuMemFree(T), cuMemFree(O), cuMemFree(I);
    free(tab), free(u), free(ids), free(got), free(want);
    return ok;
}

/* ---- xent ---- */

static int run_xent(const struct tcase *c, uint64_t seed)
{
    const enum lg_dtype t = c->t;
    const size_t e = lg_dtype_size(t);
    const int64_t n = c->n, H = c->k, V = (int64_t)c->a * 8, chunk = c->b, pad = (c->flags & F_PAD) ? 8 : 0;
    const int acc = (c->flags & F_ACC) != 0, tied = (c->flags & F_TIED) != 0;
    const int64_t ldx = H + pad, ldw = H + (tied ? 8 : pad);
    /* logits of a few units: a bf16 logit that rounds the other way than the reference shifts lse and one row of
     * dx by p·ulp; at std 9 (ulp 1/16 at 12) that alone broke the tolerances below */
    float *x = rnd((size_t)(n * H), seed + 1, 1.0f, t), *w = rnd((size_t)(V * H), seed + 2, 3.0f / sqrtf((float)H), t);
    float *u = rnd((size_t)n, seed + 3, 1.0f, LG_FP32), *dx0 = rnd((size_t)(n * H), seed + 4, 0.01f, t);
    int32_t *lab = malloc(sizeof(int32_t) * (size_t)n);
    float *wt = malloc(sizeof(float) * (size_t)n);
    int64_t counted = 0;
    int nbad = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t ch = i / chunk;
        lab[i] = (ch == 1 || fabsf(u[i]) < 0.2f) ? -100 : (int32_t)((uint64_t)(fabsf(u[i]) * 1e6f) % (uint64_t)V);
        counted += lab[i] != -100;
    }
    if (pad && n > 2 * chunk + 1)
        lab[2 * chunk] = (int32_t)V, nbad = 1, counted--; /* a bad label: ignored and counted as bad */
    for (int64_t i = 0; i < n; i++)
        wt[i] = lab[i] == -100 || lab[i] >= V ? 7.0f : (0.5f + fabsf(u[i])) / (float)(counted ? counted : 1);
    const float gs = t == LG_FP16 ? (float)counted : 0.0f;

    CUdeviceptr X = upload_new(x, ldx, n, H, t), W = upload_new(w, ldw, V, H, t);
    CUdeviceptr LB = lg_dev_alloc(sizeof(int32_t) * (size_t)n), WT = upload_new(wt, n, 1, n, LG_FP32);
    CUdeviceptr LS = lg_dev_alloc(sizeof(float) * (size_t)n), LSE = lg_dev_alloc(sizeof(float) * (size_t)n);
    CUdeviceptr DX = acc ? upload_new(dx0, ldx, n, H, t) : lg_dev_alloc((size_t)(n * ldx) * e);
    CU_CHECK(cuMemcpyHtoD(LB, lab, sizeof(int32_t) * (size_t)n));
    lg_dev_poison(LS, sizeof(float) * (size_t)n), lg_dev_poison(LSE, sizeof(float) * (size_t)n);
    if (!acc)
        lg_dev_poison(DX, (size_t)(n * ldx) * e);
    int ok = 1;
    if (tied) { /* the head is the embedding table: the same buffer serves the gather */
        struct lg_embed_params ep = {.hidden = H, .vocab = V, .dtype = t};
        lg_embed_t *E;
        CHECK(lg_embed_init(ctx, &ep, &E));
        CUdeviceptr O = lg_dev_alloc((size_t)(n * H) * e), I = lg_dev_alloc(sizeof(int32_t) * (size_t)n);
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++)
            ids[i] = lab[i] < 0 || lab[i] >= V ? 0 : lab[i];
        CU_CHECK(cuMemcpyHtoD(I, ids, sizeof(int32_t) * (size_t)n));
        struct lg_embed_run er = {.n = n, .ids = I, .table = W, .ldt = ldw, .out = O, .ldo = H};
        CHECK(lg_embed_gather(E, &er, 0));
        float *got = download(O, H, n, H, t), *want = malloc(sizeof(float) * (size_t)(n * H));
        for (int64_t i = 0; i < n; i++)
            memcpy(want + i * H, w + (int64_t)ids[i] * H, sizeof(float) * (size_t)H);
        ok &= same_bits("tied: embed gather from the head", got, want, n, H);
        lg_embed_free(E);
        cuMemFree(O), cuMemFree(I);
        free(ids), free(got), free(want);
    }
    struct lg_xent_params xp = {.hidden = H, .vocab = V, .dtype = t, .chunk = chunk};
    lg_xent_t *XE;
    CHECK(lg_xent_init(ctx, &xp, &XE));
    struct lg_xent_run xr = {.n = n, .x = X, .ldx = ldx, .w = W, .ldw = ldw, .labels = LB, .weight = WT, .loss = LS,
                             .lse = LSE, .dx = DX, .lddx = ldx, .dx_beta = acc ? 1.0f : 0.0f, .grad_scale = gs};
    CHECK(lg_xent_apply(XE, &xr, 0));
    int bad = -1;
    CHECK(lg_xent_bad_labels(XE, 0, &bad));
    printf("  chunk %lld tokens, %lld counted of %lld, working memory %.1f MiB\n", (long long)lg_xent_chunk(XE),
           (long long)counted, (long long)n, (double)lg_xent_workspace_bytes(XE) / (1 << 20));

    /* the reference materialises the logits, rounded as the GEMM stores them */
    double *z = malloc(sizeof(double) * (size_t)V), *lr = calloc((size_t)n, sizeof(double));
    double *lser = calloc((size_t)n, sizeof(double)), *dxr = calloc((size_t)(n * H), sizeof(double));
    const double g = gs > 0 ? gs : 1.0;
    for (int64_t i = 0; i < n; i++) {
        if (acc)
            for (int64_t k = 0; k < H; k++)
                dxr[i * H + k] = dx0[i * H + k];
        if (lab[i] < 0 || lab[i] >= V)
            continue;
        double mx = -INFINITY, s = 0;
        for (int64_t v = 0; v < V; v++) {
            double a = 0;
            for (int64_t k = 0; k < H; k++)
                a += (double)x[i * H + k] * w[v * H + k];
            z[v] = lg_round_to(t, (float)a);
            mx = z[v] > mx ? z[v] : mx;
        }
        for (int64_t v = 0; v < V; v++)
            s += exp(z[v] - mx);
        lser[i] = mx + log(s);
        lr[i] = wt[i] * (lser[i] - z[lab[i]]);
        for (int64_t v = 0; v < V; v++) {
            const double dl = lg_round_to(t, (float)(g * wt[i] * (exp(z[v] - lser[i]) - (v == lab[i]))));
            if (dl != 0)
                for (int64_t k = 0; k < H; k++)
                    dxr[i * H + k] += dl / g * w[v * H + k];
        }
    }
    float *lg = download(LS, n, 1, n, LG_FP32), *lseg = download(LSE, n, 1, n, LG_FP32);
    float *dxg = download(DX, ldx, n, H, t);
    /* a logit whose fp32 GEMM sum lies within rounding of a dtype tie may round the other way on the GPU: the
     * label's logit then moves the loss by one ulp of it (weighted), and the lse by its softmax share */
    size_t lbad = 0, lfirst = 0;
    for (int64_t i = 0; i < n; i++) {
        const double zl = lab[i] >= 0 && lab[i] < V ? fabs(lr[i] / (wt[i] ? wt[i] : 1) - lser[i]) : 0;
        const double lim = 5e-5 * fabs(lr[i]) + 1e-7 + wt[i] * ulp(t) * (zl + 1.0);
        if (!(fabs(lg[i] - lr[i]) <= lim) && !lbad++)
            lfirst = (size_t)i;
    }
    printf("  %s %-34s %zu of %lld rows outside tolerance%s", lbad ? "FAIL" : "PASS", "loss per token (weighted)",
           lbad, (long long)n, lbad ? "" : "\n");
    if (lbad)
        printf("; first at row %zu: got %.7g, want %.7g\n", lfirst, (double)lg[lfirst], lr[lfirst]);
    ok &= lbad == 0;
    ok &= close_to("lse per token", lseg, lser, 1, n, 2e-4, 1e-7);
    ok &= close_to(acc ? "dx (accumulated)" : "dx", dxg, dxr, n, H, ulp(t), 0.05 * ulp(t));
    printf("  %s bad labels counted: %d (want %d)\n", bad == nbad ? "PASS" : "FAIL", bad, nbad);
    ok &= bad == nbad;
    lg_xent_free(XE);
    cuMemFree(X), cuMemFree(W), cuMemFree(LB), cuMemFree(WT), cuMemFree(LS), cuMemFree(LSE), cuMemFree(DX);
    free(x), free(w), free(u), free(dx0), free(lab), free(wt), free(z), free(lr), free(lser), free(dxr);
    free(lg), free(lseg), free(dxg);
    return ok;
}

/* ---- adamw ---- */

#define AW_T 4
static int run_adamw(const struct tcase *c, uint64_t seed)
{
    const enum lg_dtype t = c->t;
    const size_t e = lg_dtype_size(t);
    const int64_t K = 256, M = 192, r = c->rank[0], ldw = lg_lora_ext_ld(K, (int)r);
    struct lg_lora_params lp = {.in_features = K, .out_features = M, .rank = (int)r, .alpha = 2.0f * r,
                                .dtype = t, .layer_id = 3};
    lg_lora_t *L;
    CHECK(lg_lora_init(ctx, &lp, &L));
    /* A, B with their copies inside FusedLoRA's buffer, and two tensors without a copy */
    const int64_t count[AW_T] = {r * K, M * r, 1000, 12004};
    float *hp[AW_T], *hg[AW_T], *hm[AW_T], *hv[AW_T];
    CUdeviceptr dp[AW_T], dg[AW_T], dm[AW_T], dv[AW_T];
    struct lg_adamw_tensor tt[AW_T];
    for (int i = 0; i < AW_T; i++) {
        const size_t b = sizeof(float) * (size_t)count[i];
        hp[i] = rnd((size_t)count[i], seed + 10 + (uint64_t)i, 0.1f, t); /* dtype-exact: the copies start equal */
        hm[i] = calloc((size_t)count[i], sizeof(float)), hv[i] = calloc((size_t)count[i], sizeof(float));
        hg[i] = malloc(b);
        dp[i] = upload_new(hp[i], count[i], 1, count[i], LG_FP32);
        dm[i] = upload_new(hm[i], count[i], 1, count[i], LG_FP32), dv[i] = upload_new(hv[i], count[i], 1, count[i], LG_FP32);
        dg[i] = lg_dev_alloc(b);
        tt[i] = (struct lg_adamw_tensor){.p = dp[i], .g = dg[i], .m = dm[i], .v = dv[i], .count = count[i]};
    }
    tt[0].half = lg_lora_weights(L) + (CUdeviceptr)((size_t)(M * ldw) * e), tt[0].half_cols = K, tt[0].half_ld = ldw;
    tt[1].half = lg_lora_weights(L) + (CUdeviceptr)((size_t)K * e), tt[1].half_cols = r, tt[1].half_ld = ldw;
    uint16_t *a0 = to_half(hp[0], (size_t)count[0], t), *b0 = to_half(hp[1], (size_t)count[1], t);
    CHECK(lg_lora_set_weights(L, NULL, a0, b0, NULL));
    struct lg_adamw_params ap = {.dtype = t, .ntensors = AW_T, .tensors = tt, .chunk = 2048};
    lg_adamw_t *A;
    CHECK(lg_adamw_init(ctx, &ap, &A));
    const struct lg_adamw_hyper hy = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1,
                                      .max_grad_norm = c->c / 1000.0};
    const struct lg_ref_adamw ro = {.lr = hy.lr, .beta1 = hy.beta1, .beta2 = hy.beta2, .eps = hy.eps,
                                    .weight_decay = hy.weight_decay, .max_grad_norm = hy.max_grad_norm};
    struct lg_ref_params rl = {.n = AW_T, .p = hp, .g = hg, .m = hm, .v = hv, .count = count};
    int ok = 1;
    int64_t applied = 0;
    for (int s = 1; s <= c->a; s++) {
        float *before[AW_T];
        for (int i = 0; i < AW_T; i++) {
            lg_test_fill(hg[i], (size_t)count[i], seed + 1000 * (uint64_t)s + (uint64_t)i, 1.0f);
            if (s == c->b && i == 1)
                hg[i][5] = NAN;
            lg_dev_upload(dg[i], count[i], hg[i], 1, count[i], LG_FP32);
            before[i] = download(dp[i], count[i], 1, count[i], LG_FP32);
        }
        CHECK(lg_adamw_step(A, &hy, 0));
        struct lg_adamw_status st;
        CHECK(lg_adamw_read_status(A, 0, &st));
        double norm;
        int skipped;
        CHECK(lg_ref_adamw_step(&ro, &rl, applied + 1, &norm, &skipped));
        applied += !skipped;
        double clip = (ro.max_grad_norm > 0 && isfinite(norm)) ? ro.max_grad_norm / (norm + 1e-6) : 1.0;
        clip = clip < 1.0 ? clip : 1.0;
        const int sok = st.skipped == skipped && st.step == applied &&
                        (skipped ? !isfinite(st.norm) : fabs(st.norm - norm) <= 1e-12 * norm &&
                                                            (clip >= 1.0 ? st.clip == 1.0 : fabs(st.clip - clip) <= 1e-12));
        printf("  %s step %d: norm %.9g (ref %.9g), clip %.6g, skipped %d (ref %d), steps applied %lld (ref %lld)\n",
               sok ? "PASS" : "FAIL", s, st.norm, norm, st.clip, st.skipped, skipped, (long long)st.step,
               (long long)applied);
        ok &= sok;
        for (int i = 0; i < AW_T; i++) {
            char what[48];
            float *gp = download(dp[i], count[i], 1, count[i], LG_FP32);
            float *gm = download(dm[i], count[i], 1, count[i], LG_FP32), *gv = download(dv[i], count[i], 1, count[i], LG_FP32);
            if (skipped) {
                snprintf(what, sizeof what, "tensor %d: p untouched (skipped)", i);
                ok &= same_bits(what, gp, before[i], 1, count[i]);
            }
            snprintf(what, sizeof what, "tensor %d: p", i);
            ok &= close_f(what, gp, hp[i], 1, count[i], 2e-6, 1e-6);
            snprintf(what, sizeof what, "tensor %d: m", i);
            ok &= close_f(what, gm, hm[i], 1, count[i], 2e-6, 1e-6);
            snprintf(what, sizeof what, "tensor %d: v", i);
            ok &= close_f(what, gv, hv[i], 1, count[i], 2e-6, 1e-6);
            if (i < 2) { /* the dtype copy inside FusedLoRA's buffer is the rounded master */
                uint16_t *ha = malloc(sizeof(uint16_t) * (size_t)count[0]), *hb = malloc(sizeof(uint16_t) * (size_t)count[1]);
                CHECK(lg_lora_get_adapter(L, ha, hb));
                const uint16_t *got = i == 0 ? ha : hb;
                size_t bad = 0;
                for (int64_t k = 0; k < count[i]; k++)
                    bad += got[k] != lg_f32_to_half(t, gp[k]);
                printf("  %s tensor %d: half copy = rounded master (%zu differ)\n", bad ? "FAIL" : "PASS", i, bad);
                ok &= bad == 0;
                free(ha), free(hb);
            }
            free(gp), free(gm), free(gv), free(before[i]);
        }
    }
    lg_adamw_free(A);
    lg_lora_free(L);
    for (int i = 0; i < AW_T; i++) {
        free(hp[i]), free(hg[i]), free(hm[i]), free(hv[i]);
        cuMemFree(dp[i]), cuMemFree(dg[i]), cuMemFree(dm[i]), cuMemFree(dv[i]);
    }
    free(a0), free(b0);
    return ok;
}

/* ---- determinism ---- */

/* The same call twice gives the same bits: the norm with S and with the correction, and the LM head. */
static int run_determinism(uint64_t seed)
{
    const enum lg_dtype t = LG_BF16;
    const size_t e = 2;
    const int64_t n = 1000, H = 1024, ldy = lg_lora_ext_ld(H, 48), V = 32000, ch = 256;
    struct lg_norm_params np = {.hidden = H, .eps = 1e-5f, .dtype = t, .nlora = 3,
                                .lora = {{16, 32, 0.1f, 1}, {16, 32, 0.1f, 2}, {16, 32, 0.1f, 3}}};
    lg_norm_t *N;
    CHECK(lg_norm_init(ctx, &np, &N));
    float *x = rnd((size_t)(n * H), seed, 1.0f, t), *a = rnd((size_t)(48 * H), seed + 1, 0.05f, t);
    float *gam = rnd((size_t)H, seed + 2, 1.0f, t), *w = rnd((size_t)(V * 64), seed + 3, 1.0f, t);
    CUdeviceptr X = upload_new(x, H, n, H, t), R = upload_new(x, H, n, H, t), Hh = lg_dev_alloc((size_t)(n * H) * e);
    CUdeviceptr Y = lg_dev_alloc((size_t)(n * ldy) * e), RS = lg_dev_alloc((size_t)n * 4), G = upload_new(gam, H, 1, H, t);
    CUdeviceptr A = upload_new(a, H, 48, H, t), D = lg_dev_alloc((size_t)(n * H) * e);
    CUdeviceptr W = upload_new(w, 64, V, 64, t), LB = lg_dev_alloc((size_t)n * 4), WT = lg_dev_alloc((size_t)n * 4);
    CUdeviceptr LS = lg_dev_alloc((size_t)n * 4), DX = lg_dev_alloc((size_t)(n * 64) * e);
    int32_t *lab = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        lab[i] = (int32_t)((i * 7919) % V);
    CU_CHECK(cuMemcpyHtoD(LB, lab, sizeof(int32_t) * (size_t)n));
    CU_CHECK(cuMemsetD32(WT, 0x3a800000u, (size_t)n)); /* 1/1024 */
    struct lg_norm_fwd f = {.n = n, .x = X, .ldx = H, .res = R, .ldres = H, .h = Hh, .ldh = H, .gamma = G, .y = Y,
                            .ldy = ldy, .rstd = RS, .with_s = 1, .seed = 9};
    struct lg_norm_bwd b = {.n = n, .dy = X, .lddy = H, .h = Hh, .ldh = H, .rstd = RS, .gamma = G, .dres = D,
                            .lddres = H, .correct = 1, .seed = 9};
    for (int i = 0; i < 3; i++) {
        f.lora[i] = (struct lg_lora_reader_io){.a = A + (CUdeviceptr)((size_t)(16 * i * H) * e), .lda = H,
                                               .s_col = H + 16 * i};
        b.lora[i] = (struct lg_lora_reader_io){.a = f.lora[i].a, .lda = H, .ds = Y + (CUdeviceptr)((size_t)(H + 16 * i) * e),
                                               .ldds = ldy};
    }
    struct lg_xent_params xp = {.hidden = 64, .vocab = V, .dtype = t, .chunk = ch};
    lg_xent_t *XE;
    CHECK(lg_xent_init(ctx, &xp, &XE));
    struct lg_xent_run xr = {.n = n, .x = X, .ldx = H, .w = W, .ldw = 64, .labels = LB, .weight = WT, .loss = LS,
                             .dx = DX, .lddx = 64};
    const size_t ny = (size_t)(n * ldy) * e, nd = (size_t)(n * H) * e, nx = (size_t)(n * 64) * e;
    unsigned char *y1 = malloc(ny), *y2 = malloc(ny), *d1 = malloc(nd), *d2 = malloc(nd), *x1 = malloc(nx), *x2 = malloc(nx);
    unsigned char *l1 = malloc((size_t)n * 4), *l2 = malloc((size_t)n * 4);
    for (int rep = 0; rep < 2; rep++) {
        CU_CHECK(cuMemsetD8(Y, 0, ny));
        CHECK(lg_norm_forward(N, &f, 0));
        CHECK(lg_norm_backward(N, &b, 0));
        CHECK(lg_xent_apply(XE, &xr, 0));
        CU_CHECK(cuCtxSynchronize());
        CU_CHECK(cuMemcpyDtoH(rep ? y2 : y1, Y, ny));
        CU_CHECK(cuMemcpyDtoH(rep ? d2 : d1, D, nd));
        CU_CHECK(cuMemcpyDtoH(rep ? x2 : x1, DX, nx));
        CU_CHECK(cuMemcpyDtoH(rep ? l2 : l1, LS, (size_t)n * 4));
    }
    int ok = !memcmp(y1, y2, ny) && !memcmp(d1, d2, nd) && !memcmp(x1, x2, nx) && !memcmp(l1, l2, (size_t)n * 4);
    printf("%s deterministic: norm forward (y, S), backward (with correction), LM head (loss, dx) bit for bit\n",
           ok ? "PASS" : "FAIL");
    lg_norm_free(N);
    lg_xent_free(XE);
    cuMemFree(X), cuMemFree(R), cuMemFree(Hh), cuMemFree(Y), cuMemFree(RS), cuMemFree(G), cuMemFree(A), cuMemFree(D);
    cuMemFree(W), cuMemFree(LB), cuMemFree(WT), cuMemFree(LS), cuMemFree(DX);
    free(x), free(a), free(gam), free(w), free(lab), free(y1), free(y2), free(d1), free(d2), free(x1), free(x2);
    free(l1), free(l2);
    return ok;
}

/* ---- bad calls ---- */

static void expect_bad(enum lg_status got, enum lg_status want, const char *field, const char *call)
{
    ck_assert_msg(got == want, "%s: want %s, got %s (%s)", call, lg_status_str(want), lg_status_str(got),
                  lg_last_error());
    ck_assert_msg(strstr(lg_last_error(), field) != NULL, "%s: '%s' not named in: %s", call, field, lg_last_error());
}
#define EXPECT_BAD(call, want, field) expect_bad((call), (want), (field), #call)

static void run_bad_calls(void)
{
    const size_t e = 2;
    CUdeviceptr B = lg_dev_alloc(64 * 1024 * e);
    lg_norm_t *N;
    struct lg_norm_params np = {.hidden = 256, .eps = 1e-5f, .dtype = LG_BF16};
    struct lg_norm_params bad = np;
    bad.hidden = 200, EXPECT_BAD(lg_norm_init(ctx, &bad, &N), LG_ERR_INVALID, "hidden");
    bad = np, bad.dtype = LG_FP32, EXPECT_BAD(lg_norm_init(ctx, &bad, &N), LG_ERR_UNSUPPORTED, "fp32");
    bad = np, bad.nlora = 4, EXPECT_BAD(lg_norm_init(ctx, &bad, &N), LG_ERR_INVALID, "nlora");
    bad = np, bad.nlora = 1, bad.lora[0] = (struct lg_lora_reader){12, 24, 0, 0};
    EXPECT_BAD(lg_norm_init(ctx, &bad, &N), LG_ERR_INVALID, "rank");
    bad.lora[0] = (struct lg_lora_reader){16, 32, 1.0f, 0}, EXPECT_BAD(lg_norm_init(ctx, &bad, &N), LG_ERR_INVALID, "dropout");
    bad.lora[0] = (struct lg_lora_reader){128, 32, 0, 0}, bad.nlora = 2, bad.lora[1] = bad.lora[0];
    ck_assert_int_ne(lg_norm_init(ctx, &bad, &N), LG_OK); /* 2 x 128 accumulators: too many for one kernel */
    CHECK(lg_norm_init(ctx, &np, &N));
    struct lg_norm_fwd f = {.n = 64, .res = B, .ldres = 256, .gamma = B, .y = B + 64 * 256 * e, .ldy = 256, .rstd = B};
    struct lg_norm_fwd g = f;
    g.ldres = 250, EXPECT_BAD(lg_norm_forward(N, &g, 0), LG_ERR_INVALID, "res");
    g = f, g.ldy = 260, EXPECT_BAD(lg_norm_forward(N, &g, 0), LG_ERR_INVALID, "y");
    g = f, g.y = f.y + 2, EXPECT_BAD(lg_norm_forward(N, &g, 0), LG_ERR_INVALID, "aligned");
    g = f, g.n = 0, EXPECT_BAD(lg_norm_forward(N, &g, 0), LG_ERR_INVALID, "n =");
    g = f, g.with_s = 1, EXPECT_BAD(lg_norm_forward(N, &g, 0), LG_ERR_INVALID, "nlora");
    g = f, g.x = B, g.ldx = 256, g.h = 0, EXPECT_BAD(lg_norm_forward(N, &g, 0), LG_ERR_INVALID, "h");
    struct lg_norm_bwd b = {.n = 64, .dy = B, .lddy = 256, .h = B, .ldh = 256, .rstd = B, .gamma = B, .dres = B,
                            .lddres = 256, .accumulate = 1};
    EXPECT_BAD(lg_norm_backward(N, &b, 0), LG_ERR_INVALID, "dres");
    lg_norm_free(N);

    lg_rope_t *R;
    float inv[64];
    for (int i = 0; i < 64; i++)
        inv[i] = 1.0f / (float)(i + 1);
    struct lg_rope_params rp = {.head_dim = 100, .dtype = LG_BF16, .inv_freq = inv};
    EXPECT_BAD(lg_rope_init(ctx, &rp, &R), LG_ERR_INVALID, "head_dim");
    rp.head_dim = 128, rp.inv_freq = NULL, EXPECT_BAD(lg_rope_init(ctx, &rp, &R), LG_ERR_INVALID, "inv_freq");
    rp.inv_freq = inv;
    CHECK(lg_rope_init(ctx, &rp, &R));
    struct lg_rope_run rr = {.n = 8, .q = B, .ldq = 4 * 128, .hq = 4, .k = B, .ldk = 100, .hk = 1, .cu_seqlens = B, .nseq = 2};
    EXPECT_BAD(lg_rope_apply(R, &rr, 0), LG_ERR_INVALID, "k");
    rr.ldk = 128, rr.nseq = 9, EXPECT_BAD(lg_rope_apply(R, &rr, 0), LG_ERR_INVALID, "nseq");
    lg_rope_free(R);

    lg_swiglu_t *S;
    struct lg_swiglu_params sp = {.inter = 100, .dtype = LG_BF16};
    EXPECT_BAD(lg_swiglu_init(ctx, &sp, &S), LG_ERR_INVALID, "inter");
    sp.inter = 256;
    CHECK(lg_swiglu_init(ctx, &sp, &S));
    struct lg_swiglu_fwd sf = {.n = 4, .g = B, .ldg = 256, .u = B, .ldu = 256, .a = B, .lda = 256};
    EXPECT_BAD(lg_swiglu_forward(S, &sf, 0), LG_ERR_INVALID, "overwrite");
    sf.a = B + 4096, sf.with_s = 1, EXPECT_BAD(lg_swiglu_forward(S, &sf, 0), LG_ERR_INVALID, "with_lora");
    lg_swiglu_free(S);

    lg_xent_t *XE;
    struct lg_xent_params xp = {.hidden = 64, .vocab = 1001, .dtype = LG_BF16};
    EXPECT_BAD(lg_xent_init(ctx, &xp, &XE), LG_ERR_INVALID, "vocab");
    xp.vocab = 1000, xp.chunk = 16;
    CHECK(lg_xent_init(ctx, &xp, &XE));
    struct lg_xent_run xr = {.n = 4, .x = B, .ldx = 64, .w = B, .ldw = 64, .labels = B, .weight = B, .loss = B,
                             .dx = B, .lddx = 64};
    EXPECT_BAD(lg_xent_apply(XE, &xr, 0), LG_ERR_INVALID, "dx");
    xr.dx = B + 2048, xr.ldw = 60, EXPECT_BAD(lg_xent_apply(XE, &xr, 0), LG_ERR_INVALID, "w");
    lg_xent_free(XE);

    lg_adamw_t *A;
    struct lg_adamw_tensor tt = {.p = B, .g = B + 64, .m = B + 128, .v = B + 192, .count = 6};
    struct lg_adamw_params ap = {.dtype = LG_BF16, .ntensors = 1, .tensors = &tt};
    EXPECT_BAD(lg_adamw_init(ctx, &ap, &A), LG_ERR_INVALID, "count");
    tt.count = 8, tt.g = B + 4, EXPECT_BAD(lg_adamw_init(ctx, &ap, &A), LG_ERR_INVALID, "g");
    tt.g = B + 64, tt.half = B + 1024, tt.half_cols = 3, EXPECT_BAD(lg_adamw_init(ctx, &ap, &A), LG_ERR_INVALID, "half_cols");
    tt.half = 0;
    CHECK(lg_adamw_init(ctx, &ap, &A));
    struct lg_adamw_hyper hy = {.lr = 1e-3, .beta1 = 1.0, .beta2 = 0.999};
    EXPECT_BAD(lg_adamw_step(A, &hy, 0), LG_ERR_INVALID, "beta1");
    lg_adamw_free(A);

    lg_embed_t *E;
    struct lg_embed_params ep = {.hidden = 12, .vocab = 10, .dtype = LG_BF16};
    EXPECT_BAD(lg_embed_init(ctx, &ep, &E), LG_ERR_INVALID, "hidden");
    cuMemFree(B);
    printf("PASS bad calls: every one an error status naming the argument\n");
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
    /* rope: a = hq, b = hkv, c = samples (lengths drawn; one of length 1 always) */
    {T_ROPE, LG_BF16, 300, 128, 0, {0}, 0, F_LLAMA3, 4, 2, 5},
    {T_ROPE, LG_FP16, 1, 64, 0, {0}, 0, 0, 2, 1, 1},
    {T_ROPE, LG_BF16, 4099, 128, 0, {0}, 0, F_LLAMA3 | F_PAD, 8, 2, 2},
    {T_ROPE, LG_BF16, 257, 128, 0, {0}, 0, F_PAD, 7, 1, 9},
    {T_SWIGLU, LG_BF16, 77, 512, 0, {0}, 0, 0, 0, 0, 0},
    {T_SWIGLU, LG_FP16, 1, 1024, 0, {0}, 0, F_INPLACE | F_PAD, 0, 0, 0},
    {T_SWIGLU, LG_BF16, 333, 1024, 1, {16, 0, 0}, 0.1f, F_WITHS, 0, 0, 0},
    {T_SWIGLU, LG_FP16, 129, 2048, 1, {24, 0, 0}, 0.0f, F_WITHS | F_PAD, 0, 0, 0},
    {T_SWIGLU, LG_BF16, 1000, 14336, 1, {16, 0, 0}, 0.1f, F_WITHS | F_INPLACE, 0, 0, 0},
    {T_EMBED, LG_BF16, 333, 256, 0, {0}, 0, 0, 1000, 0, 0},
    {T_EMBED, LG_FP16, 1, 4096, 0, {0}, 0, F_PAD, 7, 0, 0},
    /* xent: a = vocab / 8, b = chunk (rows), every other chunk 3 holds only ignored labels */
    {T_XENT, LG_BF16, 37, 128, 0, {0}, 0, 0, 128256 / 8, 8, 0},
    {T_XENT, LG_BF16, 29, 64, 0, {0}, 0, F_TIED | F_ACC, 152064 / 8, 8, 0},
    {T_XENT, LG_FP16, 5, 64, 0, {0}, 0, 0, 4104 / 8, 2, 0},
    {T_XENT, LG_BF16, 130, 256, 0, {0}, 0, F_PAD, 5000 / 8, 64, 0},
    /* adamw: a = steps, b = step with a NaN gradient (0: none), c = max_grad_norm x 1000 (0: no clipping) */
    {T_ADAMW, LG_BF16, 0, 0, 0, {16, 0, 0}, 0, 0, 3, 0, 500},
    {T_ADAMW, LG_FP16, 0, 0, 0, {8, 0, 0}, 0, 0, 3, 2, 0},
    {T_ADAMW, LG_BF16, 0, 0, 0, {64, 0, 0}, 0, 0, 4, 3, 100000},
};

START_TEST(op_matches_reference)
{
    const struct tcase *c = &cases[_i];
    const uint64_t seed = case_seed(_i);
    printf("case %d: %s %s n=%lld k=%lld nlora=%d ranks=%d/%d/%d p=%g flags=%#x (%d, %d, %d) seed %llu\n", _i,
           op_name[c->op], lg_dtype_name(c->t), (long long)c->n, (long long)c->k, c->nlora, c->rank[0], c->rank[1],
           c->rank[2], c->p, c->flags, c->a, c->b, c->c, (unsigned long long)seed);
    int ok = 0;
    switch (c->op) {
    case T_NORM_FWD: ok = run_norm_fwd(c, seed); break;
    case T_NORM_BWD: ok = run_norm_bwd(c, seed); break;
    case T_PLACE: ok = run_placement(c, seed); break;
    case T_ROPE: ok = run_rope(c, seed); break;
    case T_SWIGLU: ok = run_swiglu(c, seed); break;
    case T_EMBED: ok = run_embed(c, seed); break;
    case T_XENT: ok = run_xent(c, seed); break;
    case T_ADAMW: ok = run_adamw(c, seed); break;
    }
    printf("%s case %d (%s)\n", ok ? "PASS" : "FAIL", _i, op_name[c->op]);
    fflush(stdout);
    ck_assert_msg(ok, "case %d (%s) failed: see the lines above", _i, op_name[c->op]);
}
END_TEST

START_TEST(deterministic) { ck_assert(run_determinism(case_seed(1000))); }
END_TEST

START_TEST(bad_calls_are_errors) { run_bad_calls(); }
END_TEST

int main(void)
{
    lg_test_require_gpu();
    struct lg_ctx_params cp = {.device = 0};
    CHECK(lg_ctx_init(&cp, &ctx));
    printf("device: %s (sm_%d, %d SMs)\n", lg_ctx_device_name(ctx), lg_ctx_arch(ctx), lg_ctx_sm_count(ctx));
    Suite *s = suite_create("decoder_ops_gpu");
    TCase *tc = tcase_create("gpu");
    tcase_set_timeout(tc, 0);
    tcase_add_loop_test(tc, op_matches_reference, 0, (int)(sizeof cases / sizeof cases[0]));
    tcase_add_test(tc, deterministic);
    tcase_add_test(tc, bad_calls_are_errors);
    suite_add_tcase(s, tc);
    int failed = lg_test_run(s, 1);
    lg_ctx_free(ctx);
    return failed ? 1 : 0;
}
