/* comm.c: the communicator's public calls: parameters from the torchrun/Slurm environment, init and free,
 * and each operation handed to the transport that carries it (comm_tcp.c for host memory, comm_nccl.c for
 * device memory). */
#include "comm_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double lg_comm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* An integer variable: *v unchanged when unset; an error naming it when malformed or outside [lo, hi]. */
static enum lg_status env_int(const char *name, int lo, int hi, int *v, int *set)
{
    const char *s = getenv(name);
    if (set)
        *set = s && *s;
    if (!s || !*s)
        return LG_OK;
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || *end || x < lo || x > hi)
        return lg_fail(LG_ERR_INVALID, "environment: %s=%s: expected an integer in %d..%d", name, s, lo, hi);
    *v = (int)x;
    return LG_OK;
}

enum lg_status lg_comm_params_from_env(struct lg_comm_params *p)
{
    if (!p)
        return lg_fail(LG_ERR_INVALID, "lg_comm_params_from_env: null argument");
    memset(p, 0, sizeof *p);
    p->world = 1;
    int has_world = 0, has_rank = 0, has_local = 0, has_port = 0;
    enum lg_status s = env_int("WORLD_SIZE", 1, LG_COMM_MAX_WORLD, &p->world, &has_world);
    if (s == LG_OK)
        s = env_int("RANK", 0, LG_COMM_MAX_WORLD - 1, &p->rank, &has_rank);
    if (s == LG_OK)
        s = env_int("LOCAL_RANK", 0, LG_COMM_MAX_WORLD - 1, &p->local_rank, &has_local);
    if (s == LG_OK)
        s = env_int("MASTER_PORT", 1, 65535, &p->master_port, &has_port);
    if (s != LG_OK)
        return s;
    if (p->rank >= p->world)
        return lg_fail(LG_ERR_INVALID, "environment: RANK=%d but WORLD_SIZE=%d: a rank is 0..WORLD_SIZE-1", p->rank,
                       p->world);
    if (p->world > 1 && !has_rank)
        return lg_fail(LG_ERR_INVALID, "environment: WORLD_SIZE=%d but RANK is not set", p->world);
    if (p->world > 1 && !has_port)
        return lg_fail(LG_ERR_INVALID, "environment: WORLD_SIZE=%d but MASTER_PORT is not set (the port rank 0 "
                       "listens on)", p->world);
    if (!has_local)
        p->local_rank = p->rank;
    const char *addr = getenv("MASTER_ADDR");
    snprintf(p->master_addr, sizeof p->master_addr, "%s", addr && *addr ? addr : "127.0.0.1");
    const char *t = getenv("LORAGEN_COMM_TIMEOUT");
    if (t && *t) {
        char *end;
        double x = strtod(t, &end);
        if (*end || !(x > 0) || x > 1e7)
            return lg_fail(LG_ERR_INVALID, "environment: LORAGEN_COMM_TIMEOUT=%s: expected seconds > 0", t);
        p->timeout_s = x;
    }
    p->transport = LG_COMM_TCP;
    return LG_OK;
}

const char *lg_comm_transport_name(enum lg_comm_transport t) { return t == LG_COMM_NCCL ? "nccl" : "tcp"; }

enum lg_status lg_comm_init(const struct lg_comm_params *p, lg_comm_t **out)
{
    if (!p || !out)
        return lg_fail(LG_ERR_INVALID, "lg_comm_init: null argument");
    *out = NULL;
    if (p->world < 1 || p->world > LG_COMM_MAX_WORLD || p->rank < 0 || p->rank >= p->world || p->local_rank < 0)
        return lg_fail(LG_ERR_INVALID, "lg_comm_init: rank %d of a world of %d (local rank %d)", p->rank, p->world,
                       p->local_rank);
    if (p->world > 1 && (p->master_port < 1 || p->master_port > 65535))
        return lg_fail(LG_ERR_INVALID, "lg_comm_init: master port %d", p->master_port);
    if (p->transport != LG_COMM_TCP && p->transport != LG_COMM_NCCL)
        return lg_fail(LG_ERR_INVALID, "lg_comm_init: unknown transport %d", (int)p->transport);
    lg_comm_t *c = calloc(1, sizeof *c);
    if (!c || !(c->peer = calloc((size_t)p->world, sizeof *c->peer))) {
        free(c);
        return lg_fail(LG_ERR_OOM, "comm: out of memory");
    }
    c->rank = p->rank;
    c->world = p->world;
    c->local_rank = p->local_rank;
    c->transport = p->transport;
    c->timeout_s = p->timeout_s > 0 ? p->timeout_s : 600;
    c->listen_fd = -1;
    for (int i = 0; i < c->world; i++)
        c->peer[i].fd = -1;
    enum lg_status s = LG_OK;
    if (c->world > 1)
        s = lg_comm_tcp_connect(c, p->master_addr[0] ? p->master_addr : "127.0.0.1", p->master_port);
    if (s == LG_OK && c->transport == LG_COMM_NCCL)
        s = lg_comm_nccl_init(c);
    if (s != LG_OK) {
        lg_comm_free(c);
        return s;
    }
    *out = c;
    return LG_OK;
}

