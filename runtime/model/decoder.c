/* decoder.c: the Llama/Qwen2 decoder on the op interface (see lg_decoder.h for the math and the memory plan).
 * This file owns the layer objects and the arena layout and orders the ops; every op runs in the backend. */
#include "lg_decoder.h"
#include "decoder_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lg_module_is_attn(enum lg_peft_module m) { return m <= LG_PEFT_O_PROJ; }

void lg_module_shape(const struct lg_model_config *c, enum lg_peft_module m, int64_t *in, int64_t *out)
{
    int64_t H = c->hidden_size, F = c->intermediate_size;
    int64_t q = (int64_t)c->num_attention_heads * c->head_dim, kv = (int64_t)c->num_key_value_heads * c->head_dim;
    switch (m) {
    case LG_PEFT_Q_PROJ: *in = H, *out = q; break;
    case LG_PEFT_K_PROJ:
    case LG_PEFT_V_PROJ: *in = H, *out = kv; break;
    case LG_PEFT_O_PROJ: *in = q, *out = H; break;
    case LG_PEFT_GATE_PROJ:
    case LG_PEFT_UP_PROJ: *in = H, *out = F; break;
    default: *in = F, *out = H; break;
    }
}

/* The projections grouped by shared input: q/k/v, o, gate/up, down. */
const struct lg_group_def lg_groups[LG_GROUPS] = {
    {3, {LG_PEFT_Q_PROJ, LG_PEFT_K_PROJ, LG_PEFT_V_PROJ}},
    {1, {LG_PEFT_O_PROJ}},
    {2, {LG_PEFT_GATE_PROJ, LG_PEFT_UP_PROJ}},
    {1, {LG_PEFT_DOWN_PROJ}},
};

static enum lg_status group_of(enum lg_peft_module m, int *g, int *i)
{
    for (int a = 0; a < LG_GROUPS; a++)
        for (int b = 0; b < lg_groups[a].n; b++)
            if (lg_groups[a].mod[b] == m) {
                *g = a;
                *i = b;
                return LG_OK;
            }
    return lg_fail(LG_ERR_INTERNAL, "decoder: module %d in no group", (int)m);
}

/* ---- weights ---- */

static enum lg_status load_tensor(const lg_st_t *st, const char *name, int ndim, const int64_t *shape, float **out)
{
    int64_t count = 1;
    for (int i = 0; i < ndim; i++)
        count *= shape[i];
    float *buf = malloc((size_t)count * sizeof *buf);
    if (!buf)
        return lg_fail(LG_ERR_OOM, "decoder: out of memory for %s (%lld floats)", name, (long long)count);
    enum lg_status s = lg_st_read_f32(st, name, ndim, shape, buf);
    if (s != LG_OK) {
        free(buf);
        return s;
    }
    *out = buf;
    return LG_OK;
}

/* Reads a tensor and uploads it as the backend's weight dtype into freshly allocated memory. */
static enum lg_status upload_tensor(lg_decoder_t *d, const lg_st_t *st, const char *name, int ndim,
                                    const int64_t *shape, lg_addr *out)
{
    float *w = NULL;
    enum lg_status s = load_tensor(st, name, ndim, shape, &w);
    if (s != LG_OK)
        return s;
    int64_t count = 1;
    for (int i = 0; i < ndim; i++)
        count *= shape[i];
    const struct lg_backend_ops *o = d->be->ops;
    s = o->alloc(d->be, o->weight_size(d->be, count), out);
    if (s == LG_OK)
        s = o->upload_weight(d->be, *out, w, count);
    free(w);
    return s;
}

