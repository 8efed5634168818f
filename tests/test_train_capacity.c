/* test_train_capacity.c: batching.capacity = "auto" in a training job, sized from the device's memory (the
 * CPU backend's host memory here) and training.memory_gb (train_memory.c): the capacity is a multiple of the
 * pad, at least the longest sample, at most one global batch of every adapter, grows with the limit and keeps
 * the run inside it; a limit that cannot hold the longest sample, or a fixed capacity above the limit, is
 * refused naming the job and the field; `loragen plan` asks for a budget (or --capacity); two data-parallel
 * processes agree on one capacity. */
#include "lg_test.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *tmp;

static void setup_once(void)
{
    if (tmp)
        return;
    tmp = lg_test_tmpdir("lg_train_cap");
    char *model = lg_test_path(tmp, "model"), *out, *err;
    int rc = lg_test_loragen_run(tmp, (const char *[]){"init-model", "specs/tiny.lua", model, "--dtype", "fp32", NULL},
                                 &out, &err);
    ck_assert_msg(rc == 0, "init-model: %d: %s", rc, err);
    free(out);
    free(err);
    free(model);
}

/* A job on the tiny model and the toy data; capacity and training fields as given. */
static char *write_job(const char *name, const char *capacity, const char *training, const char *pipeline)
{
    char cwd[1024], file[96], text[2048];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    snprintf(file, sizeof file, "%s.lua", name);
    char *job = lg_test_path(tmp, file);
    snprintf(text, sizeof text,
             "return { name = '%s', model = { path = 'model' },\n"
             "  batching = { capacity = %s },\n"
             "  pipeline = { stages = 1, data_parallel = %s },\n"
             "  training = { backend = 'cpu', output = 'out-%s', log_every = 1%s%s },\n"
             "  adapters = { { name = 'toy', dataset = '%s/specs/jobs/data/toy-train.jsonl', global_batch = 8,\n"
             "    rank = 8, steps = 2 } } }\n",
             name, capacity, pipeline ? pipeline : "1", name, training ? ", " : "", training ? training : "", cwd);
    lg_test_write_text(job, text);
    return job;
}

/* The capacity a run chose, from its 'capacity "auto": N tokens' line; -1 when there is none. */
static long chosen(const char *text)
{
    const char *p = strstr(text, "capacity \"auto\": ");
    return p ? strtol(p + strlen("capacity \"auto\": "), NULL, 10) : -1;
}

static long train(const char *job, int want_rc, char **all)
{
    char *out, *err;
    int rc = lg_test_loragen_run(tmp, (const char *[]){"train", job, NULL}, &out, &err);
    size_t n = strlen(out) + strlen(err) + 2;
    *all = malloc(n);
    snprintf(*all, n, "%s\n%s", out, err);
    free(out);
    free(err);
    ck_assert_msg(rc == want_rc, "train %s exited %d, not %d:\n%s", job, rc, want_rc, *all);
    return chosen(*all);
}

/* The toy data's longest sample and largest 8-sample batch, both padded to 16, bound every choice. */
START_TEST(auto_without_a_limit_is_one_global_batch)
{
    setup_once();
    char *job = write_job("free", "'auto'", NULL, NULL), *all;
    long c = train(job, 0, &all);
    ck_assert_msg(c > 0 && c % 16 == 0, "no capacity line, or not padded:\n%s", all);
    ck_assert_msg(strstr(all, "one global batch of every adapter"), "the host's memory holds more than a batch, "
                  "so the cap is one global batch:\n%s", all);
    ck_assert_msg(strstr(all, "step 2/2"), "the run did not train:\n%s", all);
    free(all);
    free(job);
}
END_TEST

START_TEST(auto_grows_with_the_limit_and_keeps_inside_it)
{
    setup_once();
    char *all;
    char *j1 = write_job("lim1", "'auto'", "memory_gb = 0.0105", NULL);
    char *j2 = write_job("lim2", "'auto'", "memory_gb = 0.0125", NULL);
    char *jf = write_job("free2", "'auto'", NULL, NULL);
    long c1 = train(j1, 0, &all);
    ck_assert_msg(strstr(all, "(training.memory_gb;"), "the limit should bind:\n%s", all);
    free(all);
    long c2 = train(j2, 0, &all);
    free(all);
    long cf = train(jf, 0, &all);
    free(all);
    ck_assert_msg(c1 > 0 && c1 % 16 == 0 && c1 < c2 && c2 <= cf, "capacities %ld (10.5 MiB), %ld (12.5 MiB), %ld "
                  "(no limit) should grow with the limit", c1, c2, cf);
    /* the chosen capacity, run with a fixed capacity under the same limit, fits it; 64 tokens more do not */
    char cap[32];
    snprintf(cap, sizeof cap, "%ld", c1);
    char *jok = write_job("fix1", cap, "memory_gb = 0.0105", NULL);
    train(jok, 0, &all);
    free(all);
    snprintf(cap, sizeof cap, "%ld", c1 + 64);
    char *jbad = write_job("fix2", cap, "memory_gb = 0.0105", NULL);
    train(jbad, 1, &all);
    ck_assert_msg(strstr(all, "fix2.lua: training.memory_gb = 0.0105: the run takes") &&
                  strstr(all, "lower batching.capacity"), "a fixed capacity over the limit:\n%s", all);
    free(all);
    free(j1);
    free(j2);
    free(jf);
    free(jok);
    free(jbad);
}
END_TEST

