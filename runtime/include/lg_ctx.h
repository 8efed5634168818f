/* lg_ctx.h: one GPU's working context: the CUDA primary context, the JIT, cuBLASLt and the generator, plus the
 * table of kernels already generated and loaded for it.
 *
 * Ownership: lg_ctx_t owns the JIT, the cuBLASLt handle, the generator and every loaded kernel; it retains the
 * device's primary context (released in lg_ctx_free). Objects built on it (lg_lora_t) must be freed first.
 *
 *   lg_ctx_t *ctx;
 *   struct lg_ctx_params cp = { .device = 0 };
 *   if (lg_ctx_init(&cp, &ctx) == LG_ERR_NO_GPU) ...;   // no GPU: use the CPU reference backend
 *   ...
 *   lg_ctx_free(ctx);
 */
#ifndef LG_CTX_H
#define LG_CTX_H

#include "lg_blas.h"
#include "lg_common.h"
#include "lg_gen.h"
#include "lg_jit.h"

#include <cuda.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lg_ctx lg_ctx_t;

struct lg_ctx_params {
    int device;            /* CUDA device ordinal */
    const char *cache_dir; /* JIT disk cache; NULL: $LORAGEN_CACHE_DIR or the default */
    size_t blas_workspace; /* 0: 32 MiB */
};

/* A generated kernel, loaded. Owned by the context. */
struct lg_kernel {
    char name[LG_NAME_MAX];
    struct lg_kernel_cfg cfg; /* as generated: defaults filled in */
    struct lg_kernel_cfg req; /* as first requested: later identical requests skip the generator */
    CUfunction fn;
    unsigned smem; /* dynamic shared memory bytes per block */
    int threads;
    int occupancy; /* resident blocks per SM (registers, shared memory): grids are sized in waves of this */
};

LG_API enum lg_status lg_ctx_init(const struct lg_ctx_params *p, lg_ctx_t **out);
LG_API void lg_ctx_free(lg_ctx_t *ctx);

LG_API int lg_ctx_arch(const lg_ctx_t *ctx);       /* 90 on an H100/H200 */
LG_API int lg_ctx_sm_count(const lg_ctx_t *ctx);
LG_API const char *lg_ctx_device_name(const lg_ctx_t *ctx);
LG_API lg_jit_t *lg_ctx_jit(lg_ctx_t *ctx);
LG_API lg_blas_t *lg_ctx_blas(lg_ctx_t *ctx);
LG_API lg_gen_t *lg_ctx_gen(lg_ctx_t *ctx);

/* The kernel for cfg: generated, compiled (through the JIT caches) and loaded on first use. */
LG_API enum lg_status lg_ctx_kernel(lg_ctx_t *ctx, const struct lg_kernel_cfg *cfg, const struct lg_kernel **out);

/* Launches k with a by-value argument block. */
LG_API enum lg_status lg_kernel_launch(const struct lg_kernel *k, unsigned gx, unsigned gy, const void *args,
                                size_t args_size, CUstream stream);

#ifdef __cplusplus
}
#endif
#endif
