/* lg_gpu_util.h: device-buffer helpers for GPU tests and benchmarks: strided uploads/downloads of float data
 * as bf16/fp16, NaN poisoning, and a CUDA-event timer taking the median of repeated runs. All exit through
 * CU_CHECK on failure (tests and benches only). */
#ifndef LG_GPU_UTIL_H
#define LG_GPU_UTIL_H

#include "lg_common.h"
#include "lg_test.h"

#include "lg_gpu.h"

CUdeviceptr lg_dev_alloc(size_t bytes);
/* Fills with 0xff bytes: NaN in bf16, fp16 and fp32, so unwritten outputs are caught. */
void lg_dev_poison(CUdeviceptr p, size_t bytes);
/* rows x cols floats (packed) -> dtype at dst with leading dimension ld (elements). */
void lg_dev_upload(CUdeviceptr dst, int64_t ld, const float *src, int64_t rows, int64_t cols, enum lg_dtype t);
void lg_dev_download(float *dst, CUdeviceptr src, int64_t ld, int64_t rows, int64_t cols, enum lg_dtype t);
/* Rounds a float array through dtype in place (so host data equals what the device holds). */
void lg_host_round(float *x, size_t n, enum lg_dtype t);

/* Median time in ms of `reps` runs of fn(arg) on `stream`, after `warmup` runs; each run timed with events. */
double lg_time_median_ms(void (*fn)(void *), void *arg, CUstream stream, int warmup, int reps);

/* Times nv variants side by side: each round runs every variant once (in turn), so clock and thermal drift hit
 * all of them alike. med[i] receives variant i's median over `reps` rounds, after `warmup` rounds. */
void lg_time_interleaved(void (*const *fns)(void *), void *arg, int nv, CUstream stream, int warmup, int reps,
                         double *med);

#endif
