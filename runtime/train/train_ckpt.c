/* train_ckpt.c: writing the trainer's checkpoints, on lg_ckpt.h's crash-safe directories, from one process or
 * from every rank of a run over several (train_ckpt_load.c reads them back). A checkpoint holds everything the
 * run's future depends on, so that --resume gives the same losses and adapters bit for bit. Format 2, one
 * directory:
 *   state.safetensors        (rank 0) the format, the epoch, the seconds so far, the run's shape (processes,
 *                            the job's data_parallel and stages, adapters); per adapter its step, whether it
 *                            is done, the skips in a row and the history of losses (metrics.jsonl, loss.svg);
 *   adapter-<i>.safetensors  (rank 0; with pipeline stages adapter-<i>.stage-<s>.safetensors, from stage s of
 *                            data-parallel rank 0) adapter i's A, B and AdamW moments of the stage's layers:
 *                            the same on every data-parallel rank, so written once;
 *   rank-<r>.safetensors     (every rank) what is rank r's own: its position in the epoch (the next microbatch
 *                            of its order, the next all-reduce of the shared schedule), the tokens it ran,
 *                            and per adapter the global batch in progress: its partial loss, its batches' samples
 *                            still to run, the batches stepped, and the gradients accumulated so far.
 * The in-progress gradients are saved per rank rather than checkpointing only where they are zero: with
 * several adapters whose batches interleave, a point where no adapter has a batch in progress on any rank may
 * never come; a run must be able to stop at the step it agreed on. Everything is F32 or F64, exact.
 * Dropout masks and the data order are functions of (seed, epoch, microbatch): nothing random to save.
 *
 * Over several processes the save is collective, at a point every rank agrees on (after the same optimizer
 * step; a pipeline first drains, train_pp.c): rank 0 opens the temporary directory and sends its name, every
 * rank writes and syncs its files into it (the ranks share one file system), an all-reduce confirms that all
 * did, and only then rank 0 writes the manifest over every file (every shard's size and hash) and commits. A
 * rank killed during the save fails that all-reduce everywhere, so no checkpoint missing a shard is committed;
 * `latest` keeps naming the previous one. */
#include "lg_ckpt.h"
#include "train_internal.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *const lg_ckpt_parts[8] = {"A", "B", "mA", "vA", "mB", "vB", "dA", "dB"};

void lg_ckpt_root(const struct lg_trainer *tr, char *buf, size_t n) { snprintf(buf, n, "%s/checkpoints", tr->out_root); }

void lg_ckpt_weights_file(const struct lg_trainer *tr, int adapter, char *buf, size_t n)
{
    if (tr->stages > 1)
        snprintf(buf, n, "adapter-%d.stage-%d.safetensors", adapter, tr->stage);
    else
        snprintf(buf, n, "adapter-%d.safetensors", adapter);
}

void lg_ckpt_part(const struct lg_ad_tensor *t, int k, lg_addr *addr, int64_t *rows, int64_t *cols)
{
    const struct lg_lora_params *p = &t->p;
    int isb = k == 1 || k == 4 || k == 5 || k == 7;
    *rows = isb ? p->out : p->rank;
    *cols = isb ? p->rank : p->in;
    lg_addr a[8] = {p->a, p->b, t->ma, t->va, t->mb, t->vb, p->da, p->db};
    *addr = a[k];
}

enum lg_status lg_train_agree(struct lg_trainer *tr, enum lg_status s, const char *what)
{
    if (tr->world == 1)
        return s;
    char mine[1024];
    snprintf(mine, sizeof mine, "%s", s != LG_OK ? lg_last_error() : "");
    double *v = calloc((size_t)tr->world, sizeof *v);
    if (!v)
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    v[tr->rank] = s != LG_OK;
    enum lg_status c = lg_comm_allreduce_host_f64(tr->comm, v, (size_t)tr->world);
    int first = -1;
    for (int r = 0; c == LG_OK && r < tr->world && first < 0; r++)
        if (v[r] > 0)
            first = r;
    free(v);
    if (s != LG_OK) /* this rank's own reason, whatever the others said */
        return lg_fail(s, "%s", mine);
    if (c != LG_OK)
        return lg_fail_wrap(c, "%s: ", what);
    if (first >= 0)
        return lg_fail(LG_ERR_IO, "%s: rank %d of %d failed (its own message says why)", what, first, tr->world);
    return LG_OK;
}

