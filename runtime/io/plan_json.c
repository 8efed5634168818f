/* plan_json.c: writes a plan as JSON for the trainer and for people: the adapters with the loss-token count of
 * every global batch (the runtime divides each microbatch's summed loss by it), the microbatches per rank in
 * order with their segments, samples and waits, the summary, and the predicted timing when a simulation is
 * given. Written to a temporary file and renamed, so a reader never sees half a plan. */
#include "lg_io.h"
#include "lg_base.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *adapters_json(const lg_job_t *job)
{
    json_t *arr = json_array();
    for (int a = 0; a < lg_job_adapter_count(job); a++) {
        struct lg_adapter_info info;
        lg_job_adapter(job, a, &info);
        const struct lg_adapter_info *in = &info;
        json_t *loss = json_array();
        for (size_t g = 0; g < in->batches; g++)
            json_array_append_new(loss, json_integer((json_int_t)lg_job_batch_loss_tokens(job, a, g)));
        json_array_append_new(
            arr, json_pack("{s:s, s:i, s:f, s:f, s:f, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "name",
                           in->name, "rank", in->rank, "alpha", in->alpha, "dropout", in->dropout, "lr", in->lr,
                           "global_batch", in->global_batch, "samples", (json_int_t)in->samples, "batches",
                           (json_int_t)in->batches, "tokens", (json_int_t)in->tokens, "loss_tokens",
                           (json_int_t)in->loss_tokens, "max_len", (json_int_t)in->max_len, "truncated",
                           (json_int_t)in->truncated, "skipped", (json_int_t)in->skipped, "dropped",
                           (json_int_t)in->dropped, "batch_loss_tokens", loss));
    }
    return arr;
}

static json_t *segs_json(const lg_job_t *job, const lg_plan_t *plan, size_t i, size_t nseg)
{
    json_t *segs = json_array();
    for (size_t j = 0; j < nseg; j++) {
        struct lg_seg_view s;
        struct lg_adapter_info ad;
        lg_plan_seg(plan, i, j, &s);
        lg_job_adapter(job, s.adapter, &ad);
        json_t *smp = json_array();
        for (size_t k = 0; k < s.nsamples; k++)
            json_array_append_new(smp, json_integer(s.samples[k]));
        json_array_append_new(segs, json_pack("{s:i, s:s, s:i, s:b, s:o}", "adapter", s.adapter, "name", ad.name,
                                              "batch", (int)s.batch, "wait", s.wait, "samples", smp));
    }
    return segs;
}

static json_t *mbs_json(const lg_job_t *job, const lg_plan_t *plan)
{
    const struct lg_costmodel *cm = &lg_job_get_params(job)->cost;
    json_t *arr = json_array();
    for (size_t i = 0; i < lg_plan_mb_count(plan); i++) {
        struct lg_mb_view m;
        lg_plan_mb(plan, i, &m);
        double f = lg_costmodel_fwd_us(cm, m.padded, m.rank_tokens, m.sum_len2);
        double b = lg_costmodel_bwd_us(cm, m.padded, m.rank_tokens, m.sum_len2);
        json_array_append_new(arr, json_pack("{s:I, s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:o}", "index", (json_int_t)i,
                                             "rank", m.rank, "pos", (int)m.pos, "tokens", (int)m.tokens, "padded",
                                             (int)m.padded, "sum_len2", m.sum_len2, "fwd_us_per_layer", f,
                                             "bwd_us_per_layer", b, "segments", segs_json(job, plan, i, m.nseg)));
    }
    return arr;
}

static json_t *sim_json(const lg_sim_t *sim)
{
    struct lg_sim_stats st;
    lg_sim_get_stats(sim, &st);
    json_t *stage = json_array(), *rank = json_array();
    for (int s = 0; s < st.stages; s++)
        json_array_append_new(stage, json_real(st.stage_bubble[s]));
    for (int r = 0; r < st.ranks; r++)
        json_array_append_new(rank, json_real(st.rank_busy_us[r]));
    return json_pack("{s:f, s:f, s:o, s:o, s:f, s:I, s:f, s:f}", "makespan_us", st.makespan_us, "bubble", st.bubble,
                     "stage_bubble", stage, "rank_busy_us", rank, "dp_imbalance", st.dp_imbalance, "waits",
                     (json_int_t)st.waits, "wait_us", st.wait_us, "work_us", st.work_us);
}

enum lg_status lg_plan_write_json(const lg_job_t *job, const lg_plan_t *plan, const lg_sim_t *sim, const char *path)
{
    if (!job || !plan || !path)
        return lg_fail(LG_ERR_INVALID, "lg_plan_write_json: null argument");
    struct lg_plan_summary summ;
    lg_plan_get_summary(plan, &summ);
    const struct lg_plan_summary *sm = &summ;
    const struct lg_job_params *p = lg_job_get_params(job);
    json_t *summary = json_pack("{s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:i, s:i, s:I, s:I, s:I, s:f}", "microbatches",
                                (json_int_t)sm->microbatches, "slots", (json_int_t)sm->slots, "tokens",
                                (json_int_t)sm->tokens, "padded", (json_int_t)sm->padded, "waste", sm->waste,
                                "lower_bound", (json_int_t)sm->lower_bound, "padded_bound",
                                (json_int_t)sm->padded_bound, "capacity", (int)sm->capacity, "target",
                                (int)sm->target, "waits", (json_int_t)sm->waits, "wait_forwards",
                                (json_int_t)sm->wait_forwards, "candidates",
                                (json_int_t)sm->candidates, "plan_ms", sm->plan_ms);
    json_t *cost = json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:i}", "layer_us", p->cost.layer_us, "token_us",
                             p->cost.token_us, "token_rank_us", p->cost.token_rank_us, "attention_us", p->cost.attn_us,
                             "backward_linear", p->cost.bwd_linear, "backward_attention", p->cost.bwd_attn, "layers",
                             p->cost.layers);
    json_t *root = json_pack("{s:s, s:s, s:i, s:i, s:i, s:s, s:o, s:o, s:o, s:o}", "job", lg_job_name(job),
                             "algorithm", lg_plan_algo_name(lg_plan_get_algo(plan)), "stages", p->stages,
                             "data_parallel", p->data_parallel, "pad_multiple", p->pad_multiple, "capacity_policy",
                             p->capacity_policy == LG_CAPACITY_AUTO ? "auto" : "fixed", "cost_model", cost,
                             "adapters", adapters_json(job), "summary", summary, "microbatches", mbs_json(job, plan));
    if (!root)
        return lg_fail(LG_ERR_OOM, "plan json: out of memory");
    if (sim)
        json_object_set_new(root, "simulation", sim_json(sim));
    size_t n = strlen(path);
    char *tmp = malloc(n + 8);
    if (!tmp) {
        json_decref(root);
        return lg_fail(LG_ERR_OOM, "plan json: out of memory");
    }
    snprintf(tmp, n + 8, "%s.tmp", path);
    int rc = json_dump_file(root, tmp, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(root);
    enum lg_status s = LG_OK;
    if (rc != 0)
        s = lg_fail(LG_ERR_IO, "%s: cannot write the plan", tmp);
    else if (rename(tmp, path) != 0)
        s = lg_fail(LG_ERR_IO, "%s: cannot rename %s into place", path, tmp);
    if (s != LG_OK)
        remove(tmp);
    free(tmp);
    return s;
}
