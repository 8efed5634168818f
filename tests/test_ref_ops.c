/* test_ref_ops.c: the CPU reference of the token-wise decoder ops (lg_ref_ops.h) against independent math:
 * embedding gather and its id check; RMSNorm, SwiGLU and the frozen linear against direct formulas and every
 * backward against central finite differences of sum(out ⊙ R); the LM head loss against fully materialised
 * logits, with ignored labels and an all-ignored batch; AdamW against a two-step example worked by hand, global
 * norm clipping as clip_grad_norm_, and a non-finite gradient leaving everything untouched. RoPE and attention
 * are in test_ref_attn.c. Inputs are seeded random values (LORAGEN_TEST_SEED); outputs are poisoned with NaN
 * first, so an element left unwritten fails. */
#include "lg_ref_ops.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <string.h>

static float *rnd(int64_t n, uint64_t seed, float scale)
{
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    lg_test_fill(x, (size_t)n, seed, scale);
    return x;
}

static float *poisoned(int64_t n)
{
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++)
        x[i] = NAN;
    return x;
}

/* max |a - b| / max(|b|, floor) over n; inf when a holds a NaN (so NaN never passes) */
static double max_rel(const float *a, const double *b, int64_t n, double floor)
{
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            return INFINITY;
        worst = fmax(worst, fabs(a[i] - b[i]) / fmax(fabs(b[i]), floor));
    }
    return worst;
}

/* ---- embedding ---- */

START_TEST(embed_gathers_rows_and_checks_ids)
{
    const int64_t V = 37, H = 13, n = 11;
    float *table = rnd(V * H, lg_test_seed() + 1, 1.0f), *out = poisoned(n * H);
    int32_t ids[11] = {0, 36, 5, 5, 17, 1, 35, 0, 20, 9, 36};
    ck_assert_int_eq(lg_ref_embed(n, V, H, ids, table, out), LG_OK);
    for (int64_t t = 0; t < n; t++)
        ck_assert(memcmp(out + t * H, table + ids[t] * H, sizeof(float) * H) == 0);
    const int32_t bad[] = {-1, 37, 1000};
    for (int b = 0; b < 3; b++) {
        float *o2 = poisoned(n * H);
        ids[3] = bad[b];
        lg_clear_error();
        ck_assert_int_eq(lg_ref_embed(n, V, H, ids, table, o2), LG_ERR_INVALID);
        char want[64];
        snprintf(want, sizeof want, "token 3 has id %d", bad[b]);
        ck_assert_msg(strstr(lg_last_error(), want), "detail: %s", lg_last_error());
        for (int64_t i = 0; i < n * H; i++)
            ck_assert(isnan(o2[i])); /* nothing written on failure */
        free(o2);
    }
    free(table), free(out);
}
END_TEST

/* ---- RMSNorm ---- */

struct norm_ctx {
    struct lg_ref_rmsnorm p;
    int64_t n;
    float *x, *r, *y;
};

static double norm_loss(void *c_)
{
    struct norm_ctx *c = c_;
    lg_ref_rmsnorm_forward(&c->p, c->n, c->x, c->y, NULL);
    return lg_test_wsum(c->y, c->r, c->n * c->p.H);
}

START_TEST(rmsnorm_forward_and_backward)
{
    const int64_t shapes[][2] = {{5, 7}, {3, 33}, {2, 64}, {1, 3}};
    const float eps[] = {1e-5f, 1e-6f, 1e-5f, 1e-6f};
    for (int s = 0; s < 4; s++) {
        const int64_t n = shapes[s][0], H = shapes[s][1];
        uint64_t seed = lg_test_seed() + 10 * (uint64_t)s;
        struct norm_ctx c = {.p = {.H = H, .eps = eps[s]}, .n = n, .x = rnd(n * H, seed + 1, 2.0f),
                             .r = rnd(n * H, seed + 2, 1.0f), .y = poisoned(n * H)};
        float *w = rnd(H, seed + 3, 1.0f), *rstd = poisoned(n), *dx = poisoned(n * H);
        c.p.w = w;
        lg_ref_rmsnorm_forward(&c.p, n, c.x, c.y, rstd);
        double *want = malloc(sizeof(double) * n * H);
        for (int64_t t = 0; t < n; t++) {
            double ms = 0;
            for (int64_t i = 0; i < H; i++)
                ms += (double)c.x[t * H + i] * c.x[t * H + i] / H;
            double r = 1.0 / sqrt(ms + eps[s]);
            ck_assert_msg(fabs(rstd[t] - r) <= 1e-6 * r, "rstd[%lld] %g want %g", (long long)t, rstd[t], r);
            for (int64_t i = 0; i < H; i++)
                want[t * H + i] = c.x[t * H + i] * r * w[i];
        }
        ck_assert_msg(max_rel(c.y, want, n * H, 1e-3) < 1e-6, "rmsnorm forward H=%lld", (long long)H);
        lg_ref_rmsnorm_backward(&c.p, n, c.x, rstd, c.r, dx);
        lg_test_check_fd("rmsnorm dx", norm_loss, &c, c.x, dx, n * H, 1.0f / 256);
        free(want), free(c.x), free(c.r), free(c.y), free(w), free(rstd), free(dx);
    }
}
END_TEST

