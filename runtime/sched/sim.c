/* sim.c: an event-driven simulator of non-interleaved 1F1B over S stages and D data-parallel ranks.
 *
 * Each stage dispatches its next op when it falls idle: a forward while it has fewer than S - s forwards in
 * flight (the classic warm-up, steady 1F1B and cool-down), else the oldest backward. One rule is added for the
 * optimizer steps: the forward of a microbatch holding batch g of an adapter may not start on stage 0 until
 * batch g-1's backward has ended on stage 0 of every rank, plus optimizer_us (the all-reduce and the step).
 * The dependency is modelled whether or not the plan marked the wait, so a plan cannot look faster than it
 * would run. While a forward is held that way, its stage runs its pending backwards instead, as a runtime
 * must (holding the forward and idling would deadlock when the step needs those backwards, on this rank or
 * another). Op times come from the cost model and the stage's share of the layers. */
#include "sched_internal.h"
#include "lg_base.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct lg_sim {
    struct lg_sim_stats st;
    double *stage_bubble, *rank_busy;
    struct lg_sim_event *ev;
    size_t nev;
    uint8_t *held_seg; /* [plan segment]: its forward was held for this segment's previous step */
};

struct op {
    uint32_t k; /* position on its rank */
    char kind;
};

struct ev {
    double t;
    uint32_t r, s;
};

struct sim {
    const lg_job_t *job;
    const lg_plan_t *plan;
    int S, D;
    uint32_t **mbs;      /* [r][k] plan mb index */
    uint32_t *m;         /* [r] microbatches on rank r */
    uint32_t *nf, *nb;   /* [r*S+s] forwards / backwards dispatched */
    struct op *run;      /* [r*S+s] the op in progress */
    int *busy;
    double *free_t;      /* end of the last op of the stage */
    double **fend, **bend; /* [r*S+s][k], -1 until done */
    size_t *bbase;       /* (adapter, batch) -> slot: base[a] + g */
    int *pending;        /* stage-0 backwards not yet done, per (adapter, batch) */
    double *step_ready;  /* per (adapter, batch): when its optimizer step is done */
    struct ev *heap;
    size_t nheap;
    double *busy_t;      /* [r*S+s] */
    lg_sim_t *out;
    int record;
    double now;        /* time of the event being handled */
    double **held;     /* [r][k]: when stage 0 first found forward k held by a step, or -1 */
};

static void heap_push(struct sim *m, double t, uint32_t r, uint32_t s)
{
    size_t i = m->nheap++;
    m->heap[i] = (struct ev){t, r, s};
    while (i > 0 && m->heap[(i - 1) / 2].t > m->heap[i].t) {
        struct ev x = m->heap[i];
        m->heap[i] = m->heap[(i - 1) / 2];
        m->heap[(i - 1) / 2] = x;
        i = (i - 1) / 2;
    }
}

static struct ev heap_pop(struct sim *m)
{
    struct ev top = m->heap[0];
    m->heap[0] = m->heap[--m->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, b = i;
        if (l < m->nheap && m->heap[l].t < m->heap[b].t)
            b = l;
        if (r < m->nheap && m->heap[r].t < m->heap[b].t)
            b = r;
        if (b == i)
            break;
        struct ev x = m->heap[i];
        m->heap[i] = m->heap[b];
        m->heap[b] = x;
        i = b;
    }
    return top;
}

static double op_us(const struct sim *m, uint32_t r, uint32_t s, struct op o)
{
    const struct lg_pmb *mb = &m->plan->mb[m->mbs[r][o.k]];
    const struct lg_costmodel *cm = &m->job->p.cost;
    double per = o.kind == 'F' ? lg_costmodel_fwd_us(cm, mb->padded, mb->rank_tokens, mb->sum_len2)
                               : lg_costmodel_bwd_us(cm, mb->padded, mb->rank_tokens, mb->sum_len2);
    return per * lg_sched_stage_layers(cm, m->S, (int)s);
}

/* The stage-0 dependency of the forward of mb: every previous batch's step must be done. Returns 0 when
 * one is still pending, else 1 and the time they are all done. */
