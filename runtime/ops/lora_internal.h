/* lora_internal.h (ops, private): what the FusedLoRA files share: the layer object (lora.c builds it and owns its
 * buffers; lora_run.c launches with it) and the checks both sides make. */
#ifndef LG_LORA_INTERNAL_H
#define LG_LORA_INTERNAL_H

#include "lg_lora.h"
#include "lg_gpu.h"
#include "lora_tune.h"
#include "common/lg_args.h"

struct lg_lora {
    lg_ctx_t *ctx;
    struct lg_lora_params p;
    int64_t K, M;
    int r;
    float s;          /* alpha / r */
    unsigned thresh16; /* dropout threshold (0: none) */
    float keep_scale; /* 1 / keep rate */
    CUdeviceptr w;    /* owned: [[W,B],[A,0]], M+r rows of lg_lora_ext_ld(K, r); borrowed: A then B, packed */
    CUdeviceptr bias; /* owned only */
    int borrowed;     /* params.base == LG_LORA_BASE_BORROWED */
    /* where the launches read each matrix: views into w, or the caller's W and bias when borrowed */
    CUdeviceptr wp, ap, bp, biasp;
    int64_t ldwp, lda, ldb;
    CUcontext cu;     /* current at init: every call makes it current (autograd runs backward on its own thread) */
    CUdeviceptr ws;   /* workspace: partials and dS */
    size_t ws_size;
    CUdeviceptr ds_buf; /* inside ws when the last backward needed it */
    struct lg_lora_tiles tiles;
    int tiles_set;     /* lg_lora_set_tiles chose the tiles: the tuning database is not consulted */
    int tuned_bucket;  /* the token bucket the tiles were looked up for (0: none yet) */
    struct lg_kernel_cfg plan[LG_SLOT_COUNT]; /* the generator's kernel for each slot, before tiles */
    /* kernels resolved on first use: generating source is milliseconds of Lua, far too slow per call */
    const struct lg_kernel *k[LG_SLOT_COUNT];
};

static inline size_t esz(const lg_lora_t *l) { return lg_dtype_size(l->p.dtype); }

/* The layer's context current on this thread (a no-op when it already is). */
enum lg_status lg_ops_lora_bind(const lg_lora_t *l, const char *fn);
/* The checks every device buffer argument gets: not NULL, ld >= min_ld and a multiple of 8, 16-byte aligned. */
enum lg_status lg_ops_lora_check_buf(const char *fn, const char *name, CUdeviceptr p, int64_t ld, int64_t min_ld);

#endif
