/* test_mlora_ref.c: the multi-adapter / merged LoRA reference (lg_ref_mlora.h) on the CPU:
 * - against the single-adapter reference (lg_ref.h) applied per segment: every adapter's Y term, dX
 *   correction, dA and dB, with mixed ranks (multiples of 4) and dropouts, odd boundaries, an empty segment,
 *   a segment of one token, a base-only segment and an adapter with no tokens (its gradients untouched).
 *   The single reference draws masks from element i·K + k of the x it is given, so it gets the whole
 *   microbatch with the other segments' rows zeroed, and W = 0 (its output is then the LoRA term alone);
 * - merged (q/k/v, gate/up, with some modules not adapted) against separate one-module layers with layer
 *   ids layer_id + m: the same numbers;
 * - finite differences for dX, dA and dB (the layer is linear in each);
 * - bad segment tables are errors naming the problem, and touch no output. */
#include "lg_ref.h"
#include "lg_ref_mlora.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <string.h>

static float *rnd(size_t n, uint64_t seed, float scale)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    lg_test_fill(v, n, seed, scale);
    return v;
}

static double max_rel(const double *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        num = d > num ? d : num;
        den = fabs(b[i]) > den ? fabs(b[i]) : den;
    }
    return den > 0 ? num / den : num;
}

struct layer {
    int64_t K, M[3];
    int nmod, nad;
    struct lg_ref_mlora_slot *slot;
    float *w[3];
};

static void layer_make(struct layer *l, int64_t K, int nmod, const int64_t *M, int nad, const int *ranks,
                       const float *drops, uint64_t seed)
{
    memset(l, 0, sizeof *l);
    l->K = K, l->nmod = nmod, l->nad = nad;
    l->slot = calloc((size_t)(nad * nmod), sizeof *l->slot);
    for (int m = 0; m < nmod; m++)
        l->M[m] = M[m], l->w[m] = rnd((size_t)(M[m] * K), seed + 100 + m, 0.1f);
    for (int i = 0; i < nad * nmod; i++) {
        struct lg_ref_mlora_slot *s = &l->slot[i];
        s->rank = ranks[i], s->alpha = 2.0f * ranks[i] + 1, s->dropout = drops[i];
        if (s->rank) {
            s->a = rnd((size_t)(s->rank * K), seed + 200 + i, 0.2f);
            s->b = rnd((size_t)(M[i % nmod] * s->rank), seed + 300 + i, 0.5f);
        }
    }
}

static void layer_free(struct layer *l)
{
    for (int m = 0; m < l->nmod; m++)
        free(l->w[m]);
    for (int i = 0; i < l->nad * l->nmod; i++)
        free((void *)l->slot[i].a), free((void *)l->slot[i].b);
    free(l->slot);
}

static struct lg_ref_mlora ref_of(const struct layer *l, uint32_t layer_id)
{
    struct lg_ref_mlora R = {.K = l->K, .nmod = l->nmod, .nadapters = l->nad, .slot = l->slot, .round = LG_FP32,
                             .seed = 99, .layer_id = layer_id, .train = 1};
    for (int m = 0; m < l->nmod; m++)
        R.M[m] = l->M[m], R.w[m] = l->w[m];
    return R;
}

/* Gradient buffers for every slot, poisoned with a marker so untouched ones can be recognised. */
static void grads_alloc(const struct layer *l, double **da, double **db)
{
    for (int i = 0; i < l->nad * l->nmod; i++) {
        int r = l->slot[i].rank;
        size_t na = (size_t)(r * l->K), nb = (size_t)(l->M[i % l->nmod] * r);
        da[i] = malloc(sizeof(double) * (na ? na : 1));
        db[i] = malloc(sizeof(double) * (nb ? nb : 1));
        for (size_t j = 0; j < (na ? na : 1); j++)
            da[i][j] = 12345.0;
        for (size_t j = 0; j < (nb ? nb : 1); j++)
            db[i][j] = 12345.0;
    }
}

/* One module's slot of one segment through the single-adapter reference, on the whole batch with the other
 * rows zeroed and W = 0; compares the LoRA parts of y, dx, dA, dB. */
