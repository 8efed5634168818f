/* test_attention_cudnn_gpu.c: the cuDNN attention backend (LG_ATTN_CUDNN, lg_attention.h) on the GPU against
 * the same CPU reference as the generated kernels (lg_ref_attn_forward/backward, fp32 with double sums), on
 * fresh random inputs (seed printed) with every output poisoned with NaN first and every element checked:
 * samples of 1, 17, 128 and 1000 tokens alone and mixed in one pack, a pack of 40 samples (the plan's batch
 * padded to 64 with empty entries), GQA ratios 1, 4, 5 and 8, head dims 64 and 128, bf16 and fp16, packed and
 * fused-qkv (strided) layouts; one mix again with LORAGEN_CUDNN_EXACT_SHAPES=1 (no padding of b or s); the
 * cross-sample isolation test (one sample's inputs changed: every other sample's O, LSE, dK and dV
 * bit-identical, dQ to rounding since cuDNN sums it with atomics); the cuDNN and generated backends agree.
 * Each case prints one row: the worst per-sample relative L2 error of O, LSE, dQ, dK, dV, the plan used and
 * the verdict; a failure prints the first bad element. Exits 77 without a GPU or without cuDNN 9; where
 * cuDNN loads, lg_attn_init must succeed (its message is printed otherwise). */
#include "attention_internal.h"
#include "lg_attention.h"
#include "lg_cudnn.h"
#include "lg_gpu_util.h"
#include "lg_ref_ops.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static lg_ctx_t *ctx;

