/* test_attention_api.c: the attention API without a GPU (lg_attention.h): every bad parameter, packing and
 * tensor is an error status whose message names what is wrong (the library never aborts, and the offsets are
 * checked on the host copy); the tiles each kind of device starts with name kernels the generator accepts,
 * and each compiles with NVRTC for its arch (sm_80 and sm_90: the large tiles, sm_89: the defaults), for
 * both head dims and both backward modes. LORAGEN_ATTN_ALL_VARIANTS=1 also compiles every variant of every
 * attention op for sm_80, sm_89 and sm_90 in both dtypes (several hundred compiles: for the tuner's space,
 * not for every CI run; test_gen covers every switch value for sm_90). The GPU behaviour is in
 * test_attention_gpu.c; the kernels' index math also runs on the CPU in tests/tools/attn_emu. */
#include "attention_internal.h"
#include "lg_gen.h"
#include "lg_jit.h"
#include "lg_test.h"

#include <stdlib.h>
#include <string.h>

static const struct lg_attn_params good = {.hq = 32, .hkv = 8, .head_dim = 128, .dtype = LG_BF16};

static const struct bad_param {
    struct lg_attn_params p;
    enum lg_status want;
    const char *phrase;
} bad_params[] = {
    {{.hq = 0, .hkv = 8, .head_dim = 128}, LG_ERR_INVALID, "hq = 0"},
    {{.hq = 32, .hkv = 0, .head_dim = 128}, LG_ERR_INVALID, "hkv = 0"},
    {{.hq = 30, .hkv = 8, .head_dim = 128}, LG_ERR_INVALID, "multiple of hkv"},
    {{.hq = 32, .hkv = 8, .head_dim = 96}, LG_ERR_UNSUPPORTED, "head_dim = 96"},
    {{.hq = 32, .hkv = 8, .head_dim = 256}, LG_ERR_UNSUPPORTED, "64 or 128"},
    {{.hq = 32, .hkv = 8, .head_dim = 128, .dtype = LG_FP32}, LG_ERR_UNSUPPORTED, "fp32"},
    {{.hq = 32, .hkv = 8, .head_dim = 128, .scale = -1}, LG_ERR_INVALID, "scale"},
    {{.hq = 32, .hkv = 8, .head_dim = 128, .backend = (enum lg_attn_backend)7}, LG_ERR_INVALID, "backend"},
    {{.hq = 32, .hkv = 8, .head_dim = 128, .flags = 0x10}, LG_ERR_INVALID, "flags"},
};
#define NBAD_PARAMS ((int)(sizeof bad_params / sizeof bad_params[0]))

START_TEST(bad_parameters_are_errors)
{
    const struct bad_param *b = &bad_params[_i];
    lg_attn_t *a = NULL;
    enum lg_status st = lg_attn_init(NULL, &b->p, &a);
    ck_assert_msg(st == b->want, "case %d: want %s, got %s (%s)", _i, lg_status_str(b->want), lg_status_str(st),
                  lg_last_error());
    ck_assert_msg(strstr(lg_last_error(), b->phrase) != NULL, "case %d: '%s' not in: %s", _i, b->phrase,
                  lg_last_error());
    ck_assert_ptr_null(a);
}
END_TEST

START_TEST(good_parameters_need_a_context)
{
    lg_attn_t *a = NULL;
    ck_assert_int_eq(lg_attn_init(NULL, &good, &a), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "ctx"));
    ck_assert_int_eq(lg_attn_init(NULL, NULL, &a), LG_ERR_INVALID);
    ck_assert_int_eq(lg_attn_forward(NULL, NULL, 0), LG_ERR_INVALID);
    ck_assert_int_eq(lg_attn_backward(NULL, NULL, 0), LG_ERR_INVALID);
    ck_assert_int_eq(lg_attn_set_tiles(NULL, NULL), LG_ERR_INVALID);
    lg_attn_free(NULL);
}
END_TEST

/* ---- packing ---- */

