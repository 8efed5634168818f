/* pack_cand.c: which adapters may give items to a slot, kept so that a slot costs the same with 4 adapters or
 * 10,000. Every step of the filling (fill.c, regroup.c) looks at the candidates of the slot: the adapters
 * with an open global batch, and those whose next batch may start (its predecessor's last slot is S back).
 * Scanning all adapters in every bin made planning quadratic: 1,000 adapters took about a minute, 10,000
 * many hours. So the adapters live in three places: a list of those with an open batch, a heap of those
 * that may start, ordered by their next batch's deadline, and a heap of those waiting for their S slots,
 * ordered by the slot they may start in. A slot's candidates are the open ones plus the earliest deadlines
 * that may start, 2D of them but at least 16 and at most 256 (the one place a job with more adapters than
 * that plans differently from before: the adapters left out are the ones with the latest deadlines, which
 * the pacing would not have started yet). They are listed in adapter order, the order the filling always
 * visited them in, so with fewer adapters than that the plans are the same as a scan of all of them gives.
 * Measured (CPU time, one core): 10,000 adapters of 8 samples plan in 4.2 s, against hours before; 1,000 in
 * 0.45 s; with 16 candidates instead of 64 the plan's bubble at 10,000 adapters is 1.29% instead of 1.17%
 * and planning takes half the time. */
#include "sched_pack.h"
#include "lg_base.h"

#include <stdlib.h>

/* Heap order: the ready heap by (deadline of the next batch, adapter), the waiting heap by (ready, adapter). */
static int before(const struct lg_sched_pk *p, int ready_heap, int x, int y)
{
    if (ready_heap) {
        double dx = p->bt[p->next[x]].deadline, dy = p->bt[p->next[y]].deadline;
        if (dx != dy)
            return dx < dy;
    } else if (p->ready[x] != p->ready[y]) {
        return p->ready[x] < p->ready[y];
    }
    return x < y;
}

static void hset(struct lg_sched_pk *p, int ready_heap, int i, int a)
{
    (ready_heap ? p->rheap : p->wheap)[i] = a;
    if (ready_heap)
        p->rpos[a] = i;
}

static void sift_up(struct lg_sched_pk *p, int rh, int i)
{
    int *h = rh ? p->rheap : p->wheap, a = h[i];
    while (i > 0 && before(p, rh, a, h[(i - 1) / 2])) {
        hset(p, rh, i, h[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    hset(p, rh, i, a);
}

static void sift_down(struct lg_sched_pk *p, int rh, int i)
{
    int *h = rh ? p->rheap : p->wheap, n = rh ? p->nrh : p->nwh, a = h[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && before(p, rh, h[c + 1], h[c]))
            c++;
        if (!before(p, rh, h[c], a))
            break;
        hset(p, rh, i, h[c]);
        i = c;
    }
    hset(p, rh, i, a);
}

static void push(struct lg_sched_pk *p, int rh, int a)
{
    int i = rh ? p->nrh++ : p->nwh++;
    hset(p, rh, i, a);
    sift_up(p, rh, i);
}

/* Removes entry i of a heap. */
static void remove_at(struct lg_sched_pk *p, int rh, int i)
{
    int *h = rh ? p->rheap : p->wheap, last = h[rh ? --p->nrh : --p->nwh];
    if (rh)
        p->rpos[h[i]] = -1;
    if (i == (rh ? p->nrh : p->nwh))
        return;
    hset(p, rh, i, last);
    sift_down(p, rh, i);
    sift_up(p, rh, rh ? p->rpos[last] : i);
}

enum lg_status lg_sched_pk_cand_init(struct lg_sched_pk *p)
{
    size_t A = (size_t)p->A + 1;
    /* a slot fills D bins, a bin takes ~3 samples: 2D candidates, but no fewer than 16 or more than 256 (each
     * costs the filling of every bin a look, and the regroup 25 KB of scratch) */
    p->kcand = 2 * p->D < LG_SCHED_PK_CAND ? LG_SCHED_PK_CAND : 2 * p->D > LG_SCHED_PK_CAND_MAX ? LG_SCHED_PK_CAND_MAX : 2 * p->D;
    p->cand = malloc(A * sizeof *p->cand);
    p->openl = malloc(A * sizeof *p->openl);
    p->opos = malloc(A * sizeof *p->opos);
    p->rheap = malloc(A * sizeof *p->rheap);
    p->rpos = malloc(A * sizeof *p->rpos);
    p->wheap = malloc(A * sizeof *p->wheap);
    if (!p->cand || !p->openl || !p->opos || !p->rheap || !p->rpos || !p->wheap)
        return lg_fail(LG_ERR_OOM, "plan: out of memory");
    p->ncand = p->nopen = p->nrh = p->nwh = 0;
    for (int a = 0; a < p->A; a++) {
        p->rpos[a] = p->opos[a] = -1;
        if (p->next[a] < p->bbase[a + 1]) /* every adapter may start at slot 0 */
            push(p, 1, a);
    }
    return LG_OK;
}

void lg_sched_pk_cand_free(struct lg_sched_pk *p)
{
    free(p->cand);
    free(p->openl);
    free(p->opos);
    free(p->rheap);
    free(p->rpos);
    free(p->wheap);
}

void lg_sched_pk_opened(struct lg_sched_pk *p, int a)
{
    if (p->rpos[a] >= 0)
        remove_at(p, 1, p->rpos[a]);
    p->opos[a] = p->nopen;
    p->openl[p->nopen++] = a;
}

static int cmp_int(const void *x, const void *y)
{
    int a = *(const int *)x, b = *(const int *)y;
    return (a > b) - (a < b);
}

void lg_sched_pk_slot_begin(struct lg_sched_pk *p, long t)
{
    p->t = t;
    while (p->nwh > 0 && p->ready[p->wheap[0]] <= t) {
        int a = p->wheap[0];
        remove_at(p, 0, 0);
        push(p, 1, a);
    }
    if (p->nopen == 0 && p->nrh == 0 && p->nwh > 0) {
        /* no batch may run: the earliest-ready one runs anyway, and the plan will mark its wait */
        int a = p->wheap[0];
        remove_at(p, 0, 0);
        p->ready[a] = t;
        push(p, 1, a);
    }
    p->ncand = 0;
    for (int i = 0; i < p->nopen; i++)
        p->cand[p->ncand++] = p->openl[i];
    int take = p->kcand - p->ncand, got = 0;
    while (got < take && p->nrh > 0) { /* the earliest deadlines, popped and pushed back */
        int a = p->rheap[0];
        remove_at(p, 1, 0);
        p->cand[p->ncand + got++] = a;
    }
    for (int i = 0; i < got; i++)
        push(p, 1, p->cand[p->ncand + i]);
    p->ncand += got;
    qsort(p->cand, (size_t)p->ncand, sizeof *p->cand, cmp_int);
}

void lg_sched_pk_slot_end(struct lg_sched_pk *p, long t)
{
    for (int i = 0; i < p->nopen;) {
        int a = p->openl[i];
        if (p->bt[p->open[a]].left > 0) {
            i++;
            continue;
        }
        p->open[a] = -1;
        p->ready[a] = t + p->S;
        p->openl[i] = p->openl[--p->nopen];
        p->opos[p->openl[i]] = i;
        p->opos[a] = -1;
        if (p->next[a] < p->bbase[a + 1])
            push(p, 0, a);
    }
}
