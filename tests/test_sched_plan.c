/* test_sched_plan.c: property tests of the planners over many random jobs (adapters, stages, DP ranks, pad
 * multiples, capacities, length distributions, oversize policies, shuffles, cost models): every plan of every
 * algorithm and ablation must pass the independent verifier (lg_plan_verify: each sample once, capacity, one
 * batch per adapter per microbatch, the optimizer-step dependency or its wait) and simulate to a timeline
 * that passes lg_sim_verify. Then the verifier itself is tested: each rule, broken on purpose in a valid
 * plan, must be reported. Seeds come from lg_test_seed() and are printed with every failure. */
#include "sched_internal.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
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

/* A random job; `it` only feeds the failure messages. */
static lg_job_t *random_job(int it)
{
    struct lg_job_params p = lg_job_params_default();
    static const int pads[] = {1, 8, 16, 64};
    p.stages = (int)uni(1, 6);
    p.data_parallel = (int)uni(1, 3);
    p.pad_multiple = pads[uni(0, 3)];
    uint32_t pad = (uint32_t)p.pad_multiple;
    p.capacity = pad * uni((256 + pad - 1) / pad, 8192 / pad);
    p.oversize = (enum lg_oversize_policy)uni(0, 2);
    p.shuffle_seed = uni(0, 1) ? next_u64() | 1 : 0;
    p.p2p_us = uni(0, 1) ? uni(0, 50) : 0;
    p.optimizer_us = uni(0, 1) ? uni(0, 500) : 0;
    if (uni(0, 1)) { /* a random cost model instead of the default */
        p.cost.layer_us = uni(0, 100);
        p.cost.token_us = uni(1, 200) / 100.0;
        p.cost.token_rank_us = uni(0, 10) / 1000.0;
        p.cost.attn_us = uni(0, 100) * 1e-6;
        p.cost.bwd_linear = 1 + uni(0, 100) / 100.0;
        p.cost.bwd_attn = 1 + uni(0, 300) / 100.0;
    }
    lg_job_t *job;
    enum lg_status s = lg_job_init(&p, &job);
    ck_assert_msg(s == LG_OK, "seed %llu it %d: %s", (unsigned long long)lg_test_seed(), it, lg_last_error());
    int A = (int)uni(1, 5);
    for (int a = 0; a < A; a++) {
        int gb = (int)uni(1, 12);
        size_t n = uni((uint32_t)gb, 150);
        uint32_t len[150];
        CHECK(lg_trace_generate((enum lg_trace_kind)uni(0, 3), n, next_u64(), len));
        double scale = uni(10, 100) / 100.0 * p.capacity / 4096.0;
        uint32_t limit = p.oversize == LG_OVERSIZE_ERROR ? p.capacity : p.capacity + p.capacity / 2;
        size_t kept = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t l = (uint32_t)fmax(1, round(len[i] * scale));
            len[i] = l > limit ? limit : l;
            kept += p.oversize != LG_OVERSIZE_SKIP || len[i] <= p.capacity;
        }
        if (kept < (size_t)gb) /* skipping could leave too few: the planner is not under test for that */
            for (size_t i = 0; i < n; i++)
                len[i] = len[i] > p.capacity ? p.capacity : len[i];
        lg_dataset_t *ds;
        CHECK(lg_dataset_from_lengths(len, n, &ds));
        char name[16];
        snprintf(name, sizeof name, "ad%d", a);
        struct lg_adapter_params ap = {.name = name, .global_batch = gb, .rank = (int)uni(1, 64),
                                       .drop_last = (int)uni(0, 1)};
        s = lg_job_add_adapter(job, &ap, ds, NULL);
        ck_assert_msg(s == LG_OK, "seed %llu it %d: %s", (unsigned long long)lg_test_seed(), it, lg_last_error());
    }
    return job;
}

