/* bench_layer.c: what LoRA costs inside one decoder layer, forward + backward, measured on the trainer's own
 * decoder (lg_decoder.h) and backend. The same microbatch runs through the same model twice per round:
 *   lora   every token owned by one adapter with LoRA on all seven projections (rank r, alpha, dropout p)
 *   base   every token owned by no adapter (segment adapter -1): the frozen layer, forward and the backward's
 *          dX (what layers below an adapted one need), and no LoRA work at all
 * Everything else in a step (embedding, final norm, LM head with cross-entropy, the layer-0 backward without
 * dX) is the same in both, and cancels in the per-layer figure, which comes from two models that differ only in
 * their layer count (written by `loragen init-model --layers N`, bench/bench_layer.sh):
 *   per layer = (T(model B) - T(model A)) / (layers B - layers A), for each mode.
 * Rounds interleave the four (model, mode) runs; each figure is a median. The LoRA overhead is lora/base - 1
 * per layer (issue 11's target: at most 5%).
 *
 * usage: bench_layer MODEL_A MODEL_B [--backend cuda|cpu] [--tokens N] [--seqs N] [--rank R] [--alpha A]
 *                    [--dropout P] [--rounds N] [--deterministic 0|1] [--mode both|lora|base] [--csv FILE]
 * --mode lora or base runs only that mode (for a profiler: `ncu ... bench_layer A B --mode lora --rounds 1`
 * sees only LoRA steps; bench/ncu_layer.sh); the overhead needs both. */
#include "lg_decoder.h"
#include "lg_hf.h"
#include "lg_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct opts {
    const char *model[2], *backend, *csv;
    int64_t tokens;
    int seqs, rank, rounds, deterministic;
    int mode; /* -1 both, 0 lora only, 1 base only */
    double alpha, dropout;
};

struct run {
    struct lg_model_config cfg;
    lg_st_t *st;
    lg_backend_t *be;
    lg_decoder_t *dec;
    struct lg_decoder_adapter ad;
    int32_t *ids, *target, *cu;
    float *weight, *loss;
    double *ms[2]; /* per round: lora, base */
};

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_layer MODEL_A MODEL_B [--backend cuda|cpu] [--tokens N] [--seqs N] [--rank R]\n"
               "                   [--alpha A] [--dropout P] [--rounds N] [--deterministic 0|1]\n"
               "                   [--mode both|lora|base] [--csv FILE]\n"
               "MODEL_A and MODEL_B: model directories of the same dimensions and different layer counts\n"
               "(loragen init-model SPEC DIR --layers N). Defaults: cuda, 8192 tokens in 4 samples, r 16, alpha 32,\n"
               "p 0.1, 10 rounds, deterministic 0, mode both (lora or base: only that mode, e.g. for a profiler).\n");
}

static long num_arg(const char *flag, const char *v, long lo, long hi)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < lo || x > hi) {
        fprintf(stderr, "bench_layer: %s %s: expected an integer in %ld..%ld\n", flag, v, lo, hi);
        exit(2);
    }
    return x;
}

static void parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.backend = "cuda", .tokens = 8192, .seqs = 4, .rank = 16, .rounds = 10, .alpha = 32,
                       .dropout = 0.1, .mode = -1};
    int nm = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (a[0] != '-') {
            if (nm == 2) {
                fprintf(stderr, "bench_layer: a third model '%s'\n", a);
                exit(2);
            }
            o->model[nm++] = a;
            continue;
        }
        if (!v) {
            fprintf(stderr, "bench_layer: %s needs a value\n", a);
            exit(2);
        }
        i++;
        if (!strcmp(a, "--backend"))
            o->backend = v;
        else if (!strcmp(a, "--csv"))
            o->csv = v;
        else if (!strcmp(a, "--tokens"))
            o->tokens = num_arg(a, v, 2, 1 << 20);
        else if (!strcmp(a, "--seqs"))
            o->seqs = (int)num_arg(a, v, 1, 1 << 16);
        else if (!strcmp(a, "--rank"))
            o->rank = (int)num_arg(a, v, 4, 128);
        else if (!strcmp(a, "--rounds"))
            o->rounds = (int)num_arg(a, v, 1, 100000);
        else if (!strcmp(a, "--deterministic"))
            o->deterministic = (int)num_arg(a, v, 0, 1);
        else if (!strcmp(a, "--mode")) {
            if (strcmp(v, "both") && strcmp(v, "lora") && strcmp(v, "base")) {
                fprintf(stderr, "bench_layer: --mode %s: expected both, lora or base\n", v);
                exit(2);
            }
            o->mode = !strcmp(v, "both") ? -1 : !strcmp(v, "lora") ? 0 : 1;
        } else if (!strcmp(a, "--alpha"))
            o->alpha = atof(v);
        else if (!strcmp(a, "--dropout"))
            o->dropout = atof(v);
        else {
            fprintf(stderr, "bench_layer: unknown option %s\n", a);
            usage(stderr);
            exit(2);
        }
    }
    if (nm != 2 || (strcmp(o->backend, "cuda") && strcmp(o->backend, "cpu")) || o->seqs > o->tokens ||
        !(o->dropout >= 0 && o->dropout < 1) || !(o->alpha > 0)) {
        usage(stderr);
        exit(2);
    }
}

