/* test_attention_gpu_calls.c: packed causal GQA attention on the GPU (lg_attention.h) as calls: sample isolation
 * (one sample's inputs changed, every other sample's outputs and gradients bit-identical), bitwise
 * reproducibility of the deterministic mode, and bad calls (errors, nothing written). The values against the
 * CPU reference: test_attention_gpu.c; the machinery both share: tests/util/lg_attn_gpu_util.c. Exits 77
 * without a GPU. */
#include "lg_attention.h"
#include "lg_attn_gpu_util.h"
#include "lg_attn_iso.h"
#include "lg_gpu_util.h"
#include "lg_half.h"
#include "lg_ref_ops.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Changing every input of one sample leaves every other sample's outputs and gradients bit-identical. */
START_TEST(samples_are_isolated)
{
    const struct acase c = {"isolation", 5, {300, 77, 1000, 5, 129}, 8, 2, 128, LG_BF16, 0};
    const int victim = 2;
    if (attn_skipped(&c))
        return;
    struct host a, b;
    attn_inputs_make(&a, &c, lg_test_seed() + 5);
    b = a;
    attn_outputs_alloc(&b, &c);
    struct dev D;
    attn_dev_alloc(&D, &c, &a);
    for (int det = 0; det < 2; det++) {
        lg_attn_t *A = attn_make_attn(&c, det ? LG_ATTN_DETERMINISTIC : 0, NULL);
        attn_dev_upload(&D, &c, &a);
        attn_gpu_run(A, &c, &a, &D);
        /* new q, k, v, dout for the victim only */
        const struct lg_attn_iso is = {.T = a.T, .cu = a.cu, .hq = c.hq, .hkv = c.hkv, .hd = c.hd, .t = c.t};
        struct lg_attn_iso_in fresh;
        lg_attn_iso_perturb(&is, &(struct lg_attn_iso_in){a.q, a.k, a.v, a.dout}, victim, lg_test_seed() + 99,
                            &fresh);
        struct host p = a;
        p.q = fresh.q, p.k = fresh.k, p.v = fresh.v, p.dout = fresh.dout;
        attn_dev_upload(&D, &c, &p);
        attn_gpu_run(A, &c, &b, &D);
        /* the fast mode's dQ sums in atomic order: compared to rounding, everything else bit for bit */
        lg_attn_iso_check(&is, victim, &(struct lg_attn_iso_out){a.o, a.lse, a.dq, a.dk, a.dv},
                          &(struct lg_attn_iso_out){b.o, b.lse, b.dq, b.dk, b.dv}, det, det ? "det mode" : "fast mode");
        printf("  isolation (%s): PASS\n", det ? "det" : "fast");
        lg_attn_iso_free(&fresh);
        lg_attn_free(A);
    }
    attn_dev_free(&D);
    free(b.o), free(b.lse), free(b.dq), free(b.dk), free(b.dv);
    attn_host_free(&a);
}
END_TEST

/* The deterministic mode gives the same bits twice (and the fast mode's dK, dV too: no atomics there). */
START_TEST(deterministic_is_bitwise_reproducible)
{
    const struct acase c = {"repro", 4, {2048, 129, 1000, 3}, 16, 4, 128, LG_BF16, 0};
    if (attn_skipped(&c))
        return;
    struct host a, b;
    attn_inputs_make(&a, &c, lg_test_seed() + 7);
    b = a;
    attn_outputs_alloc(&b, &c);
    struct dev D;
    attn_dev_alloc(&D, &c, &a);
    attn_dev_upload(&D, &c, &a);
    for (int det = 1; det >= 0; det--) {
        lg_attn_t *A = attn_make_attn(&c, det ? LG_ATTN_DETERMINISTIC : 0, NULL);
        attn_gpu_run(A, &c, &a, &D);
        attn_gpu_run(A, &c, &b, &D);
        const size_t nq = (size_t)a.T * c.hq * c.hd, nk = (size_t)a.T * c.hkv * c.hd;
        ck_assert_msg(!memcmp(a.o, b.o, 4 * nq), "O differs between identical forwards");
        ck_assert_msg(!memcmp(a.lse, b.lse, 4 * (size_t)a.T * c.hq), "LSE differs between identical forwards");
        ck_assert_msg(!memcmp(a.dk, b.dk, 4 * nk), "%s: dK not bitwise reproducible", det ? "det" : "fast");
        ck_assert_msg(!memcmp(a.dv, b.dv, 4 * nk), "%s: dV not bitwise reproducible", det ? "det" : "fast");
        if (det)
            ck_assert_msg(!memcmp(a.dq, b.dq, 4 * nq), "deterministic dQ not bitwise reproducible");
        else
            printf("  fast mode dQ bitwise equal twice: %s (not required)\n", memcmp(a.dq, b.dq, 4 * nq) ? "no" : "yes");
        printf("  reproducibility (%s): PASS\n", det ? "det" : "fast");
        lg_attn_free(A);
    }
    attn_dev_free(&D);
    free(b.o), free(b.lse), free(b.dq), free(b.dk), free(b.dv);
    attn_host_free(&a);
}
END_TEST

