/* train_loop.c: executing the scheduler's plan. Per epoch the plan is built once; each microbatch gathers its
 * segments' samples (ids, shifted targets, and each position's share of its global batch's loss), runs
 * forward and backward, and adds each adapter's loss; when the last sample of an adapter's global batch has
 * run, that adapter's optimizer steps. The optimizer dependency is enforced here, whatever the plan says: a
 * segment of batch g + 1 never runs before batch g's step (sequential execution makes such a plan a deadlock,
 * reported before anything runs). */
#include "train_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* Loss tokens of sample i of adapter a once truncated to the scheduler's length (targets at t >= 1). */
static int64_t loss_tokens(const struct lg_trainer *tr, const struct lg_ad_state *a, size_t i)
{
    const int32_t *lb;
    int64_t n;
    lg_tokens_sample(a->train, i, NULL, &lb, &n);
    int64_t len = lg_job_sample_length(tr->job, a->index, i), c = 0;
    for (int64_t t = 1; t < len && t < n; t++)
        c += lb[t] != -100;
    return c;
}

/* Every microbatch shape of the plan made ready in the backend before the first step (cuDNN attention builds
 * an execution plan per shape bucket, which inside a step would stall it). */
static enum lg_status prepare_shapes(struct lg_trainer *tr)
{
    if (!tr->dec)
        return LG_OK;
    double t0 = lg_train_now();
    enum lg_status s = LG_OK;
    for (size_t i = 0; s == LG_OK && i < lg_plan_mb_count(tr->plan); i++) {
        struct lg_mb_view v;
        if ((s = lg_plan_mb(tr->plan, i, &v)) != LG_OK)
            break;
        struct lg_mb mb = {.n = 0, .nseq = 0, .max_len = 0};
        for (size_t j = 0; s == LG_OK && j < v.nseg; j++) {
            struct lg_seg_view sv;
            if ((s = lg_plan_seg(tr->plan, i, j, &sv)) != LG_OK)
                break;
            for (size_t k = 0; k < sv.nsamples; k++) {
                int32_t len = (int32_t)lg_job_sample_length(tr->job, sv.adapter, sv.samples[k]);
                mb.n += len;
                mb.nseq++;
                mb.max_len = len > mb.max_len ? len : mb.max_len;
            }
        }
        if (s == LG_OK && mb.n > 0)
            s = lg_decoder_prepare(tr->dec, &mb);
    }
    if (s != LG_OK)
        return lg_fail_wrap(s, "preparing epoch %d's microbatch shapes: ", tr->epoch + 1);
    double dt = lg_train_now() - t0;
    if (dt > 0.5)
        lg_report_info(tr, "epoch %d: the backend's plans for %zu microbatch shapes made in %.1f s", tr->epoch + 1,
                       lg_plan_mb_count(tr->plan), dt);
    return LG_OK;
}

/* The epoch's plan, and per adapter its batches' sample counts and loss weights. */
enum lg_status lg_train_plan_epoch(struct lg_trainer *tr)
{
    lg_plan_free(tr->plan);
    tr->plan = NULL;
    /* epoch 0 keeps the job's order (batching.seed; 0 = dataset order), every later epoch a fresh shuffle */
    uint64_t seed = tr->epoch == 0 ? tr->shuffle_base
                                   : mix64(tr->shuffle_base ^ (0x9e3779b97f4a7c15ull * (uint64_t)tr->epoch)) | 1u;
    enum lg_status s = lg_job_reshuffle(tr->job, seed);
    if (s != LG_OK)
        return s;
    struct lg_plan_params pp = lg_plan_params_default();
    s = lg_plan_build(tr->job, &pp, &tr->plan);
    if (s == LG_OK)
        s = lg_plan_verify(tr->job, tr->plan);
    if (s != LG_OK)
        return lg_fail_wrap(s, "planning epoch %d: ", tr->epoch + 1);
    for (int k = 0; k < tr->nad; k++) {
        struct lg_ad_state *a = &tr->ad[k];
        struct lg_adapter_info info;
        if ((s = lg_job_adapter(tr->job, k, &info)) != LG_OK)
            return s;
        free(a->batch_left);
        free(a->batch_weight);
        a->nbatches = info.batches;
        a->batch_left = calloc(info.batches + 1, sizeof *a->batch_left);
        a->batch_weight = calloc(info.batches + 1, sizeof *a->batch_weight);
        int64_t *tok = calloc(info.batches + 1, sizeof *tok);
        if (!a->batch_left || !a->batch_weight || !tok) {
            free(tok);
            return lg_fail(LG_ERR_OOM, "trainer: out of memory");
        }
        for (size_t i = 0; i < lg_job_dataset_size(tr->job, k); i++) {
            long g = lg_job_sample_batch(tr->job, k, i);
            if (g < 0)
                continue;
            a->batch_left[g]++;
            tok[g] += loss_tokens(tr, a, i);
        }
        for (size_t g = 0; g < info.batches; g++)
            a->batch_weight[g] = tok[g] ? 1.0 / (double)tok[g] : 0.0;
        free(tok);
        a->stepped_batches = 0;
        a->batch_loss = 0;
    }
    return prepare_shapes(tr);
}

