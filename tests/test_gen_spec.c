/* test_gen_spec.c: specs, on the CPU: every shipped spec loads, with the shapes the models have; bad specs
 * (tests/data/specs/) fail with "file:LINE: error:" on the right line, every error reported, never hanging.
 * The generator and NVRTC: test_gen.c. Check forks each case; nothing here initialises CUDA. */
#include "lg_gen.h"
#include "lg_gen_test.h"
#include "lg_jit.h"
#include "lg_test.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ---- */

static const struct lg_linear *find_linear(const struct lg_spec *s, const char *name)
{
    for (int i = 0; i < s->nlinears; i++)
        if (!strcmp(s->linears[i].name, name))
            return &s->linears[i];
    ck_abort_msg("%s has no linear %s", s->path, name);
    return NULL;
}

/* ---- specs ---- */

START_TEST(shipped_specs_load)
{
    ck_assert_int_ge(gen_nspecs, 4);
    for (int i = 0; i < gen_nspecs; i++) {
        struct lg_spec *s = gen_load_ok(gen_specs[i]);
        ck_assert_ptr_nonnull(s->name);
        ck_assert_str_eq(s->path, gen_specs[i]);
        ck_assert_int_gt(s->nlinears, 0);
        ck_assert_int_gt(s->narchs, 0);
        ck_assert_int_eq(s->rank % 8, 0);
        lg_spec_free(s);
    }
}
END_TEST

START_TEST(llama8b_shapes)
{
    struct lg_spec *s = gen_load_ok("specs/llama-3.1-8b.lua");
    static const struct lg_linear want[] = {
        {"q_proj", 4096, 4096, 0},     {"k_proj", 4096, 1024, 0},  {"v_proj", 4096, 1024, 0},
        {"o_proj", 4096, 4096, 0},     {"gate_proj", 4096, 14336, 0}, {"up_proj", 4096, 14336, 0},
        {"down_proj", 14336, 4096, 0},
    };
    ck_assert_int_eq(s->nlinears, 7);
    for (int i = 0; i < 7; i++) {
        ck_assert_str_eq(s->linears[i].name, want[i].name);
        ck_assert_int_eq(s->linears[i].in_features, want[i].in_features);
        ck_assert_int_eq(s->linears[i].out_features, want[i].out_features);
        ck_assert_int_eq(s->linears[i].bias, 0);
    }
    ck_assert_int_eq(s->dtype, LG_BF16);
    ck_assert_int_eq(s->rank, 16);
    ck_assert_int_eq(s->narchs, 3);
    ck_assert_int_eq(s->archs[0], 80);
    ck_assert_int_eq(s->archs[2], 90);
    lg_spec_free(s);
}
END_TEST

START_TEST(qwen_qkv_bias)
{
    struct lg_spec *s = gen_load_ok("specs/qwen2.5-32b.lua");
    ck_assert_int_eq(s->nlinears, 7);
    static const char *biased[] = {"q_proj", "k_proj", "v_proj"}, *plain[] = {"o_proj", "gate_proj", "up_proj",
                                                                                "down_proj"};
    for (int i = 0; i < 3; i++)
        ck_assert_msg(find_linear(s, biased[i])->bias, "%s should carry a bias", biased[i]);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(!find_linear(s, plain[i])->bias, "%s should not carry a bias", plain[i]);
    ck_assert_int_eq(find_linear(s, "k_proj")->out_features, 1024);
    lg_spec_free(s);
}
END_TEST

START_TEST(integral_floats_are_integers)
{
    struct lg_spec *s = gen_load_ok("tests/data/specs/integral_floats.lua");
    ck_assert_int_eq(s->rank, 16);
    ck_assert_int_eq(s->dtype, LG_FP16);
    ck_assert_int_eq(s->linears[0].in_features, 128);
    ck_assert_int_eq(s->linears[0].out_features, 256);
    lg_spec_free(s);
}
END_TEST

