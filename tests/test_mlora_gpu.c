/* test_mlora_gpu.c: FusedMultiLoRA on the GPU against the CPU reference (lg_ref_mlora.h). A table of cases
 * (adapters 1, 2, 4, 7, 32, 64; one module, q/k/v and gate/up merged with some modules not adapted; mixed
 * ranks (multiples of 4) and dropouts; bf16 and fp16; strategies (a) and (b); dS in dY's tail or apart; S in
 * X's tail or apart), each on fresh random inputs (seeded, printed) with uneven segments at odd boundaries, a
 * segment of one token, an empty segment, a base-only segment and an adapter with no tokens, outputs poisoned
 * with NaN before the run. Every element of S, Y, dX and every present slot's dA and dB is checked (relative
 * L2 error per tensor, the first bad element printed with its index); absent adapters' gradients must stay
 * untouched. Then: both strategies agree, gradients are bitwise reproducible run to run, two layers sharing
 * one workspace compute what each computes alone, and bad calls are
 * errors (merged against separate layers and the split GEMMs: test_mlora_gpu_merged.c). Prints one PASS/FAIL
 * line per case. Exits 77 without a GPU. */
#include "lg_mlora_case.h"

#include <check.h>
#include <math.h>
#include <string.h>

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

START_TEST(layer_matches_reference)
{
    ck_assert_msg(mc_check_case(&cases[_i], cases[_i].strategy, 0, NULL), "case '%s' failed (see above)",
                  cases[_i].name);
}
END_TEST

/* (a) and (b) on the same inputs: Y within the dtype's tolerance, the gradients equal (same S, same dY). */
START_TEST(strategies_agree)
{
    static const struct mcase c = {"4 adapters both", 4, 1, 512, {256}, 1500, 2, 1, LG_BF16, LG_MLORA_AUTO, 0, 0};
    struct mc_run ra, rb;
    ck_assert(mc_check_case(&c, LG_MLORA_EXT_K, 0, &ra));
    ck_assert(mc_check_case(&c, LG_MLORA_EXPAND, 0, &rb));
    ck_assert(ra.used == LG_MLORA_EXT_K && rb.used == LG_MLORA_EXPAND);
    double num = 0, den = 0;
    for (int64_t i = 0; i < ra.n * ra.MT; i++)
        num += (ra.y[i] - rb.y[i]) * (ra.y[i] - rb.y[i]), den += (double)ra.y[i] * ra.y[i];
    for (int i = 0; i < c.nad; i++)
        if (ra.da[i])
            ck_assert_msg(!memcmp(ra.da[i], rb.da[i], sizeof(float) * (size_t)(c.K * 4)), "dA differs between (a) and (b)");
    printf("strategies (a) vs (b): Y rel diff %.2e\n", sqrt(num / den));
    ck_assert_msg(sqrt(num / den) < 1e-2, "(a) and (b) disagree: %g", sqrt(num / den));
    mc_run_free(&c, &ra), mc_run_free(&c, &rb);
}
END_TEST

/* Same inputs twice: dX and every gradient bit-identical; grad_beta = 1 doubles them exactly. */
START_TEST(gradients_bitwise_reproducible)
{
    static const struct mcase c = {"7 adapters det", 7, 3, 512, {256, 128, 128}, 3000, 2, 1, LG_BF16,
                                   LG_MLORA_EXPAND, 0, 1};
    struct mc_inputs in;
    mc_make_inputs(&c, lg_test_seed() + 3, &in);
    lg_mlora_t *l = mc_make_layer(&c, &in, 5);
    const int64_t n = in.n, K = c.K, MT = in.MT, ldx = lg_mlora_ext_ld(l);
    lg_mlora_segments_t *sg;
    CHECK(lg_mlora_segments_init(mc_ctx, 80, &sg));
    CHECK(lg_mlora_segments_set(sg, n, c.nad, in.seg, in.nseg, 0));
    CUdeviceptr x = lg_dev_alloc((size_t)(n * ldx) * 2), y = lg_dev_alloc((size_t)(n * MT) * 2);
    CUdeviceptr dy = lg_dev_alloc((size_t)(n * MT) * 2), dx = lg_dev_alloc((size_t)(n * K) * 2);
    lg_dev_upload(x, ldx, in.x, n, K, c.t);
    lg_dev_upload(dy, MT, in.dy, n, MT, c.t);
    struct lg_mlora_fwd f = {.n = n, .seg = sg, .x = x, .ldx = ldx, .y = y, .ldy = MT, .seed = 9,
                             .strategy = c.strategy};
    struct lg_mlora_bwd b = {.n = n, .seg = sg, .x = x, .ldx = ldx, .dy = dy, .lddy = MT, .dx = dx, .lddx = K,
                             .seed = 9, .strategy = c.strategy};
    /* gradients live in one allocation per layer: mc_compare it whole, via the first slot's pointer and size */
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
    mc_free_inputs(&c, &in);
}
END_TEST