static void open_run(struct run *r, const char *dir, const struct opts *o, uint64_t seed)
{
    memset(r, 0, sizeof *r);
    CHECK(lg_model_config_read(dir, &r->cfg));
    CHECK(lg_st_open_model(dir, &r->st));
    CHECK(lg_model_config_check_weights(&r->cfg, r->st));
    if (!strcmp(o->backend, "cpu")) {
        CHECK(lg_backend_cpu_init(&r->be));
    } else {
        struct lg_backend_cuda_params p = {.dtype = r->cfg.has_dtype && r->cfg.dtype == LG_FP16 ? LG_FP16 : LG_BF16,
                                           .deterministic = o->deterministic, .max_tokens = o->tokens,
                                           .nadapters = 1};
        CHECK(lg_backend_cuda_init(&p, &r->be));
    }
    r->ad = (struct lg_decoder_adapter){.rank = o->rank, .alpha = (float)o->alpha, .dropout = (float)o->dropout,
                                        .targets = LG_PEFT_ALL_MODULES};
    struct lg_decoder_params dp = {.cfg = &r->cfg, .nadapters = 1, .adapters = &r->ad, .max_tokens = o->tokens,
                                   .max_seqs = o->seqs};
    CHECK(lg_decoder_init(r->be, &dp, r->st, &r->dec));
    /* A and B random (a fresh adapter's B = 0 would do the same work; random values keep the data realistic) */
    for (int l = 0; l < r->cfg.num_hidden_layers; l++)
        for (int m = 0; m < LG_PEFT_MODULE_COUNT; m++) {
            struct lg_lora_params p;
            CHECK(lg_decoder_lora(r->dec, l, (enum lg_peft_module)m, 0, &p));
            size_t na = (size_t)(p.rank * p.in), nb = (size_t)(p.rank * p.out);
            float *buf = malloc((na > nb ? na : nb) * sizeof *buf);
            lg_test_fill(buf, na, seed++, 0.02f);
            CHECK(r->be->ops->upload(r->be, p.a, buf, na * sizeof *buf));
            lg_test_fill(buf, nb, seed++, 0.02f);
            CHECK(r->be->ops->upload(r->be, p.b, buf, nb * sizeof *buf));
            free(buf);
        }
    CHECK(lg_decoder_lora_sync(r->dec, 0));
    int64_t n = o->tokens;
    r->ids = malloc((size_t)n * sizeof *r->ids);
    r->target = malloc((size_t)n * sizeof *r->target);
    r->weight = malloc((size_t)n * sizeof *r->weight);
    r->loss = malloc((size_t)n * sizeof *r->loss);
    r->cu = malloc((size_t)(o->seqs + 1) * sizeof *r->cu);
    for (int s = 0; s <= o->seqs; s++)
        r->cu[s] = (int32_t)(n * s / o->seqs);
    uint64_t x = seed;
    for (int64_t t = 0; t < n; t++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        r->ids[t] = (int32_t)((x >> 33) % (uint64_t)r->cfg.vocab_size);
    }
    for (int s = 0; s < o->seqs; s++)
        for (int32_t t = r->cu[s]; t < r->cu[s + 1]; t++) {
            int last = t + 1 == r->cu[s + 1];
            r->target[t] = last ? -100 : r->ids[t + 1];
            r->weight[t] = last ? 0.0f : 1.0f / (float)n;
        }
    r->ms[0] = calloc((size_t)o->rounds, sizeof(double));
    r->ms[1] = calloc((size_t)o->rounds, sizeof(double));
}

static void close_run(struct run *r)
{
    lg_decoder_free(r->dec);
    r->be->ops->destroy(r->be);
    lg_st_close(r->st);
    free(r->ids);
    free(r->target);
    free(r->weight);
    free(r->loss);
    free(r->cu);
    free(r->ms[0]);
    free(r->ms[1]);
}

