/* comm_tcp.c: the TCP mesh every communicator has. Bootstrap: rank 0 listens on MASTER_PORT; every other rank
 * opens a listening socket of its own on a free port, connects to rank 0 (retrying until rank 0 is up or the
 * timeout passes) and says who it is; rank 0 sends everyone the table of addresses; then each rank connects
 * to every rank below it and accepts every rank above it. So each pair of ranks shares one socket.
 *
 * Messages are framed (magic, kind, size), so a receiver names a peer that sent something other than what it
 * expected. Every wait is a poll with the communicator's deadline; EOF on a socket is reported as that rank
 * having exited. While a send waits for room, whatever the peer sends is read ahead into the peer's inbox:
 * two ranks sending each other large messages at once never deadlock. */
#include "comm_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x4c47434du /* "LGCM" */

struct frame {
    uint32_t magic, kind;
    uint64_t bytes;
};

struct hello {
    uint32_t magic;
    int32_t rank, world, port;
};

struct table_entry {
    uint32_t ipv4; /* network order */
    int32_t port;
};

/* Records the failure (fmt takes this rank, the peer and a detail), aborts the communicator and returns. */
#define comm_fail(c, fmt, peer, detail) (lg_fail(LG_ERR_IO, fmt, (c)->rank, peer, detail), lg_comm_abort(c), LG_ERR_IO)

static int remaining_ms(double deadline)
{
    double left = deadline - lg_comm_now();
    return left <= 0 ? 0 : left > 1e6 ? 1000000000 : (int)(left * 1000) + 1;
}

/* Reads what the socket has into the peer's inbox. 1: got bytes; 0: EOF; -1: error (errno). */
static int read_ahead(struct lg_comm_peer *p)
{
    if (p->in_off == p->in_len)
        p->in_off = p->in_len = 0;
    if (p->in_cap - p->in_len < 65536) {
        if (p->in_off) {
            memmove(p->in, p->in + p->in_off, p->in_len - p->in_off);
            p->in_len -= p->in_off;
            p->in_off = 0;
        }
        if (p->in_cap - p->in_len < 65536) {
            size_t cap = p->in_cap ? 2 * p->in_cap : 1 << 17;
            unsigned char *n = realloc(p->in, cap);
            if (!n) {
                errno = ENOMEM;
                return -1;
            }
            p->in = n;
            p->in_cap = cap;
        }
    }
    ssize_t r = recv(p->fd, p->in + p->in_len, p->in_cap - p->in_len, MSG_DONTWAIT);
    if (r > 0) {
        p->in_len += (size_t)r;
        return 1;
    }
    if (r == 0)
        return 0;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 1 : -1;
}

/* One wait of a send or a receive: polls every open connection for input (read ahead into its peer's inbox,
 * so that no sender anywhere waits on us while we wait on someone else) and, when sending, `out` for room.
 * A connection at EOF is marked and left alone: a rank that finished may close before the others do; only
 * needing data from it, or sending to it, is an error. Returns 1 when `out` has room, 0 otherwise, -1 on
 * the timeout, -2 on a poll error. */
static int pump(lg_comm_t *c, int out, double deadline)
{
    struct pollfd pf[LG_COMM_MAX_WORLD];
    int map[LG_COMM_MAX_WORLD], n = 0;
    for (int i = 0; i < c->world; i++) {
        struct lg_comm_peer *p = &c->peer[i];
        if (p->fd < 0 || (p->eof && i != out))
            continue;
        pf[n] = (struct pollfd){.fd = p->fd, .events = (short)((p->eof ? 0 : POLLIN) | (i == out ? POLLOUT : 0))};
        map[n++] = i;
    }
    int pr = poll(pf, (nfds_t)n, remaining_ms(deadline));
    if (pr < 0)
        return errno == EINTR ? 0 : -2;
    if (pr == 0)
        return -1;
    int room = 0;
    for (int k = 0; k < n; k++) {
        struct lg_comm_peer *p = &c->peer[map[k]];
        if ((pf[k].revents & (POLLIN | POLLHUP | POLLERR)) && !p->eof) {
            int r = read_ahead(p);
            if (r <= 0)
                p->eof = 1; /* EOF or a reset: what it sent before stays readable in the inbox */
        }
        if (map[k] == out && (pf[k].revents & (POLLOUT | POLLERR | POLLHUP)))
            room = 1;
    }
    return room;
}

