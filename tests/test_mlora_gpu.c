/* test_mlora_gpu.c: FusedMultiLoRA on the GPU against the CPU reference (lg_ref_mlora.h). A table of cases
 * (adapters 1, 2, 4, 7, 32, 64; one module, q/k/v and gate/up merged with some modules not adapted; mixed
 * ranks (multiples of 4) and dropouts; bf16 and fp16; strategies (a) and (b); dS in dY's tail or apart; S in
 * X's tail or apart), each on fresh random inputs (seeded, printed) with uneven segments at odd boundaries, a
 * segment of one token, an empty segment, a base-only segment and an adapter with no tokens, outputs poisoned
 * with NaN before the run. Every element of S, Y, dX and every present slot's dA and dB is checked (relative
 * L2 error per tensor, the first bad element printed with its index); absent adapters' gradients must stay
 * untouched. Then: both strategies agree, gradients are bitwise reproducible run to run, merged projections
 * equal separate layers, and bad calls are errors. Prints one PASS/FAIL line per case. Exits 77 without a
 * GPU. */
#include "lg_gpu_util.h"
#include "lg_half.h"
#include "lg_mlora.h"
#include "lg_ref_mlora.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <string.h>

static lg_ctx_t *ctx;

struct mcase {
    const char *name;
    int nad, nmod;
    int64_t K, M[3], tokens; /* tokens: about this many, split unevenly */
    int rank_set;            /* 0: all 16; 1: mixed 4..128; 2: mixed small (4, 8, 12, 20) */
    int drop_set;            /* 0: none; 1: mixed 0/0.1/0.05 */
    enum lg_dtype t;
    enum lg_mlora_strategy strategy;
    int s_apart, ds_apart;   /* S in a separate buffer (b only); dS in the layer's workspace */
};

static const struct mcase cases[] = {
    {"1 adapter", 1, 1, 256, {320}, 777, 0, 1, LG_BF16, LG_MLORA_EXT_K, 0, 0},
    {"1 adapter (b)", 1, 1, 256, {320}, 777, 0, 1, LG_BF16, LG_MLORA_EXPAND, 0, 1},
    {"2 adapters fp16", 2, 1, 512, {192}, 1001, 2, 1, LG_FP16, LG_MLORA_EXT_K, 0, 1},
    {"4 adapters", 4, 1, 512, {256}, 1500, 0, 1, LG_BF16, LG_MLORA_AUTO, 0, 0},
    {"4 adapters (b) S apart", 4, 1, 512, {256}, 1500, 2, 1, LG_BF16, LG_MLORA_EXPAND, 1, 0},
    {"7 adapters mixed ranks", 7, 1, 256, {448}, 2049, 1, 1, LG_BF16, LG_MLORA_EXPAND, 0, 0},
    {"7 adapters mixed (a)", 7, 1, 1024, {448}, 2049, 1, 1, LG_FP16, LG_MLORA_EXT_K, 0, 1},
    {"32 adapters", 32, 1, 256, {256}, 3001, 2, 1, LG_BF16, LG_MLORA_AUTO, 0, 0},
    {"64 adapters", 64, 1, 256, {128}, 4097, 2, 1, LG_BF16, LG_MLORA_EXPAND, 0, 1},
    {"64 adapters (a) fp16", 64, 1, 1024, {128}, 4097, 2, 0, LG_FP16, LG_MLORA_EXT_K, 0, 0},
    {"q/k/v 1 adapter", 1, 3, 256, {256, 64, 64}, 999, 0, 1, LG_BF16, LG_MLORA_EXT_K, 0, 0},
    {"q/k/v 4 adapters, partial", 4, 3, 256, {256, 64, 64}, 1333, 2, 1, LG_BF16, LG_MLORA_EXPAND, 0, 1},
    {"gate/up 4 adapters", 4, 2, 256, {384, 384}, 1200, 0, 1, LG_FP16, LG_MLORA_AUTO, 0, 0},
    {"q/k/v 7 adapters, mixed", 7, 3, 512, {128, 128, 64}, 1700, 1, 1, LG_BF16, LG_MLORA_EXT_K, 0, 0},
};

static double tol(enum lg_dtype t) { return t == LG_BF16 ? 1e-2 : 2e-3; }

/* ---- inputs ---- */

struct inputs {
    int nseg;
    struct lg_mlora_seg seg[80];
    struct lg_ref_mlora_seg rseg[80];
    int64_t n, MT;
    struct lg_mlora_slot_params *sp;
    struct lg_ref_mlora_slot *rs;
    float *x, *w[3], *bias, *dy;
};

