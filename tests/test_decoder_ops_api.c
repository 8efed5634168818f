/* test_decoder_ops_api.c: the decoder ops' argument checking and the generator's side of them, without a GPU:
 * every bad parameter of every init is an error status naming the field (the library never aborts), good
 * parameters without a context are LG_ERR_INVALID naming ctx, the generator prunes what cannot work (too many
 * accumulators), names kernels by their switches, follows lora_down's K split for the S-computing kernels, and
 * decides where the LoRA dX correction goes. The GPU behaviour is in test_decoder_ops_gpu.c; NVRTC compilation
 * of every variant in test_gen.c. */
#include "lg_decoder_ops.h"
#include "lg_test.h"

#include <math.h>
#include <string.h>

static void expect(enum lg_status got, enum lg_status want, const char *field, const char *what)
{
    ck_assert_msg(got == want, "%s: want %s, got %s (%s)", what, lg_status_str(want), lg_status_str(got),
                  lg_last_error());
    ck_assert_msg(strstr(lg_last_error(), field) != NULL, "%s: '%s' not named in: %s", what, field, lg_last_error());
}
#define EXPECT(call, want, field) expect((call), (want), (field), #call)

START_TEST(norm_params)
{
    lg_norm_t *n = NULL;
    const struct lg_norm_params good = {.hidden = 4096, .eps = 1e-5f, .dtype = LG_BF16, .nlora = 3,
                                        .lora = {{16, 32, 0.1f, 1}, {16, 32, 0.1f, 2}, {16, 32, 0.1f, 3}}};
    struct lg_norm_params p = good;
    p.hidden = 4000, EXPECT(lg_norm_init(NULL, &p, &n), LG_ERR_INVALID, "hidden");
    p.hidden = 32768, EXPECT(lg_norm_init(NULL, &p, &n), LG_ERR_INVALID, "hidden");
    p = good, p.eps = -1, EXPECT(lg_norm_init(NULL, &p, &n), LG_ERR_INVALID, "eps");
    p = good, p.eps = NAN, EXPECT(lg_norm_init(NULL, &p, &n), LG_ERR_INVALID, "eps");
    p = good, p.dtype = LG_FP32, EXPECT(lg_norm_init(NULL, &p, &n), LG_ERR_UNSUPPORTED, "fp32");
    p = good, p.nlora = -1, EXPECT(lg_norm_init(NULL, &p, &n), LG_ERR_INVALID, "nlora");
    p = good, p.lora[1].rank = 20, EXPECT(lg_norm_init(NULL, &p, &n), LG_ERR_INVALID, "lora[1].rank");
    p = good, p.lora[2].alpha = 0, EXPECT(lg_norm_init(NULL, &p, &n), LG_ERR_INVALID, "lora[2].alpha");
    p = good, p.lora[0].dropout = 1, EXPECT(lg_norm_init(NULL, &p, &n), LG_ERR_INVALID, "lora[0].dropout");
    EXPECT(lg_norm_init(NULL, &good, &n), LG_ERR_INVALID, "ctx");
    ck_assert_ptr_null(n);
    ck_assert_int_eq(lg_norm_init(NULL, NULL, &n), LG_ERR_INVALID);
    ck_assert_int_eq(lg_norm_forward(NULL, NULL, 0), LG_ERR_INVALID);
    ck_assert_int_eq(lg_norm_backward(NULL, NULL, 0), LG_ERR_INVALID);
    lg_norm_free(NULL);
}
END_TEST