static int step_deps(const struct sim *m, uint32_t mbi, double *when)
{
    const struct lg_pmb *mb = &m->plan->mb[mbi];
    *when = 0;
    for (uint32_t j = 0; j < mb->nseg; j++) {
        const struct lg_pseg *sg = &m->plan->seg[mb->seg_first + j];
        if (sg->batch == 0)
            continue;
        size_t id = m->bbase[sg->adapter] + sg->batch - 1;
        if (m->pending[id] > 0)
            return 0;
        *when = fmax(*when, m->step_ready[id]);
    }
    return 1;
}

/* Marks the segments of mb whose previous batch's step was not done at `since`, when stage 0 first had to
 * hold the forward. */
static void blame(struct sim *m, uint32_t mbi, double since)
{
    const struct lg_pmb *mb = &m->plan->mb[mbi];
    for (uint32_t j = 0; j < mb->nseg; j++) {
        const struct lg_pseg *sg = &m->plan->seg[mb->seg_first + j];
        if (sg->batch > 0 && m->step_ready[m->bbase[sg->adapter] + sg->batch - 1] > since)
            m->out->held_seg[mb->seg_first + j] = 1;
    }
}

static void start(struct sim *m, uint32_t r, uint32_t s, struct op o, double t)
{
    size_t rs = (size_t)r * m->S + s;
    double dur = op_us(m, r, s, o);
    m->busy[rs] = 1;
    m->run[rs] = o;
    (o.kind == 'F' ? m->nf : m->nb)[rs]++;
    m->free_t[rs] = t + dur;
    m->busy_t[rs] += dur;
    if (m->record)
        m->out->ev[m->out->nev++] = (struct lg_sim_event){(int)r, (int)s, m->mbs[r][o.k], o.kind, t, t + dur};
    heap_push(m, t + dur, r, s);
}

/* Is the forward of position k held by an optimizer step that has not happened? On stage 0 that is its own
 * dependency; downstream, a forward that stage 0 has not started yet and that is held there. */
static int held(const struct sim *m, uint32_t r, uint32_t s, uint32_t k)
{
    double when;
    if (s > 0 && m->fend[(size_t)r * m->S][k] >= 0)
        return 0; /* stage 0 ran it: it is only in flight */
    if (s > 0 && m->nf[(size_t)r * m->S] > k)
        return 0; /* stage 0 is running it */
    return !step_deps(m, m->mbs[r][k], &when);
}

/* Dispatches the stage's next op if its inputs are there; otherwise the stage waits for the event that
 * brings them (a neighbour's completion, or a step). */
static void try_start(struct sim *m, uint32_t r, uint32_t s)
{
    size_t rs = (size_t)r * m->S + s;
    uint32_t f = m->nf[rs], b = m->nb[rs], n = m->m[r];
    if (m->busy[rs] || b == n)
        return;
    double t = m->free_t[rs], p2p = m->job->p.p2p_us;
    int want_f = f < n && (long)f - (long)b < m->S - (long)s;
    int is_held = want_f && held(m, r, s, f);
    if (is_held && s == 0 && m->held[r][f] < 0)
        m->held[r][f] = fmax(m->now, t);
    if (is_held && b < f)
        want_f = 0; /* run a pending backward while the forward waits for its step */
    if (want_f) {
        if (s > 0) {
            double d = m->fend[rs - 1][f];
            if (d < 0)
                return;
            t = fmax(t, d + p2p);
        } else {
            double when;
            if (!step_deps(m, m->mbs[r][f], &when))
                return;
            if (when > t && m->held[r][f] < 0)
                m->held[r][f] = t;
            t = fmax(t, when);
            if (m->held[r][f] >= 0) {
                blame(m, m->mbs[r][f], m->held[r][f]);
                m->out->st.wait_us += t - m->held[r][f];
            }
        }
        start(m, r, s, (struct op){f, 'F'}, t);
        return;
    }
    if (b >= f)
        return; /* nothing to run until a forward may start */
    if (s + 1 < (uint32_t)m->S) {
        double d = m->bend[rs + 1][b];
        if (d < 0)
            return;
        t = fmax(t, d + p2p);
    } else if (m->fend[rs][b] < 0) {
        return;
    }
    start(m, r, s, (struct op){b, 'B'}, t);
}