static int rank_of(const struct mcase *c, int a, int m)
{
    static const int mixed[] = {4, 128, 8, 36, 16, 64, 12, 100, 20};
    static const int small[] = {4, 8, 12, 20, 16};
    if (c->nmod > 1 && (a + m) % 5 == 4)
        return 0; /* this adapter does not adapt module m */
    if (c->rank_set == 1)
        return mixed[(a * 3 + m) % 9];
    if (c->rank_set == 2)
        return small[(a + 2 * m) % 5];
    return 16;
}

static float *rnd(size_t n, uint64_t seed, float scale, enum lg_dtype t)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    lg_test_fill(v, n, seed, scale);
    lg_host_round(v, n, t);
    return v;
}

/* Uneven segments: adapter order shuffled, lengths random; adapter nad-1 (when nad > 1) has no tokens, one
 * segment is empty, one has a single token, a base segment sits in the middle. */
static void make_segments(const struct mcase *c, uint64_t seed, struct inputs *in)
{
    uint64_t s = seed | 1;
    int order[80];
    for (int i = 0; i < c->nad; i++)
        order[i] = i;
    for (int i = c->nad - 1; i > 0; i--) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int j = (int)((s >> 33) % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j], order[j] = t;
    }
    int64_t at = 0;
    in->nseg = 0;
    const int users = c->nad > 1 ? c->nad - 1 : 1; /* the last in order gets no tokens */
    for (int i = 0; i < users; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int64_t len = (int64_t)(c->tokens / users) / 2 + (int64_t)((s >> 33) % (uint64_t)(c->tokens / users + 1));
        if (i == 1)
            len = 1; /* a segment of one token */
        if (i == 2)
            len = 0; /* an empty segment */
        in->seg[in->nseg++] = (struct lg_mlora_seg){.adapter = order[i], .start = at, .len = len};
        at += len;
        if (i == users / 2) { /* base-only tokens */
            in->seg[in->nseg++] = (struct lg_mlora_seg){.adapter = -1, .start = at, .len = 37};
            at += 37;
        }
    }
    in->n = at;
    for (int i = 0; i < in->nseg; i++)
        in->rseg[i] = (struct lg_ref_mlora_seg){in->seg[i].adapter, in->seg[i].start, in->seg[i].len};
}

static void make_inputs(const struct mcase *c, uint64_t seed, struct inputs *in)
{
    memset(in, 0, sizeof *in);
    make_segments(c, seed, in);
    const int ns = c->nad * c->nmod;
    in->sp = calloc((size_t)ns, sizeof *in->sp);
    in->rs = calloc((size_t)ns, sizeof *in->rs);
    for (int m = 0; m < c->nmod; m++) {
        in->MT += c->M[m];
        in->w[m] = rnd((size_t)(c->M[m] * c->K), seed + 10 + m, 1.0f / sqrtf((float)c->K), c->t);
    }
    static const float drops[] = {0.1f, 0.0f, 0.05f};
    for (int i = 0; i < ns; i++) {
        const int a = i / c->nmod, m = i % c->nmod, r = rank_of(c, a, m);
        in->sp[i] = (struct lg_mlora_slot_params){.rank = r, .alpha = r ? 2.0f * r : 0,
                                                   .dropout = c->drop_set ? drops[(a + m) % 3] : 0.f};
        in->rs[i] = (struct lg_ref_mlora_slot){.rank = r, .alpha = in->sp[i].alpha, .dropout = in->sp[i].dropout};
        if (r) {
            in->rs[i].a = rnd((size_t)(r * c->K), seed + 100 + 2 * i, 1.0f / sqrtf((float)c->K), c->t);
            in->rs[i].b = rnd((size_t)(c->M[m] * r), seed + 101 + 2 * i, 0.5f, c->t);
        }
    }
    in->x = rnd((size_t)(in->n * c->K), seed + 1, 1.0f, c->t);
    in->dy = rnd((size_t)(in->n * in->MT), seed + 2, 1.0f, c->t);
}

static void free_inputs(const struct mcase *c, struct inputs *in)
{
    for (int m = 0; m < c->nmod; m++)
        free(in->w[m]);
    for (int i = 0; i < c->nad * c->nmod; i++)
        free((void *)in->rs[i].a), free((void *)in->rs[i].b);
    free(in->sp), free(in->rs), free(in->x), free(in->dy);
}

