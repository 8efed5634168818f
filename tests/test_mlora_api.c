/* test_mlora_api.c: FusedMultiLoRA's host-side checks, without a GPU: segment-table validation (overlap, gap,
 * total disagreeing with n, adapter id out of range, an adapter twice, negative length; empty segments,
 * base segments and one-token segments accepted) and every bad layer parameter (a slot rank that does not fit
 * the generated kernels, bad alpha/dropout/shapes/dtype/module count) as an error status naming the field.
 * The GPU behaviour is in test_mlora_gpu.c. */
#include "lg_mlora.h"
#include "lg_test.h"

#include <string.h>

static void bad_table(int64_t n, int nad, const struct lg_mlora_seg *s, int ns, const char *why)
{
    ck_assert_int_eq(lg_mlora_segments_check(n, nad, s, ns), LG_ERR_INVALID);
    ck_assert_msg(strstr(lg_last_error(), why) != NULL, "'%s' not in: %s", why, lg_last_error());
}

START_TEST(segment_tables)
{
    const struct lg_mlora_seg good[] = {{2, 0, 17}, {-1, 17, 5}, {0, 22, 0}, {1, 22, 1}, {3, 23, 38}};
    CHECK(lg_mlora_segments_check(61, 4, good, 5));
    const struct lg_mlora_seg one[] = {{0, 0, 1}};
    CHECK(lg_mlora_segments_check(1, 1, one, 1));
    const struct lg_mlora_seg overlap[] = {{0, 0, 10}, {1, 9, 11}};
    bad_table(20, 2, overlap, 2, "must not overlap");
    const struct lg_mlora_seg gap[] = {{0, 0, 9}, {1, 10, 10}};
    bad_table(20, 2, gap, 2, "starts at 10");
    const struct lg_mlora_seg shorter[] = {{0, 0, 10}, {1, 10, 9}};
    bad_table(20, 2, shorter, 2, "hold 19 tokens but n = 20");
    bad_table(18, 2, shorter, 2, "hold 19 tokens but n = 18");
    const struct lg_mlora_seg range[] = {{0, 0, 10}, {2, 10, 10}};
    bad_table(20, 2, range, 2, "adapter id 2 is out of range");
    const struct lg_mlora_seg neg[] = {{-2, 0, 20}};
    bad_table(20, 2, neg, 1, "adapter id -2");
    const struct lg_mlora_seg twice[] = {{1, 0, 10}, {1, 10, 10}};
    bad_table(20, 2, twice, 2, "already has a segment");
    const struct lg_mlora_seg negl[] = {{0, 0, -1}, {1, -1, 21}};
    bad_table(20, 2, negl, 2, "length -1");
    bad_table(0, 2, good, 0, "n = 0");
    /* 64+ adapters: no cap */
    struct lg_mlora_seg many[100];
    for (int i = 0; i < 100; i++)
        many[i] = (struct lg_mlora_seg){.adapter = 99 - i, .start = 7 * i, .len = 7};
    CHECK(lg_mlora_segments_check(700, 100, many, 100));
}
END_TEST

static const struct lg_mlora_slot_params slots2[2] = {{.rank = 16, .alpha = 32, .dropout = 0.1f},
                                                      {.rank = 4, .alpha = 8}};

static void expect_bad(struct lg_mlora_params p, enum lg_status want, const char *field)
{
    lg_mlora_t *l = NULL;
    enum lg_status st = lg_mlora_init(NULL, &p, &l);
    ck_assert_msg(st == want, "want %s, got %s (%s)", lg_status_str(want), lg_status_str(st), lg_last_error());
    ck_assert_msg(strstr(lg_last_error(), field) != NULL, "'%s' not named in: %s", field, lg_last_error());
    ck_assert_ptr_null(l);
}

START_TEST(bad_layer_parameters)
{
    const struct lg_mlora_params good = {.in_features = 512, .nmod = 1, .out_features = {256}, .nadapters = 2,
                                         .slots = slots2, .dtype = LG_BF16};
    struct lg_mlora_slot_params s[2];
    struct lg_mlora_params p;
    const int bad_ranks[] = {2, 6, 132, 256, -4};
    for (int i = 0; i < 5; i++) {
        memcpy(s, slots2, sizeof s), s[1].rank = bad_ranks[i];
        p = good, p.slots = s, expect_bad(p, LG_ERR_INVALID, "rank");
    }
    memcpy(s, slots2, sizeof s), s[0].alpha = 0;
    p = good, p.slots = s, expect_bad(p, LG_ERR_INVALID, "alpha");
    memcpy(s, slots2, sizeof s), s[0].dropout = 1.0f;
    p = good, p.slots = s, expect_bad(p, LG_ERR_INVALID, "dropout");
    p = good, p.in_features = 500, expect_bad(p, LG_ERR_INVALID, "in_features");
    p = good, p.out_features[0] = 100, expect_bad(p, LG_ERR_INVALID, "out_features[0]");
    p = good, p.nmod = 4, expect_bad(p, LG_ERR_INVALID, "nmod");
    p = good, p.nadapters = 0, expect_bad(p, LG_ERR_INVALID, "nadapters");
    p = good, p.dtype = LG_FP32, expect_bad(p, LG_ERR_UNSUPPORTED, "fp32");
    expect_bad(good, LG_ERR_INVALID, "ctx"); /* parameters fine, no context */
    /* every multiple of 4 in 4..128 and 0 (module not adapted) is a valid slot rank */
    for (int r = 0; r <= 128; r += 4) {
        memcpy(s, slots2, sizeof s), s[1].rank = r;
        p = good, p.slots = s, expect_bad(p, LG_ERR_INVALID, "ctx");
    }
    ck_assert_int_eq(lg_mlora_init(NULL, NULL, NULL), LG_ERR_INVALID);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mlora_api");
    TCase *tc = tcase_create("cpu");
    tcase_add_test(tc, segment_tables);
    tcase_add_test(tc, bad_layer_parameters);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