static void complete(struct sim *m, struct ev e)
{
    size_t rs = (size_t)e.r * m->S + e.s;
    struct op o = m->run[rs];
    m->now = e.t;
    m->busy[rs] = 0;
    (o.kind == 'F' ? m->fend : m->bend)[rs][o.k] = e.t;
    int stepped = 0;
    if (o.kind == 'B' && e.s == 0) {
        const struct lg_pmb *mb = &m->plan->mb[m->mbs[e.r][o.k]];
        for (uint32_t j = 0; j < mb->nseg; j++) {
            const struct lg_pseg *sg = &m->plan->seg[mb->seg_first + j];
            size_t id = m->bbase[sg->adapter] + sg->batch;
            if (--m->pending[id] == 0) {
                m->step_ready[id] = e.t + m->job->p.optimizer_us;
                stepped = 1;
            }
        }
    }
    if (stepped) /* a step changes what every stage may dispatch */
        for (int r = 0; r < m->D; r++)
            for (int s = 0; s < m->S; s++)
                try_start(m, (uint32_t)r, (uint32_t)s);
    try_start(m, e.r, e.s);
    if (o.kind == 'F' && e.s + 1 < (uint32_t)m->S)
        try_start(m, e.r, e.s + 1);
    if (o.kind == 'B' && e.s > 0)
        try_start(m, e.r, e.s - 1);
    if (o.kind == 'F' && e.s == 0) /* downstream stages may have been holding for this forward */
        for (int s = 1; s < m->S; s++)
            try_start(m, e.r, (uint32_t)s);
}

static int cmp_pos(const void *x, const void *y, void *ctx)
{
    const lg_plan_t *p = ctx;
    uint32_t a = p->mb[*(const uint32_t *)x].pos, b = p->mb[*(const uint32_t *)y].pos;
    return (a > b) - (a < b);
}

static void sim_free(struct sim *m)
{
    for (int r = 0; m->mbs && r < m->D; r++)
        free(m->mbs[r]);
    for (int r = 0; m->held && r < m->D; r++)
        free(m->held[r]);
    free(m->held);
    for (size_t i = 0; m->fend && i < (size_t)m->D * m->S; i++) {
        free(m->fend[i]);
        free(m->bend[i]);
    }
    free(m->mbs);
    free(m->m);
    free(m->nf);
    free(m->nb);
    free(m->run);
    free(m->fend);
    free(m->bend);
    free(m->busy);
    free(m->free_t);
    free(m->busy_t);
    free(m->bbase);
    free(m->pending);
    free(m->step_ready);
    free(m->heap);
}

/* Per rank: its microbatches by position. */
static enum lg_status setup_ranks(struct sim *m)
{
    const lg_plan_t *p = m->plan;
    for (size_t i = 0; i < p->nmb; i++)
        m->m[p->mb[i].rank]++;
    enum lg_status s = LG_OK;
    for (int r = 0; r < m->D && s == LG_OK; r++) {
        uint32_t n = m->m[r], k = 0;
        m->mbs[r] = malloc((n + 1) * sizeof **m->mbs);
        m->held[r] = malloc((n + 1) * sizeof **m->held);
        if (!m->mbs[r] || !m->held[r])
            return lg_fail(LG_ERR_OOM, "sim: out of memory");
        for (uint32_t q = 0; q < n; q++)
            m->held[r][q] = -1;
        for (size_t i = 0; i < p->nmb; i++)
            if (p->mb[i].rank == r)
                m->mbs[r][k++] = (uint32_t)i;
        qsort_r(m->mbs[r], n, sizeof **m->mbs, cmp_pos, (void *)p);
        for (uint32_t q = 1; q < n && s == LG_OK; q++)
            if (p->mb[m->mbs[r][q - 1]].pos == p->mb[m->mbs[r][q]].pos)
                s = lg_fail(LG_ERR_INVALID, "sim: two microbatches at rank %d position %u", r,
                            p->mb[m->mbs[r][q]].pos);
        for (int st = 0; st < m->S && s == LG_OK; st++) {
            size_t rs = (size_t)r * m->S + st;
            m->fend[rs] = malloc((n + 1) * sizeof **m->fend);
            m->bend[rs] = malloc((n + 1) * sizeof **m->bend);
            if (!m->fend[rs] || !m->bend[rs])
                return lg_fail(LG_ERR_OOM, "sim: out of memory");
            for (uint32_t q = 0; q < n; q++)
                m->fend[rs][q] = m->bend[rs][q] = -1;
        }
    }
    return s;
}

