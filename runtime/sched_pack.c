/* sched_pack.c: our planner. One pass over "slots" (a slot is one microbatch on each of the D ranks),
 * filling each slot from the global batches that may run in it, then a window-wide merge pass.
 *
 * Why it beats pairwise, tokens-only grouping (docs/scheduler.md has the longer story):
 *   - Any number of adapters share a microbatch: every open global batch (at most one per adapter) offers its
 *     samples to every bin.
 *   - Pacing: each adapter's batches get nominal start slots spread over the whole window in proportion to
 *     their tokens, and a deadline S slots before the next one's start, so all adapters finish together and
 *     no adapter is left alone at the end (one adapter alone must flush the pipeline at every step).
 *   - Each bin first takes the share of the most urgent batches (earliest deadline), largest samples first,
 *     then fills its remaining room best-fit from every open batch, opening batches early when nothing fits.
 *   - Bins are limited by tokens (<= capacity, aiming at the fill target) and by modelled cost (the cost of a
 *     target-sized bin at the job's mean attention density), so long-sample bins take fewer tokens.
 *   - The D bins of a slot go to the ranks so that the rank with the least cumulative cost gets the
 *     dearest bin.
 * A batch starts only when its predecessor's last slot is >= S slots back; when no batch may run at all the
 * slot opens the earliest-ready batch anyway and the plan marks that wait. */
#include "sched_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct pk_item {
    uint32_t sample, len;
    double cost;
    int bin; /* -1 while unplaced */
};

struct pk_batch {
    int a;
    uint32_t g;
    uint32_t first, n; /* items, longest first */
    uint32_t left;
    uint64_t tok_left;
    double start_nom, deadline;
};

struct pk_bin {
    uint32_t tokens, n, maxlen;
    double cost;
    long slot;
    int rank;
};

struct pk {
    const lg_job_t *job;
    int D, S, A, tokens_only, no_pacing;
    uint32_t cap, tau;
    double c0, klim; /* fixed cost of a bin; cost limit of a bin */
    struct pk_item *it;
    struct pk_batch *bt;
    size_t nbt, *bbase; /* batches of adapter a: bbase[a] .. bbase[a+1] */
    size_t *next;       /* [A] next batch to open (absolute index) */
    long *ready;        /* [A] first slot the next batch may use */
    long *open;         /* [A] open batch or -1 */
    long *last;         /* [A] last slot of the previous batch */
    struct pk_bin *bin;
    size_t nbin, cap_bin;
    double *rank_cost;
    size_t unplaced;
    int wave;            /* half-period of the heaviness wave, in slots (0: off) */
    uint32_t *anchor;    /* lengths of the longest items, descending: one per expected bin */
    size_t nanchor;
    double prev_cost, c_lo, c_hi, unit;
    uint32_t *log; /* items placed by the current trial */
    size_t nlog;
    int logging;
    long *open_save;
    size_t *next_save;
};

static double item_cost(const struct lg_costmodel *cm, double len, int rank)
{
    double lin = cm->token_us * len + cm->token_rank_us * len * rank, att = cm->attn_us * len * len;
    return (1 + cm->bwd_linear) * lin + (1 + cm->bwd_attn) * att;
}

static int cmp_u32_desc(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return (a < b) - (a > b);
}

static int cmp_len_desc(const void *x, const void *y)
{
    const struct pk_item *a = x, *b = y;
    if (a->len != b->len)
        return a->len < b->len ? 1 : -1;
    return (a->sample > b->sample) - (a->sample < b->sample);
}