/* ---- SwiGLU ---- */

struct glu_ctx {
    int64_t n;
    float *g, *u, *r, *a;
};

static double glu_loss(void *c_)
{
    struct glu_ctx *c = c_;
    lg_ref_swiglu_forward(c->n, c->g, c->u, c->a);
    return lg_test_wsum(c->a, c->r, c->n);
}

START_TEST(swiglu_forward_and_backward)
{
    const int64_t n = 3 * 41;
    struct glu_ctx c = {.n = n, .g = rnd(n, lg_test_seed() + 21, 6.0f), .u = rnd(n, lg_test_seed() + 22, 2.0f),
                        .r = rnd(n, lg_test_seed() + 23, 1.0f), .a = poisoned(n)};
    float *dg = poisoned(n), *du = poisoned(n);
    lg_ref_swiglu_forward(n, c.g, c.u, c.a);
    double *want = malloc(sizeof(double) * n);
    for (int64_t i = 0; i < n; i++)
        want[i] = (double)c.g[i] / (1.0 + exp(-(double)c.g[i])) * c.u[i];
    ck_assert(max_rel(c.a, want, n, 1e-3) < 1e-6);
    lg_ref_swiglu_backward(n, c.g, c.u, c.r, dg, du);
    lg_test_check_fd("swiglu dg", glu_loss, &c, c.g, dg, n, 1.0f / 256);
    lg_test_check_fd("swiglu du", glu_loss, &c, c.u, du, n, 1.0f / 256);
    float *dg2 = poisoned(n);
    lg_ref_swiglu_backward(n, c.g, c.u, c.r, dg2, NULL); /* du not needed */
    ck_assert(memcmp(dg, dg2, sizeof(float) * n) == 0);
    free(want), free(c.g), free(c.u), free(c.r), free(c.a), free(dg), free(du), free(dg2);
}
END_TEST

/* ---- frozen linear ---- */

struct lin_ctx {
    struct lg_ref_linear L;
    int64_t n;
    float *x, *r, *y;
};

static double lin_loss(void *c_)
{
    struct lin_ctx *c = c_;
    lg_ref_linear_forward(&c->L, c->n, c->x, c->y);
    return lg_test_wsum(c->y, c->r, c->n * c->L.M);
}

