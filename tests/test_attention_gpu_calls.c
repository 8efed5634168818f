/* test_attention_gpu_calls.c: packed causal GQA attention on the GPU (lg_attention.h) as calls: sample isolation
 * (one sample's inputs changed, every other sample's outputs and gradients bit-identical), bitwise
 * reproducibility of the deterministic mode, and bad calls (errors, nothing written). The values against the
 * CPU reference: test_attention_gpu.c; the machinery both share: tests/util/lg_attn_gpu_util.c. Exits 77
 * without a GPU. */
#include "lg_attention.h"
#include "lg_attn_gpu_util.h"
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
        const int64_t b0 = a.cu[victim], b1 = a.cu[victim + 1];
        struct host p = a;
        const size_t nq = (size_t)a.T * c.hq * c.hd, nk = (size_t)a.T * c.hkv * c.hd;
        p.q = malloc(4 * nq), p.k = malloc(4 * nk), p.v = malloc(4 * nk), p.dout = malloc(4 * nq);
        memcpy(p.q, a.q, 4 * nq), memcpy(p.k, a.k, 4 * nk), memcpy(p.v, a.v, 4 * nk), memcpy(p.dout, a.dout, 4 * nq);
        float *fresh = attn_rnd(nq, lg_test_seed() + 99, 1.5f, c.t);
        for (int64_t i = b0 * c.hq * c.hd; i < b1 * c.hq * c.hd; i++)
            p.q[i] = fresh[i], p.dout[i] = fresh[nq - 1 - i];
        for (int64_t i = b0 * c.hkv * c.hd; i < b1 * c.hkv * c.hd; i++)
            p.k[i] = fresh[i + 1], p.v[i] = -fresh[i];
        free(fresh);
        attn_dev_upload(&D, &c, &p);
        attn_gpu_run(A, &c, &b, &D);
        struct {
            const char *name;
            const float *x, *y;
            int64_t row;
        } t[] = {{"o", a.o, b.o, (int64_t)c.hq * c.hd},      {"lse", a.lse, b.lse, c.hq},
                 {"dq", a.dq, b.dq, (int64_t)c.hq * c.hd},   {"dk", a.dk, b.dk, (int64_t)c.hkv * c.hd},
                 {"dv", a.dv, b.dv, (int64_t)c.hkv * c.hd}};
        int changed_victim = 0;
        for (int k = 0; k < 5; k++) {
            /* the fast mode's dQ sums in atomic order: compare it to rounding, everything else bit for bit */
            const int exact = det || strcmp(t[k].name, "dq");
            for (int64_t i = 0; i < a.T * t[k].row; i++) {
                const int64_t tok = i / t[k].row;
                if (tok >= b0 && tok < b1) {
                    changed_victim |= t[k].x[i] != t[k].y[i];
                    continue;
                }
                const int same = exact ? !memcmp(&t[k].x[i], &t[k].y[i], 4)
                                       : fabsf(t[k].x[i] - t[k].y[i]) <= 1e-2f * (fabsf(t[k].x[i]) + 1e-3f);
                ck_assert_msg(same, "%s mode: %s of token %lld (outside the changed sample) changed: %g -> %g",
                              det ? "det" : "fast", t[k].name, (long long)tok, t[k].x[i], t[k].y[i]);
            }
        }
        ck_assert_msg(changed_victim, "the changed sample's outputs did not change");
        printf("  isolation (%s): PASS\n", det ? "det" : "fast");
        free(p.q), free(p.k), free(p.v), free(p.dout);
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
