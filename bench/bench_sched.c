/* bench_sched.c: the scheduler benchmark. For 1 and 4 adapters, the xsum/cnn/wikisum/mix traces and the
 * heterogeneous set (a different trace per adapter), S in {1,2,4} and DP in {1,2}: plan with ours and both
 * baselines, verify every plan (and the timeline), simulate, and print bubble ratio and makespan side by side,
 * our microbatch count against the lower bound ceil(tokens / C), padding waste and planning time (median of
 * several runs). Then an ablation on the target configurations. --quick runs only S=4, at DP=1 and DP=2.
 *
 *   bench_sched [--samples N] [--batch B] [--capacity C] [--reps R] [--quick]
 */
#include "lg_sched.h"
#include "lg_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static size_t g_samples = 1000;
static int g_batch = 8, g_reps = 5;
static uint32_t g_cap = 4096;

enum { HET = LG_TRACE_KINDS };

static const char *trace_name(int t) { return t == HET ? "het" : lg_trace_kind_name((enum lg_trace_kind)t); }

static lg_job_t *make_job(int adapters, int trace, int S, int D)
{
    struct lg_job_params p = lg_job_params_default();
    p.stages = S;
    p.data_parallel = D;
    p.capacity = g_cap;
    lg_job_t *job;
    CHECK(lg_job_init(&p, &job));
    static const int het[4] = {LG_TRACE_XSUM, LG_TRACE_CNN, LG_TRACE_WIKISUM, LG_TRACE_MIX};
    uint32_t *len = malloc(g_samples * sizeof *len);
    for (int a = 0; a < adapters; a++) {
        int kind = trace == HET ? het[a % 4] : trace;
        CHECK(lg_trace_generate((enum lg_trace_kind)kind, g_samples, 1000u + 17u * (unsigned)a + 101u * (unsigned)kind,
                                len));
        lg_dataset_t *ds;
        CHECK(lg_dataset_from_lengths(len, g_samples, &ds));
        char name[32];
        snprintf(name, sizeof name, "%s%d", trace_name(kind), a);
        struct lg_adapter_params ap = {.name = name, .global_batch = g_batch, .rank = 16, .alpha = 32, .lr = 1e-4};
        CHECK(lg_job_add_adapter(job, &ap, ds, NULL));
    }
    free(len);
    return job;
}

struct result {
    struct lg_plan_summary sum;
    struct lg_sim_stats st;
    double plan_ms; /* median */
};

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Validate first (plan and timeline), then time the planner. */
static struct result run(const lg_job_t *job, enum lg_plan_algo algo, unsigned flags, int reps)
{
    struct lg_plan_params pp = lg_plan_params_default();
    pp.algo = algo;
    pp.flags = flags;
    lg_plan_t *plan;
    lg_sim_t *sim;
    CHECK(lg_plan_build(job, &pp, &plan));
    CHECK(lg_plan_verify(job, plan));
    struct lg_sim_params sp = {.record_events = 1};
    CHECK(lg_sim_run(job, plan, &sp, &sim));
    CHECK(lg_sim_verify(job, plan, sim));
    struct result r;
    lg_plan_get_summary(plan, &r.sum);
    lg_sim_get_stats(sim, &r.st);
    r.st.stage_bubble = NULL;
    r.st.rank_busy_us = NULL;
    lg_sim_free(sim);
    lg_plan_free(plan);
    double t[64];
    reps = reps > 64 ? 64 : reps;
    for (int i = 0; i < reps; i++) {
        CHECK(lg_plan_build(job, &pp, &plan));
        struct lg_plan_summary s;
        lg_plan_get_summary(plan, &s);
        t[i] = s.plan_ms;
        lg_plan_free(plan);
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    r.plan_ms = t[reps / 2];
    return r;
}

static void header(void)
{
    printf("%-2s %-8s %-2s %-2s | %5s %5s %6s %6s | %6s | %6s %6s %6s | %9s %9s %9s | %5s %5s | %7s %5s | %5s\n",
           "A", "trace", "S", "DP", "mbs", "LBpad", "/LBpad", "/LBtok", "waste", "bub%", "meg%", "mlora%", "ours ms",
           "meg ms", "mlora ms", "xMeg", "xmLo", "plan ms", "tgt", "holds");
}

static void row(int A, int trace, int S, int D)
{
    lg_job_t *job = make_job(A, trace, S, D);
    struct result o = run(job, LG_PLAN_PACKED, 0, g_reps);
    struct result m = run(job, LG_PLAN_MEGATRON, 0, 1);
    struct result l = run(job, LG_PLAN_MLORA, 0, 1);
    printf("%-2d %-8s %-2d %-2d | %5zu %5zu %6.3f %6.3f | %5.2f%% | %6.2f %6.2f %6.2f | %9.1f %9.1f %9.1f | %5.2f %5.2f "
           "| %7.2f %5u | %5zu\n",
           A, trace_name(trace), S, D, o.sum.microbatches, o.sum.padded_bound,
           (double)o.sum.microbatches / (double)o.sum.padded_bound,
           (double)o.sum.microbatches / (double)o.sum.lower_bound, 100 * o.sum.waste, 100 * o.st.bubble,
           100 * m.st.bubble, 100 * l.st.bubble, o.st.makespan_us / 1e3, m.st.makespan_us / 1e3,
           l.st.makespan_us / 1e3, m.st.makespan_us / o.st.makespan_us, l.st.makespan_us / o.st.makespan_us,
           o.plan_ms, o.sum.target, o.st.waits);
    fflush(stdout);
    lg_job_free(job);
}

/* What each part of the planner buys, on the target configurations. */
static void ablation(void)
{
    static const struct {
        const char *name;
        unsigned flags;
    } v[] = {{"full", 0},
             {"tokens-only cost", LG_PLAN_TOKENS_ONLY},
             {"no pacing", LG_PLAN_NO_PACING},
             {"no merge pass", LG_PLAN_NO_MERGE},
             {"no smoothing", LG_PLAN_NO_SMOOTH},
             {"slot pass only", LG_PLAN_NO_REFINE},
             {"no rank search", LG_PLAN_NO_RANK_SEARCH}};
    printf("\nablation: 4 adapters, S=4, DP=1, capacity %u, global batch %d\n", g_cap, g_batch);
    printf("%-6s %-18s | %6s %6s %6s | %7s | %9s | %6s | %7s\n", "trace", "variant", "mbs", "/LBpad", "/LBtok", "bubble",
           "ms", "waste", "plan ms");
    int traces[2] = {LG_TRACE_MIX, HET};
    for (int t = 0; t < 4; t++) {
        int D = 1 + t / 2;
        if (t == 2)
            printf("\nablation: 4 adapters, S=4, DP=2, capacity %u, global batch %d\n", g_cap, g_batch);
        lg_job_t *job = make_job(4, traces[t % 2], 4, D);
        for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
            struct result r = run(job, LG_PLAN_PACKED, v[i].flags, g_reps);
            printf("%-6s %-18s | %6zu %6.3f %6.3f | %6.2f%% | %9.1f | %5.2f%% | %7.2f\n", trace_name(traces[t % 2]), v[i].name,
                   r.sum.microbatches, (double)r.sum.microbatches / (double)r.sum.padded_bound,
                   (double)r.sum.microbatches / (double)r.sum.lower_bound, 100 * r.st.bubble,
                   r.st.makespan_us / 1e3, 100 * r.sum.waste, r.plan_ms);
        }
        lg_job_free(job);
    }
}