/* Tensors to write, with the names and the host buffers they own. */
struct tlist {
    struct lg_st_write_tensor *w;
    char (*names)[96];
    void **bufs;
    size_t n, cap;
};

static void tl_free(struct tlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->bufs[i]);
    free(l->w);
    free(l->names);
    free(l->bufs);
    memset(l, 0, sizeof *l);
}

/* A [rows] (cols 0) or [rows, cols] tensor; its buffer, or NULL when out of memory. */
static void *tl_add(struct tlist *l, const char *name, enum lg_st_dtype dt, int64_t rows, int64_t cols)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        struct lg_st_write_tensor *w = realloc(l->w, cap * sizeof *w);
        if (w)
            l->w = w;
        char(*names)[96] = realloc(l->names, cap * sizeof *names);
        if (names)
            l->names = names;
        void **bufs = realloc(l->bufs, cap * sizeof *bufs);
        if (bufs)
            l->bufs = bufs;
        if (!w || !names || !bufs)
            return NULL;
        l->cap = cap;
    }
    size_t numel = (size_t)(cols ? rows * cols : rows);
    void *buf = malloc((numel ? numel : 1) * lg_st_dtype_size(dt));
    if (!buf)
        return NULL;
    snprintf(l->names[l->n], sizeof l->names[l->n], "%s", name);
    l->bufs[l->n] = buf;
    l->w[l->n] = (struct lg_st_write_tensor){.name = l->names[l->n], .dtype = dt, .ndim = cols ? 2 : 1,
                                             .shape = {rows, cols}, .data = buf};
    l->n++;
    return buf;
}

static enum lg_status tl_write(struct tlist *l, const char *dir, const char *file, const char *const *meta)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    for (size_t i = 0; i < l->n; i++) /* the names moved when the arrays grew */
        l->w[i].name = l->names[i];
    enum lg_status s = lg_st_write(path, l->w, l->n, meta);
    tl_free(l);
    return s;
}

/* Tensor parts [from, to) of every tensor of adapter a, named "<prefix><layer>.<module>.<part>". */
static enum lg_status add_parts(struct lg_trainer *tr, struct tlist *l, const struct lg_ad_state *a,
                                const char *prefix, int from, int to)
{
    for (int i = 0; i < a->nt; i++)
        for (int k = from; k < to; k++) {
            lg_addr addr;
            int64_t rows, cols;
            lg_ckpt_part(&a->t[i], k, &addr, &rows, &cols);
            char name[96];
            snprintf(name, sizeof name, "%s%d.%s.%s", prefix, a->t[i].layer, lg_peft_module_name(a->t[i].mod),
                     lg_ckpt_parts[k]);
            float *buf = tl_add(l, name, LG_ST_F32, rows, cols);
            if (!buf)
                return lg_fail(LG_ERR_OOM, "checkpoint: out of memory");
            enum lg_status s = tr->be->ops->download(tr->be, buf, addr, (size_t)(rows * cols) * sizeof(float));
            if (s != LG_OK)
                return s;
        }
    return LG_OK;
}

/* adapter-<i>[.stage-<s>].safetensors: A, B and the moments of this stage's tensors of adapter a. */
static enum lg_status write_weights(struct lg_trainer *tr, const struct lg_ad_state *a, const char *dir)
{
    struct tlist l = {0};
    enum lg_status s = add_parts(tr, &l, a, "", 0, 6);
    char file[128], stage[16], stages[16];
    lg_ckpt_weights_file(tr, a->index, file, sizeof file);
    snprintf(stage, sizeof stage, "%d", tr->stage);
    snprintf(stages, sizeof stages, "%d", tr->stages);
    const char *meta[] = {"adapter", a->cfg->name, "stage", stage, "stages", stages, NULL};
    if (s != LG_OK) {
        tl_free(&l);
        return s;
    }
    return tl_write(&l, dir, file, meta);
}

