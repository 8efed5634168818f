/* pack.c: our planner, LG_PLAN_PACKED, for one fill target. Three phases:
 *
 *   1. Pacing. Each adapter's global batches get nominal start slots spread over the whole window in
 *      proportion to their tokens, and a deadline S slots before the next one's start (pack_state.c). All
 *      adapters then run side by side to the end; an adapter left alone would flush the pipeline at every
 *      optimizer step.
 *   2. Slots, one after another. A slot holds one microbatch per DP rank, filled from every global batch that
 *      may run there (any number of adapters, at most one batch each: fill.c). A batch may start once
 *      its predecessor's last slot is S back; when nothing may run at all, the earliest-ready batch starts
 *      anyway and the plan marks that wait. The slot's microbatches go to ranks dearest-first onto the rank
 *      with the least cumulative cost, which keeps the DP ranks in step.
 *   3. Refinement over the whole window (refine.c): merge away the emptiest slots, then move and swap
 *      samples and whole microbatches within their legal windows until consecutive microbatches cost about
 *      the same, which is what 1F1B needs to stay bubble-free.
 * lg_sched_plan_search (at the end) picks the fill target by simulating several. Calls go one way: this
 * file -> fill.c -> regroup.c -> pack_state.c, and to the builder, refine.c and the simulator below. */
#include "sched_pack.h"
#include "lg_base.h"

#include <stdlib.h>
#include <string.h>

static int cmp_bin_cost(const void *x, const void *y, void *ctx)
{
    const struct lg_sched_pk *p = ctx;
    double a = p->bin[*(const size_t *)x].cost, b = p->bin[*(const size_t *)y].cost;
    return (a < b) - (a > b);
}

/* Ranks by cumulative cost, the lower index first among equals (a stable order, in O(D log D)). */
static int cmp_rank_cost(const void *x, const void *y, void *ctx)
{
    const struct lg_sched_pk *p = ctx;
    int a = *(const int *)x, b = *(const int *)y;
    if (p->rank_cost[a] != p->rank_cost[b])
        return p->rank_cost[a] < p->rank_cost[b] ? -1 : 1;
    return (a > b) - (a < b);
}

/* The bins idx[0..n) of one slot, dearest first, go to the ranks with the least cumulative cost. */
static void assign_slot(struct lg_sched_pk *p, size_t *idx, size_t n, int *rk)
{
    qsort_r(idx, n, sizeof *idx, cmp_bin_cost, p);
    for (int r = 0; r < p->D; r++)
        rk[r] = r;
    qsort_r(rk, (size_t)p->D, sizeof *rk, cmp_rank_cost, p); /* ranks by cumulative cost, ascending */
    for (size_t i = 0; i < n; i++) {
        p->bin[idx[i]].rank = rk[i];
        p->rank_cost[rk[i]] += p->bin[idx[i]].cost;
    }
}

static void assign_ranks(struct lg_sched_pk *p, size_t first, size_t *idx, int *rk)
{
    size_t n = p->nbin - first;
    for (size_t i = 0; i < n; i++)
        idx[i] = first + i;
    assign_slot(p, idx, n, rk);
}

#define SLOT_ITEMS 1024 /* items of one slot the balance may move: a bin holds ~3 at the target traces */

