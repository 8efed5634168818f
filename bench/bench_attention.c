/* bench_attention.c: packed causal GQA attention (lg_attention.h), Llama-3.1-8B heads (32/8, d = 128, bf16),
 * on three packs of 8192 tokens: 4 x 2048, 1 x 8192, and lognormal lengths (the CNN trace: mean ~1000, capped
 * at 4096) cut to 8192. For each: forward, backward (fast: dQ by atomics; deterministic: a dQ pass of its
 * own) and forward+backward, timed with CUDA events as the median of interleaved rounds, in TFLOP/s of causal
 * work (forward 2·2·len²·d·hq/2 per sample; backward 2.5x that), and the deterministic mode's cost.
 *
 * Validation first: sampled rows of O, LSE and dQ against a double-precision reference computed from the
 * inputs, and sampled rows of dK and dV against the reference sums built on the GPU's (validated) O and LSE;
 * the fast and deterministic backwards must agree. A failure prints MISMATCH and the bench exits 1.
 *
 * The cuDNN backend (LG_ATTN_CUDNN) is validated the same way and timed beside the generated kernels on every
 * shape (a "cudnn" row: forward, backward, forward+backward, and its speed relative to the generated kernels);
 * where it cannot be used (no cuDNN 9.6+, a plan it refuses) the row says why, and --no-cudnn skips it.
 *
 * usage: bench_attention [--reps N] [--only SHAPE] [--csv FILE] [--torch-csv FILE] [--no-sweep] [--print-lens]
 *   --torch-csv: bench/attention_torch.py's CSV (same shapes), printed beside ours as ratios
 *   --print-lens: prints the lognormal pack's lengths (comma-separated, for attention_torch.py --mix) and exits
 *   --tokens N: packs of N tokens instead of 8192 (4 x N/4, 1 x N, lognormal cut at N; small GPUs, and the
 *   CPU emulator's fake driver, tests/tools/attn_emu/fake.sh) 
 *   the sweep times a few tile sets of each kernel on 4 x 2048 (compiling each costs seconds) and keeps
 *   the fastest for the table; --no-sweep keeps the defaults.
 *   --layout train: the trainer's rows (runtime/model/backend_cuda.c): q/k/v and dq/dk/dv views of one
 *   [tokens, (hq + 2 hkv) d] buffer each, o and dout packed; validation and timing in that layout (for the
 *   cuDNN backend this is a layout it uses in place, docs/attention.md). Default: packed. */
#include "lg_attention.h"
#include "lg_gpu_util.h"
#include "lg_half.h"
#include "lg_sched.h"
#include "lg_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HQ 32
#define HKV 8
#define HD 128
#define MAXSEQ 64

struct shape {
    char name[32];
    int nseq;
    int32_t cu[MAXSEQ + 1];
    int64_t T;
    int max_len;
    double flops_fwd;
};

static void shape_from_lens(struct shape *s, const char *name, const int *lens, int n)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->nseq = n;
    for (int i = 0; i < n; i++) {
        s->cu[i + 1] = s->cu[i] + lens[i];
        s->max_len = lens[i] > s->max_len ? lens[i] : s->max_len;
        s->flops_fwd += 2.0 * 2.0 * (double)lens[i] * lens[i] * HD * HQ / 2.0;
    }
    s->T = s->cu[n];
}

/* The CNN trace's lengths in order until `tokens`; the last sample is cut to land on it exactly. */
static void lognormal_shape(struct shape *s, int tokens)
{
    uint32_t len[MAXSEQ];
    CHECK(lg_trace_generate(LG_TRACE_CNN, MAXSEQ, 1, len));
    int lens[MAXSEQ], n = 0, total = 0;
    while (total < tokens && n < MAXSEQ) {
        int l = (int)len[n] < tokens - total ? (int)len[n] : tokens - total;
        lens[n++] = l, total += l;
    }
    char name[32];
    snprintf(name, sizeof name, "lognormal-%d", tokens);
    shape_from_lens(s, name, lens, n);
}

static int g_train_layout; /* --layout train */

struct bufs {
    CUdeviceptr q, k, v, o, lse, dout, dq, dk, dv, dq2, dk2, dv2, cu;
    CUdeviceptr qkv, dqkv, dqkv2; /* the fused buffers of --layout train (else 0) */
    int64_t ldq, ldk;             /* row strides of q (and dq) and of k, v (and dk, dv) */
    float *hq, *hk, *hv, *hdout; /* host copies of the inputs, dtype-rounded */
};