static double *hist_add(struct tlist *l, const char *name, const struct lg_point *p, size_t n)
{
    double *h = tl_add(l, name, LG_ST_F64, (int64_t)n, 4);
    for (size_t i = 0; h && i < n; i++) {
        h[4 * i] = (double)p[i].step;
        h[4 * i + 1] = p[i].loss;
        h[4 * i + 2] = p[i].lr;
        h[4 * i + 3] = p[i].grad_norm;
    }
    return h;
}

/* state.safetensors: the run's shared state (rank 0). */
static enum lg_status write_state(struct lg_trainer *tr, const char *dir)
{
    const struct lg_job_params *jp = lg_job_get_params(tr->job);
    struct tlist l = {0};
    double *job = tl_add(&l, "job", LG_ST_F64, LG_CKPT_JOB_N, 0);
    int ok = job != NULL;
    if (ok) {
        double v[LG_CKPT_JOB_N] = {LG_TRAIN_CKPT_FORMAT, tr->epoch, tr->elapsed_before + (lg_train_now() - tr->t0),
                                   tr->world, jp->data_parallel, jp->stages, tr->nad};
        memcpy(job, v, sizeof v);
    }
    double *plan = ok ? tl_add(&l, "plan", LG_ST_F64, LG_CKPT_PLAN_N, 0) : NULL;
    ok = plan != NULL;
    if (ok)
        lg_train_plan_fingerprint(tr, plan);
    for (int i = 0; ok && i < tr->nad; i++) {
        const struct lg_ad_state *a = &tr->ad[i];
        char name[32];
        snprintf(name, sizeof name, "a%d.state", i);
        double *st = tl_add(&l, name, LG_ST_F64, LG_CKPT_AD_N, 0);
        if (st) {
            double v[LG_CKPT_AD_N] = {(double)a->step, (double)a->steps, a->done, 0, (double)a->skipped_in_a_row,
                                      LG_TRAIN_CKPT_FORMAT};
            memcpy(st, v, sizeof v);
        }
        snprintf(name, sizeof name, "a%d.hist", i);
        ok = st && hist_add(&l, name, a->hist, a->nhist);
        snprintf(name, sizeof name, "a%d.vhist", i);
        ok = ok && hist_add(&l, name, a->vhist, a->nvhist);
    }
    if (!ok) {
        tl_free(&l);
        return lg_fail(LG_ERR_OOM, "checkpoint: out of memory");
    }
    return tl_write(&l, dir, "state.safetensors", NULL);
}

/* rank-<r>.safetensors: this rank's position, and its part of every global batch in progress. */
static enum lg_status write_rank(struct lg_trainer *tr, const char *dir)
{
    const struct lg_job_params *jp = lg_job_get_params(tr->job);
    struct tlist l = {0};
    double *pos = tl_add(&l, "position", LG_ST_F64, LG_CKPT_POS_N, 0);
    enum lg_status s = pos ? LG_OK : lg_fail(LG_ERR_OOM, "checkpoint: out of memory");
    if (pos) {
        double v[LG_CKPT_POS_N] = {(double)tr->mb_index, (double)tr->dps.next, (double)tr->tokens};
        memcpy(pos, v, sizeof v);
    }
    for (int i = 0; s == LG_OK && i < tr->nad; i++) {
        const struct lg_ad_state *a = &tr->ad[i];
        char name[32];
        snprintf(name, sizeof name, "a%d.batch", i);
        double *b = tl_add(&l, name, LG_ST_F64, 3, 0);
        snprintf(name, sizeof name, "a%d.left", i);
        double *left = b ? tl_add(&l, name, LG_ST_F64, (int64_t)a->nbatches, 0) : NULL;
        if (!left) {
            s = lg_fail(LG_ERR_OOM, "checkpoint: out of memory");
            break;
        }
        b[0] = a->batch_loss;
        b[1] = (double)a->stepped_batches;
        b[2] = (double)a->nbatches;
        for (size_t g = 0; g < a->nbatches; g++)
            left[g] = (double)a->batch_left[g];
        snprintf(name, sizeof name, "a%d.", i);
        s = add_parts(tr, &l, a, name, 6, 8);
    }
    char file[64], rank[16], world[16], stage[16], stages[16], dp[16];
    snprintf(file, sizeof file, "rank-%d.safetensors", tr->rank);
    snprintf(rank, sizeof rank, "%d", tr->rank);
    snprintf(world, sizeof world, "%d", tr->world);
    snprintf(stage, sizeof stage, "%d", tr->stage);
    snprintf(stages, sizeof stages, "%d", jp->stages);
    snprintf(dp, sizeof dp, "%d", jp->data_parallel);
    const char *meta[] = {"rank", rank, "world", world, "stage", stage, "stages", stages, "data_parallel", dp, NULL};
    if (s != LG_OK) {
        tl_free(&l);
        return s;
    }
    return tl_write(&l, dir, file, meta);
}

