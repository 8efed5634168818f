/* test_lora_api.c: FusedLoRA's argument checking and the no-GPU path, without a GPU: every bad layer parameter
 * is an error status naming the field (the library never aborts), the borrowed-base calls refuse a missing
 * layer or argument, and a context on a machine without a usable GPU is LG_ERR_NO_GPU with a readable reason.
 * The GPU behaviour is in test_lora_gpu.c. */
#include "lg_lora.h"
#include "lg_test.h"

#include <stddef.h>
#include <string.h>

static const struct lg_lora_params good = {.in_features = 512, .out_features = 256, .rank = 16, .alpha = 32,
                                           .dropout = 0.1f, .dtype = LG_BF16};

static void expect_bad(struct lg_lora_params p, enum lg_status want, const char *field)
{
    lg_lora_t *l = NULL;
    enum lg_status st = lg_lora_init(NULL, &p, &l);
    ck_assert_msg(st == want, "want %s, got %s (%s)", lg_status_str(want), lg_status_str(st), lg_last_error());
    ck_assert_msg(strstr(lg_last_error(), field) != NULL, "'%s' not named in: %s", field, lg_last_error());
    ck_assert_ptr_null(l);
}

START_TEST(bad_layer_parameters)
{
    struct lg_lora_params p = good;
    p.rank = 0, expect_bad(p, LG_ERR_INVALID, "rank");
    p = good, p.rank = 12, expect_bad(p, LG_ERR_INVALID, "rank");
    p = good, p.rank = 256, expect_bad(p, LG_ERR_INVALID, "rank");
    p = good, p.in_features = 500, expect_bad(p, LG_ERR_INVALID, "in_features");
    p = good, p.out_features = 0, expect_bad(p, LG_ERR_INVALID, "out_features");
    p = good, p.alpha = 0, expect_bad(p, LG_ERR_INVALID, "alpha");
    p = good, p.dropout = -0.1f, expect_bad(p, LG_ERR_INVALID, "dropout");
    p = good, p.dropout = 1.0f, expect_bad(p, LG_ERR_INVALID, "dropout");
    p = good, p.dtype = LG_FP32, expect_bad(p, LG_ERR_UNSUPPORTED, "fp32");
    p = good, p.base = (enum lg_lora_base)2, expect_bad(p, LG_ERR_INVALID, "base");
    p = good, p.base = (enum lg_lora_base)-1, expect_bad(p, LG_ERR_INVALID, "base");
    p = good, p.base = LG_LORA_BASE_BORROWED, p.rank = 136, expect_bad(p, LG_ERR_INVALID, "rank");
    p = good, p.base = LG_LORA_BASE_BORROWED, p.has_bias = 1, expect_bad(p, LG_ERR_INVALID, "ctx"); /* valid */
    expect_bad(good, LG_ERR_INVALID, "ctx"); /* parameters fine, no context */
    ck_assert_int_eq(lg_lora_init(NULL, NULL, NULL), LG_ERR_INVALID);
}
END_TEST

/* The borrowed-base entry points and the workspace query refuse what they cannot use, before any device work. */
START_TEST(borrowed_calls_without_a_layer)
{
    ck_assert_int_eq(lg_lora_set_base(NULL, 256, 512, 0), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "lg_lora_set_base"));
    struct lg_lora_adapter_src src = {.dtype = LG_FP32, .a = 256, .lda = 512, .b = 512, .ldb = 16};
    ck_assert_int_eq(lg_lora_set_adapter_device(NULL, &src, 0), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "lg_lora_set_adapter_device"));
    struct lg_lora_bwd b = {.n = 64};
    size_t bytes = 1;
    ck_assert_int_eq(lg_lora_backward_workspace(NULL, &b, &bytes), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "lg_lora_backward_workspace"));
    ck_assert_int_eq(lg_lora_set_weights(NULL, NULL, NULL, NULL, NULL), LG_ERR_INVALID);
    ck_assert_int_eq(lg_lora_backward(NULL, &b, 0), LG_ERR_INVALID);
    ck_assert_int_eq(lg_lora_forward(NULL, NULL, 0), LG_ERR_INVALID);
}
END_TEST

/* The structs the Python binding (python/loragen/_lib.py) mirrors with ctypes: their layout is part of the
 * ABI, so a change here must change the binding too. */
START_TEST(binding_struct_layout)
{
    ck_assert_uint_eq(sizeof(struct lg_lora_params), 48);
    ck_assert_uint_eq(offsetof(struct lg_lora_params, base), 40);
    ck_assert_uint_eq(sizeof(struct lg_lora_fwd), 64);
    ck_assert_uint_eq(sizeof(struct lg_lora_bwd), 120);
    ck_assert_uint_eq(offsetof(struct lg_lora_bwd, seed), 96);
    ck_assert_uint_eq(offsetof(struct lg_lora_bwd, ws), 104);
    ck_assert_uint_eq(sizeof(struct lg_lora_adapter_src), 40);
}
END_TEST

START_TEST(ext_ld_is_aligned_and_roomy)
{
    const int64_t feats[] = {64, 128, 4096, 5120, 14336, 27648};
    const int ranks[] = {8, 16, 64, 128};
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 4; j++) {
            int64_t ld = lg_lora_ext_ld(feats[i], ranks[j]);
            ck_assert(ld >= feats[i] + ranks[j]);
            ck_assert(ld % 64 == 0);
            ck_assert(ld < feats[i] + ranks[j] + 64);
        }
}
END_TEST

/* In a forked child: initialises CUDA only there. Without a usable GPU the context is LG_ERR_NO_GPU. */
START_TEST(context_without_gpu_is_a_status)
{
    if (lg_test_have_gpu()) {
        printf("a GPU is present: the no-GPU path is not exercised here\n");
        return;
    }
    lg_ctx_t *ctx = NULL;
    struct lg_ctx_params cp = {.device = 0};
    ck_assert_int_eq(lg_ctx_init(&cp, &ctx), LG_ERR_NO_GPU);
    ck_assert_ptr_null(ctx);
    ck_assert_msg(strlen(lg_last_error()) > 0, "no reason given");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("lora_api");
    TCase *tc = tcase_create("cpu");
    tcase_add_test(tc, bad_layer_parameters);
    tcase_add_test(tc, borrowed_calls_without_a_layer);
    tcase_add_test(tc, binding_struct_layout);
    tcase_add_test(tc, ext_ld_is_aligned_and_roomy);
    tcase_add_test(tc, context_without_gpu_is_a_status);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
