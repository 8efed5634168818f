/* train_pp.c: pipeline parallelism over processes, one rank per stage. Stage s holds layers
 * [from, to) of an even split (the first stages take the remainder, as the scheduler's cost model assumes) and
 * runs the plan's microbatches in their order under 1F1B: it runs the next forward when fewer than S - s
 * microbatches are in flight on it and the forward's adapters have had their previous optimizer steps on this
 * stage, else the oldest pending backward. Activations go to the next stage and their gradients back as host
 * arrays over the TCP mesh, each message carrying its size.
 *
 * The decoder's arena holds one microbatch, so a backward whose forward is not the stage's latest reruns that
 * forward first from the stage input kept for it (exact: dropout masks are functions of the seed). Each stage
 * steps its own layers' tensors when its backward of a global batch's last microbatch is done; the batch's
 * loss (computed on the last stage) and the squared gradient norm are summed over the stages first, so the
 * clip, the skip of a non-finite batch and the reported loss and norm are those of the whole model. At the end
 * every stage sends its adapters' tensors to rank 0, which writes the PEFT files. The final validation runs
 * through the pipeline once training has drained (periodic validation is not run: activations of training
 * microbatches in flight would share the stages' channels).
 *
 * With data parallel too (rank = d x S + s), pipeline d runs the plan's microbatches of rank d; a batch's step
 * comes at the place in the backward order that train_dp.c's schedule gives (the same order on every rank), and
 * each stage's gradients are first summed over its data-parallel group. */
#include "train_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void lg_pp_split(int layers, int stages, int stage, int *from, int *to)
{
    int base = layers / stages, rem = layers % stages;
    *from = stage * base + (stage < rem ? stage : rem);
    *to = *from + base + (stage < rem);
}

/* The forward of plan microbatch i may run on this stage: each of its adapters has stepped the batch before. */
static int allowed(struct lg_trainer *tr, size_t i)
{
    struct lg_mb_view v;
    lg_plan_mb(tr->plan, i, &v);
    for (size_t j = 0; j < v.nseg; j++) {
        struct lg_seg_view sv;
        lg_plan_seg(tr->plan, i, j, &sv);
        const struct lg_ad_state *a = &tr->ad[sv.adapter];
        if (!a->done && (int64_t)sv.batch != a->stepped_batches)
            return 0;
    }
    return 1;
}

/* Checks before the epoch, with the counts alone, that the 1F1B loop below never finds a forward held for a
 * step that only a later microbatch can complete: such a plan would deadlock. Every stage runs the same check
 * on the same plan, so all refuse it together. */
static enum lg_status dry_run(struct lg_trainer *tr, const size_t *order, size_t n)
{
    size_t *stepped = calloc((size_t)tr->nad, sizeof *stepped);
    int64_t **left = calloc((size_t)tr->nad, sizeof *left);
    enum lg_status s = stepped && left ? LG_OK : lg_fail(LG_ERR_OOM, "trainer: out of memory");
    for (int a = 0; s == LG_OK && a < tr->nad; a++) { /* from where the epoch stands (resumed: mid-epoch) */
        stepped[a] = (size_t)tr->ad[a].stepped_batches;
        if (!(left[a] = calloc(tr->ad[a].nbatches + 1, sizeof **left)))
            s = lg_fail(LG_ERR_OOM, "trainer: out of memory");
        else
            memcpy(left[a], tr->ad[a].batch_left, tr->ad[a].nbatches * sizeof **left);
    }
    for (size_t k = 0; s == LG_OK && k < n; k++) { /* backward k completes; forward k needs its steps */
        struct lg_mb_view v;
        lg_plan_mb(tr->plan, order[k], &v);
        for (size_t j = 0; j < v.nseg && s == LG_OK; j++) {
            struct lg_seg_view sv;
            lg_plan_seg(tr->plan, order[k], j, &sv);
            if (sv.batch != stepped[sv.adapter])
                s = lg_fail(LG_ERR_INVALID, "plan: epoch %d: microbatch %zu runs batch %zu of adapter '%s' before "
                            "batch %zu has all its microbatches: no stage could run it before that batch's optimizer "
                            "step, so the pipeline would deadlock", tr->epoch + 1, order[k], sv.batch,
                            tr->ad[sv.adapter].cfg->name, stepped[sv.adapter]);
        }
        for (size_t j = 0; j < v.nseg && s == LG_OK; j++) {
            struct lg_seg_view sv;
            lg_plan_seg(tr->plan, order[k], j, &sv);
            if ((left[sv.adapter][sv.batch] -= (int64_t)sv.nsamples) == 0)
                stepped[sv.adapter]++;
        }
    }
    for (int a = 0; left && a < tr->nad; a++)
        free(left[a]);
    free(left);
    free(stepped);
    return s;
}