/* Items per batch, longest first; nominal start slots in proportion to each adapter's tokens. */
static enum lg_status pk_setup(struct pk *p)
{
    const lg_job_t *job = p->job;
    const struct lg_costmodel *cm = &job->p.cost;
    size_t nit = 0;
    p->nbt = 0;
    for (int a = 0; a < p->A; a++) {
        nit += job->ad[a].info.samples;
        p->nbt += job->ad[a].nbatches;
    }
    p->it = malloc((nit + 1) * sizeof *p->it);
    p->bt = malloc((p->nbt + 1) * sizeof *p->bt);
    p->bbase = malloc(((size_t)p->A + 1) * sizeof *p->bbase);
    p->next = malloc((size_t)p->A * sizeof *p->next);
    p->ready = calloc((size_t)p->A, sizeof *p->ready);
    p->open = malloc((size_t)p->A * sizeof *p->open);
    p->last = malloc((size_t)p->A * sizeof *p->last);
    p->rank_cost = calloc((size_t)p->D, sizeof *p->rank_cost);
    if (!p->it || !p->bt || !p->bbase || !p->next || !p->ready || !p->open || !p->last || !p->rank_cost)
        return lg_fail(LG_ERR_OOM, "plan: out of memory");
    double tokens = 0, len2 = 0, rank_tok = 0;
    for (int a = 0; a < p->A; a++)
        for (size_t k = 0; k < job->ad[a].info.samples; k++) {
            double l = job->ad[a].len[job->ad[a].order[k]];
            tokens += l;
            len2 += l * l;
            rank_tok += l * job->ad[a].p.rank;
        }
    double slots = ceil(tokens / ((double)p->D * p->tau));
    size_t i = 0, b = 0;
    for (int a = 0; a < p->A; a++) {
        const struct lg_adapter *ad = &job->ad[a];
        p->bbase[a] = b;
        p->next[a] = b;
        p->open[a] = -1;
        p->last[a] = -(long)p->S;
        double cum = 0, tot = (double)ad->info.tokens;
        for (size_t g = 0; g < ad->nbatches; g++, b++) {
            struct pk_batch *bt = &p->bt[b];
            *bt = (struct pk_batch){.a = a, .g = (uint32_t)g, .first = (uint32_t)i};
            for (size_t k = ad->batch_start[g]; k < ad->batch_start[g + 1]; k++, i++) {
                uint32_t s = ad->order[k];
                p->it[i] = (struct pk_item){.sample = s, .len = ad->len[s], .bin = -1,
                                            .cost = item_cost(cm, ad->len[s], ad->p.rank)};
                bt->tok_left += ad->len[s];
            }
            bt->n = bt->left = (uint32_t)(i - bt->first);
            qsort(&p->it[bt->first], bt->n, sizeof *p->it, cmp_len_desc);
            bt->start_nom = slots * cum / tot;
            cum += (double)bt->tok_left;
            bt->deadline = (g + 1 < ad->nbatches ? slots * cum / tot - p->S : slots - 1);
            if (bt->deadline < bt->start_nom)
                bt->deadline = bt->start_nom;
        }
    }
    p->bbase[p->A] = b;
    p->unplaced = i;
    p->nanchor = (size_t)slots * p->D < i ? (size_t)slots * p->D : i;
    p->anchor = malloc((i + 1) * sizeof *p->anchor);
    if (!p->anchor)
        return lg_fail(LG_ERR_OOM, "plan: out of memory");
    for (size_t k = 0; k < i; k++)
        p->anchor[k] = p->it[k].len;
    qsort(p->anchor, i, sizeof *p->anchor, cmp_u32_desc);
    p->log = malloc((i + 1) * sizeof *p->log);
    p->open_save = malloc((size_t)p->A * sizeof *p->open_save);
    p->next_save = malloc((size_t)p->A * sizeof *p->next_save);
    if (!p->log || !p->open_save || !p->next_save)
        return lg_fail(LG_ERR_OOM, "plan: out of memory");
    p->unit = (1 + cm->bwd_linear) * cm->token_us;
    p->c_lo = p->c0 + p->unit * p->tau;
    p->c_hi = p->c0;
    for (size_t k = 0; k < i; k++)
        p->c_hi = fmax(p->c_hi, p->c0 + p->it[k].cost);
    /* A bin's cost limit: a target-sized bin at the job's mean attention density, plus 3% slack. */
    p->c0 = 2 * cm->layer_us;
    double t = p->tau;
    p->klim = 1.03 * (p->c0 + (1 + cm->bwd_linear) * (cm->token_us * t + cm->token_rank_us * t * rank_tok / tokens) +
                      (1 + cm->bwd_attn) * cm->attn_us * t * (len2 / tokens));
    return LG_OK;
}

