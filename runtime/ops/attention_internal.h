/* attention_internal.h (private to ops): what attention.c shares with attention_cudnn.c and the tests: the
 * argument checks (host only, no GPU needed) and the cuDNN backend's entry points. */
#ifndef LG_OPS_ATTENTION_INTERNAL_H
#define LG_OPS_ATTENTION_INTERNAL_H

#include "lg_attention.h"

enum lg_status lg_ops_attn_check_params(const struct lg_attn_params *p);
/* cu_seqlens rules on the host copy (lg_attention.h), naming `fn` in the message. */
enum lg_status lg_ops_attn_check_seqs(const char *fn, const struct lg_attn_seqs *s);
/* A [tokens, heads, d] tensor of row length `row` elements: set, 16-byte aligned, *ld (0 becomes row) >= row
 * and a multiple of 8. */
enum lg_status lg_ops_attn_check_tensor(const char *fn, const char *name, CUdeviceptr p, int64_t *ld, int64_t row);

/* The kernels of the generated backend, and the configuration each is requested with for parameters p and
 * tiles t (lg_ctx_kernel fills in the generator's defaults for zero fields). */
enum lg_ops_attn_kernel {
    LG_OPS_ATTN_SCHED,
    LG_OPS_ATTN_FWD,
    LG_OPS_ATTN_PRE,
    LG_OPS_ATTN_DKV,
    LG_OPS_ATTN_DQ,
    LG_OPS_ATTN_CVT
};
struct lg_kernel_cfg lg_ops_attn_cfg(const struct lg_attn_params *p, const struct lg_attn_tiles *t,
                                     enum lg_ops_attn_kernel which);
/* The tiles a device with smem_optin bytes of shared memory per block starts with (zeros: the generator's
 * defaults, which fit every target). */
struct lg_attn_tiles lg_ops_attn_default_tiles(int head_dim, int smem_optin);

/* ---- the cuDNN backend (attention_cudnn.c) ---- */
struct lg_ops_attn_cudnn;
/* LG_ERR_UNSUPPORTED when cuDNN 9 is absent or cannot serve these parameters. */
enum lg_status lg_ops_attn_cudnn_init(const struct lg_attn_params *p, float scale, struct lg_ops_attn_cudnn **out);
void lg_ops_attn_cudnn_free(struct lg_ops_attn_cudnn *d);
/* Checked calls (ld filled in) of lg_attn_forward / lg_attn_backward. */
enum lg_status lg_ops_attn_cudnn_forward(struct lg_ops_attn_cudnn *d, const struct lg_attn_fwd *f, CUstream stream);
enum lg_status lg_ops_attn_cudnn_backward(struct lg_ops_attn_cudnn *d, const struct lg_attn_bwd *b,
                                          CUstream stream);
/* The last call's plan: "b B s S, engine config i of n" ("" before the first call). */
const char *lg_ops_attn_cudnn_note(const struct lg_ops_attn_cudnn *d);
/* The plans (and device memory) calls with f's and b's samples and strides will use (either may be NULL). */
enum lg_status lg_ops_attn_cudnn_prepare(struct lg_ops_attn_cudnn *d, const struct lg_attn_fwd *f,
                                         const struct lg_attn_bwd *b, CUstream stream);

#endif