static enum lg_status run_slots(struct lg_sched_pk *p)
{
    size_t *cand = malloc(((size_t)p->A + (size_t)p->D + 1) * sizeof *cand);
    int *rk = malloc((size_t)p->D * sizeof *rk);
    uint32_t *si = malloc(SLOT_ITEMS * sizeof *si);
    enum lg_status s = cand && rk && si ? LG_OK : lg_fail(LG_ERR_OOM, "plan: out of memory");
    for (long t = 0; p->unplaced > 0 && s == LG_OK; t++) {
        lg_sched_pk_slot_begin(p, t);
        size_t first = p->nbin;
        size_t nsi = 0;
        for (int d = 0; d < p->D && s == LG_OK; d++) {
            if ((s = lg_sched_pk_new_bin(p, t)) != LG_OK)
                break;
            lg_sched_pk_fill(p, p->nbin - 1, t, d, cand);
            if (p->D > 1) { /* an empty bin stays until the balance, which may give it items */
                for (size_t i = 0; i < p->ncur && nsi < SLOT_ITEMS; i++)
                    si[nsi++] = p->cur[i];
            } else if (p->bin[p->nbin - 1].n == 0) {
                p->nbin--;
            }
            if (p->nbin > first && p->bin[p->nbin - 1].n == 0)
                break; /* nothing the slot may take is left, so the next bins would stay empty too */
        }
        if (p->D > 1 && s == LG_OK) {
            lg_sched_pk_balance(p, first, si, nsi);
            while (p->nbin > first && p->bin[p->nbin - 1].n == 0)
                p->nbin--;
        }
        lg_sched_pk_slot_end(p, t);
        if (p->nbin > first)
            assign_ranks(p, first, cand, rk);
    }
    free(cand);
    free(rk);
    free(si);
    return s;
}

/* The refinement input: flat arrays over items, batches and bins. */
struct rf_arrays {
    uint32_t *len, *bin;
    double *cost;
    size_t *batch, *bfirst, *prev, *next;
    int *adapter, *rank;
    long *slot;
};

static void rf_free(struct rf_arrays *r)
{
    free(r->len);
    free(r->bin);
    free(r->cost);
    free(r->batch);
    free(r->bfirst);
    free(r->prev);
    free(r->next);
    free(r->adapter);
    free(r->rank);
    free(r->slot);
}

static enum lg_status refine(struct lg_sched_pk *p, unsigned flags)
{
    size_t n = p->nit, nb = p->nbt;
    struct rf_arrays r = {
        .len = malloc((n + 1) * sizeof *r.len), .bin = malloc((n + 1) * sizeof *r.bin),
        .cost = malloc((n + 1) * sizeof *r.cost), .batch = malloc((n + 1) * sizeof *r.batch),
        .bfirst = malloc((nb + 1) * sizeof *r.bfirst), .prev = malloc((nb + 1) * sizeof *r.prev),
        .next = malloc((nb + 1) * sizeof *r.next), .adapter = malloc((nb + 1) * sizeof *r.adapter),
        .rank = malloc((p->nbin + 1) * sizeof *r.rank), .slot = malloc((p->nbin + 1) * sizeof *r.slot),
    };
    enum lg_status s = LG_OK;
    if (!r.len || !r.bin || !r.cost || !r.batch || !r.bfirst || !r.prev || !r.next || !r.adapter || !r.rank ||
        !r.slot)
        s = lg_fail(LG_ERR_OOM, "plan: out of memory");
    for (size_t b = 0; s == LG_OK && b < nb; b++) {
        const struct lg_sched_pk_batch *bt = &p->bt[b];
        r.bfirst[b] = bt->first;
        r.adapter[b] = bt->a;
        r.prev[b] = b > p->bbase[bt->a] ? b - 1 : SIZE_MAX;
        r.next[b] = b + 1 < p->bbase[bt->a + 1] ? b + 1 : SIZE_MAX;
        for (uint32_t k = bt->first; k < bt->first + bt->n; k++) {
            r.len[k] = p->it[k].len;
            r.cost[k] = p->it[k].cost;
            r.bin[k] = (uint32_t)p->it[k].bin;
            r.batch[k] = b;
        }
    }
    if (s == LG_OK) {
        r.bfirst[nb] = n;
        for (size_t i = 0; i < p->nbin; i++) {
            r.slot[i] = p->bin[i].slot;
            r.rank[i] = p->bin[i].rank;
        }
        struct lg_sched_refine_in in = {
            .nitem = n, .nbin = p->nbin, .nbatch = nb, .S = p->S, .D = p->D, .len = r.len, .cost = r.cost,
            .batch = r.batch, .bin = r.bin, .bfirst = r.bfirst, .adapter = r.adapter, .prev = r.prev,
            .next = r.next, .slot = r.slot, .rank = r.rank, .reach = 2L * p->S + 4, .tau = p->tau, .c0 = p->c0,
        };
        s = lg_sched_refine(&in, flags & LG_PLAN_NO_MERGE ? 0 : p->nbin, flags & LG_PLAN_NO_SMOOTH ? 0 : 3);
        for (size_t k = 0; s == LG_OK && k < n; k++)
            p->it[k].bin = (int)r.bin[k];
    }
    rf_free(&r);
    return s;
}