static void check_against_single(const struct layer *l, int m, const struct lg_ref_mlora_seg *g, int64_t n,
                                 const float *x, const float *dy, const double *y, const double *y0,
                                 const double *dx, const double *dx0, double *const *da, double *const *db,
                                 uint32_t layer_id)
{
    const struct lg_ref_mlora_slot *c = &l->slot[g->adapter * l->nmod + m];
    const int64_t K = l->K, M = l->M[m], r = c->rank;
    int64_t MT = 0, mo = 0;
    for (int i = 0; i < l->nmod; i++)
        MT += l->M[i], mo += i < m ? l->M[i] : 0;
    float *xs = calloc((size_t)(n * K), sizeof(float)), *dys = calloc((size_t)(n * M), sizeof(float));
    float *w0 = calloc((size_t)(M * K), sizeof(float));
    for (int64_t t = g->start; t < g->start + g->len; t++) {
        memcpy(xs + t * K, x + t * K, sizeof(float) * (size_t)K);
        memcpy(dys + t * M, dy + t * MT + mo, sizeof(float) * (size_t)M);
    }
    struct lg_ref_lora S = {.K = K, .M = M, .r = (int)r, .alpha = c->alpha, .dropout = c->dropout,
                            .round = LG_FP32, .seed = 99, .layer = layer_id + (uint32_t)m, .w = w0, .a = c->a,
                            .b = c->b};
    double *ys = malloc(sizeof(double) * n * M), *dxs = malloc(sizeof(double) * n * K);
    double *das = malloc(sizeof(double) * r * K), *dbs = malloc(sizeof(double) * M * r);
    float *s = malloc(sizeof(float) * n * r), *ds = malloc(sizeof(float) * n * r);
    lg_ref_lora_forward(&S, n, xs, ys, s);
    lg_ref_lora_backward(&S, n, xs, s, dys, dxs, das, dbs, ds);
    /* the multi-adapter Y minus the frozen part (y0) on these rows is the single reference's LoRA term */
    for (int64_t t = g->start; t < g->start + g->len; t++)
        for (int64_t o = 0; o < M; o++) {
            double want = ys[t * M + o], got = y[t * MT + mo + o] - y0[t * MT + mo + o];
            ck_assert_msg(fabs(got - want) <= 1e-9 * (1 + fabs(want)), "Y[%lld,%lld] module %d: %g vs %g",
                          (long long)t, (long long)o, m, got, want);
        }
    /* dx corrections of this slot: compare where only this slot contributes (its rows, module m alone) */
    if (l->nmod == 1)
        for (int64_t t = g->start; t < g->start + g->len; t++)
            for (int64_t k = 0; k < K; k++) {
                double want = dxs[t * K + k], got = dx[t * K + k] - dx0[t * K + k];
                ck_assert_msg(fabs(got - want) <= 1e-9 * (1 + fabs(want)), "dX[%lld,%lld]: %g vs %g",
                              (long long)t, (long long)k, got, want);
            }
    const int si = g->adapter * l->nmod + m;
    ck_assert_msg(max_rel(da[si], das, (size_t)(r * K)) < 1e-12, "dA of slot %d", si);
    ck_assert_msg(max_rel(db[si], dbs, (size_t)(M * r)) < 1e-12, "dB of slot %d", si);
    free(xs), free(dys), free(w0), free(ys), free(dxs), free(das), free(dbs), free(s), free(ds);
}

/* The frozen part alone: y0 = X·Wᵀ and dx0 = dY·W (every adapter's rank 0). */
static void frozen_only(const struct layer *l, int64_t n, const float *x, const float *dy, int nseg,
                        const struct lg_ref_mlora_seg *seg, double *y0, double *dx0)
{
    struct lg_ref_mlora R = ref_of(l, 0);
    struct lg_ref_mlora_slot *none = calloc((size_t)(l->nad * l->nmod), sizeof *none);
    R.slot = none;
    CHECK(lg_ref_mlora_forward(&R, n, x, nseg, seg, y0, NULL));
    CHECK(lg_ref_mlora_backward(&R, n, x, nseg, seg, NULL, dy, dx0, NULL, NULL, NULL));
    free(none);
}

