/* test_sched_sim.c: the 1F1B simulator against small cases computed by hand (makespan, per-stage bubbles,
 * optimizer-step waits within a rank and across DP ranks, uneven stages, p2p latency, the attention and
 * rank terms), deadlock detection, the timeline verifier catching a tampered timeline, and the baselines'
 * shapes. Plans are built directly with the internal plan builder, so each case is exactly the schedule
 * written in its comment. */
#include "sched_internal.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <string.h>

/* One adapter over `len`, global batch gb; 1 layer per stage unless `layers`; F = tokens, B = 2 x tokens. */
static lg_job_t *job_of(int S, int D, int layers, const uint32_t *len, size_t n, int gb)
{
    struct lg_job_params p = lg_job_params_default();
    p.stages = S;
    p.data_parallel = D;
    p.pad_multiple = 1;
    p.capacity = 1 << 16;
    memset(&p.cost, 0, sizeof p.cost);
    p.cost.token_us = 1;
    p.cost.bwd_linear = 2;
    p.cost.bwd_attn = 2.5;
    p.cost.layers = layers ? layers : S;
    lg_job_t *job;
    CHECK(lg_job_init(&p, &job));
    lg_dataset_t *ds;
    CHECK(lg_dataset_from_lengths(len, n, &ds));
    struct lg_adapter_params ap = {.name = "a", .global_batch = gb, .rank = 4};
    CHECK(lg_job_add_adapter(job, &ap, ds, NULL));
    return job;
}

/* mbs[i] lists the samples of microbatch i (terminated by -1); it goes to rank[i] at the next position. */
static lg_plan_t *plan_of(const lg_job_t *job, int D, const int mbs[][4], const int *rank, int n)
{
    struct lg_sched_builder b;
    CHECK(lg_sched_builder_init(&b, job, LG_PLAN_PACKED, D));
    uint32_t pos[8] = {0};
    for (int i = 0; i < n; i++) {
        for (int k = 0; mbs[i][k] >= 0; k++)
            lg_sched_builder_add(&b, 0, (uint32_t)lg_job_sample_batch(job, 0, (size_t)mbs[i][k]), (uint32_t)mbs[i][k]);
        CHECK(lg_sched_builder_end_mb(&b, rank ? rank[i] : 0, pos[rank ? rank[i] : 0]++));
    }
    lg_plan_t *plan;
    CHECK(lg_sched_builder_finish(&b, 1 << 16, &plan));
    return plan;
}

/* The stats' per-stage and per-rank arrays live in the sim: free it after reading them. */
static struct lg_sim_stats simulate(const lg_job_t *job, const lg_plan_t *plan, lg_sim_t **keep)
{
    lg_sim_t *sim;
    struct lg_sim_params sp = {.record_events = 1};
    CHECK(lg_sim_run(job, plan, &sp, &sim));
    CHECK(lg_sim_verify(job, plan, sim));
    struct lg_sim_stats st;
    lg_sim_get_stats(sim, &st);
    *keep = sim;
    return st;
}

#define NEAR(a, b) ck_assert_msg(fabs((a) - (b)) < 1e-9, "%s = %.12g, expected %.12g", #a, (double)(a), (double)(b))

/* S=2, two unit microbatches of one batch.
 *   stage 0: F0 [0,1] F1 [1,2] .. B0 [4,6] .. B1 [7,9]
 *   stage 1: F0 [1,2] B0 [2,4] F1 [4,5] B1 [5,7]
 * makespan 9, each stage busy 6: bubble 1/3 = (S-1)/(m+S-1). */