struct pp_run {
    size_t *order, n;
    int S, s, limit;
    size_t bytes;          /* one boundary array at the capacity */
    unsigned char **saved; /* [limit] the stage input of each microbatch in flight (stages > 0) */
    unsigned char *out, *grad;
    unsigned char *empty;  /* [n] microbatch k had nothing to run (its adapters are done) */
    long arena;            /* order index whose forward is in the decoder's arena; -1: none */
    double busy;           /* seconds in the stage's forwards and backwards (recomputations included) */
};

static enum lg_status fill(struct lg_trainer *tr, struct pp_run *p, size_t k, struct lg_mb *mb,
                           struct lg_decoder_batch *b)
{
    int empty;
    enum lg_status s = lg_train_fill_mb(tr, p->order[k], mb, &empty);
    if (s != LG_OK)
        return s;
    p->empty[k] = (unsigned char)empty;
    *b = (struct lg_decoder_batch){.mb = mb, .ids = tr->ids, .target = tr->target, .weight = tr->weight,
                                   .loss = tr->loss};
    return LG_OK;
}

static enum lg_status forward(struct lg_trainer *tr, struct pp_run *p, size_t k)
{
    struct lg_mb mb;
    struct lg_decoder_batch b;
    enum lg_status s = fill(tr, p, k, &mb, &b);
    if (s != LG_OK || p->empty[k])
        return s;
    size_t bytes = lg_decoder_boundary_bytes(tr->dec, mb.n), got = 0;
    unsigned char *in = p->s > 0 ? p->saved[k % (size_t)p->limit] : NULL;
    if (in && (s = lg_comm_recv_host(tr->comm, tr->rank - 1, in, p->bytes, &got)) == LG_OK && got != bytes)
        s = lg_fail(LG_ERR_INTERNAL, "pipeline: stage %d got %zu bytes of activations for microbatch %zu, expected "
                    "%zu", p->s, got, p->order[k], bytes);
    double t = lg_train_now();
    if (s == LG_OK)
        s = lg_decoder_stage_forward(tr->dec, &b, in, p->s + 1 < p->S ? p->out : NULL);
    p->busy += lg_train_now() - t;
    if (s == LG_OK && p->s + 1 < p->S)
        s = lg_comm_send_host(tr->comm, tr->rank + 1, p->out, bytes);
    if (s != LG_OK)
        return lg_fail_wrap(s, "epoch %d, microbatch %zu, stage %d forward: ", tr->epoch + 1, p->order[k], p->s);
    p->arena = (long)k;
    if (p->s == 0) /* counted once for the pipeline */
        tr->tokens += mb.n;
    if (p->s + 1 < p->S)
        return LG_OK;
    for (int j = 0; j < mb.nseg; j++) /* the last stage has the loss */
        if (mb.seg[j].adapter >= 0)
            for (int64_t t = mb.seg[j].start; t < mb.seg[j].start + mb.seg[j].len; t++)
                tr->ad[mb.seg[j].adapter].batch_loss += tr->loss[t];
    return LG_OK;
}

/* Adapter a's batch on this stage is complete everywhere: with data parallel, its gradients are summed over the
 * stage's data-parallel group (ranks d x S + s) first; then the squared norm (counted once per stage) and the
 * loss are summed over every rank. */
