/* decoder_arena.c: the activation arena. One backend allocation, sized before the first step from the largest
 * microbatch (tokens T, samples S), carved into the buffers of struct lg_arena_map. With checkpointing every N
 * layers the window holds N layers' saved activations plus the inputs of layers 0, N, 2N, ...; without, the
 * window holds every layer (a pipeline stage: its own layers and the next stage's input). The same walk computes the size (base 0) and the addresses (base = the arena). */
#include "decoder_internal.h"

#include <stdlib.h>
#include <string.h>

#define LG_ARENA_ALIGN 256

struct carve {
    lg_addr next;
};

static lg_addr take(struct carve *c, size_t bytes)
{
    lg_addr p = c->next;
    c->next += (bytes + LG_ARENA_ALIGN - 1) / LG_ARENA_ALIGN * LG_ARENA_ALIGN;
    return p;
}

struct dims {
    size_t T, S, H, F, Q, KV, hq, act;
    size_t ld1, ld2; /* row strides of x1 and x2 (H without the layers: lg_decoder_arena_bytes) */
    int layers, nwin, nckpt;
};

static struct dims dims_of(const lg_backend_t *be, const struct lg_decoder_params *p)
{
    const struct lg_model_config *c = p->cfg;
    struct dims d = {
        .T = (size_t)p->max_tokens,
        .S = (size_t)p->max_seqs,
        .H = (size_t)c->hidden_size,
        .F = (size_t)c->intermediate_size,
        .Q = (size_t)c->num_attention_heads * (size_t)c->head_dim,
        .KV = (size_t)c->num_key_value_heads * (size_t)c->head_dim,
        .hq = (size_t)c->num_attention_heads,
        .act = lg_backend_act_size(be),
        .layers = c->num_hidden_layers,
    };
    d.ld1 = d.ld2 = d.H;
    int N = p->ckpt_every;
    int from = p->layer_from, to = p->layer_to ? p->layer_to : d.layers;
    if (from > 0 || to < d.layers) {
        /* a pipeline stage (never checkpointed): its layers, and one slot more for the input residual of the
         * next stage's first layer, where its last layer writes (slots are taken l % nwin: distinct for the
         * to - from + 1 consecutive layers) */
        d.nwin = to - from + (to < d.layers);
        d.nckpt = 0;
    } else if (N <= 0 || N >= d.layers) {
        d.nwin = d.layers;
        d.nckpt = 0;
    } else {
        d.nwin = N;
        d.nckpt = (d.layers + N - 1) / N;
    }
    return d;
}

/* Walks the layout; fills m when it is not NULL. Returns the bytes used from base. */
static size_t walk(const struct dims *d, lg_addr base, struct lg_arena_map *m)
{
    struct carve c = {base};
    struct lg_arena_map tmp = {0}, *o = m ? m : &tmp;
    size_t T = d->T, a = d->act, f32 = sizeof(float);
    o->ids = take(&c, T * 4);
    o->target = take(&c, T * 4);
    o->weight = take(&c, T * f32);
    o->loss = take(&c, T * f32);
    o->cu = take(&c, (d->S + 1) * 4);
    o->pos = take(&c, T * 4);
    o->h = take(&c, T * d->H * a);
    o->tmp = take(&c, T * d->H * a);
    for (int i = 0; i < d->nckpt; i++) {
        lg_addr p = take(&c, T * d->H * a);
        if (m)
            m->ckpt[i] = p;
    }
    for (int i = 0; i < d->nwin; i++) {
        struct lg_saved s;
        s.x_in = take(&c, T * d->H * a);
        s.x1 = take(&c, T * d->ld1 * a);
        s.rstd1 = take(&c, T * f32);
        s.q = take(&c, T * (d->Q + 2 * d->KV) * a);
        s.k = s.q + d->Q * a;
        s.v = s.k + d->KV * a;
        s.o = take(&c, T * d->Q * a);
        s.lse = take(&c, T * d->hq * f32);
        s.h_mid = take(&c, T * d->H * a);
        s.x2 = take(&c, T * d->ld2 * a);
        s.rstd2 = take(&c, T * f32);
        s.g = take(&c, T * 2 * d->F * a);
        s.u = s.g + d->F * a;
        s.m = take(&c, T * d->F * a);
        if (m)
            m->win[i] = s;
    }
    o->hf = take(&c, T * d->H * a);
    o->xf = take(&c, T * d->H * a);
    o->rstdf = take(&c, T * f32);
    o->dh = take(&c, T * d->H * a);
    o->dx = take(&c, T * d->H * a);
    o->dq = take(&c, T * (d->Q + 2 * d->KV) * a);
    o->dk = o->dq + d->Q * a;
    o->dv = o->dk + d->KV * a;
    o->dout = take(&c, T * d->Q * a);
    o->dm = take(&c, T * d->F * a);
    o->dg = take(&c, T * 2 * d->F * a);
    o->du = o->dg + d->F * a;
    o->ldqkv = (int64_t)(d->Q + 2 * d->KV);
    o->ldgu = (int64_t)(2 * d->F);
    o->ldx1 = (int64_t)d->ld1;
    o->ldx2 = (int64_t)d->ld2;
    return (size_t)(c.next - base);
}