void lg_comm_free(lg_comm_t *c)
{
    if (!c)
        return;
    lg_comm_nccl_free(c, c->aborted);
    lg_comm_tcp_close(c);
    for (int i = 0; i < c->world; i++) {
        free(c->peer[i].in);
        while (c->peer[i].held) {
            struct lg_comm_msg *m = c->peer[i].held;
            c->peer[i].held = m->next;
            free(m);
        }
    }
    free(c->peer);
    free(c);
}

void lg_comm_abort(lg_comm_t *c)
{
    if (!c || c->aborted)
        return;
    c->aborted = 1;
    lg_comm_nccl_free(c, 1);
    lg_comm_tcp_close(c);
}

int lg_comm_rank(const lg_comm_t *c) { return c ? c->rank : 0; }
int lg_comm_world(const lg_comm_t *c) { return c ? c->world : 1; }
int lg_comm_local_rank(const lg_comm_t *c) { return c ? c->local_rank : 0; }
enum lg_comm_transport lg_comm_get_transport(const lg_comm_t *c) { return c ? c->transport : LG_COMM_TCP; }

static enum lg_status usable(const lg_comm_t *c, const char *what)
{
    if (!c)
        return lg_fail(LG_ERR_INVALID, "%s: null communicator", what);
    if (c->aborted)
        return lg_fail(LG_ERR_IO, "%s: rank %d: the communicator was aborted after an earlier failure", what,
                       c->rank);
    return LG_OK;
}

static enum lg_status check_peer(const lg_comm_t *c, int peer, const char *what)
{
    enum lg_status s = usable(c, what);
    if (s == LG_OK && (peer < 0 || peer >= c->world || peer == c->rank))
        s = lg_fail(LG_ERR_INVALID, "%s: rank %d: peer %d is not another rank of 0..%d", what, c->rank, peer,
                    c->world - 1);
    return s;
}

enum lg_status lg_comm_send(lg_comm_t *c, int peer, const void *buf, size_t bytes)
{
    enum lg_status s = check_peer(c, peer, "lg_comm_send");
    if (s != LG_OK)
        return s;
    if (bytes && !buf)
        return lg_fail(LG_ERR_INVALID, "lg_comm_send: null buffer");
    if (c->transport == LG_COMM_NCCL) {
        uint64_t n = bytes;
        s = lg_comm_tcp_send(c, peer, LG_COMM_K_SIZE, &n, sizeof n);
        return s == LG_OK && bytes ? lg_comm_nccl_send(c, peer, buf, bytes) : s;
    }
    return lg_comm_tcp_send(c, peer, LG_COMM_K_P2P, buf, bytes);
}

enum lg_status lg_comm_recv(lg_comm_t *c, int peer, void *buf, size_t cap, size_t *got)
{
    enum lg_status s = check_peer(c, peer, "lg_comm_recv");
    if (s != LG_OK)
        return s;
    if (cap && !buf)
        return lg_fail(LG_ERR_INVALID, "lg_comm_recv: null buffer");
    size_t n = 0;
    if (c->transport == LG_COMM_NCCL) {
        uint64_t sz = 0;
        size_t k;
        s = lg_comm_tcp_recv(c, peer, LG_COMM_K_SIZE, &sz, sizeof sz, &k);
        if (s == LG_OK && sz > cap) {
            s = lg_fail(LG_ERR_IO, "comm: rank %d: rank %d sent a message of %llu bytes where at most %zu fit",
                        c->rank, peer, (unsigned long long)sz, cap);
            lg_comm_abort(c);
        }
        if (s == LG_OK && sz)
            s = lg_comm_nccl_recv(c, peer, buf, (size_t)sz);
        n = (size_t)sz;
    } else {
        s = lg_comm_tcp_recv(c, peer, LG_COMM_K_P2P, buf, cap, &n);
    }
    if (got)
        *got = s == LG_OK ? n : 0;
    return s;
}

