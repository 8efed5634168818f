/* comm_internal.h: the communicator's state, shared by the files of runtime/comm/ and nothing else:
 *   comm.c       parameters from the environment, init/free, the public calls (dispatch to a transport)
 *   comm_tcp.c   the TCP mesh: bootstrap through rank 0, framed messages, host collectives
 *   comm_nccl.c  NCCL loaded at run time: unique id over the mesh, device collectives and point to point
 */
#ifndef LG_COMM_INTERNAL_H
#define LG_COMM_INTERNAL_H

#include "lg_base.h"
#include "lg_comm.h"

#include <stddef.h>
#include <stdint.h>

/* What a framed message is: a receiver expecting one kind and getting another reports the mismatch (two ranks
 * disagreeing on the order of operations) instead of reading garbage. */
enum lg_comm_kind {
    LG_COMM_K_HELLO = 1,
    LG_COMM_K_TABLE,
    LG_COMM_K_P2P,
    LG_COMM_K_SIZE, /* NCCL point to point: the size of the payload that follows over NCCL */
    LG_COMM_K_REDUCE,
    LG_COMM_K_BCAST,
    LG_COMM_K_GREDUCE, /* an all-reduce within a group of ranks */
};

/* A whole message that came in while the receiver waited for another kind (a pipeline activation arriving
 * during an all-reduce): kept until asked for. Messages of one kind from one peer stay in order. */
struct lg_comm_msg {
    struct lg_comm_msg *next;
    uint32_t kind;
    size_t bytes;
    unsigned char data[];
};

struct lg_comm_peer {
    struct lg_comm_msg *held; /* in arrival order */
    int fd;              /* -1: none (self, or closed) */
    int eof;             /* the peer closed its end (its last bytes may still be in `in`) */
    unsigned char *in;   /* bytes read ahead while sending (so two ranks sending to each other never block) */
    size_t in_off, in_len, in_cap;
};

struct lg_comm_nccl; /* comm_nccl.c */

struct lg_comm {
    int rank, world, local_rank;
    double timeout_s;
    enum lg_comm_transport transport;
    struct lg_comm_peer *peer; /* [world] */
    int listen_fd;
    int aborted;
    struct lg_comm_nccl *nccl;
};

double lg_comm_now(void);

/* comm_tcp.c */
enum lg_status lg_comm_tcp_connect(lg_comm_t *c, const char *addr, int port);
void lg_comm_tcp_close(lg_comm_t *c);
enum lg_status lg_comm_tcp_send(lg_comm_t *c, int peer, enum lg_comm_kind k, const void *buf, size_t bytes);
enum lg_status lg_comm_tcp_recv(lg_comm_t *c, int peer, enum lg_comm_kind k, void *buf, size_t cap, size_t *got);
/* Sum of host buffers of `elem`-byte floats (4 or 8), added on rank 0 in rank order, rank 0's result to all. */
enum lg_status lg_comm_tcp_allreduce(lg_comm_t *c, void *buf, size_t n, size_t elem);
enum lg_status lg_comm_tcp_group_allreduce(lg_comm_t *c, const int *ranks, int n, float *buf, size_t count);
enum lg_status lg_comm_tcp_bcast(lg_comm_t *c, int root, void *buf, size_t bytes);
/* A peer whose connection has closed (read ahead into its inbox meanwhile), or -1: lets a transport that
 * waits elsewhere (NCCL) notice a dead rank without waiting for the timeout. */
int lg_comm_tcp_dead_peer(lg_comm_t *c);

/* comm_nccl.c */
enum lg_status lg_comm_nccl_init(lg_comm_t *c);
void lg_comm_nccl_free(lg_comm_t *c, int abort);
enum lg_status lg_comm_nccl_allreduce(lg_comm_t *c, float *buf, size_t n);
enum lg_status lg_comm_nccl_send(lg_comm_t *c, int peer, const void *buf, size_t bytes);
enum lg_status lg_comm_nccl_recv(lg_comm_t *c, int peer, void *buf, size_t bytes);

#endif