/* With D > 1, after the refinement: the slot's bins go to the ranks again, now that the refinement has
 * changed what they hold. Every rule is about slots, so which rank runs which bin of a slot is free. The ranks
 * wait for each other at the optimizer steps, so they should reach each slot at the same time: under 1F1B a
 * rank advances by the dearest of its last S microbatches per position (refine.c), so each rank's clock is
 * kept that way and the slot's dearest bin goes to the rank whose clock is least ahead, and so on. Against
 * levelling the ranks' summed costs (the slot pass's rule), this lowers the bubble of the benchmark's mix
 * trace at DP=2, S=4 from 13.98% to 13.35%. */
#define RING 64 /* >= LG_SCHED_MAX_STAGES */

static double clock_step(const double *ring, long n, int S, double c)
{
    double mx = c;
    for (int k = 1; k < S && k <= n; k++)
        mx = ring[(n - k) % RING] > mx ? ring[(n - k) % RING] : mx;
    return mx;
}

static enum lg_status rerank(struct lg_sched_pk *p)
{
    size_t *idx = malloc((p->nbin + 1) * sizeof *idx);
    double *ring = calloc((size_t)p->D * RING, sizeof *ring), *clk = calloc((size_t)p->D, sizeof *clk);
    long *cnt = calloc((size_t)p->D, sizeof *cnt);
    uint8_t *used = calloc((size_t)p->D, 1);
    enum lg_status s = idx && ring && clk && cnt && used ? LG_OK : lg_fail(LG_ERR_OOM, "plan: out of memory");
    for (size_t b = 0; s == LG_OK && b < p->nbin; b++) {
        p->bin[b].cost = p->c0;
        p->bin[b].n = 0;
    }
    for (size_t k = 0; s == LG_OK && k < p->nit; k++) {
        p->bin[p->it[k].bin].cost += p->it[k].cost;
        p->bin[p->it[k].bin].n++;
    }
    for (size_t b = 0; s == LG_OK && b < p->nbin;) {
        size_t e = b, n = 0;
        while (e < p->nbin && p->bin[e].slot == p->bin[b].slot)
            e++;
        for (size_t j = b; j < e; j++)
            if (p->bin[j].n)
                idx[n++] = j;
        qsort_r(idx, n, sizeof *idx, cmp_bin_cost, p);
        memset(used, 0, (size_t)p->D);
        for (size_t i = 0; i < n; i++) { /* dearest first, onto the rank whose clock would end lowest */
            double c = p->bin[idx[i]].cost, best = 0;
            int r = -1;
            for (int q = 0; q < p->D; q++) {
                double t = used[q] ? 0 : clk[q] + clock_step(ring + (size_t)q * RING, cnt[q], p->S, c);
                if (!used[q] && (r < 0 || t < best))
                    best = t, r = q;
            }
            used[r] = 1;
            p->bin[idx[i]].rank = r;
            clk[r] = best;
            ring[(size_t)r * RING + cnt[r]++ % RING] = c;
        }
        b = e;
    }
    free(idx);
    free(ring);
    free(clk);
    free(cnt);
    free(used);
    return s;
}

/* Hands the bins to the plan builder in slot order; each rank numbers its own microbatches, and bins the
 * merge emptied are skipped. */
