/* tuner_spec.c: a spec's sweep (lg_tuner_spec): every distinct FusedLoRA shape of the spec's linear layers
 * (layers sharing a shape are tuned once: q and o of Llama, k and v, gate and up) at every token count, then
 * (when asked) the attention tiles of a model spec, with a progress report before each job (what, how many remain, the time left at the pace so far), and where a
 * database is measured (lg_tuner_info). */
#include "lg_tuner.h"
#include "lg_base.h"
#include "lg_gpu.h"
#include "lg_jit.h"

#include <cublasLt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void lg_tuner_info(lg_ctx_t *ctx, struct lg_tune_info *in)
{
    memset(in, 0, sizeof *in);
    snprintf(in->gpu, sizeof in->gpu, "%s", lg_ctx_device_name(ctx));
    in->sm_count = lg_ctx_sm_count(ctx);
    in->arch = lg_ctx_arch(ctx);
    if (cuDriverGetVersion(&in->driver) != CUDA_SUCCESS)
        in->driver = 0;
    in->nvrtc = lg_nvrtc_version();
    in->cublaslt = (int)cublasLtGetVersion();
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(in->date, sizeof in->date, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The distinct shapes of the spec (in order of first appearance), each with the names of its layers. */
struct shape {
    int64_t k, m;
    char label[96];
};

static int shapes_of(const struct lg_tuner_sweep *s, struct shape *out, int cap)
{
    int n = 0;
    for (int i = 0; i < s->spec->nlinears; i++) {
        const struct lg_linear *l = &s->spec->linears[i];
        if (s->only && strcmp(s->only, l->name))
            continue;
        int j = 0;
        while (j < n && !(out[j].k == l->in_features && out[j].m == l->out_features))
            j++;
        if (j == n) {
            if (n == cap)
                continue;
            out[n].k = l->in_features, out[n].m = l->out_features, out[n].label[0] = 0;
            n++;
        }
        size_t len = strlen(out[j].label);
        snprintf(out[j].label + len, sizeof out[j].label - len, "%s%s", len ? "," : "", l->name);
    }
    return n;
}

#define MAX_SHAPES 64

/* Attention is tuned for model specs whose head dim the generated kernels take (64, 128). */
static int attn_job(const struct lg_tuner_sweep *s)
{
    const struct lg_spec_model *m = &s->spec->model;
    return s->attention && m->present && !s->only && (m->head_dim == 64 || m->head_dim == 128);
}

int lg_tuner_spec_jobs(const struct lg_tuner_sweep *s)
{
    struct shape sh[MAX_SHAPES];
    return shapes_of(s, sh, MAX_SHAPES) * (s->tokens && s->ntokens > 0 ? s->ntokens : 1) + attn_job(s);
}

/* The attention job: the spec's heads and head dim over the largest token count. */
static void run_attn(lg_ctx_t *ctx, const struct lg_tuner_sweep *s, const int *tok, int nt, lg_tune_db_t *db,
                     struct lg_tuner_result *r, enum lg_status *st)
{
    const struct lg_spec_model *m = &s->spec->model;
    int T = tok[0];
    for (int i = 1; i < nt; i++)
        T = tok[i] > T ? tok[i] : T;
    const int L = s->attn_sample_len > 0 ? s->attn_sample_len : 2048;
    struct lg_attn_params ap = {.hq = m->num_attention_heads, .hkv = m->num_key_value_heads, .head_dim = m->head_dim,
                                .dtype = s->spec->dtype, .backend = LG_ATTN_GENERATED, .flags = LG_ATTN_DETERMINISTIC};
    snprintf(r->label, sizeof r->label, "attention (samples of %d)", L < T ? L : T);
    r->tokens = T;
    r->status = lg_tuner_attn(ctx, &ap, T, L, &s->opts, &r->outcome);
    if (r->status != LG_OK) {
        snprintf(r->error, sizeof r->error, "%s", lg_last_error());
        lg_clear_error();
        return;
    }
    *st = lg_tune_db_put(db, &r->outcome.entry);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

enum lg_status lg_tuner_spec(lg_ctx_t *ctx, const struct lg_tuner_sweep *s, lg_tune_db_t *db,
                             struct lg_tuner_result **out, int *count)
{
    if (!ctx || !s || !s->spec || !db || !out || !count)
        return lg_fail(LG_ERR_INVALID, "lg_tuner_spec: a context, a sweep with a spec, a database and outputs are required");
    struct shape sh[MAX_SHAPES];
    const int ns = shapes_of(s, sh, MAX_SHAPES);
    if (ns == 0)
        return lg_fail(LG_ERR_INVALID, "lg_tuner_spec: %s has no linear layer%s%s", s->spec->path,
                       s->only ? " named " : "", s->only ? s->only : "");
    const int own = s->spec->tokens;
    const int *tok = s->tokens && s->ntokens > 0 ? s->tokens : &own;
    const int nt = s->tokens && s->ntokens > 0 ? s->ntokens : 1;
    const int total = ns * nt + attn_job(s);
    struct lg_tuner_result *res = calloc((size_t)total, sizeof *res);
    if (!res)
        return lg_fail(LG_ERR_OOM, "tuner: out of memory");
    const double t0 = now_s();
    enum lg_status st = LG_OK;
    int done = 0;
    for (int ti = 0; ti < nt && st == LG_OK; ti++)
        for (int si = 0; si < ns && st == LG_OK; si++, done++) {
            struct lg_lora_params p = {.in_features = sh[si].k, .out_features = sh[si].m, .rank = s->spec->rank,
                                       .alpha = (float)s->spec->alpha, .dropout = (float)s->spec->dropout,
                                       .dtype = s->spec->dtype};
            struct lg_tuner_result *r = &res[done];
            snprintf(r->label, sizeof r->label, "%s", sh[si].label);
            r->tokens = tok[ti];
            if (s->progress) {
                char what[192];
                snprintf(what, sizeof what, "lora %s k%lld_m%lld @ %d tokens", sh[si].label, (long long)sh[si].k,
                         (long long)sh[si].m, tok[ti]);
                double el = now_s() - t0;
                struct lg_tuner_progress pr = {.what = what, .done = done, .total = total, .elapsed_s = el,
                                               .eta_s = done ? el / done * (total - done) : -1};
                s->progress(s->progress_u, &pr);
            }
            r->status = lg_tuner_lora(ctx, &p, tok[ti], &s->opts, &r->outcome);
            if (r->status != LG_OK) {
                snprintf(r->error, sizeof r->error, "%s", lg_last_error());
                lg_clear_error();
                continue;
            }
            st = lg_tune_db_put(db, &r->outcome.entry);
        }
    if (st == LG_OK && attn_job(s)) {
        if (s->progress) {
            double el = now_s() - t0;
            struct lg_tuner_progress pr = {.what = "attention tiles", .done = done, .total = total, .elapsed_s = el,
                                           .eta_s = done ? el / done * (total - done) : -1};
            s->progress(s->progress_u, &pr);
        }
        run_attn(ctx, s, tok, nt, db, &res[done++], &st);
    }
    if (st != LG_OK) {
        free(res);
        return st;
    }
    *out = res;
    *count = total;
    return LG_OK;
}
