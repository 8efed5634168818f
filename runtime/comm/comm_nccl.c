/* comm_nccl.c: the NCCL transport, loaded at run time from libnccl.so.2 (the CUDA toolkit's), so that the
 * library starts on machines without it; only a communicator that asks for NCCL fails there, saying so.
 *
 * Bootstrap: rank 0 makes the unique id and broadcasts it over the TCP mesh; NVLink multicast is switched off
 * (NCCL_NVLS_ENABLE=0) before NCCL reads its environment. The communicator is non-blocking (config.blocking =
 * 0) and runs on a stream of its own: every operation is followed by a wait that polls the stream, NCCL's
 * asynchronous error and the TCP mesh (a peer that exited closes its sockets), and a failure or the timeout
 * aborts the communicator (ncclCommAbort), so no rank hangs in a collective whose peer is gone. Buffers are
 * device memory of the CUDA context current at init; the caller orders its own stream before each call (the
 * trainer synchronises the backend first). */
#include "comm_internal.h"
#include "lg_gpu.h"

#include <dlfcn.h>
#include <nccl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct nccl_api {
    ncclResult_t (*get_unique_id)(ncclUniqueId *);
    ncclResult_t (*init_rank_config)(ncclComm_t *, int, ncclUniqueId, int, ncclConfig_t *);
    ncclResult_t (*all_reduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t);
    ncclResult_t (*send)(const void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*recv)(void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*async_error)(ncclComm_t, ncclResult_t *);
    ncclResult_t (*abort)(ncclComm_t);
    ncclResult_t (*destroy)(ncclComm_t);
    ncclResult_t (*finalize)(ncclComm_t);
    const char *(*error_string)(ncclResult_t);
};

struct lg_comm_nccl {
    ncclComm_t comm;
    CUstream stream;
};

static struct nccl_api api;
static int api_ok;
static char api_why[256];
static pthread_once_t api_once = PTHREAD_ONCE_INIT;

static void load_api(void)
{
    const char *names[] = {"libnccl.so.2", "libnccl.so", NULL};
    void *h = NULL;
    for (const char **n = names; *n && !h; n++)
        h = dlopen(*n, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(api_why, sizeof api_why, "libnccl.so.2 not found (%s)", dlerror());
        return;
    }
#define SYM(field, name)                                                                                       \
    if (!(*(void **)&api.field = dlsym(h, name))) {                                                            \
        snprintf(api_why, sizeof api_why, "libnccl.so.2 has no %s (NCCL 2.14 or later is needed)", name);       \
        return;                                                                                                \
    }
    SYM(get_unique_id, "ncclGetUniqueId")
    SYM(init_rank_config, "ncclCommInitRankConfig")
    SYM(all_reduce, "ncclAllReduce")
    SYM(send, "ncclSend")
    SYM(recv, "ncclRecv")
    SYM(async_error, "ncclCommGetAsyncError")
    SYM(abort, "ncclCommAbort")
    SYM(destroy, "ncclCommDestroy")
    SYM(finalize, "ncclCommFinalize")
    SYM(error_string, "ncclGetErrorString")
#undef SYM
    api_ok = 1;
}

int lg_comm_nccl_available(void)
{
    pthread_once(&api_once, load_api);
    return api_ok;
}

static enum lg_status nccl_fail(lg_comm_t *c, ncclResult_t r, const char *what)
{
    enum lg_status s = lg_fail(LG_ERR_IO, "comm: rank %d: NCCL %s: %s", c->rank, what,
                               api.error_string ? api.error_string(r) : "?");
    lg_comm_abort(c);
    return s;
}

/* Waits until NCCL has no operation in progress and the stream is idle; a failure, a dead peer or the timeout
 * aborts the communicator. stream 0: the communicator alone (init). */
static enum lg_status wait_done(lg_comm_t *c, const char *what, int stream)
{
    struct lg_comm_nccl *n = c->nccl;
    double deadline = lg_comm_now() + c->timeout_s;
    for (unsigned spin = 0;; spin++) {
        ncclResult_t ar = ncclSuccess;
        ncclResult_t r = api.async_error(n->comm, &ar);
        if (r != ncclSuccess)
            return nccl_fail(c, r, what);
        if (ar != ncclSuccess && ar != ncclInProgress)
            return nccl_fail(c, ar, what);
        if (ar == ncclSuccess) {
            CUresult q = stream ? cuStreamQuery(n->stream) : CUDA_SUCCESS;
            if (q == CUDA_SUCCESS)
                return LG_OK;
            if (q != CUDA_ERROR_NOT_READY) {
                enum lg_status s = lg_cu_check(q, "comm: NCCL stream");
                lg_comm_abort(c);
                return s;
            }
        }
        if ((spin & 255) == 255) {
            int dead = c->world > 1 ? lg_comm_tcp_dead_peer(c) : -1;
            if (dead >= 0) {
                enum lg_status s = lg_fail(LG_ERR_IO, "comm: rank %d: NCCL %s: rank %d closed its connection (it "
                                           "exited or failed)", c->rank, what, dead);
                lg_comm_abort(c);
                return s;
            }
            if (lg_comm_now() > deadline) {
                enum lg_status s = lg_fail(LG_ERR_IO, "comm: rank %d: NCCL %s did not finish within %.0f s (a peer "
                                           "is stuck or gone; LORAGEN_COMM_TIMEOUT sets the limit)", c->rank, what,
                                           c->timeout_s);
                lg_comm_abort(c);
                return s;
            }
        }
        struct timespec ts = {0, 50 * 1000};
        nanosleep(&ts, NULL);
    }
}

