/* test_comm.c: the TCP transport of lg_comm with real processes on localhost. Each case forks its ranks; each
 * rank checks what it received and reports through its exit status (and, for failures, the error text it got,
 * through a pipe). Covers: all-reduce of fp32 and fp64 (exact sums of small integers, bit-identical on every
 * rank), group all-reduces of two groups at once, broadcast, barrier, point-to-point messages of varying size
 * around a ring with every rank sending a large message before receiving (the read-ahead that keeps that from
 * deadlocking), a message larger than the receiver's buffer, a peer that exits (the others fail at once naming
 * it), a peer that hangs (the call fails after the communicator's timeout), and the environment's errors. */
#include "lg_comm.h"
#include "lg_test.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* A port nobody listens on now (bind to 0, read it back, close). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

typedef int (*rank_fn)(lg_comm_t *c, int fd);

struct world {
    int n;
    pid_t pid[8];
    int out[8]; /* read end of each rank's message pipe */
};

static int rank_main(int rank, int world, int port, double timeout, rank_fn fn, int fd)
{
    struct lg_comm_params p = {.rank = rank, .world = world, .local_rank = rank, .master_port = port,
                               .transport = LG_COMM_TCP, .timeout_s = timeout};
    snprintf(p.master_addr, sizeof p.master_addr, "127.0.0.1");
    lg_comm_t *c;
    if (lg_comm_init(&p, &c) != LG_OK) {
        dprintf(fd, "init: %s", lg_last_error());
        return 10;
    }
    int rc = fn(c, fd);
    lg_comm_free(c);
    return rc;
}

static void start(struct world *w, int n, double timeout, rank_fn fn)
{
    int port = free_port();
    w->n = n;
    for (int r = 0; r < n; r++) {
        int p[2];
        ck_assert_int_eq(pipe(p), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            close(p[0]);
            _exit(rank_main(r, n, port, timeout, fn, p[1]));
        }
        close(p[1]);
        w->pid[r] = pid;
        w->out[r] = p[0];
    }
}

/* Each rank's exit status, and its message (malloc'd) in msg[r]. */
static void finish(struct world *w, int *status, char **msg)
{
    for (int r = 0; r < w->n; r++) {
        char buf[4096];
        size_t n = 0;
        ssize_t k;
        while ((k = read(w->out[r], buf + n, sizeof buf - 1 - n)) > 0)
            n += (size_t)k;
        buf[n] = 0;
        close(w->out[r]);
        int st;
        ck_assert_int_eq(waitpid(w->pid[r], &st, 0), w->pid[r]);
        status[r] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        msg[r] = strdup(buf);
    }
}

static void expect_all_ok(struct world *w)
{
    int st[8];
    char *msg[8];
    finish(w, st, msg);
    for (int r = 0; r < w->n; r++) {
        if (st[r])
            fprintf(stderr, "rank %d: status %d: %s\n", r, st[r], msg[r]);
        ck_assert_int_eq(st[r], 0);
        free(msg[r]);
    }
}

#define RCHECK(x)                                                                                              \
    do {                                                                                                       \
        if ((x) != LG_OK) {                                                                                    \
            dprintf(fd, "%s: %s", #x, lg_last_error());                                                        \
            return 1;                                                                                          \
        }                                                                                                      \
    } while (0)
#define RASSERT(cond)                                                                                          \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            dprintf(fd, "%s:%d: %s", __FILE__, __LINE__, #cond);                                               \
            return 2;                                                                                          \
        }                                                                                                      \
    } while (0)

#define NF 100003 /* not a multiple of anything the transport might chunk by */