static enum lg_status emit(struct lg_sched_pk *p, uint32_t capacity, lg_plan_t **out)
{
    size_t n = p->nit;
    size_t *start = calloc(p->nbin + 2, sizeof *start);
    uint32_t *by_bin = malloc((n + 1) * sizeof *by_bin), *owner = malloc((n + 1) * sizeof *owner);
    uint32_t *pos = calloc((size_t)p->D, sizeof *pos);
    struct lg_sched_builder b;
    enum lg_status s = start && by_bin && owner && pos ? LG_OK : lg_fail(LG_ERR_OOM, "plan: out of memory");
    if (s == LG_OK)
        s = lg_sched_builder_init(&b, p->job, LG_PLAN_PACKED, p->D);
    if (s == LG_OK) {
        for (size_t bt = 0; bt < p->nbt; bt++)
            for (uint32_t k = p->bt[bt].first; k < p->bt[bt].first + p->bt[bt].n; k++) {
                owner[k] = (uint32_t)bt;
                start[p->it[k].bin + 2]++;
            }
        for (size_t i = 2; i < p->nbin + 2; i++)
            start[i] += start[i - 1];
        for (uint32_t k = 0; k < n; k++)
            by_bin[start[p->it[k].bin + 1]++] = k;
        for (size_t bi = 0; bi < p->nbin && s == LG_OK; bi++) {
            if (start[bi] == start[bi + 1])
                continue;
            for (size_t j = start[bi]; j < start[bi + 1]; j++) {
                uint32_t k = by_bin[j];
                lg_sched_builder_add(&b, p->bt[owner[k]].a, p->bt[owner[k]].g, p->it[k].sample);
            }
            s = lg_sched_builder_end_mb(&b, p->bin[bi].rank, pos[p->bin[bi].rank]++);
        }
        if (s == LG_OK)
            s = lg_sched_builder_finish(&b, capacity, out);
        else
            lg_sched_builder_abort(&b);
    }
    free(start);
    free(by_bin);
    free(owner);
    free(pos);
    return s;
}

/* With D > 1, last: the ranks of each slot's bins are chosen by simulation. The clock of rerank() is a model;
 * the simulator knows when a rank really waits for another at a step, and how that wait carries on to the
 * later slots. For each slot, the slot's dearest and cheapest bins trade ranks, the whole plan is simulated,
 * and the trade is kept when the makespan falls; the slots whose bins differ most go first. The builder
 * marks whatever wait the order then needs, so every trial plan is valid, and the plan's contents and each
 * rank's number of microbatches never change. On the benchmark's DP=2, S=4 traces this lowers the simulated
 * bubble by 0.6-0.8 points (docs/perf.md). A trial simulates the whole plan, which costs about its bins x
 * stages plus its optimizer steps x ranks x stages (each step wakes every stage of every rank), so the trials
 * stop after RS_BUDGET of those units in all (about 0.3 s of one core, measured): a large plan gets fewer
 * trials, or none. */
#define RS_BUDGET 4e6

static enum lg_status plan_makespan(struct lg_sched_pk *p, uint32_t capacity, double *out)
{
    lg_plan_t *pl;
    lg_sim_t *sim;
    enum lg_status s = emit(p, capacity, &pl);
    if (s != LG_OK)
        return s;
    s = lg_sim_run(p->job, pl, NULL, &sim);
    if (s == LG_OK) {
        struct lg_sim_stats st;
        lg_sim_get_stats(sim, &st);
        *out = st.makespan_us;
        lg_sim_free(sim);
    }
    lg_plan_free(pl);
    return s;
}

struct rs_cand {
    double gap; /* cost of the slot's dearest bin minus its cheapest */
    size_t hi, lo;
};

static int cmp_gap(const void *x, const void *y)
{
    const struct rs_cand *a = x, *b = y;
    if (a->gap != b->gap)
        return a->gap > b->gap ? -1 : 1;
    return (a->hi > b->hi) - (a->hi < b->hi);
}