/* A failing library call fails the case with its message (and the run goes on to the next case). */
#define TRY(stmt)                                                                                            \
    do {                                                                                                     \
        enum lg_status st_ = (stmt);                                                                         \
        ck_assert_msg(st_ == LG_OK, "%s: %s: %s", #stmt, lg_status_str(st_), lg_last_error());               \
    } while (0)

#define MAXS 48
struct acase {
    const char *name;
    int nseq;
    int lens[MAXS];
    int hq, hkv, hd;
    enum lg_dtype t;
    int fused; /* q, k, v views of one [tokens, (hq + 2 hkv) d] buffer; o, dout and grads with padded rows */
};

static const struct acase cases[] = {
    {"len1", 1, {1}, 4, 4, 128, LG_BF16, 0},
    {"len17", 1, {17}, 8, 2, 64, LG_FP16, 0},
    {"len128", 1, {128}, 8, 1, 128, LG_BF16, 0},
    {"len1000", 1, {1000}, 8, 2, 128, LG_BF16, 0},
    {"mix-llama8b", 6, {1, 17, 128, 1000, 129, 2}, 32, 8, 128, LG_BF16, 0},
    {"mix-fp16-d64", 5, {1000, 128, 17, 1, 300}, 8, 8, 64, LG_FP16, 0},
    {"mix-d64-gqa8", 5, {33, 64, 1, 200, 17}, 16, 2, 64, LG_BF16, 1},
    {"mix-gqa5", 4, {700, 1, 17, 129}, 10, 2, 128, LG_FP16, 1},
    {"mix-d128-fp16", 3, {128, 1000, 17}, 16, 4, 128, LG_FP16, 0},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

static struct acase many(void)
{
    struct acase c = {"40-samples", 40, {0}, 8, 2, 128, LG_BF16, 0};
    for (int i = 0; i < c.nseq; i++)
        c.lens[i] = 1 + (i * 37) % 97;
    return c;
}

static double tol(enum lg_dtype t) { return t == LG_BF16 ? 1e-2 : 3e-3; }

struct host {
    int64_t T;
    int32_t cu[MAXS + 1];
    float *q, *k, *v, *dout, *o, *lse, *dq, *dk, *dv;
};

static float *rnd(size_t n, uint64_t seed, float scale, enum lg_dtype t)
{
    float *x = malloc(sizeof(float) * (n ? n : 1));
    lg_test_fill(x, n, seed, scale);
    lg_host_round(x, n, t);
    return x;
}

static void outputs_alloc(struct host *h, const struct acase *c)
{
    const size_t nq = (size_t)h->T * c->hq * c->hd, nk = (size_t)h->T * c->hkv * c->hd;
    h->o = malloc(4 * nq), h->dq = malloc(4 * nq), h->dk = malloc(4 * nk), h->dv = malloc(4 * nk);
    h->lse = malloc(4 * (size_t)h->T * c->hq);
}

static void inputs_make(struct host *h, const struct acase *c, uint64_t seed)
{
    h->cu[0] = 0;
    for (int i = 0; i < c->nseq; i++)
        h->cu[i + 1] = h->cu[i] + c->lens[i];
    h->T = h->cu[c->nseq];
    const size_t nq = (size_t)h->T * c->hq * c->hd, nk = (size_t)h->T * c->hkv * c->hd;
    h->q = rnd(nq, seed + 1, 2.0f, c->t), h->k = rnd(nk, seed + 2, 1.0f, c->t);
    h->v = rnd(nk, seed + 3, 1.0f, c->t), h->dout = rnd(nq, seed + 4, 1.0f, c->t);
    outputs_alloc(h, c);
}

static void outputs_free(struct host *h) { free(h->o), free(h->lse), free(h->dq), free(h->dk), free(h->dv); }

static void host_free(struct host *h)
{
    free(h->q), free(h->k), free(h->v), free(h->dout);
    outputs_free(h);
}

static void reference(const struct acase *c, struct host *h)
{
    struct lg_ref_attn ra = {.seq = {.n = h->T, .nseq = c->nseq, .cu = h->cu}, .hq = c->hq, .hkv = c->hkv,
                             .d = c->hd, .q = h->q, .k = h->k, .v = h->v};
    CHECK(lg_ref_attn_forward(&ra, h->o, h->lse));
    CHECK(lg_ref_attn_backward(&ra, h->o, h->lse, h->dout, h->dq, h->dk, h->dv));
}

/* ---- device side ---- */

struct dev {
    CUdeviceptr qkv, q, k, v, o, lse, dout, dq, dk, dv, cu;
    int64_t ldq, ldk, ldo, ldg;
    size_t bytes_o, bytes_dq, bytes_dk;
};

static void dev_alloc(struct dev *D, const struct acase *c, const struct host *h)
{
    const int64_t T = h->T, qr = (int64_t)c->hq * c->hd, kr = (int64_t)c->hkv * c->hd;
    const size_t e = lg_dtype_size(c->t);
    memset(D, 0, sizeof *D);
    if (c->fused) {
        const int64_t ld = qr + 2 * kr;
        D->qkv = lg_dev_alloc((size_t)(T * ld) * e);
        D->q = D->qkv, D->k = D->qkv + (CUdeviceptr)(qr * e), D->v = D->qkv + (CUdeviceptr)((qr + kr) * e);
        D->ldq = D->ldk = ld, D->ldo = qr + 8, D->ldg = 8;
    } else {
        D->q = lg_dev_alloc((size_t)(T * qr) * e), D->k = lg_dev_alloc((size_t)(T * kr) * e);
        D->v = lg_dev_alloc((size_t)(T * kr) * e);
        D->ldq = qr, D->ldk = kr, D->ldo = qr;
    }
    D->bytes_o = (size_t)(T * D->ldo) * e;
    D->bytes_dq = (size_t)(T * (qr + D->ldg)) * e, D->bytes_dk = (size_t)(T * (kr + D->ldg)) * e;
    D->o = lg_dev_alloc(D->bytes_o), D->dout = lg_dev_alloc(D->bytes_o), D->lse = lg_dev_alloc((size_t)T * c->hq * 4);
    D->dq = lg_dev_alloc(D->bytes_dq), D->dk = lg_dev_alloc(D->bytes_dk), D->dv = lg_dev_alloc(D->bytes_dk);
    D->cu = lg_dev_alloc(sizeof(int32_t) * (size_t)(c->nseq + 1));
}

static void dev_free(struct dev *D)
{
    CUdeviceptr all[] = {D->qkv, D->qkv ? 0 : D->q, D->qkv ? 0 : D->k, D->qkv ? 0 : D->v, D->o, D->dout, D->lse,
                         D->dq, D->dk, D->dv, D->cu};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i])
            cuMemFree(all[i]);
}

static void dev_upload(struct dev *D, const struct acase *c, const struct host *h)
{
    const int64_t qr = (int64_t)c->hq * c->hd, kr = (int64_t)c->hkv * c->hd;
    lg_dev_upload(D->q, D->ldq, h->q, h->T, qr, c->t), lg_dev_upload(D->k, D->ldk, h->k, h->T, kr, c->t);
    lg_dev_upload(D->v, D->ldk, h->v, h->T, kr, c->t);
    lg_dev_poison(D->dout, D->bytes_o);
    lg_dev_upload(D->dout, D->ldo, h->dout, h->T, qr, c->t);
    CU_CHECK(cuMemcpyHtoD(D->cu, h->cu, sizeof(int32_t) * (size_t)(c->nseq + 1)));
}