static enum lg_status reduce(struct lg_trainer *tr, struct lg_ad_state *a)
{
    /* the squared norm, the loss, a stop wanted, and each pipeline's stage-0 forwards (a drain's target) */
    size_t nv = 3 + (size_t)tr->dp;
    double *v = calloc(nv, sizeof *v);
    size_t n = 0, at = 0;
    for (int i = 0; i < 2 * a->nt; i++)
        n += (size_t)a->opt[i].n;
    float *g = malloc((n + 1) * sizeof *g);
    int *group = calloc((size_t)tr->dp, sizeof *group);
    enum lg_status s = g && group && v ? tr->be->ops->sync(tr->be) : lg_fail(LG_ERR_OOM, "trainer: out of memory");
    if (v) {
        v[1] = a->batch_loss;
        v[2] = lg_train_stop_wanted(tr);
        v[3 + tr->dp_rank] = tr->stage == 0 ? (double)tr->pp_fwd : 0;
    }
    for (int i = 0; s == LG_OK && i < 2 * a->nt; at += (size_t)a->opt[i].n, i++)
        s = tr->be->ops->download(tr->be, g + at, a->opt[i].g, (size_t)a->opt[i].n * sizeof *g);
    if (s == LG_OK && tr->dp > 1) {
        for (int d = 0; d < tr->dp; d++)
            group[d] = d * tr->stages + tr->stage;
        s = lg_comm_allreduce_group_host_f32(tr->comm, group, tr->dp, g, n);
        at = 0;
        for (int i = 0; s == LG_OK && i < 2 * a->nt; at += (size_t)a->opt[i].n, i++)
            s = tr->be->ops->upload(tr->be, a->opt[i].g, g + at, (size_t)a->opt[i].n * sizeof *g);
    }
    for (size_t e = 0; s == LG_OK && e < n; e++)
        v[0] += (double)g[e] * g[e];
    free(g);
    free(group);
    tr->pp_local_norm = sqrt(v[0]);
    if (tr->dp_rank != 0) /* the stage's sum is the same on every member of its group: count it once */
        v[0] = 0;
    if (s == LG_OK)
        s = lg_comm_allreduce_host_f64(tr->comm, v, nv);
    if (s != LG_OK) {
        free(v);
        return lg_fail_wrap(s, "pipeline: reducing adapter '%s' batch %lld: ", a->cfg->name,
                            (long long)a->stepped_batches + 1);
    }
    a->batch_loss = v[1];
    tr->stop_all |= v[2] > 0; /* a rank was asked to stop: all stop after this step, at the same place */
    tr->pp_norm = sqrt(v[0]);
    tr->pp_fill = (size_t)v[3 + tr->dp_rank];
    free(v);
    return LG_OK;
}

/* lg_ad_step with the whole model's gradient norm: the backend clips by the norm it sees, so the stage's
 * limit is scaled to give the global clip factor min(1, clip / norm). */
enum lg_status lg_pp_step(struct lg_trainer *tr, struct lg_ad_state *a, double *lr, double *norm, int *skipped)
{
    const struct lg_train_adapter *c = a->cfg;
    *lr = lg_ad_lr(a, a->step);
    *norm = tr->pp_norm;
    *skipped = !isfinite(tr->pp_norm);
    if (*skipped)
        return lg_ad_zero_grads(tr, a);
    float clip = 0; /* 0: off */
    if (c->grad_clip > 0 && tr->pp_norm > c->grad_clip && tr->pp_local_norm > 0)
        clip = (float)(c->grad_clip * tr->pp_local_norm / tr->pp_norm);
    struct lg_opt_step st = {.lr = (float)*lr, .beta1 = (float)c->beta1, .beta2 = (float)c->beta2,
                             .eps = (float)c->eps, .weight_decay = (float)c->weight_decay, .step = a->step + 1,
                             .max_norm = clip};
    double own = 0;
    int own_skip = 0;
    enum lg_status s = tr->be->ops->adamw(tr->be, a->opt, 2 * a->nt, &st, &own_skip, &own);
    if (s == LG_OK && !own_skip && !a->opt[0].half)
        s = lg_decoder_lora_sync(tr->dec, a->index);
    if (s == LG_OK)
        s = lg_ad_zero_grads(tr, a);
    return s;
}