START_TEST(two_stages_two_mbs)
{
    uint32_t len[] = {1, 1};
    lg_job_t *job = job_of(2, 1, 0, len, 2, 2);
    lg_plan_t *plan = plan_of(job, 1, (const int[][4]){{0, -1}, {1, -1}}, NULL, 2);
    CHECK(lg_plan_verify(job, plan));
    lg_sim_t *sim;
    struct lg_sim_stats st = simulate(job, plan, &sim);
    NEAR(st.makespan_us, 9);
    NEAR(st.bubble, 1.0 / 3);
    NEAR(st.stage_bubble[0], 1.0 / 3);
    NEAR(st.stage_bubble[1], 1.0 / 3);
    NEAR(st.work_us, 12);
    ck_assert_uint_eq(st.waits, 0);
    lg_sim_free(sim);
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

/* Equal costs, S=4, m=8: makespan (m+S-1)(F+B) = 33, bubble 3/11. */
START_TEST(equal_costs_formula)
{
    uint32_t len[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    lg_job_t *job = job_of(4, 1, 0, len, 8, 8);
    lg_plan_t *plan = plan_of(job, 1, (const int[][4]){{0, -1}, {1, -1}, {2, -1}, {3, -1}, {4, -1}, {5, -1}, {6, -1},
                                                       {7, -1}},
                              NULL, 8);
    lg_sim_t *sim;
    struct lg_sim_stats st = simulate(job, plan, &sim);
    NEAR(st.makespan_us, 33);
    NEAR(st.bubble, 3.0 / 11);
    lg_sim_free(sim);
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

/* Batch 1 right after batch 0 (S=2, optimizer 0.5 us): the plan marks the wait; the forward of mb 1 is held
 * from t=1 until batch 0's backward ends on stage 0 (t=6) plus the step (6.5).
 *   stage 0: F0 [0,1] B0 [4,6] F1 [6.5,7.5] B1 [10.5,12.5]
 *   stage 1: F0 [1,2] B0 [2,4] F1 [7.5,8.5] B1 [8.5,10.5]                          makespan 12.5 */
START_TEST(step_wait_in_a_rank)
{
    uint32_t len[] = {1, 1};
    lg_job_t *job = job_of(2, 1, 0, len, 2, 1);
    ((struct lg_job *)job)->p.optimizer_us = 0.5;
    lg_plan_t *plan = plan_of(job, 1, (const int[][4]){{0, -1}, {1, -1}}, NULL, 2);
    struct lg_plan_summary sum;
    lg_plan_get_summary(plan, &sum);
    ck_assert_uint_eq(sum.waits, 1);
    CHECK(lg_plan_verify(job, plan));
    plan->seg[1].wait = 0; /* without the mark, the verifier must object */
    ck_assert_int_eq(lg_plan_verify(job, plan), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "no wait marked"));
    plan->seg[1].wait = 1;
    lg_sim_t *sim;
    struct lg_sim_stats st = simulate(job, plan, &sim);
    NEAR(st.makespan_us, 12.5);
    NEAR(st.bubble, 1 - 12.0 / 25);
    ck_assert_uint_eq(st.waits, 1);
    NEAR(st.wait_us, 5.5);
    const struct lg_sim_event *ev;
    size_t n = lg_sim_events(sim, &ev);
    int seen = 0;
    for (size_t i = 0; i < n; i++)
        if (ev[i].kind == 'F' && ev[i].mb == 1 && ev[i].stage == 0) {
            NEAR(ev[i].start_us, 6.5);
            seen = 1;
        }
    ck_assert(seen);
    lg_sim_free(sim);
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

/* Two DP ranks, S=1, global batch 2: batch 0 = samples of 1 and 3 tokens, one per rank; batch 1 = 1 + 1.
 *   rank 0: F [0,1] B [1,3] ........ F [9,10] B [10,12]     (held from 3 to 9 by rank 1's backward)
 *   rank 1: F [0,3] B [3,9]          F [9,10] B [10,12]
 * makespan 12, busy 6 and 12: bubble 1 - 18/24, DP imbalance 12/9 - 1. */
START_TEST(step_wait_across_ranks)
{
    uint32_t len[] = {1, 3, 1, 1};
    lg_job_t *job = job_of(1, 2, 0, len, 4, 2);
    int rank[] = {0, 1, 0, 1};
    lg_plan_t *plan = plan_of(job, 2, (const int[][4]){{0, -1}, {1, -1}, {2, -1}, {3, -1}}, rank, 4);
    CHECK(lg_plan_verify(job, plan));
    lg_sim_t *sim;
    struct lg_sim_stats st = simulate(job, plan, &sim);
    NEAR(st.makespan_us, 12);
    NEAR(st.bubble, 0.25);
    NEAR(st.dp_imbalance, 1.0 / 3);
    NEAR(st.rank_busy_us[0], 6);
    NEAR(st.rank_busy_us[1], 12);
    ck_assert_uint_eq(st.waits, 1);
    NEAR(st.wait_us, 6);
    lg_sim_free(sim);
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

/* 5 layers over 2 stages: 3 and 2. One unit microbatch: F [0,3] [3,5], B [5,9] [9,15]. */
START_TEST(uneven_stages)
{
    uint32_t len[] = {1};
    lg_job_t *job = job_of(2, 1, 5, len, 1, 1);
    lg_plan_t *plan = plan_of(job, 1, (const int[][4]){{0, -1}}, NULL, 1);
    lg_sim_t *sim;
    struct lg_sim_stats st = simulate(job, plan, &sim);
    NEAR(st.makespan_us, 15);
    NEAR(st.stage_bubble[0], 1 - 9.0 / 15);
    NEAR(st.stage_bubble[1], 1 - 6.0 / 15);
    lg_sim_free(sim);
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

/* p2p 0.5 us between stages: F [0,1] [1.5,2.5], B [2.5,4.5] [5,7]. */
START_TEST(p2p_latency)
{
    uint32_t len[] = {1};
    lg_job_t *job = job_of(2, 1, 0, len, 1, 1);
    ((struct lg_job *)job)->p.p2p_us = 0.5;
    lg_plan_t *plan = plan_of(job, 1, (const int[][4]){{0, -1}}, NULL, 1);
    lg_sim_t *sim;
    struct lg_sim_stats st = simulate(job, plan, &sim);
    NEAR(st.makespan_us, 7);
    lg_sim_free(sim);
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

/* Samples of 2 and 3 tokens in one microbatch, S=1: layer 0.5, rank term 0.1 per token x rank 4,
 * attention 1 per len^2 (13).  F = 0.5 + 0.1*20 + 13 = 15.5;  B = 0.5 + 1.05*2 + 2.5*13 = 35.1. */
START_TEST(attention_and_rank_terms)
{
    uint32_t len[] = {2, 3};
    lg_job_t *job = job_of(1, 1, 0, len, 2, 2);
    struct lg_costmodel *cm = &((struct lg_job *)job)->p.cost;
    *cm = (struct lg_costmodel){.layer_us = 0.5, .token_rank_us = 0.1, .attn_us = 1, .bwd_linear = 1.05,
                                .bwd_attn = 2.5, .layers = 1};
    lg_plan_t *plan = plan_of(job, 1, (const int[][4]){{0, 1, -1}}, NULL, 1);
    struct lg_mb_view v;
    CHECK(lg_plan_mb(plan, 0, &v));
    NEAR(v.sum_len2, 13);
    NEAR(v.rank_tokens, 20);
    lg_sim_t *sim;
    struct lg_sim_stats st = simulate(job, plan, &sim);
    NEAR(st.makespan_us, 15.5 + 35.1);
    lg_sim_free(sim);
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

/* Batch 1 before batch 0 on the same rank can never run: the verifier rejects it, the simulator reports the
 * deadlock instead of hanging. */
START_TEST(deadlock_detected)
{
    uint32_t len[] = {1, 1};
    lg_job_t *job = job_of(1, 1, 0, len, 2, 1);
    lg_plan_t *plan = plan_of(job, 1, (const int[][4]){{1, -1}, {0, -1}}, NULL, 2);
    ck_assert_int_eq(lg_plan_verify(job, plan), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "comes after"));
    lg_sim_t *sim = NULL;
    ck_assert_int_eq(lg_sim_run(job, plan, NULL, &sim), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "deadlock"));
    ck_assert_ptr_null(sim);
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

/* The timeline verifier catches overlapping ops, broken data flow and an early forward. */
START_TEST(timeline_verifier)
{
    uint32_t len[] = {1, 1, 1};
    lg_job_t *job = job_of(2, 1, 0, len, 3, 1);
    lg_plan_t *plan = plan_of(job, 1, (const int[][4]){{0, -1}, {1, -1}, {2, -1}}, NULL, 3);
    lg_sim_t *sim;
    simulate(job, plan, &sim);
    const struct lg_sim_event *cev;
    size_t n = lg_sim_events(sim, &cev);
    struct lg_sim_event *ev = (struct lg_sim_event *)cev;
    for (size_t i = 0; i < n; i++) /* forward of mb 2 on stage 0, moved to t=0 */
        if (ev[i].mb == 2 && ev[i].stage == 0 && ev[i].kind == 'F') {
            struct lg_sim_event keep = ev[i];
            ev[i].end_us -= ev[i].start_us;
            ev[i].start_us = 0;
            ck_assert_int_eq(lg_sim_verify(job, plan, sim), LG_ERR_INVALID);
            ev[i] = keep;
        }
    for (size_t i = 0; i < n; i++) /* backward of mb 0 on stage 0 before stage 1's */
        if (ev[i].mb == 0 && ev[i].stage == 0 && ev[i].kind == 'B') {
            struct lg_sim_event keep = ev[i];
            ev[i].start_us -= 1.5;
            ev[i].end_us -= 1.5;
            ck_assert_int_eq(lg_sim_verify(job, plan, sim), LG_ERR_INVALID);
            ev[i] = keep;
        }
    CHECK(lg_sim_verify(job, plan, sim));
    lg_sim_free(sim);
    struct lg_sim_params none = {0};
    CHECK(lg_sim_run(job, plan, &none, &sim));
    ck_assert_int_eq(lg_sim_verify(job, plan, sim), LG_ERR_INVALID); /* nothing recorded */
    lg_sim_free(sim);
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

/* Megatron-style: 1 sample per microbatch, one batch after another, each step marked as a wait; mLoRA-style:
 * the two adapters alternate. */
START_TEST(baseline_shapes)
{
    struct lg_job_params p = lg_job_params_default();
    p.stages = 2;
    lg_job_t *job;
    CHECK(lg_job_init(&p, &job));
    uint32_t len[4] = {100, 200, 300, 400};
    for (int a = 0; a < 2; a++) {
        lg_dataset_t *ds;
        CHECK(lg_dataset_from_lengths(len, 4, &ds));
        struct lg_adapter_params ap = {.name = a ? "b" : "a", .global_batch = 2, .rank = 8};
        CHECK(lg_job_add_adapter(job, &ap, ds, NULL));
    }
    struct lg_plan_params pp = lg_plan_params_default();
    pp.algo = LG_PLAN_MEGATRON;
    lg_plan_t *plan;
    CHECK(lg_plan_build(job, &pp, &plan));
    CHECK(lg_plan_verify(job, plan));
    ck_assert_uint_eq(lg_plan_mb_count(plan), 4); /* 4096 / 400: up to 10 a microbatch, so one per batch */
    struct lg_plan_summary sum;
    lg_plan_get_summary(plan, &sum);
    ck_assert_uint_eq(sum.waits, 2); /* each adapter's batch 1 comes right after its batch 0 */
    lg_plan_free(plan);
    pp.samples_per_mb = 1;
    CHECK(lg_plan_build(job, &pp, &plan));
    CHECK(lg_plan_verify(job, plan));
    ck_assert_uint_eq(lg_plan_mb_count(plan), 8);
    struct lg_seg_view sg;
    CHECK(lg_plan_seg(plan, 2, 0, &sg)); /* adapter a, batch 1, one position after batch 0 */
    ck_assert_int_eq(sg.adapter, 0);
    ck_assert_uint_eq(sg.batch, 1);
    ck_assert_int_eq(sg.wait, 1);
    lg_plan_free(plan);
    pp.algo = LG_PLAN_MLORA;
    CHECK(lg_plan_build(job, &pp, &plan));
    CHECK(lg_plan_verify(job, plan));
    for (size_t i = 0; i < 4; i++) {
        CHECK(lg_plan_seg(plan, i, 0, &sg));
        ck_assert_int_eq(sg.adapter, (int)(i % 2));
    }
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched_sim");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, two_stages_two_mbs);
    tcase_add_test(tc, equal_costs_formula);
    tcase_add_test(tc, step_wait_in_a_rank);
    tcase_add_test(tc, step_wait_across_ranks);
    tcase_add_test(tc, uneven_stages);
    tcase_add_test(tc, p2p_latency);
    tcase_add_test(tc, attention_and_rank_terms);
    tcase_add_test(tc, deadlock_detected);
    tcase_add_test(tc, timeline_verifier);
    tcase_add_test(tc, baseline_shapes);
    suite_add_tcase(s, tc);
    int failed = lg_test_run(s, 0);
    return failed ? 1 : 0;
}
