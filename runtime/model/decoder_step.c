/* decoder_step.c: one microbatch through the decoder: upload the inputs, the forward (saving what the backward
 * needs in the arena window), the loss, and the backward in reverse, recomputing each checkpointed segment
 * of layers before its backward. The op order is the math of lg_decoder.h, step by step.
 *
 * The residual adds ride in the norms (rmsnorm_fwd: h = res + x, y = norm(h)), out of place, so no activation
 * is copied: layer l's output residual is written straight into layer l+1's saved input, together with layer
 * l+1's first norm; the last layer's goes into the final norm. */
#include "decoder_internal.h"

#include <stdlib.h>
#include <string.h>

#define OPS (d->be->ops)
#define TRY(x)                                                                                                 \
    do {                                                                                                       \
        enum lg_status s_ = (x);                                                                               \
        if (s_ != LG_OK)                                                                                       \
            return s_;                                                                                         \
    } while (0)

static size_t act_bytes(const lg_decoder_t *d, int64_t n, int64_t cols)
{
    return (size_t)n * (size_t)cols * lg_backend_act_size(d->be);
}

/* Positions restart at 0 at each packed sample. */
static enum lg_status upload_inputs(lg_decoder_t *d, const struct lg_decoder_batch *b, struct lg_mb *mb)
{
    const struct lg_arena_map *m = &d->map;
    int64_t n = mb->n;
    int32_t *pos = malloc((size_t)n * sizeof *pos);
    if (!pos)
        return lg_fail(LG_ERR_OOM, "decoder: out of memory");
    for (int s = 0; s < mb->nseq; s++)
        for (int32_t t = mb->cu[s]; t < mb->cu[s + 1]; t++)
            pos[t] = t - mb->cu[s];
    enum lg_status s = OPS->upload(d->be, m->pos, pos, (size_t)n * 4);
    free(pos);
    if (s == LG_OK)
        s = OPS->upload(d->be, m->ids, b->ids, (size_t)n * 4);
    if (s == LG_OK)
        s = OPS->upload(d->be, m->cu, mb->cu, (size_t)(mb->nseq + 1) * 4);
    if (s == LG_OK && b->target)
        s = OPS->upload(d->be, m->target, b->target, (size_t)n * 4);
    if (s == LG_OK && b->weight)
        s = OPS->upload(d->be, m->weight, b->weight, (size_t)n * sizeof(float));
    mb->cu_dev = m->cu;
    mb->pos_dev = m->pos;
    return s;
}

static int seg_len(const lg_decoder_t *d) { return d->map.nckpt ? d->ckpt_every : d->cfg->num_hidden_layers; }

/* Layers [from, to) forward; the input of `from` is in its slot. In the first forward (keep_ckpt) the
 * inputs of segment starts are copied out as checkpoints and the last layer feeds the head. */
static enum lg_status forward_layers(lg_decoder_t *d, const struct lg_mb *mb, int from, int to, int keep_ckpt)
{
    int N = seg_len(d), L = d->cfg->num_hidden_layers;
    for (int l = from; l < to; l++) {
        if (keep_ckpt && d->map.nckpt && l % N == 0)
            TRY(OPS->copy(d->be, d->map.ckpt[l / N], lg_dec_slot(d, l)->x_in, act_bytes(d, mb->n, d->cfg->hidden_size)));
        enum lg_dec_next next = l + 1 == L ? NEXT_HEAD : l + 1 < to ? NEXT_LAYER : keep_ckpt ? NEXT_LAYER : NEXT_NONE;
        TRY(lg_dec_layer_fwd(d, mb, l, next));
    }
    return LG_OK;
}

/* Layer l's input residual from `src` (the embedding or a checkpoint) and its first norm, into its slot. */
static enum lg_status enter_layer(lg_decoder_t *d, const struct lg_mb *mb, int l, lg_addr src)
{
    const struct lg_saved *sv = lg_dec_slot(d, l);
    return OPS->rmsnorm_fwd(d->be, mb->n, d->cfg->hidden_size, src, 0, sv->x_in, d->layers[l].ln1,
                            (float)d->cfg->rms_norm_eps, sv->x1, sv->rstd1, d->map.ldx1);
}

