/* measure.c: the tuner's timing harness. Every candidate is first run once and checked against the reference
 * (candidate 0, the default configuration), so a configuration that builds but computes something else is
 * never a winner; one that fails to build, launch or match scores +inf with its reason. The kept candidates
 * then run a warm-up each and `rounds` interleaved rounds (candidate order rotating per round, so a clock or
 * thermal drift falls on all of them alike), each run timed by a pair of CUDA events; the score is the median.
 * Runs shorter than about 50 us are repeated inside one event pair so the events' resolution does not
 * dominate. Unless the bench asks for a warm L2, each sample first overwrites twice the L2's size of scratch
 * memory (outside the events): inside a training step a layer's weights and inputs have been evicted by the
 * layers before it, and a candidate timed with them still in L2 looks faster than it runs there
 * (LORAGEN_TUNE_WARM_L2=1 turns the flush off). */
#include "lg_tune.h"
#include "lg_base.h"
#include "lg_gpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_TIMED_MS 0.05

static void set_failed(struct lg_tune_result *r, enum lg_tune_outcome o, const char *what)
{
    r->outcome = o;
    r->ms = INFINITY;
    snprintf(r->why, sizeof r->why, "%s", what);
}

/* select + run + synchronise + check, for candidate i. */
static enum lg_status validate(const struct lg_tune_bench *b, int i, struct lg_tune_result *r)
{
    char msg[256];
    enum lg_status st = b->select(b->u, i);
    if (st == LG_OK)
        st = b->run(b->u, b->stream);
    if (st == LG_OK)
        st = lg_cu_check(cuStreamSynchronize(b->stream), "tuner: synchronising after a candidate");
    if (st != LG_OK) {
        snprintf(msg, sizeof msg, "failed to build or launch: %s", lg_last_error());
        set_failed(r, LG_TUNE_FAILED, msg);
        return st;
    }
    int ok = 1;
    if ((st = b->check(b->u, i, &r->err, &ok)) != LG_OK) {
        snprintf(msg, sizeof msg, "check failed: %s", lg_last_error());
        set_failed(r, LG_TUNE_FAILED, msg);
        return st;
    }
    if (!ok || isnan(r->err)) {
        snprintf(msg, sizeof msg, "output differs from the default configuration's (error %.3g)", r->err);
        set_failed(r, LG_TUNE_MISMATCH, msg);
        return LG_ERR_INVALID;
    }
    r->outcome = LG_TUNE_KEPT;
    return LG_OK;
}

/* Scratch memory of twice the L2's size, written before each sample to evict what the last one left there. */
struct flush {
    CUdeviceptr p;
    size_t bytes;
    unsigned tick;
};

static enum lg_status flush_init(const struct lg_tune_bench *b, struct flush *f)
{
    memset(f, 0, sizeof *f);
    const char *env = getenv("LORAGEN_TUNE_WARM_L2");
    if (b->warm_l2 || (env && !strcmp(env, "1")))
        return LG_OK;
    CUdevice dev;
    int l2 = 0;
    enum lg_status st = lg_cu_check(cuCtxGetDevice(&dev), "tuner: cuCtxGetDevice");
    if (st == LG_OK)
        st = lg_cu_check(cuDeviceGetAttribute(&l2, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, dev), "tuner: L2 size");
    if (st != LG_OK || l2 <= 0)
        return st;
    f->bytes = 2 * (size_t)l2;
    st = lg_cu_check(cuMemAlloc(&f->p, f->bytes), "tuner: the L2 flush buffer");
    if (st != LG_OK)
        f->p = 0, f->bytes = 0;
    return st;
}

static void flush_free(struct flush *f)
{
    if (f->p)
        cuMemFree(f->p);
    f->p = 0;
}

