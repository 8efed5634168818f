/* baseline.c: the two baselines the planner is measured against, built on the same data and
 * simulated by the same simulator.
 *   Megatron-style: fixed sample-count microbatches (no packing: each sample padded to the longest of its
 *   microbatch), one adapter after another, each global batch split evenly over the DP ranks. Consecutive
 *   batches of an adapter are adjacent, so every optimizer step flushes the pipeline.
 *   mLoRA-style: the same single-adapter microbatches, issued round-robin over the adapters; an adapter whose
 *   next batch may not start yet (its previous batch ended fewer than S positions ago) is skipped, and the
 *   pipeline waits only when no adapter may go. */
#include "sched_internal.h"
#include "lg_base.h"

#include <stdlib.h>

static uint32_t longest(const lg_job_t *job)
{
    uint32_t m = 0;
    for (int a = 0; a < job->nad; a++)
        m = job->ad[a].info.max_len > m ? job->ad[a].info.max_len : m;
    return m;
}

static enum lg_status per_mb(const lg_job_t *job, uint32_t cap, int k, int *out)
{
    uint32_t l = lg_sched_pad_up(longest(job), (uint32_t)job->p.pad_multiple);
    if (k <= 0)
        k = (int)(cap / l) > 0 ? (int)(cap / l) : 1;
    if ((uint64_t)k * l > cap)
        return lg_fail(LG_ERR_INVALID, "baseline: %d samples of up to %u tokens exceed capacity %u", k, l, cap);
    *out = k;
    return LG_OK;
}

/* The samples of batch g of adapter a that rank r gets: an even split in batch order. */
static void rank_share(const struct lg_adapter *ad, size_t g, int r, int D, size_t *lo, size_t *hi)
{
    size_t b0 = ad->batch_start[g], n = ad->batch_start[g + 1] - b0;
    *lo = b0 + n * (size_t)r / (size_t)D;
    *hi = b0 + n * (size_t)(r + 1) / (size_t)D;
}

enum lg_status lg_sched_plan_megatron(const lg_job_t *job, uint32_t cap, int samples_per_mb, lg_plan_t **out)
{
    int k = 1, D = job->p.data_parallel;
    enum lg_status s = per_mb(job, cap, samples_per_mb, &k);
    if (s != LG_OK)
        return s;
    struct lg_sched_builder b;
    if ((s = lg_sched_builder_init(&b, job, LG_PLAN_MEGATRON, D)) != LG_OK)
        return s;
    uint32_t *pos = calloc((size_t)D, sizeof *pos);
    if (!pos) {
        lg_sched_builder_abort(&b);
        return lg_fail(LG_ERR_OOM, "plan: out of memory");
    }
    for (int a = 0; a < job->nad && s == LG_OK; a++) {
        const struct lg_adapter *ad = &job->ad[a];
        for (size_t g = 0; g < ad->nbatches && s == LG_OK; g++)
            for (int r = 0; r < D && s == LG_OK; r++) {
                size_t lo, hi;
                rank_share(ad, g, r, D, &lo, &hi);
                for (size_t i = lo; i < hi && s == LG_OK; i++) {
                    lg_sched_builder_add(&b, a, (uint32_t)g, ad->order[i]);
                    if ((i - lo + 1) % (size_t)k == 0 || i + 1 == hi)
                        s = lg_sched_builder_end_mb(&b, r, pos[r]++);
                }
            }
    }
    free(pos);
    if (s != LG_OK) {
        lg_sched_builder_abort(&b);
        return s;
    }
    return lg_sched_builder_finish(&b, cap, out);
}

struct rr_state {
    size_t g;    /* current batch */
    size_t *cur; /* [D] next sample offset of each rank's share of batch g */
    long last;   /* last slot that held the previous batch */
    int started; /* batch g has issued a microbatch */
};

/* Issues one slot of adapter a: the next k samples of each rank's share of its current batch. */
static enum lg_status rr_issue(struct lg_sched_builder *b, const struct lg_adapter *ad, int a, struct rr_state *st,
                               int k, int D, uint32_t *pos, long slot)
{
    enum lg_status s = LG_OK;
    int left = 0;
    st->started = 1;
    for (int r = 0; r < D && s == LG_OK; r++) {
        size_t lo, hi;
        rank_share(ad, st->g, r, D, &lo, &hi);
        if (st->cur[r] < lo)
            st->cur[r] = lo;
        for (int i = 0; i < k && st->cur[r] < hi; i++)
            lg_sched_builder_add(b, a, (uint32_t)st->g, ad->order[st->cur[r]++]);
        if (b->ncur)
            s = lg_sched_builder_end_mb(b, r, pos[r]++);
        left |= st->cur[r] < hi;
    }
    if (!left) { /* batch done: the next one may start S slots later */
        st->last = slot;
        st->g++;
        st->started = 0;
        for (int r = 0; r < D; r++)
            st->cur[r] = 0;
    }
    return s;
}

enum lg_status lg_sched_plan_mlora(const lg_job_t *job, uint32_t cap, int samples_per_mb, lg_plan_t **out)
{
    int k = 1, D = job->p.data_parallel, A = job->nad, S = job->p.stages;
    enum lg_status s = per_mb(job, cap, samples_per_mb, &k);
    if (s != LG_OK)
        return s;
    struct lg_sched_builder b;
    if ((s = lg_sched_builder_init(&b, job, LG_PLAN_MLORA, D)) != LG_OK)
        return s;
    struct rr_state *st = calloc((size_t)A, sizeof *st);
    uint32_t *pos = calloc((size_t)D, sizeof *pos);
    int ok = st && pos;
    for (int a = 0; ok && a < A; a++) {
        st[a].last = -(long)S;
        ok = (st[a].cur = calloc((size_t)D, sizeof *st[a].cur)) != NULL;
    }
    if (!ok)
        s = lg_fail(LG_ERR_OOM, "plan: out of memory");
    int rr = 0;
    for (long slot = 0; s == LG_OK; slot++) {
        int pick = -1, fallback = -1;
        for (int i = 0; i < A; i++) {
            int a = (rr + i) % A;
            if (st[a].g >= job->ad[a].nbatches)
                continue;
            if (st[a].started || slot - st[a].last >= S) {
                pick = a;
                break;
            }
            if (fallback < 0 || st[a].last < st[fallback].last)
                fallback = a;
        }
        if (pick < 0)
            pick = fallback; /* nobody may go: the pipeline waits for the earliest step */
        if (pick < 0)
            break; /* all done */
        s = rr_issue(&b, &job->ad[pick], pick, &st[pick], k, D, pos, slot);
        rr = (pick + 1) % A;
    }
    for (int a = 0; st && a < A; a++)
        free(st[a].cur);
    free(st);
    free(pos);
    if (s != LG_OK) {
        lg_sched_builder_abort(&b);
        return s;
    }
    return lg_sched_builder_finish(&b, cap, out);
}
