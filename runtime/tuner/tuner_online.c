/* tuner_online.c: online tuning (lg_tuner_online_enable). The process database's lookup (tune/db.c) asks the
 * function registered here for a key it lacks; the key's shape string says what to tune (lg_tuner_key_job reads
 * it back: the spelling of lg_lora_tune_key, lg_mlora_tune_key and lg_attn_tune_key), and the matching tuner
 * measures it on the caller's context at the first use's token count. */
#include "lg_tuner.h"
#include "lg_base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum lg_status lg_tuner_key_job(const struct lg_tune_key *k, struct lg_tuner_key_job *out)
{
    memset(out, 0, sizeof *out);
    const char *s = k->shape;
    int n = 0;
    if (!strcmp(k->op, "lora")) {
        long long K, M;
        int r, p;
        if (sscanf(s, "k%lld_m%lld_r%d_p%d%n", &K, &M, &r, &p, &n) == 4 && !s[n] && K > 0 && M > 0 && r > 0 &&
            (p == 0 || p == 1)) {
            out->family = LG_TUNER_LORA;
            out->lora = (struct lg_lora_params){.in_features = K, .out_features = M, .rank = r,
                                                .alpha = 2.0f * (float)r, .dropout = p ? 0.1f : 0.f,
                                                .dtype = k->dtype};
            return LG_OK;
        }
    } else if (!strcmp(k->op, "mlora")) {
        long long K;
        char ms[40];
        int r, a, p;
        if (sscanf(s, "k%lld_m%39[0-9x]_r%d_a%d_p%d%n", &K, ms, &r, &a, &p, &n) == 5 && !s[n] && K > 0 && r > 0 &&
            a > 0 && (p == 0 || p == 1)) {
            struct lg_tuner_mlora_shape *m = &out->mlora;
            *m = (struct lg_tuner_mlora_shape){.in_features = K, .nadapters = a, .rank = r, .alpha = 2.0f * (float)r,
                                               .dropout = p ? 0.1f : 0.f, .dtype = k->dtype};
            int ok = 1;
            for (char *t = ms, *next; ok && *t; t = next) {
                long long v = strtoll(t, &next, 10);
                ok = next != t && v > 0 && m->nmod < 3 && (*next == 'x' || !*next);
                if (ok)
                    m->out_features[m->nmod++] = v;
                if (*next == 'x')
                    next++, ok = ok && *next;
            }
            if (ok && m->nmod > 0) {
                out->family = LG_TUNER_MLORA;
                return LG_OK;
            }
        }
    } else if (!strcmp(k->op, "attn")) {
        int hq, hkv, d;
        char mode[8];
        if (sscanf(s, "hq%d_hkv%d_d%d_%7[a-z]%n", &hq, &hkv, &d, mode, &n) == 4 && !s[n] && hq > 0 && hkv > 0 &&
            (!strcmp(mode, "det") || !strcmp(mode, "atomic"))) {
            out->family = LG_TUNER_ATTN;
            out->attn = (struct lg_attn_params){.hq = hq, .hkv = hkv, .head_dim = d, .dtype = k->dtype,
                                                .backend = LG_ATTN_GENERATED,
                                                .flags = strcmp(mode, "det") ? 0 : LG_ATTN_DETERMINISTIC};
            return LG_OK;
        }
    } else
        return lg_fail(LG_ERR_UNSUPPORTED, "online tuning: no tuner for op '%s'", k->op);
    return lg_fail(LG_ERR_INVALID, "online tuning: %s key shape '%s' is not one its tuner spells", k->op, s);
}

static struct lg_tuner_opts online_opts;

static void log_stderr(void *u, const char *line)
{
    (void)u;
    fprintf(stderr, "loragen: online tuning:   %s\n", line);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static enum lg_status tune_key(void *u, void *vctx, const struct lg_tune_key *k, int64_t tokens,
                               struct lg_tune_entry *out, struct lg_tune_info *info)
{
    (void)u;
    lg_ctx_t *ctx = vctx;
    if (!ctx)
        return lg_fail(LG_ERR_INVALID, "online tuning: no context to tune on");
    if (strcmp(k->gpu, lg_ctx_device_name(ctx)) || k->sm_count != lg_ctx_sm_count(ctx) || k->arch != lg_ctx_arch(ctx))
        return lg_fail(LG_ERR_INVALID, "online tuning: the key is for %s (sm_%d, %d SMs), the context runs on %s",
                       k->gpu, k->arch, k->sm_count, lg_ctx_device_name(ctx));
    struct lg_tuner_key_job j;
    enum lg_status st = lg_tuner_key_job(k, &j);
    if (st != LG_OK)
        return st;
    int64_t n = tokens > 0 ? tokens : k->tokens > 0 ? k->tokens : 8192;
    fprintf(stderr, "loragen: online tuning %s %s at %lld tokens (a new key; LORAGEN_TUNE_ONLINE)...\n", k->op, k->shape,
            (long long)n);
    const double t0 = now_s();
    struct lg_tuner_outcome o;
    if (j.family == LG_TUNER_LORA)
        st = lg_tuner_lora(ctx, &j.lora, n, &online_opts, &o);
    else if (j.family == LG_TUNER_MLORA)
        st = lg_tuner_mlora(ctx, &j.mlora, n < j.mlora.nadapters ? j.mlora.nadapters : n, &online_opts, &o);
    else
        st = lg_tuner_attn(ctx, &j.attn, n, 2048, &online_opts, &o);
    if (st != LG_OK)
        return st;
    *out = o.entry;
    lg_tuner_info(ctx, info);
    fprintf(stderr, "loragen: online tuning %s %s: %.4f -> %.4f ms (%.3fx, %d candidates, %d scored +inf) in %.1f s\n",
            k->op, k->shape, o.entry.default_ms, o.entry.time_ms,
            o.entry.time_ms > 0 ? o.entry.default_ms / o.entry.time_ms : 1.0, o.entry.candidates, o.entry.failed,
            now_s() - t0);
    return LG_OK;
}

void lg_tuner_online_enable(const struct lg_tuner_opts *o)
{
    online_opts = o ? *o : (struct lg_tuner_opts){.max_cands = 8, .rounds = 5};
    if (!online_opts.log)
        online_opts.log = log_stderr;
    lg_tune_set_online(tune_key, NULL);
}

void lg_tuner_online_disable(void) { lg_tune_set_online(NULL, NULL); }

int lg_tuner_online_from_env(void)
{
    const char *e = getenv("LORAGEN_TUNE_ONLINE");
    if (!e || !e[0] || !strcmp(e, "0") || !strcmp(e, "off") || !strcmp(e, "no"))
        return 0;
    if (strcmp(e, "1") && strcmp(e, "on") && strcmp(e, "yes")) {
        lg_fail(LG_ERR_INVALID, "LORAGEN_TUNE_ONLINE is '%s'; it takes 1, on or yes (0, off, no or unset: off)", e);
        return -1;
    }
    lg_tuner_online_enable(NULL);
    return 1;
}