static const struct bad_seqs {
    int nseq;
    int32_t cu[6];
    int64_t tokens;
    int max_len;
    CUdeviceptr dev;
    const char *phrase;
} bad_seqs[] = {
    {0, {0}, 0, 0, 256, "nseq >= 1"},
    {2, {1, 5, 9}, 9, 8, 256, "cu_seqlens[0] = 1"},
    {3, {0, 5, 5, 9}, 9, 5, 256, "not increasing: cu[1] = 5, cu[2] = 5"},
    {3, {0, 5, 3, 9}, 9, 6, 256, "not increasing"},
    {2, {0, 5, 9}, 10, 5, 256, "tokens = 10 but cu_seqlens[2] = 9"},
    {2, {0, 5, 9}, 9, 4, 256, "max_len = 4 is below the longest sample (5 tokens)"},
    {2, {0, 5, 9}, 9, 5, 0, "seqs.cu"},
    {2, {0, 5, 9}, 9, 5, 258, "4-byte aligned"},
};
#define NBAD_SEQS ((int)(sizeof bad_seqs / sizeof bad_seqs[0]))

START_TEST(bad_packing_is_an_error)
{
    const struct bad_seqs *b = &bad_seqs[_i];
    struct lg_attn_seqs s = {.nseq = b->nseq, .cu_host = b->cu, .cu = b->dev, .tokens = b->tokens,
                             .max_len = b->max_len};
    ck_assert_int_eq(lg_ops_attn_check_seqs("lg_attn_forward", &s), LG_ERR_INVALID);
    ck_assert_msg(strstr(lg_last_error(), b->phrase) != NULL, "case %d: '%s' not in: %s", _i, b->phrase,
                  lg_last_error());
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "lg_attn_forward"));
}
END_TEST

START_TEST(good_packing_passes)
{
    const int32_t cu[] = {0, 1, 3, 20, 147, 275, 404};
    struct lg_attn_seqs s = {.nseq = 6, .cu_host = cu, .cu = 4096, .tokens = 404, .max_len = 129};
    ck_assert_int_eq(lg_ops_attn_check_seqs("f", &s), LG_OK);
    s.max_len = 4096; /* any bound above the longest sample */
    ck_assert_int_eq(lg_ops_attn_check_seqs("f", &s), LG_OK);
    s.cu_host = NULL;
    ck_assert_int_eq(lg_ops_attn_check_seqs("f", &s), LG_ERR_INVALID);
}
END_TEST

START_TEST(bad_tensors_are_errors)
{
    int64_t ld = 0;
    ck_assert_int_eq(lg_ops_attn_check_tensor("f", "q", 0, &ld, 4096), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "q is NULL"));
    ck_assert_int_eq(lg_ops_attn_check_tensor("f", "k", 4104, &ld, 1024), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "k is not 16-byte aligned"));
    ld = 1000;
    ck_assert_int_eq(lg_ops_attn_check_tensor("f", "v", 4096, &ld, 1024), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "ld of v = 1000"));
    ld = 1028;
    ck_assert_int_eq(lg_ops_attn_check_tensor("f", "v", 4096, &ld, 1024), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "multiple of 8"));
    ld = 0;
    ck_assert_int_eq(lg_ops_attn_check_tensor("f", "o", 4096, &ld, 4096), LG_OK);
    ck_assert_int_eq(ld, 4096); /* 0 means packed */
    ld = 6144;                  /* a view of a fused q|k|v buffer */
    ck_assert_int_eq(lg_ops_attn_check_tensor("f", "q", 4096, &ld, 4096), LG_OK);
}
END_TEST

/* ---- the kernels each device starts with ---- */

static const struct arch_row {
    int arch, smem;
} arch_rows[] = {{90, 227 * 1024}, {80, 163 * 1024}, {89, 99 * 1024}};

static void compile_ok(const struct lg_kernel_src *k, int arch)
{
    void *cubin = NULL;
    size_t n = 0;
    enum lg_status st = lg_nvrtc_compile(k->source, k->name, arch, &cubin, &n, NULL);
    if (st != LG_OK)
        fprintf(stderr, "%s for sm_%d:\n%s\n", k->name, arch, lg_last_error());
    ck_assert_msg(st == LG_OK && n > 0, "%s does not compile for sm_%d", k->name, arch);
    free(cubin);
}

