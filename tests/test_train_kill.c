/* test_train_kill.c: crash safety of the trainer's checkpoints. `loragen train` on the tiny model (CPU, a
 * checkpoint every EVERY steps) is killed with SIGKILL at random moments, many of them inside a save, and
 * continued with --resume (or started afresh when no checkpoint was committed yet), until a run finishes.
 * After every kill: `latest` names a checkpoint that verifies (or there is none), never a damaged one, and it
 * is at most one interval behind the last step the killed run printed. At the end the adapter and the loss
 * history are bit for bit those of an uninterrupted run: nothing was resumed from garbage, and nothing a crash
 * left behind (temporary directories, pointer files) stays in the checkpoint directory.
 *
 * LORAGEN_KILL_RUNS sets the number of kills (default 12); LORAGEN_TEST_SEED the random moments. The summary
 * line (kills, how many fell inside a save, the most steps lost) is what docs/robustness.md reports. */
#include "lg_ckpt.h"
#include "lg_hf.h"
#include "lg_test.h"

#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EVERY 2  /* checkpoint_every */
#define STEPS 24 /* optimizer steps of the run */

static char *tmp;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The job, writing under tmp/<out>; dropout on, so resuming must also replay the masks. */
static char *write_job(const char *out)
{
    char cwd[1024], name[64], text[2048];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    snprintf(name, sizeof name, "job-%s.lua", out);
    char *job = lg_test_path(tmp, name);
    snprintf(text, sizeof text,
             "return { name = 'kill', model = { path = 'model' }, batching = { capacity = 512, seed = 5 },\n"
             "  training = { backend = 'cpu', output = '%s', log_every = 1, checkpoint_every = %d },\n"
             "  adapters = { { name = 'toy', dataset = '%s/specs/jobs/data/toy-train.jsonl', global_batch = 4,\n"
             "    rank = 8, dropout = 0.1, lr = 2e-3, steps = %d, seed = 11 } } }\n",
             out, EVERY, cwd, STEPS);
    lg_test_write_text(job, text);
    return job;
}

/* The last "step N/" a run printed (0 when none). */
static long last_step_printed(void)
{
    char *fo = lg_test_path(tmp, "stdout.txt");
    char *text = lg_test_slurp(fo, NULL);
    long last = 0;
    for (const char *p = text; (p = strstr(p, " step ")); p += 6) {
        char *end;
        long v = strtol(p + 6, &end, 10);
        if (end > p + 6 && *end == '/')
            last = v;
    }
    free(text);
    free(fo);
    return last;
}

/* The step adapter 0 had reached in the checkpoint `latest` names, after verifying it; -1 when there is no
 * committed checkpoint. A checkpoint that does not verify fails the test. */
static long checkpoint_step(const char *root)
{
    char dir[1200], path[1300];
    if (lg_ckpt_latest(root, dir, sizeof dir) != LG_OK) {
        ck_assert_msg(strstr(lg_last_error(), "no checkpoint to resume from") != NULL,
                      "latest names a checkpoint that does not verify: %s", lg_last_error());
        return -1;
    }
    snprintf(path, sizeof path, "%s/state.safetensors", dir);
    lg_st_t *st;
    CHECK(lg_st_open(path, &st));
    struct lg_st_tensor t;
    CHECK(lg_st_find(st, "a0.state", &t));
    ck_assert_int_eq(t.dtype, LG_ST_F64);
    double v[6];
    memcpy(v, t.data, sizeof v);
    lg_st_close(st);
    return (long)v[0];
}

/* What a kill left in the checkpoint root: a temporary checkpoint directory (killed before the rename), or a
 * committed directory newer than `latest` names (killed between the rename and the pointer's update). */
static void save_leftovers(const char *root, int *tmpdir, int *unpointed)
{
    *tmpdir = *unpointed = 0;
    DIR *d = opendir(root);
    if (!d)
        return;
    int newest = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        int n;
        if (!strncmp(e->d_name, ".tmp-ckpt-", 10))
            *tmpdir = 1;
        else if (sscanf(e->d_name, "ckpt-%d", &n) == 1 && n > newest)
            newest = n;
    }
    closedir(d);
    char path[1100];
    snprintf(path, sizeof path, "%s/latest", root);
    char *text = access(path, R_OK) == 0 ? lg_test_slurp(path, NULL) : NULL;
    int named = -1;
    if (text)
        sscanf(text, "ckpt-%d", &named);
    *unpointed = newest >= 0 && newest != named;
    free(text);
}

/* Nothing but committed checkpoints and `latest` in the root once a run has finished. */
static void assert_clean(const char *root)
{
    DIR *d = opendir(root);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        int n, len = 0;
        int ok = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, "latest") ||
                 (sscanf(e->d_name, "ckpt-%d%n", &n, &len) == 1 && e->d_name[len] == '\0');
        ck_assert_msg(ok, "%s: a crash left '%s' behind", root, e->d_name);
    }
    closedir(d);
}

static void assert_same_adapter(const char *a, const char *b)
{
    lg_st_t *x, *y;
    CHECK(lg_st_open(a, &x));
    CHECK(lg_st_open(b, &y));
    ck_assert_uint_eq(lg_st_count(x), lg_st_count(y));
    for (size_t i = 0; i < lg_st_count(x); i++) {
        struct lg_st_tensor tx, ty;
        CHECK(lg_st_tensor(x, i, &tx));
        CHECK(lg_st_find(y, tx.name, &ty));
        ck_assert_uint_eq(tx.nbytes, ty.nbytes);
        ck_assert_msg(!memcmp(tx.data, ty.data, tx.nbytes), "%s differs from the uninterrupted run's", tx.name);
    }
    lg_st_close(x);
    lg_st_close(y);
}

