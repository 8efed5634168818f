/* backend_cuda.h: what the CUDA backend's files share (backend_cuda.c: the op table, memory and row ops;
 * backend_cuda_linear.c: LoRA linear layers on FusedMultiLoRA). Private to the model part. */
#ifndef LG_BACKEND_CUDA_H
#define LG_BACKEND_CUDA_H

#include "lg_attention.h"
#include "lg_backend.h"
#include "lg_ctx.h"
#include "lg_decoder_ops.h"
#include "lg_gpu.h"
#include "lg_mlora.h"
#include "lg_ref_ops.h"

struct cuda_adamw {
    const void *key; /* the tensor list it was made for */
    int count;
    lg_adamw_t *obj;
};

#define LG_CUDA_STAGING (8u << 20) /* pinned bytes for the microbatch inputs */

struct cuda_be {
    lg_backend_t base; /* first: the backend handle is this struct */
    lg_ctx_t *ctx;
    CUstream stream;
    unsigned char *staging; /* pinned, LG_CUDA_STAGING bytes */
    size_t staged;          /* bytes in use since the last synchronisation */
    /* asynchronous downloads: device -> pinned readback, delivered to their destinations at the next sync */
    unsigned char *readback;
    size_t readback_cap, readback_used;
    struct cuda_pending { void *dst; size_t at, n; } *pending;
    int npending, cap_pending;
    int deterministic;
    int64_t max_tokens;
    size_t free_at_init; /* device memory free once the context and stream were made */
    lg_norm_t *norm;
    lg_rope_t *rope;
    lg_swiglu_t *swiglu;
    lg_embed_t *embed;
    lg_xent_t *xent;
    lg_attn_t *attn;
    struct cuda_adamw *adamw;
    int nadamw;
    /* linear layers: the microbatch's segment table */
    lg_mlora_segments_t *segs; /* the current microbatch's segment table */
    lg_mlora_ws_t *mlws;       /* the backward's scratch, one for every layer: they run one after another */
    int nadapters;
    struct lg_cuda_prof *prof;     /* per-op-family timing (lg_backend_cuda_params.profile) */
    struct lg_backend_ops prof_ops; /* the timed table, when profiling */
};

/* The op table, and the same ops each bracketed by CUDA events (backend_cuda_prof.c). */
extern const struct lg_backend_ops lg_cuda_ops;
void lg_cuda_prof_table(struct lg_backend_ops *o);
void lg_cuda_prof_free(struct cuda_be *c);

enum lg_status lg_cuda_linear_init(lg_backend_t *be, const struct lg_lora_linear_desc *d, const float *const *w,
                                   const float *const *bias, lg_lora_linear_t **out);
void lg_cuda_linear_free(lg_backend_t *be, lg_lora_linear_t *l);
enum lg_status lg_cuda_linear_reserve(lg_backend_t *be, lg_lora_linear_t *l, int64_t max_tokens);
enum lg_status lg_cuda_linear_params(lg_backend_t *be, lg_lora_linear_t *l, int adapter, int out,
                                     struct lg_lora_params *p);
int64_t lg_cuda_linear_in_ld(lg_backend_t *be, const lg_lora_linear_t *l);
enum lg_status lg_cuda_linear_fwd(lg_backend_t *be, lg_lora_linear_t *l, const struct lg_mb *mb, lg_addr x,
                                  int64_t ldx, lg_addr y, int64_t ldy);
enum lg_status lg_cuda_linear_bwd(lg_backend_t *be, lg_lora_linear_t *l, const struct lg_mb *mb, lg_addr x,
                                  int64_t ldx, lg_addr dy, int64_t lddy, lg_addr dx);
enum lg_status lg_cuda_linear_sync(lg_backend_t *be, lg_lora_linear_t *l, int adapter);
void lg_cuda_linear_scratch_free(struct cuda_be *c);
enum lg_status lg_cuda_begin(lg_backend_t *be, const struct lg_mb *mb);
/* The first PEFT module of a linear layer (q_proj for q/k/v, gate_proj for gate/up, ...). */
int lg_cuda_linear_module(const lg_lora_linear_t *l);

#endif