static enum lg_status write_all(lg_comm_t *c, int peer, const void *buf, size_t n, double deadline)
{
    struct lg_comm_peer *p = &c->peer[peer];
    const unsigned char *b = buf;
    while (n) {
        if (p->fd < 0)
            return comm_fail(c, "comm: rank %d: no connection to rank %d%s", peer, "");
        int room = pump(c, peer, deadline);
        if (room == -1)
            return comm_fail(c, "comm: rank %d: rank %d took no data for the whole timeout%s (is it stuck? "
                                "LORAGEN_COMM_TIMEOUT sets it)", peer, "");
        if (room == -2)
            return comm_fail(c, "comm: rank %d: waiting to send to rank %d: %s", peer, strerror(errno));
        if (!room)
            continue;
        ssize_t w = send(p->fd, b, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return comm_fail(c, "comm: rank %d: sending to rank %d: %s (it exited or failed)", peer,
                             strerror(errno));
        if (w > 0) {
            b += w;
            n -= (size_t)w;
        }
    }
    return LG_OK;
}

static enum lg_status read_exact(lg_comm_t *c, int peer, void *buf, size_t n, double deadline)
{
    struct lg_comm_peer *p = &c->peer[peer];
    unsigned char *b = buf;
    while (n) {
        size_t have = p->in_len - p->in_off;
        if (have) {
            size_t k = have < n ? have : n;
            memcpy(b, p->in + p->in_off, k);
            p->in_off += k;
            b += k;
            n -= k;
            continue;
        }
        if (p->fd < 0)
            return comm_fail(c, "comm: rank %d: no connection to rank %d%s", peer, "");
        if (p->eof)
            return comm_fail(c, "comm: rank %d: rank %d closed its connection%s (it exited or failed)", peer, "");
        int r = pump(c, -1, deadline);
        if (r == -1)
            return comm_fail(c, "comm: rank %d: nothing came from rank %d within the timeout%s (is it stuck? "
                                "LORAGEN_COMM_TIMEOUT sets it)", peer, "");
        if (r == -2)
            return comm_fail(c, "comm: rank %d: waiting for rank %d: %s", peer, strerror(errno));
    }
    return LG_OK;
}

static double deadline_of(const lg_comm_t *c) { return lg_comm_now() + c->timeout_s; }

static const char *kind_name(uint32_t k)
{
    static const char *names[] = {"?", "hello", "address table", "message", "size", "all-reduce", "broadcast",
                                  "group all-reduce"};
    return k < sizeof names / sizeof *names ? names[k] : "?";
}

enum lg_status lg_comm_tcp_send(lg_comm_t *c, int peer, enum lg_comm_kind k, const void *buf, size_t bytes)
{
    double dl = deadline_of(c);
    struct frame f = {MAGIC, (uint32_t)k, bytes};
    enum lg_status s = write_all(c, peer, &f, sizeof f, dl);
    return s == LG_OK && bytes ? write_all(c, peer, buf, bytes, dl) : s;
}

/* Takes the oldest held message of kind k from the peer, if any. */
static struct lg_comm_msg *take_held(struct lg_comm_peer *p, uint32_t k)
{
    for (struct lg_comm_msg **m = &p->held; *m; m = &(*m)->next)
        if ((*m)->kind == k) {
            struct lg_comm_msg *x = *m;
            *m = x->next;
            return x;
        }
    return NULL;
}

static enum lg_status deliver(lg_comm_t *c, int peer, enum lg_comm_kind k, const void *data, size_t bytes,
                              void *buf, size_t cap, size_t *got)
{
    if (bytes > cap) {
        enum lg_status s = lg_fail(LG_ERR_IO, "comm: rank %d: rank %d sent a %s of %zu bytes where at most %zu fit",
                                   c->rank, peer, kind_name(k), bytes, cap);
        lg_comm_abort(c);
        return s;
    }
    if (bytes)
        memcpy(buf, data, bytes);
    if (got)
        *got = bytes;
    return LG_OK;
}

enum lg_status lg_comm_tcp_recv(lg_comm_t *c, int peer, enum lg_comm_kind k, void *buf, size_t cap, size_t *got)
{
    struct lg_comm_peer *p = &c->peer[peer];
    struct lg_comm_msg *m = take_held(p, (uint32_t)k);
    if (m) {
        enum lg_status s = deliver(c, peer, k, m->data, m->bytes, buf, cap, got);
        free(m);
        return s;
    }
    double dl = deadline_of(c);
    for (;;) {
        struct frame f;
        enum lg_status s = read_exact(c, peer, &f, sizeof f, dl);
        if (s != LG_OK)
            return s;
        if (f.magic != MAGIC || f.kind < LG_COMM_K_HELLO || f.kind > LG_COMM_K_GREDUCE) {
            s = lg_fail(LG_ERR_IO, "comm: rank %d: a foreign message from the connection of rank %d (something "
                        "else connected, or the stream is corrupt)", c->rank, peer);
            lg_comm_abort(c);
            return s;
        }
        if (f.kind == (uint32_t)k) {
            if (f.bytes > cap) {
                s = lg_fail(LG_ERR_IO, "comm: rank %d: rank %d sent a %s of %llu bytes where at most %zu fit",
                            c->rank, peer, kind_name(k), (unsigned long long)f.bytes, cap);
                lg_comm_abort(c);
                return s;
            }
            if (got)
                *got = (size_t)f.bytes;
            return f.bytes ? read_exact(c, peer, buf, (size_t)f.bytes, dl) : LG_OK;
        }
        /* another kind: hold it for the call that wants it */
        struct lg_comm_msg *h = malloc(sizeof *h + (size_t)f.bytes + 1);
        if (!h || f.bytes > ((size_t)1 << 40)) {
            free(h);
            s = lg_fail(LG_ERR_OOM, "comm: rank %d: no memory to hold a %llu-byte %s from rank %d", c->rank,
                        (unsigned long long)f.bytes, kind_name(f.kind), peer);
            lg_comm_abort(c);
            return s;
        }
        h->next = NULL;
        h->kind = f.kind;
        h->bytes = (size_t)f.bytes;
        if (f.bytes && (s = read_exact(c, peer, h->data, (size_t)f.bytes, dl)) != LG_OK) {
            free(h);
            return s;
        }
        struct lg_comm_msg **end = &p->held;
        while (*end)
            end = &(*end)->next;
        *end = h;
    }
}

/* ---- bootstrap ---- */

static void tune_socket(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static enum lg_status listen_on(lg_comm_t *c, int port, int *bound_port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return lg_fail(LG_ERR_IO, "comm: rank %d: socket: %s", c->rank, strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, c->world + 8)) {
        int e = errno;
        close(fd);
        return lg_fail(LG_ERR_IO, "comm: rank %d: cannot listen on port %d: %s%s", c->rank, port, strerror(e),
                       port ? " (MASTER_PORT in use? pick another)" : "");
    }
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    *bound_port = ntohs(a.sin_port);
    c->listen_fd = fd;
    return LG_OK;
}

static enum lg_status resolve(const lg_comm_t *c, const char *host, uint32_t *ipv4)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int e = getaddrinfo(host, NULL, &hints, &res);
    if (e || !res)
        return lg_fail(LG_ERR_INVALID, "comm: rank %d: MASTER_ADDR '%s': %s", c->rank, host, gai_strerror(e));
    *ipv4 = ((struct sockaddr_in *)res->ai_addr)->sin_addr.s_addr;
    freeaddrinfo(res);
    return LG_OK;
}