/* q, k, v views of one fused [T, (HQ + 2 HKV) HD] bf16 buffer at base. */
static void fused_views(CUdeviceptr base, CUdeviceptr *q, CUdeviceptr *k, CUdeviceptr *v)
{
    *q = base, *k = base + 2 * HQ * HD, *v = base + 2 * (HQ + HKV) * HD;
}

static void bufs_init(struct bufs *b, const struct shape *s)
{
    const size_t nq = (size_t)s->T * HQ * HD, nk = (size_t)s->T * HKV * HD;
    b->hq = malloc(4 * nq), b->hk = malloc(4 * nk), b->hv = malloc(4 * nk), b->hdout = malloc(4 * nq);
    lg_test_fill(b->hq, nq, 11, 2.0f), lg_test_fill(b->hk, nk, 12, 1.0f);
    lg_test_fill(b->hv, nk, 13, 1.0f), lg_test_fill(b->hdout, nq, 14, 1.0f);
    lg_host_round(b->hq, nq, LG_BF16), lg_host_round(b->hk, nk, LG_BF16);
    lg_host_round(b->hv, nk, LG_BF16), lg_host_round(b->hdout, nq, LG_BF16);
    b->qkv = b->dqkv = b->dqkv2 = 0;
    if (g_train_layout) {
        const size_t nf = (size_t)s->T * (HQ + 2 * HKV) * HD;
        b->qkv = lg_dev_alloc(2 * nf), b->dqkv = lg_dev_alloc(2 * nf), b->dqkv2 = lg_dev_alloc(2 * nf);
        fused_views(b->qkv, &b->q, &b->k, &b->v), fused_views(b->dqkv, &b->dq, &b->dk, &b->dv);
        fused_views(b->dqkv2, &b->dq2, &b->dk2, &b->dv2);
        b->ldq = b->ldk = (HQ + 2 * HKV) * HD;
    } else {
        b->q = lg_dev_alloc(2 * nq), b->k = lg_dev_alloc(2 * nk), b->v = lg_dev_alloc(2 * nk);
        b->dq = lg_dev_alloc(2 * nq), b->dk = lg_dev_alloc(2 * nk), b->dv = lg_dev_alloc(2 * nk);
        b->dq2 = lg_dev_alloc(2 * nq), b->dk2 = lg_dev_alloc(2 * nk), b->dv2 = lg_dev_alloc(2 * nk);
        b->ldq = HQ * HD, b->ldk = HKV * HD;
    }
    b->o = lg_dev_alloc(2 * nq), b->dout = lg_dev_alloc(2 * nq), b->lse = lg_dev_alloc(4 * (size_t)s->T * HQ);
    b->cu = lg_dev_alloc(4 * (size_t)(s->nseq + 1));
    lg_dev_upload(b->q, b->ldq, b->hq, s->T, HQ * HD, LG_BF16);
    lg_dev_upload(b->k, b->ldk, b->hk, s->T, HKV * HD, LG_BF16);
    lg_dev_upload(b->v, b->ldk, b->hv, s->T, HKV * HD, LG_BF16);
    lg_dev_upload(b->dout, HQ * HD, b->hdout, s->T, HQ * HD, LG_BF16);
    CU_CHECK(cuMemcpyHtoD(b->cu, s->cu, 4 * (size_t)(s->nseq + 1)));
}

static void bufs_free(struct bufs *b)
{
    const int f = b->qkv != 0;
    CUdeviceptr all[] = {f ? b->qkv : b->q, f ? b->dqkv : b->k, f ? b->dqkv2 : b->v, b->o, b->lse, b->dout,
                         f ? 0 : b->dq, f ? 0 : b->dk, f ? 0 : b->dv, f ? 0 : b->dq2, f ? 0 : b->dk2,
                         f ? 0 : b->dv2, b->cu};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i])
            cuMemFree(all[i]);
    free(b->hq), free(b->hk), free(b->hv), free(b->hdout);
}

/* ---- the timed calls ---- */

struct run {
    const struct shape *s;
    struct bufs *b;
    lg_attn_t *fast, *det;
};

