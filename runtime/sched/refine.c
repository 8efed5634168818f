/* refine.c: the window-wide passes over a packed plan: merge (merge.c), then smoothing, and the state and
 * moves both use (sched_refine.h).
 *
 * Smoothing: under 1F1B, stage s runs the forward of microbatch t + S-1-s next to the backward of t, so a
 * cost that jumps between neighbours leaves the other stages idle. The objective is Phi (see delta_win): the
 * sum of each window's dearest microbatch. A microbatch holding one 4096-token sample alone costs ~12% more
 * than a full one of short samples and cannot be made cheaper, so the cure is its neighbourhood: runs instead
 * of spikes. Local search: rotate a bin's contents up to S positions along its rank; then, best improvement
 * per item, move an item to another bin, swap two items, or exchange two whole bins of a rank, within
 * `reach` slots, under the token limit, keeping every global batch S slots clear of its neighbours and alone
 * per bin for its adapter; a change is applied, checked, and undone when a rule breaks. Slots never change:
 * only which bin holds which items. With D > 1 ranks the objective is Phi over slot costs, each the dearest
 * of the slot's bins (phi.c), since the ranks wait for each other at the optimizer steps. The moves on the
 * shared state are sm_moves.c's. */
#include "sched_refine.h"
#include "lg_base.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* With many ranks, the bins within reach are (2S+5) x D: an item looks only at the bins of its own slot and of
 * its own rank, so that a pass stays linear in the bins. Up to 8 ranks it looks at all of them. */
#define WIDE_RANKS 8

static int within(const struct lg_sched_sm *m, size_t i, size_t j)
{
    const struct lg_sched_refine_in *in = m->in;
    return in->D <= WIDE_RANKS || m->slot[j] == m->slot[i] || in->rank[j] == in->rank[i];
}

/* Tries, for item x, every move to and swap with a bin within reach, and every exchange of whole bins of
 * the same rank; takes the first legal change that lowers the variation, best first. */
static int improve(struct lg_sched_sm *m, uint32_t x)
{
    const struct lg_sched_refine_in *in = m->in;
    size_t i = in->bin[x];
    long lo = m->slot[i] - in->reach, hi = m->slot[i] + in->reach;
    struct cand {
        double d;
        size_t j;
        uint32_t y; /* UINT32_MAX: move; UINT32_MAX - 1: exchange bins */
    } c[256];
    int n = 0;
    lo = lo < 0 ? 0 : lo > m->nslot ? m->nslot : lo;
    for (size_t j = m->slot_first[lo]; j < in->nbin && m->slot[j] <= hi && n < 250; j++) {
        if (j == i || m->dead[j] || !within(m, i, j))
            continue;
        if (m->nit[i] > 1 && m->tok[j] + in->len[x] <= in->tau) {
            double d = lg_sched_sm_delta2(m, i, m->c[i] - in->cost[x], j, m->c[j] + in->cost[x]);
            if (d < 0)
                c[n++] = (struct cand){d, j, UINT32_MAX};
        }
        if (in->rank[j] == in->rank[i]) {
            double d = lg_sched_sm_delta2(m, i, m->c[j], j, m->c[i]);
            if (d < 0)
                c[n++] = (struct cand){d, j, UINT32_MAX - 1};
        }
        for (uint32_t k = 0; k < m->nit[j] && n < 250; k++) {
            uint32_t y = m->items[j][k];
            if (m->tok[j] - in->len[y] + in->len[x] > in->tau || m->tok[i] - in->len[x] + in->len[y] > in->tau)
                continue;
            double d = lg_sched_sm_delta2(m, i, m->c[i] - in->cost[x] + in->cost[y], j, m->c[j] - in->cost[y] + in->cost[x]);
            if (d < 0)
                c[n++] = (struct cand){d, j, y};
        }
    }
    for (int tries = 0; tries < 4 && n > 0; tries++) {
        int b = 0;
        for (int k = 1; k < n; k++)
            if (c[k].d < c[b].d)
                b = k;
        struct cand ch = c[b];
        c[b] = c[--n];
        int r;
        if (ch.y == UINT32_MAX) {
            r = lg_sched_sm_try_change(m, i, ch.j, &x, 1, NULL, 0);
        } else if (ch.y == UINT32_MAX - 1) {
            uint32_t xi[64], xj[64];
            int ni = (int)m->nit[i], nj = (int)m->nit[ch.j];
            if (ni > 64 || nj > 64)
                continue;
            memcpy(xi, m->items[i], (size_t)ni * sizeof *xi);
            memcpy(xj, m->items[ch.j], (size_t)nj * sizeof *xj);
            r = lg_sched_sm_try_change(m, i, ch.j, xi, ni, xj, nj);
        } else {
            r = lg_sched_sm_try_change(m, i, ch.j, &x, 1, &ch.y, 1);
        }
        if (r != 0)
            return r;
    }
    return 0;
}