START_TEST(other_params)
{
    float inv[64];
    for (int i = 0; i < 64; i++)
        inv[i] = powf(500000.0f, -(float)i / 64.0f);
    lg_rope_t *r = NULL;
    struct lg_rope_params rp = {.head_dim = 120, .dtype = LG_BF16, .inv_freq = inv};
    EXPECT(lg_rope_init(NULL, &rp, &r), LG_ERR_INVALID, "head_dim");
    rp.head_dim = 512, EXPECT(lg_rope_init(NULL, &rp, &r), LG_ERR_INVALID, "head_dim");
    rp.head_dim = 128, inv[5] = -1.0f, EXPECT(lg_rope_init(NULL, &rp, &r), LG_ERR_INVALID, "inv_freq[5]");
    inv[5] = 0.5f, EXPECT(lg_rope_init(NULL, &rp, &r), LG_ERR_INVALID, "ctx");

    lg_swiglu_t *s = NULL;
    struct lg_swiglu_params sp = {.inter = 14336, .dtype = LG_FP16, .with_lora = 1, .lora = {16, 32, 0.1f, 9}};
    sp.inter = 1000, EXPECT(lg_swiglu_init(NULL, &sp, &s), LG_ERR_INVALID, "inter");
    sp.inter = 14336, sp.lora.rank = 0, EXPECT(lg_swiglu_init(NULL, &sp, &s), LG_ERR_INVALID, "rank");
    sp.lora.rank = 16, sp.with_lora = 2, EXPECT(lg_swiglu_init(NULL, &sp, &s), LG_ERR_INVALID, "with_lora");
    sp.with_lora = 1, EXPECT(lg_swiglu_init(NULL, &sp, &s), LG_ERR_INVALID, "ctx");

    lg_embed_t *e = NULL;
    struct lg_embed_params ep = {.hidden = 4100, .vocab = 128256, .dtype = LG_BF16};
    EXPECT(lg_embed_init(NULL, &ep, &e), LG_ERR_INVALID, "hidden");
    ep.hidden = 4096, ep.vocab = 0, EXPECT(lg_embed_init(NULL, &ep, &e), LG_ERR_INVALID, "vocab");

    lg_xent_t *x = NULL;
    struct lg_xent_params xp = {.hidden = 4096, .vocab = 128257, .dtype = LG_BF16};
    EXPECT(lg_xent_init(NULL, &xp, &x), LG_ERR_INVALID, "vocab");
    xp.vocab = 152064, xp.chunk = -5, EXPECT(lg_xent_init(NULL, &xp, &x), LG_ERR_INVALID, "chunk");
    xp.chunk = 0, xp.dtype = (enum lg_dtype)9, EXPECT(lg_xent_init(NULL, &xp, &x), LG_ERR_INVALID, "dtype");
    xp.dtype = LG_BF16, EXPECT(lg_xent_init(NULL, &xp, &x), LG_ERR_INVALID, "ctx");

    lg_adamw_t *a = NULL;
    struct lg_adamw_tensor t = {.p = 256, .g = 512, .m = 768, .v = 1024, .count = 1024};
    struct lg_adamw_params ap = {.dtype = LG_BF16, .ntensors = 1, .tensors = &t};
    t.count = 1022, EXPECT(lg_adamw_init(NULL, &ap, &a), LG_ERR_INVALID, "count");
    t.count = 1024, t.m = 770, EXPECT(lg_adamw_init(NULL, &ap, &a), LG_ERR_INVALID, "m is NULL or not 16-byte");
    t.m = 768, t.half = 4096, t.half_cols = 16, t.half_ld = 8, EXPECT(lg_adamw_init(NULL, &ap, &a), LG_ERR_INVALID, "half_ld");
    t.half_ld = 64, t.half_cols = 24, EXPECT(lg_adamw_init(NULL, &ap, &a), LG_ERR_INVALID, "half_cols");
    t.half_cols = 16, ap.chunk = 1000, EXPECT(lg_adamw_init(NULL, &ap, &a), LG_ERR_INVALID, "chunk");
    ap.chunk = 0, ap.ntensors = 0, EXPECT(lg_adamw_init(NULL, &ap, &a), LG_ERR_INVALID, "ntensors");
    ap.ntensors = 1, EXPECT(lg_adamw_init(NULL, &ap, &a), LG_ERR_INVALID, "ctx");
    ck_assert_int_eq(lg_adamw_step(NULL, NULL, 0), LG_ERR_INVALID);
}
END_TEST

/* The S-computing kernels take lora_down's K split for their rank (so S is its output bit for bit), the
 * accumulator rule prunes what would spill, and names spell out every switch. */