static enum lg_status init_group(lg_decoder_t *d, const lg_st_t *st, int layer, int g)
{
    const struct lg_model_config *c = d->cfg;
    const struct lg_group_def *gd = &lg_groups[g];
    struct lg_lora_linear_desc desc = {.nout = gd->n, .nadapters = d->nadapters,
                                       .layer_id = (uint32_t)(layer * 8 + gd->mod[0]), .max_tokens = d->max_tokens};
    struct lg_lora_slot *slots = calloc((size_t)(d->nadapters * gd->n) + 1, sizeof *slots);
    float *w[LG_LINEAR_MAX_OUT] = {0}, *bias[LG_LINEAR_MAX_OUT] = {0};
    enum lg_status s = slots ? LG_OK : lg_fail(LG_ERR_OOM, "decoder: out of memory");
    desc.has_bias = (g == LG_G_QKV && c->qkv_bias) || (g == LG_G_O && c->o_bias);
    for (int i = 0; s == LG_OK && i < gd->n; i++) {
        enum lg_peft_module m = gd->mod[i];
        int64_t in, out;
        lg_module_shape(c, m, &in, &out);
        desc.in = in;
        desc.out[i] = out;
        char name[160];
        snprintf(name, sizeof name, "model.layers.%d.%s.%s.weight", layer, lg_module_is_attn(m) ? "self_attn" : "mlp",
                 lg_peft_module_name(m));
        int64_t shape[2] = {out, in};
        s = load_tensor(st, name, 2, shape, &w[i]);
        if (s == LG_OK && desc.has_bias) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.bias", layer, lg_peft_module_name(m));
            s = load_tensor(st, name, 1, &out, &bias[i]);
        }
        for (int a = 0; a < d->nadapters; a++) {
            const struct lg_decoder_adapter *ad = &d->adapters[a];
            if (ad->targets & (1u << m))
                slots[a * gd->n + i] = (struct lg_lora_slot){ad->rank, ad->alpha, ad->dropout};
        }
    }
    desc.slots = slots;
    if (s == LG_OK)
        s = d->be->ops->linear_init(d->be, &desc, (const float *const *)w, (const float *const *)bias,
                                    &d->layers[layer].lin[g]);
    for (int i = 0; i < LG_LINEAR_MAX_OUT; i++) {
        free(w[i]);
        free(bias[i]);
    }
    free(slots);
    return s;
}

/* The weights of layers [from, to): the embedding on the first stage (and on the last when the head is tied to
 * it), the final norm and the head on the last, and the next stage's first norm (its layer's forward computes
 * it with the residual it hands over). */
static enum lg_status init_weights(lg_decoder_t *d, const lg_st_t *st)
{
    const struct lg_model_config *c = d->cfg;
    int64_t H = c->hidden_size, V = c->vocab_size;
    int64_t emb[2] = {V, H};
    int L = c->num_hidden_layers, first = d->from == 0, last = d->to == L;
    enum lg_status s = LG_OK;
    if (first || (last && c->tie_word_embeddings))
        s = upload_tensor(d, st, "model.embed_tokens.weight", 2, emb, &d->embed);
    if (s == LG_OK && last && !c->tie_word_embeddings)
        s = upload_tensor(d, st, "lm_head.weight", 2, emb, &d->head);
    if (s == LG_OK && last && c->tie_word_embeddings)
        d->head = d->embed;
    if (s == LG_OK && last)
        s = upload_tensor(d, st, "model.norm.weight", 1, &H, &d->norm);
    for (int l = d->from; s == LG_OK && l < d->to; l++) {
        char name[128];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        s = upload_tensor(d, st, name, 1, &H, &d->layers[l].ln1);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        if (s == LG_OK)
            s = upload_tensor(d, st, name, 1, &H, &d->layers[l].ln2);
        for (int g = 0; s == LG_OK && g < LG_GROUPS; g++)
            s = init_group(d, st, l, g);
    }
    if (s == LG_OK && !last) {
        char name[128];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", d->to);
        s = upload_tensor(d, st, name, 1, &H, &d->layers[d->to].ln1);
    }
    return s;
}

static enum lg_status init_rope(lg_decoder_t *d)
{
    const struct lg_model_config *c = d->cfg;
    struct lg_ref_rope *r = &d->rope;
    r->d = c->head_dim;
    r->theta = c->rope_theta;
    r->scaling = c->rope_llama3 ? LG_ROPE_LLAMA3 : LG_ROPE_NONE;
    r->factor = c->rope_factor;
    r->low_freq_factor = c->rope_low_freq_factor;
    r->high_freq_factor = c->rope_high_freq_factor;
    r->original_max_pos = c->rope_original_max_position;
    float probe[1024];
    if (c->head_dim / 2 > 1024)
        return lg_fail(LG_ERR_UNSUPPORTED, "decoder: head_dim %d is larger than supported (2048)", c->head_dim);
    return lg_ref_rope_inv_freq(r, probe); /* validates the parameters once, with a clear message */
}