static enum lg_status backward(struct lg_trainer *tr, struct pp_run *p, size_t k, lg_pp_done_fn done)
{
    if (p->empty[k])
        return LG_OK;
    struct lg_mb mb;
    struct lg_decoder_batch b;
    enum lg_status s = fill(tr, p, k, &mb, &b);
    unsigned char *in = p->s > 0 ? p->saved[k % (size_t)p->limit] : NULL;
    double t = lg_train_now();
    if (s == LG_OK && p->arena != (long)k) /* the arena holds a later forward: run this one's again */
        s = lg_decoder_stage_forward(tr->dec, &b, in, NULL);
    p->busy += lg_train_now() - t;
    p->arena = (long)k;
    size_t bytes = lg_decoder_boundary_bytes(tr->dec, mb.n), got = 0;
    if (s == LG_OK && p->s + 1 < p->S && (s = lg_comm_recv_host(tr->comm, tr->rank + 1, p->grad, p->bytes, &got)) ==
                                             LG_OK && got != bytes)
        s = lg_fail(LG_ERR_INTERNAL, "pipeline: stage %d got %zu bytes of gradient for microbatch %zu, expected %zu",
                    p->s, got, p->order[k], bytes);
    t = lg_train_now();
    if (s == LG_OK)
        s = lg_decoder_stage_backward(tr->dec, &b, p->s + 1 < p->S ? p->grad : NULL, p->s > 0 ? p->out : NULL);
    p->busy += lg_train_now() - t;
    if (s == LG_OK && p->s > 0)
        s = lg_comm_send_host(tr->comm, tr->rank - 1, p->out, bytes);
    if (s != LG_OK)
        return lg_fail_wrap(s, "epoch %d, microbatch %zu, stage %d backward: ", tr->epoch + 1, p->order[k], p->s);
    struct lg_mb_view v;
    lg_plan_mb(tr->plan, p->order[k], &v);
    for (size_t j = 0; j < v.nseg && s == LG_OK; j++) {
        struct lg_seg_view sv;
        lg_plan_seg(tr->plan, p->order[k], j, &sv);
        struct lg_ad_state *a = &tr->ad[sv.adapter];
        if (a->done || tr->dp > 1) /* data parallel: the steps come from the shared schedule (lg_pp_epoch) */
            continue;
        if ((a->batch_left[sv.batch] -= (int64_t)sv.nsamples) == 0 && (s = reduce(tr, a)) == LG_OK)
            s = done(tr, a);
    }
    return s;
}

/* Per stage: busy time and the epoch's wall time, gathered on rank 0, and the measured bubble
 * 1 - sum(busy) / (S x the longest wall time) beside the simulator's prediction for the same plan (its cost
 * model's time units; it models no recomputation of forwards, which this runtime counts as busy). */
static enum lg_status report_stages(struct lg_trainer *tr, double busy, double wall)
{
    int W = tr->world;
    double *v = calloc(2 * (size_t)W, sizeof *v);
    if (!v)
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    v[2 * tr->rank] = busy;
    v[2 * tr->rank + 1] = wall;
    enum lg_status s = lg_comm_allreduce_host_f64(tr->comm, v, 2 * (size_t)W);
    if (s == LG_OK && tr->rank == 0) {
        double sum = 0, span = 0;
        char line[1024];
        int at = 0;
        for (int i = 0; i < W; i++) {
            sum += v[2 * i];
            span = v[2 * i + 1] > span ? v[2 * i + 1] : span;
            if (at < (int)sizeof line - 100)
                at += snprintf(line + at, sizeof line - (size_t)at, "%s stage %d busy %.2f s of %.2f s",
                               i ? ";" : "", i % tr->stages, v[2 * i], v[2 * i + 1]);
            if (tr->dp > 1 && at < (int)sizeof line - 40) /* which pipeline */
                at += snprintf(line + at, sizeof line - (size_t)at, " (data-parallel rank %d)", i / tr->stages);
        }
        lg_sim_t *sim = NULL;
        struct lg_sim_stats st = {0};
        double predicted = -1;
        if (lg_sim_run(tr->job, tr->plan, NULL, &sim) == LG_OK) {
            lg_sim_get_stats(sim, &st);
            predicted = st.bubble;
        }
        lg_sim_free(sim);
        lg_clear_error();
        lg_report_info(tr, "pipeline, epoch %d: measured bubble %.1f%% (simulator: %.1f%% for this plan);%s",
                       tr->epoch + 1, span > 0 ? 100 * (1 - sum / (W * span)) : 0.0,
                       predicted >= 0 ? 100 * predicted : -1.0, line);
    }
    free(v);
    return s;
}

