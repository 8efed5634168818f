/* builder.c: the plan object as every planner fills it, one microbatch at a time: microbatches of adapter
 * segments with their padded sizes and cost terms, then the `wait` marks derived from positions, and the
 * summary. It sits below the planners (pack.c, baseline.c) and calls none of them; since plans are made
 * here, they are also freed here (lg_plan_free). */
#include "sched_internal.h"
#include "lg_base.h"

#include <stdlib.h>
#include <string.h>

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np)
        return -1;
    *p = np;
    *cap = nc;
    return 0;
}

void lg_plan_free(lg_plan_t *plan)
{
    if (!plan)
        return;
    free(plan->mb);
    free(plan->seg);
    free(plan->samp);
    free(plan);
}

enum lg_status lg_sched_builder_init(struct lg_sched_builder *b, const lg_job_t *job, enum lg_plan_algo algo,
                                     int ranks)
{
    memset(b, 0, sizeof *b);
    b->job = job;
    b->plan = calloc(1, sizeof *b->plan);
    if (!b->plan)
        return lg_fail(LG_ERR_OOM, "plan: out of memory");
    b->plan->algo = algo;
    b->plan->ranks = ranks;
    return LG_OK;
}

void lg_sched_builder_abort(struct lg_sched_builder *b)
{
    lg_plan_free(b->plan);
    free(b->cur);
    memset(b, 0, sizeof *b);
}

void lg_sched_builder_add(struct lg_sched_builder *b, int adapter, uint32_t batch, uint32_t sample)
{
    if (grow((void **)&b->cur, &b->cap_cur, b->ncur + 1, sizeof *b->cur)) {
        b->open = -1; /* remembered as OOM for end_mb */
        return;
    }
    b->cur[b->ncur++] = (struct lg_pseg){.adapter = adapter, .batch = batch, .first = sample, .n = 1};
}

static int cmp_triple(const void *x, const void *y)
{
    const struct lg_pseg *a = x, *b = y;
    if (a->adapter != b->adapter)
        return a->adapter < b->adapter ? -1 : 1;
    if (a->batch != b->batch)
        return a->batch < b->batch ? -1 : 1;
    return (a->first > b->first) - (a->first < b->first);
}

enum lg_status lg_sched_builder_end_mb(struct lg_sched_builder *b, int rank, uint32_t pos)
{
    lg_plan_t *p = b->plan;
    if (b->open < 0)
        return lg_fail(LG_ERR_OOM, "plan: out of memory");
    if (b->ncur == 0)
        return LG_OK;
    qsort(b->cur, b->ncur, sizeof *b->cur, cmp_triple);
    if (grow((void **)&p->mb, &p->cap_mb, p->nmb + 1, sizeof *p->mb) ||
        grow((void **)&p->seg, &p->cap_seg, p->nseg + b->ncur, sizeof *p->seg) ||
        grow((void **)&p->samp, &p->cap_samp, p->nsamp + b->ncur, sizeof *p->samp))
        return lg_fail(LG_ERR_OOM, "plan: out of memory");
    const lg_job_t *job = b->job;
    struct lg_pmb *m = &p->mb[p->nmb];
    memset(m, 0, sizeof *m);
    m->rank = rank;
    m->pos = pos;
    m->seg_first = (uint32_t)p->nseg;
    for (size_t i = 0; i < b->ncur; i++) {
        struct lg_pseg *t = &b->cur[i];
        if (i == 0 || t->adapter != t[-1].adapter || t->batch != t[-1].batch) {
            p->seg[p->nseg++] = (struct lg_pseg){.adapter = t->adapter, .batch = t->batch,
                                                 .first = (uint32_t)p->nsamp, .n = 0};
            m->nseg++;
        }
        p->seg[p->nseg - 1].n++;
        p->samp[p->nsamp++] = t->first;
        double len = job->ad[t->adapter].len[t->first];
        m->tokens += (uint32_t)len;
        m->sum_len2 += len * len;
        m->rank_tokens += len * job->ad[t->adapter].p.rank;
    }
    m->padded = lg_sched_pad_up(m->tokens, (uint32_t)job->p.pad_multiple);
    if (p->algo != LG_PLAN_PACKED) {
        /* the baselines do not pack: each sample is padded to the longest one of its microbatch */
        uint32_t longest = 0, n = 0;
        for (size_t i = 0; i < b->ncur; i++) {
            uint32_t l = job->ad[b->cur[i].adapter].len[b->cur[i].first];
            longest = l > longest ? l : longest;
            n++;
        }
        m->padded = lg_sched_pad_up(longest, (uint32_t)job->p.pad_multiple) * n;
    }
    p->nmb++;
    b->ncur = 0;
    return LG_OK;
}