size_t lg_decoder_arena_bytes(const lg_backend_t *be, const struct lg_decoder_params *p)
{
    struct dims d = dims_of(be, p);
    return walk(&d, 0, NULL);
}

double lg_decoder_token_bytes(const lg_backend_t *be, const struct lg_decoder_params *p)
{
    const int64_t step = 4096; /* the arena is linear in tokens and samples: its slope, exactly */
    struct lg_decoder_params a = *p, b = *p;
    a.max_tokens = a.max_seqs = step;
    b.max_tokens = b.max_seqs = 2 * step;
    double bytes = (double)(lg_decoder_arena_bytes(be, &b) - lg_decoder_arena_bytes(be, &a)) / (double)step;
    /* the linear layers' saved S: a column per rank of every slot (rounded up to 8 per layer) */
    int from = p->layer_from, to = p->layer_to ? p->layer_to : p->cfg->num_hidden_layers;
    for (int g = 0; g < LG_GROUPS; g++) {
        int64_t cols = 0;
        for (int i = 0; i < lg_groups[g].n; i++)
            for (int k = 0; k < p->nadapters; k++)
                if (p->adapters[k].targets >> lg_groups[g].mod[i] & 1u)
                    cols += p->adapters[k].rank;
        bytes += (double)(to - from) * (double)((cols + 7) / 8 * 8) * (double)lg_backend_act_size(be);
    }
    return bytes;
}

enum lg_status lg_decoder_reserve(lg_decoder_t *d, int64_t max_tokens, int max_seqs)
{
    if (max_tokens < 1 || max_seqs < 1)
        return lg_fail(LG_ERR_INVALID, "lg_decoder_reserve: max_tokens and max_seqs must be positive");
    const struct lg_backend_ops *o = d->be->ops;
    enum lg_status s = o->sync(d->be);
    for (int l = d->from; s == LG_OK && o->linear_reserve && l < d->to; l++)
        for (int g = 0; s == LG_OK && g < LG_GROUPS; g++)
            if (d->layers[l].lin[g])
                s = o->linear_reserve(d->be, d->layers[l].lin[g], max_tokens);
    if (s != LG_OK)
        return lg_fail_wrap(s, "resizing the linear layers for %lld-token microbatches: ", (long long)max_tokens);
    o->release(d->be, d->arena);
    d->arena = 0;
    free(d->map.ckpt);
    free(d->map.win);
    memset(&d->map, 0, sizeof d->map);
    d->max_tokens = max_tokens;
    d->max_seqs = max_seqs;
    return lg_decoder_arena_init(d);
}

enum lg_status lg_decoder_arena_init(lg_decoder_t *dec)
{
    struct lg_decoder_params p = {.cfg = dec->cfg, .ckpt_every = dec->ckpt_every, .max_tokens = dec->max_tokens,
                                  .max_seqs = dec->max_seqs, .layer_from = dec->from, .layer_to = dec->to};
    struct dims d = dims_of(dec->be, &p);
    /* x1 and x2 as wide as the q/k/v and gate/up layers ask (the same in every layer: one shape, one set of
     * adapters), so the CUDA layers keep their S there (FusedMultiLoRA's strategy (a)) */
    const struct lg_layer *first = &dec->layers[dec->from];
    if (dec->be->ops->linear_in_ld) {
        d.ld1 = (size_t)dec->be->ops->linear_in_ld(dec->be, first->lin[LG_G_QKV]);
        d.ld2 = (size_t)dec->be->ops->linear_in_ld(dec->be, first->lin[LG_G_GATEUP]);
    }
    struct lg_arena_map *m = &dec->map;
    m->nckpt = d.nckpt;
    m->nwin = d.nwin;
    m->ckpt = calloc((size_t)d.nckpt + 1, sizeof *m->ckpt);
    m->win = calloc((size_t)d.nwin, sizeof *m->win);
    if (!m->ckpt || !m->win)
        return lg_fail(LG_ERR_OOM, "decoder: out of memory");
    size_t bytes = walk(&d, 0, NULL);
    enum lg_status s = dec->be->ops->alloc(dec->be, bytes, &dec->arena);
    if (s != LG_OK)
        return lg_fail_wrap(s, "activation arena of %.2f GiB for %zu-token microbatches%s: lower the capacity "
                               "or checkpoint more layers (checkpoint_layers in the job file): ",
                            (double)bytes / (1u << 30), d.T, d.nckpt ? "" : " without checkpointing");
    m->bytes = walk(&d, dec->arena, m);
    return LG_OK;
}