static enum lg_status setup(struct sim *m)
{
    const lg_job_t *job = m->job;
    const lg_plan_t *p = m->plan;
    size_t RS = (size_t)m->D * m->S;
    m->mbs = calloc((size_t)m->D, sizeof *m->mbs);
    m->held = calloc((size_t)m->D, sizeof *m->held);
    m->m = calloc((size_t)m->D, sizeof *m->m);
    m->nf = calloc(RS, sizeof *m->nf);
    m->nb = calloc(RS, sizeof *m->nb);
    m->run = calloc(RS, sizeof *m->run);
    m->fend = calloc(RS, sizeof *m->fend);
    m->bend = calloc(RS, sizeof *m->bend);
    m->busy = calloc(RS, sizeof *m->busy);
    m->free_t = calloc(RS, sizeof *m->free_t);
    m->busy_t = calloc(RS, sizeof *m->busy_t);
    m->heap = malloc((RS + 1) * sizeof *m->heap);
    m->bbase = calloc((size_t)job->nad + 1, sizeof *m->bbase);
    if (!m->mbs || !m->held || !m->m || !m->nf || !m->nb || !m->run || !m->fend || !m->bend || !m->busy || !m->free_t ||
        !m->busy_t || !m->heap || !m->bbase)
        return lg_fail(LG_ERR_OOM, "sim: out of memory");
    for (int a = 0; a < job->nad; a++)
        m->bbase[a + 1] = m->bbase[a] + job->ad[a].nbatches;
    size_t nb = m->bbase[job->nad];
    m->pending = calloc(nb + 1, sizeof *m->pending);
    m->step_ready = calloc(nb + 1, sizeof *m->step_ready);
    if (!m->pending || !m->step_ready)
        return lg_fail(LG_ERR_OOM, "sim: out of memory");
    for (size_t i = 0; i < p->nmb; i++) {
        if (p->mb[i].rank < 0 || p->mb[i].rank >= m->D)
            return lg_fail(LG_ERR_INVALID, "sim: microbatch %zu is on rank %d of %d", i, p->mb[i].rank, m->D);
        for (uint32_t j = 0; j < p->mb[i].nseg; j++) {
            const struct lg_pseg *sg = &p->seg[p->mb[i].seg_first + j];
            if (sg->adapter < 0 || sg->adapter >= job->nad || sg->batch >= job->ad[sg->adapter].nbatches)
                return lg_fail(LG_ERR_INVALID, "sim: microbatch %zu names adapter %d batch %u, not in the job",
                               i, sg->adapter, sg->batch);
            m->pending[m->bbase[sg->adapter] + sg->batch]++;
        }
    }
    return setup_ranks(m);
}

