/* cmd_train.c: `loragen train JOB`: trains the job's adapters (lg_train.h) and shows a live progress line per
 * step on a terminal (plain lines every log_every steps otherwise). SIGINT and SIGTERM ask the run to write
 * a checkpoint and stop; a second SIGINT stops at once. */
#include "cli.h"
#include "launch.h"
#include "lg_train.h"
#include "lg_trainjob.h"
#include "lg_tuner.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile int stop_flag;

static void on_signal(int sig)
{
    if (stop_flag && sig == SIGINT)
        _exit(130);
    stop_flag = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: loragen train JOB [--resume] [--backend auto|cpu|cuda] [--max-steps N] [--profile] [--quiet]\n"
               "                    [--tune-online] [--gpus N | --procs N]\n\n"
               "Trains the LoRA adapters of a job file (specs/jobs/*.lua) on the job's Hugging Face model: the\n"
               "scheduler's plan is what runs; each adapter gets its PEFT adapter, metrics.jsonl and loss.svg in\n"
               "its output directory, and checkpoints go to <output>/checkpoints.\n\n"
               "options:\n"
               "  --resume          continue bit-exactly from the latest checkpoint\n"
               "  --backend NAME    auto (default: the job's), cpu or cuda\n"
               "  --max-steps N     stop every adapter after N optimizer steps (a smoke test)\n"
               "  --profile         time every op on the GPU and print the time per op family at the end\n"
               "  --tune-online     tune each kernel whose key the tuning database lacks on its first use and\n"
               "                    save the winner to the database (also LORAGEN_TUNE_ONLINE=1; docs/tuning.md)\n"
               "  -q, --quiet       no progress lines (errors and the summary only)\n"
               "  --gpus N          one process per GPU of this machine (GPU r for rank r; the CUDA backend)\n"
               "  --procs N         N processes on the backend the job or --backend names (--backend cpu: CI)\n"
               "                    N must be the job's pipeline.data_parallel x stages. A process started by\n"
               "                    torchrun or Slurm (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT\n"
               "                    set) is one rank of such a run; docs/parallel.md has the details\n\n"
               "Ctrl-C or SIGTERM writes a checkpoint and stops; --resume continues from it.\n\n"
               "Job-file fields and their defaults:\n%s",
            lg_train_config_defaults());
}

struct view {
    int tty, quiet;
    int line_open;
};

static void fmt_time(double s, char *buf, size_t n)
{
    if (!isfinite(s) || s < 0)
        snprintf(buf, n, "?");
    else if (s < 60)
        snprintf(buf, n, "%.0fs", s);
    else if (s < 3600)
        snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, n, "%dh%02dm", (int)s / 3600, (int)s % 3600 / 60);
}

static void progress(const struct lg_train_progress *p, void *user)
{
    struct view *v = user;
    if (v->quiet && p->event != LG_EV_SKIP)
        return;
    char eta[32], el[32];
    fmt_time(p->eta_s, eta, sizeof eta);
    fmt_time(p->elapsed_s, el, sizeof el);
    if (p->event == LG_EV_STEP) {
        int every = p->log_every > 0 ? p->log_every : 10;
        int show = v->tty || p->step == 1 || p->step == p->steps || p->step % every == 0;
        if (!show)
            return;
        fprintf(stdout, "%s%s step %lld/%lld  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s  %.0f MiB  %s elapsed, ETA %s%s",
                v->tty ? "\r\033[K" : "", p->name, (long long)p->step, (long long)p->steps, p->loss, p->lr,
                p->grad_norm, p->tokens_per_s, (double)p->mem_bytes / (1u << 20), el, eta, v->tty ? "" : "\n");
        v->line_open = v->tty;
        fflush(stdout);
        return;
    }
    if (v->line_open) {
        fputc('\n', stdout);
        v->line_open = 0;
    }
    switch (p->event) {
    case LG_EV_EVAL:
        printf("%s step %lld: validation loss %.4f (perplexity %.2f)\n", p->name, (long long)p->step, p->val_loss,
               exp(p->val_loss));
        break;
    case LG_EV_CKPT: printf("checkpoint %s\n", p->message); break;
    case LG_EV_DONE: printf("%s: %lld steps; adapter written to %s\n", p->name, (long long)p->step, p->message); break;
    case LG_EV_SKIP: fprintf(stderr, "warning: %s\n", p->message); break;
    default: printf("%s\n", p->message); break;
    }
    fflush(stdout);
}

/* --gpus N / --procs N: the same command line without them (plus --backend cuda for --gpus unless a backend is
 * named), run once per rank by the launcher. */
