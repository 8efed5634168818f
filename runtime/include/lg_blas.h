/* lg_blas.h: bf16/fp16 GEMMs with fp32 accumulation through cuBLASLt, in row-major terms.
 *
 *   C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C[m,n]   (+ bias[n] broadcast over rows, optional)
 *
 * All matrices are row-major with explicit leading dimensions (elements between rows), so views into
 * larger buffers (the extended-K layouts of the LoRA layer) need no copies. op(A) = A or Aᵀ (trans_a).
 * A, B, C and bias share one dtype (LG_BF16 or LG_FP16); alpha and beta are fp32 (host values), accumulation
 * is fp32. With beta == 0, C is write-only (it may hold garbage, even NaN). a, b, c and bias must be 16-byte
 * aligned, and every ld * sizeof(dtype) a multiple of 16 bytes, as cuBLASLt's fast kernels need.
 *
 * Descriptors, layouts and the chosen algorithm are created once per distinct shape/stride/dtype/epilogue
 * and reused; the handle owns one workspace. Not thread-safe: one lg_blas_t per thread or stream.
 * Ownership: the lg_blas_t owns the cuBLASLt handle, its plans and the workspace (lg_blas_free releases them,
 * in the context that was current at lg_blas_init); A, B, C and bias belong to the caller.
 *
 *   lg_blas_t *blas;
 *   lg_blas_init(32 << 20, &blas);
 *   struct lg_gemm g = { .dtype = LG_BF16, .m = N, .n = M, .k = K, .trans_b = 1,
 *                        .a = x, .lda = K + r, .b = w, .ldb = K + r, .c = y, .ldc = M, .alpha = 1 };
 *   lg_blas_gemm(blas, &g, stream);   // Y = X·Wᵀ
 *   lg_blas_free(blas);
 */
#ifndef LG_BLAS_H
#define LG_BLAS_H

#include "lg_common.h"

#include <cuda.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lg_blas lg_blas_t;

struct lg_gemm {
    enum lg_dtype dtype;
    int64_t m, n, k;
    int trans_a, trans_b; /* 0: as stored; 1: transposed */
    const void *a;        /* device pointers */
    int64_t lda;
    const void *b;
    int64_t ldb;
    void *c;
    int64_t ldc;
    float alpha, beta;
    const void *bias; /* optional [n], added to every row of C */
    int algo_index;   /* which of cuBLASLt's heuristic candidates to use (0 = best); for the tuner */
};

/* workspace_bytes: the cuBLASLt workspace (32 MiB is a good default on Hopper). Needs a current context. */
LG_API enum lg_status lg_blas_init(size_t workspace_bytes, lg_blas_t **out);
LG_API void lg_blas_free(lg_blas_t *blas);

/* Validates (LG_ERR_INVALID names the bad field: ld too small, misaligned pointer or ld, bad dtype;
 * LG_ERR_UNSUPPORTED for fp32) and launches on `stream` (asynchronous). The first call for a new problem
 * (shape, strides, dtype, bias or not, beta == 0 or not, algo_index, pointer alignment) builds its plan:
 * LG_ERR_CUBLAS when cuBLASLt has no algorithm for it, LG_ERR_INVALID when algo_index >= lg_blas_algo_count. */
LG_API enum lg_status lg_blas_gemm(lg_blas_t *blas, const struct lg_gemm *g, CUstream stream);

/* How many heuristic algorithms cuBLASLt offers for this problem (at most 8; valid algo_index values are
 * 0..count-1), for the tuner; g->algo_index is ignored. 0 on error, with the detail in lg_last_error(). */
LG_API int lg_blas_algo_count(lg_blas_t *blas, const struct lg_gemm *g);

/* How many plans (descriptor sets with their chosen algorithm) the handle holds; for tests and stats. */
LG_API unsigned lg_blas_plan_count(const lg_blas_t *blas);

/* Checks a problem without a GPU: dtype, shapes, trans flags, algo_index range, pointers non-NULL and 16-byte
 * aligned (never dereferenced), leading-dimension minimums and 16-byte alignment of ld*elem_size. Used by
 * lg_blas_gemm and by tests. */
LG_API enum lg_status lg_gemm_validate(const struct lg_gemm *g);

#ifdef __cplusplus
}
#endif
#endif
