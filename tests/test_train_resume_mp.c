/* test_train_resume_mp.c: checkpoints and --resume of runs over several processes on the CPU backend
 * (`loragen train JOB --procs N`), two adapters (one with dropout, one with a final validation) on a tiny
 * 3-layer model:
 *   - data_parallel = 2 and pipeline stages = 2 with checkpoint_every = 4, stopped with SIGTERM mid-run (every
 *     rank writes its shard of a checkpoint at the agreed step; the pipeline drains first), then resumed: the
 *     adapters and metrics.jsonl are byte for byte those of an uninterrupted run of the same job without any
 *     checkpoint;
 *   - stages 2 x data_parallel 2 (four processes) with checkpoint_every, rank 1 killed with SIGKILL after a
 *     checkpoint was committed, then resumed: byte for byte the uninterrupted run again;
 *   - data_parallel = 2 with a checkpoint at every step, rank 0 or rank 1 killed during or after saves four times:
 *     after each kill `latest` verifies and holds every shard, and the resumed run is byte for byte the same;
 *   - --resume refused, naming the file and what differs, when the job's data_parallel / stages or the process
 *     count changed, when two ranks' shards are swapped (the manifest still verifies), when a shard is damaged
 *     or missing, and for a checkpoint of another format.
 * The stops are asked when a run has printed its second step, far from its end (no time limit: the runs end
 * on their own). */
#include "lg_ckpt.h"
#include "lg_hf.h"
#include "lg_test.h"
#include "lg_train.h"
#include "lg_train_test.h"

#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *root;

static char *path_in(const char *rel) { return lg_test_path(root, rel); }

/* The job: two adapters, `epochs` epochs, a checkpoint every `every` steps per adapter (0: none). */
static void write_job(const char *rel, const char *out, int stages, int dp, int epochs, int every)
{
    char training[64];
    snprintf(training, sizeof training, "checkpoint_every = %d, ", every);
    tt_write_two_task_job(root, rel, &(struct tt_two_task_job){.name = "mp", .out = out, .training = training,
                                                                  .stages = stages, .dp = dp, .epochs = epochs,
                                                                  .validate = 1});
}

static void setup_once(void)
{
    if (root)
        return;
    root = lg_test_tmpdir("lg_train_resume_mp");
    tt_write_two_task_fixture(root, 3);
    ck_assert_int_eq(chdir(root), 0); /* the job's relative paths */
}

static int run_cli(const char *const *args, char **out, char **err) { return lg_test_loragen_run(root, args, out, err); }

static void run_ok(const char *const *args)
{
    char *out, *err;
    int rc = run_cli(args, &out, &err);
    ck_assert_msg(rc == 0, "loragen %s %s: exit %d\n%s\n%s", args[0], args[1], rc, out, err);
    free(out);
    free(err);
}

/* Until the running launcher's stdout shows `needle` (the launcher must still be running). */
static void wait_for(pid_t launcher, const char *needle)
{
    char *fo = path_in("stdout.txt");
    for (;;) {
        char *text = access(fo, R_OK) == 0 ? lg_test_slurp(fo, NULL) : NULL;
        int seen = text && strstr(text, needle) != NULL;
        free(text);
        if (seen)
            break;
        ck_assert_msg(waitpid(launcher, NULL, WNOHANG) == 0, "the run ended before printing '%s'", needle);
        usleep(20000);
    }
    free(fo);
}

/* Both adapters' PEFT files and metrics.jsonl of output directories x and y: the same bytes. */
static void assert_same_outputs(const char *x, const char *y)
{
    const char *files[] = {"adapter_model.safetensors", "metrics.jsonl"};
    for (int k = 0; k < 2; k++)
        for (int f = 0; f < 2; f++) {
            char ra[256], rb[256];
            snprintf(ra, sizeof ra, "%s/%c/%s", x, "ab"[k], files[f]);
            snprintf(rb, sizeof rb, "%s/%c/%s", y, "ab"[k], files[f]);
            char *pa = path_in(ra), *pb = path_in(rb);
            size_t na, nb;
            char *ta = lg_test_slurp(pa, &na), *tb = lg_test_slurp(pb, &nb);
            ck_assert_msg(na == nb && !memcmp(ta, tb, na), "%s differs from the uninterrupted run's %s", ra, rb);
            free(ta);
            free(tb);
            free(pa);
            free(pb);
        }
}

