/* train_ckpt_load.c: --resume, on every rank of the run: find `latest`, verify the whole checkpoint against its
 * manifest (every shard's size and hash), refuse one written by another format or another shape of run
 * (processes, the job's data_parallel or stages, adapters), then load the shared state (state.safetensors),
 * this rank's adapter weights and moments (adapter-<i>[.stage-<s>].safetensors) and its own shard
 * (rank-<r>.safetensors). The ranks agree on the outcome before training goes on, so that a rank which cannot
 * resume stops all of them at once. The files are described in train_ckpt.c. */
#include "lg_ckpt.h"
#include "train_internal.h"

#include <stdlib.h>
#include <string.h>

static enum lg_status read_f64(const lg_st_t *st, const char *name, int64_t n, double *out)
{
    struct lg_st_tensor t;
    enum lg_status s = lg_st_find(st, name, &t);
    if (s != LG_OK)
        return s;
    if (t.dtype != LG_ST_F64 || t.numel != n)
        return lg_fail(LG_ERR_IO, "%s: %s: expected %lld F64 values", lg_st_path(st), name, (long long)n);
    memcpy(out, t.data, (size_t)n * sizeof *out);
    return LG_OK;
}

static enum lg_status load_hist(const lg_st_t *st, const char *name, struct lg_point **arr, size_t *n, size_t *cap)
{
    struct lg_st_tensor t;
    enum lg_status s = lg_st_find(st, name, &t);
    if (s != LG_OK)
        return s;
    size_t rows = t.ndim == 2 ? (size_t)t.shape[0] : 0;
    double *h = malloc((rows ? rows : 1) * 4 * sizeof *h);
    if (!h)
        return lg_fail(LG_ERR_OOM, "checkpoint: out of memory");
    s = read_f64(st, name, (int64_t)rows * 4, h);
    free(*arr);
    *arr = calloc(rows + 1, sizeof **arr);
    *n = 0;
    *cap = rows + 1;
    for (size_t i = 0; s == LG_OK && *arr && i < rows; i++)
        (*arr)[(*n)++] = (struct lg_point){(int64_t)h[4 * i], h[4 * i + 1], h[4 * i + 2], h[4 * i + 3]};
    free(h);
    return s == LG_OK && !*arr ? lg_fail(LG_ERR_OOM, "checkpoint: out of memory") : s;
}

/* Tensor parts [from, to) of adapter a's tensors from st, named "<prefix><layer>.<module>.<part>". */
static enum lg_status load_parts(struct lg_trainer *tr, const lg_st_t *st, struct lg_ad_state *a, const char *prefix,
                                 int from, int to)
{
    enum lg_status s = LG_OK;
    for (int i = 0; s == LG_OK && i < a->nt; i++)
        for (int k = from; s == LG_OK && k < to; k++) {
            lg_addr addr;
            int64_t shape[2];
            lg_ckpt_part(&a->t[i], k, &addr, &shape[0], &shape[1]);
            char tn[96];
            snprintf(tn, sizeof tn, "%s%d.%s.%s", prefix, a->t[i].layer, lg_peft_module_name(a->t[i].mod),
                     lg_ckpt_parts[k]);
            size_t bytes = (size_t)(shape[0] * shape[1]) * sizeof(float);
            float *buf = malloc(bytes);
            s = buf ? lg_st_read_f32(st, tn, 2, shape, buf) : lg_fail(LG_ERR_OOM, "checkpoint: out of memory");
            if (s == LG_OK)
                s = tr->be->ops->upload(tr->be, addr, buf, bytes);
            free(buf);
        }
    return s;
}

/* A metadata value of a shard that must equal `want`. */
static enum lg_status expect_meta(const lg_st_t *st, const char *key, int want, const char *what)
{
    const char *v = lg_st_metadata(st, key);
    if (v && atoi(v) == want && *v)
        return LG_OK;
    return lg_fail(LG_ERR_IO, "%s: written with %s %s, but this run's %s is %d: the file belongs to another run's "
                   "checkpoint; start afresh without --resume", lg_st_path(st), key, v ? v : "(none)", what, want);
}

static enum lg_status load_weights(struct lg_trainer *tr, struct lg_ad_state *a, const char *dir)
{
    char file[128], path[1400];
    lg_ckpt_weights_file(tr, a->index, file, sizeof file);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    lg_st_t *st;
    enum lg_status s = lg_st_open(path, &st);
    if (s != LG_OK)
        return s;
    const char *name = lg_st_metadata(st, "adapter");
    if (!name || strcmp(name, a->cfg->name))
        s = lg_fail(LG_ERR_IO, "%s: holds adapter '%s', the job's adapter %d is '%s'", path, name ? name : "?",
                    a->index, a->cfg->name);
    if (s == LG_OK)
        s = expect_meta(st, "stage", tr->stage, "pipeline stage");
    if (s == LG_OK)
        s = expect_meta(st, "stages", tr->stages, "number of pipeline stages");
    if (s == LG_OK)
        s = load_parts(tr, st, a, "", 0, 6);
    lg_st_close(st);
    return s;
}