/* Connects to ipv4:port, retrying while nobody listens there yet, until the deadline. */
static enum lg_status connect_to(lg_comm_t *c, uint32_t ipv4, int port, int who, double deadline, int *out)
{
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return lg_fail(LG_ERR_IO, "comm: rank %d: socket: %s", c->rank, strerror(errno));
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = ipv4};
        if (!connect(fd, (struct sockaddr *)&a, sizeof a)) {
            tune_socket(fd);
            *out = fd;
            return LG_OK;
        }
        int e = errno;
        close(fd);
        if (lg_comm_now() > deadline || (e != ECONNREFUSED && e != ETIMEDOUT && e != EINTR && e != ENETUNREACH &&
                                         e != EHOSTUNREACH && e != EAGAIN)) {
            char ip[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
            return lg_fail(LG_ERR_IO, "comm: rank %d: cannot connect to rank %d at %s:%d: %s", c->rank, who, ip,
                           port, strerror(e));
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static enum lg_status accept_one(lg_comm_t *c, double deadline, int *fd, uint32_t *ipv4)
{
    for (;;) {
        struct pollfd pf = {.fd = c->listen_fd, .events = POLLIN};
        int pr = poll(&pf, 1, remaining_ms(deadline));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0)
            return lg_fail(LG_ERR_IO, "comm: rank %d: not every rank connected within the timeout (%.0f s): a rank "
                           "did not start, or WORLD_SIZE, MASTER_ADDR or MASTER_PORT differ between ranks", c->rank,
                           c->timeout_s);
        struct sockaddr_in a;
        socklen_t len = sizeof a;
        int f = accept4(c->listen_fd, (struct sockaddr *)&a, &len, SOCK_CLOEXEC);
        if (f < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)
                continue;
            return lg_fail(LG_ERR_IO, "comm: rank %d: accept: %s", c->rank, strerror(errno));
        }
        tune_socket(f);
        *fd = f;
        if (ipv4)
            *ipv4 = a.sin_addr.s_addr;
        return LG_OK;
    }
}