START_TEST(generator_rules)
{
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    struct lg_kernel_src k;
    struct lg_kernel_cfg c = {.op = LG_OP_NORM_LORA_FWD, .dtype = LG_BF16, .rank = 16, .nlora = 3, .drop = 1};
    CHECK(lg_gen_kernel(g, &c, "test", &k));
    ck_assert_str_eq(k.name, "lg_norm_lora_fwd_bf16_r16_n3w8_drop");
    ck_assert_int_eq(k.threads, 256);
    lg_kernel_src_free(&k);
    struct lg_kernel_cfg down = {.op = LG_OP_DOWN, .dtype = LG_BF16, .rank = 128};
    CHECK(lg_gen_kernel(g, &down, "test", &k));
    const int down_threads = k.threads; /* 32 · wm · wk of lora_down's default */
    lg_kernel_src_free(&k);
    c.rank = 128, c.nlora = 1;
    CHECK(lg_gen_kernel(g, &c, "test", &k));
    ck_assert_int_eq(k.threads, down_threads);
    ck_assert_ptr_nonnull(strstr(k.name, "_n1w4_drop"));
    lg_kernel_src_free(&k);
    c.nlora = 2; /* 2 x 128 accumulators */
    ck_assert_int_ne(lg_gen_kernel(g, &c, "test", &k), LG_OK);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "nlora*rank"));
    struct lg_kernel_cfg b = {.op = LG_OP_NORM_LORA_BWD, .dtype = LG_FP16, .rank = 64, .nlora = 3};
    CHECK(lg_gen_kernel(g, &b, "test", &k));
    ck_assert_str_eq(k.name, "lg_norm_lora_bwd_fp16_r64_n3");
    lg_kernel_src_free(&k);
    struct lg_kernel_cfg r = {.op = LG_OP_NORM_FWD, .dtype = LG_BF16, .vpt = 16};
    CHECK(lg_gen_kernel(g, &r, "test", &k));
    ck_assert_str_eq(k.name, "lg_norm_fwd_bf16_v16");
    ck_assert_ptr_nonnull(strstr(k.source, "#line 1 \"templates/decoder/norm_row.cuh\""));
    ck_assert_ptr_nonnull(strstr(k.source, "#line 1 \"templates/common/lg_decoder_args.h\""));
    lg_kernel_src_free(&k);
    r.vpt = 3;
    ck_assert_int_ne(lg_gen_kernel(g, &r, "test", &k), LG_OK);
    for (int op = LG_OP_NORM_FWD; op <= LG_OP_ADAMW_UPD; op++) {
        struct lg_kernel_cfg *v;
        int nv;
        CHECK(lg_gen_variants(g, (enum lg_kernel_op)op, LG_BF16, 16, &v, &nv));
        ck_assert_msg(nv >= 1 && nv <= 6, "%s: %d variants", lg_kernel_op_name((enum lg_kernel_op)op), nv);
        free(v);
    }
    lg_gen_free(g);
}
END_TEST

/* The generator's placement of the masked dX correction: the extended-K GEMM gives it without dropout when dS
 * sits in dY's tail; otherwise the norm backward that reads dX next folds it in; without such a norm,
 * FusedLoRA's dA pass adds it. */
START_TEST(dx_correction_placement)
{
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    enum lg_dx_placement p;
    CHECK(lg_gen_dx_correction(g, 0.0, 1, 1, &p));
    ck_assert_int_eq(p, LG_DX_IN_GEMM);
    CHECK(lg_gen_dx_correction(g, 0.0, 1, 0, &p));
    ck_assert_int_eq(p, LG_DX_IN_GEMM);
    CHECK(lg_gen_dx_correction(g, 0.1, 1, 1, &p));
    ck_assert_int_eq(p, LG_DX_IN_NORM);
    CHECK(lg_gen_dx_correction(g, 0.0, 0, 1, &p));
    ck_assert_int_eq(p, LG_DX_IN_NORM);
    CHECK(lg_gen_dx_correction(g, 0.1, 1, 0, &p));
    ck_assert_int_eq(p, LG_DX_IN_DA);
    CHECK(lg_gen_dx_correction(g, 0.1, 0, 0, &p));
    ck_assert_int_eq(p, LG_DX_IN_DA);
    lg_gen_free(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("decoder_ops_api");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, norm_params);
    tcase_add_test(tc, other_params);
    tcase_add_test(tc, generator_rules);
    tcase_add_test(tc, dx_correction_placement);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