static enum lg_status dp_step(struct lg_trainer *tr, const struct lg_dp_step *st, lg_pp_done_fn done)
{
    struct lg_ad_state *a = &tr->ad[st->adapter];
    if (a->done) /* alike on every rank: the steps before this one were the same everywhere */
        return LG_OK;
    if ((int64_t)st->batch != a->stepped_batches)
        return lg_fail(LG_ERR_INTERNAL, "pipeline: adapter '%s' steps batch %zu after %lld steps", a->cfg->name,
                       st->batch, (long long)a->stepped_batches);
    enum lg_status s = reduce(tr, a);
    return s == LG_OK ? done(tr, a) : s;
}

static int by_pos(const void *x, const void *y, void *plan)
{
    struct lg_mb_view a, b;
    lg_plan_mb(plan, *(const size_t *)x, &a);
    lg_plan_mb(plan, *(const size_t *)y, &b);
    return a.pos < b.pos ? -1 : a.pos > b.pos;
}

enum lg_status lg_pp_check(struct lg_trainer *tr)
{
    size_t n = lg_plan_mb_count(tr->plan);
    size_t *order = malloc((n + 1) * sizeof *order);
    if (!order)
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, n, sizeof *order, by_pos, tr->plan);
    enum lg_status s = dry_run(tr, order, n);
    free(order);
    return s;
}

enum lg_status lg_pp_epoch(struct lg_trainer *tr, lg_pp_done_fn done)
{
    struct pp_run p = {.S = tr->stages, .s = tr->stage, .arena = -1};
    p.limit = p.S - p.s;
    p.n = lg_plan_mb_count(tr->plan);
    p.bytes = lg_decoder_boundary_bytes(tr->dec, tr->capacity);
    p.order = malloc((p.n + 1) * sizeof *p.order);
    p.empty = calloc(p.n + 1, 1);
    p.saved = calloc((size_t)p.limit, sizeof *p.saved);
    p.out = malloc(p.bytes);
    p.grad = malloc(p.bytes);
    enum lg_status s = p.order && p.empty && p.saved && p.out && p.grad ? LG_OK
                                                                       : lg_fail(LG_ERR_OOM, "trainer: out of memory");
    for (int i = 0; s == LG_OK && p.s > 0 && i < p.limit; i++)
        if (!(p.saved[i] = malloc(p.bytes)))
            s = lg_fail(LG_ERR_OOM, "trainer: out of memory for the pipeline's saved inputs");
    for (size_t i = 0; i < p.n; i++)
        p.order[i] = i;
    const struct lg_dp_sched *ds = &tr->dps;
    if (s == LG_OK && tr->dp > 1) { /* this pipeline's microbatches, and the steps' places shared by all */
        if ((s = lg_dp_build(tr)) == LG_OK) {
            p.n = ds->norder;
            memcpy(p.order, ds->order, p.n * sizeof *p.order);
        }
    } else if (s == LG_OK) {
        qsort_r(p.order, p.n, sizeof *p.order, by_pos, tr->plan);
        s = tr->mb_index <= p.n ? dry_run(tr, p.order + tr->mb_index, p.n - tr->mb_index) : LG_OK;
    }
    if (s == LG_OK && tr->dp > 1 && (tr->dps.next = tr->dp_next_resume) > ds->nsteps)
        s = lg_fail(LG_ERR_IO, "--resume: the checkpoint's next all-reduce is %zu of %zu in epoch %d", tr->dps.next,
                    ds->nsteps, tr->epoch + 1);
    tr->dp_next_resume = 0;
    /* resumed: the pipeline was empty at the checkpoint, at position mb_index of the order */
    size_t f = tr->mb_index, b = tr->mb_index, drain = SIZE_MAX;
    if (s == LG_OK && b > p.n)
        s = lg_fail(LG_ERR_IO, "--resume: the checkpoint's position %zu is past the %zu microbatches of epoch %d", b,
                    p.n, tr->epoch + 1);
    tr->pp_fwd = f;
    double t0 = lg_train_now();
    for (;;) {
        while (s == LG_OK && drain == SIZE_MAX && tr->dp > 1 && tr->dps.next < ds->nsteps &&
               ds->steps[tr->dps.next].at <= b)
            s = dp_step(tr, &ds->steps[tr->dps.next++], done);
        /* A checkpoint (due, or a stop asked), agreed at a step: the stages drain to the forwards stage 0 had
         * run then, so no activation is in flight; with data parallel, no further all-reduce before it. */
        if (s == LG_OK && drain == SIZE_MAX && (tr->ckpt_due || tr->stop_all))
            drain = tr->pp_fill;
        if (s == LG_OK && b == drain) {
            tr->ckpt_due = 0;
            tr->mb_index = b;
            drain = SIZE_MAX;
            if ((s = lg_ckpt_write(tr)) != LG_OK || tr->stop_all)
                break;
            continue;
        }
        if (s != LG_OK || b == p.n)
            break;
        if (f < p.n && f < drain && f - b < (size_t)p.limit && allowed(tr, p.order[f])) {
            s = forward(tr, &p, f++);
            tr->pp_fwd = f;
        } else if (b < f) {
            s = backward(tr, &p, b++, done);
        } else {
            s = lg_fail(LG_ERR_INTERNAL, "pipeline: stage %d: microbatch %zu waits for a step nothing can complete",
                        p.s, p.order[f]);
        }
    }
    tr->mb_index = b;
    if (s == LG_OK && !tr->stop_all)
        s = report_stages(tr, p.busy, lg_train_now() - t0);
    for (int i = 0; p.saved && i < p.limit; i++)
        free(p.saved[i]);
    free(p.saved);
    free(p.order);
    free(p.empty);
    free(p.out);
    free(p.grad);
    return s;
}

