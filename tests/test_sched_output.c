/* test_sched_output.c: the scheduler's writers against values they cannot write as they are. The plan JSON
 * must fail with the field's name, and leave no file, when a number is inf or NaN (an adapter's alpha or lr,
 * a cost-model coefficient) or a name is not UTF-8 (jansson's constructors return NULL there, and a NULL handed
 * on used to drop the field or the whole adapter silently); `loragen plan --json` then exits 1. The SVG must
 * write names as text: markup in a job or adapter name never reaches the drawing, and bytes that are not
 * UTF-8 become U+FFFD. Each case is one class of input, written as a user would. */
#include "lg_io.h"
#include "lg_sched.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DATA "tests/data/sched/"

/* A small job with one adapter per entry of names[], alphas[] and lrs[]. */
static lg_job_t *job_of(const char *const *names, const double *alpha, const double *lr, int n)
{
    struct lg_job_params p = lg_job_params_default();
    p.stages = 2;
    lg_job_t *job;
    CHECK(lg_job_init(&p, &job));
    uint32_t len[12];
    for (int a = 0; a < n; a++) {
        for (int i = 0; i < 12; i++)
            len[i] = 100 + 37 * (uint32_t)((i * 5 + a) % 11);
        lg_dataset_t *ds;
        CHECK(lg_dataset_from_lengths(len, 12, &ds));
        struct lg_adapter_params ap = {.name = names[a], .global_batch = 4, .rank = 8, .alpha = alpha[a], .lr = lr[a]};
        CHECK(lg_job_add_adapter(job, &ap, ds, NULL));
    }
    return job;
}

/* Plans and simulates the job, then writes the JSON, which must fail naming every fragment and leave neither
 * the file nor its temporary behind. */
static void expect_json_refused(const lg_job_t *job, const char *const *frags)
{
    lg_plan_t *plan;
    lg_sim_t *sim;
    struct lg_plan_params pp = lg_plan_params_default();
    CHECK(lg_plan_build(job, &pp, &plan));
    CHECK(lg_sim_run(job, plan, NULL, &sim));
    char *dir = lg_test_tmpdir("lg_json"), *path = lg_test_path(dir, "plan.json"), *tmp = lg_test_path(dir, "plan.json.tmp");
    enum lg_status s = lg_plan_write_json(job, plan, sim, path);
    const char *msg = lg_last_error();
    ck_assert_msg(s == LG_ERR_INVALID, "status %s: %s", lg_status_str(s), msg);
    for (; *frags; frags++)
        ck_assert_msg(strstr(msg, *frags), "message lacks '%s':\n%s", *frags, msg);
    ck_assert_msg(access(path, F_OK) != 0 && access(tmp, F_OK) != 0, "a plan was left at %s", path);
    lg_test_rm_rf(dir);
    free(dir);
    free(path);
    free(tmp);
    lg_sim_free(sim);
    lg_plan_free(plan);
}

START_TEST(json_refuses_non_finite_numbers)
{
    lg_job_t *job = job_of((const char *[]){"a", "b"}, (const double[]){32, INFINITY}, (const double[]){1e-4, 1e-4}, 2);
    expect_json_refused(job, (const char *[]){"adapters[1] ('b').alpha", "is inf", NULL});
    lg_job_free(job);
    job = job_of((const char *[]){"a", "b"}, (const double[]){32, 16}, (const double[]){NAN, 1e-4}, 2);
    expect_json_refused(job, (const char *[]){"adapters[0] ('a').lr", "is NaN", NULL});
    lg_job_free(job);
    /* a cost-model coefficient the job accepts (>= 0) but JSON cannot hold */
    struct lg_job_params p = lg_job_params_default();
    p.cost.layer_us = INFINITY;
    CHECK(lg_job_init(&p, &job));
    uint32_t len[4] = {10, 20, 30, 40};
    lg_dataset_t *ds;
    CHECK(lg_dataset_from_lengths(len, 4, &ds));
    struct lg_adapter_params ap = {.name = "c", .global_batch = 2, .rank = 8, .alpha = 16, .lr = 1e-4};
    CHECK(lg_job_add_adapter(job, &ap, ds, NULL));
    expect_json_refused(job, (const char *[]){"cost_model.layer_us", "is inf", NULL});
    lg_job_free(job);
}
END_TEST

