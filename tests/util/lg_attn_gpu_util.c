/* lg_attn_gpu_util.c: the machinery of the attention GPU suites (lg_attn_gpu_util.h). */
#include "lg_attn_gpu_util.h"
#include "lg_half.h"
#include "lg_ref_ops.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

lg_ctx_t *attn_ctx;
static int64_t tokens_of(const struct acase *c)
{
    int64_t n = 0;
    for (int i = 0; i < c->nseq; i++)
        n += c->lens[i];
    return n;
}

static double tol(enum lg_dtype t) { return t == LG_BF16 ? 1e-2 : 3e-3; }

/* LORAGEN_ATTN_TEST_MAX_TOKENS skips the larger packs (for slow devices and the CPU emulator's fake driver,
 * tests/tools/attn_emu/fake.sh); unset on a real GPU, where every case runs. */
int attn_skipped(const struct acase *c)
{
    const char *e = getenv("LORAGEN_ATTN_TEST_MAX_TOKENS");
    if (!e || tokens_of(c) <= atoll(e))
        return 0;
    printf("  %-14s skipped: %lld tokens > LORAGEN_ATTN_TEST_MAX_TOKENS\n", c->name, (long long)tokens_of(c));
    return 1;
}

/* ---- host data ---- */


float *attn_rnd(size_t n, uint64_t seed, float scale, enum lg_dtype t)
{
    float *x = malloc(sizeof(float) * (n ? n : 1));
    lg_test_fill(x, n, seed, scale);
    lg_host_round(x, n, t);
    return x;
}

void attn_outputs_alloc(struct host *h, const struct acase *c)
{
    const size_t nq = (size_t)h->T * c->hq * c->hd, nk = (size_t)h->T * c->hkv * c->hd;
    h->o = malloc(4 * nq), h->dq = malloc(4 * nq), h->dk = malloc(4 * nk), h->dv = malloc(4 * nk);
    h->lse = malloc(4 * (size_t)h->T * c->hq);
}

void attn_inputs_make(struct host *h, const struct acase *c, uint64_t seed)
{
    h->T = tokens_of(c);
    h->cu[0] = 0;
    for (int i = 0; i < c->nseq; i++)
        h->cu[i + 1] = h->cu[i] + c->lens[i];
    const size_t nq = (size_t)h->T * c->hq * c->hd, nk = (size_t)h->T * c->hkv * c->hd;
    /* q scaled up so the softmax is far from uniform */
    h->q = attn_rnd(nq, seed + 1, 2.0f, c->t), h->k = attn_rnd(nk, seed + 2, 1.0f, c->t);
    h->v = attn_rnd(nk, seed + 3, 1.0f, c->t), h->dout = attn_rnd(nq, seed + 4, 1.0f, c->t);
    attn_outputs_alloc(h, c);
}

void attn_host_free(struct host *h)
{
    free(h->q), free(h->k), free(h->v), free(h->dout);
    free(h->o), free(h->lse), free(h->dq), free(h->dk), free(h->dv);
}

/* ---- the reference, one (sample, q head) per job over all cores ---- */

struct ref_job {
    const struct acase *c;
    struct host *h;
    int s, head;
    float *dk, *dv; /* this head's share of its kv head's gradients, [len, d] */
};

static void *ref_worker(void *arg);

struct ref_pool {
    struct ref_job *jobs;
    int njobs, next;
    pthread_mutex_t mu;
};

static void slice(float *dst, const float *src, int64_t b, int len, int heads, int h, int d)
{
    for (int i = 0; i < len; i++)
        memcpy(dst + (size_t)i * d, src + ((b + i) * heads + h) * (int64_t)d, sizeof(float) * (size_t)d);
}