/* Plans the job one way and checks everything checkable. */
static void check_plan(const lg_job_t *job, const struct lg_plan_params *pp, int it)
{
    unsigned long long seed = (unsigned long long)lg_test_seed();
    lg_plan_t *plan;
    enum lg_status s = lg_plan_build(job, pp, &plan);
    ck_assert_msg(s == LG_OK, "seed %llu it %d algo %d flags %u: plan: %s", seed, it, pp->algo, pp->flags,
                  lg_last_error());
    s = lg_plan_verify(job, plan);
    ck_assert_msg(s == LG_OK, "seed %llu it %d algo %d flags %u: verify: %s", seed, it, pp->algo, pp->flags,
                  lg_last_error());
    struct lg_plan_summary sum;
    lg_plan_get_summary(plan, &sum);
    uint64_t tokens = 0;
    for (int a = 0; a < lg_job_adapter_count(job); a++) {
        struct lg_adapter_info in;
        CHECK(lg_job_adapter(job, a, &in));
        tokens += in.tokens;
    }
    ck_assert_msg(sum.tokens == tokens, "seed %llu it %d: plan holds %llu tokens of %llu", seed, it,
                  (unsigned long long)sum.tokens, (unsigned long long)tokens);
    ck_assert_msg(sum.microbatches >= sum.lower_bound, "seed %llu it %d: fewer microbatches than the bound", seed,
                  it);
    ck_assert(sum.padded >= sum.tokens && sum.waste >= 0 && sum.waste < 1);
    lg_sim_t *sim;
    struct lg_sim_params sp = {.record_events = 1};
    s = lg_sim_run(job, plan, &sp, &sim);
    ck_assert_msg(s == LG_OK, "seed %llu it %d algo %d flags %u: sim: %s", seed, it, pp->algo, pp->flags,
                  lg_last_error());
    s = lg_sim_verify(job, plan, sim);
    ck_assert_msg(s == LG_OK, "seed %llu it %d algo %d flags %u: sim verify: %s", seed, it, pp->algo, pp->flags,
                  lg_last_error());
    struct lg_sim_stats st;
    lg_sim_get_stats(sim, &st);
    ck_assert_msg(st.bubble >= -1e-12 && st.bubble < 1 && st.makespan_us > 0, "seed %llu it %d: bubble %g", seed,
                  it, st.bubble);
    /* no plan beats the busiest stage's own work */
    for (int r = 0; r < st.ranks; r++)
        ck_assert(st.makespan_us * st.stages >= st.rank_busy_us[r] * (1 - 1e-12));
    /* the explicit waits `loragen plan` reports are the forwards the simulator holds */
    ck_assert_msg(sum.wait_forwards == st.waits, "seed %llu it %d algo %d flags %u: %zu forwards marked wait, the "
                  "simulator holds %zu", seed, it, pp->algo, pp->flags, sum.wait_forwards, st.waits);
    lg_sim_free(sim);
    lg_plan_free(plan);
}

START_TEST(every_plan_verifies)
{
    rng_state = lg_test_seed() ^ 0x1234u;
    for (int it = 0; it < 40; it++) {
        lg_job_t *job = random_job(it);
        struct lg_plan_params pp = lg_plan_params_default();
        check_plan(job, &pp, it);
        pp.algo = LG_PLAN_MEGATRON;
        check_plan(job, &pp, it);
        pp.algo = LG_PLAN_MLORA;
        check_plan(job, &pp, it);
        lg_job_free(job);
    }
}
END_TEST

START_TEST(every_variant_verifies)
{
    rng_state = lg_test_seed() ^ 0x5678u;
    static const unsigned flags[] = {LG_PLAN_TOKENS_ONLY, LG_PLAN_NO_PACING, LG_PLAN_NO_MERGE, LG_PLAN_NO_SMOOTH,
                                     LG_PLAN_NO_REFINE, LG_PLAN_NO_RANK_SEARCH};
    for (int it = 0; it < 25; it++) {
        lg_job_t *job = random_job(it);
        struct lg_plan_params pp = lg_plan_params_default();
        uint32_t cap = lg_job_capacity_limit(job), pad = (uint32_t)lg_job_get_params(job)->pad_multiple;
        pp.target = pad * uni(1, cap / pad); /* any fill target under the capacity */
        check_plan(job, &pp, it);
        pp.target = 0;
        pp.flags = flags[it % 6];
        check_plan(job, &pp, it);
        pp.flags = 0;
        pp.algo = LG_PLAN_MEGATRON;
        pp.samples_per_mb = 1;
        check_plan(job, &pp, it);
        lg_job_free(job);
    }
}
END_TEST