static enum lg_status rank_search(struct lg_sched_pk *p, uint32_t capacity)
{
    double trial = ((double)p->nbin + (double)p->nbt * p->D) * p->S, budget = RS_BUDGET, mean = 0;
    if (trial > budget)
        return LG_OK;
    for (size_t b = 0; b < p->nbin; b++)
        mean += p->bin[b].cost / (double)p->nbin;
    /* A trade swaps two microbatches of one slot, so no rank's sequence changes its length or order: only
     * which rank runs which of the two. The slots whose bins differ most go first. */
    struct rs_cand *c = malloc((p->nbin + 1) * sizeof *c);
    if (!c)
        return lg_fail(LG_ERR_OOM, "plan: out of memory");
    size_t nc = 0;
    for (size_t b = 0; b < p->nbin;) {
        size_t e = b, hi = SIZE_MAX, lo = SIZE_MAX;
        for (; e < p->nbin && p->bin[e].slot == p->bin[b].slot; e++) { /* empty bins are no microbatch */
            if (p->bin[e].n && (hi == SIZE_MAX || p->bin[e].cost > p->bin[hi].cost))
                hi = e;
            if (p->bin[e].n && (lo == SIZE_MAX || p->bin[e].cost < p->bin[lo].cost))
                lo = e;
        }
        b = e;
        if (hi != lo && p->bin[hi].cost - p->bin[lo].cost >= 0.005 * mean) /* else the trade changes ~nothing */
            c[nc++] = (struct rs_cand){p->bin[hi].cost - p->bin[lo].cost, hi, lo};
    }
    qsort(c, nc, sizeof *c, cmp_gap);
    double best;
    enum lg_status s = plan_makespan(p, capacity, &best);
    for (size_t i = 0; s == LG_OK && i < nc && budget >= trial; i++) {
        size_t hi = c[i].hi, lo = c[i].lo;
        int r = p->bin[hi].rank;
        p->bin[hi].rank = p->bin[lo].rank;
        p->bin[lo].rank = r;
        double t = 0;
        budget -= trial;
        s = plan_makespan(p, capacity, &t);
        if (s == LG_OK && t < best * (1 - 1e-12)) {
            best = t;
        } else { /* back */
            p->bin[lo].rank = p->bin[hi].rank;
            p->bin[hi].rank = r;
        }
    }
    free(c);
    return s;
}

enum lg_status lg_sched_plan_packed(const lg_job_t *job, uint32_t capacity, uint32_t target, unsigned flags,
                                    lg_plan_t **out)
{
    struct lg_sched_pk p = {.job = job, .D = job->p.data_parallel, .S = job->p.stages, .A = job->nad,
                            .tokens_only = !!(flags & LG_PLAN_TOKENS_ONLY),
                            .no_pacing = !!(flags & LG_PLAN_NO_PACING), .cap = capacity,
                            .tau = target ? target : capacity};
    enum lg_status s = lg_sched_pk_init(&p);
    if (s == LG_OK)
        s = lg_sched_pk_cand_init(&p);
    if (s == LG_OK)
        s = lg_sched_pk_regroup_init(&p);
    if (s == LG_OK)
        s = run_slots(&p);
    if (s == LG_OK && !(flags & LG_PLAN_NO_REFINE))
        s = refine(&p, flags);
    if (s == LG_OK && p.D > 1)
        s = rerank(&p);
    if (s == LG_OK && p.D > 1 && !(flags & (LG_PLAN_NO_REFINE | LG_PLAN_NO_RANK_SEARCH)))
        s = rank_search(&p, capacity);
    if (s == LG_OK)
        s = emit(&p, capacity, out);
    if (s == LG_OK) {
        (*out)->sum.target = p.tau;
        (*out)->sum.candidates = 1;
    }
    lg_sched_pk_regroup_free(&p);
    lg_sched_pk_cand_free(&p);
    lg_sched_pk_free(&p);
    return s;
}

/* Choosing the fill target. The capacity is a ceiling, not a goal: full microbatches minimise overhead per
 * microbatch, but when few adapters can interleave (one adapter, or a memory-derived capacity far above the
 * samples) smaller microbatches keep more of them in flight between optimizer steps. So the slot pass runs for
 * a geometric ladder of targets under the capacity, each is simulated, and the one with the shortest predicted
 * makespan is refined. A slot pass takes a millisecond or two, so the ladder is cheap. */
#define MAX_CANDIDATES 16