static void run_job(struct ref_job *j)
{
    const struct acase *c = j->c;
    struct host *h = j->h;
    const int d = c->hd, len = c->lens[j->s], g = j->head / (c->hq / c->hkv);
    const int64_t b = h->cu[j->s];
    const size_t n = (size_t)len * d;
    float *q = malloc(4 * n), *k = malloc(4 * n), *v = malloc(4 * n), *dout = malloc(4 * n);
    float *o = malloc(4 * n), *dq = malloc(4 * n), *lse = malloc(4 * (size_t)len);
    slice(q, h->q, b, len, c->hq, j->head, d), slice(dout, h->dout, b, len, c->hq, j->head, d);
    slice(k, h->k, b, len, c->hkv, g, d), slice(v, h->v, b, len, c->hkv, g, d);
    const int32_t cu[2] = {0, len};
    struct lg_ref_attn ra = {.seq = {.n = len, .nseq = 1, .cu = cu}, .hq = 1, .hkv = 1, .d = d, .q = q, .k = k,
                             .v = v};
    CHECK(lg_ref_attn_forward(&ra, o, lse));
    CHECK(lg_ref_attn_backward(&ra, o, lse, dout, dq, j->dk, j->dv));
    for (int i = 0; i < len; i++) {
        memcpy(h->o + ((b + i) * c->hq + j->head) * (int64_t)d, o + (size_t)i * d, 4 * (size_t)d);
        memcpy(h->dq + ((b + i) * c->hq + j->head) * (int64_t)d, dq + (size_t)i * d, 4 * (size_t)d);
        h->lse[(b + i) * c->hq + j->head] = lse[i];
    }
    free(q), free(k), free(v), free(dout), free(o), free(dq), free(lse);
}

static void *ref_worker(void *arg)
{
    struct ref_pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        int i = p->next++;
        pthread_mutex_unlock(&p->mu);
        if (i >= p->njobs)
            return NULL;
        run_job(&p->jobs[i]);
    }
}

/* The reference outputs of h's inputs into h's outputs. Jobs longest sample first, so the pool ends evenly. */
static void reference(const struct acase *c, struct host *h)
{
    struct ref_pool p = {.njobs = c->nseq * c->hq};
    p.jobs = calloc((size_t)p.njobs, sizeof *p.jobs);
    pthread_mutex_init(&p.mu, NULL);
    int order[MAXS];
    for (int i = 0; i < c->nseq; i++)
        order[i] = i;
    for (int i = 1; i < c->nseq; i++)
        for (int j = i; j > 0 && c->lens[order[j]] > c->lens[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
    for (int si = 0, n = 0; si < c->nseq; si++)
        for (int hh = 0; hh < c->hq; hh++, n++) {
            struct ref_job *j = &p.jobs[n];
            j->c = c, j->h = h, j->s = order[si], j->head = hh;
            j->dk = malloc(4 * (size_t)c->lens[j->s] * c->hd), j->dv = malloc(4 * (size_t)c->lens[j->s] * c->hd);
        }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = ncpu < 1 ? 1 : ncpu > 64 ? 64 : (int)ncpu;
    pthread_t th[64];
    for (int i = 0; i < nt; i++)
        pthread_create(&th[i], NULL, ref_worker, &p);
    for (int i = 0; i < nt; i++)
        pthread_join(th[i], NULL);
    /* dk, dv: the group's heads summed in head order */
    const int grp = c->hq / c->hkv, d = c->hd;
    memset(h->dk, 0, 4 * (size_t)h->T * c->hkv * d), memset(h->dv, 0, 4 * (size_t)h->T * c->hkv * d);
    for (int n = 0; n < p.njobs; n++) {
        const struct ref_job *j = &p.jobs[n];
        const int64_t b = h->cu[j->s];
        for (int i = 0; i < c->lens[j->s]; i++)
            for (int e = 0; e < d; e++) {
                const int64_t at = ((b + i) * c->hkv + j->head / grp) * d + e;
                h->dk[at] += j->dk[(size_t)i * d + e], h->dv[at] += j->dv[(size_t)i * d + e];
            }
        free(j->dk), free(j->dv);
    }
    free(p.jobs);
    pthread_mutex_destroy(&p.mu);
}

/* ---- the GPU run ---- */


void attn_dev_alloc(struct dev *D, const struct acase *c, const struct host *h)
{
    const int64_t T = h->T, qr = (int64_t)c->hq * c->hd, kr = (int64_t)c->hkv * c->hd;
    const size_t e = lg_dtype_size(c->t);
    memset(D, 0, sizeof *D);
    if (c->fused) {
        const int64_t ld = qr + 2 * kr;
        D->qkv = lg_dev_alloc((size_t)(T * ld) * e);
        D->q = D->qkv, D->k = D->qkv + (CUdeviceptr)(qr * e), D->v = D->qkv + (CUdeviceptr)((qr + kr) * e);
        D->ldq = D->ldk = ld;
        D->ldo = qr + 8, D->ldg = 8; /* padded rows: o/dout ld = qr + 8, grads ld = rows + 8 */
    } else {
        D->q = lg_dev_alloc((size_t)(T * qr) * e), D->k = lg_dev_alloc((size_t)(T * kr) * e);
        D->v = lg_dev_alloc((size_t)(T * kr) * e);
        D->ldq = qr, D->ldk = kr, D->ldo = qr, D->ldg = 0;
    }
    D->bytes_o = (size_t)(T * D->ldo) * e;
    D->bytes_dq = (size_t)(T * (qr + D->ldg)) * e, D->bytes_dk = (size_t)(T * (kr + D->ldg)) * e;
    D->o = lg_dev_alloc(D->bytes_o), D->dout = lg_dev_alloc(D->bytes_o);
    D->lse = lg_dev_alloc((size_t)T * c->hq * 4);
    D->dq = lg_dev_alloc(D->bytes_dq), D->dk = lg_dev_alloc(D->bytes_dk), D->dv = lg_dev_alloc(D->bytes_dk);
    D->cu = lg_dev_alloc(sizeof(int32_t) * (size_t)(c->nseq + 1));
}

void attn_dev_free(struct dev *D)
{
    CUdeviceptr all[] = {D->qkv, D->qkv ? 0 : D->q, D->qkv ? 0 : D->k, D->qkv ? 0 : D->v, D->o, D->dout, D->lse,
                         D->dq, D->dk, D->dv, D->cu};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i])
            cuMemFree(all[i]);
}