START_TEST(default_kernels_compile_for_their_arch)
{
    const struct arch_row *r = &arch_rows[_i];
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    char seen[32][LG_NAME_MAX];
    int nseen = 0;
    for (int hd = 64; hd <= 128; hd += 64)
        for (int det = 0; det < 2; det++) {
            struct lg_attn_params p = good;
            p.head_dim = hd, p.flags = det ? LG_ATTN_DETERMINISTIC : 0;
            const struct lg_attn_tiles t = lg_ops_attn_default_tiles(hd, r->smem);
            for (int w = LG_OPS_ATTN_SCHED; w <= LG_OPS_ATTN_CVT; w++) {
                struct lg_kernel_cfg c = lg_ops_attn_cfg(&p, &t, (enum lg_ops_attn_kernel)w);
                struct lg_kernel_src k;
                enum lg_status st = lg_gen_kernel(g, &c, "tests/test_attention_api.c", &k);
                ck_assert_msg(st == LG_OK, "sm_%d hd %d: %s", r->arch, hd, lg_last_error());
                int dup = 0;
                for (int i = 0; i < nseen; i++)
                    dup |= !strcmp(seen[i], k.name);
                if (!dup) {
                    ck_assert_int_lt(nseen, 32);
                    snprintf(seen[nseen++], LG_NAME_MAX, "%s", k.name);
                    compile_ok(&k, r->arch);
                }
                lg_kernel_src_free(&k);
            }
        }
    ck_assert_int_ge(nseen, 10);
    lg_gen_free(g);
}
END_TEST

START_TEST(every_variant_compiles_everywhere)
{
    if (!getenv("LORAGEN_ATTN_ALL_VARIANTS") || strcmp(getenv("LORAGEN_ATTN_ALL_VARIANTS"), "1")) {
        printf("every_variant_compiles_everywhere: set LORAGEN_ATTN_ALL_VARIANTS=1 to run it\n");
        return;
    }
    lg_gen_t *g;
    CHECK(lg_gen_init(&g));
    int total = 0;
    for (int op = LG_OP_ATTN_SCHED; op <= LG_OP_ATTN_DQ_CVT; op++)
        for (int dt = 0; dt < 2; dt++) {
            struct lg_kernel_cfg *cs;
            int n;
            CHECK(lg_gen_variants(g, (enum lg_kernel_op)op, dt ? LG_FP16 : LG_BF16, 0, &cs, &n));
            for (int i = 0; i < n; i++) {
                struct lg_kernel_src k;
                CHECK(lg_gen_kernel(g, &cs[i], "tests/test_attention_api.c", &k));
                for (int a = 0; a < 3; a++)
                    compile_ok(&k, arch_rows[a].arch), total++;
                lg_kernel_src_free(&k);
            }
            free(cs);
        }
    printf("every_variant_compiles_everywhere: %d compiles\n", total);
    lg_gen_free(g);
}
END_TEST

START_TEST(cudnn_version_is_a_number)
{
    const int v = lg_attn_cudnn_version();
    ck_assert_msg(v == 0 || (v >= 90000 && v < 100000), "cuDNN version %d", v);
    printf("cuDNN: %s (%d)\n", v ? "loadable" : "not loadable here", v);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("attention_api");
    TCase *tc = tcase_create("cpu");
    tcase_set_timeout(tc, 0);
    tcase_add_loop_test(tc, bad_parameters_are_errors, 0, NBAD_PARAMS);
    tcase_add_test(tc, good_parameters_need_a_context);
    tcase_add_loop_test(tc, bad_packing_is_an_error, 0, NBAD_SEQS);
    tcase_add_test(tc, good_packing_passes);
    tcase_add_test(tc, bad_tensors_are_errors);
    tcase_add_test(tc, cudnn_version_is_a_number);
    tcase_add_loop_test(tc, default_kernels_compile_for_their_arch, 0, 3);
    tcase_add_test(tc, every_variant_compiles_everywhere);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
