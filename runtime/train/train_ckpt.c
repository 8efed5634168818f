/* train_ckpt.c: the trainer's checkpoints, on lg_ckpt.h's crash-safe directories. A checkpoint holds
 * everything the run's future depends on, so that --resume gives the same losses bit for bit:
 *   state.safetensors      the position (epoch, microbatch), token count, seconds so far; per adapter its
 *                          step, whether it is done, the loss of the global batch in progress, the history
 *                          of losses (for metrics.jsonl and loss.svg) — all F64, exact;
 *   adapter-<i>.safetensors  per (layer, module): A, B, their AdamW moments, and the gradients accumulated
 *                          by the global batch in progress (a checkpoint may fall inside a batch when the run
 *                          is interrupted).
 * Dropout masks and the data order are functions of (seed, epoch, microbatch): nothing random to save. */
#include "lg_ckpt.h"
#include "train_internal.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LG_TRAIN_CKPT_FORMAT 1.0
#define NSTATE 6 /* step, steps, done, batch_loss, skipped_in_a_row, format */
static const char *const parts[8] = {"A", "B", "mA", "vA", "mB", "vB", "dA", "dB"};

static void ckpt_root(const struct lg_trainer *tr, char *buf, size_t n)
{
    snprintf(buf, n, "%s/checkpoints", tr->out_root);
}

/* The address and element count of tensor part k (0..7) of an adapter tensor. */
static void part_of(const struct lg_ad_tensor *t, int k, lg_addr *addr, int64_t *rows, int64_t *cols)
{
    const struct lg_lora_params *p = &t->p;
    int isb = k == 1 || k == 4 || k == 5 || k == 7;
    *rows = isb ? p->out : p->rank;
    *cols = isb ? p->rank : p->in;
    lg_addr a[8] = {p->a, p->b, t->ma, t->va, t->mb, t->vb, p->da, p->db};
    *addr = a[k];
}

static enum lg_status write_adapter(struct lg_trainer *tr, const struct lg_ad_state *a, const char *dir)
{
    int n = 8 * a->nt;
    struct lg_st_write_tensor *w = calloc((size_t)n, sizeof *w);
    char (*names)[64] = calloc((size_t)n, sizeof *names);
    float **bufs = calloc((size_t)n, sizeof *bufs);
    enum lg_status s = w && names && bufs ? LG_OK : lg_fail(LG_ERR_OOM, "checkpoint: out of memory");
    for (int i = 0; s == LG_OK && i < a->nt; i++)
        for (int k = 0; s == LG_OK && k < 8; k++) {
            int j = 8 * i + k;
            lg_addr addr;
            int64_t rows, cols;
            part_of(&a->t[i], k, &addr, &rows, &cols);
            size_t bytes = (size_t)(rows * cols) * sizeof(float);
            snprintf(names[j], sizeof names[j], "%d.%s.%s", a->t[i].layer, lg_peft_module_name(a->t[i].mod),
                     parts[k]);
            if (!(bufs[j] = malloc(bytes)))
                s = lg_fail(LG_ERR_OOM, "checkpoint: out of memory");
            else
                s = tr->be->ops->download(tr->be, bufs[j], addr, bytes);
            w[j] = (struct lg_st_write_tensor){.name = names[j], .dtype = LG_ST_F32, .ndim = 2,
                                               .shape = {rows, cols}, .data = bufs[j]};
        }
    char path[1400];
    snprintf(path, sizeof path, "%s/adapter-%d.safetensors", dir, a->index);
    const char *meta[] = {"adapter", a->cfg->name, NULL};
    if (s == LG_OK)
        s = lg_st_write(path, w, (size_t)n, meta);
    for (int j = 0; bufs && j < n; j++)
        free(bufs[j]);
    free(bufs);
    free(names);
    free(w);
    return s;
}

