/* test_sched_parse.c: the scheduler's input side: JSONL and trace datasets, job files, and every bad input
 * the issue lists (missing file, empty dataset, malformed JSONL, a sample longer than the capacity with each
 * oversize policy, no adapters, a global batch larger than its dataset, schema errors), each checked for a
 * message that names the file and the line or field. Fixtures: tests/data/sched/. */
#include "lg_io.h"
#include "lg_sched.h"
#include "lg_test.h"
#include "lg_tokens.h"

#include <check.h>
#include <string.h>

#define DATA "tests/data/sched/"

/* The call must fail with `want` and its message must hold every listed fragment. */
static void expect_fail(enum lg_status got, enum lg_status want, const char *const *frags)
{
    const char *msg = lg_last_error();
    ck_assert_msg(got == want, "status %s, wanted %s (%s)", lg_status_str(got), lg_status_str(want), msg);
    for (; *frags; frags++)
        ck_assert_msg(strstr(msg, *frags), "message lacks '%s':\n%s", *frags, msg);
}

static enum lg_status load_job(const char *name, lg_job_t **job)
{
    char path[256];
    snprintf(path, sizeof path, DATA "%s", name);
    *job = NULL;
    return lg_job_load(path, job);
}

START_TEST(jsonl_loss_tokens)
{
    lg_dataset_t *ds;
    CHECK(lg_dataset_load(DATA "good.jsonl", LG_DATASET_AUTO, &ds));
    ck_assert_uint_eq(lg_dataset_size(ds), 4); /* the blank line is skipped */
    /* labels != -100 AND loss_mask, at positions t >= 1 (the causal shift: the last sample, with neither,
     * has 2 tokens and 1 target; before the shift was counted, 2) */
    static const uint32_t len[] = {5, 3, 4, 2}, loss[] = {3, 2, 2, 1};
    for (size_t i = 0; i < 4; i++) {
        ck_assert_uint_eq(lg_dataset_length(ds, i), len[i]);
        ck_assert_uint_eq(lg_dataset_loss_tokens(ds, i), loss[i]);
    }
    lg_dataset_free(ds);
}
END_TEST

/* The causal shift: position t predicts label t+1, so position 0 is never a target, whatever its label or
 * mask; and the count is the trainer's own (lg_tokens_loss_count), sample by sample. */
START_TEST(loss_tokens_shifted)
{
    lg_dataset_t *ds;
    CHECK(lg_dataset_load(DATA "shift.jsonl", LG_DATASET_AUTO, &ds));
    static const uint32_t loss[] = {3, 2, 1, 1, 1, 0, 1};
    ck_assert_uint_eq(lg_dataset_size(ds), 7);
    lg_tokens_t *tk;
    CHECK(lg_tokens_load(DATA "shift.jsonl", 0, &tk));
    for (size_t i = 0; i < 7; i++) {
        ck_assert_uint_eq(lg_dataset_loss_tokens(ds, i), loss[i]);
        ck_assert_int_eq(lg_tokens_loss_count(tk, i), (int64_t)loss[i]);
    }
    lg_tokens_free(tk);
    lg_dataset_free(ds);
    /* length traces and lengths in memory: n - 1 per sample */
    CHECK(lg_dataset_load(DATA "small.trace", LG_DATASET_AUTO, &ds));
    ck_assert_uint_eq(lg_dataset_loss_tokens(ds, 0), 119);
    lg_dataset_free(ds);
    uint32_t len[2] = {1, 4096};
    CHECK(lg_dataset_from_lengths(len, 2, &ds));
    ck_assert_uint_eq(lg_dataset_loss_tokens(ds, 0), 0);
    ck_assert_uint_eq(lg_dataset_loss_tokens(ds, 1), 4095);
    lg_dataset_free(ds);
}
END_TEST

START_TEST(trace_comments_and_blanks)
{
    lg_dataset_t *ds;
    CHECK(lg_dataset_load(DATA "small.trace", LG_DATASET_AUTO, &ds));
    ck_assert_uint_eq(lg_dataset_size(ds), 4);
    ck_assert_uint_eq(lg_dataset_length(ds, 2), 4000);
    ck_assert_uint_eq(lg_dataset_loss_tokens(ds, 2), 3999); /* every position but the first */
    lg_dataset_free(ds);
}
END_TEST