static void run_vs_single(int nmod, const int64_t *M)
{
    const int64_t K = 64, n = 61;
    enum { NAD = 5 };
    int ranks[NAD * 3];
    float drops[NAD * 3];
    static const int rk[] = {4, 8, 12, 16, 20};
    for (int a = 0; a < NAD; a++)
        for (int m = 0; m < nmod; m++) {
            ranks[a * nmod + m] = (a + m) % 4 == 3 ? 0 : rk[(a + 2 * m) % 5];
            drops[a * nmod + m] = (a + m) % 2 ? 0.1f : 0.0f;
        }
    struct layer l;
    layer_make(&l, K, nmod, M, NAD, ranks, drops, lg_test_seed());
    /* adapter 4 has no tokens; a base segment, an empty one and a segment of one token */
    const struct lg_ref_mlora_seg seg[] = {{2, 0, 17}, {-1, 17, 5}, {0, 22, 0}, {1, 22, 1}, {3, 23, 38}};
    const int nseg = 5;
    int64_t MT = 0;
    for (int m = 0; m < nmod; m++)
        MT += M[m];
    float *x = rnd((size_t)(n * K), lg_test_seed() + 1, 1.0f), *dy = rnd((size_t)(n * MT), lg_test_seed() + 2, 1.0f);
    double *y = malloc(sizeof(double) * n * MT), *y0 = malloc(sizeof(double) * n * MT);
    double *dx = malloc(sizeof(double) * n * K), *dx0 = malloc(sizeof(double) * n * K);
    double *da[NAD * 3], *db[NAD * 3];
    grads_alloc(&l, da, db);
    struct lg_ref_mlora R = ref_of(&l, 40);
    const int rmax = lg_ref_mlora_rmax(&R);
    float *s = malloc(sizeof(float) * n * nmod * rmax);
    CHECK(lg_ref_mlora_forward(&R, n, x, nseg, seg, y, s));
    CHECK(lg_ref_mlora_backward(&R, n, x, nseg, seg, s, dy, dx, da, db, NULL));
    frozen_only(&l, n, x, dy, nseg, seg, y0, dx0);
    for (int i = 0; i < nseg; i++)
        for (int m = 0; m < nmod; m++)
            if (seg[i].adapter >= 0 && seg[i].len > 0 && l.slot[seg[i].adapter * nmod + m].rank > 0)
                check_against_single(&l, m, &seg[i], n, x, dy, y, y0, dx, dx0, da, db, 40);
    /* base rows: the frozen part alone */
    for (int64_t t = 17; t < 22; t++)
        for (int64_t o = 0; o < MT; o++)
            ck_assert(y[t * MT + o] == y0[t * MT + o]);
    /* adapter 0 (empty segment) and adapter 4 (absent): gradients untouched */
    for (int m = 0; m < nmod; m++)
        for (int a = 0; a <= 4; a += 4)
            if (l.slot[a * nmod + m].rank)
                ck_assert_msg(da[a * nmod + m][0] == 12345.0 && db[a * nmod + m][0] == 12345.0,
                              "adapter %d without tokens got a gradient", a);
    for (int i = 0; i < NAD * nmod; i++)
        free(da[i]), free(db[i]);
    free(x), free(dy), free(y), free(y0), free(dx), free(dx0), free(s);
    layer_free(&l);
}

START_TEST(matches_single_reference_per_segment)
{
    const int64_t M1[] = {128};
    run_vs_single(1, M1);
}
END_TEST

START_TEST(merged_matches_single_reference_per_segment)
{
    const int64_t M3[] = {128, 64, 64}, M2[] = {192, 192};
    run_vs_single(3, M3);
    run_vs_single(2, M2);
}
END_TEST