static struct lg_attn_seqs seqs(const struct run *r)
{
    return (struct lg_attn_seqs){.nseq = r->s->nseq, .cu_host = r->s->cu, .cu = r->b->cu, .tokens = r->s->T,
                                 .max_len = r->s->max_len};
}

static struct lg_attn_fwd fwd_args(const struct run *r)
{
    const struct bufs *b = r->b;
    return (struct lg_attn_fwd){.seqs = seqs(r), .q = b->q, .k = b->k, .v = b->v, .ldq = b->ldq, .ldk = b->ldk,
                                .ldv = b->ldk, .o = b->o, .lse = b->lse};
}

static struct lg_attn_bwd bwd_args(const struct run *r, int second)
{
    const struct bufs *b = r->b;
    return (struct lg_attn_bwd){.seqs = seqs(r), .q = b->q, .k = b->k, .v = b->v, .o = b->o, .dout = b->dout,
                                .ldq = b->ldq, .ldk = b->ldk, .ldv = b->ldk, .lse = b->lse,
                                .dq = second ? b->dq2 : b->dq, .dk = second ? b->dk2 : b->dk,
                                .dv = second ? b->dv2 : b->dv, .lddq = b->ldq, .lddk = b->ldk, .lddv = b->ldk};
}

static void fwd(lg_attn_t *a, const struct run *r)
{
    struct lg_attn_fwd f = fwd_args(r);
    CHECK(lg_attn_forward(a, &f, 0));
}

static void bwd(lg_attn_t *a, const struct run *r, int second)
{
    struct lg_attn_bwd g = bwd_args(r, second);
    CHECK(lg_attn_backward(a, &g, 0));
}

static void t_fwd(void *p) { struct run *r = p; fwd(r->fast, r); }
static void t_bwd(void *p) { struct run *r = p; bwd(r->fast, r, 0); }
static void t_bwd_det(void *p) { struct run *r = p; bwd(r->det, r, 1); }
static void t_both(void *p) { struct run *r = p; fwd(r->fast, r), bwd(r->fast, r, 0); }
static void t_both_det(void *p) { struct run *r = p; fwd(r->det, r), bwd(r->det, r, 1); }

/* ---- validation ---- */

static double bf(const float *x, int64_t i) { return x[i]; }

/* Reference of one (token t, head h) row from the inputs: o, lse and the dq row (D from the reference o). */
static void ref_row(const struct shape *s, const struct bufs *b, int smp, int64_t t, int h, double *o, double *lse,
                    double *dq)
{
    const int g = h / (HQ / HKV);
    const int64_t b0 = s->cu[smp];
    const double sc = 1.0 / sqrt((double)HD);
    double *sco = malloc(sizeof(double) * (size_t)(t - b0 + 1)), mx = -INFINITY, sum = 0;
    for (int64_t j = b0; j <= t; j++) {
        double d = 0;
        for (int c = 0; c < HD; c++)
            d += bf(b->hq, (t * HQ + h) * HD + c) * bf(b->hk, (j * HKV + g) * HD + c);
        sco[j - b0] = sc * d, mx = fmax(mx, sc * d);
    }
    for (int64_t j = b0; j <= t; j++)
        sum += exp(sco[j - b0] - mx);
    *lse = mx + log(sum);
    for (int c = 0; c < HD; c++)
        o[c] = 0, dq[c] = 0;
    for (int64_t j = b0; j <= t; j++) {
        const double p = exp(sco[j - b0] - *lse);
        for (int c = 0; c < HD; c++)
            o[c] += p * bf(b->hv, (j * HKV + g) * HD + c);
    }
    double D = 0;
    for (int c = 0; c < HD; c++)
        D += o[c] * bf(b->hdout, (t * HQ + h) * HD + c);
    for (int64_t j = b0; j <= t; j++) {
        double dp = 0;
        for (int c = 0; c < HD; c++)
            dp += bf(b->hdout, (t * HQ + h) * HD + c) * bf(b->hv, (j * HKV + g) * HD + c);
        const double ds = exp(sco[j - b0] - *lse) * (dp - D);
        for (int c = 0; c < HD; c++)
            dq[c] += sc * ds * bf(b->hk, (j * HKV + g) * HD + c);
    }
    free(sco);
}