/* Reads a hello on a fresh socket and files the socket under the rank it names. */
static enum lg_status take_hello(lg_comm_t *c, int fd, int lo, int hi, struct hello *h)
{
    struct lg_comm_peer *slot = &c->peer[c->rank]; /* the own slot is free: read through it */
    *slot = (struct lg_comm_peer){.fd = fd};
    size_t got = 0;
    enum lg_status s = lg_comm_tcp_recv(c, c->rank, LG_COMM_K_HELLO, h, sizeof *h, &got);
    free(slot->in);
    *slot = (struct lg_comm_peer){.fd = -1};
    if (s != LG_OK)
        return s; /* the abort closed fd */
    if (got != sizeof *h || h->magic != MAGIC) {
        close(fd);
        return lg_fail(LG_ERR_IO, "comm: rank %d: a connection that is not a loragen rank", c->rank);
    }
    if (h->world != c->world || h->rank < lo || h->rank > hi || c->peer[h->rank].fd >= 0) {
        close(fd);
        return lg_fail(LG_ERR_INVALID, "comm: rank %d: a process says it is rank %d of %d, expected one of %d..%d "
                       "of %d once each (RANK and WORLD_SIZE must be consistent)", c->rank, h->rank, h->world, lo,
                       hi, c->world);
    }
    c->peer[h->rank].fd = fd;
    return LG_OK;
}

