/* tuner_descent.c: the steps every tuner's coordinate descent takes the same way (tuner_internal.h): its log
 * lines, the random inputs' stream, reading sampled output rows back, the error against the reference, one
 * group's measurement and the final side-by-side round. */
#include "tuner_internal.h"
#include "lg_base.h"
#include "lg_half.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lg_tuner_logf(const struct lg_tuner_opts *o, const char *fmt, ...)
{
    if (!o->log)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    o->log(o->log_u, line);
}

uint64_t lg_tuner_mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

enum lg_status lg_tuner_fetch_rows(enum lg_dtype dtype, const int64_t *rows, int nrows, CUdeviceptr src,
                                   int64_t cols, float *dst)
{
    uint16_t *h = malloc((size_t)cols * 2);
    if (!h)
        return lg_fail(LG_ERR_OOM, "tuner: out of host memory");
    enum lg_status st = LG_OK;
    for (int i = 0; i < nrows && st == LG_OK; i++) {
        st = lg_cu_check(cuMemcpyDtoH(h, src + (CUdeviceptr)(rows[i] * cols * 2), (size_t)cols * 2),
                         "tuner: reading outputs");
        for (int64_t j = 0; j < cols && st == LG_OK; j++)
            dst[(size_t)i * (size_t)cols + (size_t)j] = lg_half_to_f32(dtype, h[j]);
    }
    free(h);
    return st;
}

/* Relative L2 error of got against ref over [lo, hi); NaN anywhere gives NaN. */
static double rel_l2(const float *got, const float *ref, size_t lo, size_t hi)
{
    double num = 0, den = 0;
    for (size_t i = lo; i < hi; i++) {
        double d = (double)got[i] - (double)ref[i];
        num += d * d, den += (double)ref[i] * ref[i];
    }
    return isnan(num) ? NAN : den > 0 ? sqrt(num / den) : sqrt(num);
}

double lg_tuner_worst_err(const float *got, const float *ref, const size_t *cut, int nparts)
{
    double e = 0;
    for (int k = 0; k < nparts; k++) {
        double ek = rel_l2(got, ref, cut[k], cut[k + 1]);
        e = isnan(ek) || ek > e ? ek : e;
    }
    return e;
}

enum lg_status lg_tuner_measure(const struct lg_tuner_run *r, const char *group, int n,
                                struct lg_tuner_outcome *out, double *ms)
{
    struct lg_tune_result *res = calloc((size_t)n, sizeof *res);
    if (!res)
        return lg_fail(LG_ERR_OOM, "tuner: out of memory");
    struct lg_tune_bench b = {.ncand = n, .u = r->u, .select = r->select, .run = r->run, .check = r->check,
                              .warmup = r->o->warmup, .rounds = r->o->rounds};
    int best = 0;
    enum lg_status st = lg_tune_measure(&b, res, &best);
    for (int i = 0; i < n && st == LG_OK; i++) {
        out->failed += res[i].outcome == LG_TUNE_FAILED;
        out->mismatched += res[i].outcome == LG_TUNE_MISMATCH;
        if (res[i].outcome != LG_TUNE_KEPT)
            lg_tuner_logf(r->o, "  %s candidate %d scores +inf: %s", group, i, res[i].why);
        else if (res[i].err > out->max_err)
            out->max_err = res[i].err;
    }
    if (st == LG_OK) {
        out->entry.candidates += n - 1;
        ms[0] = res[0].ms, ms[1] = res[best].ms;
        if (best != 0)
            memcpy(r->cand, (char *)r->cand + (size_t)best * r->csize, r->csize);
    }
    free(res);
    return st;
}

int lg_tuner_algo_cands(const struct lg_tuner_run *r, size_t algo_off, int cnt)
{
    char *c = r->cand;
    int n = 1, cur;
    memcpy(&cur, c + algo_off, sizeof cur);
    for (int a = 0; a < cnt && a < 8; a++)
        if (a != cur) {
            memcpy(c + (size_t)n * r->csize, c, r->csize);
            memcpy(c + (size_t)n * r->csize + algo_off, &a, sizeof a);
            n++;
        }
    return n;
}

enum lg_status lg_tuner_final(const struct lg_tuner_run *r, const void *base, struct lg_tuner_outcome *out)
{
    char *c = r->cand;
    memcpy(c + r->csize, c, r->csize); /* the winner to cand[1], the reference to cand[0] */
    memcpy(c, base, r->csize);
    const int kept = out->entry.candidates;
    double ms[2];
    enum lg_status st = lg_tuner_measure(r, "final", 2, out, ms);
    out->entry.candidates = kept > 0 ? kept : 1;
    if (st == LG_OK)
        out->entry.default_ms = ms[0], out->entry.time_ms = ms[1];
    return st;
}
