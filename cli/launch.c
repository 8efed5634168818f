/* launch.c: the single-machine launcher (launch.h). Each rank is this same binary started afresh
 * (/proc/self/exe), in a process group of its own so that a Ctrl-C reaches it once, through the launcher.
 * The launcher only waits and relays: it knows no training, and a rank bootstraps from the variables like any
 * torchrun- or Slurm-started process. */
#include "cli.h"
#include "launch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GRACE_S 10 /* seconds between SIGTERM and SIGKILL for the ranks still running after a failure */
#define MAX_RANKS 1024

static volatile sig_atomic_t got_signal, got_alarm;

static void on_signal(int sig) { got_signal = sig; }
static void on_alarm(int sig)
{
    (void)sig;
    got_alarm = 1;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t len = sizeof a;
    int port = 0;
    if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof a) && !getsockname(fd, (struct sockaddr *)&a, &len))
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static void child(int rank, int n, int port, pid_t parent, char **argv)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) /* the launcher died before the line above */
        _exit(1);
    setpgid(0, 0);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    char v[32];
    snprintf(v, sizeof v, "%d", rank);
    setenv("RANK", v, 1);
    setenv("LOCAL_RANK", v, 1);
    snprintf(v, sizeof v, "%d", n);
    setenv("WORLD_SIZE", v, 1);
    snprintf(v, sizeof v, "%d", port);
    setenv("MASTER_PORT", v, 1);
    setenv("MASTER_ADDR", getenv("MASTER_ADDR") ? getenv("MASTER_ADDR") : "127.0.0.1", 1);
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    int argc = 0;
    while (argv[argc])
        argc++;
    char **a = calloc((size_t)argc + 2, sizeof *a);
    if (!a)
        _exit(1);
    a[0] = "loragen";
    memcpy(a + 1, argv, (size_t)argc * sizeof *a);
    execv("/proc/self/exe", a);
    fprintf(stderr, "loragen: rank %d: cannot start /proc/self/exe: %s\n", rank, strerror(errno));
    _exit(127);
}

/* The rank of a child, or n when it is none of the ranks. */
static int rank_of_pid(const pid_t *pid, int n, pid_t p)
{
    int r = 0;
    while (r < n && pid[r] != p)
        r++;
    return r;
}

static void signal_all(const pid_t *pid, int n, int sig)
{
    for (int r = 0; r < n; r++)
        if (pid[r] > 0)
            kill(pid[r], sig);
}

static int status_code(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st); }

int lg_cli_launch(int n, char **argv)
{
    if (n < 1 || n > MAX_RANKS) {
        lg_cli_error("train", "--procs/--gpus %d: expected 1..%d", n, MAX_RANKS);
        return 2;
    }
    int port = 0;
    const char *mp = getenv("MASTER_PORT");
    if (mp && *mp)
        port = atoi(mp);
    else if (!(port = free_port())) {
        lg_cli_error("train", "no free TCP port for the ranks to meet on (set MASTER_PORT)");
        return 1;
    }
    pid_t *pid = calloc((size_t)n, sizeof *pid);
    if (!pid)
        return 1;
    struct sigaction sa = {.sa_handler = on_signal}, al = {.sa_handler = on_alarm}; /* no SA_RESTART */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGALRM, &al, NULL);
    pid_t self = getpid();
    int running = 0, failed = -1, code = 0;
    for (int r = 0; r < n; r++) {
        pid_t p = fork();
        if (p == 0)
            child(r, n, port, self, argv);
        if (p < 0) {
            lg_cli_error("train", "cannot start rank %d: %s", r, strerror(errno));
            failed = r;
            code = 1;
            signal_all(pid, r, SIGTERM);
            alarm(GRACE_S);
            break;
        }
        pid[r] = p;
        running++;
    }
    int killed = 0, forwarded = 0;
    while (running > 0) {
        if (got_signal) { /* Ctrl-C or SIGTERM: every rank gets it once (each checkpoints or stops) */
            signal_all(pid, n, got_signal);
            got_signal = 0;
            forwarded = 1;
        }
        if (got_alarm && !killed) {
            fprintf(stderr, "loragen train: ranks still running %d s after rank %d failed: killing them\n", GRACE_S,
                    failed);
            signal_all(pid, n, SIGKILL);
            killed = 1;
        }
        int st;
        pid_t p = waitpid(-1, &st, WNOHANG); /* polled: a signal can never slip in between a check and a wait */
        if (p < 0 && errno != EINTR)
            break;
        if (p <= 0) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        int r = rank_of_pid(pid, n, p);
        if (r == n)
            continue;
        pid[r] = 0;
        running--;
        int c = status_code(st);
        if (c != 0 && failed < 0 && !WIFSIGNALED(st)) {
            /* a rank that exits with an error may only be reacting to a peer's death (a closed connection):
             * when a rank that was killed has already exited too, that one is the cause and is named */
            int st2;
            pid_t q;
            while ((q = waitpid(-1, &st2, WNOHANG)) > 0) {
                int r2 = rank_of_pid(pid, n, q);
                if (r2 == n)
                    continue;
                pid[r2] = 0;
                running--;
                if (WIFSIGNALED(st2)) {
                    fprintf(stderr, "loragen train: rank %d of %d failed (exit status %d) after rank %d's end\n", r,
                            n, c, r2);
                    r = r2, st = st2, c = status_code(st2);
                    break;
                }
            }
        }
        if (c == 130 && forwarded && failed < 0) { /* stopped as asked: not a failure */
            code = 130;
            continue;
        }
        if (c != 0 && failed < 0) {
            failed = r;
            code = c;
            if (WIFSIGNALED(st))
                fprintf(stderr, "loragen train: rank %d of %d was killed by signal %d (%s)%s\n", r, n, WTERMSIG(st),
                        strsignal(WTERMSIG(st)), running ? ": stopping the other ranks" : "");
            else
                fprintf(stderr, "loragen train: rank %d of %d failed (exit status %d)%s\n", r, n, c,
                        running ? ": stopping the other ranks" : "");
            if (running) {
                signal_all(pid, n, SIGTERM);
                alarm(GRACE_S);
            }
        }
    }
    alarm(0);
    free(pid);
    return code;
}