/* A job of four adapters that interleave well: ours must need no waits and stay near the lower bound. */
START_TEST(interleaving_needs_no_waits)
{
    struct lg_job_params p = lg_job_params_default();
    p.stages = 4;
    lg_job_t *job;
    CHECK(lg_job_init(&p, &job));
    uint32_t len[400];
    for (int a = 0; a < 4; a++) {
        CHECK(lg_trace_generate(LG_TRACE_MIX, 400, 77u + (unsigned)a, len));
        lg_dataset_t *ds;
        CHECK(lg_dataset_from_lengths(len, 400, &ds));
        char name[8];
        snprintf(name, sizeof name, "a%d", a);
        struct lg_adapter_params ap = {.name = name, .global_batch = 8, .rank = 16};
        CHECK(lg_job_add_adapter(job, &ap, ds, NULL));
    }
    struct lg_plan_params pp = lg_plan_params_default();
    lg_plan_t *plan;
    CHECK(lg_plan_build(job, &pp, &plan));
    CHECK(lg_plan_verify(job, plan));
    struct lg_plan_summary sum;
    lg_plan_get_summary(plan, &sum);
    ck_assert_uint_eq(sum.waits, 0);
    ck_assert_msg(sum.microbatches <= sum.lower_bound * 1.06, "%zu microbatches for a bound of %zu",
                  sum.microbatches, sum.lower_bound);
    ck_assert(sum.waste < 0.005);
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

/* Longest first packs 500 + 400 and leaves 100 tokens that no sample fits, and no one-for-one trade closes
 * it: three microbatches. The regroup re-chooses the batch's share, 500 + 300 + 200 then 400 + 350 + 250:
 * two full ones, the bound. */
START_TEST(regroup_closes_room)
{
    struct lg_job_params p = lg_job_params_default();
    p.pad_multiple = 1;
    p.capacity = 1000;
    lg_job_t *job;
    CHECK(lg_job_init(&p, &job));
    const uint32_t len[6] = {500, 400, 350, 300, 250, 200};
    lg_dataset_t *ds;
    CHECK(lg_dataset_from_lengths(len, 6, &ds));
    struct lg_adapter_params ap = {.name = "a", .global_batch = 6, .rank = 16};
    CHECK(lg_job_add_adapter(job, &ap, ds, NULL));
    struct lg_plan_params pp = lg_plan_params_default();
    pp.target = 1000;
    for (int refine = 0; refine < 2; refine++) {
        pp.flags = refine ? 0 : LG_PLAN_NO_REFINE;
        lg_plan_t *plan;
        CHECK(lg_plan_build(job, &pp, &plan));
        CHECK(lg_plan_verify(job, plan));
        struct lg_plan_summary sum;
        lg_plan_get_summary(plan, &sum);
        ck_assert_uint_eq(sum.microbatches, 2);
        for (size_t i = 0; i < 2; i++) {
            struct lg_mb_view v;
            CHECK(lg_plan_mb(plan, i, &v));
            ck_assert_uint_eq(v.tokens, 1000);
        }
        lg_plan_free(plan);
    }
    lg_job_free(job);
}
END_TEST

/* ---- the verifier, fed broken plans ------------------------------------------------------------------- */

static lg_job_t *small_job(int S, int gb)
{
    struct lg_job_params p = lg_job_params_default();
    p.stages = S;
    lg_job_t *job;
    CHECK(lg_job_init(&p, &job));
    uint32_t len[24];
    for (int a = 0; a < 2; a++) {
        for (int i = 0; i < 24; i++)
            len[i] = 100 + 97 * (uint32_t)((i * 7 + a * 3) % 13);
        lg_dataset_t *ds;
        CHECK(lg_dataset_from_lengths(len, 24, &ds));
        struct lg_adapter_params ap = {.name = a ? "b" : "a", .global_batch = gb, .rank = 8};
        CHECK(lg_job_add_adapter(job, &ap, ds, NULL));
    }
    return job;
}

static lg_plan_t *good_plan(const lg_job_t *job)
{
    struct lg_plan_params pp = lg_plan_params_default();
    lg_plan_t *plan;
    CHECK(lg_plan_build(job, &pp, &plan));
    CHECK(lg_plan_verify(job, plan));
    return plan;
}

static void expect_broken(const lg_job_t *job, const lg_plan_t *plan, const char *frag)
{
    enum lg_status s = lg_plan_verify(job, plan);
    ck_assert_msg(s == LG_ERR_INVALID, "the verifier accepted a plan that breaks: %s", frag);
    ck_assert_msg(strstr(lg_last_error(), frag), "expected '%s' in: %s", frag, lg_last_error());
}

/* The first segment with at least two samples. */
static struct lg_pseg *seg_with_two(lg_plan_t *plan, size_t *mb)
{
    for (size_t i = 0; i < plan->nmb; i++)
        for (uint32_t j = 0; j < plan->mb[i].nseg; j++)
            if (plan->seg[plan->mb[i].seg_first + j].n >= 2) {
                *mb = i;
                return &plan->seg[plan->mb[i].seg_first + j];
            }
    ck_abort_msg("no segment of two samples");
    return NULL;
}

START_TEST(verifier_duplicate_and_missing)
{
    lg_job_t *job = small_job(2, 4);
    lg_plan_t *plan = good_plan(job);
    size_t mb;
    struct lg_pseg *sg = seg_with_two(plan, &mb);
    uint32_t keep = plan->samp[sg->first + 1];
    plan->samp[sg->first + 1] = plan->samp[sg->first];
    expect_broken(job, plan, "placed twice");
    plan->samp[sg->first + 1] = keep;
    CHECK(lg_plan_verify(job, plan));
    /* drop the segment's last sample, with sizes that still add up */
    uint32_t l = lg_job_sample_length(job, sg->adapter, plan->samp[sg->first + sg->n - 1]);
    sg->n--;
    plan->mb[mb].tokens -= l;
    plan->mb[mb].sum_len2 -= (double)l * l;
    expect_broken(job, plan, "never placed");
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

START_TEST(verifier_sizes)
{
    lg_job_t *job = small_job(2, 4);
    lg_plan_t *plan = good_plan(job);
    plan->mb[0].tokens += 1;
    expect_broken(job, plan, "claims");
    plan->mb[0].tokens -= 1;
    uint32_t keep = plan->mb[0].padded;
    plan->mb[0].padded = lg_job_capacity_limit(job) + 16;
    expect_broken(job, plan, "over the capacity");
    plan->mb[0].padded = keep + 1;
    expect_broken(job, plan, "padded to");
    plan->mb[0].padded = keep;
    CHECK(lg_plan_verify(job, plan));
    plan->mb[plan->nmb - 1].pos += 5;
    expect_broken(job, plan, "positions are not");
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

START_TEST(verifier_wrong_batch)
{
    lg_job_t *job = small_job(2, 4);
    lg_plan_t *plan = good_plan(job);
    struct lg_pseg *sg = &plan->seg[plan->mb[0].seg_first];
    sg->batch++;
    expect_broken(job, plan, "but it belongs to batch");
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

/* Built by hand: two batches of one adapter in one microbatch; batch 1 without its wait; batch 1 first. */
START_TEST(verifier_batches_and_dependencies)
{
    lg_job_t *job = small_job(3, 2);
    struct lg_sched_builder b;
    lg_plan_t *plan;
    CHECK(lg_sched_builder_init(&b, job, LG_PLAN_PACKED, 1));
    for (uint32_t s = 0; s < 24; s++) /* adapter a: everything in one microbatch; adapter b: one each */
        lg_sched_builder_add(&b, 0, (uint32_t)lg_job_sample_batch(job, 0, s), s);
    CHECK(lg_sched_builder_end_mb(&b, 0, 0));
    for (uint32_t s = 0; s < 24; s++) {
        lg_sched_builder_add(&b, 1, (uint32_t)lg_job_sample_batch(job, 1, s), s);
        CHECK(lg_sched_builder_end_mb(&b, 0, 1 + s));
    }
    CHECK(lg_sched_builder_finish(&b, lg_job_capacity_limit(job), &plan));
    expect_broken(job, plan, "at most one");
    lg_plan_free(plan);

    /* adapter b alone, batch after batch: every batch but the first needs its wait under S=3 */
    CHECK(lg_sched_builder_init(&b, job, LG_PLAN_PACKED, 1));
    for (uint32_t s = 0; s < 24; s++) {
        lg_sched_builder_add(&b, 0, (uint32_t)lg_job_sample_batch(job, 0, s), s);
        lg_sched_builder_add(&b, 1, (uint32_t)lg_job_sample_batch(job, 1, s), s);
        CHECK(lg_sched_builder_end_mb(&b, 0, s));
    }
    CHECK(lg_sched_builder_finish(&b, lg_job_capacity_limit(job), &plan));
    CHECK(lg_plan_verify(job, plan));
    struct lg_plan_summary sum;
    lg_plan_get_summary(plan, &sum);
    ck_assert_uint_eq(sum.waits, 2 * 2 * 11); /* both microbatches of batches 1..11, both adapters */
    for (size_t i = 0; i < plan->nseg; i++)
        if (plan->seg[i].wait) {
            plan->seg[i].wait = 0;
            break;
        }
    expect_broken(job, plan, "no wait marked");
    lg_plan_free(plan);

    /* batch 1 of adapter a before its batch 0 */
    CHECK(lg_sched_builder_init(&b, job, LG_PLAN_PACKED, 1));
    uint32_t order[4] = {2, 3, 0, 1};
    for (int i = 0; i < 4; i++) {
        lg_sched_builder_add(&b, 0, (uint32_t)lg_job_sample_batch(job, 0, order[i]), order[i]);
        CHECK(lg_sched_builder_end_mb(&b, 0, (uint32_t)i));
    }
    for (uint32_t s = 4; s < 24; s++) {
        lg_sched_builder_add(&b, 0, (uint32_t)lg_job_sample_batch(job, 0, s), s);
        CHECK(lg_sched_builder_end_mb(&b, 0, s));
    }
    for (uint32_t s = 0; s < 24; s++) {
        lg_sched_builder_add(&b, 1, (uint32_t)lg_job_sample_batch(job, 1, s), s);
        CHECK(lg_sched_builder_end_mb(&b, 0, 24 + s));
    }
    CHECK(lg_sched_builder_finish(&b, lg_job_capacity_limit(job), &plan));
    expect_broken(job, plan, "comes after");
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

/* `loragen plan` reported the plan's wait marks (161 on a DP=2 mix job) where the simulator held many more
 * forwards (377): the marks counted segments, not forwards; they followed the order on one rank only, while
 * a step also waits for the other ranks' backwards; and they ignored time: the optimizer step's own
 * duration, and the other rank running other microbatches. Now every forward the simulation holds is marked,
 * so the two counts are one number: here, at DP=2 (other ranks) and at DP=1 with a 300 us optimizer step
 * (its duration), where the order alone marks no wait at all. */
START_TEST(waits_are_the_holds)
{
    for (int D = 1; D <= 2; D++) {
        struct lg_job_params p = lg_job_params_default();
        p.stages = 4;
        p.data_parallel = D;
        p.optimizer_us = D == 1 ? 300 : 0;
        lg_job_t *job;
        CHECK(lg_job_init(&p, &job));
        uint32_t len[200];
        for (int a = 0; a < 4; a++) {
            CHECK(lg_trace_generate(LG_TRACE_MIX, 200, 1000u + 17u * (unsigned)a, len));
            lg_dataset_t *ds;
            CHECK(lg_dataset_from_lengths(len, 200, &ds));
            char name[8];
            snprintf(name, sizeof name, "m%d", a);
            struct lg_adapter_params ap = {.name = name, .global_batch = 8, .rank = 16};
            CHECK(lg_job_add_adapter(job, &ap, ds, NULL));
        }
        for (int algo = 0; algo < 3; algo++) {
            struct lg_plan_params pp = lg_plan_params_default();
            pp.algo = (enum lg_plan_algo)algo;
            lg_plan_t *plan;
            CHECK(lg_plan_build(job, &pp, &plan));
            CHECK(lg_plan_verify(job, plan));
            lg_sim_t *sim;
            struct lg_sim_params sp = {.record_events = 1};
            CHECK(lg_sim_run(job, plan, &sp, &sim));
            CHECK(lg_sim_verify(job, plan, sim));
            struct lg_plan_summary sum;
            struct lg_sim_stats st;
            lg_plan_get_summary(plan, &sum);
            lg_sim_get_stats(sim, &st);
            ck_assert_msg(sum.wait_forwards == st.waits, "D=%d algo %d: %zu marked, %zu held", D, algo,
                          sum.wait_forwards, st.waits);
            ck_assert_msg(st.waits > 0 && st.wait_us > 0, "D=%d algo %d: no hold", D, algo);
            /* a marked segment names the step its forward waits for: an earlier batch of its adapter */
            size_t marked = 0;
            for (size_t i = 0; i < plan->nseg; i++)
                if (plan->seg[i].wait) {
                    ck_assert(plan->seg[i].batch > 0);
                    marked++;
                }
            ck_assert_uint_eq(marked, sum.waits);
            ck_assert(sum.waits >= sum.wait_forwards);
            lg_sim_free(sim);
            lg_plan_free(plan);
        }
        lg_job_free(job);
    }
}
END_TEST

/* ---- epochs: lg_job_reshuffle ------------------------------------------------------------------------- */

/* Every adapter's batch of every sample, adapter after adapter. */
static long *batches_of(const lg_job_t *job, size_t *n)
{
    *n = 0;
    for (int a = 0; a < lg_job_adapter_count(job); a++)
        *n += lg_job_dataset_size(job, a);
    long *out = malloc((*n + 1) * sizeof *out);
    size_t k = 0;
    for (int a = 0; a < lg_job_adapter_count(job); a++)
        for (size_t i = 0; i < lg_job_dataset_size(job, a); i++)
            out[k++] = lg_job_sample_batch(job, a, i);
    return out;
}

/* After a reshuffle: the same samples kept, each in exactly one batch of the right size, loss tokens that
 * add up, and a plan that verifies. */
static void check_epoch(const lg_job_t *job, const long *before, int it)
{
    unsigned long long seed = lg_test_seed();
    size_t k = 0;
    for (int a = 0; a < lg_job_adapter_count(job); a++) {
        struct lg_adapter_info in;
        CHECK(lg_job_adapter(job, a, &in));
        size_t *count = calloc(in.batches + 1, sizeof *count), kept = 0;
        for (size_t i = 0; i < lg_job_dataset_size(job, a); i++, k++) {
            long g = lg_job_sample_batch(job, a, i);
            if (lg_job_sample_length(job, a, i) == 0) /* skipped by the oversize policy, in every epoch */
                ck_assert_msg(g == -1 && before[k] == -1, "seed %llu it %d: adapter %d sample %zu", seed, it, a, i);
            ck_assert(g >= -1 && g < (long)in.batches);
            if (g >= 0)
                count[g]++, kept++;
        }
        ck_assert_uint_eq(kept, in.samples);
        uint64_t loss = 0;
        for (size_t g = 0; g < in.batches; g++) {
            ck_assert_msg(count[g] == (size_t)in.global_batch || (g + 1 == in.batches && count[g] > 0),
                          "seed %llu it %d: adapter %d batch %zu holds %zu samples", seed, it, a, g, count[g]);
            loss += lg_job_batch_loss_tokens(job, a, g);
        }
        ck_assert_uint_eq(loss, in.loss_tokens);
        free(count);
    }
    struct lg_plan_params pp = lg_plan_params_default();
    check_plan(job, &pp, it);
}

START_TEST(reshuffle_epochs)
{
    rng_state = lg_test_seed() ^ 0x9abcu;
    for (int it = 0; it < 20; it++) {
        lg_job_t *job = random_job(it);
        uint64_t s0 = lg_job_get_params(job)->shuffle_seed, s1 = next_u64() | 1;
        size_t n;
        long *orig = batches_of(job, &n);
        lg_plan_t *old = good_plan(job);
        CHECK(lg_job_reshuffle(job, s1));
        ck_assert(lg_job_get_params(job)->shuffle_seed == s1);
        check_epoch(job, orig, it);
        long *e1 = batches_of(job, &n);
        int moved = memcmp(e1, orig, n * sizeof *e1) != 0;
        if (moved) /* a plan of the old epoch no longer matches */
            ck_assert_int_eq(lg_plan_verify(job, old), LG_ERR_INVALID);
        lg_plan_free(old);
        CHECK(lg_job_reshuffle(job, s1 + 2)); /* another seed, then the first again: the same batches */
        long *e2 = batches_of(job, &n);
        CHECK(lg_job_reshuffle(job, s1));
        long *again = batches_of(job, &n);
        ck_assert_msg(!memcmp(again, e1, n * sizeof *e1), "seed %llu it %d: same seed, other batches",
                      (unsigned long long)lg_test_seed(), it);
        int differs = memcmp(e2, e1, n * sizeof *e1) != 0;
        CHECK(lg_job_reshuffle(job, s0)); /* the job's own seed gives back the job's batches */
        long *back = batches_of(job, &n);
        ck_assert(!memcmp(back, orig, n * sizeof *back));
        CHECK(lg_job_reshuffle(job, 0)); /* seed 0: dataset order, batch after batch */
        for (int a = 0; a < lg_job_adapter_count(job); a++) {
            struct lg_adapter_info in;
            CHECK(lg_job_adapter(job, a, &in));
            size_t kept = 0;
            for (size_t i = 0; i < lg_job_dataset_size(job, a); i++) {
                long g = lg_job_sample_batch(job, a, i);
                if (lg_job_sample_length(job, a, i) == 0 || kept >= in.samples)
                    ck_assert_int_eq(g, -1);
                else
                    ck_assert_int_eq(g, (long)(kept++ / (size_t)in.global_batch));
            }
        }
        check_epoch(job, orig, it);
        /* a different seed gives a different order wherever an adapter has two batches to swap samples
         * between (the chance that a shuffle of >= 16 samples lands on the same batches is negligible) */
        int can_differ = 0;
        for (int a = 0; a < lg_job_adapter_count(job); a++) {
            struct lg_adapter_info in;
            CHECK(lg_job_adapter(job, a, &in));
            can_differ |= in.batches >= 2 && in.samples >= 16;
        }
        if (can_differ)
            ck_assert_msg(moved && differs, "seed %llu it %d: a new seed left the batches as they were",
                          (unsigned long long)lg_test_seed(), it);
        free(orig);
        free(e1);
        free(e2);
        free(again);
        free(back);
        lg_job_free(job);
    }
}
END_TEST

int main(void)
{
    lg_test_seed(); /* printed once, up front */
    Suite *s = suite_create("sched_plan");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, every_plan_verifies);
    tcase_add_test(tc, every_variant_verifies);
    tcase_add_test(tc, interleaving_needs_no_waits);
    tcase_add_test(tc, regroup_closes_room);
    tcase_add_test(tc, reshuffle_epochs);
    tcase_add_test(tc, waits_are_the_holds);
    tcase_add_test(tc, verifier_duplicate_and_missing);
    tcase_add_test(tc, verifier_sizes);
    tcase_add_test(tc, verifier_wrong_batch);
    tcase_add_test(tc, verifier_batches_and_dependencies);
    suite_add_tcase(s, tc);
    int failed = lg_test_run(s, 0);
    return failed ? 1 : 0;
}
