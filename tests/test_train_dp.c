/* test_train_dp.c: data-parallel training over processes on the CPU backend, as a user starts it
 * (`loragen train JOB --procs 2 --backend cpu`). Two adapters (one with dropout) on a tiny model, a job with
 * pipeline.data_parallel = 2:
 *   - the two ranks give the losses, gradient norms and adapters of one process running the same plan (all of
 *     it, in its order), within float tolerance: only the order of the gradient sums differs (each rank sums
 *     its own microbatches, then the all-reduce adds the two sums);
 *   - only rank 0 reports;
 *   - a rank killed mid-run stops the run: the launcher names the rank, the other rank fails at once (its
 *     peer's socket closed) instead of hanging, no rank process is left, and the status is non-zero;
 *   - SIGTERM to the launcher stops every rank after the same step, with a checkpoint (exit 130, nothing failed;
 *     test_train_resume_mp resumes such runs);
 *   - a process count that is not data_parallel x stages is refused by every rank, naming both. */
#include "lg_hf.h"
#include "lg_test.h"
#include "lg_train_test.h"
#include "lg_train.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *root;

static char *path_in(const char *rel) { return lg_test_path(root, rel); }

static void write_job(const char *rel, const char *out, int epochs)
{
    tt_write_two_task_job(root, rel, &(struct tt_two_task_job){.name = "dp", .out = out, .stages = 1, .dp = 2,
                                                                  .epochs = epochs});
}

static void setup_once(void)
{
    if (root)
        return;
    root = lg_test_tmpdir("lg_train_dp");
    tt_write_two_task_fixture(root, 2);
    ck_assert_int_eq(chdir(root), 0); /* the job's relative paths */
}

static int run_cli(const char *const *args, char **out, char **err) { return lg_test_loragen_run(root, args, out, err); }

START_TEST(dp2_matches_one_process)
{
    setup_once();
    write_job("one.lua", "one", 2);
    write_job("two.lua", "two", 2);
    char *job = path_in("one.lua");
    struct lg_train_opts o = {.job = job};
    struct lg_train_result r;
    CHECK(lg_train_run(&o, &r));
    free(job);
    char *out, *err;
    int rc = run_cli((const char *[]){"train", "two.lua", "--procs", "2", "--backend", "cpu", NULL}, &out, &err);
    ck_assert_msg(rc == 0, "train --procs 2: %d\n%s\n%s", rc, out, err);
    ck_assert_msg(strstr(out, "rank 0 of 2 (data-parallel rank 0 of 2, stage 0 of 1): tcp"), "%s", out);
    ck_assert_int_eq(lg_test_count_substr(out, "done: "), 1); /* rank 1 is silent */
    ck_assert_int_eq(lg_test_count_substr(out, "a step 20/20"), 1);
    int la, lb;
    tt_compare_metrics(root, "one/a/metrics.jsonl", "two/a/metrics.jsonl", &la);
    tt_compare_metrics(root, "one/b/metrics.jsonl", "two/b/metrics.jsonl", &lb);
    ck_assert_int_eq(la, 20); /* 40 samples / 4 per batch, 2 epochs */
    ck_assert_int_eq(lb, 12);
    double da = tt_adapter_diff(root, "one/a/adapter_model.safetensors", "two/a/adapter_model.safetensors");
    double db = tt_adapter_diff(root, "one/b/adapter_model.safetensors", "two/b/adapter_model.safetensors");
    ck_assert_msg(da < 1e-4 && db < 1e-4, "adapters differ: a %.3g, b %.3g", da, db);
    /* and the training moved them: the comparison is not between two untrained adapters */
    ck_assert_msg(strstr(out, "loss ") != NULL, "%s", out);
    free(out);
    free(err);
}
END_TEST

/* The launcher's children (the ranks), from /proc. */
static int children(pid_t parent, pid_t *out, int max)
{
    char p[128];
    snprintf(p, sizeof p, "/proc/%d/task/%d/children", (int)parent, (int)parent);
    FILE *f = fopen(p, "r");
    int n = 0;
    if (!f)
        return 0;
    int x;
    while (n < max && fscanf(f, "%d", &x) == 1)
        out[n++] = x;
    fclose(f);
    return n;
}

static int rank_of(pid_t pid)
{
    char p[128], buf[65536];
    snprintf(p, sizeof p, "/proc/%d/environ", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i += strlen(buf + i) + 1)
        if (!strncmp(buf + i, "RANK=", 5))
            return atoi(buf + i + 5);
    return -1;
}

