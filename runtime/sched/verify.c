/* verify.c: an independent check of plans and simulated timelines. It reads the plan, the job and the
 * timeline only through the public API (lg_sched.h), recomputes everything it checks from the job's samples,
 * and shares no code with the planners or the simulator, so a planner bug cannot hide behind a verifier that
 * makes the same mistake. */
#include "lg_sched.h"
#include "lg_base.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct batch_index {
    size_t *base; /* [A + 1]: global batch (a, g) lives at base[a] + g */
    int A;
};

static enum lg_status index_batches(const lg_job_t *job, struct batch_index *bi)
{
    bi->A = lg_job_adapter_count(job);
    bi->base = calloc((size_t)bi->A + 1, sizeof *bi->base);
    if (!bi->base)
        return lg_fail(LG_ERR_OOM, "verify: out of memory");
    for (int a = 0; a < bi->A; a++) {
        struct lg_adapter_info in;
        lg_job_adapter(job, a, &in);
        bi->base[a + 1] = bi->base[a] + in.batches;
    }
    return LG_OK;
}

static uint32_t pad_up(uint32_t x, uint32_t m) { return (x + m - 1) / m * m; }

/* Rules on one microbatch: its sizes recomputed from the samples, one batch per adapter, and every sample
 * belonging to the batch its segment names and not seen before. */
static enum lg_status check_mb(const lg_job_t *job, const lg_plan_t *plan, size_t i, uint8_t **seen,
                               uint32_t cap)
{
    const struct lg_job_params *jp = lg_job_get_params(job);
    struct lg_mb_view m;
    lg_plan_mb(plan, i, &m);
    if (m.rank < 0 || m.rank >= lg_plan_ranks(plan))
        return lg_fail(LG_ERR_INVALID, "verify: microbatch %zu is on rank %d of %d", i, m.rank, lg_plan_ranks(plan));
    if (m.nseg == 0)
        return lg_fail(LG_ERR_INVALID, "verify: microbatch %zu is empty", i);
    uint64_t tokens = 0;
    double len2 = 0;
    for (size_t j = 0; j < m.nseg; j++) {
        struct lg_seg_view sg;
        lg_plan_seg(plan, i, j, &sg);
        if (sg.adapter < 0 || sg.adapter >= lg_job_adapter_count(job))
            return lg_fail(LG_ERR_INVALID, "verify: microbatch %zu names adapter %d", i, sg.adapter);
        for (size_t q = 0; q < j; q++) {
            struct lg_seg_view o;
            lg_plan_seg(plan, i, q, &o);
            if (o.adapter == sg.adapter)
                return lg_fail(LG_ERR_INVALID,
                               "verify: microbatch %zu holds global batches %zu and %zu of adapter %d (at most one)",
                               i, o.batch, sg.batch, sg.adapter);
        }
        if (sg.nsamples == 0)
            return lg_fail(LG_ERR_INVALID, "verify: microbatch %zu has an empty segment", i);
        for (size_t k = 0; k < sg.nsamples; k++) {
            uint32_t s = sg.samples[k];
            if (s >= lg_job_dataset_size(job, sg.adapter))
                return lg_fail(LG_ERR_INVALID, "verify: microbatch %zu names sample %u of adapter %d, past its "
                                               "dataset", i, s, sg.adapter);
            long g = lg_job_sample_batch(job, sg.adapter, s);
            if (g < 0 || (size_t)g != sg.batch)
                return lg_fail(LG_ERR_INVALID, "verify: microbatch %zu puts sample %u of adapter %d in batch %zu, "
                                               "but it belongs to batch %ld", i, s, sg.adapter, sg.batch, g);
            if (seen[sg.adapter][s]++)
                return lg_fail(LG_ERR_INVALID, "verify: sample %u of adapter %d is placed twice (again in "
                                               "microbatch %zu)", s, sg.adapter, i);
            double l = lg_job_sample_length(job, sg.adapter, s);
            tokens += (uint64_t)l;
            len2 += l * l;
        }
    }
    if (tokens != m.tokens || fabs(len2 - m.sum_len2) > 1e-9 * (len2 + 1))
        return lg_fail(LG_ERR_INVALID, "verify: microbatch %zu claims %u tokens, its samples hold %llu", i, m.tokens,
                       (unsigned long long)tokens);
    uint32_t pad = (uint32_t)jp->pad_multiple;
    if (m.padded < pad_up((uint32_t)tokens, pad) || m.padded % pad)
        return lg_fail(LG_ERR_INVALID, "verify: microbatch %zu padded to %u, not a multiple of %u covering %llu "
                                       "tokens", i, m.padded, pad, (unsigned long long)tokens);
    if (m.padded > cap)
        return lg_fail(LG_ERR_INVALID, "verify: microbatch %zu is %u tokens padded, over the capacity %u", i,
                       m.padded, cap);
    return LG_OK;
}