START_TEST(linear_against_naive_loops)
{
    /* remainders of the 4x4 blocks on both sides, K above the 256-column slice, and a 1x1 */
    const int64_t shapes[][3] = {{7, 301, 13}, {4, 4, 4}, {9, 600, 6}, {1, 1, 1}, {12, 64, 48}};
    for (int s = 0; s < 5; s++) {
        const int64_t n = shapes[s][0], K = shapes[s][1], M = shapes[s][2];
        uint64_t seed = lg_test_seed() + 100 * (uint64_t)s;
        float *x = rnd(n * K, seed + 1, 1.0f), *w = rnd(M * K, seed + 2, 0.5f), *b = rnd(M, seed + 3, 1.0f);
        float *dy = rnd(n * M, seed + 4, 1.0f), *y = poisoned(n * M), *dx = poisoned(n * K);
        double *wy = malloc(sizeof(double) * n * M), *wdx = malloc(sizeof(double) * n * K);
        for (int bias = 0; bias < 2; bias++) {
            struct lg_ref_linear L = {.K = K, .M = M, .w = w, .bias = bias ? b : NULL};
            lg_ref_linear_forward(&L, n, x, y);
            for (int64_t i = 0; i < n; i++)
                for (int64_t o = 0; o < M; o++) {
                    double acc = bias ? b[o] : 0.0;
                    for (int64_t k = 0; k < K; k++)
                        acc += (double)x[i * K + k] * w[o * K + k];
                    wy[i * M + o] = acc;
                }
            ck_assert_msg(max_rel(y, wy, n * M, 1e-2) < 1e-6, "forward %lldx%lldx%lld bias %d", (long long)n,
                          (long long)K, (long long)M, bias);
        }
        struct lg_ref_linear L = {.K = K, .M = M, .w = w, .bias = b};
        lg_ref_linear_backward(&L, n, dy, dx);
        for (int64_t i = 0; i < n; i++)
            for (int64_t k = 0; k < K; k++) {
                double acc = 0;
                for (int64_t o = 0; o < M; o++)
                    acc += (double)dy[i * M + o] * w[o * K + k];
                wdx[i * K + k] = acc;
            }
        ck_assert_msg(max_rel(dx, wdx, n * K, 1e-2) < 1e-6, "backward %lldx%lldx%lld", (long long)n,
                      (long long)K, (long long)M);
        if (K * n <= 400) { /* finite differences on the small shapes (the map is linear: the difference is exact) */
            struct lin_ctx c = {.L = L, .n = n, .x = x, .r = dy, .y = y};
            lg_test_check_fd("linear dx", lin_loss, &c, x, dx, n * K, 1.0f / 64);
        }
        free(x), free(w), free(b), free(dy), free(y), free(dx), free(wy), free(wdx);
    }
}
END_TEST

/* ---- LM head with cross-entropy ---- */

/* loss and dx from the full [n x V] logits, written independently of xent.c */
static double dense_xent(const struct lg_ref_lm_head *p, double *dx, int64_t *count)
{
    const int64_t n = p->n, H = p->H, V = p->V;
    double *z = malloc(sizeof(double) * V), loss = 0;
    *count = 0;
    for (int64_t t = 0; t < n; t++) {
        for (int64_t c = 0; c < H; c++)
            dx[t * H + c] = 0;
        if (p->labels[t] == -100)
            continue;
        ++*count;
        double mx = -INFINITY, se = 0;
        for (int64_t v = 0; v < V; v++) {
            z[v] = 0;
            for (int64_t c = 0; c < H; c++)
                z[v] += (double)p->x[t * H + c] * p->w[v * H + c];
            mx = fmax(mx, z[v]);
        }
        for (int64_t v = 0; v < V; v++)
            se += exp(z[v] - mx);
        loss += mx + log(se) - z[p->labels[t]];
        for (int64_t v = 0; v < V; v++) {
            double g = exp(z[v] - mx) / se - (v == p->labels[t]);
            for (int64_t c = 0; c < H; c++)
                dx[t * H + c] += p->scale * g * p->w[v * H + c];
        }
    }
    free(z);
    return p->scale * loss;
}

static double xent_loss(void *c_)
{
    double l = NAN;
    ck_assert_int_eq(lg_ref_lm_head_loss(c_, &l, NULL, NULL), LG_OK);
    return l;
}