/* ---- rotations: move one bin's contents along its rank, shifting the bins between by one ---- */

/* Phi over the windows that touch chain positions [a, b] of the segment seg (positions p0 ..), where the
 * costs are cost[k] for seg[k]. */
static double phi_span(const double *cost, int n, long p0, long a, long b, int W)
{
    double sum = 0;
    for (long t = a - W + 1; t <= b; t++) {
        double mx = 0;
        for (long q = t; q < t + W; q++) {
            long k = q - p0;
            if (k >= 0 && k < n && cost[k] > mx)
                mx = cost[k];
        }
        sum += mx;
    }
    return sum;
}

/* Rotates the contents of the chain bins ch[0..L): forward (ch[L-1]'s go to ch[0], the others one on) or
 * back. Only the containers move; the caller checks the rules. */
static void rotate(struct lg_sched_sm *m, const size_t *ch, int L, int forward)
{
    int from = forward ? L - 1 : 0, step = forward ? -1 : 1;
    uint32_t *it = m->items[ch[from]], nit = m->nit[ch[from]], cap = m->cap_it[ch[from]];
    double c = m->c[ch[from]];
    uint32_t tok = m->tok[ch[from]];
    for (int k = from; forward ? k > 0 : k < L - 1; k += step) {
        size_t d = ch[k], s = ch[k + step];
        m->items[d] = m->items[s], m->nit[d] = m->nit[s], m->cap_it[d] = m->cap_it[s];
        m->c[d] = m->c[s], m->tok[d] = m->tok[s];
    }
    size_t d = ch[forward ? 0 : L - 1];
    m->items[d] = it, m->nit[d] = nit, m->cap_it[d] = cap, m->c[d] = c, m->tok[d] = tok;
    for (int k = 0; k < L; k++) {
        for (uint32_t q = 0; q < m->nit[ch[k]]; q++)
            m->in->bin[m->items[ch[k]][q]] = (uint32_t)ch[k];
        if (m->dp)
            lg_sched_phi_set(&m->ph, ch[k], m->c[ch[k]]);
    }
}

static int rotation_ok(struct lg_sched_sm *m, const size_t *ch, int L)
{
    const struct lg_sched_refine_in *in = m->in;
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < L; k++)
            for (uint32_t q = 0; q < m->nit[ch[k]]; q++) {
                size_t b = in->batch[m->items[ch[k]][q]];
                if (pass == 0)
                    lg_sched_sm_extent(m, b);
                else if (!lg_sched_sm_batch_ok(m, b))
                    return 0;
            }
    return 1;
}

/* For bin i, tries moving its contents to every chain position within `span`, best Phi gain first. */
static int improve_rot(struct lg_sched_sm *m, size_t i, int span)
{
    const int W = m->in->S;
    size_t seg[LG_SCHED_SM_MAXSEG];
    double cost[LG_SCHED_SM_MAXSEG], alt[LG_SCHED_SM_MAXSEG];
    size_t lo = i;
    for (int k = 0; k < span + W - 1 && m->pb[lo] != SIZE_MAX; k++)
        lo = m->pb[lo];
    int n = 0, at = -1;
    for (size_t u = lo; u != SIZE_MAX && n < LG_SCHED_SM_MAXSEG; u = m->nb[u]) {
        if (u == i)
            at = n;
        seg[n] = u;
        cost[n++] = m->c[u];
        if (at >= 0 && n - at > span + W - 1)
            break;
    }
    long p0 = m->rpos[lo];
    struct { double d; int to; } c[2 * 64 + 2];
    int nc = 0;
    for (int to = at - span; to <= at + span; to++) {
        if (to < 0 || to >= n || to == at || nc >= 2 * 64)
            continue;
        int a = to < at ? to : at, b = to < at ? at : to;
        memcpy(alt, cost, (size_t)n * sizeof *alt);
        if (to < at) { /* i's contents go back to `to`, the others move on */
            for (int k = at; k > to; k--)
                alt[k] = cost[k - 1];
        } else {
            for (int k = at; k < to; k++)
                alt[k] = cost[k + 1];
        }
        alt[to] = cost[at];
        double d = m->dp ? lg_sched_phi_delta(&m->ph, seg + a, alt + a, b - a + 1)
                         : phi_span(alt, n, p0, p0 + a, p0 + b, W) - phi_span(cost, n, p0, p0 + a, p0 + b, W);
        if (d < -1e-9)
            c[nc++] = (typeof(c[0])){d, to};
    }
    for (int tries = 0; tries < 3 && nc > 0; tries++) {
        int bst = 0;
        for (int k = 1; k < nc; k++)
            if (c[k].d < c[bst].d)
                bst = k;
        int to = c[bst].to;
        c[bst] = c[--nc];
        int a = to < at ? to : at, L = (to < at ? at : to) - a + 1;
        int fwd = to < at; /* contents move toward the end of the span, i's to its start */
        rotate(m, seg + a, L, fwd);
        if (rotation_ok(m, seg + a, L))
            return 1;
        rotate(m, seg + a, L, !fwd);
        rotation_ok(m, seg + a, L); /* restores the extents */
    }
    return 0;
}


