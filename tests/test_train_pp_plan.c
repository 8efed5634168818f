/* test_train_pp_plan.c: the checks that refuse, before an epoch starts, a plan the multi-process runtime would
 * deadlock on. A scheduler plan for one adapter (two global batches) is checked as built, then with two of a
 * rank's microbatches swapped so that a microbatch of batch 1 comes before the last one of batch 0:
 *   - pipeline (lg_pp_check): no stage could run it before batch 0's step; the message names the microbatch,
 *     the batches and the adapter;
 *   - data parallel (lg_dp_build, each rank): that rank would reach batch 1 before batch 0's all-reduce.
 * The planner never makes such plans (lg_plan_verify refuses them too); the runtime's own check is what keeps
 * a mistake from hanging every rank. */
#include "lg_test.h"
#include "sched_internal.h"
#include "train_internal.h"

#include <check.h>
#include <string.h>

static lg_job_t *make_job(int stages, int dp)
{
    struct lg_job_params jp = lg_job_params_default();
    jp.stages = stages;
    jp.data_parallel = dp;
    jp.capacity = 48;
    lg_job_t *job;
    CHECK(lg_job_init(&jp, &job));
    uint32_t len[16];
    for (int i = 0; i < 16; i++)
        len[i] = 20;
    lg_dataset_t *ds;
    CHECK(lg_dataset_from_lengths(len, 16, &ds));
    struct lg_adapter_params ap = {.name = "solo", .global_batch = 8, .rank = 8, .alpha = 16, .lr = 1e-3};
    CHECK(lg_job_add_adapter(job, &ap, ds, NULL));
    return job;
}

/* A trainer with just what the checks read: the plan and the adapter's batches. */
static void fake_trainer(struct lg_trainer *tr, struct lg_ad_state *ad, struct lg_train_adapter *cfg, lg_job_t *job,
                         lg_plan_t *plan, int dp)
{
    memset(tr, 0, sizeof *tr);
    memset(ad, 0, sizeof *ad);
    memset(cfg, 0, sizeof *cfg);
    cfg->name = "solo";
    tr->plan = plan;
    tr->nad = 1;
    tr->ad = ad;
    tr->dp = dp;
    ad->cfg = cfg;
    struct lg_adapter_info info;
    CHECK(lg_job_adapter(job, 0, &info));
    ck_assert_uint_eq(info.batches, 2);
    ad->nbatches = info.batches;
    ad->batch_left = calloc(info.batches, sizeof *ad->batch_left);
    for (size_t i = 0; i < lg_job_dataset_size(job, 0); i++)
        ad->batch_left[lg_job_sample_batch(job, 0, i)]++;
}

/* Swaps the positions of rank r's last microbatch of batch 0 and its first of batch 1. */
static void break_order(lg_plan_t *plan, int r)
{
    long last0 = -1, first1 = -1;
    for (size_t i = 0; i < plan->nmb; i++) {
        struct lg_mb_view v;
        struct lg_seg_view sv;
        CHECK(lg_plan_mb(plan, i, &v));
        CHECK(lg_plan_seg(plan, i, 0, &sv));
        if (v.rank != r)
            continue;
        if (sv.batch == 0 && (last0 < 0 || plan->mb[i].pos > plan->mb[last0].pos))
            last0 = (long)i;
        if (sv.batch == 1 && (first1 < 0 || plan->mb[i].pos < plan->mb[first1].pos))
            first1 = (long)i;
    }
    ck_assert(last0 >= 0 && first1 >= 0);
    uint32_t p = plan->mb[last0].pos;
    plan->mb[last0].pos = plan->mb[first1].pos;
    plan->mb[first1].pos = p;
}

START_TEST(pipeline_deadlock_refused)
{
    lg_job_t *job = make_job(2, 1);
    lg_plan_t *plan;
    struct lg_plan_params pp = lg_plan_params_default();
    CHECK(lg_plan_build(job, &pp, &plan));
    struct lg_trainer tr;
    struct lg_ad_state ad;
    struct lg_train_adapter cfg;
    fake_trainer(&tr, &ad, &cfg, job, plan, 1);
    CHECK(lg_pp_check(&tr));
    break_order(plan, 0);
    ck_assert_int_eq(lg_pp_check(&tr), LG_ERR_INVALID);
    ck_assert_msg(strstr(lg_last_error(), "runs batch 1 of adapter 'solo' before batch 0 has all its microbatches") &&
                      strstr(lg_last_error(), "would deadlock"),
                  "%s", lg_last_error());
    free(ad.batch_left);
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

START_TEST(data_parallel_deadlock_refused)
{
    lg_job_t *job = make_job(1, 2);
    lg_plan_t *plan;
    struct lg_plan_params pp = lg_plan_params_default();
    CHECK(lg_plan_build(job, &pp, &plan));
    struct lg_trainer tr;
    struct lg_ad_state ad;
    struct lg_train_adapter cfg;
    fake_trainer(&tr, &ad, &cfg, job, plan, 2);
    for (int r = 0; r < 2; r++) {
        tr.dp_rank = r;
        CHECK(lg_dp_build(&tr));
        ck_assert_uint_eq(tr.dps.nsteps, 2); /* both batches' all-reduces, in the same order on each rank */
        ck_assert_int_eq((int)tr.dps.steps[0].batch, 0);
        ck_assert_int_eq((int)tr.dps.steps[1].batch, 1);
    }
    break_order(plan, 1);
    for (int r = 0; r < 2; r++) { /* every rank refuses it: each checks every rank's order */
        tr.dp_rank = r;
        ck_assert_int_eq(lg_dp_build(&tr), LG_ERR_INVALID);
        ck_assert_msg(strstr(lg_last_error(), "data-parallel rank 1 would run microbatch") &&
                          strstr(lg_last_error(), "before batch 0's gradients are all-reduced"),
                      "%s", lg_last_error());
    }
    lg_dp_free(&tr);
    free(ad.batch_left);
    lg_plan_free(plan);
    lg_job_free(job);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train_pp_plan");
    TCase *tc = tcase_create("plans");
    tcase_add_test(tc, pipeline_deadlock_refused);
    tcase_add_test(tc, data_parallel_deadlock_refused);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
