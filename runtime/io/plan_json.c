/* plan_json.c: writes a plan as JSON for the trainer and for people: the adapters with the loss-token count of
 * every global batch (the runtime divides each microbatch's summed loss by it), the microbatches per rank in
 * order with their segments, samples and waits, the summary, and the predicted timing when a simulation is
 * given. Written to a temporary file and renamed, so a reader never sees half a plan.
 *
 * Every value goes through one of the helpers below, which stop at the first value JSON cannot hold and name
 * it: a number that is inf or NaN (an adapter's alpha = 1/0 in a job file, a cost model that overflows), or
 * a string that is not UTF-8 (a name). jansson's constructors return NULL for those, and a NULL handed on to
 * json_pack or json_array_append_new silently drops the field or the whole adapter, so nothing is handed on
 * unchecked: the writer fails with the field's name and writes no file, and `loragen plan --json` exits 1. */
#include "lg_io.h"
#include "lg_base.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The writer's state: the first failure, and the path of the value being written ("adapters[2] ('x')"). */
struct jw {
    enum lg_status s;
    char at[256];
};

static void at(struct jw *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void at(struct jw *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->at, sizeof w->at, fmt, ap);
    va_end(ap);
}

/* A name for an error message: printable ASCII as is, every other byte as \xNN (it may not be UTF-8). */
static void printable(const char *s, char *out, size_t n)
{
    size_t k = 0;
    for (; *s && k + 5 < n; s++) {
        unsigned char c = (unsigned char)*s;
        k += (size_t)(c >= 32 && c < 127 ? snprintf(out + k, n - k, "%c", c) : snprintf(out + k, n - k, "\\x%02x", c));
    }
    out[k] = '\0';
}

static void fail_oom(struct jw *w)
{
    if (w->s == LG_OK)
        w->s = lg_fail(LG_ERR_OOM, "plan json: out of memory");
}

static void put(struct jw *w, json_t *obj, const char *key, json_t *v)
{
    if (!v || w->s != LG_OK) {
        json_decref(v);
        if (!v)
            fail_oom(w);
        return;
    }
    if (json_object_set_new(obj, key, v) != 0)
        fail_oom(w);
}

static void put_num(struct jw *w, json_t *obj, const char *key, double v)
{
    if (w->s != LG_OK)
        return;
    if (!isfinite(v)) {
        w->s = lg_fail(LG_ERR_INVALID, "plan json: %s%s%s is %s: JSON has no such number, so the plan is not written",
                       w->at, *w->at ? "." : "", key, isnan(v) ? "NaN" : v > 0 ? "inf" : "-inf");
        return;
    }
    put(w, obj, key, json_real(v));
}

static void put_int(struct jw *w, json_t *obj, const char *key, long long v) { put(w, obj, key, json_integer(v)); }

static void put_str(struct jw *w, json_t *obj, const char *key, const char *v)
{
    if (w->s != LG_OK)
        return;
    json_t *j = json_string(v);
    if (!j) {
        char shown[256];
        printable(v, shown, sizeof shown);
        w->s = lg_fail(LG_ERR_INVALID, "plan json: %s%s%s '%s' is not valid UTF-8, so the plan is not written", w->at,
                       *w->at ? "." : "", key, shown);
        return;
    }
    put(w, obj, key, j);
}

static void push(struct jw *w, json_t *arr, json_t *v)
{
    if (!v || w->s != LG_OK) {
        json_decref(v);
        if (!v)
            fail_oom(w);
        return;
    }
    if (json_array_append_new(arr, v) != 0)
        fail_oom(w);
}