static void sm_free(struct lg_sched_sm *m, size_t nbin)
{
    for (size_t j = 0; m->items && j < nbin; j++)
        free(m->items[j]);
    free(m->items);
    free(m->c);
    free(m->tok);
    free(m->nit);
    free(m->cap_it);
    free(m->first);
    free(m->last);
    free(m->pb);
    free(m->nb);
    free(m->slot);
    free(m->slot_first);
    free(m->dead);
    free(m->lastr);
    free(m->rpos);
}

static enum lg_status sm_init(struct lg_sched_sm *m, const struct lg_sched_refine_in *in)
{
    size_t nb = in->nbin;
    m->in = in;
    m->nslot = nb ? in->slot[nb - 1] + 1 : 0;
    m->c = calloc(nb + 1, sizeof *m->c);
    m->tok = calloc(nb + 1, sizeof *m->tok);
    m->items = calloc(nb + 1, sizeof *m->items);
    m->nit = calloc(nb + 1, sizeof *m->nit);
    m->cap_it = calloc(nb + 1, sizeof *m->cap_it);
    m->first = malloc((in->nbatch + 1) * sizeof *m->first);
    m->last = malloc((in->nbatch + 1) * sizeof *m->last);
    m->pb = malloc((nb + 1) * sizeof *m->pb);
    m->nb = malloc((nb + 1) * sizeof *m->nb);
    m->slot = malloc((nb + 1) * sizeof *m->slot);
    m->slot_first = malloc(((size_t)m->nslot + 2) * sizeof *m->slot_first);
    m->dead = calloc(nb + 1, 1);
    m->lastr = malloc(((size_t)in->D + 1) * sizeof *m->lastr);
    m->rpos = malloc((nb + 1) * sizeof *m->rpos);
    if (!m->rpos || !m->c || !m->tok || !m->items || !m->nit || !m->cap_it || !m->first || !m->last || !m->pb || !m->nb ||
        !m->slot || !m->slot_first || !m->dead || !m->lastr)
        return lg_fail(LG_ERR_OOM, "plan: out of memory");
    for (size_t j = 0; j < nb; j++) {
        m->c[j] = in->c0;
        m->slot[j] = in->slot[j];
    }
    for (size_t x = 0; x < in->nitem; x++)
        if (lg_sched_sm_put_in(m, in->bin[x], (uint32_t)x))
            return lg_fail(LG_ERR_OOM, "plan: out of memory");
    for (size_t b = 0; b < in->nbatch; b++)
        lg_sched_sm_extent(m, b);
    lg_sched_sm_index_bins(m);
    return LG_OK;
}

/* From here on the smoothing optimises Phi over slot costs (phi.c). */
static enum lg_status phi_start(struct lg_sched_sm *m)
{
    enum lg_status s = lg_sched_phi_init(&m->ph, m->in->nbin, m->nslot, m->in->S, m->slot, m->slot_first);
    if (s != LG_OK)
        return s;
    m->dp = 1;
    for (size_t j = 0; j < m->in->nbin; j++)
        lg_sched_phi_set(&m->ph, j, m->dead[j] ? 0 : m->c[j]);
    return LG_OK;
}

enum lg_status lg_sched_refine(const struct lg_sched_refine_in *in, size_t merge_limit, int passes)
{
    struct lg_sched_sm m = {0};
    enum lg_status s = sm_init(&m, in);
    if (s == LG_OK && merge_limit && lg_sched_sm_merge(&m, merge_limit) < 0)
        s = lg_fail(LG_ERR_OOM, "plan: out of memory");
    if (s == LG_OK && in->D > 1 && passes > 0)
        s = phi_start(&m);
    for (int p = 0; s == LG_OK && p < passes; p++) {
        size_t changed = 0;
        for (size_t j = 0; j < in->nbin; j++) /* rotations first: they build the runs */
            if (!m.dead[j])
                changed += (size_t)improve_rot(&m, j, in->S);
        for (size_t x = 0; s == LG_OK && x < in->nitem; x++) {
            int r = improve(&m, (uint32_t)x);
            if (r < 0)
                s = lg_fail(LG_ERR_OOM, "plan: out of memory");
            changed += r > 0;
        }
        if (!changed)
            break;
    }
    sm_free(&m, in->nbin);
    lg_sched_phi_free(&m.ph);
    return s;
}
