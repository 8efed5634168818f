/* test_sched_cli.c: `loragen plan` run as a program, for what its printout promises (issue 13).
 *
 * - "explicit waits N" is the number of forwards the simulator holds for an optimizer step, the `waits`
 *   column of the prediction (once 161 against 377 on a DP=2 job): checked at DP=2 and at DP=1 with an
 *   optimizer time, where the order alone guaranteed nothing and the old count was 0.
 * - `--capacity` below the longest sample fails with exit 1, naming the job file's adapter and the dataset's
 *   file and line, as the job's own oversize error does.
 * - a job file's batching.target is the fill target (it used to be read and ignored); --target overrides it.
 *
 * The binary is found next to this test executable; ctest runs in the source root. */
#include "lg_test.h"

#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DATA "tests/data/sched/"

/* Writes a job with the four benchmark traces of specs/jobs/data (first `na` of them) at S=4. */
static char *write_job(const char *dir, int dp, double optimizer_us, int na)
{
    static const char *tr[4] = {"xsum", "cnn", "wikisum", "mix"};
    char root[PATH_MAX], text[4096];
    ck_assert_ptr_nonnull(realpath("specs/jobs/data", root));
    int o = snprintf(text, sizeof text,
                     "return {\n  name = \"cli-waits\",\n"
                     "  pipeline = { stages = 4, data_parallel = %d, optimizer_us = %g },\n"
                     "  batching = { capacity = 4096 },\n  adapters = {\n",
                     dp, optimizer_us);
    for (int a = 0; a < na; a++)
        o += snprintf(text + o, sizeof text - (size_t)o,
                      "    { name = \"%s\", dataset = \"%s/%s.trace\", global_batch = 8 },\n", tr[a], root, tr[a]);
    snprintf(text + o, sizeof text - (size_t)o, "  },\n}\n");
    char *path = lg_test_path(dir, "job.lua");
    lg_test_write_text(path, text);
    return path;
}

/* The numbers after "explicit waits" and in the `ours` row's last column. */
static void read_waits(const char *out, long *explicit_waits, long *held)
{
    const char *e = strstr(out, "explicit waits ");
    ck_assert_msg(e != NULL, "no explicit waits line in:\n%s", out);
    *explicit_waits = strtol(e + strlen("explicit waits "), NULL, 10);
    const char *r = strstr(out, "\n  ours ");
    ck_assert_msg(r != NULL, "no prediction row for ours in:\n%s", out);
    const char *eol = strchr(r + 1, '\n');
    ck_assert_ptr_nonnull(eol);
    const char *last = eol;
    while (last > r && last[-1] == ' ')
        last--;
    while (last > r && last[-1] != ' ')
        last--;
    *held = strtol(last, NULL, 10);
}

static void expect_waits_equal(int dp, double optimizer_us, int na)
{
    char *dir = lg_test_tmpdir("lg_plan_cli"), *job = write_job(dir, dp, optimizer_us, na), *out, *err;
    int rc = lg_test_loragen_run(dir, (const char *[]){"plan", job, "--no-baselines", "--quiet", NULL}, &out, &err);
    ck_assert_msg(rc == 0, "loragen plan exited %d:\n%s", rc, err);
    long marked, held;
    read_waits(out, &marked, &held);
    /* both are positive on these jobs (the ranks and the step hold forwards), so the equality says something */
    ck_assert_msg(held > 0, "DP=%d opt %g: the simulator held no forward:\n%s", dp, optimizer_us, out);
    ck_assert_msg(marked == held, "DP=%d opt %g: %ld explicit waits printed, the simulator holds %ld:\n%s", dp,
                  optimizer_us, marked, held, out);
    free(out);
    free(err);
    lg_test_rm_rf(dir);
    free(dir);
    free(job);
}

START_TEST(explicit_waits_are_the_holds_dp2)
{
    expect_waits_equal(2, 0, 4);
}
END_TEST

START_TEST(explicit_waits_are_the_holds_dp1_optimizer)
{
    expect_waits_equal(1, 300, 2);
}
END_TEST