enum lg_status lg_decoder_init(lg_backend_t *be, const struct lg_decoder_params *p, const lg_st_t *weights,
                               lg_decoder_t **out)
{
    if (!be || !p || !p->cfg || !weights || !out || p->nadapters < 0 || (p->nadapters && !p->adapters))
        return lg_fail(LG_ERR_INVALID, "lg_decoder_init: null or inconsistent argument");
    if (p->max_tokens < 1 || p->max_seqs < 1)
        return lg_fail(LG_ERR_INVALID, "lg_decoder_init: max_tokens and max_seqs must be positive");
    if (p->ckpt_every < 0)
        return lg_fail(LG_ERR_INVALID, "lg_decoder_init: ckpt_every must be >= 0");
    lg_decoder_t *d = calloc(1, sizeof *d);
    if (!d)
        return lg_fail(LG_ERR_OOM, "lg_decoder_init: out of memory");
    d->be = be;
    d->cfg = p->cfg;
    d->nadapters = p->nadapters;
    d->adapters = p->adapters;
    d->ckpt_every = p->ckpt_every;
    d->max_tokens = p->max_tokens;
    d->max_seqs = p->max_seqs;
    int L = p->cfg->num_hidden_layers;
    d->from = p->layer_from;
    d->to = p->layer_to ? p->layer_to : L;
    if (d->from < 0 || d->from >= d->to || d->to > L || ((d->from > 0 || d->to < L) && p->ckpt_every)) {
        free(d);
        return lg_fail(LG_ERR_INVALID, "lg_decoder_init: layers %d..%d of %d%s", p->layer_from, p->layer_to, L,
                       p->ckpt_every ? ": a pipeline stage keeps all its activations (activation checkpointing "
                                       "inside a stage is not built yet: set training.checkpoint_layers = 0)"
                                     : "");
    }
    d->layers = calloc((size_t)p->cfg->num_hidden_layers, sizeof *d->layers);
    enum lg_status s = d->layers ? LG_OK : lg_fail(LG_ERR_OOM, "lg_decoder_init: out of memory");
    if (s == LG_OK)
        s = init_weights(d, weights);
    if (s == LG_OK)
        s = init_rope(d);
    if (s == LG_OK)
        s = lg_decoder_arena_init(d);
    if (s != LG_OK) {
        lg_decoder_free(d);
        return s;
    }
    *out = d;
    return LG_OK;
}

void lg_decoder_free(lg_decoder_t *d)
{
    if (!d)
        return;
    const struct lg_backend_ops *o = d->be->ops;
    if (d->layers)
        for (int l = 0; l < d->cfg->num_hidden_layers; l++) {
            for (int g = 0; g < LG_GROUPS; g++)
                if (d->layers[l].lin[g])
                    o->linear_free(d->be, d->layers[l].lin[g]);
            if (d->layers[l].ln1)
                o->release(d->be, d->layers[l].ln1);
            if (d->layers[l].ln2)
                o->release(d->be, d->layers[l].ln2);
        }
    if (d->head && d->head != d->embed)
        o->release(d->be, d->head);
    if (d->embed)
        o->release(d->be, d->embed);
    if (d->norm)
        o->release(d->be, d->norm);
    o->release(d->be, d->arena);
    free(d->map.ckpt);
    free(d->map.win);
    free(d->layers);
    free(d);
}

enum lg_status lg_decoder_lora(lg_decoder_t *d, int layer, enum lg_peft_module m, int adapter,
                               struct lg_lora_params *out)
{
    if (layer < 0 || layer >= d->cfg->num_hidden_layers || adapter < 0 || adapter >= d->nadapters ||
        (unsigned)m >= LG_PEFT_MODULE_COUNT)
        return lg_fail(LG_ERR_INVALID, "lg_decoder_lora: layer %d, module %d, adapter %d out of range", layer,
                       (int)m, adapter);
    int g, i;
    enum lg_status s = group_of(m, &g, &i);
    if (s != LG_OK)
        return s;
    if (layer < d->from || layer >= d->to) { /* another stage's layer */
        memset(out, 0, sizeof *out);
        return LG_OK;
    }
    return d->be->ops->linear_params(d->be, d->layers[layer].lin[g], adapter, i, out);
}

enum lg_status lg_decoder_lora_sync(lg_decoder_t *d, int adapter)
{
    enum lg_status s = LG_OK;
    for (int l = d->from; s == LG_OK && l < d->to; l++)
        for (int g = 0; s == LG_OK && g < LG_GROUPS; g++)
            s = d->be->ops->linear_sync(d->be, d->layers[l].lin[g], adapter);
    return s;
}