/* state.safetensors: the format and the run's shape first, then each adapter's shared state and history. */
static enum lg_status load_state(struct lg_trainer *tr, const char *dir)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/state.safetensors", dir);
    lg_st_t *st;
    enum lg_status s = lg_st_open(path, &st);
    if (s != LG_OK)
        return s;
    struct lg_st_tensor t;
    double job[LG_CKPT_JOB_N];
    if ((s = lg_st_find(st, "job", &t)) == LG_OK && (t.dtype != LG_ST_F64 || t.numel < 1))
        s = lg_fail(LG_ERR_IO, "%s: job: not the F64 values of a loragen checkpoint", path);
    double format = s == LG_OK ? ((const double *)t.data)[0] : 0;
    if (s == LG_OK && format != LG_TRAIN_CKPT_FORMAT)
        s = lg_fail(LG_ERR_IO, "%s: checkpoint format %g, this build reads format %d only: it was written by %s "
                    "loragen; continue it with that version, or start afresh without --resume", path, format,
                    LG_TRAIN_CKPT_FORMAT, format < LG_TRAIN_CKPT_FORMAT ? "an older" : "a newer");
    if (s == LG_OK)
        s = read_f64(st, "job", LG_CKPT_JOB_N, job);
    const struct lg_job_params *jp = lg_job_get_params(tr->job);
    if (s == LG_OK && (job[3] != tr->world || job[4] != jp->data_parallel || job[5] != jp->stages))
        s = lg_fail(LG_ERR_IO, "%s: written by a run over %g process(es) with pipeline = { data_parallel = %g, stages "
                    "= %g }; this run has %d process(es) and %s says { data_parallel = %d, stages = %d }: resume with "
                    "the pipeline and the --procs/--gpus count the checkpoint was written with, or start afresh "
                    "without --resume", path, job[3], job[4], job[5], tr->world, tr->tc.path, jp->data_parallel,
                    jp->stages);
    if (s == LG_OK && job[6] != tr->nad)
        s = lg_fail(LG_ERR_IO, "%s: holds %g adapter(s), %s has %d", path, job[6], tr->tc.path, tr->nad);
    for (int i = 0; s == LG_OK && i < tr->nad; i++) {
        struct lg_ad_state *a = &tr->ad[i];
        double v[LG_CKPT_AD_N];
        char name[32];
        snprintf(name, sizeof name, "a%d.state", i);
        if ((s = read_f64(st, name, LG_CKPT_AD_N, v)) != LG_OK)
            break;
        a->step = (int64_t)v[0];
        a->done = v[2] != 0;
        a->skipped_in_a_row = (int64_t)v[4];
        snprintf(name, sizeof name, "a%d.hist", i);
        if ((s = load_hist(st, name, &a->hist, &a->nhist, &a->caphist)) != LG_OK)
            break;
        snprintf(name, sizeof name, "a%d.vhist", i);
        s = load_hist(st, name, &a->vhist, &a->nvhist, &a->capvhist);
    }
    lg_st_close(st);
    if (s == LG_OK) {
        tr->epoch = (int)job[1];
        tr->elapsed_before = job[2];
    }
    return s;
}

/* rank-<r>.safetensors, once the epoch is planned: the position, and each adapter's batch in progress. */
static enum lg_status load_rank(struct lg_trainer *tr, const char *dir)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/rank-%d.safetensors", dir, tr->rank);
    lg_st_t *st;
    enum lg_status s = lg_st_open(path, &st);
    if (s != LG_OK)
        return s;
    const struct lg_job_params *jp = lg_job_get_params(tr->job);
    s = expect_meta(st, "rank", tr->rank, "rank");
    if (s == LG_OK)
        s = expect_meta(st, "world", tr->world, "number of processes");
    if (s == LG_OK)
        s = expect_meta(st, "stage", tr->stage, "pipeline stage");
    if (s == LG_OK)
        s = expect_meta(st, "stages", jp->stages, "pipeline.stages");
    if (s == LG_OK)
        s = expect_meta(st, "data_parallel", jp->data_parallel, "pipeline.data_parallel");
    double pos[LG_CKPT_POS_N];
    if (s == LG_OK && (s = read_f64(st, "position", LG_CKPT_POS_N, pos)) == LG_OK) {
        tr->mb_index = (size_t)pos[0];
        tr->dp_next_resume = (size_t)pos[1];
        tr->tokens = (int64_t)pos[2];
    }
    for (int i = 0; s == LG_OK && i < tr->nad; i++) {
        struct lg_ad_state *a = &tr->ad[i];
        double b[3];
        char name[32];
        snprintf(name, sizeof name, "a%d.batch", i);
        if ((s = read_f64(st, name, 3, b)) != LG_OK)
            break;
        if (b[2] != (double)a->nbatches) {
            s = lg_fail(LG_ERR_IO, "%s: adapter '%s' had %g global batches in epoch %d, the job's plan has %zu: the "
                        "job's data or batch sizes changed; start afresh without --resume", path, a->cfg->name, b[2],
                        tr->epoch + 1, a->nbatches);
            break;
        }
        a->batch_loss = b[0];
        a->stepped_batches = (int64_t)b[1];
        double *left = malloc((a->nbatches + 1) * sizeof *left);
        snprintf(name, sizeof name, "a%d.left", i);
        s = left ? read_f64(st, name, (int64_t)a->nbatches, left) : lg_fail(LG_ERR_OOM, "checkpoint: out of memory");
        for (size_t g = 0; s == LG_OK && g < a->nbatches; g++)
            a->batch_left[g] = (int64_t)left[g];
        free(left);
        snprintf(name, sizeof name, "a%d.", i);
        if (s == LG_OK)
            s = load_parts(tr, st, a, name, 6, 8);
    }
    lg_st_close(st);
    return s;
}