static uint16_t *to_half(const float *v, size_t n, enum lg_dtype t)
{
    uint16_t *h = malloc(sizeof(uint16_t) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        h[i] = lg_f32_to_half(t, v[i]);
    return h;
}

static lg_mlora_t *make_layer(const struct mcase *c, const struct inputs *in, uint32_t layer_id)
{
    struct lg_mlora_params p = {.in_features = c->K, .nmod = c->nmod, .nadapters = c->nad, .slots = in->sp,
                                .dtype = c->t, .layer_id = layer_id};
    for (int m = 0; m < c->nmod; m++)
        p.out_features[m] = c->M[m];
    lg_mlora_t *l;
    CHECK(lg_mlora_init(ctx, &p, &l));
    for (int m = 0; m < c->nmod; m++) {
        uint16_t *w = to_half(in->w[m], (size_t)(c->M[m] * c->K), c->t);
        CHECK(lg_mlora_set_weights(l, m, w, NULL));
        free(w);
    }
    for (int i = 0; i < c->nad * c->nmod; i++) {
        const int r = in->rs[i].rank, m = i % c->nmod;
        if (!r)
            continue;
        uint16_t *a = to_half(in->rs[i].a, (size_t)(r * c->K), c->t), *b = to_half(in->rs[i].b, (size_t)(c->M[m] * r), c->t);
        CHECK(lg_mlora_set_adapter(l, i / c->nmod, m, a, b));
        free(a), free(b);
    }
    return l;
}

/* ---- one run on the GPU ---- */

struct run {
    float *y, *dx, *s; /* s: [n, nmod, rmax] like the reference (the slot's columns gathered) */
    float **da, **db;  /* per slot (NULL for rank 0) */
    enum lg_mlora_strategy used;
    int64_t n, MT;
};

static int present(const struct inputs *in, int a)
{
    for (int i = 0; i < in->nseg; i++)
        if (in->seg[i].adapter == a && in->seg[i].len > 0)
            return 1;
    return 0;
}

static void gpu_run(lg_mlora_t *l, const struct mcase *c, const struct inputs *in, enum lg_mlora_strategy strat,
                    uint64_t seed, int rmax, struct run *o)
{
    const int64_t n = in->n, K = c->K, MT = in->MT;
    const size_t e = lg_dtype_size(c->t);
    const int ns = c->nad * c->nmod, wc = lg_mlora_compact_cols(l);
    int64_t ldx = c->s_apart ? K + 8 : lg_mlora_ext_ld(l);
    if (ldx < K + wc && !c->s_apart)
        ldx = (K + wc + 7) / 8 * 8;
    const int64_t lds = (wc + 7) / 8 * 8 + 8, lddy = c->ds_apart ? MT + 8 : (MT + wc + 15) / 8 * 8;
    lg_mlora_segments_t *sg;
    CHECK(lg_mlora_segments_init(ctx, 80, &sg));
    CHECK(lg_mlora_segments_set(sg, n, c->nad, in->seg, in->nseg, 0));
    CUdeviceptr x = lg_dev_alloc((size_t)(n * ldx) * e), y = lg_dev_alloc((size_t)(n * MT) * e);
    CUdeviceptr s = lg_dev_alloc((size_t)(n * lds) * e), dy = lg_dev_alloc((size_t)(n * lddy) * e);
    CUdeviceptr dx = lg_dev_alloc((size_t)(n * K) * e);
    lg_dev_poison(x, (size_t)(n * ldx) * e), lg_dev_poison(y, (size_t)(n * MT) * e);
    lg_dev_poison(s, (size_t)(n * lds) * e), lg_dev_poison(dy, (size_t)(n * lddy) * e);
    lg_dev_poison(dx, (size_t)(n * K) * e);
    lg_dev_upload(x, ldx, in->x, n, K, c->t);
    lg_dev_upload(dy, lddy, in->dy, n, MT, c->t);
    /* present slots' gradients poisoned; absent adapters' set to 7.0 (must stay) */
    for (int i = 0; i < ns; i++) {
        CUdeviceptr da, db;
        CHECK(lg_mlora_grads(l, i / c->nmod, i % c->nmod, &da, &db));
        const int r = in->rs[i].rank;
        if (!r)
            continue;
        size_t na = (size_t)(r * K) * 4, nb = (size_t)(c->M[i % c->nmod] * r) * 4;
        if (present(in, i / c->nmod)) {
            lg_dev_poison(da, na), lg_dev_poison(db, nb);
        } else {
            CU_CHECK(cuMemsetD32(da, 0x40e00000u, na / 4));
            CU_CHECK(cuMemsetD32(db, 0x40e00000u, nb / 4));
        }
    }
    o->used = strat == LG_MLORA_AUTO ? lg_mlora_pick(l, sg, ldx) : strat;
    struct lg_mlora_fwd f = {.n = n, .seg = sg, .x = x, .ldx = ldx, .s = c->s_apart ? s : 0, .lds = lds, .y = y,
                             .ldy = MT, .seed = seed, .strategy = strat};
    CHECK(lg_mlora_forward(l, &f, 0));
    struct lg_mlora_bwd b = {.n = n, .seg = sg, .x = x, .ldx = ldx, .s = f.s, .lds = lds, .dy = dy, .lddy = lddy,
                             .dx = dx, .lddx = K, .seed = seed, .strategy = strat};
    CHECK(lg_mlora_backward(l, &b, 0));
    CU_CHECK(cuCtxSynchronize());

    o->n = n, o->MT = MT;
    o->y = malloc(sizeof(float) * n * MT), o->dx = malloc(sizeof(float) * n * K);
    lg_dev_download(o->y, y, MT, n, MT, c->t);
    lg_dev_download(o->dx, dx, K, n, K, c->t);
    /* S, gathered per slot from wherever the layer put it */
    const int ext = o->used == LG_MLORA_EXT_K;
    CUdeviceptr sbase = c->s_apart && !ext ? s : x + (CUdeviceptr)(K * e);
    const int64_t sld = c->s_apart && !ext ? lds : ldx, scols = c->s_apart && !ext ? wc : ldx - K;
    float *sall = malloc(sizeof(float) * n * scols);
    lg_dev_download(sall, sbase, sld, n, scols, c->t);
    o->s = calloc((size_t)(n * c->nmod * rmax), sizeof(float));
    for (int i = 0; i < in->nseg; i++)
        for (int m = 0; in->seg[i].adapter >= 0 && m < c->nmod; m++) {
            const int a = in->seg[i].adapter, r = in->rs[a * c->nmod + m].rank, col = lg_mlora_slot_col(l, a, m, ext);
            for (int64_t t = in->seg[i].start; t < in->seg[i].start + in->seg[i].len; t++)
                for (int j = 0; j < r; j++)
                    o->s[(t * c->nmod + m) * rmax + j] = sall[t * scols + col + j];
        }
    free(sall);
    o->da = calloc((size_t)ns, sizeof *o->da), o->db = calloc((size_t)ns, sizeof *o->db);
    for (int i = 0; i < ns; i++) {
        const int r = in->rs[i].rank;
        if (!r)
            continue;
        CUdeviceptr da, db;
        CHECK(lg_mlora_grads(l, i / c->nmod, i % c->nmod, &da, &db));
        o->da[i] = malloc(sizeof(float) * r * K), o->db[i] = malloc(sizeof(float) * c->M[i % c->nmod] * r);
        lg_dev_download(o->da[i], da, K, r, K, LG_FP32);
        lg_dev_download(o->db[i], db, r, c->M[i % c->nmod], r, LG_FP32);
    }
    cuMemFree(x), cuMemFree(y), cuMemFree(s), cuMemFree(dy), cuMemFree(dx);
    lg_mlora_segments_free(sg);
}

static void run_free(const struct mcase *c, struct run *o)
{
    for (int i = 0; i < c->nad * c->nmod; i++)
        free(o->da[i]), free(o->db[i]);
    free(o->y), free(o->dx), free(o->s), free(o->da), free(o->db);
}

/* ---- comparison ---- */

/* Relative L2 error; prints the first non-finite or far-off element. */
static double compare(const char *what, const float *got, const double *ref, size_t n, double tl)
{
    double err = lg_test_rel_err(got, ref, n);
    if (!(err <= tl)) {
        double nrm = 0;
        for (size_t i = 0; i < n; i++)
            nrm += ref[i] * ref[i];
        nrm = sqrt(nrm / (n ? n : 1));
        for (size_t i = 0; i < n; i++)
            if (!isfinite(got[i]) || fabs(got[i] - ref[i]) > 10 * tl * (nrm + fabs(ref[i]))) {
                printf("    %s: first mismatch at %zu: got %g want %g\n", what, i, got[i], ref[i]);
                break;
            }
    }
    return err;
}

static double *dbl(const float *v, size_t n)
{
    double *d = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        d[i] = v[i];
    return d;
}

static int force_split; /* check_case runs the modules' frozen and dX GEMMs one per module (tiles.split) */

/* The whole case against the reference; returns 1 when every tensor passes. */
static int check_case(const struct mcase *c, enum lg_mlora_strategy strat, struct run *keep)
{
    const uint64_t seed = lg_test_seed() ^ (uint64_t)(c->nad * 7919 + c->nmod * 104729 + c->K + c->tokens);
    struct inputs in;
    make_inputs(c, seed, &in);
    lg_mlora_t *l = make_layer(c, &in, 21);
    if (force_split) {
        struct lg_mlora_tiles t;
        CHECK(lg_mlora_arch_tiles(l, &t));
        t.split = 1;
        CHECK(lg_mlora_set_tiles(l, &t));
    }
    struct lg_ref_mlora R = {.K = c->K, .nmod = c->nmod, .nadapters = c->nad, .slot = in.rs, .round = c->t,
                             .seed = seed, .layer_id = 21, .train = 1};
    for (int m = 0; m < c->nmod; m++)
        R.M[m] = c->M[m], R.w[m] = in.w[m];
    const int rmax = lg_ref_mlora_rmax(&R), ns = c->nad * c->nmod;
    struct run g;
    gpu_run(l, c, &in, strat, seed, rmax, &g);
    const int64_t n = in.n, K = c->K, MT = in.MT;
    double *y = malloc(sizeof(double) * n * MT), *dx = malloc(sizeof(double) * n * K);
    float *s = malloc(sizeof(float) * n * c->nmod * rmax);
    double **da = calloc((size_t)ns, sizeof *da), **db = calloc((size_t)ns, sizeof *db);
    for (int i = 0; i < ns; i++)
        if (in.rs[i].rank && present(&in, i / c->nmod))
            da[i] = malloc(sizeof(double) * in.rs[i].rank * K),
            db[i] = malloc(sizeof(double) * in.rs[i].rank * c->M[i % c->nmod]);
    CHECK(lg_ref_mlora_forward(&R, n, in.x, in.nseg, in.rseg, y, s));
    CHECK(lg_ref_mlora_backward(&R, n, in.x, in.nseg, in.rseg, s, in.dy, dx, da, db, NULL));
    const double tl = tol(c->t);
    double *sd = dbl(s, (size_t)(n * c->nmod * rmax));
    double es = compare("S", g.s, sd, (size_t)(n * c->nmod * rmax), tl);
    double ey = compare("Y", g.y, y, (size_t)(n * MT), tl);
    double ex = compare("dX", g.dx, dx, (size_t)(n * K), tl);
    double ea = 0, eb = 0;
    int untouched = 1;
    for (int i = 0; i < ns; i++) {
        const int r = in.rs[i].rank, M = (int)c->M[i % c->nmod];
        if (!r)
            continue;
        if (!da[i]) {
            for (int64_t j = 0; j < r * K; j++)
                untouched &= g.da[i][j] == 7.0f;
            for (int64_t j = 0; j < (int64_t)M * r; j++)
                untouched &= g.db[i][j] == 7.0f;
            continue;
        }
        char wa[32], wb[32];
        snprintf(wa, sizeof wa, "dA slot %d", i), snprintf(wb, sizeof wb, "dB slot %d", i);
        double a = compare(wa, g.da[i], da[i], (size_t)(r * K), tl), b = compare(wb, g.db[i], db[i], (size_t)M * r, tl);
        ea = a > ea || isnan(a) ? a : ea, eb = b > eb || isnan(b) ? b : eb;
    }
    const int ok = es <= tl && ey <= tl && ex <= tl && ea <= tl && eb <= tl && untouched;
    printf("%-4s %-28s %s n=%-5lld strategy %s: S %.1e Y %.1e dX %.1e dA %.1e dB %.1e absent-untouched %d\n",
           ok ? "PASS" : "FAIL", c->name, lg_dtype_name(c->t), (long long)n, g.used == LG_MLORA_EXT_K ? "(a)" : "(b)",
           es, ey, ex, ea, eb, untouched);
    for (int i = 0; i < ns; i++)
        free(da[i]), free(db[i]);
    free(da), free(db), free(y), free(dx), free(s), free(sd);
    if (keep)
        *keep = g;
    else
        run_free(c, &g);
    lg_mlora_free(l);
    free_inputs(c, &in);
    return ok;
}

START_TEST(layer_matches_reference)
{
    ck_assert_msg(check_case(&cases[_i], cases[_i].strategy, NULL), "case '%s' failed (see above)", cases[_i].name);
}
END_TEST

/* (a) and (b) on the same inputs: Y within the dtype's tolerance, the gradients equal (same S, same dY). */
START_TEST(strategies_agree)
{
    static const struct mcase c = {"4 adapters both", 4, 1, 512, {256}, 1500, 2, 1, LG_BF16, LG_MLORA_AUTO, 0, 0};
    struct run ra, rb;
    ck_assert(check_case(&c, LG_MLORA_EXT_K, &ra));
    ck_assert(check_case(&c, LG_MLORA_EXPAND, &rb));
    ck_assert(ra.used == LG_MLORA_EXT_K && rb.used == LG_MLORA_EXPAND);
    double num = 0, den = 0;
    for (int64_t i = 0; i < ra.n * ra.MT; i++)
        num += (ra.y[i] - rb.y[i]) * (ra.y[i] - rb.y[i]), den += (double)ra.y[i] * ra.y[i];
    for (int i = 0; i < c.nad; i++)
        if (ra.da[i])
            ck_assert_msg(!memcmp(ra.da[i], rb.da[i], sizeof(float) * (size_t)(c.K * 4)), "dA differs between (a) and (b)");
    printf("strategies (a) vs (b): Y rel diff %.2e\n", sqrt(num / den));
    ck_assert_msg(sqrt(num / den) < 1e-2, "(a) and (b) disagree: %g", sqrt(num / den));
    run_free(&c, &ra), run_free(&c, &rb);
}
END_TEST

/* Same inputs twice: dX and every gradient bit-identical; grad_beta = 1 doubles them exactly. */
START_TEST(gradients_bitwise_reproducible)
{
    static const struct mcase c = {"7 adapters det", 7, 3, 512, {256, 128, 128}, 3000, 2, 1, LG_BF16,
                                   LG_MLORA_EXPAND, 0, 1};
    struct inputs in;
    make_inputs(&c, lg_test_seed() + 3, &in);
    lg_mlora_t *l = make_layer(&c, &in, 5);
    const int64_t n = in.n, K = c.K, MT = in.MT, ldx = lg_mlora_ext_ld(l);
    lg_mlora_segments_t *sg;
    CHECK(lg_mlora_segments_init(ctx, 80, &sg));
    CHECK(lg_mlora_segments_set(sg, n, c.nad, in.seg, in.nseg, 0));
    CUdeviceptr x = lg_dev_alloc((size_t)(n * ldx) * 2), y = lg_dev_alloc((size_t)(n * MT) * 2);
    CUdeviceptr dy = lg_dev_alloc((size_t)(n * MT) * 2), dx = lg_dev_alloc((size_t)(n * K) * 2);
    lg_dev_upload(x, ldx, in.x, n, K, c.t);
    lg_dev_upload(dy, MT, in.dy, n, MT, c.t);
    struct lg_mlora_fwd f = {.n = n, .seg = sg, .x = x, .ldx = ldx, .y = y, .ldy = MT, .seed = 9,
                             .strategy = c.strategy};
    struct lg_mlora_bwd b = {.n = n, .seg = sg, .x = x, .ldx = ldx, .dy = dy, .lddy = MT, .dx = dx, .lddx = K,
                             .seed = 9, .strategy = c.strategy};
    /* gradients live in one allocation per layer: compare it whole, via the first slot's pointer and size */
    size_t gbytes = 0;
    for (int i = 0; i < c.nad * c.nmod; i++)
        gbytes += (size_t)in.rs[i].rank * (size_t)(K + c.M[i % c.nmod]) * 4;
    CUdeviceptr g0 = 0;
    for (int i = 0; i < c.nad * c.nmod && !g0; i++)
        CHECK(lg_mlora_grads(l, i / c.nmod, i % c.nmod, &g0, NULL));
    unsigned char *g1 = malloc(gbytes), *g2 = malloc(gbytes), *dx1 = malloc((size_t)(n * K) * 2), *dx2 = malloc((size_t)(n * K) * 2);
    CU_CHECK(cuMemsetD8(g0, 0, gbytes));
    CHECK(lg_mlora_forward(l, &f, 0));
    CHECK(lg_mlora_backward(l, &b, 0));
    CU_CHECK(cuMemcpyDtoH(g1, g0, gbytes));
    CU_CHECK(cuMemcpyDtoH(dx1, dx, (size_t)(n * K) * 2));
    CHECK(lg_mlora_forward(l, &f, 0));
    CHECK(lg_mlora_backward(l, &b, 0));
    CU_CHECK(cuMemcpyDtoH(g2, g0, gbytes));
    CU_CHECK(cuMemcpyDtoH(dx2, dx, (size_t)(n * K) * 2));
    ck_assert_msg(memcmp(g1, g2, gbytes) == 0, "gradients not bitwise reproducible");
    ck_assert_msg(memcmp(dx1, dx2, (size_t)(n * K) * 2) == 0, "dX not bitwise reproducible");
    b.grad_beta = 1.0f;
    CHECK(lg_mlora_backward(l, &b, 0));
    CU_CHECK(cuMemcpyDtoH(g2, g0, gbytes));
    const float *f1 = (const float *)g1, *f2 = (const float *)g2;
    for (size_t i = 0; i < gbytes / 4; i++)
        ck_assert_msg(f2[i] == 2 * f1[i], "accumulate: %g vs 2*%g at %zu", f2[i], f1[i], i);
    printf("PASS gradients bitwise reproducible (%zu bytes) and accumulate exactly\n", gbytes);
    free(g1), free(g2), free(dx1), free(dx2);
    cuMemFree(x), cuMemFree(y), cuMemFree(dy), cuMemFree(dx);
    lg_mlora_segments_free(sg);
    lg_mlora_free(l);
    free_inputs(&c, &in);
}
END_TEST

/* tiles.split: the frozen GEMM and dX GEMM one per module, under both strategies (the forward's split applies
 * to (b) only), against the reference; split = 2 is refused. */
START_TEST(split_gemms_match_reference)
{
    static const struct mcase cs[] = {
        {"q/k/v split (b)", 4, 3, 512, {256, 128, 128}, 1600, 2, 1, LG_BF16, LG_MLORA_EXPAND, 0, 0},
        {"gate/up split (b) fp16", 1, 2, 256, {512, 512}, 900, 0, 1, LG_FP16, LG_MLORA_EXPAND, 0, 0},
        {"gate/up split (a)", 2, 2, 256, {512, 512}, 900, 0, 1, LG_BF16, LG_MLORA_EXT_K, 0, 0},
    };
    force_split = 1;
    for (int ci = 0; ci < 3; ci++)
        ck_assert_msg(check_case(&cs[ci], cs[ci].strategy, NULL), "case '%s' failed (see above)", cs[ci].name);
    force_split = 0;
    struct inputs in;
    make_inputs(&cs[0], 5, &in);
    lg_mlora_t *l = make_layer(&cs[0], &in, 3);
    struct lg_mlora_tiles t;
    CHECK(lg_mlora_arch_tiles(l, &t));
    t.split = 2;
    ck_assert_int_eq(lg_mlora_set_tiles(l, &t), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "split must be 0"));
    lg_mlora_free(l);
    free_inputs(&cs[0], &in);
}
END_TEST

