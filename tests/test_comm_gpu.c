/* test_comm_gpu.c: the NCCL transport of lg_comm on two GPUs of this machine, one process each (device =
 * rank): an fp32 all-reduce of device memory (exact sums of small integers), point-to-point messages of two
 * sizes both ways, and a rank that exits mid-run: the other's next NCCL call fails (it sees the closed TCP
 * connection) instead of hanging. Exits 77 without two GPUs or without libnccl.so.2. CUDA is initialised only
 * in the forked ranks and in one probe child, never in the parent. */
#include "lg_comm.h"
#include "lg_test.h"
#include "lg_train_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&a, sizeof a))
        exit(1);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

#define N 1000003

static int rank_main(int rank, int port, int die)
{
    CUdevice dev;
    CUcontext ctx;
    CU_CHECK(cuInit(0));
    CU_CHECK(cuDeviceGet(&dev, rank));
    CU_CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CU_CHECK(cuCtxSetCurrent(ctx));
    struct lg_comm_params p = {.rank = rank, .world = 2, .local_rank = rank, .master_port = port,
                               .transport = LG_COMM_NCCL, .timeout_s = 120};
    snprintf(p.master_addr, sizeof p.master_addr, "127.0.0.1");
    lg_comm_t *c;
    CHECK(lg_comm_init(&p, &c));
    float *h = malloc(N * sizeof *h);
    for (int i = 0; i < N; i++)
        h[i] = (float)((i % 31) * (rank + 1));
    CUdeviceptr d;
    CU_CHECK(cuMemAlloc_v2(&d, N * sizeof *h));
    CU_CHECK(cuMemcpyHtoD_v2(d, h, N * sizeof *h));
    CHECK(lg_comm_allreduce_f32(c, (float *)(uintptr_t)d, N));
    CU_CHECK(cuMemcpyDtoH_v2(h, d, N * sizeof *h));
    for (int i = 0; i < N; i++)
        if (h[i] != (float)((i % 31) * 3)) {
            fprintf(stderr, "rank %d: element %d is %g, expected %g\n", rank, i, h[i], (double)((i % 31) * 3));
            return 2;
        }
    /* rank 0 sends 4 MB + 3 to rank 1, rank 1 answers with 17 bytes */
    size_t big = (4u << 20) + 3, got = 0;
    if (rank == 0) {
        CHECK(lg_comm_send(c, 1, (void *)(uintptr_t)d, big));
        CHECK(lg_comm_recv(c, 1, (void *)(uintptr_t)d, big, &got));
        if (got != 17)
            return 3;
    } else {
        CHECK(lg_comm_recv(c, 0, (void *)(uintptr_t)d, big, &got));
        if (got != big)
            return 4;
        CHECK(lg_comm_send(c, 0, (void *)(uintptr_t)d, 17));
    }
    if (die && rank == 1)
        _exit(9);
    if (die) {
        if (lg_comm_allreduce_f32(c, (float *)(uintptr_t)d, N) == LG_OK)
            return 5;
        fprintf(stderr, "rank 0 saw, as it should: %s\n", lg_last_error());
        if (!strstr(lg_last_error(), "rank 1"))
            return 6;
    }
    lg_comm_free(c);
    return 0;
}

static int run_pair(int die)
{
    int port = free_port();
    pid_t pid[2];
    for (int r = 0; r < 2; r++)
        if ((pid[r] = fork()) == 0)
            _exit(rank_main(r, port, die));
    int ok = 1;
    for (int r = 0; r < 2; r++) {
        int st;
        waitpid(pid[r], &st, 0);
        int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        int want = die && r == 1 ? 9 : 0;
        if (code != want) {
            fprintf(stderr, "%s: rank %d exited with %d, expected %d\n", die ? "peer death" : "exchange", r, code,
                    want);
            ok = 0;
        }
    }
    return ok;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    int n = tt_count_gpus(); /* in a probe child: CUDA stays uninitialised here */
    if (n < 2) {
        printf("test_comm_gpu: %d GPU(s); needs 2: skipped\n", n);
        return 77;
    }
    if (!lg_comm_nccl_available()) {
        printf("test_comm_gpu: libnccl.so.2 cannot be loaded (LD_LIBRARY_PATH?): skipped\n");
        return 77;
    }
    int ok = run_pair(0);
    ok = run_pair(1) && ok;
    printf("test_comm_gpu: %s\n", ok ? "passed" : "FAILED");
    return ok ? 0 : 1;
}