enum lg_status lg_comm_send_host(lg_comm_t *c, int peer, const void *buf, size_t bytes)
{
    enum lg_status s = check_peer(c, peer, "lg_comm_send_host");
    if (s == LG_OK && bytes && !buf)
        s = lg_fail(LG_ERR_INVALID, "lg_comm_send_host: null buffer");
    return s == LG_OK ? lg_comm_tcp_send(c, peer, LG_COMM_K_P2P, buf, bytes) : s;
}

enum lg_status lg_comm_recv_host(lg_comm_t *c, int peer, void *buf, size_t cap, size_t *got)
{
    enum lg_status s = check_peer(c, peer, "lg_comm_recv_host");
    if (s == LG_OK && cap && !buf)
        s = lg_fail(LG_ERR_INVALID, "lg_comm_recv_host: null buffer");
    size_t n = 0;
    if (s == LG_OK)
        s = lg_comm_tcp_recv(c, peer, LG_COMM_K_P2P, buf, cap, &n);
    if (got)
        *got = s == LG_OK ? n : 0;
    return s;
}

enum lg_status lg_comm_allreduce_f32(lg_comm_t *c, float *buf, size_t n)
{
    enum lg_status s = usable(c, "lg_comm_allreduce_f32");
    if (s != LG_OK || c->world == 1 || n == 0)
        return s;
    if (!buf)
        return lg_fail(LG_ERR_INVALID, "lg_comm_allreduce_f32: null buffer");
    return c->transport == LG_COMM_NCCL ? lg_comm_nccl_allreduce(c, buf, n) : lg_comm_tcp_allreduce(c, buf, n, 4);
}

enum lg_status lg_comm_allreduce_group_host_f32(lg_comm_t *c, const int *ranks, int n, float *buf, size_t count)
{
    enum lg_status s = usable(c, "lg_comm_allreduce_group_host_f32");
    if (s != LG_OK)
        return s;
    if (!ranks || n < 1 || n > c->world || (count && !buf))
        return lg_fail(LG_ERR_INVALID, "lg_comm_allreduce_group_host_f32: %d ranks, buffer %p", n, (void *)buf);
    int in = 0;
    for (int k = 0; k < n; k++) {
        if (ranks[k] < 0 || ranks[k] >= c->world || (k && ranks[k] <= ranks[k - 1]))
            return lg_fail(LG_ERR_INVALID, "lg_comm_allreduce_group_host_f32: the group's ranks must rise within "
                           "0..%d (rank %d at %d)", c->world - 1, ranks[k], k);
        in |= ranks[k] == c->rank;
    }
    if (!in)
        return lg_fail(LG_ERR_INVALID, "lg_comm_allreduce_group_host_f32: rank %d is not in the group", c->rank);
    return n == 1 || count == 0 ? LG_OK : lg_comm_tcp_group_allreduce(c, ranks, n, buf, count);
}

enum lg_status lg_comm_allreduce_host_f64(lg_comm_t *c, double *buf, size_t n)
{
    enum lg_status s = usable(c, "lg_comm_allreduce_host_f64");
    if (s != LG_OK || c->world == 1 || n == 0)
        return s;
    if (!buf)
        return lg_fail(LG_ERR_INVALID, "lg_comm_allreduce_host_f64: null buffer");
    return lg_comm_tcp_allreduce(c, buf, n, 8);
}

enum lg_status lg_comm_bcast_host(lg_comm_t *c, int root, void *buf, size_t bytes)
{
    enum lg_status s = usable(c, "lg_comm_bcast_host");
    if (s != LG_OK || c->world == 1)
        return s;
    if (root < 0 || root >= c->world || (bytes && !buf))
        return lg_fail(LG_ERR_INVALID, "lg_comm_bcast_host: root %d of %d, buffer %p", root, c->world, buf);
    return lg_comm_tcp_bcast(c, root, buf, bytes);
}

enum lg_status lg_comm_barrier(lg_comm_t *c)
{
    double one = 1;
    enum lg_status s = lg_comm_allreduce_host_f64(c, &one, 1);
    if (s == LG_OK && c && one != (double)c->world)
        return lg_fail(LG_ERR_INTERNAL, "lg_comm_barrier: rank %d counted %g ranks of %d", c->rank, one, c->world);
    return s;
}