static double *hist_array(const struct lg_point *p, size_t n)
{
    double *h = malloc((n ? n : 1) * 4 * sizeof *h);
    for (size_t i = 0; h && i < n; i++) {
        h[4 * i] = (double)p[i].step;
        h[4 * i + 1] = p[i].loss;
        h[4 * i + 2] = p[i].lr;
        h[4 * i + 3] = p[i].grad_norm;
    }
    return h;
}

static enum lg_status write_state(struct lg_trainer *tr, const char *dir)
{
    int n = 1 + 3 * tr->nad;
    struct lg_st_write_tensor *w = calloc((size_t)n, sizeof *w);
    double **bufs = calloc((size_t)n, sizeof *bufs);
    char (*names)[32] = calloc((size_t)n, sizeof *names);
    if (!w || !bufs || !names) {
        free(w);
        free(bufs);
        free(names);
        return lg_fail(LG_ERR_OOM, "checkpoint: out of memory");
    }
    double elapsed = tr->elapsed_before + (lg_train_now() - tr->t0);
    double job[5] = {LG_TRAIN_CKPT_FORMAT, tr->epoch, (double)tr->mb_index, (double)tr->tokens, elapsed};
    w[0] = (struct lg_st_write_tensor){.name = "job", .dtype = LG_ST_F64, .ndim = 1, .shape = {5}, .data = job};
    int ok = 1;
    for (int i = 0; i < tr->nad; i++) {
        const struct lg_ad_state *a = &tr->ad[i];
        double *st = bufs[3 * i] = malloc(NSTATE * sizeof *st);
        bufs[3 * i + 1] = hist_array(a->hist, a->nhist);
        bufs[3 * i + 2] = hist_array(a->vhist, a->nvhist);
        if (!st || !bufs[3 * i + 1] || !bufs[3 * i + 2]) {
            ok = 0;
            break;
        }
        double v[NSTATE] = {(double)a->step, (double)a->steps, a->done, a->batch_loss, (double)a->skipped_in_a_row,
                            LG_TRAIN_CKPT_FORMAT};
        memcpy(st, v, sizeof v);
        snprintf(names[3 * i], 32, "a%d.state", i);
        snprintf(names[3 * i + 1], 32, "a%d.hist", i);
        snprintf(names[3 * i + 2], 32, "a%d.vhist", i);
        w[1 + 3 * i] = (struct lg_st_write_tensor){.name = names[3 * i], .dtype = LG_ST_F64, .ndim = 1,
                                                   .shape = {NSTATE}, .data = st};
        w[2 + 3 * i] = (struct lg_st_write_tensor){.name = names[3 * i + 1], .dtype = LG_ST_F64, .ndim = 2,
                                                   .shape = {(int64_t)a->nhist, 4}, .data = bufs[3 * i + 1]};
        w[3 + 3 * i] = (struct lg_st_write_tensor){.name = names[3 * i + 2], .dtype = LG_ST_F64, .ndim = 2,
                                                   .shape = {(int64_t)a->nvhist, 4}, .data = bufs[3 * i + 2]};
    }
    char path[1400];
    snprintf(path, sizeof path, "%s/state.safetensors", dir);
    enum lg_status s = ok ? lg_st_write(path, w, (size_t)n, NULL) : lg_fail(LG_ERR_OOM, "checkpoint: out of memory");
    for (int i = 0; i < 3 * tr->nad; i++)
        free(bufs[i]);
    free(bufs);
    free(names);
    free(w);
    return s;
}

/* Removes from each adapter's output directory the temporary files of atomic writes (metrics.jsonl,
 * loss.svg, the PEFT files: "<name>.tmp-PID-N") whose writer was killed before its rename. */
static void remove_stale_outputs(const struct lg_trainer *tr)
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

