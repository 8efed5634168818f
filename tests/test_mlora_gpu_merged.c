/* test_mlora_gpu_merged.c: FusedMultiLoRA's merged projections on the GPU: merged q/k/v and gate/up against one
 * layer per module (Y per module, every slot's gradients, dX the sum of the separate layers'), and tiles.split
 * (the modules' frozen and dX GEMMs one per module) against the CPU reference under both strategies. Fixture:
 * tests/util/lg_mlora_case.c. Exits 77 without a GPU. */
#include "lg_mlora_case.h"

#include <check.h>
#include <math.h>
#include <string.h>

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
        const double tl = mc_tol(c->t);
        struct mc_inputs in;
        mc_make_inputs(c, lg_test_seed() + 11 + ci, &in);
        struct lg_ref_mlora R = {.K = c->K, .nmod = c->nmod, .nadapters = c->nad, .slot = in.rs, .round = c->t,
                                 .layer_id = 21};
        const int rmax = lg_ref_mlora_rmax(&R);
        lg_mlora_t *l = mc_make_layer(c, &in, 21);
        struct mc_run gm;
        mc_gpu_run(l, c, &in, c->strategy, 77, rmax, &gm);
        lg_mlora_free(l);
        double *dxs = calloc((size_t)(in.n * c->K), sizeof(double));
        int64_t mo = 0;
        int ok = 1;
        for (int m = 0; m < c->nmod; m++) {
            struct mcase one = *c;
            one.nmod = 1, one.M[0] = c->M[m];
            struct mc_inputs i1 = in;
            struct lg_mlora_slot_params *sp = calloc((size_t)c->nad, sizeof *sp);
            struct lg_ref_mlora_slot *rs = calloc((size_t)c->nad, sizeof *rs);
            for (int a = 0; a < c->nad; a++)
                sp[a] = in.sp[a * c->nmod + m], rs[a] = in.rs[a * c->nmod + m];
            i1.sp = sp, i1.rs = rs, i1.w[0] = in.w[m], i1.MT = c->M[m];
            i1.dy = malloc(sizeof(float) * in.n * c->M[m]);
            for (int64_t t = 0; t < in.n; t++)
                memcpy(i1.dy + t * c->M[m], in.dy + t * in.MT + mo, sizeof(float) * (size_t)c->M[m]);
            lg_mlora_t *l1 = mc_make_layer(&one, &i1, 21 + (uint32_t)m);
            struct mc_run g1;
            mc_gpu_run(l1, &one, &i1, c->strategy, 77, rmax, &g1);
            double *y1 = malloc(sizeof(double) * in.n * c->M[m]);
            float *ym = malloc(sizeof(float) * in.n * c->M[m]);
            for (int64_t t = 0; t < in.n; t++)
                for (int64_t o = 0; o < c->M[m]; o++)
                    y1[t * c->M[m] + o] = g1.y[t * c->M[m] + o], ym[t * c->M[m] + o] = gm.y[t * in.MT + mo + o];
            ok &= mc_compare("Y merged vs separate", ym, y1, (size_t)(in.n * c->M[m]), mc_tol(c->t)) <= mc_tol(c->t);
            for (int a = 0; a < c->nad; a++) {
                const int r = rs[a].rank, i = a * c->nmod + m;
                if (!r || !mc_present(&in, a))
                    continue;
                double *da = mc_dbl(g1.da[a], (size_t)(r * c->K)), *db = mc_dbl(g1.db[a], (size_t)(r * c->M[m]));
                ok &= mc_compare("dA merged vs separate", gm.da[i], da, (size_t)(r * c->K), tl) <= tl;
                ok &= mc_compare("dB merged vs separate", gm.db[i], db, (size_t)(r * c->M[m]), tl) <= tl;
                free(da), free(db);
            }
            for (int64_t i = 0; i < in.n * c->K; i++)
                dxs[i] += g1.dx[i];
            mo += c->M[m];
            free(y1), free(ym), free(i1.dy), free(sp), free(rs);
            mc_run_free(&one, &g1);
            lg_mlora_free(l1);
        }
        /* the separate layers' dX each hold dY_m·W_m once: their sum is the merged dX */
        ok &= mc_compare("dX merged vs sum of separate", gm.dx, dxs, (size_t)(in.n * c->K), tl) <= tl;
        printf("%-4s %s (%d adapters)\n", ok ? "PASS" : "FAIL", c->name, c->nad);
        ck_assert_msg(ok, "%s", c->name);
        free(dxs);
        mc_run_free(c, &gm);
        mc_free_inputs(c, &in);
    }
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
    for (int ci = 0; ci < 3; ci++)
        ck_assert_msg(mc_check_case(&cs[ci], cs[ci].strategy, 1, NULL), "case '%s' failed (see above)", cs[ci].name);
    struct mc_inputs in;
    mc_make_inputs(&cs[0], 5, &in);
    lg_mlora_t *l = mc_make_layer(&cs[0], &in, 3);
    struct lg_mlora_tiles t;
    CHECK(lg_mlora_arch_tiles(l, &t));
    t.split = 2;
    ck_assert_int_eq(lg_mlora_set_tiles(l, &t), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "split must be 0"));
    lg_mlora_free(l);
    mc_free_inputs(&cs[0], &in);
}
END_TEST

static void add_tests(TCase *tc)
{
    tcase_add_test(tc, merged_equals_separate);
    tcase_add_test(tc, split_gemms_match_reference);
}

int main(void) { return mc_main("mlora_gpu_merged", add_tests); }
