/* test_decoder_ops_gpu_head.c: the embedding and the LM head, the decoder ops (lg_decoder_ops.h) on the GPU against the CPU reference
 * (lg_ref_ops.h, lg_ref.h) and FusedLoRA's own kernels, as a table of cases
 * in the style of ggml's test-backend-ops:
 *   embed     gather, with an out-of-range id (zero row, counted)
 *   xent      the chunked LM head against materialised logits: ignored labels, an all-ignored chunk, vocab
 *             128,256 and 152,064, tied and untied heads, accumulation into dx
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

/* ---- embed ---- */

static int run_embed(const struct tcase *c, uint64_t seed)
{
    const enum lg_dtype t = c->t;
    const int64_t n = c->n, H = c->k, V = c->a, pad = (c->flags & F_PAD) ? 8 : 0;
    float *tab = dec_rnd((size_t)(V * H), seed + 1, 1.0f, t), *u = dec_rnd((size_t)n, seed + 2, 1.0f, LG_FP32);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    int nbad = 0;
    for (int64_t i = 0; i < n; i++) {
        ids[i] = (int32_t)((double)fabsf(u[i]) * (double)V);
        ids[i] = ids[i] >= V ? (int32_t)V - 1 : ids[i];
    }
    if (n > 2)
        ids[n / 2] = (int32_t)V, ids[1] = -1, nbad = 2; /* out of range both ways: zero rows, counted */
    CUdeviceptr T = dec_upload_new(tab, H + pad, V, H, t), O = lg_dev_alloc((size_t)(n * (H + pad)) * lg_dtype_size(t));
    CUdeviceptr I = lg_dev_alloc(sizeof(int32_t) * (size_t)n);
    lg_dev_poison(O, (size_t)(n * (H + pad)) * lg_dtype_size(t));
    CU_CHECK(cuMemcpyHtoD(I, ids, sizeof(int32_t) * (size_t)n));
    struct lg_embed_params ep = {.hidden = H, .vocab = V, .dtype = t};
    lg_embed_t *E;
    CHECK(lg_embed_init(dec_ctx, &ep, &E));
    struct lg_embed_run er = {.n = n, .ids = I, .table = T, .ldt = H + pad, .out = O, .ldo = H + pad};
    CHECK(lg_embed_gather(E, &er, 0));
    int bad = -1;
    CHECK(lg_embed_bad_ids(E, 0, &bad));
    float *got = dec_download(O, H + pad, n, H, t), *want = calloc((size_t)(n * H), sizeof(float));
    for (int64_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < V)
            memcpy(want + i * H, tab + (int64_t)ids[i] * H, sizeof(float) * (size_t)H);
    int ok = dec_same_bits("out = table[ids] (bad ids: zero rows)", got, want, n, H);
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
    float *x = dec_rnd((size_t)(n * H), seed + 1, 1.0f, t), *w = dec_rnd((size_t)(V * H), seed + 2, 3.0f / sqrtf((float)H), t);
    float *u = dec_rnd((size_t)n, seed + 3, 1.0f, LG_FP32), *dx0 = dec_rnd((size_t)(n * H), seed + 4, 0.01f, t);
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

    CUdeviceptr X = dec_upload_new(x, ldx, n, H, t), W = dec_upload_new(w, ldw, V, H, t);
    CUdeviceptr LB = lg_dev_alloc(sizeof(int32_t) * (size_t)n), WT = dec_upload_new(wt, n, 1, n, LG_FP32);
    CUdeviceptr LS = lg_dev_alloc(sizeof(float) * (size_t)n), LSE = lg_dev_alloc(sizeof(float) * (size_t)n);
    CUdeviceptr DX = acc ? dec_upload_new(dx0, ldx, n, H, t) : lg_dev_alloc((size_t)(n * ldx) * e);
    CU_CHECK(cuMemcpyHtoD(LB, lab, sizeof(int32_t) * (size_t)n));
    lg_dev_poison(LS, sizeof(float) * (size_t)n), lg_dev_poison(LSE, sizeof(float) * (size_t)n);
    if (!acc)
        lg_dev_poison(DX, (size_t)(n * ldx) * e);
    int ok = 1;
    if (tied) { /* the head is the embedding table: the same buffer serves the gather */
        struct lg_embed_params ep = {.hidden = H, .vocab = V, .dtype = t};
        lg_embed_t *E;
        CHECK(lg_embed_init(dec_ctx, &ep, &E));
        CUdeviceptr O = lg_dev_alloc((size_t)(n * H) * e), I = lg_dev_alloc(sizeof(int32_t) * (size_t)n);
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++)
            ids[i] = lab[i] < 0 || lab[i] >= V ? 0 : lab[i];
        CU_CHECK(cuMemcpyHtoD(I, ids, sizeof(int32_t) * (size_t)n));
        struct lg_embed_run er = {.n = n, .ids = I, .table = W, .ldt = ldw, .out = O, .ldo = H};
        CHECK(lg_embed_gather(E, &er, 0));
        float *got = dec_download(O, H, n, H, t), *want = malloc(sizeof(float) * (size_t)(n * H));
        for (int64_t i = 0; i < n; i++)
            memcpy(want + i * H, w + (int64_t)ids[i] * H, sizeof(float) * (size_t)H);
        ok &= dec_same_bits("tied: embed gather from the head", got, want, n, H);
        lg_embed_free(E);
        cuMemFree(O), cuMemFree(I);
        free(ids), free(got), free(want);
    }
    struct lg_xent_params xp = {.hidden = H, .vocab = V, .dtype = t, .chunk = chunk};
    lg_xent_t *XE;
    CHECK(lg_xent_init(dec_ctx, &xp, &XE));
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
    float *lg = dec_download(LS, n, 1, n, LG_FP32), *lseg = dec_download(LSE, n, 1, n, LG_FP32);
    float *dxg = dec_download(DX, ldx, n, H, t);
    /* a logit whose fp32 GEMM sum lies within rounding of a dtype tie may round the other way on the GPU: the
     * label's logit then moves the loss by one ulp of it (weighted), and the lse by its softmax share */
    size_t lbad = 0, lfirst = 0;
    for (int64_t i = 0; i < n; i++) {
        const double zl = lab[i] >= 0 && lab[i] < V ? fabs(lr[i] / (wt[i] ? wt[i] : 1) - lser[i]) : 0;
        const double lim = 5e-5 * fabs(lr[i]) + 1e-7 + wt[i] * dec_ulp(t) * (zl + 1.0);
        if (!(fabs(lg[i] - lr[i]) <= lim) && !lbad++)
            lfirst = (size_t)i;
    }
    printf("  %s %-34s %zu of %lld rows outside tolerance%s", lbad ? "FAIL" : "PASS", "loss per token (weighted)",
           lbad, (long long)n, lbad ? "" : "\n");
    if (lbad)
        printf("; first at row %zu: got %.7g, want %.7g\n", lfirst, (double)lg[lfirst], lr[lfirst]);
    ok &= lbad == 0;
    ok &= dec_close_to("lse per token", lseg, lser, 1, n, 2e-4, 1e-7);
    ok &= dec_close_to(acc ? "dx (accumulated)" : "dx", dxg, dxr, n, H, dec_ulp(t), 0.05 * dec_ulp(t));
    printf("  %s bad labels counted: %d (want %d)\n", bad == nbad ? "PASS" : "FAIL", bad, nbad);
    ok &= bad == nbad;
    lg_xent_free(XE);
    cuMemFree(X), cuMemFree(W), cuMemFree(LB), cuMemFree(WT), cuMemFree(LS), cuMemFree(LSE), cuMemFree(DX);
    free(x), free(w), free(u), free(dx0), free(lab), free(wt), free(z), free(lr), free(lser), free(dxr);
    free(lg), free(lseg), free(dxg);
    return ok;
}