enum lg_status lg_ckpt_write(struct lg_trainer *tr)
{
    remove_stale_outputs(tr);
    char root[1100];
    ckpt_root(tr, root, sizeof root);
    lg_ckpt_writer_t *w;
    enum lg_status s = lg_ckpt_begin(root, &w);
    if (s != LG_OK)
        return s;
    s = write_state(tr, lg_ckpt_dir(w));
    for (int i = 0; s == LG_OK && i < tr->nad; i++)
        s = write_adapter(tr, &tr->ad[i], lg_ckpt_dir(w));
    if (s != LG_OK) {
        lg_ckpt_abort(w);
        return s;
    }
    if ((s = lg_ckpt_commit(w, 2)) != LG_OK)
        return s;
    for (int i = 0; s == LG_OK && i < tr->nad; i++)
        s = lg_report_write(tr, &tr->ad[i]);
    int64_t steps = 0;
    for (int i = 0; i < tr->nad; i++)
        steps += tr->ad[i].step;
    tr->ckpt_steps = steps;
    char latest[1200];
    if (s == LG_OK && lg_ckpt_latest(root, latest, sizeof latest) == LG_OK) {
        struct lg_train_progress p = {.event = LG_EV_CKPT, .adapter = -1, .name = tr->tc.name, .message = latest};
        lg_report(tr, &p);
    }
    return s;
}

/* ---- resume ---- */

static enum lg_status read_f64(const lg_st_t *st, const char *name, int64_t rows, int64_t cols, double *out)
{
    struct lg_st_tensor t;
    enum lg_status s = lg_st_find(st, name, &t);
    if (s != LG_OK)
        return s;
    int64_t want = cols ? rows * cols : rows;
    if (t.dtype != LG_ST_F64 || t.numel != want)
        return lg_fail(LG_ERR_IO, "%s: %s: expected %lld F64 values", lg_st_path(st), name, (long long)want);
    memcpy(out, t.data, (size_t)want * sizeof *out);
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
    s = read_f64(st, name, (int64_t)rows, 4, h);
    free(*arr);
    *arr = calloc(rows + 1, sizeof **arr);
    *n = 0;
    *cap = rows + 1;
    for (size_t i = 0; s == LG_OK && *arr && i < rows; i++)
        (*arr)[(*n)++] = (struct lg_point){(int64_t)h[4 * i], h[4 * i + 1], h[4 * i + 2], h[4 * i + 3]};
    free(h);
    return s == LG_OK && !*arr ? lg_fail(LG_ERR_OOM, "checkpoint: out of memory") : s;
}

static enum lg_status load_adapter(struct lg_trainer *tr, struct lg_ad_state *a, const char *dir)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/adapter-%d.safetensors", dir, a->index);
    lg_st_t *st;
    enum lg_status s = lg_st_open(path, &st);
    if (s != LG_OK)
        return s;
    const char *name = lg_st_metadata(st, "adapter");
    if (!name || strcmp(name, a->cfg->name))
        s = lg_fail(LG_ERR_IO, "%s: holds adapter '%s', the job's adapter %d is '%s'", path, name ? name : "?",
                    a->index, a->cfg->name);
    for (int i = 0; s == LG_OK && i < a->nt; i++)
        for (int k = 0; s == LG_OK && k < 8; k++) {
            lg_addr addr;
            int64_t shape[2];
            part_of(&a->t[i], k, &addr, &shape[0], &shape[1]);
            char tn[64];
            snprintf(tn, sizeof tn, "%d.%s.%s", a->t[i].layer, lg_peft_module_name(a->t[i].mod), parts[k]);
            float *buf = malloc((size_t)(shape[0] * shape[1]) * sizeof *buf);
            s = buf ? lg_st_read_f32(st, tn, 2, shape, buf) : lg_fail(LG_ERR_OOM, "checkpoint: out of memory");
            if (s == LG_OK)
                s = tr->be->ops->upload(tr->be, addr, buf, (size_t)(shape[0] * shape[1]) * sizeof *buf);
            free(buf);
        }
    lg_st_close(st);
    return s == LG_OK ? lg_decoder_lora_sync(tr->dec, a->index) : s;
}

