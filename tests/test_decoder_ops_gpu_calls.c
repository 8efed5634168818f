/* test_decoder_ops_gpu_calls.c: the decoder ops (lg_decoder_ops.h) on the GPU as calls: the same call twice gives
 * the same bits (the norm with S and with the correction, the LM head), and bad calls are errors naming the
 * field. The ops' values against the reference: test_decoder_ops_gpu_{norm,rope,swiglu,head,adamw}.c. Helpers:
 * tests/util/lg_dec_gpu_util.c. Exits 77 without a GPU. */
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
    CHECK(lg_norm_init(dec_ctx, &np, &N));
    float *x = dec_rnd((size_t)(n * H), seed, 1.0f, t), *a = dec_rnd((size_t)(48 * H), seed + 1, 0.05f, t);
    float *gam = dec_rnd((size_t)H, seed + 2, 1.0f, t), *w = dec_rnd((size_t)(V * 64), seed + 3, 1.0f, t);
    CUdeviceptr X = dec_upload_new(x, H, n, H, t), R = dec_upload_new(x, H, n, H, t), Hh = lg_dev_alloc((size_t)(n * H) * e);
    CUdeviceptr Y = lg_dev_alloc((size_t)(n * ldy) * e), RS = lg_dev_alloc((size_t)n * 4), G = dec_upload_new(gam, H, 1, H, t);
    CUdeviceptr A = dec_upload_new(a, H, 48, H, t), D = lg_dev_alloc((size_t)(n * H) * e);
    CUdeviceptr W = dec_upload_new(w, 64, V, 64, t), LB = lg_dev_alloc((size_t)n * 4), WT = lg_dev_alloc((size_t)n * 4);
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
    CHECK(lg_xent_init(dec_ctx, &xp, &XE));
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
    bad.hidden = 200, EXPECT_BAD(lg_norm_init(dec_ctx, &bad, &N), LG_ERR_INVALID, "hidden");
    bad = np, bad.dtype = LG_FP32, EXPECT_BAD(lg_norm_init(dec_ctx, &bad, &N), LG_ERR_UNSUPPORTED, "fp32");
    bad = np, bad.nlora = 4, EXPECT_BAD(lg_norm_init(dec_ctx, &bad, &N), LG_ERR_INVALID, "nlora");
    bad = np, bad.nlora = 1, bad.lora[0] = (struct lg_lora_reader){12, 24, 0, 0};
    EXPECT_BAD(lg_norm_init(dec_ctx, &bad, &N), LG_ERR_INVALID, "rank");
    bad.lora[0] = (struct lg_lora_reader){16, 32, 1.0f, 0}, EXPECT_BAD(lg_norm_init(dec_ctx, &bad, &N), LG_ERR_INVALID, "dropout");
    bad.lora[0] = (struct lg_lora_reader){128, 32, 0, 0}, bad.nlora = 2, bad.lora[1] = bad.lora[0];
    ck_assert_int_ne(lg_norm_init(dec_ctx, &bad, &N), LG_OK); /* 2 x 128 accumulators: too many for one kernel */
    CHECK(lg_norm_init(dec_ctx, &np, &N));
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
    EXPECT_BAD(lg_rope_init(dec_ctx, &rp, &R), LG_ERR_INVALID, "head_dim");
    rp.head_dim = 128, rp.inv_freq = NULL, EXPECT_BAD(lg_rope_init(dec_ctx, &rp, &R), LG_ERR_INVALID, "inv_freq");
    rp.inv_freq = inv;
    CHECK(lg_rope_init(dec_ctx, &rp, &R));
    struct lg_rope_run rr = {.n = 8, .q = B, .ldq = 4 * 128, .hq = 4, .k = B, .ldk = 100, .hk = 1, .cu_seqlens = B, .nseq = 2};
    EXPECT_BAD(lg_rope_apply(R, &rr, 0), LG_ERR_INVALID, "k");
    rr.ldk = 128, rr.nseq = 9, EXPECT_BAD(lg_rope_apply(R, &rr, 0), LG_ERR_INVALID, "nseq");
    lg_rope_free(R);

    lg_swiglu_t *S;
    struct lg_swiglu_params sp = {.inter = 100, .dtype = LG_BF16};
    EXPECT_BAD(lg_swiglu_init(dec_ctx, &sp, &S), LG_ERR_INVALID, "inter");
    sp.inter = 256;
    CHECK(lg_swiglu_init(dec_ctx, &sp, &S));
    struct lg_swiglu_fwd sf = {.n = 4, .g = B, .ldg = 256, .u = B, .ldu = 256, .a = B, .lda = 256};
    EXPECT_BAD(lg_swiglu_forward(S, &sf, 0), LG_ERR_INVALID, "overwrite");
    sf.a = B + 4096, sf.with_s = 1, EXPECT_BAD(lg_swiglu_forward(S, &sf, 0), LG_ERR_INVALID, "with_lora");
    lg_swiglu_free(S);

    lg_xent_t *XE;
    struct lg_xent_params xp = {.hidden = 64, .vocab = 1001, .dtype = LG_BF16};
    EXPECT_BAD(lg_xent_init(dec_ctx, &xp, &XE), LG_ERR_INVALID, "vocab");
    xp.vocab = 1000, xp.chunk = 16;
    CHECK(lg_xent_init(dec_ctx, &xp, &XE));
    struct lg_xent_run xr = {.n = 4, .x = B, .ldx = 64, .w = B, .ldw = 64, .labels = B, .weight = B, .loss = B,
                             .dx = B, .lddx = 64};
    EXPECT_BAD(lg_xent_apply(XE, &xr, 0), LG_ERR_INVALID, "dx");
    xr.dx = B + 2048, xr.ldw = 60, EXPECT_BAD(lg_xent_apply(XE, &xr, 0), LG_ERR_INVALID, "w");
    lg_xent_free(XE);

    lg_adamw_t *A;
    struct lg_adamw_tensor tt = {.p = B, .g = B + 64, .m = B + 128, .v = B + 192, .count = 6};
    struct lg_adamw_params ap = {.dtype = LG_BF16, .ntensors = 1, .tensors = &tt};
    EXPECT_BAD(lg_adamw_init(dec_ctx, &ap, &A), LG_ERR_INVALID, "count");
    tt.count = 8, tt.g = B + 4, EXPECT_BAD(lg_adamw_init(dec_ctx, &ap, &A), LG_ERR_INVALID, "g");
    tt.g = B + 64, tt.half = B + 1024, tt.half_cols = 3, EXPECT_BAD(lg_adamw_init(dec_ctx, &ap, &A), LG_ERR_INVALID, "half_cols");
    tt.half = 0;
    CHECK(lg_adamw_init(dec_ctx, &ap, &A));
    struct lg_adamw_hyper hy = {.lr = 1e-3, .beta1 = 1.0, .beta2 = 0.999};
    EXPECT_BAD(lg_adamw_step(A, &hy, 0), LG_ERR_INVALID, "beta1");
    lg_adamw_free(A);

    lg_embed_t *E;
    struct lg_embed_params ep = {.hidden = 12, .vocab = 10, .dtype = LG_BF16};
    EXPECT_BAD(lg_embed_init(dec_ctx, &ep, &E), LG_ERR_INVALID, "hidden");
    cuMemFree(B);
    printf("PASS bad calls: every one an error status naming the argument\n");
}

START_TEST(deterministic) { ck_assert(run_determinism(dec_case_seed(1000))); }
END_TEST

START_TEST(bad_calls_are_errors) { run_bad_calls(); }
END_TEST

static void add_tests(TCase *tc)
{
    tcase_add_test(tc, deterministic);
    tcase_add_test(tc, bad_calls_are_errors);
}

int main(void) { return lg_dec_gpu_main("decoder_ops_gpu_calls", NULL, 0, NULL, add_tests); }
