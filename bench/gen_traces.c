/* gen_traces.c: writes synthetic sample-length traces (one length a line) for the scheduler's tests,
 * benchmarks and example jobs. Lengths are lognormal fits of summarisation datasets clamped to [16, 4096]
 * (lg_trace_generate); the same kind, count and seed always give the same file.
 *
 *   gen_traces KIND N [--seed S] [--out FILE] [--stats]
 *   KIND: xsum (mean ~560 tokens), cnn (~1000), wikisum (~2300) or mix (each sample from one of the three)
 */
#include "lg_sched.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: gen_traces KIND N [--seed S] [--out FILE] [--stats]\n"
               "  KIND  xsum | cnn | wikisum | mix\n"
               "  N     number of samples\n"
               "  --seed S   generator seed (default 1)\n"
               "  --out FILE write there instead of stdout\n"
               "  --stats    print mean and percentiles to stderr\n");
}

static void stats(const uint32_t *len, size_t n)
{
    uint32_t *s = malloc(n * sizeof *s);
    if (!s)
        return;
    memcpy(s, len, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_u32);
    double mean = 0;
    size_t capped = 0;
    for (size_t i = 0; i < n; i++) {
        mean += (double)s[i] / (double)n;
        capped += s[i] == 4096;
    }
    fprintf(stderr, "n %zu mean %.1f p10 %u p50 %u p90 %u p99 %u max %u, at the 4096 cap %.1f%%\n", n, mean,
            s[n / 10], s[n / 2], s[n * 9 / 10], s[n * 99 / 100], s[n - 1], 100.0 * (double)capped / (double)n);
    free(s);
}

int main(int argc, char **argv)
{
    const char *kind_s = NULL, *n_s = NULL, *out = NULL;
    uint64_t seed = 1;
    int want_stats = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 0);
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(argv[i], "--stats")) {
            want_stats = 1;
        } else if (!kind_s) {
            kind_s = argv[i];
        } else if (!n_s) {
            n_s = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    enum lg_trace_kind kind;
    char *end = NULL;
    size_t n = n_s ? strtoul(n_s, &end, 10) : 0;
    if (!kind_s || !n_s || *end || n == 0 || lg_trace_kind_parse(kind_s, &kind) != LG_OK) {
        if (kind_s && lg_trace_kind_parse(kind_s, &kind) != LG_OK)
            fprintf(stderr, "gen_traces: %s\n", lg_last_error());
        usage(stderr);
        return 2;
    }
    uint32_t *len = malloc(n * sizeof *len);
    if (!len || lg_trace_generate(kind, n, seed, len) != LG_OK) {
        fprintf(stderr, "gen_traces: %s\n", len ? lg_last_error() : "out of memory");
        return 1;
    }
    FILE *f = out ? fopen(out, "w") : stdout;
    if (!f) {
        perror(out);
        return 1;
    }
    double mu, sigma, mean;
    lg_trace_fit(kind, &mu, &sigma, &mean);
    fprintf(f, "# gen_traces %s %zu --seed %" PRIu64 ": lognormal lengths clamped to [16, 4096], target mean %.0f",
            lg_trace_kind_name(kind), n, seed, mean);
    if (sigma > 0)
        fprintf(f, " (mu %.4f, sigma %.2f)", mu, sigma);
    fputc('\n', f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%u\n", len[i]);
    if (want_stats)
        stats(len, n);
    int bad = ferror(f);
    if (out && fclose(f) != 0)
        bad = 1;
    free(len);
    if (bad) {
        fprintf(stderr, "gen_traces: write error\n");
        return 1;
    }
    return 0;
}
