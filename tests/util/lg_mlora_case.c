/* lg_mlora_case.c: the FusedMultiLoRA GPU suites' fixture (lg_mlora_case.h). */
#include "lg_mlora_case.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

lg_ctx_t *mc_ctx;


/* ---- inputs ---- */


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
static void make_segments(const struct mcase *c, uint64_t seed, struct mc_inputs *in)
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

void mc_make_inputs(const struct mcase *c, uint64_t seed, struct mc_inputs *in)
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

void mc_free_inputs(const struct mcase *c, struct mc_inputs *in)
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

lg_mlora_t *mc_make_layer(const struct mcase *c, const struct mc_inputs *in, uint32_t layer_id)
{
    struct lg_mlora_params p = {.in_features = c->K, .nmod = c->nmod, .nadapters = c->nad, .slots = in->sp,
                                .dtype = c->t, .layer_id = layer_id};
    for (int m = 0; m < c->nmod; m++)
        p.out_features[m] = c->M[m];
    lg_mlora_t *l;
    CHECK(lg_mlora_init(mc_ctx, &p, &l));
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


int mc_present(const struct mc_inputs *in, int a)
{
    for (int i = 0; i < in->nseg; i++)
        if (in->seg[i].adapter == a && in->seg[i].len > 0)
            return 1;
    return 0;
}

void mc_gpu_run(lg_mlora_t *l, const struct mcase *c, const struct mc_inputs *in, enum lg_mlora_strategy strat,
                uint64_t seed, int rmax, struct mc_run *o)
{
    const int64_t n = in->n, K = c->K, MT = in->MT;
    const size_t e = lg_dtype_size(c->t);
    const int ns = c->nad * c->nmod, wc = lg_mlora_compact_cols(l);
    int64_t ldx = c->s_apart ? K + 8 : lg_mlora_ext_ld(l);
    if (ldx < K + wc && !c->s_apart)
        ldx = (K + wc + 7) / 8 * 8;
    const int64_t lds = (wc + 7) / 8 * 8 + 8, lddy = c->ds_apart ? MT + 8 : (MT + wc + 15) / 8 * 8;
    lg_mlora_segments_t *sg;
    CHECK(lg_mlora_segments_init(mc_ctx, 80, &sg));
    CHECK(lg_mlora_segments_set(sg, n, c->nad, in->seg, in->nseg, 0));
    CUdeviceptr x = lg_dev_alloc((size_t)(n * ldx) * e), y = lg_dev_alloc((size_t)(n * MT) * e);
    CUdeviceptr s = lg_dev_alloc((size_t)(n * lds) * e), dy = lg_dev_alloc((size_t)(n * lddy) * e);
    CUdeviceptr dx = lg_dev_alloc((size_t)(n * K) * e);
    lg_dev_poison(x, (size_t)(n * ldx) * e), lg_dev_poison(y, (size_t)(n * MT) * e);
    lg_dev_poison(s, (size_t)(n * lds) * e), lg_dev_poison(dy, (size_t)(n * lddy) * e);
    lg_dev_poison(dx, (size_t)(n * K) * e);
    lg_dev_upload(x, ldx, in->x, n, K, c->t);
    lg_dev_upload(dy, lddy, in->dy, n, MT, c->t);
    /* mc_present slots' gradients poisoned; absent adapters' set to 7.0 (must stay) */
    for (int i = 0; i < ns; i++) {
        CUdeviceptr da, db;
        CHECK(lg_mlora_grads(l, i / c->nmod, i % c->nmod, &da, &db));
        const int r = in->rs[i].rank;
        if (!r)
            continue;
        size_t na = (size_t)(r * K) * 4, nb = (size_t)(c->M[i % c->nmod] * r) * 4;
        if (mc_present(in, i / c->nmod)) {
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

void mc_run_free(const struct mcase *c, struct mc_run *o)
{
    for (int i = 0; i < c->nad * c->nmod; i++)
        free(o->da[i]), free(o->db[i]);
    free(o->y), free(o->dx), free(o->s), free(o->da), free(o->db);
}

/* ---- comparison ---- */

/* Relative L2 error; prints the first non-finite or far-off element. */
double mc_compare(const char *what, const float *got, const double *ref, size_t n, double tl)
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

double *mc_dbl(const float *v, size_t n)
{
    double *d = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        d[i] = v[i];
    return d;
}


/* The whole case against the reference; returns 1 when every tensor passes. */
int mc_check_case(const struct mcase *c, enum lg_mlora_strategy strat, int split, struct mc_run *keep)
{
    const uint64_t seed = lg_test_seed() ^ (uint64_t)(c->nad * 7919 + c->nmod * 104729 + c->K + c->tokens);
    struct mc_inputs in;
    mc_make_inputs(c, seed, &in);
    lg_mlora_t *l = mc_make_layer(c, &in, 21);
    if (split) {
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
    struct mc_run g;
    mc_gpu_run(l, c, &in, strat, seed, rmax, &g);
    const int64_t n = in.n, K = c->K, MT = in.MT;
    double *y = malloc(sizeof(double) * n * MT), *dx = malloc(sizeof(double) * n * K);
    float *s = malloc(sizeof(float) * n * c->nmod * rmax);
    double **da = calloc((size_t)ns, sizeof *da), **db = calloc((size_t)ns, sizeof *db);
    for (int i = 0; i < ns; i++)
        if (in.rs[i].rank && mc_present(&in, i / c->nmod))
            da[i] = malloc(sizeof(double) * in.rs[i].rank * K),
            db[i] = malloc(sizeof(double) * in.rs[i].rank * c->M[i % c->nmod]);
    CHECK(lg_ref_mlora_forward(&R, n, in.x, in.nseg, in.rseg, y, s));
    CHECK(lg_ref_mlora_backward(&R, n, in.x, in.nseg, in.rseg, s, in.dy, dx, da, db, NULL));
    const double tl = mc_tol(c->t);
    double *sd = mc_dbl(s, (size_t)(n * c->nmod * rmax));
    double es = mc_compare("S", g.s, sd, (size_t)(n * c->nmod * rmax), tl);
    double ey = mc_compare("Y", g.y, y, (size_t)(n * MT), tl);
    double ex = mc_compare("dX", g.dx, dx, (size_t)(n * K), tl);
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
        double a = mc_compare(wa, g.da[i], da[i], (size_t)(r * K), tl), b = mc_compare(wb, g.db[i], db[i], (size_t)M * r, tl);
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
        mc_run_free(c, &g);
    lg_mlora_free(l);
    mc_free_inputs(c, &in);
    return ok;
}

int mc_main(const char *suite, void (*add_tests)(TCase *tc))
{
    lg_test_require_gpu();
    struct lg_ctx_params cp = {.device = 0};
    CHECK(lg_ctx_init(&cp, &mc_ctx));
    printf("device: %s (sm_%d, %d SMs)\n", lg_ctx_device_name(mc_ctx), lg_ctx_arch(mc_ctx), lg_ctx_sm_count(mc_ctx));
    int failed = lg_test_run_case(suite, add_tests, 1);
    lg_ctx_free(mc_ctx);
    return failed ? 1 : 0;
}