static enum lg_status new_bin(struct pk *p, long slot)
{
    if (p->nbin == p->cap_bin) {
        size_t nc = p->cap_bin ? 2 * p->cap_bin : 256;
        struct pk_bin *nb = realloc(p->bin, nc * sizeof *nb);
        if (!nb)
            return lg_fail(LG_ERR_OOM, "plan: out of memory");
        p->bin = nb;
        p->cap_bin = nc;
    }
    p->bin[p->nbin++] = (struct pk_bin){.slot = slot, .cost = p->c0};
    return LG_OK;
}

static int fits(const struct pk *p, const struct pk_bin *bn, const struct pk_item *it)
{
    if (bn->n == 0)
        return 1; /* anything up to the capacity (checked when the job was built) */
    if (lg_pad_up(bn->tokens + it->len, (uint32_t)p->job->p.pad_multiple) > p->cap || bn->tokens + it->len > p->tau)
        return 0;
    return p->tokens_only || bn->cost + it->cost <= p->klim;
}

static void place(struct pk *p, size_t bi, size_t b, uint32_t k)
{
    struct pk_item *it = &p->it[k];
    struct pk_bin *bn = &p->bin[bi];
    struct pk_batch *bt = &p->bt[b];
    it->bin = (int)bi;
    if (bn->n == 0 || it->len > bn->maxlen)
        bn->maxlen = it->len;
    bn->tokens += it->len;
    bn->cost += it->cost;
    bn->n++;
    bt->left--;
    bt->tok_left -= it->len;
    p->unplaced--;
    if (p->logging)
        p->log[p->nlog++] = k;
    if (p->open[bt->a] < 0) {
        p->open[bt->a] = (long)b;
        p->next[bt->a] = b + 1;
    }
}

/* The longest unplaced item of batch b that fits the bin, or UINT32_MAX. */
static uint32_t best_of(const struct pk *p, const struct pk_bin *bn, size_t b)
{
    const struct pk_batch *bt = &p->bt[b];
    for (uint32_t k = bt->first; k < bt->first + bt->n; k++)
        if (p->it[k].bin < 0 && fits(p, bn, &p->it[k]))
            return k;
    return UINT32_MAX;
}

/* Candidate batches for a slot: the open ones, then (when `early`) those that may start but are ahead of
 * their nominal start. */
static int eligible(const struct pk *p, int a, long t, int early, size_t *b)
{
    if (p->open[a] >= 0) {
        *b = (size_t)p->open[a];
        return 1;
    }
    if (p->next[a] >= p->bbase[a + 1] || p->ready[a] > t)
        return 0;
    *b = p->next[a];
    return early || p->no_pacing || p->bt[*b].start_nom <= (double)t;
}

static int cmp_deadline(const void *x, const void *y, void *ctx)
{
    const struct pk *p = ctx;
    double a = p->bt[*(const size_t *)x].deadline, b = p->bt[*(const size_t *)y].deadline;
    return (a > b) - (a < b);
}

/* Urgent share first: each on-pace batch, earliest deadline first, gets its tokens-left spread over the
 * bins left before its deadline, longest samples first (they are the hardest to fit later). */