/* The uninterrupted run (no checkpoint_every) and the one stopped with SIGTERM at its second step, resumed. */
static void stop_and_resume(int stages, int dp)
{
    setup_once();
    char ref[32], cut[32], jref[40], jcut[40], procs[8];
    snprintf(ref, sizeof ref, "ref%d_%d", stages, dp);
    snprintf(cut, sizeof cut, "cut%d_%d", stages, dp);
    snprintf(jref, sizeof jref, "%s.lua", ref);
    snprintf(jcut, sizeof jcut, "%s.lua", cut);
    snprintf(procs, sizeof procs, "%d", stages * dp);
    write_job(jref, ref, stages, dp, 6, 0);
    write_job(jcut, cut, stages, dp, 6, 4); /* periodic checkpoints too: the reference has none */
    run_ok((const char *[]){"train", jref, "--procs", procs, NULL});

    pid_t launcher = lg_test_spawn(root, (const char *[]){"train", jcut, "--procs", procs, NULL});
    wait_for(launcher, "step 2/");
    ck_assert_int_eq(kill(launcher, SIGTERM), 0);
    char *out, *err;
    int rc = lg_test_wait(root, launcher, &out, &err);
    ck_assert_msg(rc == 130, "stopped run: exit %d\n%s\n%s", rc, out, err);
    ck_assert_msg(strstr(out, "interrupted: checkpoint written; continue with the same command and --resume"), "%s",
                  out);
    ck_assert_msg(!strstr(out, "done: "), "the run ended before the stop: %s", out);
    free(out);
    free(err);
    rc = run_cli((const char *[]){"train", jcut, "--procs", procs, "--resume", NULL}, &out, &err);
    ck_assert_msg(rc == 0, "resumed run: exit %d\n%s\n%s", rc, out, err);
    ck_assert_msg(strstr(out, "resumed from ") && strstr(out, "done: "), "%s", out);
    ck_assert_msg(lg_test_count_substr(out, "\ncheckpoint ") >= 5, "checkpoint_every = 4: %s", out);
    free(out);
    free(err);
    assert_same_outputs(ref, cut);
}

START_TEST(dp2_stop_resume_is_bit_exact) { stop_and_resume(1, 2); }
END_TEST

START_TEST(pp2_stop_resume_is_bit_exact) { stop_and_resume(2, 1); }
END_TEST

/* The launcher's child of the given rank, from /proc (0 when none). */
static pid_t rank_pid(pid_t launcher, int rank)
{
    char p[128];
    snprintf(p, sizeof p, "/proc/%d/task/%d/children", (int)launcher, (int)launcher);
    FILE *f = fopen(p, "r");
    int pid;
    pid_t found = 0;
    while (f && !found && fscanf(f, "%d", &pid) == 1) {
        char e[128], buf[65536];
        snprintf(e, sizeof e, "/proc/%d/environ", pid);
        FILE *g = fopen(e, "r");
        size_t n = g ? fread(buf, 1, sizeof buf - 1, g) : 0;
        if (g)
            fclose(g);
        buf[n] = '\0';
        for (size_t i = 0; i < n && !found; i += strlen(buf + i) + 1)
            if (!strncmp(buf + i, "RANK=", 5) && atoi(buf + i + 5) == rank)
                found = pid;
    }
    if (f)
        fclose(f);
    return found;
}

/* Four processes (two pipelines of two stages), a checkpoint every 3 steps; rank 1 killed once one is
 * committed and the run has gone on; resumed from whatever `latest` names. */