/* Poisons every output, runs forward and backward, downloads into h's outputs; the row padding of the
 * strided gradients must stay poisoned. */
static void gpu_run(lg_attn_t *A, const struct acase *c, struct host *h, struct dev *D)
{
    const int64_t qr = (int64_t)c->hq * c->hd, kr = (int64_t)c->hkv * c->hd;
    lg_dev_poison(D->o, D->bytes_o), lg_dev_poison(D->lse, (size_t)h->T * c->hq * 4);
    lg_dev_poison(D->dq, D->bytes_dq), lg_dev_poison(D->dk, D->bytes_dk), lg_dev_poison(D->dv, D->bytes_dk);
    int longest = 0;
    for (int i = 0; i < c->nseq; i++)
        longest = c->lens[i] > longest ? c->lens[i] : longest;
    const struct lg_attn_seqs sq = {.nseq = c->nseq, .cu_host = h->cu, .cu = D->cu, .tokens = h->T,
                                    .max_len = longest};
    struct lg_attn_fwd f = {.seqs = sq, .q = D->q, .k = D->k, .v = D->v, .ldq = D->ldq, .ldk = D->ldk,
                            .ldv = D->ldk, .o = D->o, .ldo = D->ldo, .lse = D->lse};
    TRY(lg_attn_forward(A, &f, 0));
    struct lg_attn_bwd b = {.seqs = sq, .q = D->q, .k = D->k, .v = D->v, .o = D->o, .dout = D->dout,
                            .ldq = D->ldq, .ldk = D->ldk, .ldv = D->ldk, .ldo = D->ldo, .lddo = D->ldo,
                            .lse = D->lse, .dq = D->dq, .dk = D->dk, .dv = D->dv, .lddq = qr + D->ldg,
                            .lddk = kr + D->ldg, .lddv = kr + D->ldg};
    TRY(lg_attn_backward(A, &b, 0));
    CU_CHECK(cuCtxSynchronize());
    lg_dev_download(h->o, D->o, D->ldo, h->T, qr, c->t);
    lg_dev_download(h->lse, D->lse, c->hq, h->T, c->hq, LG_FP32);
    lg_dev_download(h->dq, D->dq, qr + D->ldg, h->T, qr, c->t);
    lg_dev_download(h->dk, D->dk, kr + D->ldg, h->T, kr, c->t);
    lg_dev_download(h->dv, D->dv, kr + D->ldg, h->T, kr, c->t);
    if (D->ldg) {
        float *pad = malloc(sizeof(float) * (size_t)h->T * 8);
        lg_dev_download(pad, D->dq + (CUdeviceptr)(qr * lg_dtype_size(c->t)), qr + 8, h->T, 8, c->t);
        for (int64_t i = 0; i < h->T * 8; i++)
            ck_assert_msg(isnan(pad[i]), "dq row padding written at token %lld", (long long)(i / 8));
        free(pad);
    }
}

/* ---- comparison ---- */

static double check_tensor(const char *what, const struct acase *c, const struct host *h, const float *got,
                           const float *ref, int heads, int width, double tl, int *ok)
{
    double worst = 0;
    const int64_t row = (int64_t)heads * width;
    for (int s = 0; s < c->nseq; s++) {
        double num = 0, den = 0;
        int64_t bad = -1;
        for (int64_t i = h->cu[s] * row; i < h->cu[s + 1] * row; i++) {
            const double d = (double)got[i] - ref[i];
            if (!isfinite(got[i]))
                num = INFINITY;
            num += d * d, den += (double)ref[i] * ref[i];
            if (bad < 0 && !(fabs(d) <= 8 * tl * (fabs(ref[i]) + 0.05)))
                bad = i;
        }
        const double e = den > 0 ? sqrt(num / den) : sqrt(num);
        worst = e > worst || isnan(e) ? e : worst;
        if (!(e <= tl)) {
            if (*ok) {
                const int64_t i = bad >= 0 ? bad : h->cu[s] * row;
                printf("    %s: sample %d (len %d) rel err %.3g > %.3g; first bad element token %lld head %lld col "
                       "%lld: got %g, want %g\n", what, s, c->lens[s], e, tl, (long long)(i / row),
                       (long long)(i % row / width), (long long)(i % width), got[i], ref[i]);
            }
            *ok = 0;
        }
    }
    return worst;
}