START_TEST(dataset_errors)
{
    lg_dataset_t *ds;
    expect_fail(lg_dataset_load(DATA "nope.trace", LG_DATASET_AUTO, &ds), LG_ERR_IO,
                (const char *[]){DATA "nope.trace", "cannot open", NULL});
    expect_fail(lg_dataset_load(DATA "empty.trace", LG_DATASET_AUTO, &ds), LG_ERR_IO,
                (const char *[]){DATA "empty.trace", "empty dataset", NULL});
    expect_fail(lg_dataset_load(DATA "notnum.trace", LG_DATASET_AUTO, &ds), LG_ERR_IO,
                (const char *[]){DATA "notnum.trace:2:", "'abc'", NULL});
    expect_fail(lg_dataset_load(DATA "bad.jsonl", LG_DATASET_AUTO, &ds), LG_ERR_IO,
                (const char *[]){DATA "bad.jsonl:3:", "malformed JSON", NULL});
    expect_fail(lg_dataset_load(DATA "noids.jsonl", LG_DATASET_AUTO, &ds), LG_ERR_IO,
                (const char *[]){DATA "noids.jsonl:2:", "input_ids", NULL});
    expect_fail(lg_dataset_load(DATA "badlabels.jsonl", LG_DATASET_AUTO, &ds), LG_ERR_IO,
                (const char *[]){DATA "badlabels.jsonl:1:", "labels", NULL});
    /* a trace read as JSONL is malformed on its first line */
    expect_fail(lg_dataset_load(DATA "small.trace", LG_DATASET_JSONL, &ds), LG_ERR_IO,
                (const char *[]){DATA "small.trace:1:", "JSON", NULL});
}
END_TEST

START_TEST(job_good)
{
    lg_job_t *job;
    CHECK(load_job("good.lua", &job));
    const struct lg_job_params *p = lg_job_get_params(job);
    ck_assert_int_eq(p->stages, 2);
    ck_assert_int_eq(p->data_parallel, 2);
    ck_assert_int_eq(p->capacity_policy, LG_CAPACITY_AUTO);
    ck_assert_uint_eq(p->shuffle_seed, 3);
    /* 2 GB over 2 microbatches in flight x 4 layers x 2*(6*1024 + 2*256 + 3*4096) bytes, down to a multiple of 8 */
    ck_assert_uint_eq(lg_job_capacity_limit(job), 6592);
    ck_assert_int_eq(lg_job_adapter_count(job), 2);
    struct lg_adapter_info a, b;
    CHECK(lg_job_adapter(job, 0, &a));
    CHECK(lg_job_adapter(job, 1, &b));
    ck_assert_str_eq(a.name, "chat");
    ck_assert_int_eq(a.rank, 4);
    ck_assert_uint_eq(a.batches, 2);
    ck_assert_uint_eq(a.loss_tokens, 3 + 2 + 2 + 1); /* after the causal shift */
    ck_assert_str_eq(b.name, "sum");
    ck_assert(b.alpha == 8 && b.dropout == 0.1 && b.lr == 3e-4);
    ck_assert_uint_eq(b.tokens, 120 + 300 + 4000 + 250);
    /* every kept sample belongs to exactly one batch, and batch loss tokens add up */
    uint64_t sum = 0;
    for (size_t g = 0; g < a.batches; g++)
        sum += lg_job_batch_loss_tokens(job, 0, g);
    ck_assert_uint_eq(sum, a.loss_tokens);
    lg_job_free(job);
}
END_TEST

START_TEST(job_missing_dataset)
{
    lg_job_t *job;
    expect_fail(load_job("missing_dataset.lua", &job), LG_ERR_IO,
                (const char *[]){DATA "missing_dataset.lua:6:", "adapters[2].dataset", "does_not_exist.trace",
                                 "cannot open", NULL});
}
END_TEST

START_TEST(job_empty_dataset)
{
    lg_job_t *job;
    expect_fail(load_job("empty_dataset.lua", &job), LG_ERR_IO,
                (const char *[]){DATA "empty_dataset.lua:6:", "adapters[1].dataset", "empty dataset", NULL});
}
END_TEST