START_TEST(pp2_dp2_kill_resume_is_bit_exact)
{
    setup_once();
    write_job("kref.lua", "kref", 2, 2, 6, 0);
    write_job("kcut.lua", "kcut", 2, 2, 6, 3);
    run_ok((const char *[]){"train", "kref.lua", "--procs", "4", NULL});
    pid_t launcher = lg_test_spawn(root, (const char *[]){"train", "kcut.lua", "--procs", "4", NULL});
    wait_for(launcher, "checkpoint");
    wait_for(launcher, "step 5/");
    pid_t victim = rank_pid(launcher, 1);
    ck_assert_int_gt(victim, 0);
    ck_assert_int_eq(kill(victim, SIGKILL), 0);
    char *out, *err;
    int rc = lg_test_wait(root, launcher, &out, &err);
    ck_assert_msg(rc != 0 && strstr(err, "rank 1 of 4 was killed by signal 9"), "%d\n%s\n%s", rc, out, err);
    free(out);
    free(err);
    char *ck = path_in("kcut/checkpoints"), dir[1200];
    CHECK(lg_ckpt_latest(ck, dir, sizeof dir)); /* committed, and whole: every shard in its manifest verifies */
    free(ck);
    for (int k = 0; k < 8; k++) { /* and no shard is missing from it */
        char f[1400];
        if (k < 4)
            snprintf(f, sizeof f, "%s/rank-%d.safetensors", dir, k);
        else
            snprintf(f, sizeof f, "%s/adapter-%d.stage-%d.safetensors", dir, (k - 4) / 2, (k - 4) % 2);
        ck_assert_msg(access(f, R_OK) == 0, "the committed checkpoint lacks %s", f);
    }
    rc = run_cli((const char *[]){"train", "kcut.lua", "--procs", "4", "--resume", NULL}, &out, &err);
    ck_assert_msg(rc == 0, "resumed run: exit %d\n%s\n%s", rc, out, err);
    ck_assert_msg(strstr(out, "resumed from "), "%s", out);
    free(out);
    free(err);
    assert_same_outputs("kref", "kcut");
}
END_TEST

/* The checkpoint `latest` names under dir/checkpoints verifies and holds both ranks' shards and both
 * adapters' weights (0 when there is none yet, 1 when there is). */
static int whole_checkpoint(const char *out)
{
    char rel[128], dir[1200], f[1400];
    snprintf(rel, sizeof rel, "%s/checkpoints/latest", out);
    char *latest = path_in(rel), *ck = path_in(out);
    int have = access(latest, R_OK) == 0;
    free(latest);
    if (have) {
        snprintf(rel, sizeof rel, "%s/checkpoints", ck);
        CHECK(lg_ckpt_latest(rel, dir, sizeof dir));
        const char *files[] = {"rank-0", "rank-1", "adapter-0", "adapter-1", "state"};
        for (int k = 0; k < 5; k++) {
            snprintf(f, sizeof f, "%s/%s.safetensors", dir, files[k]);
            ck_assert_msg(access(f, R_OK) == 0, "the committed checkpoint lacks %s", f);
        }
    }
    free(ck);
    return have;
}

/* 1 when a killed save left its temporary directory in dir (relative). */
static int tmp_left(const char *rel)
{
    char *p = path_in(rel);
    DIR *d = opendir(p);
    int found = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        found |= !strncmp(e->d_name, ".tmp-ckpt-", 10);
    if (d)
        closedir(d);
    free(p);
    return found;
}

/* data_parallel = 2 with a checkpoint every step of each adapter: a rank (0 and 1 in turn) killed with SIGKILL,
 * twice while a save is under way (its temporary directory exists), twice 0-20 ms after a save was reported,
 * then resumed; after every kill `latest` is whole, and the run that finishes is byte for byte the
 * uninterrupted one. */