static void fill_urgent(struct pk *p, size_t bi, long t, int k_in_slot, size_t *cand)
{
    int n = 0;
    for (int a = 0; a < p->A; a++) {
        size_t b;
        if (eligible(p, a, t, 0, &b))
            cand[n++] = b;
    }
    qsort_r(cand, (size_t)n, sizeof *cand, cmp_deadline, p);
    for (int i = 0; i < n; i++) {
        struct pk_batch *bt = &p->bt[cand[i]];
        double bins_left = fmax(1.0, (bt->deadline - (double)t + 1) * p->D - k_in_slot);
        double quota = (double)bt->tok_left / bins_left, taken = 0;
        while (taken < quota) {
            uint32_t k = best_of(p, &p->bin[bi], cand[i]);
            if (k == UINT32_MAX)
                break;
            place(p, bi, cand[i], k);
            taken += p->it[k].len;
        }
    }
}

/* Then best fit: the longest sample that still fits, from on-pace batches, else from batches that may start
 * early; ties go to the earlier deadline. */
static void fill_best(struct pk *p, size_t bi, long t)
{
    for (;;) {
        uint32_t best = UINT32_MAX;
        size_t bb = 0;
        for (int early = 0; early < 2 && best == UINT32_MAX; early++)
            for (int a = 0; a < p->A; a++) {
                size_t b;
                if (!eligible(p, a, t, early, &b))
                    continue;
                uint32_t k = best_of(p, &p->bin[bi], b);
                if (k == UINT32_MAX)
                    continue;
                if (best == UINT32_MAX || p->it[k].len > p->it[best].len ||
                    (p->it[k].len == p->it[best].len && p->bt[b].deadline < p->bt[bb].deadline)) {
                    best = k;
                    bb = b;
                }
            }
        if (best == UINT32_MAX)
            return;
        place(p, bi, bb, best);
    }
}

/* When no batch may run in slot t, the earliest-ready one runs anyway: the plan marks its wait. */
static void force_one(struct pk *p, long t)
{
    for (int a = 0; a < p->A; a++) {
        size_t b;
        if (eligible(p, a, t, 1, &b))
            return;
    }
    int pick = -1;
    for (int a = 0; a < p->A; a++)
        if (p->open[a] < 0 && p->next[a] < p->bbase[a + 1] && (pick < 0 || p->ready[a] < p->ready[pick]))
            pick = a;
    if (pick >= 0)
        p->ready[pick] = t;
}