START_TEST(job_malformed_jsonl)
{
    lg_job_t *job;
    expect_fail(load_job("malformed_jsonl.lua", &job), LG_ERR_IO,
                (const char *[]){DATA "malformed_jsonl.lua:5:", DATA "bad.jsonl:3:", "malformed JSON", NULL});
}
END_TEST

START_TEST(job_oversize_policies)
{
    lg_job_t *job;
    expect_fail(load_job("oversize.lua", &job), LG_ERR_SPEC,
                (const char *[]){DATA "oversize.lua:5:", DATA "long.trace:2:", "5000 tokens", "capacity 4096",
                                 "truncate", NULL});
    struct lg_adapter_info in;
    CHECK(load_job("oversize_truncate.lua", &job));
    CHECK(lg_job_adapter(job, 0, &in));
    ck_assert_uint_eq(in.truncated, 2);
    ck_assert_uint_eq(in.samples, 5);
    ck_assert_uint_eq(in.max_len, 4096);
    ck_assert_uint_eq(lg_job_sample_length(job, 0, 3), 4096);
    /* a truncated trace sample keeps capacity - 1 loss tokens (global batch 1: batch g is sample g) */
    ck_assert_uint_eq(lg_job_batch_loss_tokens(job, 0, 0), 99);
    ck_assert_uint_eq(lg_job_batch_loss_tokens(job, 0, 1), 4095);
    ck_assert_uint_eq(lg_job_batch_loss_tokens(job, 0, 3), 4095);
    lg_job_free(job);
    CHECK(load_job("oversize_skip.lua", &job));
    CHECK(lg_job_adapter(job, 0, &in));
    ck_assert_uint_eq(in.skipped, 2);
    ck_assert_uint_eq(in.samples, 3);
    ck_assert_int_eq(lg_job_sample_batch(job, 0, 1), -1);
    lg_job_free(job);
}
END_TEST

/* A plan capacity (`loragen plan --capacity`) below the longest kept sample names the job file's adapter and
 * the dataset's file and line, as the job's own oversize error does. */
START_TEST(plan_capacity_below_a_sample)
{
    lg_job_t *job;
    CHECK(load_job("oversize_truncate.lua", &job)); /* long.trace's 5000 and 6000 are cut to 4096 */
    struct lg_plan_params pp = lg_plan_params_default();
    pp.capacity = 2048;
    lg_plan_t *plan = NULL;
    expect_fail(lg_plan_build(job, &pp, &plan), LG_ERR_INVALID,
                (const char *[]){"4096-token", "capacity 2048", DATA "oversize_truncate.lua:5:", "adapters[1]",
                                 DATA "long.trace:2: sample 1", NULL});
    ck_assert_ptr_null(plan);
    lg_job_free(job);
    CHECK(load_job("good.lua", &job)); /* a trace behind a JSONL adapter: small.trace line 5 holds 4000 */
    pp.capacity = 3200;
    expect_fail(lg_plan_build(job, &pp, &plan), LG_ERR_INVALID,
                (const char *[]){DATA "good.lua:9:", "adapters[2] ('sum')", DATA "small.trace:5: sample 2", NULL});
    lg_job_free(job);
}
END_TEST

START_TEST(job_no_adapters)
{
    lg_job_t *job;
    expect_fail(load_job("no_adapters.lua", &job), LG_ERR_SPEC,
                (const char *[]){DATA "no_adapters.lua:4:", "no adapters", NULL});
}
END_TEST

START_TEST(job_batch_too_big)
{
    lg_job_t *job;
    expect_fail(load_job("batch_too_big.lua", &job), LG_ERR_SPEC,
                (const char *[]){DATA "batch_too_big.lua:6:", "adapters[2]", "global_batch 9", "4 samples", NULL});
}
END_TEST

