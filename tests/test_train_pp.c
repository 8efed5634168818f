/* test_train_pp.c: pipeline-parallel training over processes on the CPU backend (`loragen train JOB --procs S`
 * with pipeline.stages = S), against one process running the same plan. Two adapters (one with dropout, both
 * with the default gradient clip) on a tiny 3-layer model: S = 2 (layers 0-1 and 2) and S = 3 (one layer a
 * stage, so a middle stage both receives and sends in each direction), and S = 2 with data_parallel = 2
 * (four processes: two pipelines, each stage's gradients summed over its data-parallel pair). The losses,
 * gradient norms (summed over the stages before the clip) and the adapters rank 0 gathers from all stages
 * match the single process within float tolerance, and so does the final validation loss (run through the
 * pipeline), and rank 0 reports each epoch's per-stage busy time and measured bubble beside
 * the simulator's prediction. Also: activation checkpointing inside a stage (not built yet) and more stages
 * than layers are refused with the field named. */
#include "lg_hf.h"
#include "lg_test.h"
#include "lg_train_test.h"
#include "lg_train.h"

#include <check.h>
#include <math.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *root;

static char *path_in(const char *rel) { return lg_test_path(root, rel); }

static void write_job(const char *rel, const char *out, int stages, int dp, int ckpt)
{
    char training[64];
    snprintf(training, sizeof training, "checkpoint_layers = %d, ", ckpt);
    tt_write_two_task_job(root, rel, &(struct tt_two_task_job){.name = "pp", .out = out, .training = training,
                                                                  .stages = stages, .dp = dp, .epochs = 2,
                                                                  .validate = 1});
}

static void setup_once(void)
{
    if (root)
        return;
    root = lg_test_tmpdir("lg_train_pp");
    tt_write_two_task_fixture(root, 3);
    ck_assert_int_eq(chdir(root), 0); /* the job's relative paths */
}

static int run_cli(const char *const *args, char **out, char **err) { return lg_test_loragen_run(root, args, out, err); }

/* The last val_loss of a metrics.jsonl (NaN when none). */
static double val_loss(const char *rel)
{
    char *p = path_in(rel), *t = lg_test_slurp(p, NULL), *at = t, *last = NULL;
    while ((at = strstr(at, "\"val_loss\": ")))
        last = at++;
    double v = last ? strtod(last + 12, NULL) : NAN;
    free(t);
    free(p);
    return v;
}

static void pp_matches(int S, int D)
{
    setup_once();
    char one[32], many[32], rone[40], rmany[40], procs[8];
    snprintf(one, sizeof one, "one%d_%d", S, D);
    snprintf(many, sizeof many, "pp%d_%d", S, D);
    snprintf(rone, sizeof rone, "%s.lua", one);
    snprintf(rmany, sizeof rmany, "%s.lua", many);
    snprintf(procs, sizeof procs, "%d", S * D);
    write_job(rone, one, S, D, 0);
    write_job(rmany, many, S, D, 0);
    char *job = path_in(rone);
    struct lg_train_opts o = {.job = job};
    struct lg_train_result r;
    CHECK(lg_train_run(&o, &r)); /* one process: the whole plan, every layer */
    free(job);
    char *out, *err;
    int rc = run_cli((const char *[]){"train", rmany, "--procs", procs, NULL}, &out, &err);
    ck_assert_msg(rc == 0, "train --procs %d: %d\n%s\n%s", S, rc, out, err);
    ck_assert_msg(strstr(out, "pipeline stage 0 of "), "%s", out);
    /* per epoch: every stage's busy time and the measured bubble beside the simulator's */
    ck_assert_int_eq(lg_test_count_substr(out, "measured bubble "), 2);
    ck_assert_msg(strstr(out, "(simulator: ") && strstr(out, "stage 1 busy "), "%s", out);
    ck_assert_int_eq(lg_test_count_substr(out, "done: "), 1);
    int la, lb;
    char ma[64], mb[64], aa[80], ab[80];
    snprintf(ma, sizeof ma, "%s/a/metrics.jsonl", one);
    snprintf(mb, sizeof mb, "%s/a/metrics.jsonl", many);
    tt_compare_metrics(root, ma, mb, &la);
    snprintf(ma, sizeof ma, "%s/b/metrics.jsonl", one);
    snprintf(mb, sizeof mb, "%s/b/metrics.jsonl", many);
    tt_compare_metrics(root, ma, mb, &lb);
    ck_assert_int_eq(la, 20);
    ck_assert_int_eq(lb, 12);
    /* the final validation, run through the pipeline once training has drained */
    snprintf(ma, sizeof ma, "%s/a/metrics.jsonl", one);
    snprintf(mb, sizeof mb, "%s/a/metrics.jsonl", many);
    double va = val_loss(ma), vb = val_loss(mb);
    ck_assert_msg(isfinite(va) && fabs(va - vb) <= 1e-5 * fabs(va), "validation loss %.9g vs %.9g", va, vb);
    for (int k = 0; k < 2; k++) {
        snprintf(aa, sizeof aa, "%s/%c/adapter_model.safetensors", one, "ab"[k]);
        snprintf(ab, sizeof ab, "%s/%c/adapter_model.safetensors", many, "ab"[k]);
        double d = tt_adapter_diff(root, aa, ab);
        ck_assert_msg(d < 1e-4, "S = %d: adapter %c differs by %.3g", S, "ab"[k], d);
    }
    free(out);
    free(err);
}

START_TEST(pp2_matches_one_process) { pp_matches(2, 1); }
END_TEST

START_TEST(pp3_matches_one_process) { pp_matches(3, 1); }
END_TEST

/* 4 processes: two pipelines of two stages, each stage's gradients summed over its pair */
START_TEST(pp2_dp2_matches_one_process) { pp_matches(2, 2); }
END_TEST

static void refused(int stages, int dp, int ckpt, const char *needle)
{
    write_job("bad.lua", "bad", stages, dp, ckpt);
    char procs[8], *out, *err;
    snprintf(procs, sizeof procs, "%d", stages * dp);
    int rc = run_cli((const char *[]){"train", "bad.lua", "--procs", procs, NULL}, &out, &err);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(err, needle), "%s", err);
    free(out);
    free(err);
}

START_TEST(shapes_not_built_are_refused)
{
    setup_once();
    refused(2, 1, 1, "training.checkpoint_layers = 1: activation checkpointing inside a pipeline stage");
    refused(4, 1, 0, "pipeline.stages = 4, but the model has 3 layers");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train_pp");
    TCase *tc = tcase_create("cpu");
    tcase_add_test(tc, pp2_matches_one_process);
    tcase_add_test(tc, pp3_matches_one_process);
    tcase_add_test(tc, pp2_dp2_matches_one_process);
    tcase_add_test(tc, shapes_not_built_are_refused);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
