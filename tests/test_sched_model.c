/* test_sched_model.c: the cost model (FLOP-derived coefficients, the least-squares calibration from measured
 * layer times and its refusals), the memory-derived capacity, and the synthetic length traces (reproducible,
 * in range, means on target). */
#include "lg_sched.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <string.h>

START_TEST(coefficients_from_dims)
{
    struct lg_model_dims d = lg_model_dims_default();
    struct lg_costmodel cm;
    CHECK(lg_costmodel_from_dims(&d, &cm));
    /* q, o: 4096^2; k, v: 4096 x 1024; gate, up, down: 4096 x 14336 -> 218103808 weights, 2 FLOPs each */
    ck_assert_double_eq_tol(cm.token_us, 2.0 * 218103808 / 400e6, 1e-12);
    ck_assert_double_eq_tol(cm.attn_us, 2.0 * 4096 / 250e6, 1e-15);
    ck_assert_double_eq_tol(cm.act_bytes, 2.0 * (6 * 4096 + 2 * 1024 + 3 * 14336), 1e-9);
    ck_assert(cm.bwd_linear == 1.05 && cm.bwd_attn == 2.5 && cm.layers == 32);
    /* a 4096-token sample alone costs more than 4096 tokens of 512-token samples: the quadratic term */
    double one = lg_costmodel_fwd_us(&cm, 4096, 0, 4096.0 * 4096);
    double eight = lg_costmodel_fwd_us(&cm, 4096, 0, 8 * 512.0 * 512);
    ck_assert(one > eight * 1.05);
    ck_assert(lg_costmodel_bwd_us(&cm, 4096, 0, 4096.0 * 4096) > one);
    d.heads = 30; /* 4096 does not divide by 30 */
    ck_assert_int_eq(lg_costmodel_from_dims(&d, &cm), LG_ERR_INVALID);
}
END_TEST

START_TEST(calibration_recovers_coefficients)
{
    uint64_t seed = lg_test_seed();
    float r[4];
    lg_test_fill(r, 4, seed, 1.0f);
    double layer = 30 + 20 * r[0], tok = 1.1 + 0.3 * r[1], rank = 0.01 + 0.005 * r[2], attn = 3e-5 + 1e-5 * r[3];
    struct lg_cost_sample s[12];
    float v[36];
    lg_test_fill(v, 36, seed + 1, 1.0f);
    for (int i = 0; i < 12; i++) {
        s[i].tokens = 2048 + 2000 * v[3 * i];
        s[i].sum_len2 = s[i].tokens * (1500 + 1400 * v[3 * i + 1]);
        s[i].rank_tokens = s[i].tokens * (16 + 15 * v[3 * i + 2]);
        s[i].fwd_us = layer + tok * s[i].tokens + rank * s[i].rank_tokens + attn * s[i].sum_len2;
    }
    struct lg_costmodel cm = {.bwd_linear = 1.05, .bwd_attn = 2.5, .layers = 32};
    CHECK(lg_costmodel_fit(&cm, s, 12));
    ck_assert_msg(fabs(cm.layer_us - layer) < 1e-6 * layer && fabs(cm.token_us - tok) < 1e-9 * tok &&
                      fabs(cm.token_rank_us - rank) < 1e-9 * rank && fabs(cm.attn_us - attn) < 1e-9 * attn,
                  "seed %llu: fit %g %g %g %g, true %g %g %g %g", (unsigned long long)seed, cm.layer_us, cm.token_us,
                  cm.token_rank_us, cm.attn_us, layer, tok, rank, attn);
    ck_assert(cm.bwd_linear == 1.05 && cm.layers == 32); /* untouched */
    /* without a rank column the rank term is kept and the other three are fitted */
    for (int i = 0; i < 12; i++) {
        s[i].fwd_us -= rank * s[i].rank_tokens;
        s[i].rank_tokens = 0;
    }
    cm.token_rank_us = 0.123;
    CHECK(lg_costmodel_fit(&cm, s, 12));
    ck_assert(cm.token_rank_us == 0.123);
    ck_assert(fabs(cm.attn_us - attn) < 1e-9 * attn);
}
END_TEST

