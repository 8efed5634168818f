/* fill.c: how our planner fills one microbatch from the global batches that may run in its slot.
 *
 * Three steps. First the urgent shares: each open batch, earliest deadline first, gets its remaining tokens
 * spread over the bins left before its deadline, longest samples first (they are the hardest to place
 * later). Then best fit: the longest sample that still fits, from any batch on pace, else from one that may
 * start early. Last, trades that close the room: an item of the bin for a longer one from the pool (or two
 * for one), which hands shorter samples back to the pool for later bins, where they are scarce. Then the
 * regroup (regroup.c) closes what room is left by re-choosing each batch's subset. A bin is limited by
 * tokens and, unless tokens-only, by modelled cost. Items move only through pack_state.c. */
#include "sched_pack.h"

#include <math.h>
#include <stdlib.h>

static int fits(const struct lg_sched_pk *p, const struct lg_sched_pk_bin *bn, const struct lg_sched_pk_item *it)
{
    if (bn->n == 0)
        return 1; /* anything up to the capacity (checked when the job was built) */
    if (bn->tokens + it->len > p->tau)
        return 0;
    return p->tokens_only || bn->cost + it->cost <= p->klim;
}

/* The longest unplaced item of batch b that fits the bin, or UINT32_MAX. */
static uint32_t best_of(const struct lg_sched_pk *p, const struct lg_sched_pk_bin *bn, size_t b)
{
    const struct lg_sched_pk_batch *bt = &p->bt[b];
    for (uint32_t k = bt->first; k < bt->first + bt->n; k++)
        if (p->it[k].bin < 0 && fits(p, bn, &p->it[k]))
            return k;
    return UINT32_MAX;
}

static int cmp_deadline(const void *x, const void *y, void *ctx)
{
    const struct lg_sched_pk *p = ctx;
    double a = p->bt[*(const size_t *)x].deadline, b = p->bt[*(const size_t *)y].deadline;
    return (a > b) - (a < b);
}

static void fill_urgent(struct lg_sched_pk *p, size_t bi, long t, int k_in_slot, size_t *cand)
{
    int n = 0;
    for (int i = 0; i < p->ncand; i++) {
        size_t b;
        if (lg_sched_pk_eligible(p, p->cand[i], t, 0, &b))
            cand[n++] = b;
    }
    qsort_r(cand, (size_t)n, sizeof *cand, cmp_deadline, p);
    for (int i = 0; i < n; i++) {
        struct lg_sched_pk_batch *bt = &p->bt[cand[i]];
        double bins_left = fmax(1.0, (bt->deadline - (double)t + 1) * p->D - k_in_slot);
        double quota = (double)bt->tok_left / bins_left, taken = 0;
        while (taken < quota) {
            uint32_t k = best_of(p, &p->bin[bi], cand[i]);
            if (k == UINT32_MAX)
                break;
            lg_sched_pk_place(p, bi, cand[i], k);
            taken += p->it[k].len;
        }
    }
}

