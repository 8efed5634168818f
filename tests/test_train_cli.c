/* test_train_cli.c: the training verbs as a user runs them: `init-model`, `train` (the README's job, SIGTERM
 * mid-run writing a checkpoint and exiting 130, `--resume` continuing it), `eval`, `merge`, and the exit status
 * and message of each bad invocation (2 for usage, 1 for a failure, the file or field named). */
#include "lg_test.h"

#include <check.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *tmp;

static pid_t start(const char *const *args) { return lg_test_spawn(tmp, args); }
static int finish(pid_t pid, char **out, char **err) { return lg_test_wait(tmp, pid, out, err); }
static int run(const char *const *args, char **out, char **err) { return lg_test_loragen_run(tmp, args, out, err); }

static char *in_tmp(const char *rel) { return lg_test_path(tmp, rel); }

/* A job on the tiny model and the shipped toy data, writing under tmp. */
static char *write_job(int steps, const char *outdir)
{
    char cwd[1024];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    char name[64];
    snprintf(name, sizeof name, "job-%s.lua", outdir);
    char *job = in_tmp(name);
    FILE *f = fopen(job, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "return { name = 'cli', model = { path = 'model' }, batching = { capacity = 512 },\n"
               "  training = { backend = 'cpu', output = '%s', log_every = 1 },\n"
               "  adapters = { { name = 'toy', dataset = '%s/specs/jobs/data/toy-train.jsonl',\n"
               "    validation = '%s/specs/jobs/data/toy-val.jsonl', global_batch = 4, rank = 8, steps = %d } } }\n",
            outdir, cwd, cwd, steps);
    fclose(f);
    return job;
}

static void setup_once(void)
{
    if (tmp)
        return;
    tmp = lg_test_tmpdir("lg_train_cli");
    char *model = in_tmp("model"), *out, *err;
    int rc = run((const char *[]){"init-model", "specs/tiny.lua", model, "--dtype", "fp32", NULL}, &out, &err);
    ck_assert_msg(rc == 0, "init-model: %d: %s", rc, err);
    ck_assert_ptr_nonnull(strstr(out, "2 layers, hidden 128, vocab 512, fp32"));
    free(out);
    free(err);
    free(model);
}

START_TEST(sigterm_checkpoints_and_resume_continues)
{
    setup_once();
    char *job = write_job(200, "out"), *out, *err;
    pid_t pid = start((const char *[]){"train", job, NULL});
    char *fo = in_tmp("stdout.txt");
    for (;;) { /* wait for the second step's line (no time limit: the run itself ends if this ever misses) */
        size_t n;
        char *text = lg_test_slurp(fo, &n);
        int seen = strstr(text, "step 2/") != NULL;
        free(text);
        if (seen || waitpid(pid, NULL, WNOHANG) == pid)
            break;
        usleep(20000);
    }
    free(fo);
    kill(pid, SIGTERM);
    int rc = finish(pid, &out, &err);
    ck_assert_msg(rc == 130, "exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    ck_assert_ptr_nonnull(strstr(out, "interrupted: checkpoint written; continue with loragen train"));
    free(out);
    free(err);
    rc = run((const char *[]){"train", job, "--resume", "--max-steps", "4", NULL}, &out, &err);
    ck_assert_msg(rc == 0, "resume: %d: %s", rc, err);
    ck_assert_ptr_nonnull(strstr(out, "resumed from"));
    ck_assert_ptr_nonnull(strstr(out, "adapter written to"));
    free(out);
    free(err);
    rc = run((const char *[]){"eval", job, NULL}, &out, &err);
    ck_assert_msg(rc == 0, "eval: %d: %s", rc, err);
    ck_assert_ptr_nonnull(strstr(out, "adapter 0: loss "));
    free(out);
    free(err);
    char *model = in_tmp("model"), *ad = in_tmp("out/toy"), *merged = in_tmp("merged");
    rc = run((const char *[]){"merge", model, ad, merged, NULL}, &out, &err);
    ck_assert_msg(rc == 0, "merge: %d: %s", rc, err);
    char cfg[1300];
    snprintf(cfg, sizeof cfg, "%s/config.json", merged);
    ck_assert_int_eq(access(cfg, R_OK), 0);
    free(out);
    free(err);
    free(model);
    free(ad);
    free(merged);
    free(job);
}
END_TEST

static void expect(const char *const *args, int code, const char *frag)
{
    char *out, *err;
    int rc = run(args, &out, &err);
    ck_assert_msg(rc == code, "%s %s: exit %d, wanted %d\n%s", args[0], args[1] ? args[1] : "", rc, code, err);
    ck_assert_msg(strstr(err, frag), "stderr lacks '%s':\n%s", frag, err);
    free(out);
    free(err);
}

START_TEST(bad_invocations)
{
    setup_once();
    expect((const char *[]){"train", NULL}, 2, "usage: loragen train JOB");
    expect((const char *[]){"train", "a.lua", "b.lua", NULL}, 2, "unexpected argument 'b.lua'");
    expect((const char *[]){"train", "a.lua", "--max-steps", "zero", NULL}, 2, "--max-steps needs a positive");
    expect((const char *[]){"train", "specs/jobs/nope.lua", NULL}, 1, "specs/jobs/nope.lua: cannot open");
    expect((const char *[]){"train", "specs/jobs/four-summarisers.lua", NULL}, 1, "model.path");
    expect((const char *[]){"init-model", "specs/tiny.lua", NULL}, 2, "usage: loragen init-model");
    expect((const char *[]){"init-model", "specs/tiny.lua", "/tmp/x", "--dtype", "int8", NULL}, 2, "--dtype int8");
    expect((const char *[]){"init-model", "tests/data/specs/rank_zero.lua", "/tmp/x", NULL}, 1, "rank_zero.lua:");
    expect((const char *[]){"merge", "a", NULL}, 2, "expected MODEL_DIR ADAPTER_DIR OUT_DIR");
    char *model = in_tmp("model");
    expect((const char *[]){"merge", model, "/nonexistent/adapter", "/tmp/x", NULL}, 1, "/nonexistent/adapter");
    free(model);
    char *job = write_job(4, "out_bad");
    expect((const char *[]){"train", job, "--resume", NULL}, 1, "no checkpoint to resume from");
    expect((const char *[]){"train", job, "--backend", "tpu", NULL}, 1, "backend \"tpu\"");
    free(job);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train_cli");
    TCase *tc = tcase_create("train_cli");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, sigterm_checkpoints_and_resume_continues);
    tcase_add_test(tc, bad_invocations);
    suite_add_tcase(s, tc);
    int rc = lg_test_run(s, 1);
    if (tmp) {
        lg_test_rm_rf(tmp);
        free(tmp);
    }
    return rc;
}
