/* train_run.c: lg_train_run, the run as a whole: set up, initialise or resume the adapters, then epochs of
 * microbatches until every adapter has its steps, with the optimizer steps, validation, checkpoints and the
 * final PEFT outputs at their points. */
#include "lg_ckpt.h"
#include "train_internal.h"

#include <unistd.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int64_t total_steps(const struct lg_trainer *tr)
{
    int64_t s = 0;
    for (int i = 0; i < tr->nad; i++)
        s += tr->ad[i].step;
    return s;
}

/* Each adapter's step count: steps, or epochs × its global batches per epoch; capped by --max-steps. */
static enum lg_status count_steps(struct lg_trainer *tr)
{
    for (int k = 0; k < tr->nad; k++) {
        struct lg_ad_state *a = &tr->ad[k];
        struct lg_adapter_info info;
        enum lg_status s = lg_job_adapter(tr->job, k, &info);
        if (s != LG_OK)
            return s;
        a->steps = a->cfg->steps > 0 ? a->cfg->steps : (int64_t)a->cfg->epochs * (int64_t)info.batches;
        if (tr->opts->max_steps > 0 && a->steps > tr->opts->max_steps)
            a->steps = tr->opts->max_steps;
        if (a->steps < 1)
            return lg_fail(LG_ERR_INVALID, "%s:%d: adapter '%s' has no optimizer step to run", tr->tc.path,
                           a->cfg->line, a->cfg->name);
    }
    return LG_OK;
}

static enum lg_status validate(struct lg_trainer *tr, struct lg_ad_state *a)
{
    /* rank 0 validates for all; a pipeline needs every rank, and validates only at the end */
    if (!a->val || (tr->stages == 1 && tr->rank != 0) || (tr->stages > 1 && !tr->pp_drained))
        return LG_OK;
    double loss;
    int64_t tokens;
    enum lg_status s = lg_eval_tokens(tr, a->index, a->val, &loss, &tokens);
    if (s != LG_OK)
        return lg_fail_wrap(s, "validation of adapter '%s': ", a->cfg->name);
    struct lg_point p = {.step = a->step, .loss = loss};
    return lg_report_point(tr, a, &p, 1);
}

/* The optimizer step of adapter a after its global batch completed, and what follows it. A batch whose loss
 * or gradient is not finite (NaN or inf) does not step: the adapter keeps its weights and moments, the batch's
 * gradients are dropped, and the skip is reported; LG_TRAIN_BAD_STEPS such batches in a row stop the run
 * with the adapter, step, epoch and microbatch. Each adapter is judged on its own batches. */