/* Gathers microbatch i of the plan into the host buffers; *empty when every adapter in it is done. */
enum lg_status lg_train_fill_mb(struct lg_trainer *tr, size_t i, struct lg_mb *mb, int *empty)
{
    struct lg_mb_view v;
    enum lg_status s = lg_plan_mb(tr->plan, i, &v);
    if (s != LG_OK)
        return s;
    int64_t n = 0;
    int nseq = 0, nseg = 0;
    int32_t maxlen = 0;
    for (size_t j = 0; j < v.nseg; j++) {
        struct lg_seg_view sv;
        if ((s = lg_plan_seg(tr->plan, i, j, &sv)) != LG_OK)
            return s;
        struct lg_ad_state *a = &tr->ad[sv.adapter];
        if (a->done)
            continue;
        if ((int64_t)sv.batch != a->stepped_batches)
            return lg_fail(LG_ERR_INVALID, "plan: microbatch %zu runs batch %zu of adapter '%s' before batch %lld's "
                           "optimizer step: executed in order this plan would deadlock", i, sv.batch,
                           a->cfg->name, (long long)a->stepped_batches);
        if (nseg == tr->maxseg)
            return lg_fail(LG_ERR_INTERNAL, "plan: microbatch %zu has more segments than adapters", i);
        int64_t start = n;
        double w = a->batch_weight[sv.batch];
        for (size_t k = 0; k < sv.nsamples; k++) {
            const int32_t *ids, *lb;
            int64_t sn;
            lg_tokens_sample(a->train, sv.samples[k], &ids, &lb, &sn);
            int64_t len = lg_job_sample_length(tr->job, sv.adapter, sv.samples[k]);
            if (n + len > (int64_t)tr->capacity)
                return lg_fail(LG_ERR_INTERNAL, "plan: microbatch %zu exceeds the capacity", i);
            tr->cu[nseq++] = (int32_t)n;
            for (int64_t t = 0; t < len; t++) {
                tr->ids[n + t] = ids[t];
                tr->target[n + t] = t + 1 < len ? lb[t + 1] : -100;
                tr->weight[n + t] = tr->target[n + t] != -100 ? (float)w : 0.0f;
            }
            n += len;
            if (len > maxlen)
                maxlen = (int32_t)len;
        }
        tr->seg[nseg++] = (struct lg_seg){.adapter = sv.adapter, .start = start, .len = n - start};
    }
    tr->cu[nseq] = (int32_t)n;
    *empty = n == 0;
    uint64_t seed = mix64(tr->ad[0].cfg->seed ^ mix64(((uint64_t)tr->epoch << 32) ^ (uint64_t)i));
    *mb = (struct lg_mb){.n = n, .nseq = nseq, .cu = tr->cu, .max_len = maxlen, .nseg = nseg, .seg = tr->seg,
                         .seed = seed, .train = 1};
    return LG_OK;
}

/* ---- losses read back once per step ---- */