START_TEST(capacity_below_a_sample_names_file_and_line)
{
    char *dir = lg_test_tmpdir("lg_plan_cli"), *out, *err;
    int rc = lg_test_loragen_run(
        dir, (const char *[]){"plan", DATA "oversize_truncate.lua", "--capacity", "2048", "--quiet", NULL}, &out,
        &err);
    ck_assert_msg(rc == 1, "exit %d, stderr:\n%s", rc, err);
    static const char *frags[] = {"capacity 2048", DATA "oversize_truncate.lua:5:", "adapters[1] ('long')",
                                  DATA "long.trace:2: sample 1", NULL};
    for (const char **f = frags; *f; f++)
        ck_assert_msg(strstr(err, *f), "stderr lacks '%s':\n%s", *f, err);
    free(out);
    free(err);
    /* at the capacity of the longest kept sample it plans */
    rc = lg_test_loragen_run(
        dir, (const char *[]){"plan", DATA "oversize_truncate.lua", "--capacity", "4096", "--quiet", NULL}, &out,
        &err);
    ck_assert_msg(rc == 0, "exit %d, stderr:\n%s", rc, err);
    free(out);
    free(err);
    lg_test_rm_rf(dir);
    free(dir);
}
END_TEST

/* A job file's batching.target is the planner's fill target (it was read and ignored): the plan says so and has
 * the same microbatches as --target with that value; --target still overrides it; one above the capacity fails
 * naming the field. */
static char *plan_out(const char *dir, const char *text, const char *extra, int want_rc)
{
    char *job = lg_test_path(dir, "job.lua"), *out, *err;
    lg_test_write_text(job, text);
    const char *argv[] = {"plan", job, "--no-baselines", "--quiet", extra, extra ? "2048" : NULL, NULL};
    int rc = lg_test_loragen_run(dir, argv, &out, &err);
    ck_assert_msg(rc == want_rc, "exit %d (want %d), stderr:\n%s", rc, want_rc, err);
    char *r = want_rc ? err : out;
    free(want_rc ? out : err);
    free(job);
    return r;
}

/* The "microbatches" line of a plan's printout. */
static char *mb_line(const char *out)
{
    const char *m = strstr(out, "  microbatches");
    ck_assert_msg(m != NULL, "no microbatches line in:\n%s", out);
    return strndup(m, strcspn(m, "\n"));
}

START_TEST(job_fill_target_is_used)
{
    char root[PATH_MAX], with[PATH_MAX + 512], without[PATH_MAX + 512], both[PATH_MAX + 512], over[PATH_MAX + 512];
    ck_assert_ptr_nonnull(realpath("specs/jobs/data", root));
    const char *fmt = "return { name = \"t\", pipeline = { stages = 2 }, batching = { capacity = 4096%s },\n"
                      "  adapters = { { name = \"mix\", dataset = \"%s/mix.trace\", global_batch = 8 } } }\n";
    snprintf(with, sizeof with, fmt, ", target = 2048", root);
    snprintf(without, sizeof without, fmt, "", root);
    snprintf(both, sizeof both, fmt, ", target = 4096", root);
    snprintf(over, sizeof over, fmt, ", target = 5000", root);
    char *dir = lg_test_tmpdir("lg_plan_cli");
    char *a = plan_out(dir, with, NULL, 0), *b = plan_out(dir, without, "--target", 0),
         *c = plan_out(dir, without, NULL, 0);
    ck_assert_msg(strstr(a, "fill target 2048 tokens (given)"), "the job's target is not used:\n%s", a);
    ck_assert_msg(!strstr(c, "(given)"), "no target given, yet:\n%s", c);
    char *la = mb_line(a), *lb = mb_line(b);
    ck_assert_msg(!strcmp(la, lb), "batching.target = 2048 and --target 2048 differ:\n%s\n%s", la, lb);
    free(la), free(lb), free(a), free(b), free(c);
    /* --target overrides the file's */
    char *d = plan_out(dir, both, "--target", 0);
    ck_assert_msg(strstr(d, "fill target 2048 tokens (given)"), "--target did not override:\n%s", d);
    free(d);
    /* above the capacity: an error naming the field */
    char *e = plan_out(dir, over, NULL, 1);
    ck_assert_msg(strstr(e, "batching.target = 5000 exceeds the capacity 4096"), "stderr:\n%s", e);
    free(e);
    lg_test_rm_rf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched_cli");
    TCase *tc = tcase_create("plan");
    tcase_add_test(tc, explicit_waits_are_the_holds_dp2);
    tcase_add_test(tc, explicit_waits_are_the_holds_dp1_optimizer);
    tcase_add_test(tc, capacity_below_a_sample_names_file_and_line);
    tcase_add_test(tc, job_fill_target_is_used);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