START_TEST(lm_head_loss_against_dense_logits)
{
    const int64_t shapes[][3] = {{9, 12, 50}, {5, 7, 3}, {13, 16, 131}};
    for (int s = 0; s < 3; s++) {
        const int64_t n = shapes[s][0], H = shapes[s][1], V = shapes[s][2];
        uint64_t seed = lg_test_seed() + 300 + 10 * (uint64_t)s;
        float *x = rnd(n * H, seed + 1, 1.0f), *w = rnd(V * H, seed + 2, 1.0f), *dx = poisoned(n * H);
        int32_t *lab = malloc(sizeof(int32_t) * n);
        for (int64_t t = 0; t < n; t++) /* every third ignored, others spread over [0, V) including the ends */
            lab[t] = t % 3 == 1 ? -100 : (int32_t)(((uint64_t)t * 7919u + seed) % (uint64_t)V);
        lab[0] = (int32_t)(V - 1);
        struct lg_ref_lm_head p = {.n = n, .H = H, .V = V, .x = x, .w = w, .labels = lab, .scale = 1.0 / 7.0};
        double loss = NAN, *wdx = malloc(sizeof(double) * n * H);
        int64_t count = -1, wcount = -1;
        ck_assert_int_eq(lg_ref_lm_head_loss(&p, &loss, dx, &count), LG_OK);
        double wl = dense_xent(&p, wdx, &wcount);
        ck_assert_int_eq(count, wcount);
        ck_assert_msg(fabs(loss - wl) <= 1e-12 * fabs(wl), "loss %.17g want %.17g", loss, wl);
        ck_assert_msg(max_rel(dx, wdx, n * H, 1e-3) < 1e-6, "dx V=%lld", (long long)V);
        for (int64_t t = 0; t < n; t++)
            if (lab[t] == -100)
                for (int64_t c = 0; c < H; c++)
                    ck_assert(dx[t * H + c] == 0.0f);
        lg_test_check_fd("lm head dx", xent_loss, &p, x, dx, n * H, 1.0f / 256);
        free(x), free(w), free(dx), free(lab), free(wdx);
    }
}
END_TEST

START_TEST(lm_head_all_ignored_and_bad_labels)
{
    const int64_t n = 6, H = 5, V = 11;
    float *x = rnd(n * H, lg_test_seed() + 401, 1.0f), *w = rnd(V * H, lg_test_seed() + 402, 1.0f);
    float *dx = poisoned(n * H);
    int32_t lab[6] = {-100, -100, -100, -100, -100, -100};
    struct lg_ref_lm_head p = {.n = n, .H = H, .V = V, .x = x, .w = w, .labels = lab, .scale = 0.25};
    double loss = NAN;
    int64_t count = -1;
    ck_assert_int_eq(lg_ref_lm_head_loss(&p, &loss, dx, &count), LG_OK);
    ck_assert(loss == 0.0 && count == 0);
    for (int64_t i = 0; i < n * H; i++)
        ck_assert(dx[i] == 0.0f);
    const int32_t bad[] = {11, -1, -99};
    for (int b = 0; b < 3; b++) {
        lab[4] = bad[b];
        lg_clear_error();
        ck_assert_int_eq(lg_ref_lm_head_loss(&p, &loss, dx, &count), LG_ERR_INVALID);
        ck_assert_msg(strstr(lg_last_error(), "token 4"), "detail: %s", lg_last_error());
    }
    free(x), free(w), free(dx);
}
END_TEST

/* ---- AdamW ---- */

