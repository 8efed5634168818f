/* attention_cudnn.c: cuDNN 9's fused attention as the second attention backend (lg_attention.h).
 *
 * Status: the library is loaded at run time (runtime/gpu/cudnn.c) and its version reported
 * (lg_attn_cudnn_version), but the SDPA operation graph with ragged offsets (Q·Kᵀ, scale, causal mask,
 * softmax with stats, ·V, and the backward graph) is not built yet: LG_ATTN_CUDNN returns
 * LG_ERR_UNSUPPORTED saying so, and the generated kernels remain the backend everywhere. The tuner can
 * already ask for it and will get the error, not a wrong answer. */
#include "attention_internal.h"
#include "lg_base.h"
#include "lg_cudnn.h"

#include <stdlib.h>

struct lg_ops_attn_cudnn {
    cudnnHandle_t handle;
};

int lg_attn_cudnn_version(void)
{
    const struct lg_cudnn_api *c = lg_cudnn();
    return c ? (int)c->GetVersion() : 0;
}

enum lg_status lg_ops_attn_cudnn_init(const struct lg_attn_params *p, float scale, struct lg_ops_attn_cudnn **out)
{
    (void)p, (void)scale;
    *out = NULL;
    const struct lg_cudnn_api *c = lg_cudnn();
    if (!c)
        return lg_fail(LG_ERR_UNSUPPORTED, "lg_attn_init: the cuDNN backend needs cuDNN 9: %s", lg_cudnn_error());
    return lg_fail(LG_ERR_UNSUPPORTED,
                   "lg_attn_init: cuDNN %zu is loaded, but loragen does not build the cuDNN SDPA graph yet "
                   "(use LG_ATTN_GENERATED)", c->GetVersion());
}

void lg_ops_attn_cudnn_free(struct lg_ops_attn_cudnn *d)
{
    if (!d)
        return;
    const struct lg_cudnn_api *c = lg_cudnn();
    if (c && d->handle)
        c->Destroy(d->handle);
    free(d);
}

enum lg_status lg_ops_attn_cudnn_forward(struct lg_ops_attn_cudnn *d, const struct lg_attn_fwd *f, CUstream stream)
{
    (void)d, (void)f, (void)stream;
    return lg_fail(LG_ERR_UNSUPPORTED, "lg_attn_forward: the cuDNN graph is not built yet");
}

enum lg_status lg_ops_attn_cudnn_backward(struct lg_ops_attn_cudnn *d, const struct lg_attn_bwd *b, CUstream stream)
{
    (void)d, (void)b, (void)stream;
    return lg_fail(LG_ERR_UNSUPPORTED, "lg_attn_backward: the cuDNN graph is not built yet");
}