static size_t batch_of_item(const struct pk *p, uint32_t k)
{
    size_t lo = 0, hi = p->nbt; /* batches' items are contiguous and in order */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (p->bt[mid].first <= k)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static void trial_begin(struct pk *p, size_t bi, struct pk_bin *save)
{
    *save = p->bin[bi];
    memcpy(p->open_save, p->open, (size_t)p->A * sizeof *p->open);
    memcpy(p->next_save, p->next, (size_t)p->A * sizeof *p->next);
    p->nlog = 0;
    p->logging = 1;
}

static void trial_undo(struct pk *p, size_t bi, const struct pk_bin *save)
{
    for (size_t i = 0; i < p->nlog; i++) {
        struct pk_item *it = &p->it[p->log[i]];
        struct pk_batch *bt = &p->bt[batch_of_item(p, p->log[i])];
        it->bin = -1;
        bt->left++;
        bt->tok_left += it->len;
        p->unplaced++;
    }
    p->bin[bi] = *save;
    memcpy(p->open, p->open_save, (size_t)p->A * sizeof *p->open);
    memcpy(p->next, p->next_save, (size_t)p->A * sizeof *p->next);
    p->logging = 0;
}

static double desired(const struct pk *p, long t)
{
    if (p->wave < 0)
        return p->prev_cost;
    long W = p->wave, ph = t % (2 * W);
    double h = ph < W ? (double)ph / W : (double)(2 * W - ph) / W;
    return p->c_lo + h * (p->c_hi - p->c_lo);
}

static void fill_with(struct pk *p, size_t bi, long t, int d, size_t *cand, uint32_t anchor)
{
    if (anchor != UINT32_MAX)
        place(p, bi, batch_of_item(p, anchor), anchor);
    fill_urgent(p, bi, t, d, cand);
    fill_best(p, bi, t);
}

/* Fills one bin: tries each candidate first item (the longest, and two shorter, of every batch that may run)
 * and keeps the fill whose cost is closest to the desired cost, counting unfilled room as cost too. */
static void fill_bin(struct pk *p, size_t bi, long t, int d, size_t *cand)
{
    if (!p->wave || (p->wave < 0 && p->prev_cost == 0)) {
        fill_with(p, bi, t, d, cand, UINT32_MAX);
        return;
    }
    uint32_t opts[64];
    int n = 0;
    opts[n++] = UINT32_MAX;
    for (int a = 0; a < p->A && n + 3 <= 64; a++) {
        size_t b;
        if (!eligible(p, a, t, 0, &b))
            continue;
        const struct pk_batch *bt = &p->bt[b];
        uint32_t seen = 0, idx[64];
        for (uint32_t k = bt->first; k < bt->first + bt->n && seen < 64; k++)
            if (p->it[k].bin < 0)
                idx[seen++] = k;
        if (seen == 0)
            continue;
        opts[n++] = idx[0];
        if (seen > 2)
            opts[n++] = idx[seen / 3];
        if (seen > 3)
            opts[n++] = idx[2 * seen / 3];
    }
    double want = desired(p, t), best_score = INFINITY;
    int best = 0;
    struct pk_bin save;
    for (int i = 0; i < n; i++) {
        trial_begin(p, bi, &save);
        fill_with(p, bi, t, d, cand, opts[i]);
        double sc = fabs(p->bin[bi].cost - want) + (double)(p->tau - (p->bin[bi].tokens < p->tau ? p->bin[bi].tokens : p->tau)) * p->unit;
        trial_undo(p, bi, &save);
        if (sc < best_score) {
            best_score = sc;
            best = i;
        }
    }
    fill_with(p, bi, t, d, cand, opts[best]);
}

static int cmp_bin_cost(const void *x, const void *y, void *ctx)
{
    const struct pk *p = ctx;
    double a = p->bin[*(const size_t *)x].cost, b = p->bin[*(const size_t *)y].cost;
    return (a < b) - (a > b);
}

/* The slot's bins, dearest first, go to the ranks with the least cumulative cost. */
static void assign_ranks(struct pk *p, size_t first, size_t *idx, int *rk)
{
    size_t n = p->nbin - first;
    for (size_t i = 0; i < n; i++)
        idx[i] = first + i;
    qsort_r(idx, n, sizeof *idx, cmp_bin_cost, p);
    for (int r = 0; r < p->D; r++)
        rk[r] = r;
    for (int i = 1; i < p->D; i++) /* ranks by cumulative cost, ascending (insertion sort: D is small) */
        for (int j = i; j > 0 && p->rank_cost[rk[j]] < p->rank_cost[rk[j - 1]]; j--) {
            int x = rk[j];
            rk[j] = rk[j - 1];
            rk[j - 1] = x;
        }
    for (size_t i = 0; i < n; i++) {
        p->bin[idx[i]].rank = rk[i];
        p->rank_cost[rk[i]] += p->bin[idx[i]].cost;
    }
}

static enum lg_status run_slots(struct pk *p)
{
    size_t *cand = malloc(((size_t)p->A + (size_t)p->D + 1) * sizeof *cand);
    int *rk = malloc((size_t)p->D * sizeof *rk);
    if (!cand || !rk) {
        free(cand);
        free(rk);
        return lg_fail(LG_ERR_OOM, "plan: out of memory");
    }
    enum lg_status s = LG_OK;
    for (long t = 0; p->unplaced > 0 && s == LG_OK; t++) {
        force_one(p, t);
        size_t first = p->nbin;
        for (int d = 0; d < p->D && s == LG_OK; d++) {
            if ((s = new_bin(p, t)) != LG_OK)
                break;
            fill_bin(p, p->nbin - 1, t, d, cand);
            if (p->bin[p->nbin - 1].n == 0)
                p->nbin--;
            else
                p->prev_cost = p->bin[p->nbin - 1].cost;
        }
        for (int a = 0; a < p->A; a++)
            if (p->open[a] >= 0 && p->bt[p->open[a]].left == 0) {
                p->open[a] = -1;
                p->last[a] = t;
                p->ready[a] = t + p->S;
            }
        if (p->nbin > first)
            assign_ranks(p, first, cand, rk);
    }
    free(cand);
    free(rk);
    return s;
}

/* Hands the bins to the plan builder in slot order; each rank numbers its own microbatches. */
static enum lg_status emit(struct pk *p, uint32_t capacity, lg_plan_t **out)
{
    size_t nit = 0;
    for (size_t b = 0; b < p->nbt; b++)
        nit += p->bt[b].n;
    size_t *start = calloc(p->nbin + 2, sizeof *start);
    uint32_t *by_bin = malloc((nit + 1) * sizeof *by_bin);
    uint32_t *owner = malloc((nit + 1) * sizeof *owner);
    uint32_t *pos = calloc((size_t)p->D, sizeof *pos);
    enum lg_status s = LG_OK;
    struct lg_plan_builder b;
    if (!start || !by_bin || !owner || !pos)
        s = lg_fail(LG_ERR_OOM, "plan: out of memory");
    if (s == LG_OK)
        s = lg_plan_builder_init(&b, p->job, LG_PLAN_PACKED, p->D);
    if (s == LG_OK) {
        for (size_t bt = 0; bt < p->nbt; bt++)
            for (uint32_t k = p->bt[bt].first; k < p->bt[bt].first + p->bt[bt].n; k++) {
                owner[k] = (uint32_t)bt;
                start[p->it[k].bin + 2]++;
            }
        for (size_t i = 2; i < p->nbin + 2; i++)
            start[i] += start[i - 1];
        for (uint32_t k = 0; k < nit; k++)
            by_bin[start[p->it[k].bin + 1]++] = k;
        for (size_t bi = 0; bi < p->nbin && s == LG_OK; bi++) {
            if (start[bi] == start[bi + 1])
                continue; /* emptied by the merge pass */
            for (size_t j = start[bi]; j < start[bi + 1]; j++) {
                uint32_t k = by_bin[j];
                lg_plan_builder_add(&b, p->bt[owner[k]].a, p->bt[owner[k]].g, p->it[k].sample);
            }
            s = lg_plan_builder_end_mb(&b, p->bin[bi].rank, pos[p->bin[bi].rank]++);
        }
        if (s == LG_OK)
            s = lg_plan_builder_finish(&b, capacity, out);
        else
            lg_plan_builder_abort(&b);
    }
    free(start);
    free(by_bin);
    free(owner);
    free(pos);
    return s;
}

static void pk_free(struct pk *p)
{
    free(p->it);
    free(p->bt);
    free(p->bbase);
    free(p->next);
    free(p->ready);
    free(p->open);
    free(p->last);
    free(p->bin);
    free(p->rank_cost);
    free(p->anchor);
    free(p->log);
    free(p->open_save);
    free(p->next_save);
}

enum lg_status lg_plan_packed(const lg_job_t *job, uint32_t capacity, uint32_t target, unsigned flags,
                              lg_plan_t **out)
{
    struct pk p = {.job = job, .D = job->p.data_parallel, .S = job->p.stages, .A = job->nad,
                   .tokens_only = !!(flags & LG_PLAN_TOKENS_ONLY), .no_pacing = !!(flags & LG_PLAN_NO_PACING),
                   .cap = capacity,
                   .tau = target ? target : capacity};
    p.wave = getenv("LG_WAVE") ? atoi(getenv("LG_WAVE")) : 0;
    enum lg_status s = pk_setup(&p);
    if (s == LG_OK)
        s = run_slots(&p);
    if (s == LG_OK)
        s = emit(&p, capacity, out);
    if (s == LG_OK) {
        (*out)->sum.target = p.tau;
        (*out)->sum.candidates = 1;
    }
    pk_free(&p);
    return s;
}
