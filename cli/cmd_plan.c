/* cmd_plan.c: `loragen plan JOB`: loads a job file, plans its microbatches, verifies the plan independently,
 * simulates it under 1F1B against the Megatron-style and mLoRA-style baselines on the same data, and prints
 * the summary; optionally writes the plan as JSON and the timeline as SVG. */
#include "cli.h"
#include "lg_io.h"
#include "lg_sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct opts {
    const char *job, *json, *svg;
    enum lg_plan_algo algo;
    uint32_t capacity, target;
    int baselines, quiet;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: loragen plan JOB [options]\n\n"
               "Plans the microbatches of a multi-adapter job file (see specs/jobs/), checks every rule with an\n"
               "independent verifier, and predicts the 1F1B pipeline with an event-driven simulator, against a\n"
               "Megatron-style and an mLoRA-style baseline on the same data.\n\n"
               "options:\n"
               "  --json FILE       write the plan (microbatches, segments, samples, waits, timing) as JSON\n"
               "  --svg FILE        draw the simulated timeline (stages as rows, adapters as colours)\n"
               "  --algo NAME       packed (ours, default), megatron or mlora: the plan to write and draw\n"
               "  --capacity N      cap microbatches at N tokens (default: the job's capacity policy)\n"
               "  --target N        fill target in tokens (default: the job's batching.target, else chosen by\n"
               "                    simulating candidates)\n"
               "  --no-baselines    skip the baseline simulations\n"
               "  --quiet           no progress lines on stderr\n"
               "  -h, --help        this help\n\n"
               "exit status: 0 ok, 1 the job or plan failed, 2 bad usage\n");
}

