/* trace.c: synthetic sample-length traces for tests and benchmarks. Lengths are lognormal, clamped
 * to [16, 4096] tokens; the spread (sigma of ln length) is a fit to each summarisation dataset's article
 * lengths, and mu is solved so that the *clamped* mean hits the dataset's mean token count (clamping at 4096
 * pulls the mean of the long "wikisum" documents down by ~5%). A seeded xoshiro256** generator makes every
 * trace reproducible on every platform. */
#include "sched_internal.h"
#include "lg_base.h"

#include <math.h>
#include <string.h>

#define TRACE_MIN 16.0
#define TRACE_MAX 4096.0

static const struct {
    const char *name;
    double mean, sigma;
} fits[] = {
    {"xsum", 560.0, 0.55},    /* XSum articles: ~430 words, CV ~0.6 */
    {"cnn", 1000.0, 0.50},    /* CNN/DailyMail: ~780 words, CV ~0.5 */
    {"wikisum", 2300.0, 0.60}, /* WikiSum-style long documents, ~10% hit the 4096 cap */
};

static double Phi(double z) { return 0.5 * erfc(-z / sqrt(2.0)); }

/* E[clamp(X, lo, hi)] for ln X ~ N(mu, s^2). */
static double clamped_mean(double mu, double s)
{
    double a = log(TRACE_MIN), b = log(TRACE_MAX);
    double mid = exp(mu + s * s / 2) * (Phi((b - mu - s * s) / s) - Phi((a - mu - s * s) / s));
    return TRACE_MIN * Phi((a - mu) / s) + mid + TRACE_MAX * (1 - Phi((b - mu) / s));
}

static double solve_mu(double mean, double s)
{
    double lo = log(TRACE_MIN) - 4 * s, hi = log(TRACE_MAX) + 4 * s;
    for (int i = 0; i < 200; i++) {
        double mid = 0.5 * (lo + hi);
        if (clamped_mean(mid, s) < mean)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

void lg_trace_fit(enum lg_trace_kind kind, double *mu, double *sigma, double *mean)
{
    if (kind >= LG_TRACE_MIX) { /* the mix has no single fit: report its target mean */
        *mu = *sigma = 0;
        *mean = (fits[0].mean + fits[1].mean + fits[2].mean) / 3;
        return;
    }
    *sigma = fits[kind].sigma;
    *mean = fits[kind].mean;
    *mu = solve_mu(fits[kind].mean, fits[kind].sigma);
}

const char *lg_trace_kind_name(enum lg_trace_kind k)
{
    return k == LG_TRACE_MIX ? "mix" : k < LG_TRACE_MIX ? fits[k].name : "?";
}

enum lg_status lg_trace_kind_parse(const char *name, enum lg_trace_kind *out)
{
    for (int k = 0; k < LG_TRACE_KINDS; k++)
        if (name && !strcmp(name, lg_trace_kind_name((enum lg_trace_kind)k))) {
            *out = (enum lg_trace_kind)k;
            return LG_OK;
        }
    return lg_fail(LG_ERR_INVALID, "unknown trace kind '%s' (expected xsum, cnn, wikisum or mix)",
                   name ? name : "(null)");
}

struct rng {
    uint64_t s[4];
};

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next(struct rng *r)
{
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

static double uniform(struct rng *r) { return ((double)(next(r) >> 11) + 0.5) / 9007199254740992.0; }

static void seed_rng(struct rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) { /* splitmix64 expansion */
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        r->s[i] = z ^ (z >> 31);
    }
}

enum lg_status lg_trace_generate(enum lg_trace_kind kind, size_t n, uint64_t seed, uint32_t *out)
{
    if (!out && n)
        return lg_fail(LG_ERR_INVALID, "lg_trace_generate: null output");
    if (kind < 0 || kind >= LG_TRACE_KINDS)
        return lg_fail(LG_ERR_INVALID, "lg_trace_generate: unknown kind %d", (int)kind);
    double mu[3];
    for (int k = 0; k < 3; k++)
        mu[k] = solve_mu(fits[k].mean, fits[k].sigma);
    struct rng r;
    seed_rng(&r, seed);
    for (size_t i = 0; i < n; i++) {
        int k = kind == LG_TRACE_MIX ? (int)(uniform(&r) * 3) : (int)kind;
        if (k > 2)
            k = 2;
        double z = sqrt(-2 * log(uniform(&r))) * cos(2 * M_PI * uniform(&r)); /* Box-Muller */
        double l = round(exp(mu[k] + fits[k].sigma * z));
        out[i] = (uint32_t)(l < TRACE_MIN ? TRACE_MIN : l > TRACE_MAX ? TRACE_MAX : l);
    }
    return LG_OK;
}
