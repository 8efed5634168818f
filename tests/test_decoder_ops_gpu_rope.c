/* test_decoder_ops_gpu_rope.c: RoPE, the decoder ops (lg_decoder_ops.h) on the GPU against the CPU reference
 * (lg_ref_ops.h, lg_ref.h) and FusedLoRA's own kernels, as a table of cases
 * in the style of ggml's test-backend-ops:
 *   rope      llama3 and plain frequencies, packed samples (one of length 1), forward and backward, strided q/k
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

/* ---- rope ---- */

/* cu_seqlens of n tokens in nseq samples with random lengths, one of them (the middle one) of length 1. */
static int32_t *make_cu(int64_t n, int nseq, uint64_t seed)
{
    int32_t *cu = malloc(sizeof(int32_t) * (size_t)(nseq + 1));
    float *u = dec_rnd((size_t)nseq, seed, 1.0f, LG_FP32);
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
    CHECK(lg_rope_init(dec_ctx, &rpp, &R));
    CUdeviceptr dcu = lg_dev_alloc(sizeof(int32_t) * (size_t)(c->c + 1));
    CU_CHECK(cuMemcpyHtoD(dcu, cu, sizeof(int32_t) * (size_t)(c->c + 1)));
    struct lg_ref_seqs sq = {.n = n, .nseq = c->c, .cu = cu};
    int ok = 1;
    for (int dir = 0; dir < 2; dir++) {
        float *q = dec_rnd((size_t)(n * hq * d), seed + 10 + (uint64_t)dir, 1.0f, t);
        float *k = dec_rnd((size_t)(n * hk * d), seed + 20 + (uint64_t)dir, 1.0f, t);
        CUdeviceptr dq = dec_upload_new(q, ldq, n, hq * d, t), dk = dec_upload_new(k, ldk, n, hk * d, t);
        struct lg_rope_run rr = {.n = n, .q = dq, .ldq = ldq, .hq = (int)hq, .k = dk, .ldk = ldk, .hk = (int)hk,
                                 .cu_seqlens = dcu, .nseq = c->c, .backward = dir};
        CHECK(lg_rope_apply(R, &rr, 0));
        CU_CHECK(cuCtxSynchronize());
        float *gq = dec_download(dq, ldq, n, hq * d, t), *gk = dec_download(dk, ldk, n, hk * d, t);
        float *rq = malloc(sizeof(float) * (size_t)(n * hq * d)), *rk = malloc(sizeof(float) * (size_t)(n * hk * d));
        if (dir == 0) {
            CHECK(lg_ref_rope_forward(&rp, &sq, hq, q, rq));
            CHECK(lg_ref_rope_forward(&rp, &sq, hk, k, rk));
        } else {
            CHECK(lg_ref_rope_backward(&rp, &sq, hq, q, rq));
            CHECK(lg_ref_rope_backward(&rp, &sq, hk, k, rk));
        }
        ok &= dec_close_f(dir ? "dq (backward)" : "q (forward)", gq, rq, n, hq * d, dec_ulp(t), 0.01 * dec_ulp(t));
        ok &= dec_close_f(dir ? "dk (backward)" : "k (forward)", gk, rk, n, hk * d, dec_ulp(t), 0.01 * dec_ulp(t));
        if (pad) {
            float *tail = dec_download(dq + (CUdeviceptr)((size_t)(hq * d) * e), ldq, n, pad, t);
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

static const struct tcase cases[] = {
    /* op        dtype    n     k     nl ranks        p     flags */
    /* rope: a = hq, b = hkv, c = samples (lengths drawn; one of length 1 always) */
    {T_ROPE, LG_BF16, 300, 128, 0, {0}, 0, F_LLAMA3, 4, 2, 5},
    {T_ROPE, LG_FP16, 1, 64, 0, {0}, 0, 0, 2, 1, 1},
    {T_ROPE, LG_BF16, 4099, 128, 0, {0}, 0, F_LLAMA3 | F_PAD, 8, 2, 2},
    {T_ROPE, LG_BF16, 257, 128, 0, {0}, 0, F_PAD, 7, 1, 9},
};


int main(void)
{
    return lg_dec_gpu_main("decoder_ops_gpu_rope", cases, (int)(sizeof cases / sizeof cases[0]), run_rope, NULL);
}
