/* ctx.c: the per-GPU context: primary context, JIT, cuBLASLt, generator, and the loaded-kernel table. Kernels
 * are keyed by their generated name, which encodes the whole configuration. */
#include "lg_ctx.h"
#include "lg_base.h"
#include "lg_gpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LG_CTX_MAX_KERNELS 512

struct lg_ctx {
    CUdevice dev;
    CUcontext cu;
    int arch, sm_count;
    char name[128];
    lg_jit_t *jit;
    lg_blas_t *blas;
    lg_gen_t *gen;
    struct lg_kernel *kernels; /* fixed table: callers hold pointers into it */
    int nkernels;
};

static enum lg_status open_device(lg_ctx_t *c, int device)
{
    CUresult r = cuInit(0);
    int n = 0;
    if (r != CUDA_SUCCESS || cuDeviceGetCount(&n) != CUDA_SUCCESS || n == 0)
        return lg_fail(LG_ERR_NO_GPU, "no CUDA device is present (cuInit: %d)", (int)r);
    if (device < 0 || device >= n)
        return lg_fail(LG_ERR_INVALID, "device %d does not exist (%d present)", device, n);
    enum lg_status st;
    if ((st = lg_cu_check(cuDeviceGet(&c->dev, device), "cuDeviceGet")) != LG_OK)
        return st;
    if ((st = lg_cu_check(cuDevicePrimaryCtxRetain(&c->cu, c->dev), "cuDevicePrimaryCtxRetain")) != LG_OK)
        return st;
    if ((st = lg_cu_check(cuCtxSetCurrent(c->cu), "cuCtxSetCurrent")) != LG_OK)
        return st;
    int maj = 0, min = 0;
    cuDeviceGetAttribute(&maj, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, c->dev);
    cuDeviceGetAttribute(&min, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, c->dev);
    cuDeviceGetAttribute(&c->sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, c->dev);
    cuDeviceGetName(c->name, sizeof c->name, c->dev);
    c->arch = maj * 10 + min;
    if (c->arch < 80)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s is sm_%d; loragen needs sm_80 or newer (bf16 tensor cores)",
                       c->name, c->arch);
    return LG_OK;
}

enum lg_status lg_ctx_init(const struct lg_ctx_params *p, lg_ctx_t **out)
{
    lg_ctx_t *c = calloc(1, sizeof *c);
    if (!c)
        return lg_fail(LG_ERR_OOM, "lg_ctx_init: out of memory");
    enum lg_status st = open_device(c, p ? p->device : 0);
    struct lg_jit_params jp = {.cache_dir = p ? p->cache_dir : NULL, .arch = 0};
    if (st == LG_OK)
        st = lg_jit_init(&jp, &c->jit);
    if (st == LG_OK)
        st = lg_blas_init(p && p->blas_workspace ? p->blas_workspace : (32u << 20), &c->blas);
    if (st == LG_OK)
        st = lg_gen_init(&c->gen);
    if (st == LG_OK && !(c->kernels = calloc(LG_CTX_MAX_KERNELS, sizeof *c->kernels)))
        st = lg_fail(LG_ERR_OOM, "lg_ctx_init: out of memory");
    if (st != LG_OK) {
        lg_ctx_free(c);
        return st;
    }
    *out = c;
    return LG_OK;
}

void lg_ctx_free(lg_ctx_t *c)
{
    if (!c)
        return;
    lg_gen_free(c->gen);
    lg_blas_free(c->blas);
    lg_jit_free(c->jit);
    free(c->kernels);
    if (c->cu)
        cuDevicePrimaryCtxRelease(c->dev);
    free(c);
}

int lg_ctx_arch(const lg_ctx_t *c) { return c->arch; }
int lg_ctx_sm_count(const lg_ctx_t *c) { return c->sm_count; }
const char *lg_ctx_device_name(const lg_ctx_t *c) { return c->name; }
lg_jit_t *lg_ctx_jit(lg_ctx_t *c) { return c->jit; }
lg_blas_t *lg_ctx_blas(lg_ctx_t *c) { return c->blas; }
lg_gen_t *lg_ctx_gen(lg_ctx_t *c) { return c->gen; }