static enum lg_status after_batch(struct lg_trainer *tr, struct lg_ad_state *a)
{
    double lr = lg_ad_lr(a, a->step), norm = NAN, loss = a->batch_loss;
    int skipped = 0;
    const char *why;
    enum lg_status s;
    if (!isfinite(loss)) { /* its gradients are those of a NaN: no step on them */
        skipped = 1;
        why = "the loss is not finite";
        s = lg_ad_zero_grads(tr, a);
    } else {
        why = "a gradient is not finite";
        s = tr->stages > 1 ? lg_pp_step(tr, a, &lr, &norm, &skipped) : lg_ad_step(tr, a, &lr, &norm, &skipped);
    }
    if (s != LG_OK)
        return s;
    a->stepped_batches++;
    a->batch_loss = 0;
    if (skipped) {
        char msg[512];
        char ls[32];
        if (isnan(loss))
            snprintf(ls, sizeof ls, "nan"); /* not the "-nan" printf may give */
        else
            snprintf(ls, sizeof ls, "%g", loss);
        snprintf(msg, sizeof msg, "adapter '%s': step %lld skipped: %s (loss %s; epoch %d, microbatch %zu)",
                 a->cfg->name, (long long)a->step + 1, why, ls, tr->epoch + 1, tr->mb_index + 1);
        struct lg_train_progress p = {.event = LG_EV_SKIP, .adapter = a->index, .name = a->cfg->name,
                                      .step = a->step, .steps = a->steps, .loss = loss, .message = msg};
        lg_report(tr, &p);
        if (++a->skipped_in_a_row >= LG_TRAIN_BAD_STEPS)
            return lg_fail(LG_ERR_INVALID, "adapter '%s': %d steps in a row were skipped, the last (step %lld, "
                           "epoch %d, microbatch %zu) because %s; lower lr, check the data and the model's "
                           "weights", a->cfg->name, LG_TRAIN_BAD_STEPS, (long long)a->step + 1, tr->epoch + 1,
                           tr->mb_index + 1, why);
        return LG_OK;
    }
    a->skipped_in_a_row = 0;
    a->step++;
    struct lg_point pt = {.step = a->step, .loss = loss, .lr = lr, .grad_norm = norm};
    if ((s = lg_report_point(tr, a, &pt, 0)) != LG_OK)
        return s;
    if (a->step >= a->steps)
        a->done = 1;
    if (tr->tc.eval_every > 0 && a->step % tr->tc.eval_every == 0 && !a->done && (s = validate(tr, a)) != LG_OK)
        return s;
    /* Due, but written once the whole microbatch is done (run()): a checkpoint taken here would record this
     * microbatch as not yet run although its gradients are in it, and miss the steps of other adapters' batches
     * it completes after this one, so a resume would train on it twice. Over several processes it is written
     * after this step (data parallel: run_epoch_dp) or once the pipeline has drained (lg_pp_epoch). */
    int64_t every = (int64_t)tr->tc.checkpoint_every * tr->nad;
    if (every > 0 && total_steps(tr) - tr->ckpt_steps >= every)
        tr->ckpt_due = 1;
    return s;
}

/* Microbatch i: gather, forward + backward, losses, and (step_batches) the steps of the batches it completes;
 * data parallel, the steps come from the all-reduce schedule instead (run_epoch_dp). */
static enum lg_status run_mb(struct lg_trainer *tr, size_t i, int step_batches)
{
    struct lg_mb mb;
    int empty;
    enum lg_status s = lg_train_fill_mb(tr, i, &mb, &empty);
    if (s != LG_OK || empty)
        return s;
    if ((s = lg_train_step_mb(tr, &mb)) != LG_OK) /* its losses come back with the next step's wait */
        return lg_fail_wrap(s, "epoch %d, microbatch %zu: ", tr->epoch + 1, i);
    tr->tokens += mb.n;
    if (!step_batches)
        return LG_OK;
    struct lg_mb_view v;
    lg_plan_mb(tr->plan, i, &v);
    for (size_t j = 0; j < v.nseg && s == LG_OK; j++) {
        struct lg_seg_view sv;
        lg_plan_seg(tr->plan, i, j, &sv);
        struct lg_ad_state *a = &tr->ad[sv.adapter];
        if (a->done)
            continue;
        a->batch_left[sv.batch] -= (int64_t)sv.nsamples;
        if (a->batch_left[sv.batch] == 0 && (s = lg_train_resolve_losses(tr)) == LG_OK)
            s = after_batch(tr, a);
    }
    return s;
}

static int all_done(const struct lg_trainer *tr)
{
    for (int i = 0; i < tr->nad; i++)
        if (!tr->ad[i].done)
            return 0;
    return 1;
}

static enum lg_status finish(struct lg_trainer *tr, struct lg_train_result *r)
{
    enum lg_status s = lg_train_resolve_losses(tr);
    if (tr->world > 1) { /* every rank's tokens, for rank 0's summary */
        double t = (double)tr->tokens;
        if ((s = lg_comm_allreduce_host_f64(tr->comm, &t, 1)) != LG_OK)
            return s;
        tr->tokens = (int64_t)t;
    }
    for (int i = 0; s == LG_OK && i < tr->nad; i++) {
        struct lg_ad_state *a = &tr->ad[i];
        if (tr->stages > 1) { /* all ranks validate through the pipeline; rank 0 writes what every stage holds */
            tr->pp_drained = 1;
            if ((s = validate(tr, a)) == LG_OK)
                s = lg_pp_write_peft(tr, a, a->out_dir);
        } else if (tr->rank == 0 && (s = validate(tr, a)) == LG_OK)
            s = lg_ad_write_peft(tr, a, a->out_dir);
        if (tr->rank != 0)
            continue;
        if (s == LG_OK)
            s = lg_report_write(tr, a);
        struct lg_train_progress p = {.event = LG_EV_DONE, .adapter = i, .name = a->cfg->name, .step = a->step,
                                      .steps = a->steps, .message = a->out_dir};
        if (s == LG_OK)
            lg_report(tr, &p);
    }
    if (s == LG_OK) /* every rank its shard */
        s = lg_ckpt_write(tr);
    struct lg_ad_state *a0 = &tr->ad[0];
    r->first_loss = a0->nhist ? a0->hist[0].loss : NAN;
    r->last_loss = a0->nhist ? a0->hist[a0->nhist - 1].loss : NAN;
    r->val_loss = a0->nvhist ? a0->vhist[a0->nvhist - 1].loss : NAN;
    return s;
}