/* One concern per fixture: the one error, its line and a key phrase. */
static const struct bad_spec {
    const char *file;
    int line;
    const char *phrase;
} bad_specs[] = {
    {"unknown_key", 11, "lora.rnak: unknown key"},
    {"wrong_type", 10, "lora.alpha: expected a number, got string"},
    {"rank_zero", 10, "lora.rank: must be >= 1"},
    {"rank_not_multiple", 10, "rank 12 is not supported"},
    {"dropout_negative", 11, "lora.dropout: must be >= 0"},
    {"dropout_one", 11, "lora.dropout: must be < 1"},
    {"dims_not_64", 9, "proj_b.out_features = 100 is not a multiple of 64"},
    {"model_dims_not_64", 6, "model.intermediate_size"},
    {"unknown_target", 13, "'qkv_proj' is not a linear layer"},
    {"model_and_linears", 8, "not both"},
    {"syntax_error", 6, "'}' expected"},
    {"runtime_error", 3, "arithmetic on a nil value"},
    {"not_a_table", 4, "must return a table (it returned string)"},
    {"endless_loop", 4, "instruction budget exceeded"},
    {"memory_hog", 4, "not enough memory: evaluating the file took more than"},
    {"uses_io", 2, "global 'io'"},
    {"uses_os", 2, "global 'os'"},
    {"uses_require", 3, "global 'require'"},
    {"bad_name", 3, "name: '../escape'"},
};
#define NBAD ((int)(sizeof bad_specs / sizeof bad_specs[0]))

START_TEST(bad_spec_fails_on_its_line)
{
    const struct bad_spec *b = &bad_specs[_i];
    char path[256], where[300];
    snprintf(path, sizeof path, "tests/data/specs/%s.lua", b->file);
    snprintf(where, sizeof where, "%s:%d: error:", path, b->line);
    struct lg_spec *s = NULL;
    enum lg_status st = lg_spec_load(path, &s);
    const char *msg = lg_last_error();
    ck_assert_msg(st == LG_ERR_SPEC, "%s: status %s, want bad spec (%s)", path, lg_status_str(st), msg);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(msg, where) != NULL, "%s: want '%s' in:\n%s", path, where, msg);
    ck_assert_msg(strstr(msg, b->phrase) != NULL, "%s: want '%s' in:\n%s", path, b->phrase, msg);
    ck_assert_msg(lg_test_count_substr(msg, "error:") == 1, "%s: one error expected:\n%s", path, msg);
}
END_TEST

START_TEST(missing_spec_file)
{
    struct lg_spec *s = NULL;
    ck_assert_int_eq(lg_spec_load("tests/data/specs/no_such_spec.lua", &s), LG_ERR_SPEC);
    ck_assert_ptr_null(s);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "tests/data/specs/no_such_spec.lua"));
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "cannot open"));
}
END_TEST

START_TEST(every_error_is_reported)
{
    static const char *want[] = {
        ":9: error: lora.rank: rank 12", ":10: error: lora.alpha: must be > 0", ":11: error: lora.dropout",
        ":13: error: dtype: 'fp8'",      ":14: error: archs[2]: 'sm_75'",       ":15: error: colour: unknown key",
    };
    struct lg_spec *s = NULL;
    ck_assert_int_eq(lg_spec_load("tests/data/specs/many_errors.lua", &s), LG_ERR_SPEC);
    const char *msg = lg_last_error();
    ck_assert_msg(lg_test_count_substr(msg, "error:") == 6, "six errors expected:\n%s", msg);
    for (int i = 0; i < 6; i++)
        ck_assert_msg(strstr(msg, want[i]) != NULL, "want '%s' in:\n%s", want[i], msg);
}
END_TEST

int main(void)
{
    gen_find_specs();
    Suite *s = suite_create("gen_spec");
    TCase *tc = gen_tcase(s, "spec");
    tcase_add_test(tc, shipped_specs_load);
    tcase_add_test(tc, llama8b_shapes);
    tcase_add_test(tc, qwen_qkv_bias);
    tcase_add_test(tc, integral_floats_are_integers);
    tcase_add_loop_test(tc, bad_spec_fails_on_its_line, 0, NBAD);
    tcase_add_test(tc, missing_spec_file);
    tcase_add_test(tc, every_error_is_reported);
    int failed = lg_test_run(s, 0);
    gen_free_specs();
    return failed ? 1 : 0;
}