/* A segment waits when its microbatch is fewer than S positions after the last microbatch of the adapter's
 * previous global batch on the same rank (1F1B order alone would run its forward too early), or when that
 * rank ran none of the previous batch (only the all-reduce orders them). Ranks are visited one at a time. */
static enum lg_status mark_waits(lg_plan_t *p, const lg_job_t *job)
{
    size_t *base = calloc((size_t)job->nad + 1, sizeof *base);
    size_t *by_rank = malloc((p->nmb + 1) * sizeof *by_rank), *rstart = calloc((size_t)p->ranks + 2, sizeof *rstart);
    long *last = NULL;
    enum lg_status s = LG_OK;
    if (base && by_rank && rstart) {
        for (int a = 0; a < job->nad; a++)
            base[a + 1] = base[a] + job->ad[a].nbatches;
        last = malloc((base[job->nad] + 1) * sizeof *last);
    }
    if (!last) {
        s = lg_fail(LG_ERR_OOM, "plan: out of memory");
        goto out;
    }
    for (size_t i = 0; i < p->nmb; i++)
        rstart[p->mb[i].rank + 2]++;
    for (int r = 0; r <= p->ranks; r++)
        rstart[r + 1] += rstart[r];
    for (size_t i = 0; i < p->nmb; i++) /* stable: positions on a rank stay in build order */
        by_rank[rstart[p->mb[i].rank + 1]++] = i;
    for (int r = 0; r < p->ranks; r++) {
        for (size_t i = 0; i < base[job->nad]; i++)
            last[i] = -1;
        for (size_t q = rstart[r]; q < rstart[r + 1]; q++) {
            const struct lg_pmb *m = &p->mb[by_rank[q]];
            for (uint32_t j = 0; j < m->nseg; j++) {
                struct lg_pseg *sg = &p->seg[m->seg_first + j];
                size_t id = base[sg->adapter] + sg->batch;
                sg->wait = sg->batch > 0 && (last[id - 1] < 0 || (long)m->pos - last[id - 1] < job->p.stages);
                sg->head = last[id] < 0;
                last[id] = (long)m->pos;
            }
        }
    }
out:
    free(last);
    free(base);
    free(by_rank);
    free(rstart);
    lg_sched_plan_count_waits(p);
    return s;
}

void lg_sched_plan_count_waits(lg_plan_t *p)
{
    p->sum.waits = p->sum.wait_forwards = 0;
    for (size_t i = 0; i < p->nmb; i++) {
        int any = 0;
        for (uint32_t j = 0; j < p->mb[i].nseg; j++) {
            const struct lg_pseg *sg = &p->seg[p->mb[i].seg_first + j];
            p->sum.waits += (size_t)sg->wait;
            any |= sg->wait && sg->head;
        }
        p->sum.wait_forwards += (size_t)any;
    }
}

enum lg_status lg_sched_builder_finish(struct lg_sched_builder *b, uint32_t capacity, lg_plan_t **out)
{
    lg_plan_t *p = b->plan;
    enum lg_status s = mark_waits(p, b->job);
    if (s != LG_OK) {
        lg_sched_builder_abort(b);
        return s;
    }
    struct lg_plan_summary *sm = &p->sum;
    sm->microbatches = p->nmb;
    sm->capacity = capacity;
    for (size_t i = 0; i < p->nmb; i++) {
        sm->tokens += p->mb[i].tokens;
        sm->padded += p->mb[i].padded;
        if (p->mb[i].pos + 1 > sm->slots)
            sm->slots = p->mb[i].pos + 1;
    }
    sm->waste = sm->padded ? (double)(sm->padded - sm->tokens) / (double)sm->padded : 0;
    sm->lower_bound = (size_t)((sm->tokens + capacity - 1) / capacity);
    sm->padded_bound = (size_t)((sm->padded + capacity - 1) / capacity);
    *out = p;
    free(b->cur);
    memset(b, 0, sizeof *b);
    return LG_OK;
}