/* The plan a checkpoint records (state.safetensors "plan"); *have = 0 for a checkpoint without the record. */
static enum lg_status read_plan(const char *dir, double plan[LG_CKPT_PLAN_N], int *have)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/state.safetensors", dir);
    lg_st_t *st;
    enum lg_status s = lg_st_open(path, &st);
    if (s != LG_OK)
        return s;
    struct lg_st_tensor t;
    *have = lg_st_find(st, "plan", &t) == LG_OK;
    if (!*have)
        lg_clear_error();
    else
        s = read_f64(st, "plan", LG_CKPT_PLAN_N, plan);
    lg_st_close(st);
    return s;
}

/* The epoch just planned against the plan the checkpoint was written under (checkpoints without the record
 * are taken as they are). */
static enum lg_status check_plan(struct lg_trainer *tr, const char *dir)
{
    double was[LG_CKPT_PLAN_N], now[LG_CKPT_PLAN_N];
    int have;
    enum lg_status s = read_plan(dir, was, &have);
    if (s != LG_OK || !have)
        return s;
    lg_train_plan_fingerprint(tr, now);
    if (memcmp(was, now, sizeof was))
        return lg_fail(LG_ERR_IO, "%s/state.safetensors: epoch %d was planned at capacity %g into %g microbatches%s; "
                       "this run plans it at capacity %g into %g%s: the job's batching, datasets or adapters changed "
                       "since, so the checkpoint's position would point into another order of samples; restore the "
                       "job as it was or start afresh without --resume", dir, tr->epoch + 1, was[0], was[1],
                       was[0] == now[0] && was[1] == now[1] ? " (another order of samples)" : "", now[0], now[1],
                       tr->tc.capacity_auto ? " (capacity = \"auto\" follows the checkpoint's capacity on resume)" : "");
    return LG_OK;
}

/* The capacity the latest checkpoint's run planned with (0: none recorded, or no checkpoint). */
uint32_t lg_ckpt_capacity(const struct lg_trainer *tr)
{
    char root[1100], dir[1200];
    lg_ckpt_root(tr, root, sizeof root);
    double plan[LG_CKPT_PLAN_N];
    int have = 0;
    uint32_t cap = 0;
    if (lg_ckpt_latest(root, dir, sizeof dir) == LG_OK && read_plan(dir, plan, &have) == LG_OK && have &&
        plan[0] >= 1 && plan[0] <= 4294967295.0)
        cap = (uint32_t)plan[0];
    lg_clear_error(); /* --resume itself reports what is wrong with the checkpoint */
    return cap;
}

static enum lg_status load(struct lg_trainer *tr, char *dir, size_t n)
{
    char root[1100];
    lg_ckpt_root(tr, root, sizeof root);
    enum lg_status s = lg_ckpt_latest(root, dir, n); /* verifies every file, every rank's shard among them */
    if (s != LG_OK)
        return s; /* the message names the checkpoint */
    if (tr->rank == 0)
        lg_ckpt_remove_stale_outputs(tr);
    if ((s = load_state(tr, dir)) == LG_OK) /* the epoch, then its plan: the batches' sizes and weights */
        s = lg_train_plan_epoch(tr);
    if (s == LG_OK)
        s = check_plan(tr, dir);
    if (s == LG_OK)
        s = load_rank(tr, dir);
    for (int i = 0; s == LG_OK && i < tr->nad; i++)
        if ((s = load_weights(tr, &tr->ad[i], dir)) == LG_OK)
            s = lg_decoder_lora_sync(tr->dec, i);
    return s != LG_OK ? lg_fail_wrap(s, "resuming from %s: ", dir) : s;
}

enum lg_status lg_ckpt_resume(struct lg_trainer *tr)
{
    char dir[1200] = "";
    enum lg_status s = load(tr, dir, sizeof dir);
    if ((s = lg_train_agree(tr, s, "resuming")) != LG_OK)
        return s;
    for (int i = 0; s == LG_OK && tr->rank == 0 && i < tr->nad; i++)
        s = lg_report_write(tr, &tr->ad[i]);
    int64_t steps = 0;
    for (int i = 0; i < tr->nad; i++)
        steps += tr->ad[i].step;
    tr->ckpt_steps = steps;
    if (s == LG_OK)
        lg_report_info(tr, "resumed from %s: epoch %d, microbatch %zu", dir, tr->epoch + 1, tr->mb_index);
    return s;
}