static int launch(int argc, char **argv, int n, int gpus, int has_backend)
{
    const char *ws = getenv("WORLD_SIZE");
    if (ws && *ws) {
        lg_cli_error("train", "--gpus/--procs inside a launched run (WORLD_SIZE=%s is set): start the ranks one way", ws);
        return 2;
    }
    char **a = calloc((size_t)argc + 3, sizeof *a);
    if (!a)
        return 1;
    int k = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--gpus") || !strcmp(argv[i], "--procs")) {
            i++;
            continue;
        }
        a[k++] = argv[i];
    }
    if (gpus && !has_backend) {
        a[k++] = "--backend";
        a[k++] = "cuda";
    }
    int rc = lg_cli_launch(n, a);
    free(a);
    return rc;
}

static int positive(const char *flag, const char *arg, long long *out)
{
    char *end;
    long long n = strtoll(arg, &end, 10);
    if (*end || n < 1) {
        lg_cli_error("train", "%s needs a positive integer, not '%s'", flag, arg);
        return 0;
    }
    *out = n;
    return 1;
}

int lg_cmd_train(int argc, char **argv)
{
    struct lg_train_opts o = {0};
    struct view v = {.tty = isatty(STDOUT_FILENO)};
    long long nprocs = 0;
    int gpus = 0, tune_online = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--resume")) {
            o.resume = 1;
        } else if (!strcmp(a, "--profile")) {
            o.profile = 1;
        } else if (!strcmp(a, "--tune-online")) {
            tune_online = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            v.quiet = 1;
        } else if ((!strcmp(a, "--gpus") || !strcmp(a, "--procs")) && i + 1 < argc) {
            if (nprocs) {
                lg_cli_error("train", "give --gpus or --procs once");
                return 2;
            }
            gpus = !strcmp(a, "--gpus");
            if (!positive(a, argv[++i], &nprocs))
                return 2;
        } else if (!strcmp(a, "--backend") && i + 1 < argc) {
            o.backend = argv[++i];
        } else if (!strcmp(a, "--max-steps") && i + 1 < argc) {
            char *end;
            long long n = strtoll(argv[++i], &end, 10);
            if (*end || n < 1) {
                lg_cli_error("train", "--max-steps needs a positive integer, not '%s'", argv[i]);
                return 2;
            }
            o.max_steps = n;
        } else if (a[0] == '-' || o.job) {
            lg_cli_error("train", "unexpected argument '%s' (see loragen train --help)", a);
            return 2;
        } else {
            o.job = a;
        }
    }
    if (!o.job) {
        usage(stderr);
        return 2;
    }
    if (nprocs)
        return launch(argc, argv, (int)nprocs, gpus, o.backend != NULL);
    const char *ws = getenv("WORLD_SIZE"), *rank = getenv("RANK");
    o.distributed = ws && *ws && strcmp(ws, "1");
    if (o.distributed && rank && strcmp(rank, "0"))
        v.quiet = 1; /* rank 0 reports for the run */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    o.stop = &stop_flag;
    o.progress = progress;
    o.user = &v;
    int env_online = lg_tuner_online_from_env();
    if (env_online < 0) {
        lg_cli_error("train", "%s", lg_last_error());
        return 2;
    }
    if (tune_online && !env_online)
        lg_tuner_online_enable(NULL);
    struct lg_train_result r;
    enum lg_status s = lg_train_run(&o, &r);
    if (lg_tune_online_count() > 0 && !v.quiet) {
        if (v.line_open)
            fputc('\n', stdout), v.line_open = 0;
        const char *db = lg_tune_default_path();
        printf("online tuning: %d new key%s tuned, %s\n", lg_tune_online_count(), lg_tune_online_count() == 1 ? "" : "s",
               db[0] ? "saved to the tuning database" : "kept for this run (LORAGEN_TUNE_DB=off)");
        if (db[0])
            printf("  %s\n", db);
    }
    if (v.line_open)
        fputc('\n', stdout);
    if (s != LG_OK) {
        if (o.distributed)
            lg_cli_error("train", "rank %s of %s: %s", rank ? rank : "?", ws, lg_last_error());
        else
            lg_cli_error("train", "%s", lg_last_error());
        return 1;
    }
    char el[32];
    fmt_time(r.seconds, el, sizeof el);
    if (o.distributed && v.quiet && rank && strcmp(rank, "0"))
        return r.interrupted ? 130 : 0;
    if (r.interrupted && o.distributed) { /* the ranks wrote their shards of one checkpoint */
        printf("interrupted: checkpoint written; continue with the same command and --resume\n");
        return 130;
    }
    if (r.interrupted) {
        printf("interrupted: checkpoint written; continue with loragen train %s --resume\n", o.job);
        return 130;
    }
    printf("done: %lld tokens in %s; loss %.4f -> %.4f", (long long)r.tokens, el, r.first_loss, r.last_loss);
    if (isfinite(r.val_loss))
        printf(", validation %.4f", r.val_loss);
    if (r.steady_seconds > 0)
        printf("; after the first step %lld tokens in %.2f s: %.0f tokens/s", (long long)r.steady_tokens,
               r.steady_seconds, (double)r.steady_tokens / r.steady_seconds);
    printf("\n");
    return 0;
}