void attn_dev_upload(struct dev *D, const struct acase *c, const struct host *h)
{
    const int64_t qr = (int64_t)c->hq * c->hd, kr = (int64_t)c->hkv * c->hd;
    lg_dev_upload(D->q, D->ldq, h->q, h->T, qr, c->t);
    lg_dev_upload(D->k, D->ldk, h->k, h->T, kr, c->t);
    lg_dev_upload(D->v, D->ldk, h->v, h->T, kr, c->t);
    lg_dev_poison(D->dout, D->bytes_o);
    lg_dev_upload(D->dout, D->ldo, h->dout, h->T, qr, c->t);
    CU_CHECK(cuMemcpyHtoD(D->cu, h->cu, sizeof(int32_t) * (size_t)(c->nseq + 1)));
}

struct lg_attn_seqs attn_seqs_of(const struct acase *c, const struct host *h, const struct dev *D)
{
    int longest = 0;
    for (int i = 0; i < c->nseq; i++)
        longest = c->lens[i] > longest ? c->lens[i] : longest;
    return (struct lg_attn_seqs){.nseq = c->nseq, .cu_host = h->cu, .cu = D->cu, .tokens = h->T,
                                 .max_len = longest};
}

/* Poisons every output, runs forward and backward, downloads into h's outputs. Returns the calls' status
 * (anything but LG_OK and LG_ERR_UNSUPPORTED, a tile set this device cannot run, ends the test). */
