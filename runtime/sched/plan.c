/* plan.c: the entry point lg_plan_build, which checks the request, picks the planner (pack.c or baseline.c)
 * and times it, and the plan object's public read side: its summary and its views of microbatches and
 * segments. The planners fill plans through the builder (builder.c), which sits below them, so no planner
 * calls back into this file. */
#include "sched_internal.h"
#include "lg_base.h"

#include <time.h>

struct lg_plan_params lg_plan_params_default(void)
{
    struct lg_plan_params p = {.algo = LG_PLAN_PACKED};
    return p;
}

const char *lg_plan_algo_name(enum lg_plan_algo a)
{
    switch (a) {
    case LG_PLAN_PACKED: return "packed";
    case LG_PLAN_MEGATRON: return "megatron";
    case LG_PLAN_MLORA: return "mlora";
    }
    return "?";
}

void lg_plan_get_summary(const lg_plan_t *plan, struct lg_plan_summary *out) { *out = plan->sum; }
size_t lg_plan_mb_count(const lg_plan_t *plan) { return plan ? plan->nmb : 0; }
int lg_plan_ranks(const lg_plan_t *plan) { return plan->ranks; }
enum lg_plan_algo lg_plan_get_algo(const lg_plan_t *plan) { return plan->algo; }

enum lg_status lg_plan_mb(const lg_plan_t *plan, size_t i, struct lg_mb_view *out)
{
    if (!plan || !out || i >= plan->nmb)
        return lg_fail(LG_ERR_INVALID, "lg_plan_mb: no microbatch %zu", i);
    const struct lg_pmb *m = &plan->mb[i];
    *out = (struct lg_mb_view){.rank = m->rank, .pos = m->pos, .tokens = m->tokens, .padded = m->padded,
                               .sum_len2 = m->sum_len2, .rank_tokens = m->rank_tokens, .nseg = m->nseg};
    return LG_OK;
}

enum lg_status lg_plan_seg(const lg_plan_t *plan, size_t i, size_t j, struct lg_seg_view *out)
{
    if (!plan || !out || i >= plan->nmb || j >= plan->mb[i].nseg)
        return lg_fail(LG_ERR_INVALID, "lg_plan_seg: no segment %zu of microbatch %zu", j, i);
    const struct lg_pseg *s = &plan->seg[plan->mb[i].seg_first + j];
    *out = (struct lg_seg_view){.adapter = s->adapter, .batch = s->batch, .nsamples = s->n,
                                .samples = &plan->samp[s->first], .wait = s->wait};
    return LG_OK;
}

/* The adapter's longest kept sample is longer than the plan's capacity (a --capacity below the job's): it is
 * named like the job's own oversize error, by the adapter's place in the job file and the dataset's file and
 * line. */
static enum lg_status too_long(const struct lg_adapter *ad, uint32_t cap)
{
    const lg_dataset_t *ds = ad->ds;
    size_t i = 0;
    while (i + 1 < ds->n && !(ad->len[i] == ad->info.max_len && ad->batch_of[i] >= 0))
        i++;
    return lg_fail(LG_ERR_INVALID, "plan: adapter '%s' has a %u-token sample, more than capacity %u: %s: %s%s%u: "
                   "sample %zu", ad->name, ad->len[i], cap, ad->where, ds->path, *ds->path ? ":" : "line ",
                   ds->line[i], i);
}