START_TEST(a_limit_below_the_longest_sample_is_refused)
{
    setup_once();
    char *job = write_job("tiny", "'auto'", "memory_gb = 0.002", NULL), *all;
    train(job, 1, &all);
    ck_assert_msg(strstr(all, "tiny.lua: batching.capacity = \"auto\": training.memory_gb leaves no room") &&
                  strstr(all, "or raise training.memory_gb"), "message:\n%s", all);
    free(all);
    free(job);
}
END_TEST

START_TEST(plan_needs_a_budget_or_a_capacity)
{
    setup_once();
    char *job = write_job("plan", "'auto'", NULL, NULL), *out, *err;
    int rc = lg_test_loragen_run(tmp, (const char *[]){"plan", job, "--no-baselines", NULL}, &out, &err);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(err, "plan.lua:2: error: batching.capacity: capacity = \"auto\" needs "
                              "batching.memory_budget_gb"), "%s", err);
    free(out);
    free(err);
    rc = lg_test_loragen_run(tmp, (const char *[]){"plan", job, "--no-baselines", "--capacity", "512", NULL}, &out,
                             &err);
    ck_assert_msg(rc == 0, "plan --capacity 512: %s", err);
    free(out);
    free(err);
    free(job);
}
END_TEST

START_TEST(data_parallel_ranks_agree)
{
    setup_once();
    char *job = write_job("dp", "'auto'", "memory_gb = 0.0125", "2"), *out, *err;
    int rc = lg_test_loragen_run(tmp, (const char *[]){"train", job, "--procs", "2", NULL}, &out, &err);
    ck_assert_msg(rc == 0, "train --procs 2: %d\n%s\n%s", rc, out, err);
    size_t n = strlen(out) + strlen(err) + 2;
    char *all = malloc(n);
    snprintf(all, n, "%s\n%s", out, err);
    long first = chosen(all), k = 0;
    for (const char *p = strstr(all, "capacity \"auto\": "); p; p = strstr(p + 1, "capacity \"auto\": "), k++)
        ck_assert_msg(chosen(p) == first, "the ranks chose different capacities:\n%s", all);
    ck_assert_msg(k >= 1 && first > 0, "no capacity line:\n%s", all);
    free(all);
    free(out);
    free(err);
    free(job);
}
END_TEST

static int train_args(const char *const *args, char **all)
{
    char *out, *err;
    int rc = lg_test_loragen_run(tmp, args, &out, &err);
    size_t n = strlen(out) + strlen(err) + 2;
    *all = malloc(n);
    snprintf(*all, n, "%s\n%s", out, err);
    free(out);
    free(err);
    return rc;
}

/* A resumed run plans at its checkpoint's capacity: "auto" keeps it whatever the limit now allows, and is
 * refused when the limit no longer holds it; a fixed capacity edited between the runs is refused by the plan's
 * fingerprint. */
START_TEST(resume_keeps_the_checkpoints_capacity)
{
    setup_once();
    char *all;
    char *j1 = write_job("res", "'auto'", "memory_gb = 0.0105", NULL);
    int rc = train_args((const char *[]){"train", j1, "--max-steps", "1", NULL}, &all);
    long c1 = chosen(all);
    ck_assert_msg(rc == 0 && c1 > 0, "first run: %d\n%s", rc, all);
    free(all);
    free(write_job("res", "'auto'", "memory_gb = 0.0125", NULL)); /* more room: the capacity must not follow it */
    rc = train_args((const char *[]){"train", j1, "--resume", NULL}, &all);
    ck_assert_msg(rc == 0 && chosen(all) == c1 && strstr(all, "(the checkpoint's;") && strstr(all, "resumed from"),
                  "resume with more room: %d, capacity %ld (first %ld)\n%s", rc, chosen(all), c1, all);
    free(all);
    free(write_job("res", "'auto'", "memory_gb = 0.009", NULL)); /* too little for the checkpoint's capacity */
    rc = train_args((const char *[]){"train", j1, "--resume", NULL}, &all);
    ck_assert_msg(rc == 1 && strstr(all, "the checkpoint to resume was planned at") &&
                  strstr(all, "start afresh without --resume"), "resume with less room: %d\n%s", rc, all);
    free(all);
    char *j2 = write_job("fixres", "512", NULL, NULL);
    rc = train_args((const char *[]){"train", j2, "--max-steps", "1", NULL}, &all);
    ck_assert_msg(rc == 0, "%s", all);
    free(all);
    free(write_job("fixres", "256", NULL, NULL));
    rc = train_args((const char *[]){"train", j2, "--resume", NULL}, &all);
    ck_assert_msg(rc == 1 && strstr(all, "was planned at capacity 512 into") && strstr(all, "at capacity 256 into"),
                  "a capacity edited between the runs: %d\n%s", rc, all);
    free(all);
    free(j1);
    free(j2);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train_capacity");
    TCase *tc = tcase_create("capacity");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, auto_without_a_limit_is_one_global_batch);
    tcase_add_test(tc, auto_grows_with_the_limit_and_keeps_inside_it);
    tcase_add_test(tc, a_limit_below_the_longest_sample_is_refused);
    tcase_add_test(tc, plan_needs_a_budget_or_a_capacity);
    tcase_add_test(tc, data_parallel_ranks_agree);
    tcase_add_test(tc, resume_keeps_the_checkpoints_capacity);
    suite_add_tcase(s, tc);
    int rc = lg_test_run(s, 1);
    if (tmp) {
        lg_test_rm_rf(tmp);
        free(tmp);
    }
    return rc;
}
