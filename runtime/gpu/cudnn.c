/* cudnn.c: cuDNN 9 loaded at run time (lg_cudnn.h). Like the driver, the library is dlopen'ed on first use
 * and never linked, so no binary needs it to start; the attention backend that uses it (runtime/ops/
 * attention_cudnn.c) reports LG_ERR_UNSUPPORTED where it is absent. */
#include "lg_cudnn.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static struct lg_cudnn_api api;
static const struct lg_cudnn_api *loaded;
static char why[256] = "cuDNN not loaded yet";
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void *open_lib(void)
{
    /* the system path first (where a GPU machine keeps its cuDNN), then the toolkit's own copy */
    static const char *names[] = {"libcudnn.so.9", "/usr/local/cuda/lib64/libcudnn.so.9", "libcudnn.so", NULL};
    for (const char **n = names; *n; n++) {
        void *h = dlopen(*n, RTLD_NOW | RTLD_LOCAL);
        if (h)
            return h;
    }
    const char *e = dlerror();
    snprintf(why, sizeof why, "libcudnn.so.9 cannot be loaded (%s)", e ? e : "not found");
    return NULL;
}

static void load(void)
{
    void *h = open_lib();
    if (!h)
        return;
    struct {
        void **slot;
        const char *name;
    } syms[] = {
        {(void **)&api.GetVersion, "cudnnGetVersion"},
        {(void **)&api.GetErrorString, "cudnnGetErrorString"},
        {(void **)&api.Create, "cudnnCreate"},
        {(void **)&api.Destroy, "cudnnDestroy"},
        {(void **)&api.SetStream, "cudnnSetStream"},
        {(void **)&api.BackendCreateDescriptor, "cudnnBackendCreateDescriptor"},
        {(void **)&api.BackendDestroyDescriptor, "cudnnBackendDestroyDescriptor"},
        {(void **)&api.BackendFinalize, "cudnnBackendFinalize"},
        {(void **)&api.BackendSetAttribute, "cudnnBackendSetAttribute"},
        {(void **)&api.BackendGetAttribute, "cudnnBackendGetAttribute"},
        {(void **)&api.BackendExecute, "cudnnBackendExecute"},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++)
        if (!(*syms[i].slot = dlsym(h, syms[i].name))) {
            snprintf(why, sizeof why, "libcudnn has no %s", syms[i].name);
            return;
        }
    /* optional: older 9.x builds may lack it; the messages then carry the status string alone */
    *(void **)&api.GetLastErrorString = dlsym(h, "cudnnGetLastErrorString");
    size_t v = api.GetVersion();
    if (v < 90000 || v >= 100000) {
        snprintf(why, sizeof why, "cuDNN %zu is not a 9.x release", v);
        return;
    }
    why[0] = '\0';
    loaded = &api;
}

const struct lg_cudnn_api *lg_cudnn(void)
{
    pthread_once(&once, load);
    return loaded;
}

const char *lg_cudnn_error(void)
{
    pthread_once(&once, load);
    return why;
}

void lg_cudnn_last_error(char *buf, size_t size)
{
    if (!size)
        return;
    buf[0] = '\0';
    if (loaded && api.GetLastErrorString)
        api.GetLastErrorString(buf, size);
    buf[size - 1] = '\0';
}

enum lg_status lg_cudnn_check(cudnnStatus_t s, const char *what)
{
    if (s == CUDNN_STATUS_SUCCESS)
        return LG_OK;
    const char *name = loaded && api.GetErrorString ? api.GetErrorString(s) : "?";
    char last[512];
    lg_cudnn_last_error(last, sizeof last);
    /* CUDNN_STATUS_NOT_SUPPORTED and its sub-codes (3000..3999): a valid request this cuDNN cannot serve */
    const enum lg_status st = (int)s / 1000 == 3 ? LG_ERR_UNSUPPORTED : LG_ERR_CUDA;
    return lg_fail(st, "%s: cuDNN status %d (%s)%s%s", what, (int)s, name ? name : "?", last[0] ? ": " : "", last);
}