/* Merged q/k/v (and gate/up) against one layer per module with layer ids layer_id + m: Y per module and every
 * slot's gradients agree within tolerance, dX equals the sum of the separate layers' dX. */
START_TEST(merged_equals_separate)
{
    static const struct mcase cs[] = {
        {"q/k/v vs separate", 4, 3, 512, {256, 128, 128}, 1600, 2, 1, LG_BF16, LG_MLORA_EXPAND, 0, 0},
        {"gate/up vs separate", 1, 2, 256, {512, 512}, 900, 0, 1, LG_BF16, LG_MLORA_EXT_K, 0, 0},
    };
    for (int ci = 0; ci < 2; ci++) {
        const struct mcase *c = &cs[ci];
        struct inputs in;
        make_inputs(c, lg_test_seed() + 11 + ci, &in);
        struct lg_ref_mlora R = {.K = c->K, .nmod = c->nmod, .nadapters = c->nad, .slot = in.rs, .round = c->t,
                                 .layer_id = 21};
        const int rmax = lg_ref_mlora_rmax(&R);
        lg_mlora_t *l = make_layer(c, &in, 21);
        struct run gm;
        gpu_run(l, c, &in, c->strategy, 77, rmax, &gm);
        lg_mlora_free(l);
        double *dxs = calloc((size_t)(in.n * c->K), sizeof(double));
        int64_t mo = 0;
        int ok = 1;
        for (int m = 0; m < c->nmod; m++) {
            struct mcase one = *c;
            one.nmod = 1, one.M[0] = c->M[m];
            struct inputs i1 = in;
            struct lg_mlora_slot_params *sp = calloc((size_t)c->nad, sizeof *sp);
            struct lg_ref_mlora_slot *rs = calloc((size_t)c->nad, sizeof *rs);
            for (int a = 0; a < c->nad; a++)
                sp[a] = in.sp[a * c->nmod + m], rs[a] = in.rs[a * c->nmod + m];
            i1.sp = sp, i1.rs = rs, i1.w[0] = in.w[m], i1.MT = c->M[m];
            i1.dy = malloc(sizeof(float) * in.n * c->M[m]);
            for (int64_t t = 0; t < in.n; t++)
                memcpy(i1.dy + t * c->M[m], in.dy + t * in.MT + mo, sizeof(float) * (size_t)c->M[m]);
            lg_mlora_t *l1 = make_layer(&one, &i1, 21 + (uint32_t)m);
            struct run g1;
            gpu_run(l1, &one, &i1, c->strategy, 77, rmax, &g1);
            double *y1 = malloc(sizeof(double) * in.n * c->M[m]);
            float *ym = malloc(sizeof(float) * in.n * c->M[m]);
            for (int64_t t = 0; t < in.n; t++)
                for (int64_t o = 0; o < c->M[m]; o++)
                    y1[t * c->M[m] + o] = g1.y[t * c->M[m] + o], ym[t * c->M[m] + o] = gm.y[t * in.MT + mo + o];
            ok &= compare("Y merged vs separate", ym, y1, (size_t)(in.n * c->M[m]), tol(c->t)) <= tol(c->t);
            for (int a = 0; a < c->nad; a++) {
                const int r = rs[a].rank, i = a * c->nmod + m;
                if (!r || !present(&in, a))
                    continue;
                double *da = dbl(g1.da[a], (size_t)(r * c->K)), *db = dbl(g1.db[a], (size_t)(r * c->M[m]));
                ok &= compare("dA merged vs separate", gm.da[i], da, (size_t)(r * c->K), tol(c->t)) <= tol(c->t);
                ok &= compare("dB merged vs separate", gm.db[i], db, (size_t)(r * c->M[m]), tol(c->t)) <= tol(c->t);
                free(da), free(db);
            }
            for (int64_t i = 0; i < in.n * c->K; i++)
                dxs[i] += g1.dx[i];
            mo += c->M[m];
            free(y1), free(ym), free(i1.dy), free(sp), free(rs);
            run_free(&one, &g1);
            lg_mlora_free(l1);
        }
        /* the separate layers' dX each hold dY_m·W_m once: their sum is the merged dX */
        ok &= compare("dX merged vs sum of separate", gm.dx, dxs, (size_t)(in.n * c->K), tol(c->t)) <= tol(c->t);
        printf("%-4s %s (%d adapters)\n", ok ? "PASS" : "FAIL", c->name, c->nad);
        ck_assert_msg(ok, "%s", c->name);
        free(dxs);
        run_free(c, &gm);
        free_inputs(c, &in);
    }
}
END_TEST