START_TEST(dp2_kills_around_saves_resume_bit_exact)
{
    setup_once();
    write_job("sref.lua", "sref", 1, 2, 4, 0);
    write_job("scut.lua", "scut", 1, 2, 4, 1);
    run_ok((const char *[]){"train", "sref.lua", "--procs", "2", NULL});
    srand48((long)lg_test_seed());
    int kills = 0, finished = 0, in_save = 0;
    while (!finished) {
        int resume = whole_checkpoint("scut");
        pid_t launcher = lg_test_spawn(root, resume ? (const char *[]){"train", "scut.lua", "--procs", "2", "--resume",
                                                                       NULL}
                                                    : (const char *[]){"train", "scut.lua", "--procs", "2", NULL});
        char *out, *err;
        if (kills < 4) {
            char *fo = path_in("stdout.txt");
            pid_t victim = 0;
            siginfo_t info;
            for (;;) { /* a save reported by this process (the launcher is not reaped here) */
                info.si_pid = 0;
                if (victim || waitid(P_PID, (id_t)launcher, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid)
                    break;
                char *text = access(fo, R_OK) == 0 ? lg_test_slurp(fo, NULL) : NULL;
                if (text && strstr(text, "\ncheckpoint ")) {
                    if (kills < 2) { /* the first two: aimed at a save, once its temporary directory is there */
                        while (!tmp_left("scut/checkpoints") && waitid(P_PID, (id_t)launcher, &info,
                                                                       WEXITED | WNOHANG | WNOWAIT) == 0 &&
                               !info.si_pid)
                            usleep(200);
                        in_save += tmp_left("scut/checkpoints");
                    } else {
                        usleep((useconds_t)(drand48() * 20000));
                    }
                    victim = rank_pid(launcher, kills % 2);
                }
                free(text);
                usleep(2000);
            }
            free(fo);
            if (victim && kill(victim, SIGKILL) == 0) {
                kills++;
                int rc = lg_test_wait(root, launcher, &out, &err);
                ck_assert_int_ne(rc, 0);
                free(out);
                free(err);
                continue;
            }
        }
        int rc = lg_test_wait(root, launcher, &out, &err);
        ck_assert_msg(rc == 0, "after %d kills: exit %d\n%s\n%s", kills, rc, out, err);
        free(out);
        free(err);
        finished = 1;
    }
    ck_assert_int_ge(kills, 1);
    printf("dp2 kills: %d, %d of them while a save's temporary directory was there, seed %llu\n", kills, in_save,
           (unsigned long long)lg_test_seed());
    whole_checkpoint("scut");
    assert_same_outputs("sref", "scut");
    char *ck = path_in("scut/checkpoints");
    DIR *d = opendir(ck);
    for (struct dirent *e; d && (e = readdir(d));) /* nothing a killed save left stays */
        ck_assert_msg(e->d_name[0] != '.' || !strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."), "%s: %s left",
                      ck, e->d_name);
    if (d)
        closedir(d);
    free(ck);
}
END_TEST

/* `loragen train job --procs procs --resume` fails with needle in its stderr. */
static void refused(const char *job, const char *procs, const char *needle)
{
    char *out, *err;
    int rc = run_cli((const char *[]){"train", job, "--procs", procs, "--resume", NULL}, &out, &err);
    ck_assert_msg(rc != 0 && strstr(err, needle), "%s --procs %s --resume: exit %d, expected '%s' in:\n%s\n%s", job,
                  procs, rc, needle, out, err);
    free(out);
    free(err);
}

/* A new checkpoint committed under root with the files of dir, rank-0's and rank-1's shards swapped: every
 * file in its manifest, so only the shards' own records can tell. */
static void commit_swapped(const char *root_dir, const char *dir)
{
    lg_ckpt_writer_t *w;
    CHECK(lg_ckpt_begin(root_dir, &w));
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "manifest.json"))
            continue;
        const char *to = !strcmp(e->d_name, "rank-0.safetensors")   ? "rank-1.safetensors"
                         : !strcmp(e->d_name, "rank-1.safetensors") ? "rank-0.safetensors"
                                                                    : e->d_name;
        char from[1600], dst[1600];
        snprintf(from, sizeof from, "%s/%s", dir, e->d_name);
        snprintf(dst, sizeof dst, "%s/%s", lg_ckpt_dir(w), to);
        size_t n;
        char *data = lg_test_slurp(from, &n);
        lg_test_write_file(dst, data, n);
        free(data);
    }
    closedir(d);
    CHECK(lg_ckpt_commit(w, 8));
}