static enum lg_status gpu_try(lg_attn_t *A, const struct acase *c, struct host *h, struct dev *D)
{
    const int64_t qr = (int64_t)c->hq * c->hd, kr = (int64_t)c->hkv * c->hd;
    lg_dev_poison(D->o, D->bytes_o), lg_dev_poison(D->lse, (size_t)h->T * c->hq * 4);
    lg_dev_poison(D->dq, D->bytes_dq), lg_dev_poison(D->dk, D->bytes_dk), lg_dev_poison(D->dv, D->bytes_dk);
    const struct lg_attn_seqs sq = attn_seqs_of(c, h, D);
    struct lg_attn_fwd f = {.seqs = sq, .q = D->q, .k = D->k, .v = D->v, .ldq = D->ldq, .ldk = D->ldk,
                            .ldv = D->ldk, .o = D->o, .ldo = D->ldo, .lse = D->lse};
    enum lg_status st = lg_attn_forward(A, &f, 0);
    if (st == LG_ERR_UNSUPPORTED)
        return st;
    CHECK(st);
    struct lg_attn_bwd b = {.seqs = sq, .q = D->q, .k = D->k, .v = D->v, .o = D->o, .dout = D->dout,
                            .ldq = D->ldq, .ldk = D->ldk, .ldv = D->ldk, .ldo = D->ldo, .lddo = D->ldo,
                            .lse = D->lse, .dq = D->dq, .dk = D->dk, .dv = D->dv, .lddq = qr + D->ldg,
                            .lddk = kr + D->ldg, .lddv = kr + D->ldg};
    CHECK(lg_attn_backward(A, &b, 0));
    CU_CHECK(cuCtxSynchronize());
    lg_dev_download(h->o, D->o, D->ldo, h->T, qr, c->t);
    lg_dev_download(h->lse, D->lse, c->hq, h->T, c->hq, LG_FP32);
    lg_dev_download(h->dq, D->dq, qr + D->ldg, h->T, qr, c->t);
    lg_dev_download(h->dk, D->dk, kr + D->ldg, h->T, kr, c->t);
    lg_dev_download(h->dv, D->dv, kr + D->ldg, h->T, kr, c->t);
    if (D->ldg) { /* the padding after every gradient row stays poisoned: nothing is written outside */
        float *pad = malloc(sizeof(float) * (size_t)h->T * 8);
        lg_dev_download(pad, D->dk + (CUdeviceptr)(kr * lg_dtype_size(c->t)), kr + 8, h->T, 8, c->t);
        for (int64_t i = 0; i < h->T * 8; i++)
            ck_assert_msg(isnan(pad[i]), "dk row padding written at token %lld", (long long)(i / 8));
        free(pad);
    }
    return LG_OK;
}

void attn_gpu_run(lg_attn_t *A, const struct acase *c, struct host *h, struct dev *D)
{
    CHECK(gpu_try(A, c, h, D));
}

/* ---- comparison ---- */


/* Worst per-sample error of one [T, heads, width] tensor; on failure prints the first bad element. */
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
                printf("    %s: sample %d (len %d) rel err %.3g > %.3g; first bad element token %lld head %lld "
                       "col %lld: got %g, want %g\n",
                       what, s, c->lens[s], e, tl, (long long)(i / row), (long long)(i % row / width),
                       (long long)(i % width), got[i], ref[i]);
            }
            *ok = 0;
        }
    }
    return worst;
}

struct verdict attn_compare(const struct acase *c, const struct host *g, const struct host *r)
{
    struct verdict v = {.ok = 1};
    const double tl = tol(c->t);
    v.err[0] = check_tensor("O", c, g, g->o, r->o, c->hq, c->hd, tl, &v.ok);
    v.err[1] = check_tensor("LSE", c, g, g->lse, r->lse, c->hq, 1, 1e-3, &v.ok);
    v.err[2] = check_tensor("dQ", c, g, g->dq, r->dq, c->hq, c->hd, tl, &v.ok);
    v.err[3] = check_tensor("dK", c, g, g->dk, r->dk, c->hkv, c->hd, tl, &v.ok);
    v.err[4] = check_tensor("dV", c, g, g->dv, r->dv, c->hkv, c->hd, tl, &v.ok);
    return v;
}

static void print_row(const struct acase *c, const char *mode, const char *tiles, const struct verdict *v)
{
    char lens[96] = "";
    for (int i = 0; i < c->nseq; i++)
        snprintf(lens + strlen(lens), sizeof lens - strlen(lens), "%s%d", i ? "," : "", c->lens[i]);
    printf("  %-14s %-26s %2d/%-2d d%-3d %s %-5s %-6s %-22s | %8.2e %8.2e %8.2e %8.2e %8.2e | %s\n", c->name,
           lens, c->hq, c->hkv, c->hd, lg_dtype_name(c->t), c->fused ? "fused" : "packd", mode, tiles, v->err[0],
           v->err[1], v->err[2], v->err[3], v->err[4], v->ok ? "PASS" : "FAIL");
    fflush(stdout);
}