static int collectives(lg_comm_t *c, int fd)
{
    int r = lg_comm_rank(c), W = lg_comm_world(c);
    RASSERT(lg_comm_get_transport(c) == LG_COMM_TCP);
    float *f = malloc(NF * sizeof *f);
    for (int i = 0; i < NF; i++)
        f[i] = (float)((i % 97) * (r + 1));
    RCHECK(lg_comm_allreduce_f32(c, f, NF));
    double tri = W * (W + 1) / 2.0;
    for (int i = 0; i < NF; i++)
        RASSERT(f[i] == (float)((i % 97) * tri));
    free(f);
    double d[3] = {r, 0.5 * r, -1.0};
    RCHECK(lg_comm_allreduce_host_f64(c, d, 3));
    RASSERT(d[0] == W * (W - 1) / 2.0 && d[1] == 0.25 * W * (W - 1) && d[2] == -W);
    char b[64] = {0};
    if (r == W - 1)
        snprintf(b, sizeof b, "from the last rank");
    RCHECK(lg_comm_bcast_host(c, W - 1, b, sizeof b));
    RASSERT(!strcmp(b, "from the last rank"));
    RCHECK(lg_comm_barrier(c));
    if (W == 4) { /* two groups at once, {0, 2} and {1, 3}, then the world again */
        int g[2] = {r % 2, r % 2 + 2};
        float x[3] = {(float)r, 1.0f, (float)(10 * r)};
        RCHECK(lg_comm_allreduce_group_host_f32(c, g, 2, x, 3));
        RASSERT(x[0] == (float)(2 * (r % 2) + 2) && x[1] == 2.0f && x[2] == (float)(10 * (2 * (r % 2) + 2)));
        int bad[2] = {2, 0};
        RASSERT(lg_comm_allreduce_group_host_f32(c, bad, 2, x, 3) == LG_ERR_INVALID);
        RCHECK(lg_comm_barrier(c));
    }
    return 0;
}

/* Ring: every rank sends a large message to the next rank, then receives the previous rank's: with blocking
 * sends and no read-ahead this deadlocks once the messages exceed the socket buffers. Then small messages of
 * every rank's own size, several in a row, in order. */
static int ring(lg_comm_t *c, int fd)
{
    int r = lg_comm_rank(c), W = lg_comm_world(c), next = (r + 1) % W, prev = (r + W - 1) % W;
    size_t big = (size_t)(6 << 20) + 1000u * (size_t)r;
    unsigned char *s = malloc(big), *in = malloc(big + 4000);
    for (size_t i = 0; i < big; i++)
        s[i] = (unsigned char)(i * 7 + (size_t)r);
    RCHECK(lg_comm_send(c, next, s, big));
    size_t got = 0;
    RCHECK(lg_comm_recv(c, prev, in, big + 4000, &got));
    RASSERT(got == (size_t)(6 << 20) + 1000u * (size_t)prev);
    for (size_t i = 0; i < got; i++)
        RASSERT(in[i] == (unsigned char)(i * 7 + (size_t)prev));
    for (int k = 0; k < 5; k++) {
        size_t n = (size_t)(k * 13 + r);
        memset(s, 'a' + k, n);
        RCHECK(lg_comm_send(c, next, s, n));
    }
    for (int k = 0; k < 5; k++) {
        RCHECK(lg_comm_recv(c, prev, in, 4096, &got));
        RASSERT(got == (size_t)(k * 13 + prev));
        for (size_t i = 0; i < got; i++)
            RASSERT(in[i] == 'a' + k);
    }
    free(s);
    free(in);
    return 0;
}

START_TEST(allreduce_bcast_barrier)
{
    struct world w;
    start(&w, 3, 60, collectives);
    expect_all_ok(&w);
    start(&w, 4, 60, collectives); /* with group all-reduces */
    expect_all_ok(&w);
    start(&w, 1, 60, collectives); /* a world of one: no sockets, the same calls */
    expect_all_ok(&w);
}
END_TEST

START_TEST(ring_of_messages)
{
    struct world w;
    start(&w, 4, 60, ring);
    expect_all_ok(&w);
}
END_TEST

static int oversize(lg_comm_t *c, int fd)
{
    char b[100] = {0};
    if (lg_comm_rank(c) == 0)
        RCHECK(lg_comm_send(c, 1, b, sizeof b));
    else if (lg_comm_recv(c, 0, b, 10, NULL) == LG_OK)
        return 3;
    else
        dprintf(fd, "%s", lg_last_error());
    return 0;
}

START_TEST(message_larger_than_buffer)
{
    struct world w;
    start(&w, 2, 60, oversize);
    int st[2];
    char *msg[2];
    finish(&w, st, msg);
    ck_assert_int_eq(st[0], 0);
    ck_assert_int_eq(st[1], 0);
    ck_assert_msg(strstr(msg[1], "100 bytes") && strstr(msg[1], "at most 10"), "%s", msg[1]);
    free(msg[0]);
    free(msg[1]);
}
END_TEST

/* Rank 2 exits right after connecting; the others' all-reduce must fail (not hang), rank 0's naming rank 2. */
static int one_dies(lg_comm_t *c, int fd)
{
    if (lg_comm_rank(c) == 2)
        _exit(7);
    float f[1000] = {0};
    if (lg_comm_allreduce_f32(c, f, 1000) == LG_OK)
        return 3;
    dprintf(fd, "%s", lg_last_error());
    /* and the communicator stays failed */
    if (lg_comm_barrier(c) == LG_OK)
        return 4;
    return 0;
}