/* Replays the sample counts of the microbatches before the checkpoint's position (nothing runs). */
static enum lg_status replay_position(struct lg_trainer *tr)
{
    for (size_t i = 0; i < tr->mb_index; i++) {
        struct lg_mb_view v;
        enum lg_status s = lg_plan_mb(tr->plan, i, &v);
        for (size_t j = 0; s == LG_OK && j < v.nseg; j++) {
            struct lg_seg_view sv;
            if ((s = lg_plan_seg(tr->plan, i, j, &sv)) != LG_OK)
                break;
            struct lg_ad_state *a = &tr->ad[sv.adapter];
            a->batch_left[sv.batch] -= (int64_t)sv.nsamples;
            if (a->batch_left[sv.batch] == 0)
                a->stepped_batches++;
        }
        if (s != LG_OK)
            return s;
    }
    return LG_OK;
}

enum lg_status lg_ckpt_resume(struct lg_trainer *tr)
{
    char root[1100], dir[1200], path[1300];
    ckpt_root(tr, root, sizeof root);
    enum lg_status s = lg_ckpt_latest(root, dir, sizeof dir);
    if (s != LG_OK)
        return s;
    remove_stale_outputs(tr);
    snprintf(path, sizeof path, "%s/state.safetensors", dir);
    lg_st_t *st;
    if ((s = lg_st_open(path, &st)) != LG_OK)
        return s;
    double job[5];
    s = read_f64(st, "job", 5, 0, job);
    if (s == LG_OK && job[0] != LG_TRAIN_CKPT_FORMAT)
        s = lg_fail(LG_ERR_IO, "%s: checkpoint format %g, this build reads %g", path, job[0], LG_TRAIN_CKPT_FORMAT);
    for (int i = 0; s == LG_OK && i < tr->nad; i++) {
        struct lg_ad_state *a = &tr->ad[i];
        double v[NSTATE];
        char name[32];
        snprintf(name, sizeof name, "a%d.state", i);
        if ((s = read_f64(st, name, NSTATE, 0, v)) != LG_OK)
            break;
        a->step = (int64_t)v[0];
        a->done = v[2] != 0;
        a->batch_loss = v[3];
        a->skipped_in_a_row = (int64_t)v[4];
        snprintf(name, sizeof name, "a%d.hist", i);
        if ((s = load_hist(st, name, &a->hist, &a->nhist, &a->caphist)) != LG_OK)
            break;
        snprintf(name, sizeof name, "a%d.vhist", i);
        s = load_hist(st, name, &a->vhist, &a->nvhist, &a->capvhist);
    }
    lg_st_close(st);
    if (s != LG_OK)
        return lg_fail_wrap(s, "resuming from %s: ", dir);
    tr->epoch = (int)job[1];
    tr->mb_index = (size_t)job[2];
    tr->tokens = (int64_t)job[3];
    tr->elapsed_before = job[4];
    for (int i = 0; s == LG_OK && i < tr->nad; i++)
        s = load_adapter(tr, &tr->ad[i], dir);
    /* planning the epoch resets the batch in progress: keep it across the replay */
    double *bl = malloc((size_t)tr->nad * sizeof *bl);
    if (!bl)
        return lg_fail(LG_ERR_OOM, "checkpoint: out of memory");
    for (int i = 0; i < tr->nad; i++)
        bl[i] = tr->ad[i].batch_loss;
    if (s == LG_OK)
        s = lg_train_plan_epoch(tr);
    if (s == LG_OK)
        s = replay_position(tr);
    for (int i = 0; i < tr->nad; i++)
        tr->ad[i].batch_loss = bl[i];
    free(bl);
    for (int i = 0; s == LG_OK && i < tr->nad; i++)
        s = lg_report_write(tr, &tr->ad[i]);
    int64_t steps = 0;
    for (int i = 0; i < tr->nad; i++)
        steps += tr->ad[i].step;
    tr->ckpt_steps = steps;
    if (s == LG_OK)
        lg_report_info(tr, "resumed from %s: epoch %d, microbatch %zu", dir, tr->epoch + 1, tr->mb_index);
    return s;
}
