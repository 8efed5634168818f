/* sched_search.c: chooses our planner's fill target by simulation. The capacity is a ceiling, not a goal:
 * full microbatches minimise per-microbatch overhead, but when few adapters can interleave (one adapter, or
 * a memory-derived capacity far above the samples) smaller microbatches keep more of them in flight between
 * optimizer steps. So we run the slot pass for a geometric ladder of targets under the capacity, simulate each,
 * and refine (sched_refine.c) the one with the shortest predicted makespan; a slot pass takes a millisecond or
 * two, so the ladder is cheap. */
#include "sched_internal.h"

#include <stdlib.h>

#define MAX_CANDIDATES 16

static size_t ladder(const lg_job_t *job, uint32_t cap, uint32_t *out)
{
    uint32_t pad = (uint32_t)job->p.pad_multiple, longest = 0;
    for (int a = 0; a < job->nad; a++)
        longest = job->ad[a].info.max_len > longest ? job->ad[a].info.max_len : longest;
    uint32_t floor_t = longest / 4 > 256 ? longest / 4 : 256;
    size_t n = 0;
    for (double t = cap; n < MAX_CANDIDATES; t *= 0.8) {
        uint32_t c = (uint32_t)t / pad * pad;
        if (c < pad || (n > 0 && c < floor_t))
            break;
        if (n == 0 || c != out[n - 1])
            out[n++] = c;
    }
    return n;
}

enum lg_status lg_plan_search(const lg_job_t *job, uint32_t cap, unsigned flags, lg_plan_t **out)
{
    uint32_t cand[MAX_CANDIDATES];
    size_t n = ladder(job, cap, cand);
    lg_plan_t *best = NULL;
    double best_t = 0;
    uint32_t best_target = 0;
    for (size_t i = 0; i < n; i++) {
        lg_plan_t *p;
        lg_sim_t *sim;
        enum lg_status s = lg_plan_packed(job, cap, cand[i], flags | LG_PLAN_GREEDY_ONLY, &p);
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
    if (!(flags & LG_PLAN_GREEDY_ONLY)) { /* refine only the winner: refinement costs more than a slot pass */
        lg_plan_free(best);
        enum lg_status s = lg_plan_packed(job, cap, best_target, flags, &best);
        if (s != LG_OK)
            return s;
    }
    best->sum.target = best_target;
    best->sum.candidates = n;
    *out = best;
    return LG_OK;
}