static json_t *adapters_json(struct jw *w, const lg_job_t *job)
{
    json_t *arr = json_array();
    for (int a = 0; arr && w->s == LG_OK && a < lg_job_adapter_count(job); a++) {
        struct lg_adapter_info in;
        lg_job_adapter(job, a, &in);
        char shown[128];
        printable(in.name, shown, sizeof shown);
        at(w, "adapters[%d] ('%s')", a, shown);
        json_t *o = json_object(), *loss = json_array();
        put_str(w, o, "name", in.name);
        put_int(w, o, "rank", in.rank);
        put_num(w, o, "alpha", in.alpha);
        put_num(w, o, "dropout", in.dropout);
        put_num(w, o, "lr", in.lr);
        put_int(w, o, "global_batch", in.global_batch);
        put_int(w, o, "samples", (long long)in.samples);
        put_int(w, o, "batches", (long long)in.batches);
        put_int(w, o, "tokens", (long long)in.tokens);
        put_int(w, o, "loss_tokens", (long long)in.loss_tokens);
        put_int(w, o, "max_len", in.max_len);
        put_int(w, o, "truncated", (long long)in.truncated);
        put_int(w, o, "skipped", (long long)in.skipped);
        put_int(w, o, "dropped", (long long)in.dropped);
        for (size_t g = 0; loss && g < in.batches; g++)
            push(w, loss, json_integer((json_int_t)lg_job_batch_loss_tokens(job, a, g)));
        put(w, o, "batch_loss_tokens", loss);
        push(w, arr, o);
    }
    return arr;
}

static json_t *segs_json(struct jw *w, const lg_job_t *job, const lg_plan_t *plan, size_t i, size_t nseg)
{
    json_t *segs = json_array();
    for (size_t j = 0; segs && w->s == LG_OK && j < nseg; j++) {
        struct lg_seg_view s;
        struct lg_adapter_info ad;
        lg_plan_seg(plan, i, j, &s);
        lg_job_adapter(job, s.adapter, &ad);
        at(w, "microbatches[%zu].segments[%zu]", i, j);
        json_t *o = json_object(), *smp = json_array();
        put_int(w, o, "adapter", s.adapter);
        put_str(w, o, "name", ad.name);
        put_int(w, o, "batch", (long long)s.batch);
        put(w, o, "wait", json_boolean(s.wait));
        for (size_t k = 0; smp && k < s.nsamples; k++)
            push(w, smp, json_integer(s.samples[k]));
        put(w, o, "samples", smp);
        push(w, segs, o);
    }
    return segs;
}

static json_t *mbs_json(struct jw *w, const lg_job_t *job, const lg_plan_t *plan)
{
    const struct lg_costmodel *cm = &lg_job_get_params(job)->cost;
    json_t *arr = json_array();
    for (size_t i = 0; arr && w->s == LG_OK && i < lg_plan_mb_count(plan); i++) {
        struct lg_mb_view m;
        lg_plan_mb(plan, i, &m);
        at(w, "microbatches[%zu]", i);
        json_t *o = json_object();
        put_int(w, o, "index", (long long)i);
        put_int(w, o, "rank", m.rank);
        put_int(w, o, "pos", (long long)m.pos);
        put_int(w, o, "tokens", m.tokens);
        put_int(w, o, "padded", m.padded);
        put_num(w, o, "sum_len2", m.sum_len2);
        put_num(w, o, "fwd_us_per_layer", lg_costmodel_fwd_us(cm, m.padded, m.rank_tokens, m.sum_len2));
        put_num(w, o, "bwd_us_per_layer", lg_costmodel_bwd_us(cm, m.padded, m.rank_tokens, m.sum_len2));
        put(w, o, "segments", segs_json(w, job, plan, i, m.nseg));
        push(w, arr, o);
    }
    return arr;
}

static void push_num(struct jw *w, json_t *arr, const char *field, double v)
{
    if (w->s != LG_OK)
        return;
    if (!isfinite(v)) {
        w->s = lg_fail(LG_ERR_INVALID, "plan json: %s is %s: JSON has no such number, so the plan is not written",
                       field, isnan(v) ? "NaN" : v > 0 ? "inf" : "-inf");
        return;
    }
    push(w, arr, json_real(v));
}