START_TEST(bad_calls_are_errors)
{
    static const struct mcase c = {"bad", 2, 1, 256, {128}, 300, 0, 0, LG_BF16, LG_MLORA_EXT_K, 0, 0};
    struct inputs in;
    make_inputs(&c, 5, &in);
    lg_mlora_t *l = make_layer(&c, &in, 1);
    lg_mlora_segments_t *sg;
    CHECK(lg_mlora_segments_init(ctx, 4, &sg));
    const struct lg_mlora_seg seg[] = {{0, 0, 100}, {1, 100, 200}};
    CHECK(lg_mlora_segments_set(sg, 300, 2, seg, 2, 0));
    CUdeviceptr x = lg_dev_alloc(300 * 512 * 2), y = lg_dev_alloc(300 * 128 * 2);
    lg_dev_poison(y, 300 * 128 * 2);
    struct lg_mlora_fwd f = {.n = 299, .seg = sg, .x = x, .ldx = lg_mlora_ext_ld(l), .y = y, .ldy = 128,
                             .strategy = LG_MLORA_EXT_K};
    ck_assert_int_eq(lg_mlora_forward(l, &f, 0), LG_ERR_INVALID); /* total disagrees with n */
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "300 tokens"));
    f.n = 300, f.ldx = 256 + 8;
    ck_assert_int_eq(lg_mlora_forward(l, &f, 0), LG_ERR_INVALID); /* (a) forced without room */
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "strategy (a)"));
    f.strategy = LG_MLORA_EXPAND;
    ck_assert_int_eq(lg_mlora_forward(l, &f, 0), LG_ERR_INVALID); /* (b) without room and without s */
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "s (needed"));
    /* a table naming adapters the layer does not have */
    lg_mlora_segments_t *sg3;
    CHECK(lg_mlora_segments_init(ctx, 4, &sg3));
    const struct lg_mlora_seg seg3[] = {{0, 0, 100}, {2, 100, 200}};
    CHECK(lg_mlora_segments_set(sg3, 300, 3, seg3, 2, 0));
    f.seg = sg3, f.ldx = lg_mlora_ext_ld(l), f.strategy = LG_MLORA_AUTO;
    ck_assert_int_eq(lg_mlora_forward(l, &f, 0), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "adapter 2"));
    /* bad tables leave the previous one in place */
    const struct lg_mlora_seg overlap[] = {{0, 0, 150}, {1, 100, 200}};
    ck_assert_int_eq(lg_mlora_segments_set(sg, 300, 2, overlap, 2, 0), LG_ERR_INVALID);
    ck_assert_int_eq(lg_mlora_segments_tokens(sg), 300);
    CU_CHECK(cuCtxSynchronize());
    float *yh = malloc(sizeof(float) * 300 * 128);
    lg_dev_download(yh, y, 128, 300, 128, LG_BF16);
    for (int i = 0; i < 300 * 128; i++)
        ck_assert_msg(isnan(yh[i]), "a refused call wrote Y[%d]", i);
    printf("PASS bad calls are errors and touch no output\n");
    free(yh);
    cuMemFree(x), cuMemFree(y);
    lg_mlora_segments_free(sg), lg_mlora_segments_free(sg3);
    lg_mlora_free(l);
    free_inputs(&c, &in);
}
END_TEST

int main(void)
{
    lg_test_require_gpu();
    struct lg_ctx_params cp = {.device = 0};
    CHECK(lg_ctx_init(&cp, &ctx));
    printf("device: %s (sm_%d, %d SMs)\n", lg_ctx_device_name(ctx), lg_ctx_arch(ctx), lg_ctx_sm_count(ctx));
    Suite *s = suite_create("mlora_gpu");
    TCase *tc = tcase_create("gpu");
    tcase_set_timeout(tc, 0);
    tcase_add_loop_test(tc, layer_matches_reference, 0, (int)(sizeof cases / sizeof cases[0]));
    tcase_add_test(tc, strategies_agree);
    tcase_add_test(tc, gradients_bitwise_reproducible);
    tcase_add_test(tc, merged_equals_separate);
    tcase_add_test(tc, split_gemms_match_reference);
    tcase_add_test(tc, bad_calls_are_errors);
    suite_add_tcase(s, tc);
    int failed = lg_test_run(s, 1);
    lg_ctx_free(ctx);
    return failed ? 1 : 0;
}
