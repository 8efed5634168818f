/* lg_cudnn.h (internal, the gpu part's face): cuDNN 9 loaded at run time, like the driver (cudrv.c).
 *
 * Nothing links libcudnn: machines without it (CI, or a GPU machine without the library) run everything but
 * the cuDNN attention backend, which then reports LG_ERR_UNSUPPORTED. lg_cudnn() opens libcudnn.so.9 (the
 * system path, then the CUDA toolkit's lib64) once per process and resolves the entry points below, the
 * handle calls and the backend (graph) API; it returns NULL when the library, a symbol or a 9.x version is
 * missing, with the reason in lg_cudnn_error(). */
#ifndef LG_CUDNN_H
#define LG_CUDNN_H

#include "lg_base.h"

#include <cudnn.h>

struct lg_cudnn_api {
    size_t (*GetVersion)(void);
    const char *(*GetErrorString)(cudnnStatus_t status);
    cudnnStatus_t (*Create)(cudnnHandle_t *handle);
    cudnnStatus_t (*Destroy)(cudnnHandle_t handle);
    cudnnStatus_t (*SetStream)(cudnnHandle_t handle, cudaStream_t stream);
    cudnnStatus_t (*BackendCreateDescriptor)(cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *desc);
    cudnnStatus_t (*BackendDestroyDescriptor)(cudnnBackendDescriptor_t desc);
    cudnnStatus_t (*BackendFinalize)(cudnnBackendDescriptor_t desc);
    cudnnStatus_t (*BackendSetAttribute)(cudnnBackendDescriptor_t desc, cudnnBackendAttributeName_t name,
                                         cudnnBackendAttributeType_t type, int64_t count, const void *values);
    cudnnStatus_t (*BackendGetAttribute)(cudnnBackendDescriptor_t const desc, cudnnBackendAttributeName_t name,
                                         cudnnBackendAttributeType_t type, int64_t requested, int64_t *count,
                                         void *values);
    cudnnStatus_t (*BackendExecute)(cudnnHandle_t handle, cudnnBackendDescriptor_t plan,
                                    cudnnBackendDescriptor_t variant_pack);
    /* cuDNN's own text for its most recent failure on this thread (9.0+; NULL where the library lacks it) */
    void (*GetLastErrorString)(char *message, size_t max_size);
};

/* The API, or NULL when cuDNN 9 cannot be loaded here (lg_cudnn_error() says why). Thread-safe. */
const struct lg_cudnn_api *lg_cudnn(void);
const char *lg_cudnn_error(void);

/* Maps a cuDNN status to LG_OK, or to LG_ERR_UNSUPPORTED (CUDNN_STATUS_NOT_SUPPORTED*: this cuDNN or device
 * cannot serve the request) or LG_ERR_CUDA (anything else) with `what` (the call, the descriptor, the
 * attribute) named, the status number and name (cudnnGetErrorString) and cuDNN's last error message
 * (cudnnGetLastErrorString), so one failed run says exactly what was refused. */
enum lg_status lg_cudnn_check(cudnnStatus_t s, const char *what);
/* cuDNN's last error message (cudnnGetLastErrorString) into buf, "" when there is none. */
void lg_cudnn_last_error(char *buf, size_t size);

#endif
