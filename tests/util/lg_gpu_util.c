/* lg_gpu_util.c: see lg_gpu_util.h. */
#include "lg_gpu_util.h"
#include "lg_half.h"

#include <stdlib.h>
#include <string.h>

CUdeviceptr lg_dev_alloc(size_t bytes)
{
    CUdeviceptr p;
    CU_CHECK(cuMemAlloc(&p, bytes ? bytes : 16));
    return p;
}

void lg_dev_poison(CUdeviceptr p, size_t bytes) { CU_CHECK(cuMemsetD8(p, 0xff, bytes)); }

static void copy2d(CUdeviceptr dev, size_t dpitch, void *host, size_t hpitch, size_t width, size_t rows, int down)
{
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.WidthInBytes = width;
    c.Height = rows;
    if (down) {
        c.srcMemoryType = CU_MEMORYTYPE_DEVICE, c.srcDevice = dev, c.srcPitch = dpitch;
        c.dstMemoryType = CU_MEMORYTYPE_HOST, c.dstHost = host, c.dstPitch = hpitch;
    } else {
        c.dstMemoryType = CU_MEMORYTYPE_DEVICE, c.dstDevice = dev, c.dstPitch = dpitch;
        c.srcMemoryType = CU_MEMORYTYPE_HOST, c.srcHost = host, c.srcPitch = hpitch;
    }
    CU_CHECK(cuMemcpy2D(&c));
}

void lg_dev_upload(CUdeviceptr dst, int64_t ld, const float *src, int64_t rows, int64_t cols, enum lg_dtype t)
{
    size_t es = lg_dtype_size(t);
    void *tmp = malloc((size_t)(rows * cols) * es);
    for (int64_t i = 0; i < rows * cols; i++) {
        if (t == LG_FP32)
            ((float *)tmp)[i] = src[i];
        else
            ((uint16_t *)tmp)[i] = lg_f32_to_half(t, src[i]);
    }
    copy2d(dst, (size_t)ld * es, tmp, (size_t)cols * es, (size_t)cols * es, (size_t)rows, 0);
    free(tmp);
}

void lg_dev_download(float *dst, CUdeviceptr src, int64_t ld, int64_t rows, int64_t cols, enum lg_dtype t)
{
    size_t es = lg_dtype_size(t);
    void *tmp = malloc((size_t)(rows * cols) * es);
    copy2d(src, (size_t)ld * es, tmp, (size_t)cols * es, (size_t)cols * es, (size_t)rows, 1);
    for (int64_t i = 0; i < rows * cols; i++)
        dst[i] = t == LG_FP32 ? ((float *)tmp)[i] : lg_half_to_f32(t, ((uint16_t *)tmp)[i]);
    free(tmp);
}

void lg_host_round(float *x, size_t n, enum lg_dtype t)
{
    for (size_t i = 0; i < n; i++)
        x[i] = lg_round_to(t, x[i]);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double lg_time_median_ms(void (*fn)(void *), void *arg, CUstream stream, int warmup, int reps)
{
    for (int i = 0; i < warmup; i++)
        fn(arg);
    CUevent e0, e1;
    CU_CHECK(cuEventCreate(&e0, 0));
    CU_CHECK(cuEventCreate(&e1, 0));
    double *t = malloc(sizeof(double) * (size_t)reps);
    for (int i = 0; i < reps; i++) {
        CU_CHECK(cuEventRecord(e0, stream));
        fn(arg);
        CU_CHECK(cuEventRecord(e1, stream));
        CU_CHECK(cuEventSynchronize(e1));
        float ms;
        CU_CHECK(cuEventElapsedTime(&ms, e0, e1));
        t[i] = ms;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    double med = t[reps / 2];
    free(t);
    cuEventDestroy(e0);
    cuEventDestroy(e1);
    return med;
}

void lg_time_interleaved(void (*const *fns)(void *), void *arg, int nv, CUstream stream, int warmup, int reps,
                         double *med)
{
    for (int w = 0; w < warmup; w++)
        for (int v = 0; v < nv; v++)
            fns[v](arg);
    CUevent e0, e1;
    CU_CHECK(cuEventCreate(&e0, 0));
    CU_CHECK(cuEventCreate(&e1, 0));
    double *t = malloc(sizeof(double) * (size_t)(reps * nv));
    for (int i = 0; i < reps; i++)
        for (int v = 0; v < nv; v++) {
            CU_CHECK(cuEventRecord(e0, stream));
            fns[v](arg);
            CU_CHECK(cuEventRecord(e1, stream));
            CU_CHECK(cuEventSynchronize(e1));
            float ms;
            CU_CHECK(cuEventElapsedTime(&ms, e0, e1));
            t[v * reps + i] = ms;
        }
    for (int v = 0; v < nv; v++) {
        qsort(t + v * reps, (size_t)reps, sizeof *t, cmp_double);
        med[v] = t[v * reps + reps / 2];
    }
    free(t);
    cuEventDestroy(e0);
    cuEventDestroy(e1);
}