static int compare(const struct acase *c, const struct host *g, const struct host *r, double tl, double err[5])
{
    int ok = 1;
    err[0] = check_tensor("O", c, g, g->o, r->o, c->hq, c->hd, tl, &ok);
    err[1] = check_tensor("LSE", c, g, g->lse, r->lse, c->hq, 1, 1e-3, &ok);
    err[2] = check_tensor("dQ", c, g, g->dq, r->dq, c->hq, c->hd, tl, &ok);
    err[3] = check_tensor("dK", c, g, g->dk, r->dk, c->hkv, c->hd, tl, &ok);
    err[4] = check_tensor("dV", c, g, g->dv, r->dv, c->hkv, c->hd, tl, &ok);
    return ok;
}

static lg_attn_t *make(const struct acase *c, enum lg_attn_backend be)
{
    struct lg_attn_params p = {.hq = c->hq, .hkv = c->hkv, .head_dim = c->hd, .dtype = c->t, .backend = be};
    lg_attn_t *A = NULL;
    TRY(lg_attn_init(ctx, &p, &A));
    return A;
}

static void run_case(const struct acase *c, int exact)
{
    const uint64_t seed = lg_test_seed() ^ (uint64_t)(c->nseq * 2654435761u + c->hq * 97 + c->hd);
    struct host ref, got, gen;
    inputs_make(&ref, c, seed);
    got = ref, gen = ref;
    outputs_alloc(&got, c), outputs_alloc(&gen, c);
    reference(c, &ref);
    struct dev D;
    dev_alloc(&D, c, &ref);
    dev_upload(&D, c, &ref);
    if (exact)
        setenv("LORAGEN_CUDNN_EXACT_SHAPES", "1", 1);
    lg_attn_t *A = make(c, LG_ATTN_CUDNN);
    unsetenv("LORAGEN_CUDNN_EXACT_SHAPES");
    gpu_run(A, c, &got, &D);
    double err[5], gerr[5];
    const int ok = compare(c, &got, &ref, tol(c->t), err);
    char fk[LG_NAME_MAX], bk[LG_NAME_MAX], note[LG_NAME_MAX];
    TRY(lg_attn_kernel_names(A, fk, bk, note));
    /* the generated backend on the same inputs, for the agreement column */
    lg_attn_t *G = make(c, LG_ATTN_GENERATED);
    gpu_run(G, c, &gen, &D);
    const int agree = compare(c, &got, &gen, 2 * tol(c->t), gerr);
    char lens[96] = "";
    for (int i = 0; i < c->nseq && strlen(lens) < 60; i++)
        snprintf(lens + strlen(lens), sizeof lens - strlen(lens), "%s%d", i ? "," : "", c->lens[i]);
    printf("  %-14s %-24s %2d/%-2d d%-3d %s %-5s %-5s | %8.2e %8.2e %8.2e %8.2e %8.2e | vs generated %8.2e | %s | "
           "%s\n", c->name, lens, c->hq, c->hkv, c->hd, lg_dtype_name(c->t), c->fused ? "fused" : "packd",
           exact ? "exact" : "pow2", err[0], err[1], err[2], err[3], err[4],
           fmax(fmax(gerr[0], gerr[2]), fmax(gerr[3], gerr[4])), note, ok && agree ? "PASS" : "FAIL");
    if (!ok)
        printf("    seed %llu\n", (unsigned long long)seed);
    lg_attn_free(A), lg_attn_free(G);
    dev_free(&D);
    outputs_free(&got), outputs_free(&gen), host_free(&ref);
    ck_assert_msg(ok, "%s: cuDNN attention differs from the reference", c->name);
    ck_assert_msg(agree, "%s: cuDNN and generated attention disagree", c->name);
}

/* First: every parameter family once on a small pack, each call's error printed instead of exiting, so that
 * one run shows which graphs cuDNN refuses and why (the later cases stop at their first failure). */