/* dk and dv of key row j (kv head g) from the GPU's O and LSE (checked separately) and the inputs. */
static void ref_kv_row(const struct shape *s, const struct bufs *b, const float *o, const float *lse, int smp,
                       int64_t j, int g, double *dk, double *dv)
{
    const double sc = 1.0 / sqrt((double)HD);
    for (int c = 0; c < HD; c++)
        dk[c] = dv[c] = 0;
    for (int h = g * (HQ / HKV); h < (g + 1) * (HQ / HKV); h++)
        for (int64_t i = j; i < s->cu[smp + 1]; i++) {
            double qk = 0, dp = 0, D = 0;
            for (int c = 0; c < HD; c++) {
                qk += bf(b->hq, (i * HQ + h) * HD + c) * bf(b->hk, (j * HKV + g) * HD + c);
                dp += bf(b->hdout, (i * HQ + h) * HD + c) * bf(b->hv, (j * HKV + g) * HD + c);
                D += bf(b->hdout, (i * HQ + h) * HD + c) * o[(i * HQ + h) * HD + c];
            }
            const double p = exp(sc * qk - lse[i * HQ + h]), ds = p * (dp - D);
            for (int c = 0; c < HD; c++) {
                dk[c] += sc * ds * bf(b->hq, (i * HQ + h) * HD + c);
                dv[c] += p * bf(b->hdout, (i * HQ + h) * HD + c);
            }
        }
}

