/* sm_moves.c: the moves on the window-wide passes' state (sched_refine.h): Phi's change for a move, the slot
 * extent of a batch, taking an item out of a bin and putting it into another, trying a change and undoing it
 * when a rule breaks, and the bin indexes. Below both passes: refine.c (smoothing) and merge.c call it, it calls
 * neither, so no file calls back into one that calls it. */
#include "sched_refine.h"
#include "lg_base.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Under 1F1B with S stages, a cycle of the steady state runs the backward of microbatch t and, on the other
 * stages, the forwards of t+1 .. t+S-1, and the slowest stage sets its pace. The makespan therefore follows
 * Phi = sum over t of max(c(t) .. c(t+S-1)) (each rank's sequence, windows cut at the ends) closely: a run of
 * R equally dear microbatches among cheaper ones costs (S-1) x the difference once, whatever R is. Grouping
 * the dear ones into runs is what lowers Phi; a total-variation measure rewards that far less. */

/* Phi over the windows that hold bin u or bin v (chain positions), with bins i and j at costs ci and cj,
 * minus the same at the current costs. */
static double delta_win(const struct lg_sched_sm *m, size_t i, double ci, size_t j, double cj, int pair)
{
    const int W = m->in->S;
    if (W <= 1)
        return 0;
    /* the chain segment from W-1 before the earlier bin to W-1 after the later one */
    size_t lo = i, hi = pair ? j : i;
    if (pair && m->rpos[j] < m->rpos[i])
        lo = j, hi = i;
    size_t seg[LG_SCHED_SM_MAXSEG];
    long p0 = m->rpos[lo];
    for (int k = 0; k < W - 1 && m->pb[lo] != SIZE_MAX; k++)
        lo = m->pb[lo], p0--;
    int n = 0;
    for (size_t u = lo; u != SIZE_MAX && n < LG_SCHED_SM_MAXSEG; u = m->nb[u]) {
        seg[n++] = u;
        if (m->rpos[u] >= m->rpos[hi] + W - 1)
            break;
    }
    long pi = m->rpos[i], pj = pair ? m->rpos[j] : pi;
    double d = 0;
    for (long t = (pi < pj ? pi : pj) - W + 1; t <= (pi > pj ? pi : pj); t++) {
        if (!((t <= pi && pi < t + W) || (t <= pj && pj < t + W)))
            continue;
        double before = 0, after = 0;
        for (long q = t; q < t + W; q++) {
            long k = q - p0;
            if (k < 0 || k >= n)
                continue;
            size_t u = seg[k];
            double c = m->c[u];
            before = c > before ? c : before;
            double c2 = u == i ? ci : (pair && u == j) ? cj : c;
            after = c2 > after ? c2 : after;
        }
        d += after - before;
    }
    return d;
}

/* The change of Phi when bins i and j take costs ci and cj. */
double lg_sched_sm_delta2(const struct lg_sched_sm *m, size_t i, double ci, size_t j, double cj)
{
    const struct lg_sched_refine_in *in = m->in;
    if (m->dp)
        return lg_sched_phi_delta(&m->ph, (const size_t[]){i, j}, (const double[]){ci, cj}, 2);
    if (in->rank[i] != in->rank[j] || labs(m->rpos[i] - m->rpos[j]) > 2L * (in->S - 1))
        return delta_win(m, i, ci, i, ci, 0) + delta_win(m, j, cj, j, cj, 0);
    return delta_win(m, i, ci, j, cj, 1);
}

void lg_sched_sm_extent(struct lg_sched_sm *m, size_t b)
{
    const struct lg_sched_refine_in *in = m->in;
    m->first[b] = LONG_MAX;
    m->last[b] = LONG_MIN;
    for (size_t k = in->bfirst[b]; k < in->bfirst[b + 1]; k++) {
        long t = m->slot[in->bin[k]];
        m->first[b] = t < m->first[b] ? t : m->first[b];
        m->last[b] = t > m->last[b] ? t : m->last[b];
    }
}

/* Batch b keeps S slots from its neighbours, and shares no bin with another batch of its adapter. */
int lg_sched_sm_batch_ok(const struct lg_sched_sm *m, size_t b)
{
    const struct lg_sched_refine_in *in = m->in;
    if (in->prev[b] != SIZE_MAX && m->first[b] - m->last[in->prev[b]] < in->S)
        return 0;
    if (in->next[b] != SIZE_MAX && m->first[in->next[b]] - m->last[b] < in->S)
        return 0;
    return 1;
}

static int bin_ok(const struct lg_sched_sm *m, size_t j)
{
    const struct lg_sched_refine_in *in = m->in;
    if (m->tok[j] > in->tau && m->nit[j] > 1)
        return 0;
    for (uint32_t k = 0; k < m->nit[j]; k++)
        for (uint32_t q = 0; q < k; q++) {
            size_t bk = in->batch[m->items[j][k]], bq = in->batch[m->items[j][q]];
            if (bk != bq && in->adapter[bk] == in->adapter[bq])
                return 0;
        }
    return 1;
}

void lg_sched_sm_take_out(struct lg_sched_sm *m, size_t i, uint32_t x)
{
    for (uint32_t k = 0; k < m->nit[i]; k++)
        if (m->items[i][k] == x) {
            m->items[i][k] = m->items[i][--m->nit[i]];
            break;
        }
    m->c[i] -= m->in->cost[x];
    m->tok[i] -= m->in->len[x];
    if (m->dp)
        lg_sched_phi_set(&m->ph, i, m->c[i]);
}

int lg_sched_sm_put_in(struct lg_sched_sm *m, size_t j, uint32_t x)
{
    if (m->nit[j] == m->cap_it[j]) {
        uint32_t nc = m->cap_it[j] ? 2 * m->cap_it[j] : 8;
        uint32_t *n = realloc(m->items[j], nc * sizeof *n);
        if (!n)
            return -1;
        m->items[j] = n;
        m->cap_it[j] = nc;
    }
    m->items[j][m->nit[j]++] = x;
    m->c[j] += m->in->cost[x];
    m->tok[j] += m->in->len[x];
    m->in->bin[x] = (uint32_t)j;
    if (m->dp)
        lg_sched_phi_set(&m->ph, j, m->c[j]);
    return 0;
}

/* Moves the listed items (from bin i to j and from j to i), then checks every rule they touch; undoes
 * the change and returns 0 when one breaks. -1 on OOM. */
int lg_sched_sm_try_change(struct lg_sched_sm *m, size_t i, size_t j, const uint32_t *xi, int ni, const uint32_t *xj, int nj)
{
    const struct lg_sched_refine_in *in = m->in;
    for (int k = 0; k < ni; k++)
        lg_sched_sm_take_out(m, i, xi[k]);
    for (int k = 0; k < nj; k++)
        lg_sched_sm_take_out(m, j, xj[k]);
    int oom = 0;
    for (int k = 0; k < ni; k++)
        oom |= lg_sched_sm_put_in(m, j, xi[k]);
    for (int k = 0; k < nj; k++)
        oom |= lg_sched_sm_put_in(m, i, xj[k]);
    if (oom)
        return -1;
    int ok = bin_ok(m, i) && bin_ok(m, j);
    for (int pass = 0; pass < 2; pass++) /* extents, then the rules */
        for (int k = 0; k < ni + nj; k++) {
            size_t b = in->batch[k < ni ? xi[k] : xj[k - ni]];
            if (pass == 0)
                lg_sched_sm_extent(m, b);
            else
                ok = ok && lg_sched_sm_batch_ok(m, b);
        }
    if (ok)
        return 1;
    for (int k = 0; k < ni; k++)
        lg_sched_sm_take_out(m, j, xi[k]);
    for (int k = 0; k < nj; k++)
        lg_sched_sm_take_out(m, i, xj[k]);
    for (int k = 0; k < ni; k++)
        lg_sched_sm_put_in(m, i, xi[k]);
    for (int k = 0; k < nj; k++)
        lg_sched_sm_put_in(m, j, xj[k]);
    for (int k = 0; k < ni + nj; k++)
        lg_sched_sm_extent(m, in->batch[k < ni ? xi[k] : xj[k - ni]]);
    return 0;
}


/* Bins by slot for the reach scans, and each rank's chain of live bins. */
void lg_sched_sm_index_bins(struct lg_sched_sm *m)
{
    const struct lg_sched_refine_in *in = m->in;
    size_t j = 0, *last = m->lastr;
    for (long t = 0; t <= m->nslot; t++) {
        while (j < in->nbin && m->slot[j] < t)
            j++;
        m->slot_first[t] = j;
    }
    for (int r = 0; r < in->D; r++)
        last[r] = SIZE_MAX;
    for (j = 0; j < in->nbin; j++) {
        m->pb[j] = m->nb[j] = SIZE_MAX;
        if (m->dead[j])
            continue;
        int r = in->rank[j];
        m->pb[j] = last[r];
        m->rpos[j] = last[r] == SIZE_MAX ? 0 : m->rpos[last[r]] + 1;
        if (last[r] != SIZE_MAX)
            m->nb[last[r]] = j;
        last[r] = j;
    }
}