static const struct tcase cases[] = {
    /* op        dtype    n     k     nl ranks        p     flags */
    {T_EMBED, LG_BF16, 333, 256, 0, {0}, 0, 0, 1000, 0, 0},
    {T_EMBED, LG_FP16, 1, 4096, 0, {0}, 0, F_PAD, 7, 0, 0},
    /* xent: a = vocab / 8, b = chunk (rows), every other chunk 3 holds only ignored labels */
    {T_XENT, LG_BF16, 37, 128, 0, {0}, 0, 0, 128256 / 8, 8, 0},
    {T_XENT, LG_BF16, 29, 64, 0, {0}, 0, F_TIED | F_ACC, 152064 / 8, 8, 0},
    {T_XENT, LG_FP16, 5, 64, 0, {0}, 0, 0, 4104 / 8, 2, 0},
    {T_XENT, LG_BF16, 130, 256, 0, {0}, 0, F_PAD, 5000 / 8, 64, 0},
};

static int run_case(const struct tcase *c, uint64_t seed)
{
    switch (c->op) {
    case T_EMBED: return run_embed(c, seed);
    case T_XENT: return run_xent(c, seed);
    default: return 0;
    }
}

int main(void)
{
    return lg_dec_gpu_main("decoder_ops_gpu_head", cases, (int)(sizeof cases / sizeof cases[0]), run_case, NULL);
}