static enum lg_status head(lg_decoder_t *d, const struct lg_mb *mb, int backward)
{
    const struct lg_model_config *c = d->cfg;
    const struct lg_arena_map *m = &d->map;
    int64_t n = mb->n, H = c->hidden_size;
    TRY(OPS->xent(d->be, n, H, c->vocab_size, m->xf, d->head, m->target, m->weight, m->loss,
                  backward ? m->dx : 0));
    if (!backward)
        return LG_OK;
    return OPS->rmsnorm_bwd(d->be, n, H, m->hf, d->norm, m->rstdf, m->dx, m->dh, 0);
}

static enum lg_status check_batch(const lg_decoder_t *d, const struct lg_decoder_batch *b)
{
    const struct lg_mb *mb = b ? b->mb : NULL;
    if (!mb || !b->ids || !b->target || !b->weight || !mb->cu || (mb->nseg && !mb->seg))
        return lg_fail(LG_ERR_INVALID, "lg_decoder_step: null argument");
    if (mb->n < 1 || mb->n > d->max_tokens)
        return lg_fail(LG_ERR_INVALID, "lg_decoder_step: %lld tokens, the arena holds 1..%lld", (long long)mb->n,
                       (long long)d->max_tokens);
    if (mb->nseq < 1 || mb->nseq > d->max_seqs || mb->cu[0] != 0 || mb->cu[mb->nseq] != mb->n)
        return lg_fail(LG_ERR_INVALID, "lg_decoder_step: sample offsets must run from 0 to n = %lld over "
                                       "1..%d samples", (long long)mb->n, d->max_seqs);
    for (int s = 0; s < mb->nseq; s++)
        if (mb->cu[s + 1] <= mb->cu[s] || mb->cu[s + 1] - mb->cu[s] > mb->max_len)
            return lg_fail(LG_ERR_INVALID, "lg_decoder_step: sample %d is empty or longer than max_len %d", s,
                           mb->max_len);
    int64_t at = 0;
    for (int i = 0; i < mb->nseg; i++) {
        const struct lg_seg *g = &mb->seg[i];
        if (g->start != at || g->len < 0 || g->adapter < -1 || g->adapter >= d->nadapters)
            return lg_fail(LG_ERR_INVALID, "lg_decoder_step: segment %d (adapter %d, tokens %lld+%lld) does not "
                                           "continue the segments before it or names no adapter", i, g->adapter,
                           (long long)g->start, (long long)g->len);
        at += g->len;
    }
    if (at != mb->n)
        return lg_fail(LG_ERR_INVALID, "lg_decoder_step: segments cover %lld of %lld tokens", (long long)at,
                       (long long)mb->n);
    return LG_OK;
}

enum lg_status lg_decoder_step(lg_decoder_t *d, const struct lg_decoder_batch *b, int backward)
{
    if (d->from != 0 || d->to != d->cfg->num_hidden_layers)
        return lg_fail(LG_ERR_INVALID, "lg_decoder_step: this decoder holds layers %d..%d of %d only (a pipeline "
                       "stage: use lg_decoder_stage_forward/backward)", d->from, d->to - 1, d->cfg->num_hidden_layers);
    TRY(check_batch(d, b));
    struct lg_mb mb = *b->mb;
    const struct lg_model_config *c = d->cfg;
    const struct lg_arena_map *m = &d->map;
    int L = c->num_hidden_layers, N = seg_len(d);
    TRY(upload_inputs(d, b, &mb));
    if (OPS->begin)
        TRY(OPS->begin(d->be, &mb));
    TRY(OPS->embed(d->be, mb.n, c->hidden_size, m->ids, d->embed, c->vocab_size, m->h));
    TRY(enter_layer(d, &mb, 0, m->h));
    TRY(forward_layers(d, &mb, 0, L, backward));
    TRY(head(d, &mb, backward));
    if (backward) {
        int last = (L - 1) / N; /* the last segment's activations are still in the window */
        for (int sgm = last; sgm >= 0; sgm--) {
            int from = sgm * N, to = from + N < L ? from + N : L;
            if (sgm != last) {
                TRY(enter_layer(d, &mb, from, m->ckpt[sgm]));
                TRY(forward_layers(d, &mb, from, to, 0));
            }
            for (int l = to - 1; l >= from; l--)
                TRY(lg_dec_layer_bwd(d, &mb, l));
        }
    }
    if (b->no_wait)
        return OPS->download_async(d->be, b->loss, m->loss, (size_t)mb.n * sizeof(float));
    TRY(OPS->download(d->be, b->loss, m->loss, (size_t)mb.n * sizeof(float)));
    return OPS->sync(d->be);
}

