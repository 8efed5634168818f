/* decoder_layer.c: one decoder layer, forward and backward, as the op sequence of the math in lg_decoder.h.
 * decoder_step.c drives the layers (order, checkpoint recomputation, the head); this file is what one layer
 * launches. */
#include "decoder_internal.h"

#define OPS (d->be->ops)
#define TRY(x)                                                                                                 \
    do {                                                                                                       \
        enum lg_status s_ = (x);                                                                               \
        if (s_ != LG_OK)                                                                                       \
            return s_;                                                                                         \
    } while (0)

/* Layer l forward (decoder_internal.h). */
enum lg_status lg_dec_layer_fwd(lg_decoder_t *d, const struct lg_mb *mb, int l, enum lg_dec_next next)
{
    const struct lg_model_config *c = d->cfg;
    const struct lg_arena_map *m = &d->map;
    const struct lg_layer *L = &d->layers[l];
    const struct lg_saved *sv = lg_dec_slot(d, l);
    int64_t n = mb->n, H = c->hidden_size;
    int hq = c->num_attention_heads, hkv = c->num_key_value_heads, hd = c->head_dim;
    float eps = (float)c->rms_norm_eps;
    TRY(OPS->linear_fwd(d->be, L->lin[LG_G_QKV], mb, sv->x1, m->ldx1, sv->q, m->ldqkv));
    TRY(OPS->rope(d->be, mb, &d->rope, sv->q, hq, sv->k, hkv, m->ldqkv, +1));
    TRY(OPS->attn_fwd(d->be, mb, hq, hkv, hd, sv->q, sv->k, sv->v, m->ldqkv, sv->o, sv->lse));
    TRY(OPS->linear_fwd(d->be, L->lin[LG_G_O], mb, sv->o, 0, m->tmp, H));
    TRY(OPS->rmsnorm_fwd(d->be, n, H, sv->x_in, m->tmp, sv->h_mid, L->ln2, eps, sv->x2, sv->rstd2, m->ldx2));
    TRY(OPS->linear_fwd(d->be, L->lin[LG_G_GATEUP], mb, sv->x2, m->ldx2, sv->g, m->ldgu));
    TRY(OPS->swiglu_fwd(d->be, n, c->intermediate_size, sv->g, sv->u, m->ldgu, sv->m));
    if (next == NEXT_NONE)
        return LG_OK;
    TRY(OPS->linear_fwd(d->be, L->lin[LG_G_DOWN], mb, sv->m, 0, m->tmp, H));
    if (next == NEXT_HEAD)
        return OPS->rmsnorm_fwd(d->be, n, H, sv->h_mid, m->tmp, m->hf, d->norm, eps, m->xf, m->rstdf, 0);
    const struct lg_saved *nx = lg_dec_slot(d, l + 1);
    return OPS->rmsnorm_fwd(d->be, n, H, sv->h_mid, m->tmp, nx->x_in, d->layers[l + 1].ln1, eps, nx->x1, nx->rstd1,
                            m->ldx1);
}

/* Layer l backward: m->dh holds dLoss/d(output residual of layer l) and becomes dLoss/d(input residual);
 * layer 0 stops after the LoRA gradients of q/k/v (nothing below needs dX). */
enum lg_status lg_dec_layer_bwd(lg_decoder_t *d, const struct lg_mb *mb, int l)
{
    const struct lg_model_config *c = d->cfg;
    const struct lg_arena_map *m = &d->map;
    const struct lg_layer *L = &d->layers[l];
    const struct lg_saved *sv = lg_dec_slot(d, l);
    int64_t n = mb->n, H = c->hidden_size, F = c->intermediate_size;
    int hq = c->num_attention_heads, hkv = c->num_key_value_heads, hd = c->head_dim;
    TRY(OPS->linear_bwd(d->be, L->lin[LG_G_DOWN], mb, sv->m, 0, m->dh, H, m->dm));
    TRY(OPS->swiglu_bwd(d->be, n, F, sv->g, sv->u, m->ldgu, m->dm, m->dg, m->du, m->ldgu));
    TRY(OPS->linear_bwd(d->be, L->lin[LG_G_GATEUP], mb, sv->x2, m->ldx2, m->dg, m->ldgu, m->dx));
    TRY(OPS->rmsnorm_bwd(d->be, n, H, sv->h_mid, L->ln2, sv->rstd2, m->dx, m->dh, 1));
    TRY(OPS->linear_bwd(d->be, L->lin[LG_G_O], mb, sv->o, 0, m->dh, H, m->dout));
    TRY(OPS->attn_bwd(d->be, mb, hq, hkv, hd, sv->q, sv->k, sv->v, m->ldqkv, sv->o, sv->lse, m->dout, m->dq,
                      m->dk, m->dv, m->ldqkv));
    TRY(OPS->rope(d->be, mb, &d->rope, m->dq, hq, m->dk, hkv, m->ldqkv, -1));
    if (l == 0)
        return OPS->linear_bwd(d->be, L->lin[LG_G_QKV], mb, sv->x1, m->ldx1, m->dq, m->ldqkv, 0);
    TRY(OPS->linear_bwd(d->be, L->lin[LG_G_QKV], mb, sv->x1, m->ldx1, m->dq, m->ldqkv, m->dx));
    return OPS->rmsnorm_bwd(d->be, n, H, sv->x_in, L->ln1, sv->rstd1, m->dx, m->dh, 1);
}