/* Reads the kernel's `<name>_smem` constant (sizeof its shared-memory struct) and lifts the 48 KiB default
 * dynamic limit when it needs more. */
static enum lg_status load_smem(lg_ctx_t *c, struct lg_kernel *k)
{
    CUmodule mod;
    enum lg_status st = lg_cu_check(cuFuncGetModule(&mod, k->fn), "cuFuncGetModule");
    if (st != LG_OK)
        return st;
    char sym[LG_NAME_MAX + 8];
    snprintf(sym, sizeof sym, "%s_smem", k->name);
    CUdeviceptr p;
    size_t sz;
    if ((st = lg_cu_check(cuModuleGetGlobal(&p, &sz, mod, sym), "cuModuleGetGlobal(smem)")) != LG_OK)
        return st;
    if ((st = lg_cu_check(cuMemcpyDtoH(&k->smem, p, sizeof k->smem), "cuMemcpyDtoH(smem)")) != LG_OK)
        return st;
    if (k->smem > 48 * 1024)
        st = lg_cu_check(cuFuncSetAttribute(k->fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)k->smem),
                         "cuFuncSetAttribute(max dynamic smem)");
    if (st == LG_OK)
        st = lg_cu_check(cuOccupancyMaxActiveBlocksPerMultiprocessor(&k->occupancy, k->fn, k->threads, k->smem),
                         "cuOccupancyMaxActiveBlocksPerMultiprocessor");
    if (st == LG_OK && k->occupancy < 1)
        st = lg_fail(LG_ERR_UNSUPPORTED, "kernel %s cannot run on this device (%d threads, %u bytes smem)",
                     k->name, k->threads, k->smem);
    return st;
}

enum lg_status lg_ctx_kernel(lg_ctx_t *c, const struct lg_kernel_cfg *cfg, const struct lg_kernel **out)
{
    /* a request seen before needs no source: the generator costs milliseconds per kernel */
    for (int i = 0; i < c->nkernels; i++)
        if (!memcmp(&c->kernels[i].req, cfg, sizeof *cfg)) {
            *out = &c->kernels[i];
            return LG_OK;
        }
    struct lg_kernel_src src;
    enum lg_status st = lg_gen_kernel(c->gen, cfg, "runtime", &src);
    if (st != LG_OK)
        return st;
    for (int i = 0; i < c->nkernels; i++)
        if (!strcmp(c->kernels[i].name, src.name)) {
            lg_kernel_src_free(&src);
            *out = &c->kernels[i];
            return LG_OK;
        }
    if (c->nkernels == LG_CTX_MAX_KERNELS) {
        lg_kernel_src_free(&src);
        return lg_fail(LG_ERR_INTERNAL, "more than %d distinct kernels loaded", LG_CTX_MAX_KERNELS);
    }
    struct lg_kernel *k = &c->kernels[c->nkernels];
    memset(k, 0, sizeof *k);
    snprintf(k->name, sizeof k->name, "%s", src.name);
    k->cfg = src.cfg;
    k->req = *cfg;
    k->threads = src.threads;
    st = lg_jit_get(c->jit, src.source, src.name, &k->fn);
    lg_kernel_src_free(&src);
    if (st == LG_OK)
        st = load_smem(c, k);
    if (st != LG_OK)
        return lg_fail_wrap(st, "loading kernel %s: ", k->name);
    c->nkernels++;
    *out = k;
    return LG_OK;
}

enum lg_status lg_kernel_launch(const struct lg_kernel *k, unsigned gx, unsigned gy, const void *args,
                                size_t args_size, CUstream stream)
{
    if (gx == 0 || gy == 0)
        return LG_OK;
    (void)args_size; /* every generated kernel takes exactly one by-value argument block */
    void *params[] = {(void *)args};
    CUresult r = cuLaunchKernel(k->fn, gx, gy, 1, (unsigned)k->threads, 1, 1, k->smem, stream, params, NULL);
    if (r != CUDA_SUCCESS)
        return lg_fail_wrap(lg_cu_check(r, "cuLaunchKernel"), "launching %s: ", k->name);
    return LG_OK;
}