/* One timed sample of candidate i: `reps` runs between two events (after the L2 flush, when there is one). */
static enum lg_status sample(const struct lg_tune_bench *b, int i, int reps, CUevent e0, CUevent e1, double *ms,
                             struct flush *fl)
{
    enum lg_status st = b->select(b->u, i);
    if (st == LG_OK && fl && fl->p)
        st = lg_cu_check(cuMemsetD32Async(fl->p, ++fl->tick, fl->bytes / 4, b->stream), "tuner: flushing L2");
    if (st == LG_OK)
        st = lg_cu_check(cuEventRecord(e0, b->stream), "tuner: cuEventRecord");
    for (int k = 0; k < reps && st == LG_OK; k++)
        st = b->run(b->u, b->stream);
    if (st == LG_OK)
        st = lg_cu_check(cuEventRecord(e1, b->stream), "tuner: cuEventRecord");
    if (st == LG_OK)
        st = lg_cu_check(cuEventSynchronize(e1), "tuner: cuEventSynchronize");
    float f = 0;
    if (st == LG_OK)
        st = lg_cu_check(cuEventElapsedTime(&f, e0, e1), "tuner: cuEventElapsedTime");
    *ms = (double)f / reps;
    return st;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static enum lg_status time_kept(const struct lg_tune_bench *b, struct lg_tune_result *res, CUevent e0, CUevent e1)
{
    const int warm = b->warmup > 0 ? b->warmup : 2, rounds = b->rounds > 0 ? b->rounds : 9;
    double first;
    struct flush fl;
    enum lg_status st = flush_init(b, &fl);
    if (st == LG_OK)
        st = sample(b, 0, 1, e0, e1, &first, &fl);
    if (st != LG_OK) {
        flush_free(&fl);
        return lg_fail_wrap(st, "tuner: timing the default configuration: ");
    }
    const int reps = first >= MIN_TIMED_MS ? 1 : (int)ceil(MIN_TIMED_MS / (first > 1e-4 ? first : 1e-4));
    double *t = calloc((size_t)b->ncand * (size_t)rounds, sizeof *t);
    if (!t) {
        flush_free(&fl);
        return lg_fail(LG_ERR_OOM, "tuner: out of memory");
    }
    double ms;
    for (int i = 0; i < b->ncand; i++)
        for (int w = 0; w < warm && res[i].outcome == LG_TUNE_KEPT; w++)
            if (sample(b, i, reps, e0, e1, &ms, NULL) != LG_OK)
                set_failed(&res[i], LG_TUNE_FAILED, lg_last_error());
    for (int r = 0; r < rounds; r++)
        for (int j = 0; j < b->ncand; j++) {
            int i = (j + r) % b->ncand;
            if (res[i].outcome != LG_TUNE_KEPT)
                continue;
            if (sample(b, i, reps, e0, e1, &t[(size_t)i * rounds + r], &fl) != LG_OK)
                set_failed(&res[i], LG_TUNE_FAILED, lg_last_error());
        }
    for (int i = 0; i < b->ncand; i++)
        if (res[i].outcome == LG_TUNE_KEPT) {
            qsort(t + (size_t)i * rounds, (size_t)rounds, sizeof *t, cmp_double);
            res[i].ms = t[(size_t)i * rounds + rounds / 2];
        }
    free(t);
    flush_free(&fl);
    if (res[0].outcome != LG_TUNE_KEPT)
        return lg_fail(LG_ERR_CUDA, "tuner: the default configuration failed while timed: %s", res[0].why);
    return LG_OK;
}

enum lg_status lg_tune_measure(const struct lg_tune_bench *b, struct lg_tune_result *res, int *best)
{
    if (!b || !res || !best || b->ncand < 1 || !b->select || !b->run || !b->check)
        return lg_fail(LG_ERR_INVALID, "lg_tune_measure: a candidate list with select, run and check is required");
    memset(res, 0, sizeof *res * (size_t)b->ncand);
    enum lg_status st = validate(b, 0, &res[0]);
    if (st != LG_OK)
        return lg_fail(st == LG_ERR_INVALID ? LG_ERR_INTERNAL : st,
                       "tuner: the default configuration (the reference) failed: %s", res[0].why);
    for (int i = 1; i < b->ncand; i++) {
        validate(b, i, &res[i]);
        lg_clear_error();
    }
    CUevent e0 = NULL, e1 = NULL;
    st = lg_cu_check(cuEventCreate(&e0, CU_EVENT_DEFAULT), "tuner: cuEventCreate");
    if (st == LG_OK)
        st = lg_cu_check(cuEventCreate(&e1, CU_EVENT_DEFAULT), "tuner: cuEventCreate");
    if (st == LG_OK)
        st = time_kept(b, res, e0, e1);
    if (e0)
        cuEventDestroy(e0);
    if (e1)
        cuEventDestroy(e1);
    if (st != LG_OK)
        return st;
    *best = 0;
    for (int i = 1; i < b->ncand; i++)
        if (res[i].outcome == LG_TUNE_KEPT && res[i].ms < res[*best].ms)
            *best = i;
    return LG_OK;
}