static enum lg_status bootstrap_root(lg_comm_t *c, int port, double dl)
{
    int bound = 0;
    enum lg_status s = listen_on(c, port, &bound);
    struct table_entry *tab = calloc((size_t)c->world, sizeof *tab);
    if (!tab)
        return lg_fail(LG_ERR_OOM, "comm: out of memory");
    for (int i = 1; s == LG_OK && i < c->world; i++) {
        int fd;
        uint32_t ip;
        struct hello h;
        if ((s = accept_one(c, dl, &fd, &ip)) == LG_OK && (s = take_hello(c, fd, 1, c->world - 1, &h)) == LG_OK)
            tab[h.rank] = (struct table_entry){ip, h.port};
    }
    for (int i = 1; s == LG_OK && i < c->world; i++)
        s = lg_comm_tcp_send(c, i, LG_COMM_K_TABLE, tab, (size_t)c->world * sizeof *tab);
    free(tab);
    return s;
}

static enum lg_status bootstrap_other(lg_comm_t *c, const char *addr, int port, double dl)
{
    int bound = 0;
    uint32_t ip = 0;
    enum lg_status s = resolve(c, addr, &ip);
    if (s == LG_OK)
        s = listen_on(c, 0, &bound);
    if (s == LG_OK)
        s = connect_to(c, ip, port, 0, dl, &c->peer[0].fd);
    struct hello h = {MAGIC, c->rank, c->world, bound};
    if (s == LG_OK)
        s = lg_comm_tcp_send(c, 0, LG_COMM_K_HELLO, &h, sizeof h);
    struct table_entry *tab = calloc((size_t)c->world, sizeof *tab);
    size_t got = 0;
    if (!tab)
        return lg_fail(LG_ERR_OOM, "comm: out of memory");
    if (s == LG_OK)
        s = lg_comm_tcp_recv(c, 0, LG_COMM_K_TABLE, tab, (size_t)c->world * sizeof *tab, &got);
    for (int j = 1; s == LG_OK && j < c->rank; j++) {
        /* rank 0 saw each rank's address as it connected; its own address is MASTER_ADDR */
        if ((s = connect_to(c, tab[j].ipv4, tab[j].port, j, dl, &c->peer[j].fd)) == LG_OK)
            s = lg_comm_tcp_send(c, j, LG_COMM_K_HELLO, &h, sizeof h);
    }
    for (int j = c->rank + 1; s == LG_OK && j < c->world; j++) {
        int fd;
        struct hello hj;
        if ((s = accept_one(c, dl, &fd, NULL)) == LG_OK)
            s = take_hello(c, fd, c->rank + 1, c->world - 1, &hj);
    }
    free(tab);
    return s;
}

enum lg_status lg_comm_tcp_connect(lg_comm_t *c, const char *addr, int port)
{
    double dl = deadline_of(c);
    enum lg_status s = c->rank == 0 ? bootstrap_root(c, port, dl) : bootstrap_other(c, addr, port, dl);
    if (c->listen_fd >= 0) {
        close(c->listen_fd);
        c->listen_fd = -1;
    }
    return s;
}

void lg_comm_tcp_close(lg_comm_t *c)
{
    for (int i = 0; c->peer && i < c->world; i++) {
        if (c->peer[i].fd >= 0) {
            shutdown(c->peer[i].fd, SHUT_RDWR);
            close(c->peer[i].fd);
        }
        c->peer[i].fd = -1;
    }
    if (c->listen_fd >= 0)
        close(c->listen_fd);
    c->listen_fd = -1;
}

/* ---- collectives ---- */

static void add_into(void *acc, const void *x, size_t n, size_t elem)
{
    if (elem == 4) {
        float *a = acc;
        const float *b = x;
        for (size_t i = 0; i < n; i++)
            a[i] += b[i];
    } else {
        double *a = acc;
        const double *b = x;
        for (size_t i = 0; i < n; i++)
            a[i] += b[i];
    }
}