static size_t ladder(const lg_job_t *job, uint32_t cap, uint32_t *out)
{
    uint32_t pad = (uint32_t)job->p.pad_multiple, longest = 0;
    for (int a = 0; a < job->nad; a++)
        longest = job->ad[a].info.max_len > longest ? job->ad[a].info.max_len : longest;
    uint32_t floor_t = longest / 4 > 256 ? longest / 4 : 256;
    size_t n = 0;
    /* With D > 1, two rungs just under the capacity too: a slot of slightly smaller microbatches shortens
     * every batch's S-slot gap in time, and there the gaps, not the tokens, bound the plan (DP=2, S=4, het:
     * 18.9% at C, 18.1% at 0.94 C; docs/perf.md). */
    static const double near[] = {0.97, 0.94};
    for (int k = 0; job->p.data_parallel > 1 && k < 2; k++) {
        uint32_t c = (uint32_t)(cap * near[k]) / pad * pad;
        if (n == 0)
            out[n++] = cap / pad * pad;
        if (c >= pad && c >= floor_t && c != out[n - 1])
            out[n++] = c;
    }
    for (double t = n ? cap * 0.8 : cap; n < MAX_CANDIDATES; t *= 0.8) {
        uint32_t c = (uint32_t)t / pad * pad;
        if (c < pad || (n > 0 && c < floor_t))
            break;
        if (n == 0 || c != out[n - 1])
            out[n++] = c;
    }
    return n;
}

/* The planner's work, in the units of LG_SCHED_WORK_LIMIT: every sample is looked at by each of the slot's
 * candidates (fill.c), every optimizer step wakes every stage of every rank in the simulator, and the search
 * over fill targets does both once per rung of the ladder and once more for the winner. Measured on one
 * core: 10,000 adapters of 8 samples at DP=1, 10.6 M, plan in 3.4 s; at DP=64, 102 M, in 14 s; 4 adapters of
 * 1,000 at DP=4096, 66 M, in 2 s. */
double lg_sched_plan_work(const lg_job_t *job, uint32_t cap, int search)
{
    double items = 0, batches = 0;
    for (int a = 0; a < job->nad; a++) {
        items += (double)job->ad[a].info.samples;
        batches += (double)job->ad[a].nbatches;
    }
    int D = job->p.data_parallel;
    int kc = 2 * D < LG_SCHED_PK_CAND ? LG_SCHED_PK_CAND : 2 * D > LG_SCHED_PK_CAND_MAX ? LG_SCHED_PK_CAND_MAX : 2 * D;
    double cand = job->nad < kc ? job->nad : kc;
    uint32_t rungs[MAX_CANDIDATES];
    double passes = search ? (double)ladder(job, cap, rungs) + 1 : 1;
    return passes * (items * cand + batches * D * job->p.stages);
}

enum lg_status lg_sched_plan_search(const lg_job_t *job, uint32_t cap, unsigned flags, lg_plan_t **out)
{
    uint32_t cand[MAX_CANDIDATES];
    size_t n = ladder(job, cap, cand);
    lg_plan_t *best = NULL;
    double best_t = 0;
    uint32_t best_target = 0;
    for (size_t i = 0; i < n; i++) {
        lg_plan_t *p;
        lg_sim_t *sim;
        enum lg_status s = lg_sched_plan_packed(job, cap, cand[i], flags | LG_PLAN_NO_REFINE, &p);
        if (s != LG_OK) {
            lg_plan_free(best);
            return s;
        }
        if ((s = lg_sim_run(job, p, NULL, &sim)) != LG_OK) {
            lg_plan_free(p);
            lg_plan_free(best);
            return s;
        }
        struct lg_sim_stats st;
        lg_sim_get_stats(sim, &st);
        lg_sim_free(sim);
        if (!best || st.makespan_us < best_t * (1 - 1e-9)) {
            lg_plan_free(best);
            best = p;
            best_t = st.makespan_us;
            best_target = cand[i];
        } else {
            lg_plan_free(p);
        }
    }
    if (!(flags & LG_PLAN_NO_REFINE)) { /* refine only the winner: refinement costs more than a slot pass */
        lg_plan_free(best);
        enum lg_status s = lg_sched_plan_packed(job, cap, best_target, flags, &best);
        if (s != LG_OK)
            return s;
    }
    best->sum.target = best_target;
    best->sum.candidates = n;
    *out = best;
    return LG_OK;
}
