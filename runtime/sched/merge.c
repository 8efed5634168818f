/* merge.c: the window-wide merge over a packed plan, the first of the refinement's passes (refine.c). The
 * least-filled slots are emptied into bins with room anywhere within reach (best fit, longest items first)
 * and then deleted, when every adapter's dependency gap across the slot stays >= S once the later slots move
 * up by one. On the target traces it deletes nothing (docs/perf.md): a bin's samples can reach only ~1,000
 * tokens of free room, against the ~4,000 it holds; it is kept for jobs whose slot pass leaves thin slots. */
#include "sched_refine.h"

#include <stdlib.h>
#include <string.h>

/* May slot t go? Every adapter's gap across it must stay >= S once the later slots move up by one. */
static int deletable(const struct lg_sched_sm *m, long t)
{
    const struct lg_sched_refine_in *in = m->in;
    for (size_t b = 0; b < in->nbatch; b++) {
        size_t nx = in->next[b];
        if (m->first[b] <= t && m->last[b] >= t)
            return 0; /* still holds items there */
        if (nx != SIZE_MAX && m->last[b] < t && m->first[nx] > t && m->first[nx] - m->last[b] - 1 < in->S)
            return 0;
    }
    return 1;
}

static void delete_slot(struct lg_sched_sm *m, long t)
{
    const struct lg_sched_refine_in *in = m->in;
    for (size_t j = 0; j < in->nbin; j++) {
        if (m->slot[j] == t)
            m->dead[j] = 1;
        if (m->slot[j] > t)
            m->slot[j]--;
    }
    m->nslot--;
    for (size_t b = 0; b < in->nbatch; b++)
        lg_sched_sm_extent(m, b);
    lg_sched_sm_index_bins(m);
}

/* Empties slot t into other bins within reach (best fit, longest items first), then deletes it; puts
 * everything back when an item finds no room or the slot may not go. Returns 1 when deleted, -1 on OOM. */
static int merge_slot(struct lg_sched_sm *m, long t, uint32_t *moved, size_t *from)
{
    const struct lg_sched_refine_in *in = m->in;
    size_t nmoved = 0;
    int ok = 1;
    for (size_t i = m->slot_first[t]; ok && i < in->nbin && m->slot[i] == t; i++) {
        while (ok && m->nit[i] > 0) {
            uint32_t x = m->items[i][0];
            for (uint32_t k = 1; k < m->nit[i]; k++)
                if (in->len[m->items[i][k]] > in->len[x])
                    x = m->items[i][k];
            long lo = t - in->reach < 0 ? 0 : t - in->reach, hi = t + in->reach;
            size_t best = SIZE_MAX;
            for (size_t j = m->slot_first[lo]; j < in->nbin && m->slot[j] <= hi; j++)
                if (m->slot[j] != t && !m->dead[j] && m->nit[j] > 0 && m->tok[j] + in->len[x] <= in->tau &&
                    (best == SIZE_MAX || m->tok[j] > m->tok[best])) {
                    int r = lg_sched_sm_try_change(m, i, j, &x, 1, NULL, 0);
                    if (r < 0)
                        return -1;
                    if (r) { /* legal: undo, remember, keep looking for a tighter fit */
                        lg_sched_sm_take_out(m, j, x);
                        lg_sched_sm_put_in(m, i, x);
                        lg_sched_sm_extent(m, in->batch[x]);
                        best = j;
                    }
                }
            if (best == SIZE_MAX || lg_sched_sm_try_change(m, i, best, &x, 1, NULL, 0) != 1) {
                ok = 0;
                break;
            }
            moved[nmoved] = x;
            from[nmoved++] = i;
        }
    }
    if (ok && deletable(m, t)) {
        delete_slot(m, t);
        return 1;
    }
    while (nmoved > 0) { /* undo, newest first: each step restores a state that was legal */
        nmoved--;
        uint32_t x = moved[nmoved];
        lg_sched_sm_take_out(m, in->bin[x], x);
        lg_sched_sm_put_in(m, from[nmoved], x);
        lg_sched_sm_extent(m, in->batch[x]);
    }
    return 0;
}

static int cmp_fill(const void *x, const void *y, void *ctx)
{
    const uint64_t *fill = ctx;
    uint64_t a = fill[*(const long *)x], b = fill[*(const long *)y];
    return (a > b) - (a < b);
}

/* The window-wide merge: repeatedly tries to empty one of the least-filled slots, up to `limit` deletions. */
int lg_sched_sm_merge(struct lg_sched_sm *m, size_t limit)
{
    const struct lg_sched_refine_in *in = m->in;
    uint32_t *moved = malloc((in->nitem + 1) * sizeof *moved);
    size_t *from = malloc((in->nitem + 1) * sizeof *from);
    long *order = malloc(((size_t)m->nslot + 1) * sizeof *order);
    uint64_t *fill = calloc((size_t)m->nslot + 1, sizeof *fill);
    int rc = moved && from && order && fill ? 0 : -1;
    for (size_t deleted = 0; rc == 0 && deleted < limit;) {
        long n = m->nslot;
        memset(fill, 0, ((size_t)n + 1) * sizeof *fill);
        for (size_t j = 0; j < in->nbin; j++)
            if (!m->dead[j])
                fill[m->slot[j]] += m->tok[j];
        for (long t = 0; t < n; t++)
            order[t] = t;
        qsort_r(order, (size_t)n, sizeof *order, cmp_fill, fill);
        int any = 0;
        for (long k = 0; rc == 0 && k < n && k < 48 && !any; k++) {
            int r = merge_slot(m, order[k], moved, from);
            rc = r < 0 ? -1 : 0;
            any = r > 0;
        }
        if (!any)
            break;
        deleted++;
    }
    free(moved);
    free(from);
    free(order);
    free(fill);
    return rc;
}