START_TEST(probe_every_family)
{
    static const struct acase fam[] = {
        {"mha-d128-bf16", 3, {1, 17, 128}, 8, 8, 128, LG_BF16, 0},
        {"gqa4-d128-bf16", 3, {1, 17, 128}, 32, 8, 128, LG_BF16, 0},
        {"gqa8-d64-bf16", 3, {1, 17, 128}, 16, 2, 64, LG_BF16, 0},
        {"gqa4-d64-fp16", 3, {1, 17, 128}, 8, 2, 64, LG_FP16, 0},
        {"gqa5-d128-fp16-fused", 3, {1, 17, 128}, 10, 2, 128, LG_FP16, 1},
    };
    int failed = 0;
    for (int exact = 0; exact < 2; exact++)
        for (size_t i = 0; i < sizeof fam / sizeof fam[0]; i++) {
            const struct acase *c = &fam[i];
            struct host h;
            inputs_make(&h, c, 42 + i);
            struct dev D;
            dev_alloc(&D, c, &h);
            dev_upload(&D, c, &h);
            if (exact)
                setenv("LORAGEN_CUDNN_EXACT_SHAPES", "1", 1);
            struct lg_attn_params p = {.hq = c->hq, .hkv = c->hkv, .head_dim = c->hd, .dtype = c->t,
                                       .backend = LG_ATTN_CUDNN};
            lg_attn_t *A = NULL;
            enum lg_status st = lg_attn_init(ctx, &p, &A);
            unsetenv("LORAGEN_CUDNN_EXACT_SHAPES");
            const int64_t qr = (int64_t)c->hq * c->hd, kr = (int64_t)c->hkv * c->hd;
            const struct lg_attn_seqs sq = {.nseq = c->nseq, .cu_host = h.cu, .cu = D.cu, .tokens = h.T,
                                            .max_len = 128};
            const char *stage = "lg_attn_init";
            if (st == LG_OK) {
                struct lg_attn_fwd f = {.seqs = sq, .q = D.q, .k = D.k, .v = D.v, .ldq = D.ldq, .ldk = D.ldk,
                                        .ldv = D.ldk, .o = D.o, .ldo = D.ldo, .lse = D.lse};
                stage = "lg_attn_forward", st = lg_attn_forward(A, &f, 0);
            }
            if (st == LG_OK) {
                struct lg_attn_bwd b = {.seqs = sq, .q = D.q, .k = D.k, .v = D.v, .o = D.o, .dout = D.dout,
                                        .ldq = D.ldq, .ldk = D.ldk, .ldv = D.ldk, .ldo = D.ldo, .lddo = D.ldo,
                                        .lse = D.lse, .dq = D.dq, .dk = D.dk, .dv = D.dv, .lddq = qr + D.ldg,
                                        .lddk = kr + D.ldg, .lddv = kr + D.ldg};
                stage = "lg_attn_backward", st = lg_attn_backward(A, &b, 0);
            }
            if (st == LG_OK)
                stage = "synchronize", st = lg_cu_check(cuCtxSynchronize(), "after the cuDNN calls");
            char fk[LG_NAME_MAX] = "", bk[LG_NAME_MAX] = "", note[LG_NAME_MAX] = "";
            if (A)
                lg_attn_kernel_names(A, fk, bk, note);
            if (st == LG_OK)
                printf("  probe %-22s %s: ok (%s)\n", c->name, exact ? "exact" : "pow2 ", note);
            else
                printf("  probe %-22s %s: %s FAILED: %s: %s\n", c->name, exact ? "exact" : "pow2 ", stage,
                       lg_status_str(st), lg_last_error());
            failed += st != LG_OK;
            lg_attn_free(A);
            dev_free(&D);
            host_free(&h);
        }
    ck_assert_msg(!failed, "%d probe(s) failed (printed above)", failed);
}
END_TEST

START_TEST(cases_match_reference) { run_case(&cases[_i], 0); }
END_TEST

START_TEST(many_samples_match_reference)
{
    const struct acase c = many();
    run_case(&c, _i);
}
END_TEST

START_TEST(exact_shapes_match_reference) { run_case(&cases[4], 1); }
END_TEST