/* A run without --resume replaces an earlier run's checkpoints and metrics in the same output directories. */
static enum lg_status start_afresh(struct lg_trainer *tr)
{
    if (tr->rank != 0)
        return LG_OK;
    char root[1100];
    snprintf(root, sizeof root, "%s/checkpoints", tr->out_root);
    int removed = 0;
    enum lg_status s = lg_ckpt_clear(root, &removed);
    if (s == LG_OK && removed)
        lg_report_info(tr, "%s: removed %d checkpoint(s) of an earlier run (--resume continues one instead)", root,
                       removed);
    for (int i = 0; i < tr->nad; i++) {
        char m[1100];
        snprintf(m, sizeof m, "%s/metrics.jsonl", tr->ad[i].out_dir);
        unlink(m);
    }
    return s;
}

double lg_train_stop_wanted(const struct lg_trainer *tr) { return tr->opts->stop && *tr->opts->stop ? 1 : 0; }

/* The all-reduce of one adapter's batch and its optimizer step, identical on every rank. */
static enum lg_status dp_step(struct lg_trainer *tr, const struct lg_dp_step *st)
{
    struct lg_ad_state *a = &tr->ad[st->adapter];
    if (a->done) /* done on every rank alike: the steps before this one were the same everywhere */
        return LG_OK;
    if ((int64_t)st->batch != a->stepped_batches)
        return lg_fail(LG_ERR_INTERNAL, "data parallel: adapter '%s' steps batch %zu after %lld steps", a->cfg->name,
                       st->batch, (long long)a->stepped_batches);
    enum lg_status s = lg_train_resolve_losses(tr); /* the batch's losses travel with its gradients */
    if (s == LG_OK)
        s = lg_dp_reduce(tr, a);
    return s == LG_OK ? after_batch(tr, a) : s;
}

/* One epoch on this data-parallel rank: its microbatches in their order, each adapter's all-reduce and step at
 * its place in the order all ranks share (train_dp.c). Checkpoints come right after the step that makes one
 * due, before anything else runs: every rank is then between the same two all-reduces (at its own position in
 * its order, with its own partial gradients, all saved in its shard). A stop asked of any rank travels with the
 * next step's all-reduce, so every rank stops after that same step, with a checkpoint. */
static enum lg_status run_epoch_dp(struct lg_trainer *tr, struct lg_train_result *r)
{
    struct lg_dp_sched *d = &tr->dps;
    enum lg_status s = lg_dp_build(tr);
    if (s == LG_OK && (d->next = tr->dp_next_resume) > d->nsteps)
        s = lg_fail(LG_ERR_IO, "--resume: the checkpoint's next all-reduce is %zu of %zu in epoch %d", d->next,
                    d->nsteps, tr->epoch + 1);
    tr->dp_next_resume = 0;
    for (;;) {
        while (s == LG_OK && d->next < d->nsteps && d->steps[d->next].at <= tr->mb_index) {
            s = dp_step(tr, &d->steps[d->next++]);
            if (s != LG_OK || (!tr->ckpt_due && !tr->stop_all)) /* both agreed, alike on every rank */
                continue;
            tr->ckpt_due = 0;
            if ((s = lg_ckpt_write(tr)) == LG_OK && tr->stop_all) {
                r->interrupted = 1;
                return LG_OK;
            }
        }
        if (s != LG_OK || all_done(tr) || tr->mb_index >= d->norder)
            return s;
        s = run_mb(tr, d->order[tr->mb_index], 0);
        tr->mb_index++;
    }
}

