/* test_decoder_ops_gpu_adamw.c: AdamW, the decoder ops (lg_decoder_ops.h) on the GPU against the CPU reference
 * (lg_ref_ops.h, lg_ref.h) and FusedLoRA's own kernels, as a table of cases
 * in the style of ggml's test-backend-ops:
 *   adamw     steps against lg_ref_adamw_step with clipping, the half copies inside FusedLoRA's buffer, an
 *             injected NaN (step skipped, nothing changed)
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
    CHECK(lg_lora_init(dec_ctx, &lp, &L));
    /* A, B with their copies inside FusedLoRA's buffer, and two tensors without a copy */
    const int64_t count[AW_T] = {r * K, M * r, 1000, 12004};
    float *hp[AW_T], *hg[AW_T], *hm[AW_T], *hv[AW_T];
    CUdeviceptr dp[AW_T], dg[AW_T], dm[AW_T], dv[AW_T];
    struct lg_adamw_tensor tt[AW_T];
    for (int i = 0; i < AW_T; i++) {
        const size_t b = sizeof(float) * (size_t)count[i];
        hp[i] = dec_rnd((size_t)count[i], seed + 10 + (uint64_t)i, 0.1f, t); /* dtype-exact: the copies start equal */
        hm[i] = calloc((size_t)count[i], sizeof(float)), hv[i] = calloc((size_t)count[i], sizeof(float));
        hg[i] = malloc(b);
        dp[i] = dec_upload_new(hp[i], count[i], 1, count[i], LG_FP32);
        dm[i] = dec_upload_new(hm[i], count[i], 1, count[i], LG_FP32), dv[i] = dec_upload_new(hv[i], count[i], 1, count[i], LG_FP32);
        dg[i] = lg_dev_alloc(b);
        tt[i] = (struct lg_adamw_tensor){.p = dp[i], .g = dg[i], .m = dm[i], .v = dv[i], .count = count[i]};
    }
    tt[0].half = lg_lora_weights(L) + (CUdeviceptr)((size_t)(M * ldw) * e), tt[0].half_cols = K, tt[0].half_ld = ldw;
    tt[1].half = lg_lora_weights(L) + (CUdeviceptr)((size_t)K * e), tt[1].half_cols = r, tt[1].half_ld = ldw;
    uint16_t *a0 = dec_to_half(hp[0], (size_t)count[0], t), *b0 = dec_to_half(hp[1], (size_t)count[1], t);
    CHECK(lg_lora_set_weights(L, NULL, a0, b0, NULL));
    struct lg_adamw_params ap = {.dtype = t, .ntensors = AW_T, .tensors = tt, .chunk = 2048};
    lg_adamw_t *A;
    CHECK(lg_adamw_init(dec_ctx, &ap, &A));
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
            before[i] = dec_download(dp[i], count[i], 1, count[i], LG_FP32);
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
            float *gp = dec_download(dp[i], count[i], 1, count[i], LG_FP32);
            float *gm = dec_download(dm[i], count[i], 1, count[i], LG_FP32), *gv = dec_download(dv[i], count[i], 1, count[i], LG_FP32);
            if (skipped) {
                snprintf(what, sizeof what, "tensor %d: p untouched (skipped)", i);
                ok &= dec_same_bits(what, gp, before[i], 1, count[i]);
            }
            snprintf(what, sizeof what, "tensor %d: p", i);
            ok &= dec_close_f(what, gp, hp[i], 1, count[i], 2e-6, 1e-6);
            snprintf(what, sizeof what, "tensor %d: m", i);
            ok &= dec_close_f(what, gm, hm[i], 1, count[i], 2e-6, 1e-6);
            snprintf(what, sizeof what, "tensor %d: v", i);
            ok &= dec_close_f(what, gv, hv[i], 1, count[i], 2e-6, 1e-6);
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

static const struct tcase cases[] = {
    /* op        dtype    n     k     nl ranks        p     flags */
    /* adamw: a = steps, b = step with a NaN gradient (0: none), c = max_grad_norm x 1000 (0: no clipping) */
    {T_ADAMW, LG_BF16, 0, 0, 0, {16, 0, 0}, 0, 0, 3, 0, 500},
    {T_ADAMW, LG_FP16, 0, 0, 0, {8, 0, 0}, 0, 0, 3, 2, 0},
    {T_ADAMW, LG_BF16, 0, 0, 0, {64, 0, 0}, 0, 0, 4, 3, 100000},
};


int main(void)
{
    return lg_dec_gpu_main("decoder_ops_gpu_adamw", cases, (int)(sizeof cases / sizeof cases[0]), run_adamw, NULL);
}