static int wait_exit(pid_t pid, int *code)
{
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return WIFEXITED(status);
}

START_TEST(sigkill_at_random_points_loses_at_most_one_interval)
{
    char *model = lg_test_path(tmp, "model"), *out, *err;
    int rc = lg_test_loragen_run(tmp, (const char *[]){"init-model", "specs/tiny.lua", model, "--dtype", "fp32", NULL},
                                 &out, &err);
    ck_assert_msg(rc == 0, "init-model: %s", err);
    free(out);
    free(err);

    char *ref_job = write_job("ref"), *job = write_job("kill");
    double t0 = now_s();
    rc = lg_test_loragen_run(tmp, (const char *[]){"train", ref_job, NULL}, &out, &err);
    double t_ref = now_s() - t0;
    ck_assert_msg(rc == 0, "reference run: %d: %s", rc, err);
    free(out);
    free(err);

    const char *e = getenv("LORAGEN_KILL_RUNS");
    int kills = e && atoi(e) > 0 ? atoi(e) : 12;
    uint64_t seed = lg_test_seed();
    srand48((long)seed);
    char *root = lg_test_path(tmp, "kill/checkpoints");
    int killed = 0, in_tmpdir = 0, in_unpointed = 0, fresh = 0, resumed = 0, rounds = 0;
    long most_lost = 0;
    /* Rounds of (kill, resume)* until a run finishes, each checked against the reference, until `kills` kills
     * have been made (a round ends early when a run outlives its moment). */
    for (; killed < kills || rounds == 0; rounds++) {
    int done = 0;
    char *stale = lg_test_path(tmp, "kill");
    lg_test_rm_rf(stale);
    free(stale);
    while (!done) {
        int resume = checkpoint_step(root) >= 0;
        pid_t pid = lg_test_spawn(tmp, resume ? (const char *[]){"train", job, "--resume", NULL}
                                              : (const char *[]){"train", job, NULL});
        resume ? resumed++ : fresh++;
        int exited = 0, code = 0;
        if (killed < kills) {
            /* Every other kill at a moment anywhere in a third of a whole run (in training, a save or start-up);
             * the others aimed at a save: 0-40 ms after the run printed a step that is due a checkpoint. */
            int aimed = killed % 2, status;
            long from = resume ? checkpoint_step(root) : 0;
            double until = aimed ? now_s() + t_ref : now_s() + drand48() * t_ref / 3;
            while (now_s() < until && !exited) {
                exited = waitpid(pid, &status, WNOHANG) == pid;
                long p = aimed && !exited ? last_step_printed() : 0;
                if (p > from && p % EVERY == 0) {
                    usleep((useconds_t)(drand48() * 40000));
                    break;
                }
                if (!exited)
                    usleep(aimed ? 500 : 2000);
            }
            if (!exited)
                exited = waitpid(pid, &status, WNOHANG) == pid;
            if (exited)
                code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            else {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                killed++;
                long printed = last_step_printed(), at = checkpoint_step(root);
                int a, b;
                save_leftovers(root, &a, &b);
                in_tmpdir += a;
                in_unpointed += b;
                long lost = printed - (at < 0 ? 0 : at);
                ck_assert_msg(lost <= EVERY, "kill %d: the run had printed step %ld, but the latest checkpoint is "
                              "at step %ld: more than one interval (%d) lost", killed, printed, at, EVERY);
                if (lost > most_lost)
                    most_lost = lost;
                continue;
            }
        } else {
            ck_assert(wait_exit(pid, &code));
            exited = 1;
        }
        char *so = lg_test_path(tmp, "stderr.txt"), *text = lg_test_slurp(so, NULL);
        ck_assert_msg(code == 0, "run after %d kills exited %d:\n%s", killed, code, text);
        free(text);
        free(so);
        done = 1;
    }

    char *a = lg_test_path(tmp, "kill/toy/adapter_model.safetensors"), *b = lg_test_path(tmp, "ref/toy/adapter_model.safetensors");
    assert_same_adapter(a, b);
    char *ma = lg_test_path(tmp, "kill/toy/metrics.jsonl"), *mb = lg_test_path(tmp, "ref/toy/metrics.jsonl");
    char *ta = lg_test_slurp(ma, NULL), *tb = lg_test_slurp(mb, NULL);
    ck_assert_msg(!strcmp(ta, tb), "the loss history differs from the uninterrupted run's:\n%s\n---\n%s", ta, tb);
    assert_clean(root);
    char *od = lg_test_path(tmp, "kill/toy");
    DIR *d = opendir(od);
    for (struct dirent *de; d && (de = readdir(d));)
        ck_assert_msg(!strstr(de->d_name, ".tmp-"), "%s: a crash left %s behind", od, de->d_name);
    if (d)
        closedir(d);
    free(od);
    free(ta);
    free(tb);
    free(ma);
    free(mb);
    free(a);
    free(b);
    }
    printf("kill test: %d kills in %d rounds (%d inside a save before its rename, %d between the rename and "
           "`latest`), %d fresh starts, %d resumes, at most %ld steps lost (interval %d), seed %llu\n",
           killed, rounds, in_tmpdir, in_unpointed, fresh, resumed, most_lost, EVERY, (unsigned long long)seed);
    fflush(stdout);
    free(root);
    free(job);
    free(ref_job);
    free(model);
}
END_TEST

int main(void)
{
    static char dir[] = "/tmp/lg_train_kill.XXXXXX";
    if (!(tmp = mkdtemp(dir)))
        return 1;
    Suite *s = suite_create("train_kill");
    TCase *tc = tcase_create("train_kill");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, sigkill_at_random_points_loses_at_most_one_interval);
    suite_add_tcase(s, tc);
    int rc = lg_test_run(s, 0);
    lg_test_rm_rf(tmp);
    return rc;
}