static int cmp_pos(const void *x, const void *y, void *ctx)
{
    const lg_plan_t *p = ctx;
    struct lg_mb_view a, b;
    lg_plan_mb(p, *(const size_t *)x, &a);
    lg_plan_mb(p, *(const size_t *)y, &b);
    if (a.rank != b.rank)
        return a.rank < b.rank ? -1 : 1;
    return (a.pos > b.pos) - (a.pos < b.pos);
}

/* The dependency rule, rank by rank in position order: batch g of adapter a needs no mark only when every
 * microbatch holding it is >= S positions after the last one holding batch g-1 on that rank; batch g-1 may
 * never come after batch g at all (no wait could fix that). */
static enum lg_status check_deps(const lg_job_t *job, const lg_plan_t *plan, const struct batch_index *bi)
{
    size_t n = lg_plan_mb_count(plan), nb = bi->base[bi->A];
    size_t *ord = malloc((n + 1) * sizeof *ord);
    long *last = malloc((nb + 1) * sizeof *last), *first = malloc((nb + 1) * sizeof *first);
    enum lg_status s = LG_OK;
    if (!ord || !last || !first) {
        s = lg_fail(LG_ERR_OOM, "verify: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        ord[i] = i;
    qsort_r(ord, n, sizeof *ord, cmp_pos, (void *)plan);
    int S = lg_job_get_params(job)->stages, rank = -1;
    long expect = 0;
    for (size_t q = 0; q < n && s == LG_OK; q++) {
        struct lg_mb_view m;
        lg_plan_mb(plan, ord[q], &m);
        if (m.rank != rank) {
            rank = m.rank;
            expect = 0;
            for (size_t i = 0; i < nb; i++)
                last[i] = first[i] = -1;
        }
        if ((long)m.pos != expect++)
            s = lg_fail(LG_ERR_INVALID, "verify: rank %d positions are not 0, 1, 2, ...: microbatch %zu is at %zu",
                        rank, ord[q], m.pos);
        for (size_t j = 0; j < m.nseg && s == LG_OK; j++) {
            struct lg_seg_view sg;
            lg_plan_seg(plan, ord[q], j, &sg);
            size_t id = bi->base[sg.adapter] + sg.batch;
            if (first[id] < 0)
                first[id] = (long)m.pos;
            last[id] = (long)m.pos;
            if (sg.batch + 1 < bi->base[sg.adapter + 1] - bi->base[sg.adapter] && first[id + 1] >= 0)
                s = lg_fail(LG_ERR_INVALID, "verify: rank %d: adapter %d batch %zu at position %zu comes after its "
                                            "batch %zu (position %ld)", rank, sg.adapter, sg.batch, m.pos,
                            sg.batch + 1, first[id + 1]);
            else if (sg.batch > 0 && !sg.wait && (last[id - 1] < 0 || (long)m.pos - last[id - 1] < S))
                s = lg_fail(LG_ERR_INVALID, "verify: rank %d position %zu: adapter %d batch %zu enters %ld "
                                            "position(s) after batch %zu (fewer than S = %d) with no wait marked",
                            rank, m.pos, sg.adapter, sg.batch, last[id - 1] < 0 ? -1 : (long)m.pos - last[id - 1],
                            sg.batch - 1, S);
        }
    }
out:
    free(ord);
    free(last);
    free(first);
    return s;
}

enum lg_status lg_plan_verify(const lg_job_t *job, const lg_plan_t *plan)
{
    if (!job || !plan)
        return lg_fail(LG_ERR_INVALID, "lg_plan_verify: null argument");
    struct batch_index bi;
    enum lg_status s = index_batches(job, &bi);
    if (s != LG_OK)
        return s;
    int A = bi.A;
    uint8_t **seen = calloc((size_t)A + 1, sizeof *seen);
    if (!seen)
        s = lg_fail(LG_ERR_OOM, "verify: out of memory");
    for (int a = 0; s == LG_OK && a < A; a++)
        if (!(seen[a] = calloc(lg_job_dataset_size(job, a) + 1, 1)))
            s = lg_fail(LG_ERR_OOM, "verify: out of memory");
    struct lg_plan_summary sum;
    lg_plan_get_summary(plan, &sum);
    uint32_t cap = lg_job_capacity_limit(job);
    if (sum.capacity && sum.capacity < cap)
        cap = sum.capacity;
    for (size_t i = 0; s == LG_OK && i < lg_plan_mb_count(plan); i++)
        s = check_mb(job, plan, i, seen, cap);
    for (int a = 0; s == LG_OK && a < A; a++)
        for (size_t i = 0; s == LG_OK && i < lg_job_dataset_size(job, a); i++) {
            int want = lg_job_sample_batch(job, a, i) >= 0;
            if (seen[a][i] != want)
                s = lg_fail(LG_ERR_INVALID, "verify: sample %zu of adapter %d is %s", i, a,
                            want ? "never placed" : "placed but the job does not keep it");
        }
    if (s == LG_OK)
        s = check_deps(job, plan, &bi);
    for (int a = 0; seen && a < A; a++)
        free(seen[a]);
    free(seen);
    free(bi.base);
    return s;
}

static int cmp_ev_stage(const void *x, const void *y)
{
    const struct lg_sim_event *a = *(const struct lg_sim_event *const *)x, *b = *(const struct lg_sim_event *const *)y;
    if (a->rank != b->rank)
        return a->rank < b->rank ? -1 : 1;
    if (a->stage != b->stage)
        return a->stage < b->stage ? -1 : 1;
    return (a->start_us > b->start_us) - (a->start_us < b->start_us);
}

/* Every op once, on its microbatch's rank; no two ops of a stage overlap. */
static enum lg_status check_ops(const lg_plan_t *plan, const struct lg_sim_event *ev, size_t nev, int S,
                                const struct lg_sim_event **at)
{
    size_t n = lg_plan_mb_count(plan);
    if (nev != 2 * (size_t)S * n)
        return lg_fail(LG_ERR_INVALID, "verify sim: %zu ops recorded, expected %zu (2 x %d stages x %zu)", nev,
                       2 * (size_t)S * n, S, n);
    for (size_t i = 0; i < nev; i++) {
        const struct lg_sim_event *e = &ev[i];
        struct lg_mb_view m;
        if (e->mb >= n || e->stage < 0 || e->stage >= S || (e->kind != 'F' && e->kind != 'B'))
            return lg_fail(LG_ERR_INVALID, "verify sim: op %zu names mb %u stage %d kind %c", i, e->mb, e->stage,
                           e->kind);
        lg_plan_mb(plan, e->mb, &m);
        if (m.rank != e->rank || !(e->end_us > e->start_us) || e->start_us < 0)
            return lg_fail(LG_ERR_INVALID, "verify sim: op %c of mb %u runs on rank %d (plan: %d) from %g to %g us",
                           e->kind, e->mb, e->rank, m.rank, e->start_us, e->end_us);
        size_t key = ((size_t)e->mb * S + e->stage) * 2 + (e->kind == 'B');
        if (at[key])
            return lg_fail(LG_ERR_INVALID, "verify sim: op %c of mb %u on stage %d ran twice", e->kind, e->mb,
                           e->stage);
        at[key] = e;
    }
    const struct lg_sim_event **by = malloc((nev + 1) * sizeof *by);
    if (!by)
        return lg_fail(LG_ERR_OOM, "verify: out of memory");
    for (size_t i = 0; i < nev; i++)
        by[i] = &ev[i];
    qsort(by, nev, sizeof *by, cmp_ev_stage);
    enum lg_status s = LG_OK;
    for (size_t i = 1; i < nev && s == LG_OK; i++)
        if (by[i]->rank == by[i - 1]->rank && by[i]->stage == by[i - 1]->stage &&
            by[i]->start_us < by[i - 1]->end_us - 1e-6)
            s = lg_fail(LG_ERR_INVALID, "verify sim: rank %d stage %d runs %c of mb %u and %c of mb %u at once",
                        by[i]->rank, by[i]->stage, by[i - 1]->kind, by[i - 1]->mb, by[i]->kind, by[i]->mb);
    free(by);
    return s;
}

/* Data flow: forwards go down the stages, backwards come back up after the last stage's forward. */
static enum lg_status check_flow(size_t n, int S, const struct lg_sim_event **at)
{
    const double eps = 1e-6;
    for (size_t i = 0; i < n; i++)
        for (int s = 0; s < S; s++) {
            const struct lg_sim_event *f = at[(i * S + s) * 2], *b = at[(i * S + s) * 2 + 1];
            if (s > 0 && f->start_us < at[(i * S + s - 1) * 2]->end_us - eps)
                return lg_fail(LG_ERR_INVALID, "verify sim: F of mb %zu starts on stage %d before stage %d ends it",
                               i, s, s - 1);
            if (s + 1 < S && b->start_us < at[(i * S + s + 1) * 2 + 1]->end_us - eps)
                return lg_fail(LG_ERR_INVALID, "verify sim: B of mb %zu starts on stage %d before stage %d ends it",
                               i, s, s + 1);
            if (s + 1 == S && b->start_us < f->end_us - eps)
                return lg_fail(LG_ERR_INVALID, "verify sim: B of mb %zu starts before its forward ends", i);
        }
    return LG_OK;
}

/* The optimizer-step rule in time: no forward of batch g+1 starts on stage 0 before every stage-0 backward
 * of batch g (all ranks) has ended plus the optimizer step. */
static enum lg_status check_steps(const lg_job_t *job, const lg_plan_t *plan, int S, const struct lg_sim_event **at)
{
    struct batch_index bi;
    enum lg_status s = index_batches(job, &bi);
    if (s != LG_OK)
        return s;
    size_t nb = bi.base[bi.A], n = lg_plan_mb_count(plan);
    double *first_f = malloc((nb + 1) * sizeof *first_f), *last_b = malloc((nb + 1) * sizeof *last_b);
    if (!first_f || !last_b)
        s = lg_fail(LG_ERR_OOM, "verify: out of memory");
    for (size_t i = 0; s == LG_OK && i < nb; i++) {
        first_f[i] = INFINITY;
        last_b[i] = -INFINITY;
    }
    for (size_t i = 0; s == LG_OK && i < n; i++) {
        struct lg_mb_view m;
        lg_plan_mb(plan, i, &m);
        for (size_t j = 0; j < m.nseg; j++) {
            struct lg_seg_view sg;
            lg_plan_seg(plan, i, j, &sg);
            size_t id = bi.base[sg.adapter] + sg.batch;
            first_f[id] = fmin(first_f[id], at[(i * S) * 2]->start_us);
            last_b[id] = fmax(last_b[id], at[(i * S) * 2 + 1]->end_us);
        }
    }
    double opt = lg_job_get_params(job)->optimizer_us;
    for (int a = 0; s == LG_OK && a < bi.A; a++)
        for (size_t g = 1; s == LG_OK && g < bi.base[a + 1] - bi.base[a]; g++) {
            size_t id = bi.base[a] + g;
            if (first_f[id] < last_b[id - 1] + opt - 1e-6)
                s = lg_fail(LG_ERR_INVALID, "verify sim: adapter %d batch %zu enters at %.3f us, before batch %zu's "
                                            "backward and step end at %.3f us", a, g, first_f[id], g - 1,
                            last_b[id - 1] + opt);
        }
    free(first_f);
    free(last_b);
    free(bi.base);
    return s;
}

enum lg_status lg_sim_verify(const lg_job_t *job, const lg_plan_t *plan, const lg_sim_t *sim)
{
    if (!job || !plan || !sim)
        return lg_fail(LG_ERR_INVALID, "lg_sim_verify: null argument");
    const struct lg_sim_event *ev;
    size_t nev = lg_sim_events(sim, &ev);
    int S = lg_job_get_params(job)->stages;
    size_t n = lg_plan_mb_count(plan);
    if (!ev && n)
        return lg_fail(LG_ERR_INVALID, "verify sim: the timeline was not recorded (set record_events)");
    const struct lg_sim_event **at = calloc(2 * (size_t)S * n + 1, sizeof *at);
    if (!at)
        return lg_fail(LG_ERR_OOM, "verify: out of memory");
    enum lg_status s = check_ops(plan, ev, nev, S, at);
    if (s == LG_OK)
        s = check_flow(n, S, at);
    if (s == LG_OK)
        s = check_steps(job, plan, S, at);
    free(at);
    return s;
}