START_TEST(adamw_two_steps_by_hand)
{
    /* lr 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 0.01; tensors {1, -2} and {0.5, 0.25}.
     * Step 1, g = {0.5, -1}, {2, 3e-8}: m = 0.1 g, v = 0.001 g², m̂ = g, v̂ = g², so each p moves to
     *   p·(1 - 0.001) - 0.1 · g / (|g| + 1e-8):
     *   1 → 0.999 - 0.099999998 = 0.899000002, -2 → -1.898, 0.5 → 0.3995, and 0.25 → 0.24975 - 0.075 = 0.17475:
     *   the tiny gradient is where eps counts (outside the square root, after the bias correction).
     * Step 2, g = {0.25, 0.5}, {-1, -2e-8}: for the first element m = 0.9·0.05 + 0.1·0.25 = 0.07,
     *   v = 0.999·0.00025 + 0.001·0.0625 = 0.00031225, m̂ = 0.07/0.19 = 0.368421, v̂ = 0.00031225/0.001999
     *   = 0.156203, p = 0.899000002·0.999 - 0.1·0.368421/0.395225 = 0.898101 - 0.093218 = 0.804883; for the
     *   last, m = 7e-10, v = 1.2991e-18, m̂ = 3.684e-9, sqrt(v̂) = 2.5493e-8, p = 0.174575 - 0.1·3.684e-9/3.5493e-8
     *   = 0.164195. The digits below are the same arithmetic in Python doubles, with p, m, v rounded to fp32
     *   between steps as they are stored. */
    float p0[2] = {1.0f, -2.0f}, p1[2] = {0.5f, 0.25f}, g0[2], g1[2], m0[2] = {0}, m1[2] = {0}, v0[2] = {0};
    float v1[2] = {0};
    float *p[] = {p0, p1}, *g[] = {g0, g1}, *m[] = {m0, m1}, *v[] = {v0, v1};
    const int64_t count[] = {2, 2};
    struct lg_ref_params l = {.n = 2, .p = p, .g = g, .m = m, .v = v, .count = count};
    struct lg_ref_adamw o = {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
    const float gs[2][4] = {{0.5f, -1.0f, 2.0f, 3e-8f}, {0.25f, 0.5f, -1.0f, -2e-8f}};
    const double want_p[2][4] = {{0.8989999890327454, -1.8980000019073486, 0.3995000123977661, 0.17475000023841858},
                                 {0.8048830032348633, -1.869468331336975, 0.3724668025970459, 0.16419504582881927}};
    const double want_m[4] = {0.07000000029802322, -0.04000000283122063, 0.08000000566244125, 6.999998358736548e-10};
    const double want_v[4] = {0.0003122500202152878, 0.0012490000808611512, 0.004996000323444605,
                              1.299099869916448e-18};
    for (int t = 0; t < 2; t++) {
        g0[0] = gs[t][0], g0[1] = gs[t][1], g1[0] = gs[t][2], g1[1] = gs[t][3];
        double norm = NAN, wn = 0;
        int skipped = -1;
        ck_assert_int_eq(lg_ref_adamw_step(&o, &l, t + 1, &norm, &skipped), LG_OK);
        ck_assert(skipped == 0);
        for (int e = 0; e < 4; e++)
            wn += (double)gs[t][e] * gs[t][e];
        ck_assert(fabs(norm - sqrt(wn)) < 1e-12);
        const float got[4] = {p0[0], p0[1], p1[0], p1[1]};
        for (int e = 0; e < 4; e++)
            ck_assert_msg(fabs(got[e] - want_p[t][e]) <= 2e-7 * fabs(want_p[t][e]), "step %d p[%d] %.9g want %.9g",
                          t + 1, e, got[e], want_p[t][e]);
    }
    const float gm[4] = {m0[0], m0[1], m1[0], m1[1]}, gv[4] = {v0[0], v0[1], v1[0], v1[1]};
    for (int e = 0; e < 4; e++) {
        ck_assert_msg(fabs(gm[e] - want_m[e]) <= 2e-7 * fabs(want_m[e]), "m[%d] %.9g", e, gm[e]);
        ck_assert_msg(fabs(gv[e] - want_v[e]) <= 2e-7 * fabs(want_v[e]), "v[%d] %.9g", e, gv[e]);
    }
    lg_clear_error();
    ck_assert_int_eq(lg_ref_adamw_step(&o, &l, 0, NULL, NULL), LG_ERR_INVALID);
}
END_TEST

/* three random tensors; p, m, v and g in one block each so they can be compared wholesale */
struct plist {
    float *pb, *gb, *mb, *vb;
    float *p[3], *g[3], *m[3], *v[3];
    int64_t count[3], total;
    struct lg_ref_params l;
};

static void plist_init(struct plist *s, uint64_t seed)
{
    s->count[0] = 17, s->count[1] = 64, s->count[2] = 5, s->total = 86;
    s->pb = rnd(s->total, seed + 1, 1.0f), s->gb = rnd(s->total, seed + 2, 1.0f);
    s->mb = rnd(s->total, seed + 3, 0.1f), s->vb = rnd(s->total, seed + 4, 0.01f);
    for (int64_t i = 0; i < s->total; i++)
        s->vb[i] = fabsf(s->vb[i]);
    for (int i = 0, off = 0; i < 3; off += (int)s->count[i], i++)
        s->p[i] = s->pb + off, s->g[i] = s->gb + off, s->m[i] = s->mb + off, s->v[i] = s->vb + off;
    s->l = (struct lg_ref_params){.n = 3, .p = s->p, .g = s->g, .m = s->m, .v = s->v, .count = s->count};
}

static void plist_free(struct plist *s) { free(s->pb), free(s->gb), free(s->mb), free(s->vb); }

START_TEST(grad_norm_and_clipping)
{
    struct plist s;
    plist_init(&s, lg_test_seed() + 500);
    double ss = 0;
    for (int64_t i = 0; i < s.total; i++)
        ss += (double)s.gb[i] * s.gb[i];
    const double norm = lg_ref_grad_norm(&s.l);
    ck_assert(fabs(norm - sqrt(ss)) <= 1e-12 * norm);
    float *keep = malloc(sizeof(float) * s.total);
    memcpy(keep, s.gb, sizeof(float) * s.total);
    /* max_norm above the norm: clip_coef clamps to 1 and nothing changes */
    ck_assert(lg_ref_grad_clip(&s.l, 2 * norm, norm) == 1.0);
    ck_assert(memcmp(keep, s.gb, sizeof(float) * s.total) == 0);
    /* below: every gradient times max_norm / (norm + 1e-6), so the new norm is max_norm (less a hair) */
    const double c = lg_ref_grad_clip(&s.l, 0.9 * norm, norm);
    ck_assert(fabs(c - (0.9 * norm) / (norm + 1e-6)) < 1e-15);
    for (int64_t i = 0; i < s.total; i++)
        ck_assert(s.gb[i] == (float)((double)keep[i] * c));
    ck_assert(fabs(lg_ref_grad_norm(&s.l) - 0.9 * norm) < 1e-6 * norm);
    /* in the step: the reported norm is the one before clipping, and the update uses the clipped gradient */
    struct plist a, b;
    plist_init(&a, lg_test_seed() + 600), plist_init(&b, lg_test_seed() + 600);
    struct lg_ref_adamw o = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1};
    const double na = lg_ref_grad_norm(&a.l);
    o.max_grad_norm = 0.75 * na;
    double got = 0;
    int skipped = -1;
    ck_assert_int_eq(lg_ref_adamw_step(&o, &a.l, 3, &got, &skipped), LG_OK);
    ck_assert(got == na && skipped == 0);
    lg_ref_grad_clip(&b.l, 0.75 * na, na);
    o.max_grad_norm = 0;
    ck_assert_int_eq(lg_ref_adamw_step(&o, &b.l, 3, NULL, NULL), LG_OK);
    ck_assert(memcmp(a.pb, b.pb, sizeof(float) * a.total) == 0);
    ck_assert(memcmp(a.mb, b.mb, sizeof(float) * a.total) == 0);
    ck_assert(memcmp(a.vb, b.vb, sizeof(float) * a.total) == 0);
    free(keep), plist_free(&s), plist_free(&a), plist_free(&b);
}
END_TEST

