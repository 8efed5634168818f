/* train_eval.c: the loss of base + adapter on a token dataset, without dropout and without gradients: the
 * validation loss during training and `loragen eval`. Samples are packed in order into microbatches of the
 * job's capacity (a longer sample is cut to the capacity); the loss is the mean over every predicted token
 * (Hugging Face's causal shift), and the perplexity its exponential. */
#include "train_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Runs the microbatch of samples [first, last) of tk; adds its summed loss and token count. */
static enum lg_status eval_mb(struct lg_trainer *tr, int adapter, const lg_tokens_t *tk, size_t first, size_t last,
                              double *sum, int64_t *count)
{
    int64_t n = 0;
    int nseq = 0;
    int32_t maxlen = 0;
    for (size_t i = first; i < last; i++) {
        const int32_t *ids, *lb;
        int64_t len;
        lg_tokens_sample(tk, i, &ids, &lb, &len);
        if (len > (int64_t)tr->capacity)
            len = tr->capacity;
        tr->cu[nseq++] = (int32_t)n;
        for (int64_t t = 0; t < len; t++) {
            tr->ids[n + t] = ids[t];
            tr->target[n + t] = t + 1 < len ? lb[t + 1] : -100;
            tr->weight[n + t] = tr->target[n + t] != -100 ? 1.0f : 0.0f;
            *count += tr->target[n + t] != -100;
        }
        n += len;
        if (len > maxlen)
            maxlen = (int32_t)len;
    }
    tr->cu[nseq] = (int32_t)n;
    tr->seg[0] = (struct lg_seg){.adapter = adapter, .start = 0, .len = n};
    struct lg_mb mb = {.n = n, .nseq = nseq, .cu = tr->cu, .max_len = maxlen, .nseg = 1, .seg = tr->seg,
                       .train = 0};
    struct lg_decoder_batch b = {.mb = &mb, .ids = tr->ids, .target = tr->target, .weight = tr->weight,
                                 .loss = tr->loss};
    enum lg_status s = tr->stages > 1 ? lg_pp_eval_mb(tr, &b) : lg_decoder_step(tr->dec, &b, 0);
    for (int64_t t = 0; s == LG_OK && t < n && (tr->stages == 1 || tr->stage == tr->stages - 1); t++)
        *sum += tr->loss[t];
    return s;
}

enum lg_status lg_eval_tokens(struct lg_trainer *tr, int adapter, const lg_tokens_t *tk, double *loss,
                              int64_t *tokens)
{
    double sum = 0;
    int64_t count = 0, fill = 0;
    size_t first = 0, n = lg_tokens_count(tk);
    enum lg_status s = LG_OK;
    for (size_t i = 0; s == LG_OK && i <= n; i++) {
        int64_t len = 0;
        if (i < n) {
            lg_tokens_sample(tk, i, NULL, NULL, &len);
            if (len > (int64_t)tr->capacity)
                len = tr->capacity;
        }
        if (i == n || fill + len > (int64_t)tr->capacity) {
            if (i > first)
                s = eval_mb(tr, adapter, tk, first, i, &sum, &count);
            first = i;
            fill = 0;
        }
        fill += len;
    }
    if (s == LG_OK && tr->stages > 1) { /* the last stages have the losses; every pipeline ran the same */
        double v[2] = {sum, tr->stage == tr->stages - 1 ? (double)count : 0};
        if ((s = lg_comm_allreduce_host_f64(tr->comm, v, 2)) == LG_OK) {
            sum = v[0];
            count = (int64_t)v[1];
        }
    }
    *loss = count ? sum / (double)count : NAN;
    *tokens = count;
    return s;
}

enum lg_status lg_eval_run(const struct lg_eval_opts *o, struct lg_eval_result *r)
{
    if (!o || !o->job || !r)
        return lg_fail(LG_ERR_INVALID, "lg_eval_run: null argument");
    memset(r, 0, sizeof *r);
    struct lg_train_opts to = {.job = o->job, .backend = o->backend};
    struct lg_trainer tr;
    memset(&tr, 0, sizeof tr);
    enum lg_status s = lg_train_setup(&tr, &to, 1);
    int k = o->adapter < 0 ? 0 : o->adapter;
    r->adapters = tr.nad;
    if (s == LG_OK && k >= tr.nad)
        s = lg_fail(LG_ERR_INVALID, "%s: adapter %d of %d", o->job, k, tr.nad);
    struct lg_ad_state *a = s == LG_OK ? &tr.ad[k] : NULL;
    if (s == LG_OK && !o->base_only)
        s = lg_ad_load_peft(&tr, a, o->adapter_dir ? o->adapter_dir : a->out_dir);
    lg_tokens_t *own = NULL;
    const lg_tokens_t *tk = NULL;
    if (s == LG_OK && o->dataset)
        s = lg_tokens_load(o->dataset, tr.mc.vocab_size, &own);
    if (s == LG_OK)
        tk = own ? own : a->val ? a->val : a->train;
    if (s == LG_OK)
        s = lg_eval_tokens(&tr, o->base_only ? -1 : k, tk, &r->loss, &r->tokens);
    if (s == LG_OK) {
        r->samples = (int64_t)lg_tokens_count(tk);
        r->perplexity = exp(r->loss);
    }
    lg_tokens_free(own);
    lg_train_teardown(&tr);
    return s;
}