static void fill_best(struct lg_sched_pk *p, size_t bi, long t)
{
    for (;;) {
        uint32_t best = UINT32_MAX;
        size_t bb = 0;
        for (int early = 0; early < 2 && best == UINT32_MAX; early++)
            for (int i = 0; i < p->ncand; i++) {
                size_t b;
                if (!lg_sched_pk_eligible(p, p->cand[i], t, early, &b))
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
        lg_sched_pk_place(p, bi, bb, best);
    }
}

/* May item k leave the bin in a trade? Only when its batch was open before the slot (so no batch opens or
 * closes by the trade) and is not due (so it cannot miss its deadline). */
static int tradeable(const struct lg_sched_pk *p, uint32_t k, long t)
{
    size_t b = lg_sched_pk_batch_of(p, k);
    return p->open[p->bt[b].a] == (long)b && p->bt[b].opened < t && p->bt[b].deadline >= (double)t + 2;
}

static void close_gap(struct lg_sched_pk *p, size_t bi, long t)
{
    for (int round = 0; round < 4; round++) {
        struct lg_sched_pk_bin *bn = &p->bin[bi];
        uint32_t room = p->tau > bn->tokens ? p->tau - bn->tokens : 0;
        if (room == 0 || bn->n == 0)
            return;
        uint32_t gain = 0, ky = UINT32_MAX, x1 = UINT32_MAX, x2 = UINT32_MAX, *tr = p->trade;
        size_t ntr = 0; /* the bin's items that may leave, in the bin's order, found once per round */
        for (size_t i = 0; i < p->ncur; i++)
            if (tradeable(p, p->cur[i], t))
                tr[ntr++] = p->cur[i];
        for (int c = 0; c < p->ncand && ntr > 0; c++) {
            size_t b;
            if (!lg_sched_pk_eligible(p, p->cand[c], t, 0, &b))
                continue;
            const struct lg_sched_pk_batch *bt = &p->bt[b];
            for (uint32_t k = bt->first; k < bt->first + bt->n; k++) {
                uint32_t ly = p->it[k].len;
                if (p->it[k].bin >= 0)
                    continue;
                for (size_t i = 0; i < ntr; i++) {
                    uint32_t a1 = tr[i], l1 = p->it[a1].len;
                    if (ly > l1 && ly - l1 <= room && ly - l1 > gain)
                        gain = ly - l1, ky = k, x1 = a1, x2 = UINT32_MAX;
                    for (size_t j = i + 1; j < ntr && ly > l1; j++) {
                        uint32_t a2 = tr[j], l2 = l1 + p->it[a2].len;
                        if (ly > l2 && ly - l2 <= room && ly - l2 > gain)
                            gain = ly - l2, ky = k, x1 = a1, x2 = a2;
                    }
                }
            }
        }
        if (gain == 0)
            return;
        lg_sched_pk_unplace(p, bi, x1);
        if (x2 != UINT32_MAX)
            lg_sched_pk_unplace(p, bi, x2);
        lg_sched_pk_place(p, bi, lg_sched_pk_batch_of(p, ky), ky);
    }
}

void lg_sched_pk_fill(struct lg_sched_pk *p, size_t bi, long t, int d, size_t *cand)
{
    p->ncur = 0;
    fill_urgent(p, bi, t, d, cand);
    fill_best(p, bi, t);
    close_gap(p, bi, t);
    lg_sched_pk_regroup(p, bi, t);
}

/* ---- data parallel: the bins of one slot run side by side on the D ranks ---- */

/* One move or swap between the dearest and the cheapest bin that lowers the dearer of the two; 0 when none. */
static int balance_step(struct lg_sched_pk *p, size_t first, const uint32_t *items, size_t n)
{
    size_t hi = first, lo = first;
    for (size_t b = first; b < p->nbin; b++) {
        if (p->bin[b].cost > p->bin[hi].cost)
            hi = b;
        if (p->bin[b].cost < p->bin[lo].cost)
            lo = b;
    }
    const struct lg_sched_pk_bin *H = &p->bin[hi], *L = &p->bin[lo];
    if (hi == lo || H->n < 1)
        return 0;
    uint32_t hx[64], lx[64]; /* the two bins' items */
    size_t nh = 0, nl = 0;
    for (size_t i = 0; i < n; i++) {
        if (p->it[items[i]].bin == (int)hi && nh < 64)
            hx[nh++] = items[i];
        else if (p->it[items[i]].bin == (int)lo && nl < 64)
            lx[nl++] = items[i];
    }
    double best = H->cost * (1 - 1e-9);
    uint32_t bx = UINT32_MAX, by = UINT32_MAX;
    for (size_t i = 0; i < nh; i++) {
        const struct lg_sched_pk_item *x = &p->it[hx[i]];
        if (H->n > 1 && (L->n == 0 || L->tokens + x->len <= p->tau)) {
            double m = fmax(H->cost - x->cost, L->cost + x->cost);
            if (m < best)
                best = m, bx = hx[i], by = UINT32_MAX;
        }
        for (size_t j = 0; j < nl; j++) {
            const struct lg_sched_pk_item *y = &p->it[lx[j]];
            if (L->tokens - y->len + x->len > p->tau || H->tokens - x->len + y->len > p->tau)
                continue;
            double m = fmax(H->cost - x->cost + y->cost, L->cost - y->cost + x->cost);
            if (m < best)
                best = m, bx = hx[i], by = lx[j];
        }
    }
    if (bx == UINT32_MAX)
        return 0;
    lg_sched_pk_move(p, bx, lo);
    if (by != UINT32_MAX)
        lg_sched_pk_move(p, by, hi);
    return 1;
}

void lg_sched_pk_balance(struct lg_sched_pk *p, size_t first, const uint32_t *items, size_t n)
{
    for (int round = 0; round < 64 && balance_step(p, first, items, n); round++)
        ;
}