/* ---- the adapters, gathered on rank 0 ---- */

struct pack_head {
    int32_t layer, mod, rank, pad;
    int64_t in, out;
};

/* This stage's tensors of adapter a: per tensor a header, then A and B (fp32). */
static enum lg_status pack(struct lg_trainer *tr, struct lg_ad_state *a, unsigned char **out, size_t *bytes)
{
    size_t n = 0;
    for (int i = 0; i < a->nt; i++)
        n += sizeof(struct pack_head) + (size_t)(a->t[i].p.rank * (a->t[i].p.in + a->t[i].p.out)) * sizeof(float);
    unsigned char *b = malloc(n + 1), *at = b;
    if (!b)
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    enum lg_status s = LG_OK;
    for (int i = 0; s == LG_OK && i < a->nt; i++) {
        const struct lg_lora_params *p = &a->t[i].p;
        struct pack_head h = {a->t[i].layer, (int32_t)a->t[i].mod, p->rank, 0, p->in, p->out};
        memcpy(at, &h, sizeof h);
        at += sizeof h;
        size_t na = (size_t)(p->rank * p->in) * sizeof(float), nb = (size_t)(p->rank * p->out) * sizeof(float);
        s = tr->be->ops->download(tr->be, at, p->a, na);
        if (s == LG_OK)
            s = tr->be->ops->download(tr->be, at + na, p->b, nb);
        at += na + nb;
    }
    if (s != LG_OK) {
        free(b);
        return s;
    }
    *out = b;
    *bytes = n;
    return LG_OK;
}

static enum lg_status write_packs(struct lg_trainer *tr, struct lg_ad_state *a, unsigned char **packs,
                                  const size_t *sizes, int n, const char *dir)
{
    struct lg_peft_config pc;
    memset(&pc, 0, sizeof pc);
    pc.r = a->cfg->rank;
    pc.lora_alpha = a->cfg->alpha;
    pc.lora_dropout = a->cfg->dropout;
    pc.target_modules = a->cfg->targets;
    snprintf(pc.base_model_name_or_path, sizeof pc.base_model_name_or_path, "%s", tr->tc.model_dir);
    enum lg_status s = lg_peft_config_write(dir, &pc);
    size_t cap = 2 * (size_t)tr->mc.num_hidden_layers * LG_PEFT_MODULE_COUNT, k = 0;
    struct lg_st_write_tensor *w = calloc(cap + 1, sizeof *w);
    char (*names)[LG_PEFT_NAME_MAX] = calloc(cap + 1, sizeof *names);
    if (s == LG_OK && (!w || !names))
        s = lg_fail(LG_ERR_OOM, "trainer: out of memory");
    for (int r = 0; s == LG_OK && r < n; r++)
        for (size_t at = 0; s == LG_OK && at < sizes[r];) {
            struct pack_head h;
            memcpy(&h, packs[r] + at, sizeof h);
            at += sizeof h;
            for (int ab = 0; s == LG_OK && ab < 2; ab++) {
                int64_t rows = ab ? h.out : h.rank, cols = ab ? h.rank : h.in;
                if (k == cap)
                    s = lg_fail(LG_ERR_INTERNAL, "pipeline: more adapter tensors than the model has");
                if (s == LG_OK)
                    s = lg_peft_tensor_name(h.layer, lg_peft_module_name((enum lg_peft_module)h.mod), ab ? 'B' : 'A',
                                            names[k], sizeof names[k]);
                w[k] = (struct lg_st_write_tensor){.name = names[k], .dtype = LG_ST_F32, .ndim = 2,
                                                   .shape = {rows, cols}, .data = packs[r] + at};
                at += (size_t)(rows * cols) * sizeof(float);
                k++;
            }
        }
    char path[1200];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (s == LG_OK)
        s = lg_st_write(path, w, k, NULL);
    free(w);
    free(names);
    return s;
}