START_TEST(calibration_refusals)
{
    struct lg_costmodel cm = {.bwd_linear = 1.05, .bwd_attn = 2.5, .layers = 32};
    struct lg_cost_sample s[5];
    for (int i = 0; i < 5; i++) /* sum_len2 proportional to tokens: attention cannot be told apart */
        s[i] = (struct lg_cost_sample){.tokens = 1000.0 * (i + 1), .sum_len2 = 2e6 * (i + 1),
                                       .fwd_us = 40 + 1100.0 * (i + 1)};
    ck_assert_int_eq(lg_costmodel_fit(&cm, s, 5), LG_ERR_INVALID);
    ck_assert_int_eq(lg_costmodel_fit(&cm, s, 2), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "at least"));
    for (int i = 0; i < 5; i++) /* time falling with tokens: a negative coefficient */
        s[i] = (struct lg_cost_sample){.tokens = 1000.0 * (i + 1), .sum_len2 = 1e6 * (i % 2 + 1) * (i + 1),
                                       .fwd_us = 5000 - 500.0 * i};
    ck_assert_int_eq(lg_costmodel_fit(&cm, s, 5), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "negative"));
}
END_TEST

START_TEST(memory_capacity)
{
    struct lg_job_params p = lg_job_params_default();
    p.stages = 4;
    p.pad_multiple = 64;
    p.capacity_policy = LG_CAPACITY_AUTO;
    p.memory_budget_bytes = 40e9;
    lg_job_t *job;
    CHECK(lg_job_init(&p, &job));
    /* 4 microbatches in flight on stage 0 x 8 layers x act_bytes per token */
    double per = 4.0 * 8 * p.cost.act_bytes;
    uint32_t want = (uint32_t)floor(40e9 / per) / 64 * 64;
    ck_assert_uint_eq(lg_job_capacity_limit(job), want);
    lg_job_free(job);
    p.memory_budget_bytes = 1e6; /* not one token */
    ck_assert_int_eq(lg_job_init(&p, &job), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "memory_budget_gb"));
}
END_TEST

START_TEST(traces)
{
    static const double mean[] = {560, 1000, 2300, (560 + 1000 + 2300) / 3.0};
    enum { N = 40000 };
    static uint32_t a[N], b[N];
    for (int k = 0; k < LG_TRACE_KINDS; k++) {
        CHECK(lg_trace_generate((enum lg_trace_kind)k, N, 42, a));
        CHECK(lg_trace_generate((enum lg_trace_kind)k, N, 42, b));
        ck_assert(memcmp(a, b, sizeof a) == 0); /* reproducible */
        CHECK(lg_trace_generate((enum lg_trace_kind)k, N, 43, b));
        ck_assert(memcmp(a, b, sizeof a) != 0);
        double m = 0;
        for (int i = 0; i < N; i++) {
            ck_assert(a[i] >= 16 && a[i] <= 4096);
            m += a[i] / (double)N;
        }
        ck_assert_msg(fabs(m - mean[k]) < 0.03 * mean[k], "%s: mean %.1f, target %.1f",
                      lg_trace_kind_name((enum lg_trace_kind)k), m, mean[k]);
        enum lg_trace_kind back;
        CHECK(lg_trace_kind_parse(lg_trace_kind_name((enum lg_trace_kind)k), &back));
        ck_assert_int_eq(back, k);
    }
    enum lg_trace_kind x;
    ck_assert_int_eq(lg_trace_kind_parse("arxiv", &x), LG_ERR_INVALID);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched_model");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, coefficients_from_dims);
    tcase_add_test(tc, calibration_recovers_coefficients);
    tcase_add_test(tc, calibration_refusals);
    tcase_add_test(tc, memory_capacity);
    tcase_add_test(tc, traces);
    suite_add_tcase(s, tc);
    int failed = lg_test_run(s, 0);
    return failed ? 1 : 0;
}