START_TEST(bad_calls_are_errors)
{
    const struct acase c = {"bad", 2, {100, 28}, 8, 2, 128, LG_BF16, 0};
    struct host h;
    attn_inputs_make(&h, &c, 3);
    struct dev D;
    attn_dev_alloc(&D, &c, &h);
    attn_dev_upload(&D, &c, &h);
    lg_dev_poison(D.o, D.bytes_o);
    lg_attn_t *A = attn_make_attn(&c, 0, NULL);
    struct lg_attn_seqs sq = attn_seqs_of(&c, &h, &D);
    struct lg_attn_fwd f = {.seqs = sq, .q = D.q, .k = D.k, .v = D.v, .o = D.o, .lse = D.lse};
    struct lg_attn_fwd bad = f;
    bad.q = D.q + 2;
    ck_assert_int_eq(lg_attn_forward(A, &bad, 0), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "q is not 16-byte aligned"));
    bad = f, bad.ldk = 1020;
    ck_assert_int_eq(lg_attn_forward(A, &bad, 0), LG_ERR_INVALID);
    int32_t cu_bad[3] = {0, 100, 90};
    bad = f, bad.seqs.cu_host = cu_bad;
    ck_assert_int_eq(lg_attn_forward(A, &bad, 0), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "not increasing"));
    bad = f, bad.seqs.tokens = 127;
    ck_assert_int_eq(lg_attn_forward(A, &bad, 0), LG_ERR_INVALID);
    bad = f, bad.lse = 0;
    ck_assert_int_eq(lg_attn_forward(A, &bad, 0), LG_ERR_INVALID);
    struct lg_attn_bwd b = {.seqs = sq, .q = D.q, .k = D.k, .v = D.v, .o = D.o, .dout = D.dout, .lse = D.lse,
                            .dq = D.dq, .dk = D.dk, .dv = 0};
    ck_assert_int_eq(lg_attn_backward(A, &b, 0), LG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "dv is NULL"));
    CU_CHECK(cuCtxSynchronize());
    float *o = malloc(sizeof(float) * (size_t)h.T * c.hq * c.hd);
    lg_dev_download(o, D.o, (int64_t)c.hq * c.hd, h.T, (int64_t)c.hq * c.hd, c.t);
    for (int64_t i = 0; i < h.T * c.hq * c.hd; i++)
        ck_assert_msg(isnan(o[i]), "a rejected call wrote o[%lld]", (long long)i);
    free(o);
    struct lg_attn_tiles tt = {.fwd_bm = 96};
    CHECK(lg_attn_set_tiles(A, &tt));
    ck_assert_int_ne(lg_attn_forward(A, &f, 0), LG_OK); /* the generator refuses bm = 96 */
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "bm"));
    lg_attn_free(A);
    struct lg_attn_params p = {.hq = 8, .hkv = 2, .head_dim = 80, .dtype = LG_BF16};
    ck_assert_int_eq(lg_attn_init(attn_ctx, &p, &A), LG_ERR_UNSUPPORTED);
    p.head_dim = 128, p.backend = LG_ATTN_CUDNN;
    enum lg_status st = lg_attn_init(attn_ctx, &p, &A);
    printf("  cuDNN backend (cuDNN %d): %s: %s\n", lg_attn_cudnn_version(), lg_status_str(st),
           st == LG_OK ? "available" : lg_last_error());
    if (st == LG_OK)
        lg_attn_free(A);
    else
        ck_assert_int_eq(st, LG_ERR_UNSUPPORTED);
    attn_dev_free(&D);
    attn_host_free(&h);
}
END_TEST

static void add_tests(TCase *tc)
{
    tcase_add_test(tc, samples_are_isolated);
    tcase_add_test(tc, deterministic_is_bitwise_reproducible);
    tcase_add_test(tc, bad_calls_are_errors);
}

int main(void) { return attn_gpu_main("attention_gpu_calls", add_tests); }