enum lg_status lg_pp_write_peft(struct lg_trainer *tr, struct lg_ad_state *a, const char *dir)
{
    unsigned char *mine = NULL;
    size_t bytes = 0;
    enum lg_status s = pack(tr, a, &mine, &bytes);
    if (s != LG_OK)
        return s;
    if (tr->dp_rank != 0) { /* the other pipelines hold the same adapters */
        free(mine);
        return LG_OK;
    }
    if (tr->rank != 0) {
        uint64_t n = bytes;
        s = lg_comm_send_host(tr->comm, 0, &n, sizeof n);
        if (s == LG_OK)
            s = lg_comm_send_host(tr->comm, 0, mine, bytes);
        free(mine);
        return s;
    }
    unsigned char **packs = calloc((size_t)tr->stages, sizeof *packs);
    size_t *sizes = calloc((size_t)tr->stages, sizeof *sizes);
    if (!packs || !sizes) {
        free(mine);
        free(packs);
        free(sizes);
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    }
    packs[0] = mine;
    sizes[0] = bytes;
    for (int r = 1; s == LG_OK && r < tr->stages; r++) {
        uint64_t n = 0;
        size_t got = 0;
        s = lg_comm_recv_host(tr->comm, r, &n, sizeof n, &got);
        if (s == LG_OK && !(packs[r] = malloc((size_t)n + 1)))
            s = lg_fail(LG_ERR_OOM, "trainer: out of memory");
        if (s == LG_OK)
            s = lg_comm_recv_host(tr->comm, r, packs[r], (size_t)n, &sizes[r]);
    }
    if (s == LG_OK)
        s = write_packs(tr, a, packs, sizes, tr->stages, dir);
    for (int r = 0; r < tr->stages; r++)
        free(packs[r]);
    free(packs);
    free(sizes);
    return s;
}

/* One validation microbatch through the pipeline, forward only (no dropout), with the training drained: every
 * rank of every pipeline calls it for the same samples; the last stage has the losses. */
enum lg_status lg_pp_eval_mb(struct lg_trainer *tr, const struct lg_decoder_batch *b)
{
    size_t bytes = lg_decoder_boundary_bytes(tr->dec, b->mb->n), got = 0;
    unsigned char *in = tr->stage > 0 ? malloc(bytes + 1) : NULL, *out = tr->stage + 1 < tr->stages ? malloc(bytes + 1)
                                                                                                   : NULL;
    enum lg_status s = (tr->stage > 0 && !in) || (tr->stage + 1 < tr->stages && !out)
                           ? lg_fail(LG_ERR_OOM, "trainer: out of memory")
                           : LG_OK;
    if (s == LG_OK && in && (s = lg_comm_recv_host(tr->comm, tr->rank - 1, in, bytes, &got)) == LG_OK &&
        got != bytes)
        s = lg_fail(LG_ERR_INTERNAL, "pipeline: validation: stage %d got %zu bytes, expected %zu", tr->stage, got,
                    bytes);
    if (s == LG_OK)
        s = lg_decoder_stage_forward(tr->dec, b, in, out);
    if (s == LG_OK && out)
        s = lg_comm_send_host(tr->comm, tr->rank + 1, out, bytes);
    free(in);
    free(out);
    return s;
}
