/* fake_cuda.cpp: a stand-in libcuda.so.1 that runs the attention kernels on the CPU emulator, so the whole
 * stack above the driver (lg_ctx, the JIT with real NVRTC compiles, runtime/ops/attention.c's checks,
 * tables, workspace and launches, test_attention_gpu.c and bench_attention.c themselves) can be exercised on a
 * machine without a GPU:
 *   LD_LIBRARY_PATH=<dir with this libcuda.so.1> LORAGEN_ATTN_TEST_MAX_TOKENS=1200 build/test_attention_gpu
 * Device memory is host memory (each allocation ends at a guard page, so an overrun faults); launches run
 * synchronously; a launch of anything but an attention kernel aborts. One emulated device: sm_90, 132 SMs,
 * 227 KiB of shared memory per block. Timings are CPU time and mean nothing. */
#include <cuda.h>

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

extern "C" size_t emu_bf16_kernel(const char *name, unsigned gx, unsigned gy, unsigned bx, const void *args);
extern "C" size_t emu_fp16_kernel(const char *name, unsigned gx, unsigned gy, unsigned bx, const void *args);

namespace {

struct Func {
    std::string name;
    struct Module *mod;
};
struct Module {
    std::map<std::string, Func *> funcs;
    std::map<std::string, unsigned *> globals;
};
struct Alloc {
    void *base;
    size_t len;
};
std::map<uintptr_t, Alloc> allocs;
int live_allocs;

size_t kernel(const char *name, unsigned gx, unsigned gy, unsigned bx, const void *args)
{
    size_t s = emu_bf16_kernel(name, gx, gy, bx, args);
    if (s == (size_t)-1)
        s = emu_fp16_kernel(name, gx, gy, bx, args);
    if (s == (size_t)-1) {
        fprintf(stderr, "fake driver: %s is not an attention kernel; the emulator runs nothing else\n", name);
        exit(3);
    }
    return s;
}

double now_ms()
{
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

} // namespace

#define API extern "C" __attribute__((visibility("default"))) CUresult

API cuInit(unsigned) { return CUDA_SUCCESS; }
API cuDriverGetVersion(int *v) { *v = 12040; return CUDA_SUCCESS; }
API cuDeviceGetCount(int *n) { *n = 1; return CUDA_SUCCESS; }
API cuDeviceGet(CUdevice *d, int i) { *d = i; return i == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE; }
API cuDeviceGetAttribute(int *v, CUdevice_attribute a, CUdevice)
{
    switch (a) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = 9; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = 132; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *v = 232448; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *v = 49152; break;
    default: *v = 0;
    }
    return CUDA_SUCCESS;
}
API cuDeviceGetName(char *name, int len, CUdevice) { snprintf(name, (size_t)len, "attn_emu (CPU, sm_90)"); return CUDA_SUCCESS; }
API cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice) { *c = (CUcontext)0x10; return CUDA_SUCCESS; }
API cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
static CUcontext current;
API cuCtxSetCurrent(CUcontext c) { current = c; return CUDA_SUCCESS; }
API cuCtxGetCurrent(CUcontext *c) { *c = current; return CUDA_SUCCESS; }
API cuCtxGetDevice(CUdevice *d) { *d = 0; return CUDA_SUCCESS; }
API cuCtxPushCurrent_v2(CUcontext c) { current = c; return CUDA_SUCCESS; }
API cuCtxPopCurrent_v2(CUcontext *c) { if (c) *c = current; return CUDA_SUCCESS; }
API cuCtxSynchronize(void) { return CUDA_SUCCESS; }

API cuModuleLoadData(CUmodule *m, const void *) { *m = (CUmodule) new Module; return CUDA_SUCCESS; }
API cuModuleUnload(CUmodule m) { delete (Module *)m; return CUDA_SUCCESS; }
API cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name)
{
    Module *mod = (Module *)m;
    Func *fn = new Func{name, mod};
    mod->funcs[name] = fn;
    *f = (CUfunction)fn;
    return CUDA_SUCCESS;
}
API cuModuleGetGlobal_v2(CUdeviceptr *p, size_t *bytes, CUmodule m, const char *name)
{
    Module *mod = (Module *)m;
    std::string n = name;
    if (n.size() < 5 || n.compare(n.size() - 5, 5, "_smem"))
        return CUDA_ERROR_NOT_FOUND;
    unsigned *v = new unsigned((unsigned)kernel(n.substr(0, n.size() - 5).c_str(), 0, 0, 0, nullptr));
    mod->globals[n] = v;
    *p = (CUdeviceptr)v;
    if (bytes)
        *bytes = sizeof *v;
    return CUDA_SUCCESS;
}
API cuFuncGetModule(CUmodule *m, CUfunction f) { *m = (CUmodule)((Func *)f)->mod; return CUDA_SUCCESS; }
API cuFuncSetAttribute(CUfunction, CUfunction_attribute, int) { return CUDA_SUCCESS; }
API cuFuncGetAttribute(int *v, CUfunction_attribute, CUfunction) { *v = 0; return CUDA_SUCCESS; }
API cuOccupancyMaxActiveBlocksPerMultiprocessor(int *n, CUfunction, int, size_t) { *n = 1; return CUDA_SUCCESS; }
API cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned, CUstream, void **params, void **)
{
    if (gz != 1 || by != 1 || bz != 1)
        return CUDA_ERROR_INVALID_VALUE;
    kernel(((Func *)f)->name.c_str(), gx, gy, bx, params[0]);
    return CUDA_SUCCESS;
}