START_TEST(peer_exit_is_an_error_naming_it)
{
    struct world w;
    start(&w, 3, 600, one_dies); /* a long timeout: the failure must come from the closed socket */
    int st[3];
    char *msg[3];
    finish(&w, st, msg);
    ck_assert_int_eq(st[2], 7);
    ck_assert_msg(st[0] == 0 && st[1] == 0, "ranks 0, 1: %d %d: %s / %s", st[0], st[1], msg[0], msg[1]);
    ck_assert_msg(strstr(msg[0], "rank 2 closed its connection"), "%s", msg[0]);
    ck_assert_msg(strstr(msg[1], "closed its connection"), "%s", msg[1]);
    for (int r = 0; r < 3; r++)
        free(msg[r]);
}
END_TEST

/* Rank 1 connects, then never takes part: rank 0 fails after the timeout (1 s) saying so. */
static int one_hangs(lg_comm_t *c, int fd)
{
    if (lg_comm_rank(c) == 1) {
        sleep(600); /* killed by the parent */
        return 5;
    }
    double d = 1;
    if (lg_comm_allreduce_host_f64(c, &d, 1) == LG_OK)
        return 3;
    dprintf(fd, "%s", lg_last_error());
    return 0;
}

START_TEST(hung_peer_times_out)
{
    struct world w;
    start(&w, 2, 1.0, one_hangs);
    int st0;
    char buf[2048];
    ck_assert_int_eq(waitpid(w.pid[0], &st0, 0), w.pid[0]);
    ssize_t n = read(w.out[0], buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    kill(w.pid[1], SIGKILL);
    waitpid(w.pid[1], NULL, 0);
    close(w.out[0]);
    close(w.out[1]);
    ck_assert_int_eq(WEXITSTATUS(st0), 0);
    ck_assert_msg(strstr(buf, "rank 1") && strstr(buf, "timeout"), "%s", buf);
}
END_TEST

static void set_env(const char *ws, const char *rank, const char *port)
{
    unsetenv("WORLD_SIZE");
    unsetenv("RANK");
    unsetenv("LOCAL_RANK");
    unsetenv("MASTER_PORT");
    unsetenv("MASTER_ADDR");
    if (ws)
        setenv("WORLD_SIZE", ws, 1);
    if (rank)
        setenv("RANK", rank, 1);
    if (port)
        setenv("MASTER_PORT", port, 1);
}

static void env_fails(const char *ws, const char *rank, const char *port, const char *needle)
{
    set_env(ws, rank, port);
    struct lg_comm_params p;
    ck_assert_int_ne(lg_comm_params_from_env(&p), LG_OK);
    ck_assert_msg(strstr(lg_last_error(), needle), "%s", lg_last_error());
}

START_TEST(environment)
{
    struct lg_comm_params p;
    set_env(NULL, NULL, NULL);
    CHECK(lg_comm_params_from_env(&p));
    ck_assert_int_eq(p.world, 1);
    ck_assert_int_eq(p.rank, 0);
    set_env("4", "3", "29500");
    setenv("LOCAL_RANK", "1", 1);
    setenv("MASTER_ADDR", "node7", 1);
    CHECK(lg_comm_params_from_env(&p));
    ck_assert_int_eq(p.world, 4);
    ck_assert_int_eq(p.rank, 3);
    ck_assert_int_eq(p.local_rank, 1);
    ck_assert_int_eq(p.master_port, 29500);
    ck_assert_str_eq(p.master_addr, "node7");
    env_fails("two", "0", "29500", "WORLD_SIZE=two");
    env_fails("2", "2", "29500", "RANK=2 but WORLD_SIZE=2");
    env_fails("2", NULL, "29500", "RANK is not set");
    env_fails("2", "1", NULL, "MASTER_PORT is not set");
    env_fails("2", "1", "70000", "MASTER_PORT=70000");
    set_env(NULL, NULL, NULL);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("comm");
    TCase *tc = tcase_create("tcp");
    tcase_add_test(tc, allreduce_bcast_barrier);
    tcase_add_test(tc, ring_of_messages);
    tcase_add_test(tc, message_larger_than_buffer);
    tcase_add_test(tc, peer_exit_is_an_error_naming_it);
    tcase_add_test(tc, hung_peer_times_out);
    tcase_add_test(tc, environment);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