enum lg_status lg_decoder_prepare(lg_decoder_t *d, const struct lg_mb *mb)
{
    if (!mb || mb->n < 1 || mb->n > d->max_tokens || mb->nseq < 1 || mb->nseq > d->max_seqs || mb->max_len < 1 ||
        mb->max_len > mb->n)
        return lg_fail(LG_ERR_INVALID, "lg_decoder_prepare: %lld tokens in %d samples (the longest %d) is not a "
                       "microbatch of this decoder (1..%lld tokens)", mb ? (long long)mb->n : 0LL, mb ? mb->nseq : 0,
                       mb ? mb->max_len : 0, (long long)d->max_tokens);
    if (!OPS->attn_prepare)
        return LG_OK;
    const struct lg_model_config *c = d->cfg;
    return OPS->attn_prepare(d->be, mb, c->num_attention_heads, c->num_key_value_heads, c->head_dim, d->map.ldqkv,
                             d->map.ldqkv);
}

/* ---- pipeline stages ---- */

size_t lg_decoder_boundary_bytes(const lg_decoder_t *d, int64_t tokens)
{
    return act_bytes(d, tokens, d->cfg->hidden_size);
}

enum lg_status lg_decoder_stage_forward(lg_decoder_t *d, const struct lg_decoder_batch *b, const void *h_in,
                                        void *h_out)
{
    TRY(check_batch(d, b));
    const struct lg_model_config *c = d->cfg;
    const struct lg_arena_map *m = &d->map;
    int L = c->num_hidden_layers;
    if (d->from > 0 && !h_in)
        return lg_fail(LG_ERR_INVALID, "lg_decoder_stage_forward: the stage of layers %d.. needs its input", d->from);
    struct lg_mb mb = *b->mb;
    TRY(upload_inputs(d, b, &mb));
    if (OPS->begin)
        TRY(OPS->begin(d->be, &mb));
    if (d->from == 0)
        TRY(OPS->embed(d->be, mb.n, c->hidden_size, m->ids, d->embed, c->vocab_size, m->h));
    else
        TRY(OPS->upload(d->be, m->h, h_in, lg_decoder_boundary_bytes(d, mb.n)));
    TRY(enter_layer(d, &mb, d->from, m->h));
    TRY(forward_layers(d, &mb, d->from, d->to, 1)); /* the last layer hands its residual to layer `to`'s slot */
    if (d->to < L) {
        if (h_out)
            TRY(OPS->download(d->be, h_out, lg_dec_slot(d, d->to)->x_in, lg_decoder_boundary_bytes(d, mb.n)));
        return OPS->sync(d->be);
    }
    TRY(head(d, &mb, 1));
    TRY(OPS->download(d->be, b->loss, m->loss, (size_t)mb.n * sizeof(float)));
    return OPS->sync(d->be);
}

enum lg_status lg_decoder_stage_backward(lg_decoder_t *d, const struct lg_decoder_batch *b, const void *dh_in,
                                         void *dh_out)
{
    TRY(check_batch(d, b));
    const struct lg_arena_map *m = &d->map;
    int L = d->cfg->num_hidden_layers;
    if ((d->to < L && !dh_in) || (d->from > 0 && !dh_out))
        return lg_fail(LG_ERR_INVALID, "lg_decoder_stage_backward: layers %d..%d need the gradient at their output "
                       "and a buffer for the one at their input", d->from, d->to - 1);
    struct lg_mb mb = *b->mb;
    mb.cu_dev = m->cu; /* uploaded by this microbatch's forward, the latest on this stage */
    mb.pos_dev = m->pos;
    if (d->to < L)
        TRY(OPS->upload(d->be, m->dh, dh_in, lg_decoder_boundary_bytes(d, mb.n)));
    for (int l = d->to - 1; l >= d->from; l--)
        TRY(lg_dec_layer_bwd(d, &mb, l));
    if (d->from > 0)
        TRY(OPS->download(d->be, dh_out, m->dh, lg_decoder_boundary_bytes(d, mb.n)));
    return OPS->sync(d->be);
}