/* One forward + backward; adapter 0 (lora) or -1 (base). Returns the wall time, the step ending on a sync. */
static double step(struct run *r, const struct opts *o, int base, uint64_t seed)
{
    int32_t maxlen = 0;
    for (int s = 0; s < o->seqs; s++)
        if (r->cu[s + 1] - r->cu[s] > maxlen)
            maxlen = r->cu[s + 1] - r->cu[s];
    struct lg_seg seg = {.adapter = base ? -1 : 0, .start = 0, .len = o->tokens};
    struct lg_mb mb = {.n = o->tokens, .nseq = o->seqs, .cu = r->cu, .max_len = maxlen, .nseg = 1, .seg = &seg,
                       .seed = seed, .train = 1};
    struct lg_decoder_batch b = {.mb = &mb, .ids = r->ids, .target = r->target, .weight = r->weight,
                                 .loss = r->loss};
    double t0 = now_ms();
    CHECK(lg_decoder_step(r->dec, &b, 1));
    return now_ms() - t0;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    double *c = malloc((size_t)n * sizeof *c);
    memcpy(c, v, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, cmp);
    double m = n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
    free(c);
    return m;
}

int main(int argc, char **argv)
{
    struct opts o;
    parse(argc, argv, &o);
    struct run r[2];
    for (int k = 0; k < 2; k++)
        open_run(&r[k], o.model[k], &o, 1000 + 7919 * (uint64_t)k);
    int L[2] = {r[0].cfg.num_hidden_layers, r[1].cfg.num_hidden_layers};
    if (L[0] == L[1] || r[0].cfg.hidden_size != r[1].cfg.hidden_size ||
        r[0].cfg.intermediate_size != r[1].cfg.intermediate_size ||
        r[0].cfg.num_attention_heads != r[1].cfg.num_attention_heads) {
        fprintf(stderr, "bench_layer: %s (%d layers) and %s (%d layers) must have the same dimensions and different "
                        "layer counts\n", o.model[0], L[0], o.model[1], L[1]);
        return 2;
    }
    printf("bench_layer: %s; %lld tokens in %d samples; LoRA r %d, alpha %g, p %g on all seven projections; "
           "models of %d and %d layers; %d rounds\n",
           r[0].be->desc, (long long)o.tokens, o.seqs, o.rank, o.alpha, o.dropout, L[0], L[1], o.rounds);
    for (int k = 0; k < 2; k++) /* warm-up: kernels compiled or loaded, workspaces grown, first touch */
        for (int base = 0; base < 2; base++)
            if (o.mode < 0 || o.mode == base)
                step(&r[k], &o, base, 1);
    for (int i = 0; i < o.rounds; i++)
        for (int k = 0; k < 2; k++)
            for (int base = 0; base < 2; base++) {
                int kk = i % 2 ? 1 - k : k; /* alternate which model goes first */
                if (o.mode >= 0 && o.mode != base)
                    continue;
                r[kk].ms[base][i] = step(&r[kk], &o, base, 17 + (uint64_t)i);
            }
    double t[2][2];
    for (int k = 0; k < 2; k++)
        for (int base = 0; base < 2; base++)
            t[k][base] = median(r[k].ms[base], o.rounds);
    double per[2];
    for (int base = 0; base < 2; base++)
        per[base] = (t[1][base] - t[0][base]) / (L[1] - L[0]);
    if (o.mode >= 0) {
        printf("\n| model | %s step ms |\n|---|---|\n", o.mode ? "base" : "lora");
        for (int k = 0; k < 2; k++)
            printf("| %d layers | %.3f |\n", L[k], t[k][o.mode]);
        printf("| per decoder layer | %.3f |\n", per[o.mode]);
        for (int k = 0; k < 2; k++)
            close_run(&r[k]);
        return 0;
    }
    printf("\n| model | lora step ms | base step ms |\n|---|---|---|\n");
    for (int k = 0; k < 2; k++)
        printf("| %d layers | %.3f | %.3f |\n", L[k], t[k][0], t[k][1]);
    printf("\n| per decoder layer, fwd + bwd | ms |\n|---|---|\n| with LoRA | %.3f |\n| without LoRA | %.3f |\n"
           "| LoRA overhead | %+.1f%% |\n",
           per[0], per[1], 100.0 * (per[0] / per[1] - 1.0));
    if (o.csv) {
        FILE *f = fopen(o.csv, "w");
        if (!f) {
            fprintf(stderr, "bench_layer: cannot write %s\n", o.csv);
            return 1;
        }
        fprintf(f, "layers,mode,median_ms\n");
        for (int k = 0; k < 2; k++)
            fprintf(f, "%d,lora,%.4f\n%d,base,%.4f\n", L[k], t[k][0], L[k], t[k][1]);
        fprintf(f, "per_layer,lora,%.4f\nper_layer,base,%.4f\n", per[0], per[1]);
        fclose(f);
    }
    for (int k = 0; k < 2; k++)
        close_run(&r[k]);
    return 0;
}