#define LG_PEND_MAX 64 /* microbatches in flight before their losses are collected anyway */

enum lg_status lg_train_resolve_losses(struct lg_trainer *tr)
{
    if (!tr->npend)
        return LG_OK;
    enum lg_status s = tr->be->ops->sync(tr->be); /* delivers every asynchronous download */
    if (s != LG_OK)
        return s;
    for (int i = 0; i < tr->npend; i++) { /* in microbatch order, token order: the sums of a waiting run */
        const struct lg_pend_loss *p = &tr->pend[i];
        for (int k = 0; k < p->nseg; k++)
            for (int64_t t = p->seg[k].start; t < p->seg[k].start + p->seg[k].len; t++)
                tr->ad[p->seg[k].adapter].batch_loss += p->loss[t];
    }
    tr->npend = 0;
    return LG_OK;
}

enum lg_status lg_train_step_mb(struct lg_trainer *tr, const struct lg_mb *mb)
{
    enum lg_status s = tr->npend == LG_PEND_MAX ? lg_train_resolve_losses(tr) : LG_OK;
    if (s != LG_OK)
        return s;
    if (tr->npend == tr->maxpend) {
        int cap = tr->maxpend ? 2 * tr->maxpend : 4;
        struct lg_pend_loss *grown = realloc(tr->pend, (size_t)cap * sizeof *grown);
        if (!grown)
            return lg_fail(LG_ERR_OOM, "trainer: out of memory");
        tr->pend = grown;
        for (int i = tr->maxpend; i < cap; i++) {
            grown[i].loss = malloc((size_t)tr->capacity * sizeof *grown[i].loss);
            grown[i].seg = malloc((size_t)tr->maxseg * sizeof *grown[i].seg);
            grown[i].nseg = 0;
            if (!grown[i].loss || !grown[i].seg) {
                tr->maxpend = i + 1;
                return lg_fail(LG_ERR_OOM, "trainer: out of memory");
            }
        }
        tr->maxpend = cap;
    }
    struct lg_pend_loss *p = &tr->pend[tr->npend];
    p->nseg = mb->nseg;
    memcpy(p->seg, mb->seg, (size_t)mb->nseg * sizeof *p->seg);
    struct lg_decoder_batch b = {.mb = mb, .ids = tr->ids, .target = tr->target, .weight = tr->weight,
                                 .loss = p->loss, .no_wait = 1};
    if ((s = lg_decoder_step(tr->dec, &b, 1)) != LG_OK)
        return s;
    tr->npend++;
    return LG_OK;
}

void lg_train_free_pending(struct lg_trainer *tr)
{
    for (int i = 0; tr->pend && i < tr->maxpend; i++) {
        free(tr->pend[i].loss);
        free(tr->pend[i].seg);
    }
    free(tr->pend);
    tr->pend = NULL;
    tr->npend = tr->maxpend = 0;
}

/* ---- the plan's fingerprint ---- */

static uint64_t fnv(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ull; }

void lg_train_plan_fingerprint(const struct lg_trainer *tr, double out[LG_CKPT_PLAN_N])
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a over every microbatch's rank, position and samples */
    size_t n = lg_plan_mb_count(tr->plan);
    for (size_t i = 0; i < n; i++) {
        struct lg_mb_view v;
        if (lg_plan_mb(tr->plan, i, &v) != LG_OK)
            continue;
        h = fnv(fnv(fnv(h, (uint64_t)v.rank), v.pos), v.nseg);
        for (size_t j = 0; j < v.nseg; j++) {
            struct lg_seg_view sv;
            if (lg_plan_seg(tr->plan, i, j, &sv) != LG_OK)
                continue;
            h = fnv(fnv(fnv(h, (uint64_t)sv.adapter), sv.batch), sv.nsamples);
            for (size_t k = 0; k < sv.nsamples; k++)
                h = fnv(h, sv.samples[k]);
        }
    }
    out[0] = (double)tr->capacity;
    out[1] = (double)n;
    out[2] = (double)(h >> 32);
    out[3] = (double)(h & 0xffffffffu);
}
