/* lg_mlora_bench.h: the machinery of bench/bench_mlora.c: one layer's inputs and buffers for every variant (the
 * frozen GEMMs alone, the unfused per-adapter loop, single-adapter FusedLoRA, lg_mlora in each strategy), the
 * variants as timer callbacks, setup and teardown, and validation of (a) and (b) against the loop. Benches
 * only. */
#ifndef LG_MLORA_BENCH_H
#define LG_MLORA_BENCH_H

#include "lg_common.h"
#include "lg_gen.h"
#include "lg_gpu_util.h"
#include "lg_lora.h"
#include "lg_mlora.h"

#define R 16
#define ALPHA 32.0f
#define P 0.1f
#define MAXAD 64

struct mix {
    const char *name;
    int nad;
    int64_t len[MAXAD];
};

struct peft_fns {
    const struct lg_kernel *dropout, *dropout_bwd, *axpy;
};

struct bench {
    lg_ctx_t *ctx;
    lg_blas_t *blas;
    struct peft_fns pf;
    int64_t n, K, MT;
    int nmod;
    int64_t M[3];
    const struct mix *mx;
    /* shared inputs: xc [n,K], dyc [n,MT], w [MT,K] (W of every module stacked) */
    CUdeviceptr xc, dyc, w;
    /* loop */
    CUdeviceptr a[MAXAD], b[MAXAD], da_l[MAXAD], db_l[MAXAD], yl, dxl, xd, mask, t1, dt, dxd;
    /* mlora */
    lg_mlora_t *ml;
    lg_mlora_segments_t *sg;
    CUdeviceptr xm, dym, ym, dxm;
    int64_t ldxm, lddym;
    enum lg_mlora_strategy force;
    /* single FusedLoRA */
    lg_lora_t *single;
    CUdeviceptr xs, dys, ys, dxs, das, dbs;
    unsigned th;
    float ks;
};

void mb_gemm(struct bench *B, int64_t m, int64_t n, int64_t k, int ta, int tb, CUdeviceptr a, int64_t lda,
          CUdeviceptr b, int64_t ldb, CUdeviceptr c, int64_t ldc, float alpha, float beta);
void mb_run_floor(void *arg);
void mb_run_loop(void *arg);
void mb_run_single(void *arg);
void mb_run_a(void *arg);
void mb_run_b(void *arg);
void mb_run_auto(void *arg);
void mb_run_fwd_forced(void *arg);
void mb_run_bwd_forced(void *arg);
/* the GEMMs inside lg_mlora alone: the forward GEMM (k = K + the present columns for (a)) and dX = dY·W */
void mb_run_gemms_forced(void *arg);
void mb_copy2d(CUdeviceptr dst, int64_t ldd, CUdeviceptr src, int64_t lds, int64_t rows, int64_t cols);
/* One layer of nmod modules (M[m]) for mix mx: every variant's buffers and weights from the same values. */
void mb_setup(struct bench *B, int64_t K, int nmod, const int64_t *M, const struct mix *mx, int want_single);
void mb_teardown(struct bench *B);
int mb_validate(struct bench *B, const char *what);
double mb_geomean(const double *v, int n);

#endif