static double row_err(const float *got, const double *want, int n)
{
    double num = 0, den = 0;
    for (int c = 0; c < n; c++) {
        if (!isfinite(got[c]))
            return INFINITY;
        num += (got[c] - want[c]) * (got[c] - want[c]), den += want[c] * want[c];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static int sample_of(const struct shape *s, int64_t t)
{
    int i = 0;
    while (s->cu[i + 1] <= t)
        i++;
    return i;
}

static int validate(struct run *r)
{
    const struct shape *s = r->s;
    const size_t nq = (size_t)s->T * HQ * HD, nk = (size_t)s->T * HKV * HD;
    fwd(r->fast, r), bwd(r->fast, r, 0), bwd(r->det, r, 1);
    CU_CHECK(cuCtxSynchronize());
    float *o = malloc(4 * nq), *lse = malloc(4 * (size_t)s->T * HQ), *dq = malloc(4 * nq), *dq2 = malloc(4 * nq);
    float *dk = malloc(4 * nk), *dv = malloc(4 * nk), *dk2 = malloc(4 * nk), *dv2 = malloc(4 * nk);
    lg_dev_download(o, r->b->o, HQ * HD, s->T, HQ * HD, LG_BF16);
    lg_dev_download(lse, r->b->lse, HQ, s->T, HQ, LG_FP32);
    const int64_t lq = r->b->ldq, lk = r->b->ldk;
    lg_dev_download(dq, r->b->dq, lq, s->T, HQ * HD, LG_BF16);
    lg_dev_download(dq2, r->b->dq2, lq, s->T, HQ * HD, LG_BF16);
    lg_dev_download(dk, r->b->dk, lk, s->T, HKV * HD, LG_BF16);
    lg_dev_download(dv, r->b->dv, lk, s->T, HKV * HD, LG_BF16);
    lg_dev_download(dk2, r->b->dk2, lk, s->T, HKV * HD, LG_BF16);
    lg_dev_download(dv2, r->b->dv2, lk, s->T, HKV * HD, LG_BF16);
    double worst[5] = {0};
    uint64_t st = 77;
    for (int k = 0; k < 24; k++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        /* the first and last tokens of samples, then random ones; heads spread */
        int64_t t = (int64_t)((st >> 33) % (uint64_t)s->T);
        if (k < 4)
            t = s->cu[k % s->nseq];
        else if (k < 8)
            t = s->cu[(k - 4) % s->nseq + 1] - 1;
        const int h = (int)((st >> 20) % HQ), smp = sample_of(s, t);
        double ro[HD], rq[HD], rl, rk[HD], rv[HD];
        ref_row(s, r->b, smp, t, h, ro, &rl, rq);
        worst[0] = fmax(worst[0], row_err(o + (t * HQ + h) * HD, ro, HD));
        worst[1] = fmax(worst[1], fabs(lse[t * HQ + h] - rl));
        worst[2] = fmax(worst[2], row_err(dq + (t * HQ + h) * HD, rq, HD));
        const int g = h / (HQ / HKV);
        ref_kv_row(s, r->b, o, lse, smp, t, g, rk, rv);
        worst[3] = fmax(worst[3], row_err(dk + (t * HKV + g) * HD, rk, HD));
        worst[4] = fmax(worst[4], row_err(dv + (t * HKV + g) * HD, rv, HD));
    }
    double fd = 0;
    for (size_t i = 0; i < nq; i++)
        fd = fmax(fd, fabs(dq[i] - dq2[i]) / (fabs(dq2[i]) + 1e-2));
    for (size_t i = 0; i < nk; i++)
        fd = fmax(fd, fmax(fabs(dk[i] - dk2[i]) / (fabs(dk2[i]) + 1e-2), fabs(dv[i] - dv2[i]) / (fabs(dv2[i]) + 1e-2)));
    const int ok = worst[0] < 1e-2 && worst[1] < 1e-3 && worst[2] < 2e-2 && worst[3] < 2e-2 && worst[4] < 2e-2 &&
                   fd < 0.1;
    printf("  %-15s validation: rows O %.1e LSE %.1e dQ %.1e dK %.1e dV %.1e, fast vs det %.1e: %s\n", s->name,
           worst[0], worst[1], worst[2], worst[3], worst[4], fd, ok ? "ok" : "MISMATCH");
    free(o), free(lse), free(dq), free(dq2), free(dk), free(dv), free(dk2), free(dv2);
    return ok;
}

/* ---- the tile sweep ---- */

static lg_attn_t *make(lg_ctx_t *ctx, unsigned flags, const struct lg_attn_tiles *t)
{
    struct lg_attn_params p = {.hq = HQ, .hkv = HKV, .head_dim = HD, .dtype = LG_BF16, .flags = flags};
    lg_attn_t *a;
    CHECK(lg_attn_init(ctx, &p, &a));
    if (t)
        CHECK(lg_attn_set_tiles(a, t));
    return a;
}

/* Times each candidate's forward (fwd tiles), fast backward (dkv tiles) and deterministic dQ cost (dq tiles)
 * on r's shape; returns the best of each merged. Candidates that fail to build (too much shared memory for
 * this device) are skipped. */
static struct lg_attn_tiles sweep(lg_ctx_t *ctx, struct run *r, int reps)
{
    static const struct lg_attn_tiles cand[] = {
        {0},
        {.fwd_bm = 128, .fwd_bn = 128, .fwd_nw = 8, .fwd_st = 2, .dkv_bm = 64, .dkv_nw = 4, .dkv_st = 2,
         .dq_bm = 128, .dq_bn = 64, .dq_nw = 8, .dq_st = 2},
        {.fwd_bm = 128, .fwd_bn = 64, .fwd_nw = 8, .fwd_st = 2, .dkv_bm = 64, .dkv_nw = 8, .dkv_st = 1,
         .dq_bm = 64, .dq_bn = 128, .dq_nw = 4, .dq_st = 2},
        {.fwd_bm = 64, .fwd_bn = 128, .fwd_nw = 4, .fwd_st = 2, .dkv_bm = 64, .dkv_nw = 4, .dkv_st = 1,
         .dq_bm = 64, .dq_bn = 64, .dq_nw = 4, .dq_st = 1},
    };
    const int n = (int)(sizeof cand / sizeof cand[0]);
    double best[3] = {INFINITY, INFINITY, INFINITY};
    int pick[3] = {0, 0, 0};
    struct run saved = *r;
    printf("\ntile sweep on %s (ms): fwd, fast bwd, det bwd\n", r->s->name);
    for (int i = 0; i < n; i++) {
        r->fast = make(ctx, 0, &cand[i]), r->det = make(ctx, LG_ATTN_DETERMINISTIC, &cand[i]);
        struct lg_attn_fwd f = fwd_args(r);
        struct lg_attn_bwd g = bwd_args(r, 0);
        /* a candidate this device cannot run (shared memory) is skipped, not fatal */
        if (lg_attn_forward(r->fast, &f, 0) != LG_OK || lg_attn_backward(r->fast, &g, 0) != LG_OK ||
            lg_attn_backward(r->det, &g, 0) != LG_OK) {
            printf("  candidate %d: skipped (%s)\n", i, lg_last_error());
            lg_attn_free(r->fast), lg_attn_free(r->det);
            continue;
        }
        void (*fns[3])(void *) = {t_fwd, t_bwd, t_bwd_det};
        double med[3];
        lg_time_interleaved(fns, r, 3, 0, 2, reps, med);
        char fk[LG_NAME_MAX], bk[LG_NAME_MAX], qk[LG_NAME_MAX], dkd[LG_NAME_MAX];
        CHECK(lg_attn_kernel_names(r->fast, fk, bk, qk));
        CHECK(lg_attn_kernel_names(r->det, fk, dkd, qk));
        printf("  %d: %7.3f %7.3f %7.3f   %s | %s | %s\n", i, med[0], med[1], med[2], fk, bk, qk);
        for (int k = 0; k < 3; k++)
            if (med[k] < best[k])
                best[k] = med[k], pick[k] = i;
        lg_attn_free(r->fast), lg_attn_free(r->det);
    }
    *r = saved;
    struct lg_attn_tiles t = cand[pick[0]];
    t.dkv_bm = cand[pick[1]].dkv_bm, t.dkv_nw = cand[pick[1]].dkv_nw, t.dkv_st = cand[pick[1]].dkv_st;
    t.dq_bm = cand[pick[2]].dq_bm, t.dq_bn = cand[pick[2]].dq_bn, t.dq_nw = cand[pick[2]].dq_nw;
    t.dq_st = cand[pick[2]].dq_st;
    printf("  picked: forward %d, dK/dV %d, dQ %d (the deterministic time includes the dK/dV pass of %d)\n",
           pick[0], pick[1], pick[2], pick[2]);
    return t;
}

/* ---- the cuDNN backend beside them ---- */

/* Validates the cuDNN backend on s (its backward twice: the comparison of the fast and deterministic
 * backwards becomes a run-to-run check) and times it; one table row (and a CSV row "<shape>-cudnn"). A
 * failing call is reported in the row, not fatal; a validation mismatch sets *bad. */
static size_t cudnn_row(lg_attn_t *dnn, const struct shape *s, struct bufs *b, int reps, double ours_both,
                        FILE *csv, char *out, size_t room, int *bad)
{
    struct run r = {.s = s, .b = b, .fast = dnn, .det = dnn};
    struct lg_attn_fwd f = fwd_args(&r);
    struct lg_attn_bwd g = bwd_args(&r, 0);
    if (lg_attn_forward(dnn, &f, 0) != LG_OK || lg_attn_backward(dnn, &g, 0) != LG_OK) {
        printf("  %-15s cuDNN backend failed: %s\n", s->name, lg_last_error());
        return (size_t)snprintf(out, room, "  cudnn         | failed: see above\n");
    }
    CU_CHECK(cuCtxSynchronize());
    printf("  (cuDNN backend, validated like the generated kernels:)\n");
    *bad |= !validate(&r);
    char fk[LG_NAME_MAX], bk[LG_NAME_MAX], note[LG_NAME_MAX];
    CHECK(lg_attn_kernel_names(dnn, fk, bk, note));
    void (*fns[3])(void *) = {t_fwd, t_bwd, t_both};
    double med[3];
    lg_time_interleaved(fns, &r, 3, 0, 3, reps, med);
    const double ff = s->flops_fwd, fb = 2.5 * ff;
    if (csv)
        fprintf(csv, "%s-cudnn,%lld,%.4f,%.4f,%.4f,0,0,%.1f,%.1f,%.1f,0\n", s->name, (long long)s->T, med[0], med[1],
                med[2], ff / med[0] / 1e9, fb / med[1] / 1e9, (ff + fb) / med[2] / 1e9);
    return (size_t)snprintf(
        out, room,
        "  cudnn         | %7.3f  %7.1f | %7.3f  %7.1f | %7.3f  %7.1f | generated f+b %.2fx cuDNN's "
        "speed (%s)\n",
        med[0], ff / med[0] / 1e9, med[1], fb / med[1] / 1e9, med[2], (ff + fb) / med[2] / 1e9, med[2] / ours_both,
        note);
}

/* ---- torch's numbers (bench/attention_torch.py) ---- */

struct torch_row {
    char shape[32], backend[16];
    double fwd, bwd, both; /* ms; <= 0: not available */
};

static int read_torch(const char *path, struct torch_row *rows, int max)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f)
        return 0;
    char line[256];
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        struct torch_row r;
        if (sscanf(line, "%31[^,],%15[^,],%lf,%lf,%lf", r.shape, r.backend, &r.fwd, &r.bwd, &r.both) == 5)
            rows[n++] = r;
    }
    fclose(f);
    return n;
}