lg_attn_t *attn_make_attn(const struct acase *c, unsigned flags, const struct lg_attn_tiles *tiles)
{
    struct lg_attn_params p = {.hq = c->hq, .hkv = c->hkv, .head_dim = c->hd, .dtype = c->t, .flags = flags};
    lg_attn_t *A;
    CHECK(lg_attn_init(attn_ctx, &p, &A));
    if (tiles)
        CHECK(lg_attn_set_tiles(A, tiles));
    return A;
}

/* One case: the reference once, then the GPU in each mode (and with each tile set) against it. */
void attn_run_case(const struct acase *c, const struct lg_attn_tiles *tiles, int ntiles)
{
    if (attn_skipped(c))
        return;
    const uint64_t seed = lg_test_seed() ^ (uint64_t)(tokens_of(c) * 2654435761u + c->hq * 97 + c->hd);
    struct host ref, got;
    attn_inputs_make(&ref, c, seed);
    got = ref;
    attn_outputs_alloc(&got, c);
    reference(c, &ref);
    struct dev D;
    attn_dev_alloc(&D, c, &ref);
    attn_dev_upload(&D, c, &ref);
    int all_ok = 1;
    for (int ti = -1; ti < ntiles; ti++)
        for (int det = 0; det < 2; det++) {
            lg_attn_t *A = attn_make_attn(c, det ? LG_ATTN_DETERMINISTIC : 0, ti >= 0 ? &tiles[ti] : NULL);
            const enum lg_status st = gpu_try(A, c, &got, &D);
            if (st != LG_OK) { /* only a tile set too large for this device gets here */
                ck_assert_msg(ti >= 0, "%s: %s", c->name, lg_last_error());
                printf("  %-14s tile set %d skipped on this device: %s\n", c->name, ti, lg_last_error());
                lg_attn_free(A);
                continue;
            }
            struct verdict v = attn_compare(c, &got, &ref);
            char fk[LG_NAME_MAX], bk[LG_NAME_MAX], qk[LG_NAME_MAX], tag[LG_NAME_MAX];
            CHECK(lg_attn_kernel_names(A, fk, bk, qk));
            snprintf(tag, sizeof tag, "%s", ti < 0 ? "default" : strstr(fk, "_d") ? strstr(fk, "_d") + 1 : fk);
            print_row(c, det ? "det" : "fast", tag, &v);
            if (!v.ok)
                printf("    kernels: %s %s %s (seed %llu)\n", fk, bk, qk, (unsigned long long)seed);
            all_ok &= v.ok;
            lg_attn_free(A);
        }
    attn_dev_free(&D);
    free(got.o), free(got.lse), free(got.dq), free(got.dk), free(got.dv);
    attn_host_free(&ref);
    ck_assert_msg(all_ok, "%s: GPU attention differs from the reference", c->name);
}

int attn_gpu_main(const char *suite, void (*add)(TCase *tc))
{
    lg_test_require_gpu();
    struct lg_ctx_params cp = {.device = 0};
    CHECK(lg_ctx_init(&cp, &attn_ctx));
    printf("device: %s (sm_%d, %d SMs), seed %llu\n", lg_ctx_device_name(attn_ctx), lg_ctx_arch(attn_ctx),
           lg_ctx_sm_count(attn_ctx), (unsigned long long)lg_test_seed());
    printf("  %-14s %-26s %-5s %-4s %-4s %-5s %-6s %-22s | %8s %8s %8s %8s %8s |\n", "case", "lens", "hq/kv", "d",
           "type", "lay", "mode", "tiles", "O", "LSE", "dQ", "dK", "dV");
    int failed = lg_test_run_case(suite, add, 1);
    lg_ctx_free(attn_ctx);
    return failed ? 1 : 0;
}