/* Until rank 0 reports its second step (no time limit: the run is long but ends on its own); the launcher
 * must still be running. */
static void wait_for_step_2(pid_t launcher)
{
    char *fo = path_in("stdout.txt");
    for (;;) {
        size_t n;
        char *text = access(fo, R_OK) == 0 ? lg_test_slurp(fo, &n) : NULL;
        int seen = text && strstr(text, "step 2/") != NULL;
        free(text);
        if (seen)
            break;
        ck_assert_msg(waitpid(launcher, NULL, WNOHANG) == 0, "the launcher ended before its second step");
        usleep(20000);
    }
    free(fo);
}

START_TEST(killed_rank_stops_the_run)
{
    setup_once();
    write_job("long.lua", "long", 200);
    pid_t launcher = lg_test_spawn(root, (const char *[]){"train", "long.lua", "--procs", "2", NULL});
    wait_for_step_2(launcher);
    pid_t kids[4], victim = 0, other = 0;
    int nk = children(launcher, kids, 4);
    ck_assert_int_eq(nk, 2);
    for (int i = 0; i < nk; i++) {
        if (rank_of(kids[i]) == 1)
            victim = kids[i];
        else
            other = kids[i];
    }
    ck_assert_int_gt(victim, 0);
    ck_assert_int_eq(kill(victim, SIGKILL), 0);
    char *out, *err;
    int rc = lg_test_wait(root, launcher, &out, &err);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(err, "rank 1 of 2 was killed by signal 9"), "%s", err);
    /* rank 0 stops either through the launcher's SIGTERM (at its next microbatch) or, if its next all-reduce
     * comes first, failing on the closed connection */
    ck_assert_msg((strstr(err, "rank 0 of 2: ") && strstr(err, "rank 1 closed its connection")) ||
                      strstr(out, "interrupted: checkpoint written; continue with the same command and --resume"),
                  "%s\n%s", out, err);
    /* no rank is left: the launcher reaped both */
    ck_assert_int_eq(kill(victim, 0), -1);
    ck_assert_int_eq(kill(other, 0), -1);
    free(out);
    free(err);
}
END_TEST

/* SIGTERM to the launcher reaches every rank once; the stop travels with the next step's all-reduce, so both
 * ranks stop after the same step, write their shards of one checkpoint and exit 130 together, and nothing is
 * reported as failed. */
START_TEST(sigterm_stops_every_rank_together)
{
    setup_once();
    write_job("stop.lua", "stop", 200);
    pid_t launcher = lg_test_spawn(root, (const char *[]){"train", "stop.lua", "--procs", "2", NULL});
    wait_for_step_2(launcher);
    pid_t kids[4];
    int nk = children(launcher, kids, 4);
    ck_assert_int_eq(nk, 2);
    ck_assert_int_eq(kill(launcher, SIGTERM), 0);
    char *out, *err;
    int rc = lg_test_wait(root, launcher, &out, &err);
    ck_assert_msg(rc == 130, "%d\n%s\n%s", rc, out, err);
    ck_assert_msg(strstr(out, "interrupted: checkpoint written; continue with the same command and --resume"), "%s", out);
    ck_assert_msg(!strstr(err, "failed") && !strstr(err, "closed its connection"), "%s", err);
    for (int i = 0; i < nk; i++)
        ck_assert_int_eq(kill(kids[i], 0), -1);
    free(out);
    free(err);
}
END_TEST

START_TEST(process_count_must_match_the_job)
{
    setup_once();
    write_job("three.lua", "three", 1);
    char *out, *err;
    int rc = run_cli((const char *[]){"train", "three.lua", "--procs", "3", NULL}, &out, &err);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(err, "data_parallel = 2, stages = 1 } needs 2 processes, but WORLD_SIZE is 3"), "%s", err);
    ck_assert_msg(strstr(err, "loragen train: rank "), "%s", err);
    free(out);
    free(err);
    rc = run_cli((const char *[]){"train", "three.lua", "--procs", "0", NULL}, &out, &err);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(err, "--procs needs a positive integer"), "%s", err);
    free(out);
    free(err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train_dp");
    TCase *tc = tcase_create("cpu");
    tcase_add_test(tc, dp2_matches_one_process);
    tcase_add_test(tc, killed_rank_stops_the_run);
    tcase_add_test(tc, sigterm_stops_every_rank_together);
    tcase_add_test(tc, process_count_must_match_the_job);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