static json_t *sim_json(struct jw *w, const lg_sim_t *sim)
{
    struct lg_sim_stats st;
    lg_sim_get_stats(sim, &st);
    json_t *o = json_object(), *stage = json_array(), *rank = json_array();
    char field[64];
    for (int s = 0; stage && s < st.stages; s++) {
        snprintf(field, sizeof field, "simulation.stage_bubble[%d]", s);
        push_num(w, stage, field, st.stage_bubble[s]);
    }
    for (int r = 0; rank && r < st.ranks; r++) {
        snprintf(field, sizeof field, "simulation.rank_busy_us[%d]", r);
        push_num(w, rank, field, st.rank_busy_us[r]);
    }
    at(w, "simulation");
    put_num(w, o, "makespan_us", st.makespan_us);
    put_num(w, o, "bubble", st.bubble);
    put(w, o, "stage_bubble", stage);
    put(w, o, "rank_busy_us", rank);
    put_num(w, o, "dp_imbalance", st.dp_imbalance);
    put_int(w, o, "waits", (long long)st.waits);
    put_num(w, o, "wait_us", st.wait_us);
    put_num(w, o, "work_us", st.work_us);
    return o;
}

static json_t *summary_json(struct jw *w, const lg_plan_t *plan)
{
    struct lg_plan_summary sm;
    lg_plan_get_summary(plan, &sm);
    json_t *o = json_object();
    at(w, "summary");
    put_int(w, o, "microbatches", (long long)sm.microbatches);
    put_int(w, o, "slots", (long long)sm.slots);
    put_int(w, o, "tokens", (long long)sm.tokens);
    put_int(w, o, "padded", (long long)sm.padded);
    put_num(w, o, "waste", sm.waste);
    put_int(w, o, "lower_bound", (long long)sm.lower_bound);
    put_int(w, o, "padded_bound", (long long)sm.padded_bound);
    put_int(w, o, "capacity", sm.capacity);
    put_int(w, o, "target", sm.target);
    put_int(w, o, "waits", (long long)sm.waits);
    put_int(w, o, "wait_forwards", (long long)sm.wait_forwards);
    put_int(w, o, "candidates", (long long)sm.candidates);
    put_num(w, o, "plan_ms", sm.plan_ms);
    return o;
}

static json_t *cost_json(struct jw *w, const struct lg_costmodel *c)
{
    json_t *o = json_object();
    at(w, "cost_model");
    put_num(w, o, "layer_us", c->layer_us);
    put_num(w, o, "token_us", c->token_us);
    put_num(w, o, "token_rank_us", c->token_rank_us);
    put_num(w, o, "attention_us", c->attn_us);
    put_num(w, o, "backward_linear", c->bwd_linear);
    put_num(w, o, "backward_attention", c->bwd_attn);
    put_int(w, o, "layers", c->layers);
    return o;
}

/* The whole document, or NULL with w->s naming the first value that could not be written. */
static json_t *plan_json(struct jw *w, const lg_job_t *job, const lg_plan_t *plan, const lg_sim_t *sim)
{
    const struct lg_job_params *p = lg_job_get_params(job);
    json_t *root = json_object();
    if (!root) {
        fail_oom(w);
        return NULL;
    }
    at(w, "%s", "");
    put_str(w, root, "job", lg_job_name(job));
    put_str(w, root, "algorithm", lg_plan_algo_name(lg_plan_get_algo(plan)));
    put_int(w, root, "stages", p->stages);
    put_int(w, root, "data_parallel", p->data_parallel);
    put_int(w, root, "pad_multiple", p->pad_multiple);
    put_str(w, root, "capacity_policy", p->capacity_policy == LG_CAPACITY_AUTO ? "auto" : "fixed");
    put(w, root, "cost_model", w->s == LG_OK ? cost_json(w, &p->cost) : NULL);
    put(w, root, "adapters", w->s == LG_OK ? adapters_json(w, job) : NULL);
    put(w, root, "summary", w->s == LG_OK ? summary_json(w, plan) : NULL);
    put(w, root, "microbatches", w->s == LG_OK ? mbs_json(w, job, plan) : NULL);
    if (sim)
        put(w, root, "simulation", w->s == LG_OK ? sim_json(w, sim) : NULL);
    if (w->s != LG_OK) {
        json_decref(root);
        return NULL;
    }
    return root;
}

enum lg_status lg_plan_write_json(const lg_job_t *job, const lg_plan_t *plan, const lg_sim_t *sim, const char *path)
{
    if (!job || !plan || !path)
        return lg_fail(LG_ERR_INVALID, "lg_plan_write_json: null argument");
    struct jw w = {.s = LG_OK};
    json_t *root = plan_json(&w, job, plan, sim);
    if (!root)
        return w.s;
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