static enum lg_status run(struct lg_trainer *tr, struct lg_train_result *r)
{
    enum lg_status s = count_steps(tr);
    for (int i = 0; s == LG_OK && i < tr->nad; i++) {
        struct lg_ad_state *a = &tr->ad[i];
        s = a->cfg->init_adapter ? lg_ad_load_peft(tr, a, a->cfg->init_adapter) : lg_ad_init_weights(tr, a);
    }
    int resumed = 0;
    if (s == LG_OK && tr->opts->resume) {
        s = lg_ckpt_resume(tr);
        resumed = 1;
    } else if (s == LG_OK) {
        s = start_afresh(tr);
    }
    while (s == LG_OK && !all_done(tr)) {
        if (!resumed)
            s = lg_train_plan_epoch(tr);
        resumed = 0;
        size_t nmb = s == LG_OK && tr->world == 1 ? lg_plan_mb_count(tr->plan) : 0;
        if (s == LG_OK && tr->stages > 1 && (s = lg_pp_epoch(tr, after_batch)) != LG_OK)
            return s;
        if (s == LG_OK && tr->stop_all) {
            r->interrupted = 1;
            return LG_OK;
        }
        if (s == LG_OK && tr->world > 1 && tr->stages == 1 && ((s = run_epoch_dp(tr, r)) != LG_OK || r->interrupted))
            return s;
        while (s == LG_OK && tr->mb_index < nmb && !all_done(tr)) {
            if (tr->opts->stop && *tr->opts->stop) {
                r->interrupted = 1;
                return lg_ckpt_write(tr);
            }
            s = run_mb(tr, tr->mb_index, 1);
            tr->mb_index++; /* the position a checkpoint records: the next microbatch to run */
            if (s == LG_OK && tr->ckpt_due) {
                tr->ckpt_due = 0;
                s = lg_ckpt_write(tr);
            }
        }
        if (s == LG_OK && !all_done(tr)) {
            tr->epoch++;
            tr->mb_index = 0;
        }
    }
    return s == LG_OK ? finish(tr, r) : s;
}

/* --profile: the backend's time per op family, one info line per table row. */
static enum lg_status report_profile(struct lg_trainer *tr)
{
    if (!tr->opts->profile)
        return LG_OK;
    if (!tr->be->ops->profile) {
        lg_report_info(tr, "profile: the %s backend does not time its ops", tr->be->ops->name);
        return LG_OK;
    }
    char buf[4096];
    enum lg_status s = tr->be->ops->profile(tr->be, buf, sizeof buf);
    for (char *line = buf, *nl; s == LG_OK && *line; line = nl + 1) {
        if (!(nl = strchr(line, '\n')))
            nl = line + strlen(line) - 1;
        lg_report_info(tr, "profile: %.*s", (int)(nl - line + (*nl != '\n')), line);
    }
    return s;
}

enum lg_status lg_train_run(const struct lg_train_opts *o, struct lg_train_result *r)
{
    struct lg_train_result tmp;
    if (!r)
        r = &tmp;
    memset(r, 0, sizeof *r);
    if (!o || !o->job)
        return lg_fail(LG_ERR_INVALID, "lg_train_run: no job file");
    struct lg_trainer tr;
    memset(&tr, 0, sizeof tr);
    enum lg_status s = lg_train_setup(&tr, o, 0);
    if (s == LG_OK)
        s = run(&tr, r);
    if (s == LG_OK)
        s = report_profile(&tr);
    r->tokens = tr.tokens;
    r->seconds = tr.elapsed_before + (lg_train_now() - tr.t0);
    if (tr.t_last > tr.t_first && tr.tokens_last > tr.tokens_first) {
        r->steady_tokens = tr.tokens_last - tr.tokens_first;
        r->steady_seconds = tr.t_last - tr.t_first;
    }
    lg_train_teardown(&tr);
    return s;
}