static enum lg_status stats(struct sim *m, lg_sim_t *o)
{
    o->stage_bubble = calloc((size_t)m->S, sizeof *o->stage_bubble);
    o->rank_busy = calloc((size_t)m->D, sizeof *o->rank_busy);
    if (!o->stage_bubble || !o->rank_busy)
        return lg_fail(LG_ERR_OOM, "sim: out of memory");
    double span = 0, work = 0;
    for (size_t i = 0; i < (size_t)m->D * m->S; i++) {
        span = fmax(span, m->free_t[i]);
        work += m->busy_t[i];
    }
    struct lg_sim_stats *st = &o->st;
    st->stages = m->S;
    st->ranks = m->D;
    st->microbatches = m->plan->nmb;
    st->makespan_us = span;
    st->work_us = work;
    st->bubble = span > 0 ? 1 - work / (span * m->S * m->D) : 0;
    double mean = 0, mx = 0;
    for (int r = 0; r < m->D; r++) {
        for (int s = 0; s < m->S; s++) {
            o->rank_busy[r] += m->busy_t[(size_t)r * m->S + s];
            o->stage_bubble[s] += m->busy_t[(size_t)r * m->S + s] / m->D;
        }
        mean += o->rank_busy[r] / m->D;
        mx = fmax(mx, o->rank_busy[r]);
    }
    for (int s = 0; s < m->S; s++)
        o->stage_bubble[s] = span > 0 ? 1 - o->stage_bubble[s] / span : 0;
    st->dp_imbalance = mean > 0 ? mx / mean - 1 : 0;
    const lg_plan_t *p = m->plan; /* the holds: forwards the timeline held, or that a mark holds */
    for (size_t i = 0; i < p->nmb; i++) {
        int h = 0;
        for (uint32_t j = 0; j < p->mb[i].nseg; j++) {
            const struct lg_pseg *sg = &p->seg[p->mb[i].seg_first + j];
            h |= (sg->wait && sg->head) | o->held_seg[p->mb[i].seg_first + j];
        }
        st->waits += (size_t)h;
    }
    st->stage_bubble = o->stage_bubble;
    st->rank_busy_us = o->rank_busy;
    return LG_OK;
}

static enum lg_status run(struct sim *m)
{
    for (int r = 0; r < m->D; r++)
        for (int s = 0; s < m->S; s++)
            try_start(m, (uint32_t)r, (uint32_t)s);
    while (m->nheap)
        complete(m, heap_pop(m));
    for (int r = 0; r < m->D; r++)
        for (int s = 0; s < m->S; s++) {
            size_t rs = (size_t)r * m->S + s;
            if (m->nb[rs] < m->m[r]) {
                uint32_t k = m->nf[rs] < m->m[r] ? m->nf[rs] : m->nb[rs];
                return lg_fail(LG_ERR_INVALID,
                               "sim: the plan deadlocks: rank %d stage %d cannot go on at microbatch %u "
                               "(position %u): a batch depends on one that comes after it",
                               r, s, m->mbs[r][k], k);
            }
        }
    return LG_OK;
}

enum lg_status lg_sim_run(const lg_job_t *job, const lg_plan_t *plan, const struct lg_sim_params *sp,
                          lg_sim_t **out)
{
    if (!job || !plan || !out)
        return lg_fail(LG_ERR_INVALID, "lg_sim_run: null argument");
    struct sim m = {.job = job, .plan = plan, .S = job->p.stages, .D = plan->ranks,
                    .record = sp && sp->record_events};
    lg_sim_t *o = calloc(1, sizeof *o);
    if (!o)
        return lg_fail(LG_ERR_OOM, "sim: out of memory");
    m.out = o;
    o->held_seg = calloc(plan->nseg + 1, 1);
    enum lg_status s = !o->held_seg ? lg_fail(LG_ERR_OOM, "sim: out of memory")
                       : m.D >= 1 ? setup(&m)
                                  : lg_fail(LG_ERR_INVALID, "sim: plan has no ranks");
    if (s == LG_OK && m.record) {
        o->ev = malloc((2 * (size_t)m.S * plan->nmb + 1) * sizeof *o->ev);
        if (!o->ev)
            s = lg_fail(LG_ERR_OOM, "sim: out of memory");
    }
    if (s == LG_OK)
        s = run(&m);
    if (s == LG_OK)
        s = stats(&m, o);
    sim_free(&m);
    if (s != LG_OK) {
        lg_sim_free(o);
        return s;
    }
    *out = o;
    return LG_OK;
}

void lg_sim_free(lg_sim_t *sim)
{
    if (!sim)
        return;
    free(sim->stage_bubble);
    free(sim->rank_busy);
    free(sim->ev);
    free(sim->held_seg);
    free(sim);
}

void lg_sim_get_stats(const lg_sim_t *sim, struct lg_sim_stats *out) { *out = sim->st; }
int lg_sched_sim_held(const lg_sim_t *sim, size_t seg) { return sim->held_seg[seg]; }

size_t lg_sim_events(const lg_sim_t *sim, const struct lg_sim_event **ev)
{
    *ev = sim->ev;
    return sim->ev ? sim->nev : 0;
}