/* q/k/v merged == three layers of one module with layer ids layer_id + m (dX summed). */
START_TEST(merged_equals_separate_layers)
{
    const int64_t K = 64, n = 40, M[] = {64, 128, 64};
    const int ranks[] = {8, 0, 4, 16, 8, 8}; /* adapter 0 does not adapt k */
    const float drops[] = {0.1f, 0.1f, 0.1f, 0.2f, 0.2f, 0.0f};
    struct layer l;
    layer_make(&l, K, 3, M, 2, ranks, drops, lg_test_seed() + 5);
    const struct lg_ref_mlora_seg seg[] = {{1, 0, 13}, {0, 13, 27}};
    float *x = rnd((size_t)(n * K), lg_test_seed() + 6, 1.0f), *dy = rnd((size_t)(n * 256), lg_test_seed() + 7, 1.0f);
    double *y = malloc(sizeof(double) * n * 256), *dx = malloc(sizeof(double) * n * K);
    double *da[6], *db[6];
    grads_alloc(&l, da, db);
    struct lg_ref_mlora R = ref_of(&l, 10);
    CHECK(lg_ref_mlora_forward(&R, n, x, 2, seg, y, NULL));
    CHECK(lg_ref_mlora_backward(&R, n, x, 2, seg, NULL, dy, dx, da, db, NULL));
    double *dxsum = calloc((size_t)(n * K), sizeof(double));
    int64_t mo = 0;
    for (int m = 0; m < 3; m++) {
        struct layer one = {.K = K, .M = {M[m]}, .nmod = 1, .nad = 2};
        struct lg_ref_mlora_slot sl[2] = {l.slot[m], l.slot[3 + m]};
        float *dym = malloc(sizeof(float) * n * M[m]);
        for (int64_t t = 0; t < n; t++)
            memcpy(dym + t * M[m], dy + t * 256 + mo, sizeof(float) * (size_t)M[m]);
        struct lg_ref_mlora S = {.K = K, .nmod = 1, .M = {M[m]}, .nadapters = 2, .slot = sl, .w = {l.w[m]},
                                 .round = LG_FP32, .seed = 99, .layer_id = 10 + (uint32_t)m, .train = 1};
        double *y1 = malloc(sizeof(double) * n * M[m]), *dx1 = malloc(sizeof(double) * n * K);
        double *da1[2], *db1[2];
        (void)one;
        for (int a = 0; a < 2; a++) {
            int r = sl[a].rank;
            da1[a] = malloc(sizeof(double) * (r ? r * K : 1)), db1[a] = malloc(sizeof(double) * (r ? r * M[m] : 1));
        }
        CHECK(lg_ref_mlora_forward(&S, n, x, 2, seg, y1, NULL));
        CHECK(lg_ref_mlora_backward(&S, n, x, 2, seg, NULL, dym, dx1, da1, db1, NULL));
        for (int64_t t = 0; t < n; t++)
            for (int64_t o = 0; o < M[m]; o++)
                ck_assert_msg(fabs(y1[t * M[m] + o] - y[t * 256 + mo + o]) < 1e-12, "Y module %d", m);
        for (int64_t i = 0; i < n * K; i++)
            dxsum[i] += dx1[i];
        for (int a = 0; a < 2; a++) {
            int r = sl[a].rank;
            if (!r)
                continue;
            ck_assert_msg(max_rel(da[a * 3 + m], da1[a], (size_t)(r * K)) < 1e-14, "dA module %d adapter %d", m, a);
            ck_assert_msg(max_rel(db[a * 3 + m], db1[a], (size_t)(r * M[m])) < 1e-14, "dB module %d adapter %d", m, a);
        }
        ck_assert(da[0 * 3 + 1][0] == 12345.0); /* the slot that does not exist stays untouched */
        mo += M[m];
        free(dym), free(y1), free(dx1), free(da1[0]), free(da1[1]), free(db1[0]), free(db1[1]);
    }
    ck_assert_msg(max_rel(dx, dxsum, (size_t)(n * K)) < 1e-12, "merged dX differs from the separate layers' sum");
    for (int i = 0; i < 6; i++)
        free(da[i]), free(db[i]);
    free(x), free(dy), free(y), free(dx), free(dxsum);
    layer_free(&l);
}
END_TEST

/* L = Σ y·G with the masks fixed (same seed): central differences in every input type (S is kept in fp32, so
 * agreement is to ~1e-6). */
