/* cudrv.c: the CUDA driver API, loaded at run time.
 *
 * libloragen does not link libcuda: `loragen gen`, the CPU backend and the test suites must start on machines
 * with no NVIDIA driver at all (CI). Each driver entry point used anywhere in the project is defined here
 * with cuda.h's own prototype and forwards to the symbol resolved from libcuda.so.1 on first use. When the
 * driver is absent every call returns CUDA_ERROR_NO_DEVICE, which callers report as "no GPU".
 * (cuda.h maps names like cuMemAlloc to cuMemAlloc_v2; LG_SYM stringifies after that mapping so dlsym looks up
 * the versioned symbol the driver exports.) */
#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>

static void *lg_libcuda;
static pthread_once_t lg_once = PTHREAD_ONCE_INIT;

static void open_driver(void)
{
    const char *names[] = {"libcuda.so.1", "libcuda.so", NULL};
    for (const char **n = names; *n && !lg_libcuda; n++)
        lg_libcuda = dlopen(*n, RTLD_NOW | RTLD_LOCAL);
}

static void *lg_sym(const char *name)
{
    pthread_once(&lg_once, open_driver);
    return lg_libcuda ? dlsym(lg_libcuda, name) : NULL;
}

#define LG_STR2(x) #x
#define LG_SYM(x) LG_STR2(x)

/* LG_CU(name, (typed params), (args)) defines `name` forwarding to the driver's symbol. */
#define LG_CU(name, params, args)                                                                          \
    CUresult CUDAAPI name params                                                                           \
    {                                                                                                      \
        typedef CUresult(CUDAAPI * fn_t) params;                                                           \
        static fn_t fn;                                                                                    \
        if (!fn)                                                                                           \
            fn = (fn_t)lg_sym(LG_SYM(name));                                                               \
        return fn ? fn args : CUDA_ERROR_NO_DEVICE;                                                        \
    }

LG_CU(cuInit, (unsigned int flags), (flags))
LG_CU(cuDriverGetVersion, (int *v), (v))
LG_CU(cuDeviceGetCount, (int *count), (count))
LG_CU(cuDeviceGet, (CUdevice * dev, int ordinal), (dev, ordinal))
LG_CU(cuDeviceGetAttribute, (int *pi, CUdevice_attribute attrib, CUdevice dev), (pi, attrib, dev))
LG_CU(cuDeviceGetName, (char *name, int len, CUdevice dev), (name, len, dev))
LG_CU(cuDevicePrimaryCtxRetain, (CUcontext * pctx, CUdevice dev), (pctx, dev))
LG_CU(cuDevicePrimaryCtxRelease, (CUdevice dev), (dev))
LG_CU(cuCtxSetCurrent, (CUcontext ctx), (ctx))
LG_CU(cuCtxGetCurrent, (CUcontext * pctx), (pctx))
LG_CU(cuCtxGetDevice, (CUdevice * dev), (dev))
LG_CU(cuCtxPushCurrent, (CUcontext ctx), (ctx))
LG_CU(cuCtxPopCurrent, (CUcontext * pctx), (pctx))
LG_CU(cuCtxSynchronize, (void), ())
LG_CU(cuModuleLoadData, (CUmodule * module, const void *image), (module, image))
LG_CU(cuModuleUnload, (CUmodule hmod), (hmod))
LG_CU(cuModuleGetFunction, (CUfunction * hfunc, CUmodule hmod, const char *name), (hfunc, hmod, name))
LG_CU(cuModuleGetGlobal, (CUdeviceptr * dptr, size_t *bytes, CUmodule hmod, const char *name),
      (dptr, bytes, hmod, name))
LG_CU(cuFuncGetModule, (CUmodule * hmod, CUfunction hfunc), (hmod, hfunc))
LG_CU(cuFuncSetAttribute, (CUfunction hfunc, CUfunction_attribute attrib, int value), (hfunc, attrib, value))
LG_CU(cuFuncGetAttribute, (int *pi, CUfunction_attribute attrib, CUfunction hfunc), (pi, attrib, hfunc))
LG_CU(cuOccupancyMaxActiveBlocksPerMultiprocessor, (int *n, CUfunction f, int block, size_t smem),
      (n, f, block, smem))
LG_CU(cuLaunchKernel,
      (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by,
       unsigned int bz, unsigned int smem, CUstream stream, void **params, void **extra),
      (f, gx, gy, gz, bx, by, bz, smem, stream, params, extra))
LG_CU(cuMemAlloc, (CUdeviceptr * dptr, size_t bytes), (dptr, bytes))
LG_CU(cuMemFree, (CUdeviceptr dptr), (dptr))
LG_CU(cuMemGetInfo, (size_t *free_b, size_t *total_b), (free_b, total_b))
LG_CU(cuMemcpyHtoD, (CUdeviceptr dst, const void *src, size_t bytes), (dst, src, bytes))
LG_CU(cuMemcpyDtoH, (void *dst, CUdeviceptr src, size_t bytes), (dst, src, bytes))
LG_CU(cuMemcpyDtoD, (CUdeviceptr dst, CUdeviceptr src, size_t bytes), (dst, src, bytes))
LG_CU(cuMemcpyDtoDAsync, (CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s), (dst, src, bytes, s))
LG_CU(cuMemcpy2D, (const CUDA_MEMCPY2D *copy), (copy))
LG_CU(cuMemsetD8, (CUdeviceptr dst, unsigned char v, size_t n), (dst, v, n))
LG_CU(cuMemsetD16, (CUdeviceptr dst, unsigned short v, size_t n), (dst, v, n))
LG_CU(cuMemsetD32, (CUdeviceptr dst, unsigned int v, size_t n), (dst, v, n))
LG_CU(cuMemsetD32Async, (CUdeviceptr dst, unsigned int v, size_t n, CUstream s), (dst, v, n, s))
LG_CU(cuStreamCreate, (CUstream * s, unsigned int flags), (s, flags))
LG_CU(cuStreamDestroy, (CUstream s), (s))
LG_CU(cuStreamSynchronize, (CUstream s), (s))
LG_CU(cuEventCreate, (CUevent * e, unsigned int flags), (e, flags))
LG_CU(cuEventDestroy, (CUevent e), (e))
LG_CU(cuEventRecord, (CUevent e, CUstream s), (e, s))
LG_CU(cuEventSynchronize, (CUevent e), (e))
LG_CU(cuEventElapsedTime, (float *ms, CUevent start, CUevent end), (ms, start, end))

/* Error strings must work without a driver too (they describe the "no driver" case). */
CUresult CUDAAPI cuGetErrorName(CUresult error, const char **str)
{
    typedef CUresult(CUDAAPI * fn_t)(CUresult, const char **);
    static fn_t fn;
    if (!fn)
        fn = (fn_t)lg_sym("cuGetErrorName");
    if (fn)
        return fn(error, str);
    *str = error == CUDA_ERROR_NO_DEVICE ? "CUDA_ERROR_NO_DEVICE (no NVIDIA driver: libcuda.so.1 not found)"
                                         : "CUDA_ERROR (driver not loaded)";
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuGetErrorString(CUresult error, const char **str)
{
    typedef CUresult(CUDAAPI * fn_t)(CUresult, const char **);
    static fn_t fn;
    if (!fn)
        fn = (fn_t)lg_sym("cuGetErrorString");
    if (fn)
        return fn(error, str);
    *str = "the NVIDIA driver (libcuda.so.1) could not be loaded";
    return CUDA_SUCCESS;
}
