/* decoder_internal.h: the decoder's object layout and the arena map, shared by decoder.c (weights, layers),
 * decoder_arena.c (the activation arena) and decoder_step.c (forward and backward). Private to the part. */
#ifndef LG_DECODER_INTERNAL_H
#define LG_DECODER_INTERNAL_H

#include "lg_decoder.h"
#include "lg_ref_ops.h"

#define LG_GROUPS 4 /* q/k/v, o, gate/up, down */
enum { LG_G_QKV = 0, LG_G_O, LG_G_GATEUP, LG_G_DOWN };

struct lg_group_def {
    int n;
    enum lg_peft_module mod[LG_LINEAR_MAX_OUT];
};
extern const struct lg_group_def lg_groups[LG_GROUPS];

struct lg_layer {
    lg_addr ln1, ln2;
    lg_lora_linear_t *lin[LG_GROUPS];
};

/* What one layer keeps for its backward (one window slot). q, k, v are views of one [T, ldqkv] buffer (the
 * merged projection's output, side by side), g and u of one [T, ldgu] buffer. */
struct lg_saved {
    lg_addr x_in, x1, rstd1, q, k, v, o, lse, h_mid, x2, rstd2, g, u, m;
};

struct lg_arena_map {
    lg_addr ids, target, weight, loss, cu, pos; /* microbatch inputs */
    lg_addr h, tmp;                             /* residual stream; a [T,H] scratch */
    lg_addr *ckpt;                              /* [nckpt] inputs of layers 0, N, 2N, ... (checkpointing on) */
    int nckpt;
    struct lg_saved *win;                       /* [nwin] slots */
    int nwin;
    lg_addr hf, xf, rstdf;                      /* final norm input, output, rstd */
    lg_addr dh, dx, dq, dk, dv, dout, dm, dg, du; /* gradients; dq/dk/dv and dg/du laid out as q/k/v, g/u */
    int64_t ldqkv, ldgu;                          /* row strides (elements) of the merged views */
    int64_t ldx1, ldx2; /* row strides of x1 and x2, the q/k/v and gate/up layers' inputs: what the layers asked
                           for (linear_in_ld: room for their S past the H features) */
    size_t bytes;
};

struct lg_decoder {
    lg_backend_t *be;
    const struct lg_model_config *cfg;
    int nadapters;
    const struct lg_decoder_adapter *adapters;
    int ckpt_every;
    int64_t max_tokens;
    int max_seqs;
    int from, to; /* the layers this decoder holds, [from, to): all of them, or a pipeline stage's */
    lg_addr embed, head, norm;
    struct lg_ref_rope rope;
    struct lg_layer *layers;
    lg_addr arena;
    struct lg_arena_map map;
};

/* decoder_arena.c: lays out and allocates the arena (one backend allocation) */
enum lg_status lg_decoder_arena_init(lg_decoder_t *d);

/* The slot of the arena window that holds layer l's saved activations. */
static inline const struct lg_saved *lg_dec_slot(const lg_decoder_t *d, int l) { return &d->map.win[l % d->map.nwin]; }

/* decoder_layer.c: layer l forward and backward. Forward: the layer's input residual x_in and first norm x1,
 * rstd1 are already in its slot; `next` says where its output residual goes: layer l+1's slot (with that
 * layer's first norm), the final norm (last layer), or nowhere (the last layer of a recomputed segment: nothing
 * after it is needed again). Backward: map.dh holds dLoss/d(output residual of layer l) and becomes
 * dLoss/d(input residual); layer 0 stops after the LoRA gradients of q/k/v (nothing below needs dX). */
enum lg_dec_next { NEXT_LAYER, NEXT_HEAD, NEXT_NONE };
enum lg_status lg_dec_layer_fwd(lg_decoder_t *d, const struct lg_mb *mb, int l, enum lg_dec_next next);
enum lg_status lg_dec_layer_bwd(lg_decoder_t *d, const struct lg_mb *mb, int l);

#endif