static void same_run(const char *what, const struct mcase *c, const struct mc_inputs *in, const struct mc_run *a,
                     const struct mc_run *b)
{
    ck_assert_msg(!memcmp(a->y, b->y, sizeof(float) * (size_t)(a->n * a->MT)), "%s: Y differs", what);
    ck_assert_msg(!memcmp(a->dx, b->dx, sizeof(float) * (size_t)(a->n * c->K)), "%s: dX differs", what);
    for (int i = 0; i < c->nad * c->nmod; i++)
        if (a->da[i]) {
            const size_t r = (size_t)in->rs[i].rank;
            ck_assert_msg(!memcmp(a->da[i], b->da[i], sizeof(float) * r * (size_t)c->K), "%s: dA of slot %d", what, i);
            ck_assert_msg(!memcmp(a->db[i], b->db[i], sizeof(float) * r * (size_t)c->M[i % c->nmod]),
                          "%s: dB of slot %d", what, i);
        }
}

/* Two layers of different shapes sharing one workspace (as the trainer's layers do), run in turn: the same
 * results, bit for bit, as each on a workspace of its own; the shared one holds the larger need. */
START_TEST(shared_workspace)
{
    static const struct mcase ca = {"gate/up shared, dS apart", 4, 2, 256, {384, 384}, 1200, 0, 1, LG_BF16,
                                    LG_MLORA_EXPAND, 0, 1};
    static const struct mcase cb = {"q/k/v shared", 7, 3, 512, {128, 128, 64}, 1700, 1, 1, LG_BF16, LG_MLORA_EXPAND,
                                    0, 0};
    struct mc_inputs ia, ib;
    mc_make_inputs(&ca, lg_test_seed() + 11, &ia);
    mc_make_inputs(&cb, lg_test_seed() + 12, &ib);
    lg_mlora_t *la = mc_make_layer(&ca, &ia, 3), *lb = mc_make_layer(&cb, &ib, 11);
    struct mc_run a1, b1, a2, b2, a3;
    mc_gpu_run(la, &ca, &ia, ca.strategy, 21, 128, &a1);
    mc_gpu_run(lb, &cb, &ib, cb.strategy, 22, 128, &b1);
    lg_mlora_ws_t *ws;
    CHECK(lg_mlora_ws_init(&ws));
    lg_mlora_share_ws(la, ws), lg_mlora_share_ws(lb, ws);
    ck_assert(lg_mlora_ws_bytes(ws) == 0);
    mc_gpu_run(la, &ca, &ia, ca.strategy, 21, 128, &a2);
    const size_t after_a = lg_mlora_ws_bytes(ws);
    mc_gpu_run(lb, &cb, &ib, cb.strategy, 22, 128, &b2);
    mc_gpu_run(la, &ca, &ia, ca.strategy, 21, 128, &a3);
    ck_assert_msg(after_a > 0 && lg_mlora_ws_bytes(ws) >= after_a, "workspace %zu then %zu bytes", after_a,
                  lg_mlora_ws_bytes(ws));
    same_run("layer A shared", &ca, &ia, &a1, &a2);
    same_run("layer B shared", &cb, &ib, &b1, &b2);
    same_run("layer A after B", &ca, &ia, &a1, &a3);
    printf("PASS shared workspace: two layers, %zu bytes between them, results bit-identical\n",
           lg_mlora_ws_bytes(ws));
    mc_run_free(&ca, &a1), mc_run_free(&ca, &a2), mc_run_free(&ca, &a3);
    mc_run_free(&cb, &b1), mc_run_free(&cb, &b2);
    lg_mlora_free(la), lg_mlora_free(lb);
    lg_mlora_ws_free(ws); /* after its layers */
    mc_free_inputs(&ca, &ia), mc_free_inputs(&cb, &ib);
}
END_TEST

START_TEST(bad_calls_are_errors)
{
    static const struct mcase c = {"bad", 2, 1, 256, {128}, 300, 0, 0, LG_BF16, LG_MLORA_EXT_K, 0, 0};
    struct mc_inputs in;
    mc_make_inputs(&c, 5, &in);
    lg_mlora_t *l = mc_make_layer(&c, &in, 1);
    lg_mlora_segments_t *sg;
    CHECK(lg_mlora_segments_init(mc_ctx, 4, &sg));
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
    CHECK(lg_mlora_segments_init(mc_ctx, 4, &sg3));
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
    mc_free_inputs(&c, &in);
}
END_TEST

static void add_tests(TCase *tc)
{
    tcase_add_loop_test(tc, layer_matches_reference, 0, (int)(sizeof cases / sizeof cases[0]));
    tcase_add_test(tc, strategies_agree);
    tcase_add_test(tc, gradients_bitwise_reproducible);
    tcase_add_test(tc, shared_workspace);
    tcase_add_test(tc, bad_calls_are_errors);
}

int main(void) { return mc_main("mlora_gpu", add_tests); }