START_TEST(backward_matches_finite_differences)
{
    const int64_t K = 16, n = 9, M[] = {16, 8};
    const int ranks[] = {4, 8, 8, 0};
    const float drops[] = {0.3f, 0.0f, 0.2f, 0.0f};
    struct layer l;
    layer_make(&l, K, 2, M, 2, ranks, drops, lg_test_seed() + 9);
    const struct lg_ref_mlora_seg seg[] = {{1, 0, 4}, {0, 4, 5}};
    float *x = rnd((size_t)(n * K), lg_test_seed() + 10, 1.0f), *G = rnd((size_t)(n * 24), lg_test_seed() + 11, 1.0f);
    double *y = malloc(sizeof(double) * n * 24), *dx = malloc(sizeof(double) * n * K);
    double *da[4], *db[4];
    grads_alloc(&l, da, db);
    struct lg_ref_mlora R = ref_of(&l, 3);
    CHECK(lg_ref_mlora_backward(&R, n, x, 2, seg, NULL, G, dx, da, db, NULL));
    const float h = 1.0f / 64; /* exact in binary: x ± h is exact for these magnitudes */
#define LOSS(out)                                                                                          \
    do {                                                                                                   \
        CHECK(lg_ref_mlora_forward(&R, n, x, 2, seg, y, NULL));                                            \
        out = 0;                                                                                           \
        for (int64_t i_ = 0; i_ < n * 24; i_++)                                                            \
            out += y[i_] * G[i_];                                                                          \
    } while (0)
    for (int64_t i = 0; i < n * K; i += 7) {
        float v = x[i];
        double lp, lm;
        x[i] = v + h;
        LOSS(lp);
        x[i] = v - h;
        LOSS(lm);
        x[i] = v;
        double fd = (lp - lm) / (2 * h);
        ck_assert_msg(fabs(fd - dx[i]) < 1e-5 * (1 + fabs(fd)), "dX[%lld]: fd %g vs %g", (long long)i, fd, dx[i]);
    }
    for (int si = 0; si < 4; si++) {
        struct lg_ref_mlora_slot *c = &l.slot[si];
        for (int pass = 0; c->rank && pass < 2; pass++) {
            float *p = (float *)(pass ? c->b : c->a);
            int64_t cnt = pass ? M[si % 2] * c->rank : c->rank * K;
            double *g = pass ? db[si] : da[si];
            for (int64_t i = 0; i < cnt; i += 5) {
                float v = p[i];
                double lp, lm;
                p[i] = v + h;
                LOSS(lp);
                p[i] = v - h;
                LOSS(lm);
                p[i] = v;
                double fd = (lp - lm) / (2 * h);
                ck_assert_msg(fabs(fd - g[i]) < 1e-5 * (1 + fabs(fd)), "slot %d %s[%lld]: fd %g vs %g", si,
                              pass ? "dB" : "dA", (long long)i, fd, g[i]);
            }
        }
    }
#undef LOSS
    for (int i = 0; i < 4; i++)
        free(da[i]), free(db[i]);
    free(x), free(G), free(y), free(dx);
    layer_free(&l);
}
END_TEST

START_TEST(bad_segments_are_errors)
{
    const int64_t M[] = {64};
    const int ranks[] = {8, 8};
    const float drops[] = {0, 0};
    struct layer l;
    layer_make(&l, 64, 1, M, 2, ranks, drops, 1);
    struct lg_ref_mlora R = ref_of(&l, 0);
    float *x = rnd(64 * 10, 3, 1.0f);
    double *y = malloc(sizeof(double) * 640);
    for (int i = 0; i < 640; i++)
        y[i] = -7.0;
    const struct {
        struct lg_ref_mlora_seg s[2];
        const char *why;
    } bad[] = {
        {{{0, 0, 6}, {1, 5, 5}}, "does not start"},   /* overlap */
        {{{0, 0, 4}, {1, 5, 5}}, "does not start"},   /* gap */
        {{{0, 0, 5}, {1, 5, 4}}, "cover 9 tokens"},   /* short of n */
        {{{0, 0, 5}, {2, 5, 5}}, "adapter 2 of 2"},   /* id out of range */
        {{{1, 0, 5}, {1, 5, 5}}, "two segments"},     /* repeated adapter */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(lg_ref_mlora_forward(&R, 10, x, 2, bad[i].s, y, NULL), LG_ERR_INVALID);
        ck_assert_msg(strstr(lg_last_error(), bad[i].why), "case %zu: '%s' not in: %s", i, bad[i].why, lg_last_error());
    }
    for (int i = 0; i < 640; i++)
        ck_assert(y[i] == -7.0);
    free(x), free(y);
    layer_free(&l);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mlora_ref");
    TCase *tc = tcase_create("ref");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, matches_single_reference_per_segment);
    tcase_add_test(tc, merged_matches_single_reference_per_segment);
    tcase_add_test(tc, merged_equals_separate_layers);
    tcase_add_test(tc, backward_matches_finite_differences);
    tcase_add_test(tc, bad_segments_are_errors);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
