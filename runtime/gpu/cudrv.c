/* cudrv.c: the CUDA driver API, loaded at run time.
 *
 * libloragen does not link libcuda: `loragen gen`, the trainer's CPU backend and the test suites must start on
 * machines with no NVIDIA driver at all (CI). Each driver entry point used anywhere in the project
 * (cu_syms.h) gets an lg_-prefixed forwarder with cuda.h's own prototype that resolves the real symbol from
 * libcuda.so.1 on first use (lg_gpu.h renames the call sites). When the driver is absent every call returns
 * CUDA_ERROR_NO_DEVICE, which callers report as "no GPU". */
#include "lg_gpu.h"
#include "lg_base.h"

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

/* LG_CU(name, (typed params), (args)) defines lg_<name> forwarding to the driver's symbol `name`. */
#define LG_CU(name, params, args)                                                                          \
    CUresult CUDAAPI lg_##name params                                                                      \
    {                                                                                                      \
        typedef CUresult(CUDAAPI * fn_t) params;                                                           \
        static fn_t fn;                                                                                    \
        if (!fn)                                                                                           \
            fn = (fn_t)lg_sym(#name);                                                                      \
        return fn ? fn args : CUDA_ERROR_NO_DEVICE;                                                        \
    }
#include "cu_syms.h"
#undef LG_CU

/* Error strings must work without a driver too (they describe the "no driver" case). */
CUresult CUDAAPI lg_cuGetErrorName(CUresult error, const char **str)
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

CUresult CUDAAPI lg_cuGetErrorString(CUresult error, const char **str)
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

enum lg_status lg_cu_check(CUresult r, const char *what)
{
    if (r == CUDA_SUCCESS)
        return LG_OK;
    const char *n = NULL, *d = NULL;
    cuGetErrorName(r, &n);
    cuGetErrorString(r, &d);
    return lg_fail(r == CUDA_ERROR_OUT_OF_MEMORY ? LG_ERR_OOM : LG_ERR_CUDA, "%s: %s (%s)", what, n ? n : "?",
                   d ? d : "");
}
