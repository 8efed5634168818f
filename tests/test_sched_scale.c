/* test_sched_scale.c: the planner at the job schema's limits. Every bin used to scan every adapter, so planning
 * was quadratic in the adapters (1,000 took about a minute, 10,000 hours) and data_parallel = 4096 took
 * minutes; now a slot looks at a bounded set of candidates (pack_cand.c). The tests time in CPU seconds and
 * compare sizes rather than trust one machine's speed: four times the adapters must cost well under sixteen
 * times the time. Jobs too large to plan in seconds are refused up front, with a message that says what to
 * change. Plans are verified as everywhere else. */
#include "lg_sched.h"
#include "lg_test.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static double cpu_s(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

/* A adapters of n samples each (mix trace), global batch 8, S = 4. */
static lg_job_t *many(int A, size_t n, int D)
{
    struct lg_job_params p = lg_job_params_default();
    p.stages = 4;
    p.data_parallel = D;
    lg_job_t *job;
    CHECK(lg_job_init(&p, &job));
    uint32_t *len = malloc(n * sizeof *len);
    for (int a = 0; a < A; a++) {
        CHECK(lg_trace_generate(LG_TRACE_MIX, n, 7u + (unsigned)a, len));
        lg_dataset_t *ds;
        CHECK(lg_dataset_from_lengths(len, n, &ds));
        char name[16];
        snprintf(name, sizeof name, "a%d", a);
        struct lg_adapter_params ap = {.name = name, .global_batch = 8, .rank = 16};
        CHECK(lg_job_add_adapter(job, &ap, ds, NULL));
    }
    free(len);
    return job;
}

/* Plans and verifies; returns the CPU seconds lg_plan_build took. */
static double plan_cpu(const lg_job_t *job)
{
    struct lg_plan_params pp = lg_plan_params_default();
    lg_plan_t *plan;
    double t0 = cpu_s();
    enum lg_status s = lg_plan_build(job, &pp, &plan);
    double t = cpu_s() - t0;
    ck_assert_msg(s == LG_OK, "%s", lg_last_error());
    CHECK(lg_plan_verify(job, plan));
    lg_plan_free(plan);
    return t;
}

START_TEST(many_adapters_plan_in_linear_time)
{
    lg_job_t *small = many(1000, 8, 1), *big = many(4000, 8, 1);
    double ts = plan_cpu(small), tb = plan_cpu(big);
    printf("1000 adapters: %.2f s, 4000: %.2f s of CPU\n", ts, tb);
    ck_assert_msg(tb < 8 * ts + 0.5, "4x the adapters took %.1fx the time (%.2f s, %.2f s)", tb / ts, ts, tb);
    ck_assert_msg(tb < 30, "4000 adapters took %.1f s of CPU", tb);
    lg_job_free(small);
    lg_job_free(big);
}
END_TEST

START_TEST(many_ranks_plan_in_seconds)
{
    lg_job_t *job = many(4, 1000, 4096);
    double t = plan_cpu(job);
    printf("4 adapters at data_parallel 4096: %.2f s of CPU\n", t);
    ck_assert_msg(t < 30, "data_parallel 4096 took %.1f s of CPU", t);
    lg_job_free(job);
}
END_TEST

/* Too large to plan in seconds: refused at once, saying what to change; with a fill target the search over
 * targets is skipped, and a job that needed it only for the search plans. */
START_TEST(too_large_is_refused_with_a_reason)
{
    lg_job_t *job = many(10000, 8, 4096);
    struct lg_plan_params pp = lg_plan_params_default();
    lg_plan_t *plan = NULL;
    double t0 = cpu_s();
    ck_assert_int_eq(lg_plan_build(job, &pp, &plan), LG_ERR_INVALID);
    ck_assert(cpu_s() - t0 < 1);
    ck_assert_ptr_null(plan);
    const char *msg = lg_last_error();
    ck_assert_msg(strstr(msg, "too large to plan") && strstr(msg, "10000 adapters") &&
                      strstr(msg, "data_parallel 4096") && strstr(msg, "fewer data-parallel ranks"),
                  "%s", msg);
    lg_job_free(job);
    job = many(10000, 8, 64); /* just over with the search, well under without it */
    ck_assert_int_eq(lg_plan_build(job, &pp, &plan), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "--target"));
    pp.target = 4096;
    CHECK(lg_plan_build(job, &pp, &plan));
    CHECK(lg_plan_verify(job, plan));
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

/* Names are checked through an index now, not against every adapter: a duplicate is still caught. */
START_TEST(duplicate_name_among_many)
{
    lg_job_t *job = many(3000, 8, 1);
    uint32_t len[8] = {10, 20, 30, 40, 50, 60, 70, 80};
    lg_dataset_t *ds;
    CHECK(lg_dataset_from_lengths(len, 8, &ds));
    struct lg_adapter_params ap = {.name = "a1234", .global_batch = 8, .rank = 16};
    ck_assert_int_eq(lg_job_add_adapter(job, &ap, ds, "here"), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "'a1234' is used twice"));
    CHECK(lg_dataset_from_lengths(len, 8, &ds));
    ap.name = "a3000";
    CHECK(lg_job_add_adapter(job, &ap, ds, NULL));
    ck_assert_int_eq(lg_job_adapter_count(job), 3001);
    lg_job_free(job);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched_scale");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, many_adapters_plan_in_linear_time);
    tcase_add_test(tc, many_ranks_plan_in_seconds);
    tcase_add_test(tc, too_large_is_refused_with_a_reason);
    tcase_add_test(tc, duplicate_name_among_many);
    suite_add_tcase(s, tc);
    int failed = lg_test_run(s, 0);
    return failed ? 1 : 0;
}
