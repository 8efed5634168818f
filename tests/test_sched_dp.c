/* test_sched_dp.c: our planner under data parallelism. The last step with D > 1 chooses which rank runs which
 * microbatch of each slot by simulating the plan (pack.c, rank_search). It may only trade two microbatches of
 * one slot between their ranks, never change what a microbatch holds or how many a rank runs, and it keeps a
 * trade only when the simulated makespan falls: so on every job the plan with it holds the same microbatches
 * as the plan without it (LG_PLAN_NO_RANK_SEARCH), as many on each rank, and simulates no slower; on the
 * benchmark-like job below it is strictly faster. (A slot may have fewer microbatches than ranks, so a rank's
 * positions need not be the slots: the comparison is by content.) Seeds come from lg_test_seed() and are
 * printed with every failure. */
#include "lg_sched.h"
#include "lg_test.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state;

static uint64_t next_u64(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t uni(uint32_t lo, uint32_t hi) { return lo + (uint32_t)(next_u64() % (uint64_t)(hi - lo + 1)); }

static lg_job_t *job_of(int S, int D, int A, size_t n, int gb, double optimizer_us, uint64_t seed, int mixed)
{
    struct lg_job_params p = lg_job_params_default();
    p.stages = S;
    p.data_parallel = D;
    p.optimizer_us = optimizer_us;
    lg_job_t *job;
    CHECK(lg_job_init(&p, &job));
    uint32_t *len = malloc(n * sizeof *len);
    for (int a = 0; a < A; a++) {
        enum lg_trace_kind k = mixed ? (enum lg_trace_kind)(a % LG_TRACE_KINDS) : LG_TRACE_MIX;
        CHECK(lg_trace_generate(k, n, seed + 31u * (unsigned)a, len));
        lg_dataset_t *ds;
        CHECK(lg_dataset_from_lengths(len, n, &ds));
        char name[16];
        snprintf(name, sizeof name, "a%d", a);
        struct lg_adapter_params ap = {.name = name, .global_batch = gb, .rank = 16};
        CHECK(lg_job_add_adapter(job, &ap, ds, NULL));
    }
    free(len);
    return job;
}

/* What a microbatch holds (its segments' adapters, batches and samples), and its rank; pos is the rank for
 * the per-rank counts and 0 for the contents. */
struct content {
    size_t pos;
    uint64_t hash;
};

static int cmp_content(const void *x, const void *y)
{
    const struct content *a = x, *b = y;
    if (a->pos != b->pos)
        return a->pos < b->pos ? -1 : 1;
    return (a->hash > b->hash) - (a->hash < b->hash);
}

static struct content *contents(const lg_plan_t *plan, size_t *n, size_t *rank_count)
{
    *n = lg_plan_mb_count(plan);
    struct content *c = malloc((*n + 1) * sizeof *c);
    for (size_t i = 0; i < *n; i++) {
        struct lg_mb_view v;
        CHECK(lg_plan_mb(plan, i, &v));
        uint64_t h = 1469598103934665603ull;
        for (size_t j = 0; j < v.nseg; j++) {
            struct lg_seg_view s;
            CHECK(lg_plan_seg(plan, i, j, &s));
            h = (h ^ (uint64_t)s.adapter) * 1099511628211ull;
            h = (h ^ s.batch) * 1099511628211ull;
            for (size_t k = 0; k < s.nsamples; k++)
                h = (h ^ s.samples[k]) * 1099511628211ull;
        }
        c[i] = (struct content){0, h};
        rank_count[v.rank]++;
    }
    qsort(c, *n, sizeof *c, cmp_content);
    return c;
}

static double makespan(const lg_job_t *job, const lg_plan_t *plan)
{
    lg_sim_t *sim;
    struct lg_sim_params sp = {.record_events = 1};
    CHECK(lg_sim_run(job, plan, &sp, &sim));
    CHECK(lg_sim_verify(job, plan, sim));
    struct lg_sim_stats st;
    lg_sim_get_stats(sim, &st);
    lg_sim_free(sim);
    return st.makespan_us;
}

/* Plans the job with and without the rank search; checks they hold the same positions and that the search
 * is no slower. Returns the two makespans. */
static void compare(const lg_job_t *job, const char *what, double *with, double *without)
{
    unsigned long long seed = (unsigned long long)lg_test_seed();
    struct lg_plan_params pp = lg_plan_params_default();
    lg_plan_t *a, *b;
    CHECK(lg_plan_build(job, &pp, &a));
    pp.flags = LG_PLAN_NO_RANK_SEARCH;
    CHECK(lg_plan_build(job, &pp, &b));
    CHECK(lg_plan_verify(job, a));
    CHECK(lg_plan_verify(job, b));
    size_t na, nb, ra[8] = {0}, rb[8] = {0};
    struct content *ca = contents(a, &na, ra), *cb = contents(b, &nb, rb);
    ck_assert_msg(na == nb, "seed %llu %s: %zu microbatches with the rank search, %zu without", seed, what, na, nb);
    for (size_t i = 0; i < na; i++)
        ck_assert_msg(ca[i].hash == cb[i].hash, "seed %llu %s: the rank search changed what a microbatch holds", seed,
                      what);
    for (int r = 0; r < 8; r++)
        ck_assert_msg(ra[r] == rb[r], "seed %llu %s: rank %d runs %zu microbatches with the rank search, %zu without",
                      seed, what, r, ra[r], rb[r]);
    *with = makespan(job, a);
    *without = makespan(job, b);
    ck_assert_msg(*with <= *without * (1 + 1e-12), "seed %llu %s: the rank search made the makespan %.1f us, %.1f us "
                  "without", seed, what, *with, *without);
    free(ca);
    free(cb);
    lg_plan_free(a);
    lg_plan_free(b);
}

START_TEST(rank_search_only_permutes_and_never_slows)
{
    rng_state = lg_test_seed() ^ 0x9abcu;
    for (int it = 0; it < 12; it++) {
        int S = (int)uni(1, 5), D = (int)uni(2, 4), A = (int)uni(1, 5), gb = (int)uni(2, 12);
        size_t n = uni((uint32_t)gb, 120);
        double opt = uni(0, 1) ? uni(1, 400) : 0;
        lg_job_t *job = job_of(S, D, A, n, gb, opt, next_u64(), (int)uni(0, 1));
        char what[96];
        snprintf(what, sizeof what, "it %d (S=%d D=%d A=%d n=%zu gb=%d opt %g)", it, S, D, A, n, gb, opt);
        double w, wo;
        compare(job, what, &w, &wo);
        lg_job_free(job);
    }
}
END_TEST

/* Four mix adapters at DP=2, S=4, global batch 8: the benchmark's configuration, smaller. */
START_TEST(rank_search_pays_on_the_benchmark_shape)
{
    lg_job_t *job = job_of(4, 2, 4, 400, 8, 0, 1000u, 0);
    double w, wo;
    compare(job, "4 mix adapters x 400, DP=2, S=4", &w, &wo);
    printf("DP=2, S=4, 4 x 400 mix: makespan %.1f ms with the rank search, %.1f ms without\n", w / 1e3, wo / 1e3);
    ck_assert_msg(w < wo * 0.999, "the rank search gained under 0.1%%: %.1f us against %.1f us", w, wo);
    lg_job_free(job);
}
END_TEST

/* At DP=1 there is nothing to permute: the flag changes nothing. */
START_TEST(dp1_plans_are_untouched)
{
    lg_job_t *job = job_of(4, 1, 4, 200, 8, 0, 77u, 1);
    struct lg_plan_params pp = lg_plan_params_default();
    lg_plan_t *a, *b;
    CHECK(lg_plan_build(job, &pp, &a));
    pp.flags = LG_PLAN_NO_RANK_SEARCH;
    CHECK(lg_plan_build(job, &pp, &b));
    size_t na, nb, ra[8] = {0}, rb[8] = {0};
    struct content *ca = contents(a, &na, ra), *cb = contents(b, &nb, rb);
    ck_assert_uint_eq(na, nb);
    ck_assert(!memcmp(ca, cb, na * sizeof *ca));
    ck_assert(makespan(job, a) == makespan(job, b));
    free(ca);
    free(cb);
    lg_plan_free(a);
    lg_plan_free(b);
    lg_job_free(job);
}
END_TEST

int main(void)
{
    lg_test_seed();
    Suite *s = suite_create("sched_dp");
    TCase *tc = tcase_create("rank_search");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, rank_search_only_permutes_and_never_slows);
    tcase_add_test(tc, rank_search_pays_on_the_benchmark_shape);
    tcase_add_test(tc, dp1_plans_are_untouched);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