/* Changing every input of one sample leaves every other sample's outputs and gradients unchanged. */
START_TEST(samples_are_isolated)
{
    const struct acase c = {"isolation", 5, {300, 77, 1000, 5, 129}, 8, 2, 128, LG_BF16, 0};
    const int victim = 2;
    struct host a, b;
    inputs_make(&a, &c, lg_test_seed() + 5);
    b = a;
    outputs_alloc(&b, &c);
    struct dev D;
    dev_alloc(&D, &c, &a);
    lg_attn_t *A = make(&c, LG_ATTN_CUDNN);
    dev_upload(&D, &c, &a);
    gpu_run(A, &c, &a, &D);
    const int64_t b0 = a.cu[victim], b1 = a.cu[victim + 1];
    struct host p = a;
    const size_t nq = (size_t)a.T * c.hq * c.hd, nk = (size_t)a.T * c.hkv * c.hd;
    p.q = malloc(4 * nq), p.k = malloc(4 * nk), p.v = malloc(4 * nk), p.dout = malloc(4 * nq);
    memcpy(p.q, a.q, 4 * nq), memcpy(p.k, a.k, 4 * nk), memcpy(p.v, a.v, 4 * nk), memcpy(p.dout, a.dout, 4 * nq);
    float *fresh = rnd(nq, lg_test_seed() + 99, 1.5f, c.t);
    for (int64_t i = b0 * c.hq * c.hd; i < b1 * c.hq * c.hd; i++)
        p.q[i] = fresh[i], p.dout[i] = fresh[nq - 1 - i];
    for (int64_t i = b0 * c.hkv * c.hd; i < b1 * c.hkv * c.hd; i++)
        p.k[i] = fresh[i + 1], p.v[i] = -fresh[i];
    free(fresh);
    dev_upload(&D, &c, &p);
    gpu_run(A, &c, &b, &D);
    struct {
        const char *name;
        const float *x, *y;
        int64_t row;
    } t[] = {{"o", a.o, b.o, (int64_t)c.hq * c.hd},    {"lse", a.lse, b.lse, c.hq},
             {"dq", a.dq, b.dq, (int64_t)c.hq * c.hd}, {"dk", a.dk, b.dk, (int64_t)c.hkv * c.hd},
             {"dv", a.dv, b.dv, (int64_t)c.hkv * c.hd}};
    int changed_victim = 0;
    for (int k = 0; k < 5; k++) {
        const int exact = strcmp(t[k].name, "dq") != 0; /* cuDNN's dQ: atomic order, compared to rounding */
        for (int64_t i = 0; i < a.T * t[k].row; i++) {
            const int64_t tok = i / t[k].row;
            if (tok >= b0 && tok < b1) {
                changed_victim |= t[k].x[i] != t[k].y[i];
                continue;
            }
            const int same = exact ? !memcmp(&t[k].x[i], &t[k].y[i], 4)
                                   : fabsf(t[k].x[i] - t[k].y[i]) <= 1e-2f * (fabsf(t[k].x[i]) + 1e-3f);
            ck_assert_msg(same, "%s of token %lld (outside the changed sample) changed: %g -> %g", t[k].name,
                          (long long)tok, t[k].x[i], t[k].y[i]);
        }
    }
    ck_assert_msg(changed_victim, "the changed sample's outputs did not change");
    printf("  isolation (cuDNN): PASS\n");
    free(p.q), free(p.k), free(p.v), free(p.dout);
    lg_attn_free(A);
    dev_free(&D);
    outputs_free(&b), host_free(&a);
}
END_TEST

int main(void)
{
    lg_test_require_gpu();
    if (!lg_attn_cudnn_version()) {
        printf("skipped: the cuDNN backend needs cuDNN 9: %s\n", lg_cudnn_error());
        return 77;
    }
    struct lg_ctx_params cp = {.device = 0};
    CHECK(lg_ctx_init(&cp, &ctx));
    printf("device: %s (sm_%d), cuDNN %d, seed %llu\n", lg_ctx_device_name(ctx), lg_ctx_arch(ctx),
           lg_attn_cudnn_version(), (unsigned long long)lg_test_seed());
    printf("  %-14s %-24s %-5s %-4s %-4s %-5s %-5s | %8s %8s %8s %8s %8s |\n", "case", "lens", "hq/kv", "d", "type",
           "lay", "b,s", "O", "LSE", "dQ", "dK", "dV");
    Suite *s = suite_create("attention_cudnn_gpu");
    TCase *tc = tcase_create("gpu");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, probe_every_family);
    tcase_add_loop_test(tc, cases_match_reference, 0, NCASES);
    tcase_add_loop_test(tc, many_samples_match_reference, 0, 2);
    tcase_add_test(tc, exact_shapes_match_reference);
    tcase_add_test(tc, samples_are_isolated);
    suite_add_tcase(s, tc);
    int failed = lg_test_run(s, 1);
    lg_ctx_free(ctx);
    return failed ? 1 : 0;
}