enum lg_status lg_comm_nccl_init(lg_comm_t *c)
{
    if (!lg_comm_nccl_available())
        return lg_fail(LG_ERR_UNSUPPORTED, "comm: rank %d: the NCCL transport: %s", c->rank, api_why);
    CUcontext ctx = NULL;
    if (cuCtxGetCurrent(&ctx) != CUDA_SUCCESS || !ctx)
        return lg_fail(LG_ERR_INVALID, "comm: rank %d: the NCCL transport needs a current CUDA context (start the "
                       "CUDA backend first)", c->rank);
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t r;
    if (c->rank == 0 && (r = api.get_unique_id(&id)) != ncclSuccess)
        return nccl_fail(c, r, "ncclGetUniqueId");
    enum lg_status s = lg_comm_tcp_bcast(c, 0, &id, sizeof id);
    if (s != LG_OK)
        return s;
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    struct lg_comm_nccl *n = calloc(1, sizeof *n);
    if (!n)
        return lg_fail(LG_ERR_OOM, "comm: out of memory");
    c->nccl = n;
    if ((s = lg_cu_check(cuStreamCreate(&n->stream, CU_STREAM_NON_BLOCKING), "comm: NCCL stream")) != LG_OK)
        return s;
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    r = api.init_rank_config(&n->comm, c->world, id, c->rank, &cfg);
    if (r != ncclSuccess && r != ncclInProgress)
        return nccl_fail(c, r, "ncclCommInitRankConfig");
    return wait_done(c, "ncclCommInitRankConfig", 0);
}

void lg_comm_nccl_free(lg_comm_t *c, int abort)
{
    struct lg_comm_nccl *n = c->nccl;
    if (!n)
        return;
    c->nccl = NULL;
    if (n->comm) {
        ncclResult_t r = abort ? ncclInternalError : api.finalize(n->comm), ar = r;
        double deadline = lg_comm_now() + (c->timeout_s < 30 ? c->timeout_s : 30);
        while (ar == ncclInProgress) { /* a non-blocking finalize completes in the background */
            struct timespec ts = {0, 100 * 1000};
            nanosleep(&ts, NULL);
            if (api.async_error(n->comm, &ar) != ncclSuccess || lg_comm_now() > deadline)
                ar = ncclInternalError;
        }
        if (r == ncclInProgress && ar == ncclSuccess)
            r = ncclSuccess;
        if (r == ncclSuccess)
            api.destroy(n->comm);
        else
            api.abort(n->comm);
    }
    if (n->stream)
        cuStreamDestroy_v2(n->stream);
    free(n);
}

static enum lg_status ready(lg_comm_t *c)
{
    if (!c->nccl)
        return lg_fail(LG_ERR_IO, "comm: rank %d: the NCCL communicator is gone (aborted after a failure)", c->rank);
    return LG_OK;
}

enum lg_status lg_comm_nccl_allreduce(lg_comm_t *c, float *buf, size_t n)
{
    enum lg_status s = ready(c);
    if (s != LG_OK)
        return s;
    ncclResult_t r = api.all_reduce(buf, buf, n, ncclFloat32, ncclSum, c->nccl->comm, (cudaStream_t)c->nccl->stream);
    if (r != ncclSuccess && r != ncclInProgress)
        return nccl_fail(c, r, "ncclAllReduce");
    return wait_done(c, "all-reduce", 1);
}

enum lg_status lg_comm_nccl_send(lg_comm_t *c, int peer, const void *buf, size_t bytes)
{
    enum lg_status s = ready(c);
    if (s != LG_OK)
        return s;
    ncclResult_t r = api.send(buf, bytes, ncclUint8, peer, c->nccl->comm, (cudaStream_t)c->nccl->stream);
    if (r != ncclSuccess && r != ncclInProgress)
        return nccl_fail(c, r, "ncclSend");
    return wait_done(c, "send", 1);
}

enum lg_status lg_comm_nccl_recv(lg_comm_t *c, int peer, void *buf, size_t bytes)
{
    enum lg_status s = ready(c);
    if (s != LG_OK)
        return s;
    ncclResult_t r = api.recv(buf, bytes, ncclUint8, peer, c->nccl->comm, (cudaStream_t)c->nccl->stream);
    if (r != ncclSuccess && r != ncclInProgress)
        return nccl_fail(c, r, "ncclRecv");
    return wait_done(c, "recv", 1);
}
