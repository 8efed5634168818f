/* test_decoder_ops_gpu_swiglu.c: SwiGLU, the decoder ops (lg_decoder_ops.h) on the GPU against the CPU reference
 * (lg_ref_ops.h, lg_ref.h) and FusedLoRA's own kernels, as a table of cases
 * in the style of ggml's test-backend-ops:
 *   swiglu    forward (plain and with down_proj's S, bit for bit FusedLoRA's), backward (in place too)
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
    float *g = dec_rnd((size_t)(n * I), seed + 1, 3.0f, t), *u = dec_rnd((size_t)(n * I), seed + 2, 1.0f, t);
    float *da = dec_rnd((size_t)(n * I), seed + 3, 1.0f, t);
    CUdeviceptr gu = lg_dev_alloc((size_t)(n * ldgu) * e), A = lg_dev_alloc((size_t)(n * lda) * e);
    lg_dev_poison(gu, (size_t)(n * ldgu) * e), lg_dev_poison(A, (size_t)(n * lda) * e);
    lg_dev_upload(gu, ldgu, g, n, I, t);
    lg_dev_upload(gu + (CUdeviceptr)((size_t)I * e), ldgu, u, n, I, t);
    float *ah = NULL;
    lg_lora_t *L = withs ? dec_reader_layer(c, 0, I, seed + 50, &ah) : NULL;
    struct lg_swiglu_params sp = {.inter = I, .dtype = t, .with_lora = withs, .lora = withs ? dec_reader(c, 0) : (struct lg_lora_reader){0}};
    lg_swiglu_t *S;
    CHECK(lg_swiglu_init(dec_ctx, &sp, &S));
    struct lg_swiglu_fwd f = {.n = n, .g = gu, .ldg = ldgu, .u = gu + (CUdeviceptr)((size_t)I * e), .ldu = ldgu, .a = A,
                              .lda = lda, .with_s = withs, .seed = seed};
    if (withs)
        f.lora = (struct lg_lora_reader_io){.a = dec_reader_a(L, I, r, t), .lda = lg_lora_ext_ld(I, r), .s_col = I};
    CHECK(lg_swiglu_forward(S, &f, 0));
    CU_CHECK(cuCtxSynchronize());
    float *ag = dec_download(A, lda, n, I, t), *ar = malloc(sizeof(float) * (size_t)(n * I));
    lg_ref_swiglu_forward(n * I, g, u, ar);
    int ok = dec_close_f("a = silu(g)·u", ag, ar, n, I, dec_ulp(t), 0.01 * dec_ulp(t));
    if (withs) {
        float *sg = dec_download(A + (CUdeviceptr)((size_t)I * e), lda, n, r, t);
        double *sr = dec_ref_s(c, 0, ag, n, I, ah, seed);
        ok &= dec_close_to("S (down_proj) vs reference", sg, sr, n, r, dec_ulp(t), 0.05 * dec_ulp(t));
        const int64_t ldl = lg_lora_ext_ld(I, r);
        CUdeviceptr xl = lg_dev_alloc((size_t)(n * ldl) * e), yl = lg_dev_alloc((size_t)(n * 64) * e);
        dec_copy_rows(xl, ldl, A, lda, n, I, e);
        struct lg_lora_fwd lf = {.n = n, .x = xl, .ldx = ldl, .y = yl, .ldy = 64, .seed = seed};
        CHECK(lg_lora_forward(L, &lf, 0));
        CU_CHECK(cuCtxSynchronize());
        float *sl = dec_download(xl + (CUdeviceptr)((size_t)I * e), ldl, n, r, t);
        ok &= dec_same_bits("S vs FusedLoRA down kernel", sg, sl, n, r);
        free(sg), free(sr), free(sl);
        cuMemFree(xl), cuMemFree(yl);
    }
    /* backward: dg, du (over g and u in place, or into their own buffer) */
    CUdeviceptr DA = dec_upload_new(da, I + pad, n, I, t), OUT = inplace ? gu : lg_dev_alloc((size_t)(n * ldgu) * e);
    if (!inplace)
        lg_dev_poison(OUT, (size_t)(n * ldgu) * e);
    struct lg_swiglu_bwd b = {.n = n, .g = gu, .ldg = ldgu, .u = f.u, .ldu = ldgu, .da = DA, .ldda = I + pad,
                              .dg = OUT, .lddg = ldgu, .du = OUT + (CUdeviceptr)((size_t)I * e), .lddu = ldgu};
    CHECK(lg_swiglu_backward(S, &b, 0));
    CU_CHECK(cuCtxSynchronize());
    float *dgg = dec_download(b.dg, ldgu, n, I, t), *dug = dec_download(b.du, ldgu, n, I, t);
    float *dgr = malloc(sizeof(float) * (size_t)(n * I)), *dur = malloc(sizeof(float) * (size_t)(n * I));
    lg_ref_swiglu_backward(n * I, g, u, da, dgr, dur);
    ok &= dec_close_f("dg", dgg, dgr, n, I, dec_ulp(t), 0.01 * dec_ulp(t));
    ok &= dec_close_f("du", dug, dur, n, I, dec_ulp(t), 0.01 * dec_ulp(t));
    lg_swiglu_free(S);
    if (L)
        lg_lora_free(L);
    if (!inplace)
        cuMemFree(OUT);
    cuMemFree(gu), cuMemFree(A), cuMemFree(DA);
    free(g), free(u), free(da), free(ah), free(ag), free(ar), free(dgg), free(dug), free(dgr), free(dur);
    return ok;
}

static const struct tcase cases[] = {
    /* op        dtype    n     k     nl ranks        p     flags */
    {T_SWIGLU, LG_BF16, 77, 512, 0, {0}, 0, 0, 0, 0, 0},
    {T_SWIGLU, LG_FP16, 1, 1024, 0, {0}, 0, F_INPLACE | F_PAD, 0, 0, 0},
    {T_SWIGLU, LG_BF16, 333, 1024, 1, {16, 0, 0}, 0.1f, F_WITHS, 0, 0, 0},
    {T_SWIGLU, LG_FP16, 129, 2048, 1, {24, 0, 0}, 0.0f, F_WITHS | F_PAD, 0, 0, 0},
    {T_SWIGLU, LG_BF16, 1000, 14336, 1, {16, 0, 0}, 0.1f, F_WITHS | F_INPLACE, 0, 0, 0},
};


int main(void)
{
    return lg_dec_gpu_main("decoder_ops_gpu_swiglu", cases, (int)(sizeof cases / sizeof cases[0]), run_swiglu, NULL);
}