static int parse_u32(const char *s, uint32_t *out)
{
    char *e;
    unsigned long v = strtoul(s, &e, 10);
    if (!*s || *e || v == 0 || v > 1u << 24)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int parse(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof *o);
    o->baselines = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json") && more) {
            o->json = argv[++i];
        } else if (!strcmp(a, "--svg") && more) {
            o->svg = argv[++i];
        } else if (!strcmp(a, "--algo") && more) {
            const char *n = argv[++i];
            if (!strcmp(n, "packed"))
                o->algo = LG_PLAN_PACKED;
            else if (!strcmp(n, "megatron"))
                o->algo = LG_PLAN_MEGATRON;
            else if (!strcmp(n, "mlora"))
                o->algo = LG_PLAN_MLORA;
            else {
                lg_cli_error("plan", "--algo: unknown '%s' (packed, megatron or mlora)", n);
                return 2;
            }
        } else if (!strcmp(a, "--capacity") && more) {
            if (parse_u32(argv[++i], &o->capacity)) {
                lg_cli_error("plan", "--capacity: expected a token count, got '%s'", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--target") && more) {
            if (parse_u32(argv[++i], &o->target)) {
                lg_cli_error("plan", "--target: expected a token count, got '%s'", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--no-baselines")) {
            o->baselines = 0;
        } else if (!strcmp(a, "--quiet")) {
            o->quiet = 1;
        } else if (a[0] == '-' || o->job) {
            static const char *valued[] = {"--json", "--svg", "--algo", "--capacity", "--target", NULL};
            int needs = 0;
            for (const char **v = valued; *v; v++)
                needs |= !strcmp(a, *v);
            lg_cli_error("plan", "%s '%s'", needs ? "missing the value of" : "unexpected argument", a);
            usage(stderr);
            return 2;
        } else {
            o->job = a;
        }
    }
    if (!o->job) {
        lg_cli_error("plan", "no job file given");
        usage(stderr);
        return 2;
    }
    return -1; /* go on */
}

struct run {
    lg_plan_t *plan;
    lg_sim_t *sim;
    struct lg_plan_summary sum;
    struct lg_sim_stats st;
};

/* Plans, verifies (plan and timeline) and simulates one algorithm. */
static int run_algo(const lg_job_t *job, const struct opts *o, enum lg_plan_algo algo, struct run *r)
{
    struct lg_plan_params pp = lg_plan_params_default();
    pp.algo = algo;
    pp.capacity = o->capacity;
    pp.target = algo == LG_PLAN_PACKED ? o->target : 0;
    struct lg_sim_params sp = {.record_events = 1};
    memset(r, 0, sizeof *r);
    const char *what = "planning";
    enum lg_status s = lg_plan_build(job, &pp, &r->plan);
    if (s == LG_OK && (what = "verifying the plan", s = lg_plan_verify(job, r->plan)) == LG_OK &&
        (what = "simulating", s = lg_sim_run(job, r->plan, &sp, &r->sim)) == LG_OK)
        what = "verifying the timeline", s = lg_sim_verify(job, r->plan, r->sim);
    if (s != LG_OK) {
        lg_cli_error("plan", "%s (%s): %s", what, lg_plan_algo_name(algo), lg_last_error());
        return 1;
    }
    lg_plan_get_summary(r->plan, &r->sum);
    lg_sim_get_stats(r->sim, &r->st);
    return 0;
}

static void print_job(const lg_job_t *job, uint32_t capacity_flag)
{
    const struct lg_job_params *p = lg_job_get_params(job);
    printf("job %s: %d adapter(s), S=%d stages, DP=%d, capacity %u tokens (%s), pad to %d\n", lg_job_name(job),
           lg_job_adapter_count(job), p->stages, p->data_parallel,
           capacity_flag ? capacity_flag : lg_job_capacity_limit(job),
           capacity_flag ? "--capacity" : p->capacity_policy == LG_CAPACITY_AUTO ? "auto: from the memory budget" : "fixed",
           p->pad_multiple);
    printf("  %-16s %8s %7s %10s %6s %5s %5s %9s %7s\n", "adapter", "samples", "batches", "tokens", "max", "batch",
           "rank", "truncated", "skipped");
    for (int a = 0; a < lg_job_adapter_count(job); a++) {
        struct lg_adapter_info in;
        lg_job_adapter(job, a, &in);
        printf("  %-16s %8zu %7zu %10llu %6u %5d %5d %9zu %7zu\n", in.name, in.samples, in.batches,
               (unsigned long long)in.tokens, in.max_len, in.global_batch, in.rank, in.truncated, in.skipped);
    }
}

static double mean_batches(const lg_job_t *job)
{
    double s = 0;
    for (int a = 0; a < lg_job_adapter_count(job); a++) {
        struct lg_adapter_info in;
        lg_job_adapter(job, a, &in);
        s += (double)in.batches;
    }
    return s / lg_job_adapter_count(job);
}

static void print_plan(enum lg_plan_algo algo, const struct run *r)
{
    const struct lg_plan_summary *s = &r->sum;
    printf("\nplan (%s): %.2f ms to plan", lg_plan_algo_name(algo), s->plan_ms);
    if (s->candidates > 1)
        printf(", fill target %u tokens chosen among %zu simulated candidates", s->target, s->candidates);
    else if (algo == LG_PLAN_PACKED && s->target)
        printf(", fill target %u tokens (given)", s->target);
    printf("\n  microbatches   %zu (%zu per rank); bounds ceil(tokens / C) = %zu (x%.3f), ceil(padded / C) = %zu "
           "(x%.3f)\n",
           s->microbatches, s->slots, s->lower_bound, (double)s->microbatches / (double)s->lower_bound,
           s->padded_bound, (double)s->microbatches / (double)s->padded_bound);
    printf("  tokens         %llu real, %llu padded: padding waste %.2f%%\n", (unsigned long long)s->tokens,
           (unsigned long long)s->padded, 100 * s->waste);
    printf("  explicit waits %zu (forwards the runtime must hold for an optimizer step: by order, or as the\n"
           "                 simulation predicts; %zu segments)\n",
           s->wait_forwards, s->waits);
}

/* runs[] is indexed by enum lg_plan_algo; have[] says which ran. */
static void print_prediction(const lg_job_t *job, const struct run *runs, const int *have)
{
    static const char *names[] = {"ours", "megatron", "mlora"};
    double steps = mean_batches(job);
    printf("\nprediction (event-driven 1F1B simulation, cost model per stage):\n");
    printf("  %-10s %12s %12s %9s %9s %12s %8s\n", "plan", "makespan ms", "step ms", "bubble", "speedup",
           "tokens/s", "waits");
    for (int i = 0; i < 3; i++) {
        if (!have[i])
            continue;
        const struct lg_sim_stats *st = &runs[i].st;
        printf("  %-10s %12.1f %12.2f %8.2f%% ", names[i], st->makespan_us / 1e3, st->makespan_us / 1e3 / steps,
               100 * st->bubble);
        if (have[LG_PLAN_PACKED])
            printf("%8.2fx", st->makespan_us / runs[LG_PLAN_PACKED].st.makespan_us);
        else
            printf("%9s", "-");
        printf(" %12.0f %8zu\n", (double)runs[i].sum.tokens / (st->makespan_us / 1e6), st->waits);
    }
    printf("  (speedup: that plan's makespan over ours; step ms: makespan over the mean number of optimizer steps;\n"
           "   waits: forwards held for an optimizer step, the plan's explicit waits)\n");
    int main_algo = have[LG_PLAN_PACKED] ? LG_PLAN_PACKED : have[LG_PLAN_MEGATRON] ? LG_PLAN_MEGATRON : LG_PLAN_MLORA;
    const struct lg_sim_stats *st = &runs[main_algo].st;
    printf("\nbalance (%s):\n  bubble per stage:", names[main_algo]);
    for (int s = 0; s < st->stages; s++)
        printf(" %.2f%%", 100 * st->stage_bubble[s]);
    printf("\n  DP ranks: imbalance %.2f%% (busy ms:", 100 * st->dp_imbalance);
    for (int r = 0; r < st->ranks; r++)
        printf(" %.1f", st->rank_busy_us[r] / 1e3);
    printf(")\n");
}

static void free_runs(struct run *runs)
{
    for (int i = 0; i < 3; i++) {
        lg_sim_free(runs[i].sim);
        lg_plan_free(runs[i].plan);
    }
}

int lg_cmd_plan(int argc, char **argv)
{
    struct opts o;
    int rc = parse(argc, argv, &o);
    if (rc >= 0)
        return rc;
    if (!o.quiet)
        fprintf(stderr, "loading %s\n", o.job);
    lg_job_t *job;
    /* with --capacity, a training job whose capacity = "auto" is sized by loragen train (no memory budget)
     * is planned at the capacity given */
    if ((o.capacity ? lg_job_load_device(o.job, 0, &job) : lg_job_load(o.job, &job)) != LG_OK) {
        fprintf(stderr, "%s\n", lg_last_error());
        return 1;
    }
    print_job(job, (uint32_t)o.capacity);
    struct run runs[3] = {{0}};
    int have[3] = {0};
    rc = 0;
    for (int i = 0; i < 3 && !rc; i++) { /* runs[] is indexed by algorithm */
        if (i != (int)o.algo && !o.baselines)
            continue;
        if (!o.quiet)
            fprintf(stderr, "planning, verifying and simulating: %s\n", lg_plan_algo_name((enum lg_plan_algo)i));
        rc = run_algo(job, &o, (enum lg_plan_algo)i, &runs[i]);
        have[i] = !rc;
    }
    const struct run *main_run = &runs[o.algo];
    if (!rc) {
        print_plan(o.algo, main_run);
        print_prediction(job, runs, have);
    }
    if (!rc && o.json) {
        if (!o.quiet)
            fprintf(stderr, "writing %s\n", o.json);
        if (lg_plan_write_json(job, main_run->plan, main_run->sim, o.json) != LG_OK) {
            lg_cli_error("plan", "%s", lg_last_error());
            rc = 1;
        }
    }
    if (!rc && o.svg) {
        if (!o.quiet)
            fprintf(stderr, "writing %s\n", o.svg);
        if (lg_sim_write_svg(job, main_run->plan, main_run->sim, o.svg) != LG_OK) {
            lg_cli_error("plan", "%s", lg_last_error());
            rc = 1;
        }
    }
    free_runs(runs);
    lg_job_free(job);
    return rc;
}