/* Device memory: each allocation's end sits on a PROT_NONE page. */
API cuMemAlloc_v2(CUdeviceptr *p, size_t bytes)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE), body = (bytes + 255) / 256 * 256;
    const size_t len = (body + page - 1) / page * page + page;
    void *base = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return CUDA_ERROR_OUT_OF_MEMORY;
    mprotect((char *)base + len - page, page, PROT_NONE);
    uintptr_t ptr = (uintptr_t)base + len - page - body;
    allocs[ptr] = Alloc{base, len};
    live_allocs++;
    *p = (CUdeviceptr)ptr;
    return CUDA_SUCCESS;
}
API cuMemFree_v2(CUdeviceptr p)
{
    auto it = allocs.find((uintptr_t)p);
    if (it == allocs.end())
        return CUDA_ERROR_INVALID_VALUE;
    munmap(it->second.base, it->second.len);
    allocs.erase(it);
    live_allocs--;
    return CUDA_SUCCESS;
}
API cuMemGetInfo_v2(size_t *f, size_t *t) { *f = *t = (size_t)8 << 30; return CUDA_SUCCESS; }
API cuMemAllocHost_v2(void **p, size_t n) { *p = malloc(n ? n : 1); return CUDA_SUCCESS; }
API cuMemFreeHost(void *p) { free(p); return CUDA_SUCCESS; }
API cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n) { memcpy((void *)d, s, n); return CUDA_SUCCESS; }
API cuMemcpyDtoH_v2(void *d, CUdeviceptr s, size_t n) { memcpy(d, (const void *)s, n); return CUDA_SUCCESS; }
API cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) { memmove((void *)d, (const void *)s, n); return CUDA_SUCCESS; }
API cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, CUstream) { return cuMemcpyDtoD_v2(d, s, n); }
API cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *s, size_t n, CUstream) { return cuMemcpyHtoD_v2(d, s, n); }
API cuMemcpyDtoHAsync_v2(void *d, CUdeviceptr s, size_t n, CUstream) { return cuMemcpyDtoH_v2(d, s, n); }
API cuMemcpy2D_v2(const CUDA_MEMCPY2D *c)
{
    const char *src = c->srcMemoryType == CU_MEMORYTYPE_HOST ? (const char *)c->srcHost : (const char *)c->srcDevice;
    char *dst = c->dstMemoryType == CU_MEMORYTYPE_HOST ? (char *)c->dstHost : (char *)c->dstDevice;
    for (size_t r = 0; r < c->Height; r++)
        memcpy(dst + r * c->dstPitch, src + r * c->srcPitch, c->WidthInBytes);
    return CUDA_SUCCESS;
}
API cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *c, CUstream) { return cuMemcpy2D_v2(c); }
API cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) { memset((void *)d, v, n); return CUDA_SUCCESS; }
API cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream) { return cuMemsetD8_v2(d, v, n); }
API cuMemsetD16_v2(CUdeviceptr d, unsigned short v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ((unsigned short *)d)[i] = v;
    return CUDA_SUCCESS;
}
API cuMemsetD32_v2(CUdeviceptr d, unsigned v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ((unsigned *)d)[i] = v;
    return CUDA_SUCCESS;
}
API cuMemsetD32Async(CUdeviceptr d, unsigned v, size_t n, CUstream) { return cuMemsetD32_v2(d, v, n); }
API cuStreamCreate(CUstream *s, unsigned) { *s = (CUstream) new int; return CUDA_SUCCESS; }
API cuStreamDestroy_v2(CUstream s) { delete (int *)s; return CUDA_SUCCESS; }
API cuStreamSynchronize(CUstream) { return CUDA_SUCCESS; }
API cuEventCreate(CUevent *e, unsigned) { *e = (CUevent) new double(0); return CUDA_SUCCESS; }
API cuEventDestroy_v2(CUevent e) { delete (double *)e; return CUDA_SUCCESS; }
API cuEventRecord(CUevent e, CUstream) { *(double *)e = now_ms(); return CUDA_SUCCESS; }
API cuEventSynchronize(CUevent) { return CUDA_SUCCESS; }
API cuEventElapsedTime_v2(float *ms, CUevent a, CUevent b) { *ms = (float)(*(double *)b - *(double *)a); return CUDA_SUCCESS; }
API cuGetErrorName(CUresult r, const char **s) { *s = r ? "CUDA_ERROR (fake driver)" : "CUDA_SUCCESS"; return CUDA_SUCCESS; }
API cuGetErrorString(CUresult r, const char **s) { *s = r ? "fake driver error" : "no error"; return CUDA_SUCCESS; }

/* cuBLASLt reaches the driver through the CUDA runtime, which this stand-in does not provide: with the fake
 * library LD_PRELOADed, these two take the place of cuBLASLt's (lg_ctx_init creates a handle; attention never
 * uses it). */
extern "C" __attribute__((visibility("default"))) int cublasLtCreate(void **h) { *h = (void *)0x20; return 0; }
extern "C" __attribute__((visibility("default"))) int cublasLtDestroy(void *) { return 0; }
/* NVRTC looks the driver up by its soname and asks for export tables: there are none here. */
API cuGetExportTable(const void **table, const CUuuid *) { *table = nullptr; return CUDA_ERROR_NOT_SUPPORTED; }
API cuGetProcAddress_v2(const char *, void **fn, int, cuuint64_t, CUdriverProcAddressQueryResult *r)
{
    *fn = nullptr;
    if (r)
        *r = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    return CUDA_ERROR_NOT_FOUND;
}
