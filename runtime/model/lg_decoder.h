/* lg_decoder.h (model's face): the Llama/Qwen2 decoder, forward and backward for LoRA training, written once
 * against the backend op interface (lg_backend.h).
 *
 *   h = embed(ids)
 *   per layer:  x1 = rmsnorm(h)·γ1;  q,k,v = qkv(x1) (+bias);  rope(q, k);  o = attn(q, k, v)
 *               h = h + o_proj(o);   x2 = rmsnorm(h)·γ2;  g,u = gate_up(x2);  h = h + down(silu(g)·u)
 *   loss = xent(rmsnorm(h)·γf · Wheadᵀ, targets)
 * Every projection is a LoRA linear layer with one slot per adapter (adapters a list; a module an adapter does
 * not target has rank 0 there). The backward computes only what the LoRA gradients need: no gradient for any
 * frozen weight, none into the embedding, and no dX below layer 0's projections.
 *
 * Memory: weights are uploaded once; one activation arena, sized for the largest microbatch at init, holds
 * everything a step needs. With checkpointing every N layers only the inputs of layers 0, N, 2N, ... are kept
 * through the forward, and the backward recomputes N layers at a time (dropout masks are a function of the
 * seed, so the recomputation is exact).
 *
 * Ownership: lg_decoder_t owns its backend memory and linear layers; it borrows the backend and the config.
 *
 *   struct lg_decoder_params dp = { .cfg = &cfg, .nadapters = 1, .adapters = &ad, .max_tokens = 4096 };
 *   lg_decoder_t *dec;  lg_decoder_init(be, &dp, weights, &dec);
 *   struct lg_decoder_batch b = { .mb = &mb, .ids = ids, .target = tgt, .weight = w };
 *   lg_decoder_step(dec, &b, 1);             // forward + backward: LoRA gradients accumulate
 *   lg_decoder_free(dec);
 */
#ifndef LG_DECODER_H
#define LG_DECODER_H

#include "lg_backend.h"
#include "lg_hf.h"

/* The seven projections are lg_hf.h's enum lg_peft_module (PEFT's names; bit i of a target mask is module
 * i). q/k/v/o live under self_attn, gate/up/down under mlp. */
int lg_module_is_attn(enum lg_peft_module m);
void lg_module_shape(const struct lg_model_config *c, enum lg_peft_module m, int64_t *in, int64_t *out);

struct lg_decoder_adapter {
    int rank;
    float alpha, dropout;
    unsigned targets; /* bit mask over enum lg_peft_module */
};

struct lg_decoder_params {
    const struct lg_model_config *cfg;
    int nadapters;
    const struct lg_decoder_adapter *adapters;
    int ckpt_every;     /* 0: keep every layer's activations; N: checkpoint every N layers */
    int64_t max_tokens; /* the largest microbatch: sizes the arena */
    int max_seqs;       /* the most packed samples in a microbatch */
    /* a pipeline stage: layers [layer_from, layer_to) only (0, 0: all). Only their weights are loaded (and the
     * embedding on the first stage, the final norm and the head on the last, the next stage's first norm
     * weight elsewhere); other layers' LoRA tensors have rank 0. A stage keeps every one of its layers'
     * activations (ckpt_every must be 0) */
    int layer_from, layer_to;
};

typedef struct lg_decoder lg_decoder_t;

/* Builds the decoder on `be` with the frozen weights from `weights` (an open model directory, checked against
 * cfg). LoRA slots start at A = B = 0: set them through lg_decoder_lora. */
enum lg_status lg_decoder_init(lg_backend_t *be, const struct lg_decoder_params *p, const lg_st_t *weights,
                               lg_decoder_t **out);
void lg_decoder_free(lg_decoder_t *d);

/* Adapter a's tensors for module m of layer l (rank 0 when not targeted). */
enum lg_status lg_decoder_lora(lg_decoder_t *d, int layer, enum lg_peft_module m, int adapter,
                               struct lg_lora_params *out); /* rank 0 for a layer outside a stage's range */
/* After an optimizer step changed adapter a's masters. */
enum lg_status lg_decoder_lora_sync(lg_decoder_t *d, int adapter);

/* One microbatch, host arrays (uploaded into the arena by the step). */
struct lg_decoder_batch {
    const struct lg_mb *mb; /* cu_dev, pos_dev are filled by the step */
    const int32_t *ids;     /* [n] token ids */
    const int32_t *target;  /* [n] the token each position predicts, -100 where none */
    const float *weight;    /* [n] each position's share of its batch's loss (0 where ignored) */
    float *loss;            /* [n] out: the weighted loss per position (host) */
    int no_wait;            /* 1: the step returns once its work is enqueued; loss is written at the backend's
                               next sync (it must stay valid until then) */
};

/* Forward, and with backward = 1 the backward: the LoRA gradients of every adapter in the microbatch
 * accumulate into its gradient buffers. Returns when the device is done, unless b->no_wait. */
enum lg_status lg_decoder_step(lg_decoder_t *d, const struct lg_decoder_batch *b, int backward);

/* Before the first step of an epoch: what the backend plans per microbatch shape (cuDNN attention's execution
 * plans), made for a microbatch of mb's shape (n, nseq, max_len; nothing else is read). */
enum lg_status lg_decoder_prepare(lg_decoder_t *d, const struct lg_mb *mb);

/* Pipeline stages (a decoder built with a layer range; lg_decoder_step needs all layers). Activations cross
 * stage boundaries as host arrays of [n, hidden] in the backend's activation dtype (lg_decoder_boundary_bytes).
 *
 * Forward: the first stage embeds b->ids, a later one starts from h_in, layer from's input residual. A stage
 * that is not the last writes layer to-1's output residual into h_out (NULL: not wanted, a recomputation);
 * the last computes the loss into b->loss and its gradient. The arena then holds this microbatch.
 * Backward: for the microbatch whose forward ran last on this stage (run the forward again first otherwise:
 * it is exact). dh_in is the gradient at the stage's output residual (the next stage's dh_out; NULL on the
 * last stage, which has it from the loss); the LoRA gradients of the stage's layers accumulate and, on every
 * stage but the first, dh_out gets the gradient at the stage's input residual. */
enum lg_status lg_decoder_stage_forward(lg_decoder_t *d, const struct lg_decoder_batch *b, const void *h_in,
                                        void *h_out);
enum lg_status lg_decoder_stage_backward(lg_decoder_t *d, const struct lg_decoder_batch *b, const void *dh_in,
                                         void *dh_out);
size_t lg_decoder_boundary_bytes(const lg_decoder_t *d, int64_t tokens);

/* Bytes of the activation arena for the params (for capacity planning and the out-of-memory message). */
size_t lg_decoder_arena_bytes(const lg_backend_t *be, const struct lg_decoder_params *p);
/* What one more token of capacity costs in backend memory: the arena's slope, and the linear layers' saved S
 * (a column per LoRA rank of every slot). Weights, LoRA states and workspaces do not grow with it. */
double lg_decoder_token_bytes(const lg_backend_t *be, const struct lg_decoder_params *p);
/* The arena and the linear layers' per-token buffers sized again for microbatches of up to max_tokens tokens
 * in max_seqs samples (capacity = "auto" once the device has been measured); their contents are not kept. */
enum lg_status lg_decoder_reserve(lg_decoder_t *d, int64_t max_tokens, int max_seqs);

#endif