/* The final checkpoint of a finished data_parallel = 2 run (one epoch), then jobs writing to the same output
 * with another shape, shards swapped between the ranks, and damaged or missing shards. */
START_TEST(resume_refuses_another_shape_or_a_damaged_shard)
{
    setup_once();
    write_job("shape.lua", "shape", 1, 2, 1, 0);
    run_ok((const char *[]){"train", "shape.lua", "--procs", "2", NULL});
    write_job("shape_pp.lua", "shape", 2, 1, 1, 0);
    refused("shape_pp.lua", "2", "written by a run over 2 process(es) with pipeline = { data_parallel = 2, stages = "
                                 "1 }; this run has 2 process(es) and");
    refused("shape_pp.lua", "2", "says { data_parallel = 1, stages = 2 }");
    write_job("shape_dp4.lua", "shape", 1, 4, 1, 0);
    refused("shape_dp4.lua", "4", "this run has 4 process(es)");
    char *ck = path_in("shape/checkpoints"), dir[1200], file[1300];
    CHECK(lg_ckpt_latest(ck, dir, sizeof dir));
    commit_swapped(ck, dir);
    refused("shape.lua", "2", "rank-0.safetensors: written with rank 1, but this run's rank is 0");
    CHECK(lg_ckpt_latest(ck, dir, sizeof dir));
    snprintf(file, sizeof file, "%s/rank-1.safetensors", dir);
    size_t n;
    char *shard = lg_test_slurp(file, &n);
    ck_assert_uint_gt(n, 100);
    shard[n - 3] ^= 1; /* one bit of rank 1's gradients */
    lg_test_write_file(file, shard, n);
    refused("shape.lua", "2", "rank-1.safetensors does not match its checksum in the manifest");
    ck_assert_int_eq(unlink(file), 0);
    refused("shape.lua", "2", "rank-1.safetensors");
    char *err = NULL, *out = NULL;
    int rc = run_cli((const char *[]){"train", "shape.lua", "--procs", "2", "--resume", NULL}, &out, &err);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(err, "rank 0 of 2: ") && strstr(err, "rank 1 of 2: "), "every rank refuses: %s", err);
    free(out);
    free(err);
    free(shard);
    free(ck);
}
END_TEST

/* A checkpoint of format 1 (one process, before the shards) is refused by name, not misread. */
START_TEST(older_format_is_refused)
{
    setup_once();
    write_job("old.lua", "old", 1, 1, 1, 0);
    char *ck = path_in("old/checkpoints");
    lg_ckpt_writer_t *w;
    CHECK(lg_ckpt_begin(ck, &w));
    double job[5] = {1.0, 0, 3, 1000, 2.5}; /* format 1: format, epoch, microbatch, tokens, seconds */
    struct lg_st_write_tensor t = {.name = "job", .dtype = LG_ST_F64, .ndim = 1, .shape = {5}, .data = job};
    char path[1200];
    snprintf(path, sizeof path, "%s/state.safetensors", lg_ckpt_dir(w));
    CHECK(lg_st_write(path, &t, 1, NULL));
    CHECK(lg_ckpt_commit(w, 2));
    char *p = path_in("old.lua");
    struct lg_train_opts o = {.job = p, .resume = 1};
    struct lg_train_result r;
    ck_assert_int_eq(lg_train_run(&o, &r), LG_ERR_IO);
    ck_assert_msg(strstr(lg_last_error(), "state.safetensors: checkpoint format 1, this build reads format 2 only: "
                                          "it was written by an older loragen"),
                  "%s", lg_last_error());
    free(p);
    free(ck);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train_resume_mp");
    TCase *tc = tcase_create("cpu");
    tcase_add_test(tc, dp2_stop_resume_is_bit_exact);
    tcase_add_test(tc, pp2_stop_resume_is_bit_exact);
    tcase_add_test(tc, pp2_dp2_kill_resume_is_bit_exact);
    tcase_add_test(tc, dp2_kills_around_saves_resume_bit_exact);
    tcase_add_test(tc, resume_refuses_another_shape_or_a_damaged_shard);
    tcase_add_test(tc, older_format_is_refused);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