START_TEST(json_refuses_names_that_are_not_utf8)
{
    lg_job_t *job = job_of((const char *[]){"ok", "bad\xff\xfe"}, (const double[]){32, 32}, (const double[]){1e-4, 1e-4}, 2);
    expect_json_refused(job, (const char *[]){"adapters[1] ('bad\\xff\\xfe').name", "not valid UTF-8", NULL});
    CHECK(lg_job_set_name(job, "job\xc3"));
    expect_json_refused(job, (const char *[]){"job 'job\\xc3' is not valid UTF-8", NULL});
    lg_job_free(job);
}
END_TEST

/* The whole path a user takes: a job file with alpha = 1/0, `loragen plan --json`: exit 1, the field named on
 * stderr, no plan written. The job schema now refuses the value at load with its file and line; before it
 * did, the writer refused it; either way the plan must not come out with the adapter dropped. */
START_TEST(cli_json_fails_loudly)
{
    char *dir = lg_test_tmpdir("lg_json_cli"), *path = lg_test_path(dir, "plan.json"), *out, *err;
    int rc = lg_test_loragen_run(dir, (const char *[]){"plan", DATA "alpha_inf.lua", "--json", path, "--quiet",
                                                        "--no-baselines", NULL},
                                 &out, &err);
    ck_assert_msg(rc == 1, "exit %d\n%s", rc, err);
    ck_assert_msg(strstr(err, "alpha") && strstr(err, "inf"), "stderr:\n%s", err);
    ck_assert_int_ne(access(path, F_OK), 0);
    free(out);
    free(err);
    lg_test_rm_rf(dir);
    free(dir);
    free(path);
}
END_TEST

START_TEST(svg_escapes_names)
{
    lg_job_t *job = job_of((const char *[]){"a<b>&'\"", "<script>x</script>", "z\xff"}, (const double[]){8, 8, 8},
                           (const double[]){1e-4, 1e-4, 1e-4}, 3);
    CHECK(lg_job_set_name(job, "<g onload='alert(1)'>"));
    lg_plan_t *plan;
    lg_sim_t *sim;
    struct lg_plan_params pp = lg_plan_params_default();
    CHECK(lg_plan_build(job, &pp, &plan));
    struct lg_sim_params sp = {.record_events = 1};
    CHECK(lg_sim_run(job, plan, &sp, &sim));
    char *dir = lg_test_tmpdir("lg_svg"), *path = lg_test_path(dir, "t.svg");
    CHECK(lg_sim_write_svg(job, plan, sim, path));
    char *svg = lg_test_slurp(path, NULL);
    ck_assert_msg(!strstr(svg, "<script") && !strstr(svg, "<b>") && !strstr(svg, "<g onload"), "markup got through");
    ck_assert_ptr_nonnull(strstr(svg, "a&lt;b&gt;&amp;&apos;&quot;"));
    ck_assert_ptr_nonnull(strstr(svg, "&lt;script&gt;x&lt;/script&gt;"));
    ck_assert_ptr_nonnull(strstr(svg, "&lt;g onload=&apos;alert(1)&apos;&gt;: packed plan"));
    ck_assert_ptr_nonnull(strstr(svg, "z&#xfffd;"));
    ck_assert_ptr_null(strchr(svg, '\xff'));
    /* every '<' left opens a tag this writer emits */
    for (const char *q = strchr(svg, '<'); q; q = strchr(q + 1, '<'))
        ck_assert_msg(!strncmp(q, "<svg", 4) || !strncmp(q, "</svg", 5) || !strncmp(q, "<rect", 5) ||
                          !strncmp(q, "</rect", 6) || !strncmp(q, "<text", 5) || !strncmp(q, "</text", 6) ||
                          !strncmp(q, "<line", 5) || !strncmp(q, "<title", 6) || !strncmp(q, "</title", 7),
                      "unexpected markup: %.40s", q);
    free(svg);
    lg_test_rm_rf(dir);
    free(dir);
    free(path);
    lg_sim_free(sim);
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched_output");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, json_refuses_non_finite_numbers);
    tcase_add_test(tc, json_refuses_names_that_are_not_utf8);
    tcase_add_test(tc, cli_json_fails_loudly);
    tcase_add_test(tc, svg_escapes_names);
    suite_add_tcase(s, tc);
    int failed = lg_test_run(s, 0);
    return failed ? 1 : 0;
}
