/* tuner_spec.c: a spec's sweep (lg_tuner_spec). The jobs, in order: every distinct FusedLoRA shape of the
 * spec's linear layers (layers sharing a shape are tuned once: q and o of Llama, k and v, gate and up) at every
 * token count; for a model spec, its FusedMultiLoRA layers as the CUDA training backend builds them (q/k/v
 * merged, o, gate/up merged, down) at every token count; and its attention tiles once, over the largest token
 * count. A progress report precedes each job (what, how many remain, the time left at the pace so far). Also
 * where a database is measured (lg_tuner_info). */
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

enum kind { J_LORA, J_MLORA, J_ATTN };

struct job {
    enum kind kind;
    char label[96];
    int tokens;
    int64_t k, m;                      /* J_LORA */
    struct lg_tuner_mlora_shape ms;    /* J_MLORA */
    struct lg_attn_params ap;          /* J_ATTN */
    int sample_len;
};

#define MAX_JOBS 512

static unsigned families(const struct lg_tuner_sweep *s) { return s->families ? s->families : LG_TUNER_ALL; }

static void add_label(char *label, size_t n, const char *name)
{
    size_t len = strlen(label);
    snprintf(label + len, n - len, "%s%s", len ? "," : "", name);
}

/* The distinct FusedLoRA shapes, each with its layers' names. */
static int lora_shapes(const struct lg_tuner_sweep *s, struct job *out, int cap)
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
            memset(&out[n], 0, sizeof out[n]);
            out[n].kind = J_LORA, out[n].k = l->in_features, out[n].m = l->out_features;
            n++;
        }
        add_label(out[j].label, sizeof out[j].label, l->name);
    }
    return n;
}

/* The training backend's layers of a model spec: q/k/v, o, gate/up, down. */
static int mlora_layers(const struct lg_tuner_sweep *s, struct job *out)
{
    const struct lg_spec_model *m = &s->spec->model;
    const int64_t H = m->hidden_size, q = (int64_t)m->num_attention_heads * m->head_dim,
                  kv = (int64_t)m->num_key_value_heads * m->head_dim, I = m->intermediate_size;
    const struct {
        const char *label;
        int64_t k;
        int nmod;
        int64_t out[3];
    } L[4] = {{"q,k,v", H, 3, {q, kv, kv}}, {"o", q, 1, {H}}, {"gate,up", H, 2, {I, I}}, {"down", I, 1, {H}}};
    for (int i = 0; i < 4; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].kind = J_MLORA;
        snprintf(out[i].label, sizeof out[i].label, "mlora %s x%d", L[i].label, s->mlora_adapters > 0 ? s->mlora_adapters : 1);
        out[i].ms = (struct lg_tuner_mlora_shape){.in_features = L[i].k, .nmod = L[i].nmod,
                                                  .nadapters = s->mlora_adapters > 0 ? s->mlora_adapters : 1,
                                                  .rank = s->spec->rank, .alpha = (float)s->spec->alpha,
                                                  .dropout = (float)s->spec->dropout, .dtype = s->spec->dtype};
        memcpy(out[i].ms.out_features, L[i].out, sizeof L[i].out);
    }
    return 4;
}

static int build_jobs(const struct lg_tuner_sweep *s, struct job *jobs)
{
    const int own = s->spec->tokens;
    const int *tok = s->tokens && s->ntokens > 0 ? s->tokens : &own;
    const int nt = s->tokens && s->ntokens > 0 ? s->ntokens : 1;
    const struct lg_spec_model *m = &s->spec->model;
    const int model = m->present && !s->only;
    struct job base[64];
    int n = 0, nb = 0;
    if (families(s) & LG_TUNER_LORA)
        nb = lora_shapes(s, base, 64 - 4);
    if ((families(s) & LG_TUNER_MLORA) && model)
        nb += mlora_layers(s, base + nb);
    for (int ti = 0; ti < nt; ti++)
        for (int b = 0; b < nb && n < MAX_JOBS - 1; b++) {
            jobs[n] = base[b];
            jobs[n++].tokens = tok[ti];
        }
    /* attention: the generated kernels take head dims 64 and 128 */
    if ((families(s) & LG_TUNER_ATTN) && model && (m->head_dim == 64 || m->head_dim == 128)) {
        int T = tok[0];
        for (int i = 1; i < nt; i++)
            T = tok[i] > T ? tok[i] : T;
        const int L = s->attn_sample_len > 0 ? s->attn_sample_len : 2048;
        struct job *j = &jobs[n++];
        memset(j, 0, sizeof *j);
        j->kind = J_ATTN, j->tokens = T, j->sample_len = L;
        snprintf(j->label, sizeof j->label, "attention (samples of %d)", L < T ? L : T);
        j->ap = (struct lg_attn_params){.hq = m->num_attention_heads, .hkv = m->num_key_value_heads,
                                        .head_dim = m->head_dim, .dtype = s->spec->dtype,
                                        .backend = LG_ATTN_GENERATED, .flags = LG_ATTN_DETERMINISTIC};
    }
    return n;
}