enum lg_status lg_comm_tcp_allreduce(lg_comm_t *c, void *buf, size_t n, size_t elem)
{
    size_t bytes = n * elem, got = 0;
    enum lg_status s = LG_OK;
    if (c->rank != 0) {
        s = lg_comm_tcp_send(c, 0, LG_COMM_K_REDUCE, buf, bytes);
        if (s == LG_OK)
            s = lg_comm_tcp_recv(c, 0, LG_COMM_K_REDUCE, buf, bytes, &got);
        if (s == LG_OK && got != bytes)
            s = comm_fail(c, "comm: rank %d: rank %d answered an all-reduce with %s", 0, "a different size");
        return s;
    }
    void *tmp = malloc(bytes ? bytes : 1);
    if (!tmp)
        return lg_fail(LG_ERR_OOM, "comm: out of memory for a %zu-byte all-reduce", bytes);
    for (int r = 1; s == LG_OK && r < c->world; r++) {
        s = lg_comm_tcp_recv(c, r, LG_COMM_K_REDUCE, tmp, bytes, &got);
        if (s == LG_OK && got != bytes) {
            char d[96];
            snprintf(d, sizeof d, "%zu bytes to an all-reduce of %zu (the ranks disagree)", got, bytes);
            s = comm_fail(c, "comm: rank %d: rank %d gave %s", r, d);
        }
        if (s == LG_OK)
            add_into(buf, tmp, n, elem);
    }
    free(tmp);
    for (int r = 1; s == LG_OK && r < c->world; r++)
        s = lg_comm_tcp_send(c, r, LG_COMM_K_REDUCE, buf, bytes);
    return s;
}

enum lg_status lg_comm_tcp_group_allreduce(lg_comm_t *c, const int *ranks, int n, float *buf, size_t count)
{
    size_t bytes = count * sizeof *buf, got = 0;
    int root = ranks[0];
    enum lg_status s = LG_OK;
    if (c->rank != root) {
        s = lg_comm_tcp_send(c, root, LG_COMM_K_GREDUCE, buf, bytes);
        if (s == LG_OK)
            s = lg_comm_tcp_recv(c, root, LG_COMM_K_GREDUCE, buf, bytes, &got);
        if (s == LG_OK && got != bytes)
            s = comm_fail(c, "comm: rank %d: rank %d answered a group all-reduce with %s", root, "a different size");
        return s;
    }
    float *tmp = malloc(bytes ? bytes : 1);
    if (!tmp)
        return lg_fail(LG_ERR_OOM, "comm: out of memory for a %zu-byte all-reduce", bytes);
    for (int k = 1; s == LG_OK && k < n; k++) {
        s = lg_comm_tcp_recv(c, ranks[k], LG_COMM_K_GREDUCE, tmp, bytes, &got);
        if (s == LG_OK && got != bytes)
            s = comm_fail(c, "comm: rank %d: rank %d gave %s", ranks[k], "another size to a group all-reduce");
        if (s == LG_OK)
            add_into(buf, tmp, count, 4);
    }
    free(tmp);
    for (int k = 1; s == LG_OK && k < n; k++)
        s = lg_comm_tcp_send(c, ranks[k], LG_COMM_K_GREDUCE, buf, bytes);
    return s;
}

enum lg_status lg_comm_tcp_bcast(lg_comm_t *c, int root, void *buf, size_t bytes)
{
    if (c->rank != root) {
        size_t got = 0;
        enum lg_status s = lg_comm_tcp_recv(c, root, LG_COMM_K_BCAST, buf, bytes, &got);
        if (s == LG_OK && got != bytes)
            s = comm_fail(c, "comm: rank %d: rank %d broadcast %s", root, "a different size");
        return s;
    }
    enum lg_status s = LG_OK;
    for (int r = 0; s == LG_OK && r < c->world; r++)
        if (r != root)
            s = lg_comm_tcp_send(c, r, LG_COMM_K_BCAST, buf, bytes);
    return s;
}

int lg_comm_tcp_dead_peer(lg_comm_t *c)
{
    pump(c, -1, lg_comm_now());
    for (int i = 0; i < c->world; i++)
        if (i != c->rank && (c->peer[i].fd < 0 || c->peer[i].eof))
            return i;
    return -1;
}
