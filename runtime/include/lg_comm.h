/* lg_comm.h: communication between the processes of one training run: one process per rank (per GPU), ranks
 * 0 .. world-1, bootstrapped from the torchrun/Slurm variables RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
 * MASTER_PORT.
 *
 * Two transports, one interface:
 *   LG_COMM_TCP   a full mesh of TCP sockets. Buffers are host memory. What the CPU backend and CI use, and
 *                 what every communicator keeps beside NCCL for the bootstrap, sizes and host scalars.
 *   LG_COMM_NCCL  NCCL, loaded at run time (libnccl.so.2, like the CUDA driver: a machine without it still runs
 *                 and gets a clear error only when it asks for NCCL). Buffers are device memory of the CUDA
 *                 context current at lg_comm_init (a CUdeviceptr passed as a pointer). The unique id goes
 *                 from rank 0 to the others over the TCP mesh; NVLink multicast is always off
 *                 (NCCL_NVLS_ENABLE=0); the communicator is non-blocking, so every operation is waited for
 *                 with the timeout and a stuck or failed one aborts the communicator.
 *
 * Failure: every call waits at most timeout_s (LORAGEN_COMM_TIMEOUT seconds, default 600). A peer that exits
 * closes its sockets and its peers' next call fails at once naming that rank; one that hangs fails the call
 * after the timeout. After a failure the communicator is aborted: every later call fails, and the other ranks'
 * calls fail too (their sockets close). Nothing here exits the process.
 *
 * Collectives are deterministic: the sum all-reduce adds the ranks' buffers in rank order on rank 0 and sends
 * rank 0's bytes to all (TCP), so every rank holds bit-identical results; NCCL's ring sum is identical on
 * every rank as well.
 *
 * Ownership: lg_comm_t owns its sockets, its NCCL communicator and its stream; lg_comm_free closes them.
 *
 *   struct lg_comm_params p;
 *   CHECK(lg_comm_params_from_env(&p));      // world 1 when WORLD_SIZE is unset
 *   lg_comm_t *c;
 *   CHECK(lg_comm_init(&p, &c));
 *   float g[256];  ...                         // this rank's gradient
 *   CHECK(lg_comm_allreduce_f32(c, g, 256));   // now the sum over all ranks, on every rank
 *   if (lg_comm_rank(c) == 0) CHECK(lg_comm_send(c, 1, "hi", 3));
 *   else if (lg_comm_rank(c) == 1) { char b[8]; size_t n; CHECK(lg_comm_recv(c, 0, b, sizeof b, &n)); }
 *   lg_comm_free(c);
 */
#ifndef LG_COMM_H
#define LG_COMM_H

#include "lg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lg_comm lg_comm_t;

enum lg_comm_transport {
    LG_COMM_TCP = 0,
    LG_COMM_NCCL,
};

#define LG_COMM_MAX_WORLD 1024

struct lg_comm_params {
    int rank, world, local_rank;
    char master_addr[256]; /* a host name or IPv4 address; "" = 127.0.0.1 */
    int master_port;       /* rank 0 listens here */
    enum lg_comm_transport transport;
    double timeout_s;      /* <= 0: LORAGEN_COMM_TIMEOUT or 600 */
};

/* RANK, WORLD_SIZE, LOCAL_RANK (default: RANK), MASTER_ADDR (default 127.0.0.1), MASTER_PORT (needed when
 * WORLD_SIZE > 1) and LORAGEN_COMM_TIMEOUT. Without WORLD_SIZE: rank 0 of a world of 1. A malformed or
 * inconsistent variable is LG_ERR_INVALID naming it. transport is LG_COMM_TCP; the caller picks NCCL. */
LG_API enum lg_status lg_comm_params_from_env(struct lg_comm_params *p);
/* 1 when libnccl.so.2 can be loaded here. */
LG_API int lg_comm_nccl_available(void);

/* Connects every rank with every other (collective: every rank of the world calls it). A world of 1 opens
 * no socket. */
LG_API enum lg_status lg_comm_init(const struct lg_comm_params *p, lg_comm_t **out);
LG_API void lg_comm_free(lg_comm_t *c);

LG_API int lg_comm_rank(const lg_comm_t *c);
LG_API int lg_comm_world(const lg_comm_t *c);
LG_API int lg_comm_local_rank(const lg_comm_t *c);
LG_API enum lg_comm_transport lg_comm_get_transport(const lg_comm_t *c);
LG_API const char *lg_comm_transport_name(enum lg_comm_transport t);

/* Point to point, in the transport's memory. A message carries its size: recv accepts any size up to cap and
 * says what came in *got (a larger one is an error naming both sizes). Sends to one peer arrive in order. */
LG_API enum lg_status lg_comm_send(lg_comm_t *c, int peer, const void *buf, size_t bytes);
LG_API enum lg_status lg_comm_recv(lg_comm_t *c, int peer, void *buf, size_t cap, size_t *got);

/* The same for host memory over the TCP mesh, whatever the transport (the pipeline's activations today). */
LG_API enum lg_status lg_comm_send_host(lg_comm_t *c, int peer, const void *buf, size_t bytes);
LG_API enum lg_status lg_comm_recv_host(lg_comm_t *c, int peer, void *buf, size_t cap, size_t *got);

/* In place: buf[0..n) becomes the sum over all ranks (transport memory). */
LG_API enum lg_status lg_comm_allreduce_f32(lg_comm_t *c, float *buf, size_t n);
/* The same for host doubles over the TCP mesh, whatever the transport (losses, counters). */
LG_API enum lg_status lg_comm_allreduce_host_f64(lg_comm_t *c, double *buf, size_t n);
/* Host fp32 sum within a group of ranks (ranks[0..n), rising, this rank among them) over the TCP mesh: every
 * member calls it, the others do not; the first member adds in the listed order. Groups that share no rank run
 * concurrently (data-parallel groups of pipeline stages). */
LG_API enum lg_status lg_comm_allreduce_group_host_f32(lg_comm_t *c, const int *ranks, int n, float *buf,
                                                       size_t count);
/* Broadcast of host bytes from `root` over the TCP mesh. */
LG_API enum lg_status lg_comm_bcast_host(lg_comm_t *c, int root, void *buf, size_t bytes);
LG_API enum lg_status lg_comm_barrier(lg_comm_t *c);

/* Tears the connections down so every peer's pending and next call fails; later calls here fail. Safe to call
 * more than once, and from an error path. */
LG_API void lg_comm_abort(lg_comm_t *c);

#ifdef __cplusplus
}
#endif
#endif