/* The capacity the planners get: the request's, or the job's limit. Every kept sample must fit it. */
static enum lg_status check_request(const lg_job_t *job, const struct lg_plan_params *pp, uint32_t *cap_out)
{
    if (job->nad == 0)
        return lg_fail(LG_ERR_INVALID, "plan: the job has no adapters");
    uint32_t cap = pp->capacity ? pp->capacity : job->cap_limit;
    if (cap > job->cap_limit)
        return lg_fail(LG_ERR_INVALID, "plan: capacity %u exceeds the job's limit %u", cap, job->cap_limit);
    if (cap % (uint32_t)job->p.pad_multiple)
        return lg_fail(LG_ERR_INVALID, "plan: capacity %u is not a multiple of pad_multiple %d", cap,
                       job->p.pad_multiple);
    for (int a = 0; a < job->nad; a++)
        if (job->ad[a].info.max_len > cap)
            return too_long(&job->ad[a], cap);
    if (pp->algo == LG_PLAN_PACKED && pp->target && pp->target > cap)
        return lg_fail(LG_ERR_INVALID, "plan: target %u exceeds capacity %u", pp->target, cap);
    if (pp->algo == LG_PLAN_PACKED) {
        double w = lg_sched_plan_work(job, cap, !pp->target);
        if (w > LG_SCHED_WORK_LIMIT)
            return lg_fail(LG_ERR_INVALID,
                           "plan: the job is too large to plan in seconds: %d adapters, data_parallel %d, %d stages "
                           "(estimated work %.0fM, limit %.0fM, about 10 s of one core). Split the adapters over "
                           "several jobs or use fewer data-parallel ranks%s",
                           job->nad, job->p.data_parallel, job->p.stages, w / 1e6, LG_SCHED_WORK_LIMIT / 1e6,
                           pp->target ? "" : ", or give a fill target (--target), which skips the "
                                             "search over targets");
    }
    *cap_out = cap;
    return LG_OK;
}

/* The plan marks by order alone where a forward must wait (builder.c); but whether the step is done in time
 * also depends on time: the optimizer step's own duration, and with D > 1 the backwards of the other ranks,
 * which run other microbatches. So the plan is simulated once more, and every forward the simulated timeline
 * holds for a step gets its wait too: the marks are then the forwards the runtime is predicted to hold, and
 * lg_sim_run counts exactly them. */
static enum lg_status mark_held(const lg_job_t *job, lg_plan_t *plan)
{
    lg_sim_t *sim;
    enum lg_status s = lg_sim_run(job, plan, NULL, &sim);
    if (s != LG_OK)
        return s;
    for (size_t i = 0; i < plan->nseg; i++)
        plan->seg[i].wait |= lg_sched_sim_held(sim, i);
    lg_sim_free(sim);
    lg_sched_plan_count_waits(plan);
    return LG_OK;
}

/* Ours with a given fill target, or with the target chosen by simulation; or a baseline. */
static enum lg_status run_planner(const lg_job_t *job, const struct lg_plan_params *pp, uint32_t cap,
                                  lg_plan_t **out)
{
    switch (pp->algo) {
    case LG_PLAN_PACKED:
        return pp->target ? lg_sched_plan_packed(job, cap, pp->target, pp->flags, out)
                          : lg_sched_plan_search(job, cap, pp->flags, out);
    case LG_PLAN_MEGATRON: return lg_sched_plan_megatron(job, cap, pp->samples_per_mb, out);
    case LG_PLAN_MLORA: return lg_sched_plan_mlora(job, cap, pp->samples_per_mb, out);
    }
    return lg_fail(LG_ERR_INVALID, "plan: unknown algorithm %d", (int)pp->algo);
}

enum lg_status lg_plan_build(const lg_job_t *job, const struct lg_plan_params *pp, lg_plan_t **out)
{
    if (!job || !pp || !out)
        return lg_fail(LG_ERR_INVALID, "lg_plan_build: null argument");
    /* the request's fill target, else the job file's (batching.target), else chosen by simulation */
    struct lg_plan_params q = *pp;
    if (q.algo == LG_PLAN_PACKED && !q.target && job->p.fill_target) {
        q.target = job->p.fill_target;
        uint32_t lim = q.capacity ? q.capacity : job->cap_limit;
        if (q.target > lim)
            return lg_fail(LG_ERR_INVALID, "plan: batching.target = %u exceeds the capacity %u", q.target, lim);
    }
    pp = &q;
    uint32_t cap = 0;
    enum lg_status s = check_request(job, pp, &cap);
    if (s != LG_OK)
        return s;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    s = run_planner(job, pp, cap, out);
    if (s == LG_OK && (s = mark_held(job, *out)) != LG_OK) {
        lg_plan_free(*out);
        *out = NULL;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (s == LG_OK)
        (*out)->sum.plan_ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    return s;
}