START_TEST(adamw_nonfinite_gradient_is_a_noop)
{
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 3; k++) {
        struct plist s, ref;
        plist_init(&s, lg_test_seed() + 700), plist_init(&ref, lg_test_seed() + 700);
        s.g[2][3] = bad[k], ref.g[2][3] = bad[k]; /* the last tensor, so the first two were seen first */
        struct lg_ref_adamw o = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1,
                                 .max_grad_norm = 1.0};
        double norm = 0;
        int skipped = 0;
        ck_assert_int_eq(lg_ref_adamw_step(&o, &s.l, 1, &norm, &skipped), LG_OK);
        ck_assert(skipped == 1 && !isfinite(norm));
        const size_t sz = sizeof(float) * (size_t)s.total;
        ck_assert(memcmp(s.pb, ref.pb, sz) == 0 && memcmp(s.mb, ref.mb, sz) == 0);
        ck_assert(memcmp(s.vb, ref.vb, sz) == 0 && memcmp(s.gb, ref.gb, sz) == 0);
        plist_free(&s), plist_free(&ref);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ref_ops");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, embed_gathers_rows_and_checks_ids);
    tcase_add_test(tc, rmsnorm_forward_and_backward);
    tcase_add_test(tc, swiglu_forward_and_backward);
    tcase_add_test(tc, linear_against_naive_loops);
    tcase_add_test(tc, lm_head_loss_against_dense_logits);
    tcase_add_test(tc, lm_head_all_ignored_and_bad_labels);
    tcase_add_test(tc, adamw_two_steps_by_hand);
    tcase_add_test(tc, grad_norm_and_clipping);
    tcase_add_test(tc, adamw_nonfinite_gradient_is_a_noop);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0) ? 1 : 0;
}
