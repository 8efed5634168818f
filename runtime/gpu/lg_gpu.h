/* lg_gpu.h (internal): the CUDA driver API as the library calls it, and the status mapping of its errors.
 *
 * libloragen does not link libcuda (cudrv.c loads it at run time). Every driver call in the project goes to
 * an lg_-prefixed forwarder with cuda.h's own prototype: the macros below rename the calls, so call sites read
 * like plain driver code, while the library defines no cu* symbol that could interpose on the real driver
 * for NCCL, the CUDA runtime or torch in the same process. Include this header instead of <cuda.h> in any
 * file that calls the driver. */
#ifndef LG_GPU_H
#define LG_GPU_H

#include "lg_base.h"

#include <cuda.h>

#define LG_CU(name, params, args) CUresult CUDAAPI lg_##name params;
#include "cu_syms.h"
#undef LG_CU
CUresult CUDAAPI lg_cuGetErrorName(CUresult error, const char **str);
CUresult CUDAAPI lg_cuGetErrorString(CUresult error, const char **str);

#define cuInit lg_cuInit
#define cuDriverGetVersion lg_cuDriverGetVersion
#define cuDeviceGetCount lg_cuDeviceGetCount
#define cuDeviceGet lg_cuDeviceGet
#define cuDeviceGetAttribute lg_cuDeviceGetAttribute
#define cuDeviceGetName lg_cuDeviceGetName
#define cuDevicePrimaryCtxRetain lg_cuDevicePrimaryCtxRetain
#define cuDevicePrimaryCtxRelease_v2 lg_cuDevicePrimaryCtxRelease_v2
#define cuCtxSetCurrent lg_cuCtxSetCurrent
#define cuCtxGetCurrent lg_cuCtxGetCurrent
#define cuCtxGetDevice lg_cuCtxGetDevice
#define cuCtxPushCurrent_v2 lg_cuCtxPushCurrent_v2
#define cuCtxPopCurrent_v2 lg_cuCtxPopCurrent_v2
#define cuCtxSynchronize lg_cuCtxSynchronize
#define cuModuleLoadData lg_cuModuleLoadData
#define cuModuleUnload lg_cuModuleUnload
#define cuModuleGetFunction lg_cuModuleGetFunction
#define cuModuleGetGlobal_v2 lg_cuModuleGetGlobal_v2
#define cuFuncGetModule lg_cuFuncGetModule
#define cuFuncSetAttribute lg_cuFuncSetAttribute
#define cuFuncGetAttribute lg_cuFuncGetAttribute
#define cuOccupancyMaxActiveBlocksPerMultiprocessor lg_cuOccupancyMaxActiveBlocksPerMultiprocessor
#define cuLaunchKernel lg_cuLaunchKernel
#define cuMemAlloc_v2 lg_cuMemAlloc_v2
#define cuMemFree_v2 lg_cuMemFree_v2
#define cuMemGetInfo_v2 lg_cuMemGetInfo_v2
#define cuMemcpyHtoD_v2 lg_cuMemcpyHtoD_v2
#define cuMemcpyDtoH_v2 lg_cuMemcpyDtoH_v2
#define cuMemcpyDtoD_v2 lg_cuMemcpyDtoD_v2
#define cuMemcpyDtoDAsync_v2 lg_cuMemcpyDtoDAsync_v2
#define cuMemcpy2D_v2 lg_cuMemcpy2D_v2
#define cuMemsetD8_v2 lg_cuMemsetD8_v2
#define cuMemsetD16_v2 lg_cuMemsetD16_v2
#define cuMemsetD32_v2 lg_cuMemsetD32_v2
#define cuMemsetD32Async lg_cuMemsetD32Async
#define cuStreamCreate lg_cuStreamCreate
#define cuStreamDestroy_v2 lg_cuStreamDestroy_v2
#define cuStreamSynchronize lg_cuStreamSynchronize
#define cuStreamQuery lg_cuStreamQuery
#define cuEventCreate lg_cuEventCreate
#define cuEventDestroy_v2 lg_cuEventDestroy_v2
#define cuEventRecord lg_cuEventRecord
#define cuEventSynchronize lg_cuEventSynchronize
#define cuEventElapsedTime_v2 lg_cuEventElapsedTime_v2
#define cuMemAllocHost_v2 lg_cuMemAllocHost_v2
#define cuMemFreeHost lg_cuMemFreeHost
#define cuMemcpyHtoDAsync_v2 lg_cuMemcpyHtoDAsync_v2
#define cuGetErrorName lg_cuGetErrorName
#define cuGetErrorString lg_cuGetErrorString
#define cuMemcpy2DAsync_v2 lg_cuMemcpy2DAsync_v2
#define cuMemsetD8Async lg_cuMemsetD8Async
#define cuMemcpyDtoHAsync_v2 lg_cuMemcpyDtoHAsync_v2

/* Maps a CUresult to LG_ERR_CUDA (or LG_ERR_OOM) with the call named; LG_OK on success. */
enum lg_status lg_cu_check(CUresult r, const char *what);

#endif