START_TEST(job_schema_every_error)
{
    lg_job_t *job;
    expect_fail(load_job("schema_errors.lua", &job), LG_ERR_SPEC,
                (const char *[]){DATA "schema_errors.lua:2: error: pipeline.data_paralel: unknown key",
                                 DATA "schema_errors.lua:2: error: pipeline.stages: expected an integer",
                                 DATA "schema_errors.lua:5: error: adapters[1].global_batch: must be >= 1",
                                 DATA "schema_errors.lua:6: error: adapters[2].name", "already the name",
                                 DATA "schema_errors.lua:6: error: adapters[2].rank: expected an integer", NULL});
    expect_fail(load_job("auto_no_budget.lua", &job), LG_ERR_SPEC,
                (const char *[]){DATA "auto_no_budget.lua:3:", "memory_budget_gb", NULL});
    expect_fail(load_job("syntax_error.lua", &job), LG_ERR_SPEC,
                (const char *[]){DATA "syntax_error.lua:4: error:", NULL});
    expect_fail(load_job("no_such_job.lua", &job), LG_ERR_IO, (const char *[]){"no_such_job.lua", NULL});
}
END_TEST

/* The example jobs load, plan and verify. */
START_TEST(example_jobs)
{
    static const char *jobs[] = {"specs/jobs/four-summarisers.lua", "specs/jobs/auto-capacity.lua",
                                 "specs/jobs/chat-jsonl.lua", "specs/jobs/seventy-b-eight-gpus.lua"};
    for (size_t i = 0; i < sizeof jobs / sizeof *jobs; i++) {
        lg_job_t *job;
        lg_plan_t *plan;
        CHECK(lg_job_load(jobs[i], &job));
        struct lg_plan_params pp = lg_plan_params_default();
        CHECK(lg_plan_build(job, &pp, &plan));
        CHECK(lg_plan_verify(job, plan));
        lg_plan_free(plan);
        lg_job_free(job);
    }
}
END_TEST

START_TEST(api_errors)
{
    lg_job_t *job;
    struct lg_job_params p = lg_job_params_default();
    p.capacity = 1000; /* not a multiple of 16 */
    expect_fail(lg_job_init(&p, &job), LG_ERR_INVALID, (const char *[]){"multiple of pad_multiple", NULL});
    p = lg_job_params_default();
    p.stages = 40; /* more than the 32 layers */
    expect_fail(lg_job_init(&p, &job), LG_ERR_INVALID, (const char *[]){"32 layers", NULL});
    p = lg_job_params_default();
    CHECK(lg_job_init(&p, &job));
    uint32_t len[3] = {10, 20, 30};
    lg_dataset_t *ds;
    CHECK(lg_dataset_from_lengths(len, 3, &ds));
    struct lg_adapter_params ap = {.name = "x", .global_batch = 1, .rank = 8};
    CHECK(lg_job_add_adapter(job, &ap, ds, NULL));
    CHECK(lg_dataset_from_lengths(len, 3, &ds));
    expect_fail(lg_job_add_adapter(job, &ap, ds, "here"), LG_ERR_INVALID, (const char *[]){"here", "twice", NULL});
    lg_plan_t *plan;
    struct lg_plan_params pp = lg_plan_params_default();
    pp.capacity = 16; /* the 30-token sample no longer fits */
    expect_fail(lg_plan_build(job, &pp, &plan), LG_ERR_INVALID,
                (const char *[]){"30-token", "line 3: sample 2", NULL});
    lg_job_free(job);
    CHECK(lg_job_init(&p, &job));
    expect_fail(lg_plan_build(job, &pp, &plan), LG_ERR_INVALID, (const char *[]){"no adapters", NULL});
    lg_job_free(job);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched_parse");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, jsonl_loss_tokens);
    tcase_add_test(tc, loss_tokens_shifted);
    tcase_add_test(tc, trace_comments_and_blanks);
    tcase_add_test(tc, dataset_errors);
    tcase_add_test(tc, job_good);
    tcase_add_test(tc, job_missing_dataset);
    tcase_add_test(tc, job_empty_dataset);
    tcase_add_test(tc, job_malformed_jsonl);
    tcase_add_test(tc, job_oversize_policies);
    tcase_add_test(tc, plan_capacity_below_a_sample);
    tcase_add_test(tc, job_no_adapters);
    tcase_add_test(tc, job_batch_too_big);
    tcase_add_test(tc, job_schema_every_error);
    tcase_add_test(tc, example_jobs);
    tcase_add_test(tc, api_errors);
    suite_add_tcase(s, tc);
    int failed = lg_test_run(s, 0);
    return failed ? 1 : 0;
}