int main(int argc, char **argv)
{
    int reps = 20, do_sweep = 1, print_lens = 0, tokens = 8192, use_cudnn = 1;
    const char *only = NULL, *csv_path = NULL, *torch_csv = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--csv") && i + 1 < argc)
            csv_path = argv[++i];
        else if (!strcmp(argv[i], "--torch-csv") && i + 1 < argc)
            torch_csv = argv[++i];
        else if (!strcmp(argv[i], "--no-sweep"))
            do_sweep = 0;
        else if (!strcmp(argv[i], "--print-lens"))
            print_lens = 1;
        else if (!strcmp(argv[i], "--no-cudnn"))
            use_cudnn = 0;
        else if (!strcmp(argv[i], "--layout") && i + 1 < argc && (!strcmp(argv[i + 1], "train") ||
                                                                   !strcmp(argv[i + 1], "packed")))
            g_train_layout = !strcmp(argv[++i], "train");
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc && atoi(argv[i + 1]) >= 16)
            tokens = atoi(argv[++i]) / 16 * 16;
        else {
            fprintf(stderr, "usage: %s [--reps N] [--only SHAPE] [--csv FILE] [--torch-csv FILE] [--no-sweep] "
                            "[--print-lens] [--tokens N] [--no-cudnn] [--layout packed|train]\n", argv[0]);
            return 2;
        }
    }
    struct shape mix;
    lognormal_shape(&mix, tokens);
    if (print_lens) {
        for (int i = 0; i < mix.nseq; i++)
            printf("%s%d", i ? "," : "", mix.cu[i + 1] - mix.cu[i]);
        printf("\n");
        return 0;
    }
    lg_test_require_gpu();
    lg_ctx_t *ctx;
    struct lg_ctx_params cp = {.device = 0};
    CHECK(lg_ctx_init(&cp, &ctx));
    printf("bench_attention: causal GQA %d/%d, d=%d, bf16, %s rows, on %s (sm_%d, %d SMs), cuDNN %d\n", HQ, HKV,
           HD, g_train_layout ? "the trainer's fused" : "packed", lg_ctx_device_name(ctx), lg_ctx_arch(ctx),
           lg_ctx_sm_count(ctx), lg_attn_cudnn_version());
    struct shape shapes[3];
    const int four[4] = {tokens / 4, tokens / 4, tokens / 4, tokens / 4}, one[1] = {tokens};
    char n4[32], n1[32];
    snprintf(n4, sizeof n4, "4x%d", tokens / 4), snprintf(n1, sizeof n1, "1x%d", tokens);
    shape_from_lens(&shapes[0], n4, four, 4);
    shape_from_lens(&shapes[1], n1, one, 1);
    shapes[2] = mix;
    printf("%s lengths:", mix.name);
    for (int i = 0; i < shapes[2].nseq; i++)
        printf(" %d", shapes[2].cu[i + 1] - shapes[2].cu[i]);
    printf("\n");

    struct lg_attn_tiles tiles = {0};
    int bad = 0;
    if (do_sweep) {
        struct bufs b;
        bufs_init(&b, &shapes[0]);
        struct run r = {.s = &shapes[0], .b = &b};
        tiles = sweep(ctx, &r, reps / 2 > 3 ? reps / 2 : 3);
        bufs_free(&b);
    }
    lg_attn_t *fast = make(ctx, 0, &tiles), *det = make(ctx, LG_ATTN_DETERMINISTIC, &tiles);
    char fk[LG_NAME_MAX], bk[LG_NAME_MAX], qk[LG_NAME_MAX], dk[LG_NAME_MAX];
    CHECK(lg_attn_kernel_names(fast, fk, bk, qk));
    CHECK(lg_attn_kernel_names(det, fk, dk, qk));
    printf("\nkernels: %s | fast %s | det %s + %s\n", fk, bk, dk, qk);
    lg_attn_t *dnn = NULL;
    if (use_cudnn) {
        struct lg_attn_params dp = {.hq = HQ, .hkv = HKV, .head_dim = HD, .dtype = LG_BF16,
                                    .backend = LG_ATTN_CUDNN};
        if (lg_attn_init(ctx, &dp, &dnn) != LG_OK) {
            printf("cuDNN backend unavailable: %s\n", lg_last_error());
            dnn = NULL;
        }
    }
    struct torch_row tr[32];
    const int ntr = read_torch(torch_csv, tr, 32);
    FILE *csv = csv_path ? fopen(csv_path, "w") : NULL;
    if (csv)
        fprintf(csv, "shape,tokens,fwd_ms,bwd_ms,fwdbwd_ms,bwd_det_ms,fwdbwd_det_ms,fwd_tflops,bwd_tflops,"
                     "fwdbwd_tflops,fwdbwd_det_tflops\n");
    char table[8192] = "";
    size_t tl = 0;
    tl += (size_t)snprintf(table + tl, sizeof table - tl,
                           "\n%-15s | %17s | %17s | %17s | %17s | det cost\n", "shape", "fwd ms  TFLOP/s",
                           "bwd ms  TFLOP/s", "fwd+bwd ms TF/s", "det f+b ms TF/s");
    for (int si = 0; si < 3; si++) {
        const struct shape *s = &shapes[si];
        if (only && strcmp(only, s->name))
            continue;
        struct bufs b;
        bufs_init(&b, s);
        struct run r = {.s = s, .b = &b, .fast = fast, .det = det};
        bad |= !validate(&r);
        void (*fns[5])(void *) = {t_fwd, t_bwd, t_both, t_bwd_det, t_both_det};
        double med[5];
        lg_time_interleaved(fns, &r, 5, 0, 3, reps, med);
        const double ff = s->flops_fwd, fb = 2.5 * ff;
        const double tf[5] = {ff / med[0] / 1e9, fb / med[1] / 1e9, (ff + fb) / med[2] / 1e9, fb / med[3] / 1e9,
                              (ff + fb) / med[4] / 1e9};
        tl += (size_t)snprintf(table + tl, sizeof table - tl,
                               "%-15s | %7.3f  %7.1f | %7.3f  %7.1f | %7.3f  %7.1f | %7.3f  %7.1f | %5.2fx bwd\n",
                               s->name, med[0], tf[0], med[1], tf[1], med[2], tf[2], med[4], tf[4], med[3] / med[1]);
        for (int k = 0; k < ntr; k++)
            if (!strcmp(tr[k].shape, s->name) && tr[k].both > 0)
                tl += (size_t)snprintf(table + tl, sizeof table - tl,
                                       "  torch %-7s | %7.3f  %7.1f | %7.3f  %7.1f | %7.3f  %7.1f |  loragen fwd+bwd "
                                       "%.2fx its speed\n",
                                       tr[k].backend, tr[k].fwd, tr[k].fwd > 0 ? ff / tr[k].fwd / 1e9 : 0, tr[k].bwd,
                                       tr[k].bwd > 0 ? fb / tr[k].bwd / 1e9 : 0, tr[k].both,
                                       (ff + fb) / tr[k].both / 1e9, tr[k].both / med[2]);
        if (csv)
            fprintf(csv, "%s,%lld,%.4f,%.4f,%.4f,%.4f,%.4f,%.1f,%.1f,%.1f,%.1f\n", s->name, (long long)s->T, med[0],
                    med[1], med[2], med[3], med[4], tf[0], tf[1], tf[2], tf[4]);
        if (dnn)
            tl += cudnn_row(dnn, s, &b, reps, med[2], csv, table + tl, sizeof table - tl, &bad);
        bufs_free(&b);
    }
    printf("%s", table);
    printf("targets (docs/design.md): fwd+bwd >= 350 TFLOP/s on 4x2048 and within 10%% of that on the mix;"
           " torch SDPA on an H200: flash 217, cuDNN 401\n");
    if (csv)
        fclose(csv);
    lg_attn_free(fast), lg_attn_free(det), lg_attn_free(dnn);
    lg_ctx_free(ctx);
    return bad ? 1 : 0;
}