/* Removes from each adapter's output directory the temporary files of atomic writes (metrics.jsonl,
 * loss.svg, the PEFT files: "<name>.tmp-PID-N") whose writer was killed before its rename. */
void lg_ckpt_remove_stale_outputs(const struct lg_trainer *tr)
{
    for (int i = 0; i < tr->nad; i++) {
        DIR *d = opendir(tr->ad[i].out_dir);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            const char *t = strstr(e->d_name, ".tmp-");
            long pid;
            unsigned k;
            char path[1400];
            if (t && sscanf(t, ".tmp-%ld-%u", &pid, &k) == 2 && pid > 0 && kill((pid_t)pid, 0) != 0 &&
                errno == ESRCH) {
                snprintf(path, sizeof path, "%s/%s", tr->ad[i].out_dir, e->d_name);
                unlink(path);
            }
        }
        if (d)
            closedir(d);
    }
}

/* This rank's files of the checkpoint. */
static enum lg_status write_shard(struct lg_trainer *tr, const char *dir)
{
    enum lg_status s = tr->be->ops->sync(tr->be);
    if (s == LG_OK && tr->rank == 0)
        s = write_state(tr, dir);
    for (int i = 0; s == LG_OK && tr->dp_rank == 0 && i < tr->nad; i++)
        s = write_weights(tr, &tr->ad[i], dir);
    if (s == LG_OK)
        s = write_rank(tr, dir);
    return s;
}

enum lg_status lg_ckpt_write(struct lg_trainer *tr)
{
    char root[1100], dir[1200] = "";
    lg_ckpt_root(tr, root, sizeof root);
    lg_ckpt_writer_t *w = NULL;
    enum lg_status s = lg_train_resolve_losses(tr); /* the batches in progress have their losses so far */
    if (tr->rank == 0 && s == LG_OK) {
        lg_ckpt_remove_stale_outputs(tr);
        if ((s = lg_ckpt_begin(root, &w)) == LG_OK)
            snprintf(dir, sizeof dir, "%s", lg_ckpt_dir(w));
    }
    /* the other ranks write into rank 0's temporary directory */
    s = lg_train_agree(tr, s, "starting a checkpoint");
    if (s == LG_OK && tr->world > 1)
        s = lg_comm_bcast_host(tr->comm, 0, dir, sizeof dir);
    if (s == LG_OK)
        s = write_shard(tr, dir);
    s = lg_train_agree(tr, s, "writing a checkpoint's shards");
    enum lg_status c = s;
    if (tr->rank == 0 && s == LG_OK) /* every shard is written and synced: the manifest covers them all */
        c = lg_ckpt_commit(w, 2);
    else if (tr->rank == 0)
        lg_ckpt_abort(w);
    if (s != LG_OK) /* known to every rank alike */
        return s;
    s = lg_train_agree(tr, c, "committing a checkpoint"); /* rank 0's outcome, for all */
    for (int i = 0; s == LG_OK && tr->rank == 0 && i < tr->nad; i++)
        s = lg_report_write(tr, &tr->ad[i]);
    int64_t steps = 0;
    for (int i = 0; i < tr->nad; i++)
        steps += tr->ad[i].step;
    tr->ckpt_steps = steps;
    char latest[1200];
    if (s == LG_OK && tr->rank == 0 && lg_ckpt_latest(root, latest, sizeof latest) == LG_OK) {
        struct lg_train_progress p = {.event = LG_EV_CKPT, .adapter = -1, .name = tr->tc.name, .message = latest};
        lg_report(tr, &p);
    }
    return s;
}