/* What the data-parallel bubble depends on: 4 adapters at S=4, DP=2 against DP=1 with the same samples per rank
 * and step (global batch B at DP=2 is B/2 per rank), and the global batch doubled. Each rank of a DP=2 plan
 * holds half of every global batch, and the next batch still waits S positions for the step, so DP=2 at batch
 * B has DP=1's chains at batch B/2. */
static void per_rank_batch(void)
{
    printf("\nper-rank batch: 4 adapters, S=4, capacity %u (bubble of ours; samples per rank and step in brackets)\n",
           g_cap);
    printf("%-6s | %-18s %-18s %-18s %-18s\n", "trace", "DP=2, batch B", "DP=1, batch B/2", "DP=2, batch 2B",
           "DP=1, batch B");
    const int traces[2] = {LG_TRACE_MIX, HET}, keep = g_batch;
    for (int t = 0; t < 2; t++) {
        const int conf[4][2] = {{2, keep}, {1, keep / 2}, {2, 2 * keep}, {1, keep}}; /* {DP, batch} */
        printf("%-6s |", trace_name(traces[t]));
        for (int c = 0; c < 4; c++) {
            g_batch = conf[c][1] > 0 ? conf[c][1] : 1;
            lg_job_t *job = make_job(4, traces[t], 4, conf[c][0]);
            struct result r = run(job, LG_PLAN_PACKED, 0, 1);
            char cell[32];
            snprintf(cell, sizeof cell, "%.2f%% (%d)", 100 * r.st.bubble, g_batch / conf[c][0]);
            printf(" %-18s", cell);
            lg_job_free(job);
        }
        printf("\n");
    }
    g_batch = keep;
}

int main(int argc, char **argv)
{
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--samples") && i + 1 < argc)
            g_samples = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            g_batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--capacity") && i + 1 < argc)
            g_cap = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            g_reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else {
            fprintf(stderr, "usage: bench_sched [--samples N] [--batch B] [--capacity C] [--reps R] [--quick]\n");
            return 2;
        }
    }
    if (g_reps < 1)
        g_reps = 1;
    printf("scheduler: %zu samples per adapter, global batch %d, capacity %u, pad 16, Llama-8B-like cost model\n"
           "mbs: our microbatches (all ranks); LBpad = ceil(our padded tokens / C), /LBpad and /LBtok: mbs over that\n"
           "and over ceil(real tokens / C); bub%%/meg%%/mlora%%: simulated bubble of ours / Megatron-style / mLoRA-style;\n"
           "xMeg, xmLo: their makespan over ours; plan ms: median wall time of lg_plan_build (ours), one thread;\n"
           "holds: forwards of ours held for an optimizer step (simulated)\n\n",
           g_samples, g_batch, g_cap);
    header();
    static const int Ss[3] = {1, 2, 4}, Ds[2] = {1, 2};
    for (int A = 1; A <= 4; A += 3)
        for (int t = 0; t <= HET; t++) {
            if (t == HET && A == 1)
                continue; /* heterogeneous needs several adapters */
            for (int si = 0; si < 3; si++)
                for (int di = 0; di < 2; di++) {
                    if (quick && Ss[si] != 4) /* the target configurations, DP=1 and DP=2 */
                        continue;
                    row(A, t, Ss[si], Ds[di]);
                }
        }
    ablation();
    per_rank_batch();
    return 0;
}
