/* phi.c: the makespan model of a data-parallel plan, for the smoothing (refine.c) when D > 1.
 *
 * On one rank, 1F1B runs at the pace of the dearest microbatch of each window of S positions, so the makespan
 * follows Phi = sum over t of max(c(t) .. c(t+S-1)) (refine.c has the derivation). With D ranks, every
 * optimizer step waits for the adapter's backwards on every rank, and with four adapters a step falls due
 * almost every slot: the ranks are pulled back into step all the time, and the faster one idles while the
 * slower finishes. So a slot costs what its dearest microbatch costs, and the plan's makespan follows Phi
 * over the sequence of slot costs, each the maximum over the slot's bins. Measured on the benchmark's mix
 * trace at DP=2, S=4 before this model: the two microbatches of a slot differed by 13% of a microbatch's cost
 * on average, and the simulator's cross-rank holds cost 3.5 of the 15.2 points of bubble.
 *
 * This file keeps the slot costs and evaluates a change of some bins' costs without applying it. Slots are
 * given as bins in slot order (slot_first); a bin's cost is set by the caller whenever it changes. */
#include "sched_internal.h"
#include "lg_base.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOUCHED (4 * LG_SCHED_MAX_STAGES + 8) /* distinct slots one change may touch */

enum lg_status lg_sched_phi_init(struct lg_sched_phi *ph, size_t nbin, long nslot, int S, const long *slot,
                                 const size_t *slot_first)
{
    memset(ph, 0, sizeof *ph);
    ph->nbin = nbin;
    ph->nslot = nslot;
    ph->S = S;
    ph->slot = slot;
    ph->slot_first = slot_first;
    ph->cost = calloc(nbin + 1, sizeof *ph->cost);
    ph->smax = calloc((size_t)nslot + 1, sizeof *ph->smax);
    ph->top = malloc(((size_t)nslot + 1) * sizeof *ph->top);
    if (!ph->cost || !ph->smax || !ph->top) {
        lg_sched_phi_free(ph);
        return lg_fail(LG_ERR_OOM, "plan: out of memory");
    }
    for (long t = 0; t < nslot; t++)
        ph->top[t] = (struct lg_sched_phi_top){{0, 0, 0}, {SIZE_MAX, SIZE_MAX, SIZE_MAX}};
    return LG_OK;
}

void lg_sched_phi_free(struct lg_sched_phi *ph)
{
    free(ph->cost);
    free(ph->smax);
    free(ph->top);
    memset(ph, 0, sizeof *ph);
}

/* The dearest bin of slot t, with bins chg[0..n) at costs nc[0..n). The slot's three dearest bins are kept,
 * and a change touches at most two bins of a slot (a move or swap; a rotation moves along one rank, which has
 * one bin per slot), so the dearest unchanged one is among them: no scan of the slot's D bins. */
static double slot_max(const struct lg_sched_phi *ph, long t, const size_t *chg, const double *nc, int n)
{
    double mx = 0;
    for (int k = 0; k < n; k++)
        if (ph->slot[chg[k]] == t && nc[k] > mx)
            mx = nc[k];
    const struct lg_sched_phi_top *tp = &ph->top[t];
    for (int q = 0; q < 3; q++) {
        int changed = 0;
        for (int k = 0; k < n; k++)
            changed |= chg[k] == tp->bin[q];
        if (!changed) {
            mx = tp->cost[q] > mx ? tp->cost[q] : mx;
            break;
        }
    }
    return mx;
}

void lg_sched_phi_set(struct lg_sched_phi *ph, size_t bin, double cost)
{
    ph->cost[bin] = cost;
    long t = ph->slot[bin];
    struct lg_sched_phi_top *tp = &ph->top[t];
    *tp = (struct lg_sched_phi_top){{0, 0, 0}, {SIZE_MAX, SIZE_MAX, SIZE_MAX}};
    for (size_t j = ph->slot_first[t]; j < ph->slot_first[t + 1]; j++) {
        double c = ph->cost[j];
        int q = 3;
        while (q > 0 && (tp->bin[q - 1] == SIZE_MAX || c > tp->cost[q - 1]))
            q--;
        if (q == 3)
            continue;
        for (int r = 2; r > q; r--) {
            tp->cost[r] = tp->cost[r - 1];
            tp->bin[r] = tp->bin[r - 1];
        }
        tp->cost[q] = c;
        tp->bin[q] = j;
    }
    ph->smax[t] = tp->bin[0] == SIZE_MAX ? 0 : tp->cost[0];
}

static int cmp_long(const void *x, const void *y)
{
    long a = *(const long *)x, b = *(const long *)y;
    return (a > b) - (a < b);
}

/* The slot cost of t after the change: the new maximum when t is touched, else the current one. */
static double cost_at(const struct lg_sched_phi *ph, long t, const long *ts, const double *nm, int nt)
{
    if (t < 0 || t >= ph->nslot)
        return 0;
    for (int k = 0; k < nt; k++)
        if (ts[k] == t)
            return nm[k];
    return ph->smax[t];
}

double lg_sched_phi_delta(const struct lg_sched_phi *ph, const size_t *chg, const double *nc, int n)
{
    const int W = ph->S;
    if (W <= 1 || n <= 0)
        return 0;
    long ts[MAX_TOUCHED];
    double nm[MAX_TOUCHED];
    int nt = 0;
    for (int k = 0; k < n && nt < MAX_TOUCHED; k++)
        ts[nt++] = ph->slot[chg[k]];
    qsort(ts, (size_t)nt, sizeof *ts, cmp_long);
    int u = 0;
    for (int k = 0; k < nt; k++)
        if (k == 0 || ts[k] != ts[u - 1])
            ts[u++] = ts[k];
    nt = u;
    for (int k = 0; k < nt; k++)
        nm[k] = slot_max(ph, ts[k], chg, nc, n);
    double d = 0;
    long done = LONG_MIN; /* windows start at w = t-W+1 .. t for each touched t, each counted once */
    for (int k = 0; k < nt; k++) {
        long w0 = ts[k] - W + 1 > done ? ts[k] - W + 1 : done;
        for (long w = w0; w <= ts[k]; w++) {
            double before = 0, after = 0;
            for (long q = w; q < w + W; q++) {
                double b = q >= 0 && q < ph->nslot ? ph->smax[q] : 0, a = cost_at(ph, q, ts, nm, nt);
                before = b > before ? b : before;
                after = a > after ? a : after;
            }
            d += after - before;
        }
        done = ts[k] + 1;
    }
    return d;
}