int lg_tuner_spec_jobs(const struct lg_tuner_sweep *s)
{
    struct job *jobs = malloc(sizeof *jobs * MAX_JOBS);
    int n = jobs ? build_jobs(s, jobs) : 0;
    free(jobs);
    return n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static enum lg_status run_job(lg_ctx_t *ctx, const struct lg_tuner_sweep *s, const struct job *j,
                              struct lg_tuner_outcome *out)
{
    if (j->kind == J_ATTN)
        return lg_tuner_attn(ctx, &j->ap, j->tokens, j->sample_len, &s->opts, out);
    if (j->kind == J_MLORA)
        return lg_tuner_mlora(ctx, &j->ms, j->tokens, &s->opts, out);
    struct lg_lora_params p = {.in_features = j->k, .out_features = j->m, .rank = s->spec->rank,
                               .alpha = (float)s->spec->alpha, .dropout = (float)s->spec->dropout,
                               .dtype = s->spec->dtype};
    return lg_tuner_lora(ctx, &p, j->tokens, &s->opts, out);
}

enum lg_status lg_tuner_spec(lg_ctx_t *ctx, const struct lg_tuner_sweep *s, lg_tune_db_t *db,
                             struct lg_tuner_result **out, int *count)
{
    if (!ctx || !s || !s->spec || !db || !out || !count)
        return lg_fail(LG_ERR_INVALID, "lg_tuner_spec: a context, a sweep with a spec, a database and outputs are required");
    struct job *jobs = malloc(sizeof *jobs * MAX_JOBS);
    if (!jobs)
        return lg_fail(LG_ERR_OOM, "tuner: out of memory");
    const int total = build_jobs(s, jobs);
    if (total == 0) {
        free(jobs);
        return lg_fail(LG_ERR_INVALID, "lg_tuner_spec: nothing to tune in %s%s%s", s->spec->path,
                       s->only ? ": no linear layer named " : "", s->only ? s->only : "");
    }
    struct lg_tuner_result *res = calloc((size_t)total, sizeof *res);
    if (!res) {
        free(jobs);
        return lg_fail(LG_ERR_OOM, "tuner: out of memory");
    }
    const double t0 = now_s();
    enum lg_status st = LG_OK;
    for (int i = 0; i < total && st == LG_OK; i++) {
        const struct job *j = &jobs[i];
        struct lg_tuner_result *r = &res[i];
        snprintf(r->label, sizeof r->label, "%s", j->label);
        r->tokens = j->tokens;
        if (s->progress) {
            char what[192];
            if (j->kind == J_LORA)
                snprintf(what, sizeof what, "lora %s k%lld_m%lld @ %d tokens", j->label, (long long)j->k,
                         (long long)j->m, j->tokens);
            else
                snprintf(what, sizeof what, "%s @ %d tokens", j->label, j->tokens);
            double el = now_s() - t0;
            struct lg_tuner_progress pr = {.what = what, .done = i, .total = total, .elapsed_s = el,
                                           .eta_s = i ? el / i * (total - i) : -1};
            s->progress(s->progress_u, &pr);
        }
        r->status = run_job(ctx, s, j, &r->outcome);
        if (r->status != LG_OK) { /* recorded; the sweep goes on */
            snprintf(r->error, sizeof r->error, "%s", lg_last_error());
            lg_clear_error();
            continue;
        }
        st = lg_tune_db_put(db, &r->outcome.entry);
    }
    free(jobs);
    if (st != LG_OK) {
        free(res);
        return st;
    }
    *out = res;
    *count = total;
    return LG_OK;
}
