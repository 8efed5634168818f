/* attention.c: packed causal GQA attention (lg_attention.h): argument checks, the per-arch tiles, the
 * workspace, and the launches of the generated kernels (templates/attn/):
 *   forward:  sched (query blocks) -> fwd
 *   backward: pre (D) -> [fast: zero dq_acc] -> sched (key blocks) -> dkv -> fast: cvt | deterministic:
 *             sched (query blocks) -> dq
 * Block tables are built on the device per call from cu (a few microseconds, no host round trip), so a call
 * needs nothing from the device and never waits for it. cuDNN calls go to attention_cudnn.c. */
#include "lg_attention.h"
#include "attention_internal.h"
#include "attn_tune.h"
#include "lg_base.h"
#include "lg_gpu.h"
#include "common/lg_attn_args.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    K_SCHED = LG_OPS_ATTN_SCHED,
    K_FWD = LG_OPS_ATTN_FWD,
    K_PRE = LG_OPS_ATTN_PRE,
    K_DKV = LG_OPS_ATTN_DKV,
    K_DQ = LG_OPS_ATTN_DQ,
    K_CVT = LG_OPS_ATTN_CVT,
    K_COUNT
};

struct lg_attn {
    lg_ctx_t *ctx;
    CUcontext cu;
    struct lg_attn_params p;
    float scale;
    struct lg_attn_tiles tiles; /* the arch's defaults with the tuner's choices over them */
    const struct lg_kernel *k[K_COUNT];
    CUdeviceptr ws;
    size_t ws_size;
    struct lg_ops_attn_cudnn *dnn; /* LG_ATTN_CUDNN only */
};

static int cdiv(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }

static enum lg_status bind(const lg_attn_t *a, const char *fn)
{
    CUcontext cur = NULL;
    if (cuCtxGetCurrent(&cur) == CUDA_SUCCESS && cur == a->cu)
        return LG_OK;
    enum lg_status st = lg_cu_check(cuCtxSetCurrent(a->cu), "cuCtxSetCurrent");
    return st == LG_OK ? st : lg_fail_wrap(st, "%s: ", fn);
}

/* ---- parameters and tiles ---- */

enum lg_status lg_ops_attn_check_params(const struct lg_attn_params *p)
{
    static const char *fn = "lg_attn_init";
    if (p->hq < 1 || p->hkv < 1 || p->hq % p->hkv)
        return lg_fail(LG_ERR_INVALID, "%s: hq = %d and hkv = %d: both >= 1 and hq a multiple of hkv", fn, p->hq,
                       p->hkv);
    if (p->head_dim != 64 && p->head_dim != 128)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: head_dim = %d is not supported (64 or 128)", fn, p->head_dim);
    if (p->dtype != LG_BF16 && p->dtype != LG_FP16)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: dtype %s is not supported (bf16 or fp16)", fn,
                       lg_dtype_name(p->dtype));
    if (!(p->scale >= 0) || !isfinite(p->scale))
        return lg_fail(LG_ERR_INVALID, "%s: scale = %g must be finite and >= 0 (0: 1/sqrt(head_dim))", fn,
                       (double)p->scale);
    if (p->backend != LG_ATTN_GENERATED && p->backend != LG_ATTN_CUDNN)
        return lg_fail(LG_ERR_INVALID, "%s: backend %d is not an enum lg_attn_backend", fn, (int)p->backend);
    if (p->flags & ~(unsigned)LG_ATTN_DETERMINISTIC)
        return lg_fail(LG_ERR_INVALID, "%s: flags 0x%x holds unknown bits", fn, p->flags);
    return LG_OK;
}

/* Tiles for devices with >= 160 KiB of shared memory per block (sm_80, sm_90): flash-attention-2's shapes.
 * Elsewhere (sm_86/89: 99 KiB) the generator's defaults, which fit everywhere. */
struct lg_attn_tiles lg_ops_attn_default_tiles(int head_dim, int smem_optin)
{
    struct lg_attn_tiles t = {0};
    if (smem_optin < 160 * 1024)
        return t;
    t.fwd_bm = 128, t.fwd_bn = 64, t.fwd_nw = 4, t.fwd_st = 2;
    t.dkv_bm = 64, t.dkv_nw = 8, t.dkv_st = 2;
    t.dq_bm = 64, t.dq_bn = head_dim == 64 ? 128 : 64, t.dq_nw = 4, t.dq_st = 2;
    return t;
}

static int optin_smem(void)
{
    CUdevice dev;
    int v = 0;
    if (cuCtxGetDevice(&dev) == CUDA_SUCCESS)
        cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev);
    return v;
}

static void over(int *field, int tuned)
{
    if (tuned)
        *field = tuned;
}

enum lg_status lg_attn_set_tiles(lg_attn_t *a, const struct lg_attn_tiles *t)
{
    if (!a || !t)
        return lg_fail(LG_ERR_INVALID, "lg_attn_set_tiles: null argument");
    struct lg_attn_tiles d = lg_ops_attn_default_tiles(a->p.head_dim, optin_smem());
    over(&d.fwd_bm, t->fwd_bm), over(&d.fwd_bn, t->fwd_bn), over(&d.fwd_nw, t->fwd_nw);
    over(&d.fwd_st, t->fwd_st);
    over(&d.dkv_bm, t->dkv_bm), over(&d.dkv_nw, t->dkv_nw), over(&d.dkv_st, t->dkv_st);
    over(&d.dq_bm, t->dq_bm), over(&d.dq_bn, t->dq_bn), over(&d.dq_nw, t->dq_nw), over(&d.dq_st, t->dq_st);
    a->tiles = d;
    memset(a->k, 0, sizeof a->k); /* resolved again on next use */
    return LG_OK;
}

void lg_attn_get_tiles(const lg_attn_t *a, struct lg_attn_tiles *t) { *t = a->tiles; }

/* The configuration kernel `which` is requested with (zero fields: the generator's defaults). */
struct lg_kernel_cfg lg_ops_attn_cfg(const struct lg_attn_params *p, const struct lg_attn_tiles *t,
                                     enum lg_ops_attn_kernel which)
{
    struct lg_kernel_cfg c = {.dtype = p->dtype, .hd = p->head_dim};
    switch (which) {
    case LG_OPS_ATTN_SCHED: c.op = LG_OP_ATTN_SCHED, c.hd = 0; break;
    case LG_OPS_ATTN_FWD:
        c.op = LG_OP_ATTN_FWD, c.bm = t->fwd_bm, c.bn = t->fwd_bn, c.nw = t->fwd_nw, c.st = t->fwd_st;
        break;
    case LG_OPS_ATTN_PRE: c.op = LG_OP_ATTN_BWD_PRE; break;
    case LG_OPS_ATTN_DKV:
        c.op = LG_OP_ATTN_BWD_DKV, c.bm = t->dkv_bm, c.nw = t->dkv_nw, c.st = t->dkv_st;
        c.atomic = !(p->flags & LG_ATTN_DETERMINISTIC);
        break;
    case LG_OPS_ATTN_DQ:
        c.op = LG_OP_ATTN_BWD_DQ, c.bm = t->dq_bm, c.bn = t->dq_bn, c.nw = t->dq_nw, c.st = t->dq_st;
        break;
    default: c.op = LG_OP_ATTN_DQ_CVT; break;
    }
    return c;
}

static enum lg_status kernel(lg_attn_t *a, int which, const struct lg_kernel **k)
{
    if (!a->k[which]) {
        struct lg_kernel_cfg c = lg_ops_attn_cfg(&a->p, &a->tiles, (enum lg_ops_attn_kernel)which);
        enum lg_status st = lg_ctx_kernel(a->ctx, &c, &a->k[which]);
        if (st != LG_OK)
            return lg_fail_wrap(st, "attention: ");
    }
    *k = a->k[which];
    return LG_OK;
}

enum lg_status lg_attn_kernel_names(lg_attn_t *a, char *fwd, char *dkv, char *dq)
{
    if (!a)
        return lg_fail(LG_ERR_INVALID, "lg_attn_kernel_names: null argument");
    if (a->p.backend == LG_ATTN_CUDNN) {
        snprintf(fwd, LG_NAME_MAX, "cudnn_sdpa_fwd"), snprintf(dkv, LG_NAME_MAX, "cudnn_sdpa_bwd");
        snprintf(dq, LG_NAME_MAX, "%s", lg_ops_attn_cudnn_note(a->dnn)); /* the last call's plan */
        return LG_OK;
    }
    const int which[3] = {K_FWD, K_DKV, K_DQ};
    char *out[3] = {fwd, dkv, dq};
    for (int i = 0; i < 3; i++) {
        if (which[i] == K_DQ && !(a->p.flags & LG_ATTN_DETERMINISTIC)) {
            snprintf(out[i], LG_NAME_MAX, "-"); /* the fast backward has no dQ pass */
            continue;
        }
        struct lg_kernel_cfg c = lg_ops_attn_cfg(&a->p, &a->tiles, (enum lg_ops_attn_kernel)which[i]);
        struct lg_kernel_src src;
        enum lg_status st = lg_gen_kernel(lg_ctx_gen(a->ctx), &c, "runtime", &src);
        if (st != LG_OK)
            return st;
        snprintf(out[i], LG_NAME_MAX, "%s", src.name);
        lg_kernel_src_free(&src);
    }
    return LG_OK;
}

/* ---- lifetime ---- */

enum lg_status lg_attn_init(lg_ctx_t *ctx, const struct lg_attn_params *p, lg_attn_t **out)
{
    if (!p || !out)
        return lg_fail(LG_ERR_INVALID, "lg_attn_init: null argument");
    enum lg_status st = lg_ops_attn_check_params(p); /* before the context: bad parameters are reported as such */
    if (st != LG_OK)
        return st;
    if (!ctx)
        return lg_fail(LG_ERR_INVALID, "lg_attn_init: ctx is NULL");
    lg_attn_t *a = calloc(1, sizeof *a);
    if (!a)
        return lg_fail(LG_ERR_OOM, "lg_attn_init: out of memory");
    a->ctx = ctx;
    a->p = *p;
    a->scale = p->scale != 0 ? p->scale : 1.0f / sqrtf((float)p->head_dim);
    st = lg_cu_check(cuCtxGetCurrent(&a->cu), "lg_attn_init: cuCtxGetCurrent");
    if (st == LG_OK && !a->cu)
        st = lg_fail(LG_ERR_INVALID, "lg_attn_init: no CUDA context is current (lg_ctx_init makes one current)");
    if (st == LG_OK)
        st = lg_attn_set_tiles(a, &(struct lg_attn_tiles){0});
    struct lg_attn_tiles tuned; /* the tuning database's winner for this GPU and shape (attn_tune.c) */
    if (st == LG_OK && p->backend == LG_ATTN_GENERATED && lg_ops_attn_tuned_tiles(ctx, p, &tuned))
        st = lg_attn_set_tiles(a, &tuned);
    if (st == LG_OK && p->backend == LG_ATTN_CUDNN)
        st = lg_ops_attn_cudnn_init(p, a->scale, &a->dnn);
    if (st != LG_OK) {
        lg_attn_free(a);
        return st;
    }
    *out = a;
    return LG_OK;
}

void lg_attn_free(lg_attn_t *a)
{
    if (!a)
        return;
    if (a->cu)
        bind(a, "lg_attn_free");
    lg_ops_attn_cudnn_free(a->dnn);
    if (a->ws)
        cuMemFree(a->ws);
    free(a);
}

/* ---- call checks ---- */

enum lg_status lg_ops_attn_check_seqs(const char *fn, const struct lg_attn_seqs *s)
{
    if (s->nseq < 1 || !s->cu_host)
        return lg_fail(LG_ERR_INVALID, "%s: seqs needs nseq >= 1 (%d) and cu_host", fn, s->nseq);
    if (!s->cu || s->cu % 4)
        return lg_fail(LG_ERR_INVALID, "%s: seqs.cu (device offsets) is NULL or not 4-byte aligned", fn);
    if (s->cu_host[0] != 0)
        return lg_fail(LG_ERR_INVALID, "%s: cu_seqlens[0] = %d, not 0", fn, s->cu_host[0]);
    int longest = 0;
    for (int i = 0; i < s->nseq; i++) {
        if (s->cu_host[i + 1] <= s->cu_host[i])
            return lg_fail(LG_ERR_INVALID, "%s: cu_seqlens not increasing: cu[%d] = %d, cu[%d] = %d", fn, i,
                           s->cu_host[i], i + 1, s->cu_host[i + 1]);
        if (s->cu_host[i + 1] - s->cu_host[i] > longest)
            longest = s->cu_host[i + 1] - s->cu_host[i];
    }
    if (s->tokens != s->cu_host[s->nseq])
        return lg_fail(LG_ERR_INVALID, "%s: tokens = %lld but cu_seqlens[%d] = %d", fn, (long long)s->tokens,
                       s->nseq, s->cu_host[s->nseq]);
    if (s->max_len < longest)
        return lg_fail(LG_ERR_INVALID, "%s: max_len = %d is below the longest sample (%d tokens)", fn, s->max_len,
                       longest);
    return LG_OK;
}

/* A [tokens, heads, d] tensor: set, 16-byte aligned, ld (0: packed) >= heads·d and a multiple of 8. */
enum lg_status lg_ops_attn_check_tensor(const char *fn, const char *name, CUdeviceptr p, int64_t *ld, int64_t row)
{
    if (!p)
        return lg_fail(LG_ERR_INVALID, "%s: %s is NULL", fn, name);
    if (p % 16)
        return lg_fail(LG_ERR_INVALID, "%s: %s is not 16-byte aligned", fn, name);
    if (*ld == 0)
        *ld = row;
    if (*ld < row || *ld % 8)
        return lg_fail(LG_ERR_INVALID, "%s: ld of %s = %lld must be >= %lld (heads x head_dim) and a multiple of 8",
                       fn, name, (long long)*ld, (long long)row);
    return LG_OK;
}

static enum lg_status check_lse(const char *fn, CUdeviceptr p)
{
    if (!p || p % 4)
        return lg_fail(LG_ERR_INVALID, "%s: lse (fp32 [tokens, hq]) is NULL or not 4-byte aligned", fn);
    return LG_OK;
}

/* ---- workspace and block tables ---- */

static enum lg_status ensure_ws(lg_attn_t *a, size_t bytes, CUstream stream)
{
    if (bytes <= a->ws_size)
        return LG_OK;
    if (a->ws) {
        cuStreamSynchronize(stream); /* earlier launches may still use the old workspace */
        cuMemFree(a->ws);
        a->ws = 0, a->ws_size = 0;
    }
    bytes += bytes / 4; /* headroom: microbatches vary */
    enum lg_status st = lg_cu_check(cuMemAlloc(&a->ws, bytes), "attention workspace");
    if (st == LG_OK)
        a->ws_size = bytes;
    return st;
}

static int entries_of(const struct lg_attn_seqs *s, int rows)
{
    int64_t n = 0;
    for (int i = 0; i < s->nseq; i++)
        n += cdiv(s->cu_host[i + 1] - s->cu_host[i], rows);
    return n > 65535 ? -1 : (int)n; /* the table is the grid's y dimension */
}

static enum lg_status too_many(const char *fn, const struct lg_attn_seqs *s, int rows)
{
    return lg_fail(LG_ERR_UNSUPPORTED, "%s: %lld tokens in blocks of %d make more than 65535 blocks per head", fn,
                   (long long)s->tokens, rows);
}

/* Launches the table builder: `entries` (sample, block) pairs into table. */
static enum lg_status build_table(lg_attn_t *a, const struct lg_attn_seqs *s, CUdeviceptr table, int entries,
                                  int rows, int kv_rows, int mode, CUstream stream)
{
    const struct lg_kernel *k = NULL;
    enum lg_status st = kernel(a, K_SCHED, &k);
    if (st != LG_OK)
        return st;
    struct lg_attn_sched_args sa = {.cu = (const int *)s->cu, .table = (int *)table, .nseq = s->nseq,
                                    .entries = entries, .rows = rows, .kv_rows = kv_rows, .mode = mode};
    return lg_kernel_launch(k, (unsigned)cdiv(entries, k->threads), 1, &sa, sizeof sa, stream);
}

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

/* ---- forward ---- */

enum lg_status lg_attn_forward(lg_attn_t *a, const struct lg_attn_fwd *f, CUstream stream)
{
    static const char *fn = "lg_attn_forward";
    if (!a || !f)
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    struct lg_attn_fwd c = *f;
    const int64_t qrow = (int64_t)a->p.hq * a->p.head_dim, krow = (int64_t)a->p.hkv * a->p.head_dim;
    enum lg_status st = lg_ops_attn_check_seqs(fn, &c.seqs);
    if (st == LG_OK)
        st = lg_ops_attn_check_tensor(fn, "q", c.q, &c.ldq, qrow);
    if (st == LG_OK)
        st = lg_ops_attn_check_tensor(fn, "k", c.k, &c.ldk, krow);
    if (st == LG_OK)
        st = lg_ops_attn_check_tensor(fn, "v", c.v, &c.ldv, krow);
    if (st == LG_OK)
        st = lg_ops_attn_check_tensor(fn, "o", c.o, &c.ldo, qrow);
    if (st == LG_OK)
        st = check_lse(fn, c.lse);
    if (st == LG_OK)
        st = bind(a, fn);
    if (st != LG_OK)
        return st;
    if (a->dnn)
        return lg_ops_attn_cudnn_forward(a->dnn, &c, stream);

    const struct lg_kernel *kf = NULL;
    if ((st = kernel(a, K_FWD, &kf)) != LG_OK)
        return st;
    const int bm = kf->cfg.bm, n = entries_of(&c.seqs, bm);
    if (n < 0)
        return too_many(fn, &c.seqs, bm);
    if ((st = ensure_ws(a, (size_t)n * 8, stream)) != LG_OK)
        return st;
    if ((st = build_table(a, &c.seqs, a->ws, n, bm, kf->cfg.bn, 0, stream)) != LG_OK)
        return st;
    struct lg_attn_fwd_args fa = {.q = (const void *)c.q, .k = (const void *)c.k, .v = (const void *)c.v,
                                  .ldq = c.ldq, .ldk = c.ldk, .ldv = c.ldv, .o = (void *)c.o, .ldo = c.ldo,
                                  .lse = (float *)c.lse, .cu = (const int *)c.seqs.cu, .table = (const int *)a->ws,
                                  .hq = a->p.hq, .hkv = a->p.hkv, .scale_log2 = a->scale * 1.4426950408889634f};
    return lg_kernel_launch(kf, (unsigned)a->p.hq, (unsigned)n, &fa, sizeof fa, stream);
}

/* ---- backward ---- */

static enum lg_status check_bwd(const char *fn, const lg_attn_t *a, struct lg_attn_bwd *c)
{
    const int64_t qrow = (int64_t)a->p.hq * a->p.head_dim, krow = (int64_t)a->p.hkv * a->p.head_dim;
    enum lg_status st = lg_ops_attn_check_seqs(fn, &c->seqs);
    const char *names[] = {"q", "k", "v", "o", "dout", "dq", "dk", "dv"};
    CUdeviceptr ptrs[] = {c->q, c->k, c->v, c->o, c->dout, c->dq, c->dk, c->dv};
    int64_t *lds[] = {&c->ldq, &c->ldk, &c->ldv, &c->ldo, &c->lddo, &c->lddq, &c->lddk, &c->lddv};
    const int64_t rows[] = {qrow, krow, krow, qrow, qrow, qrow, krow, krow};
    for (int i = 0; i < 8 && st == LG_OK; i++)
        st = lg_ops_attn_check_tensor(fn, names[i], ptrs[i], lds[i], rows[i]);
    if (st == LG_OK)
        st = check_lse(fn, c->lse);
    return st;
}

/* The workspace of one backward: the key-block table, the query-block table (deterministic) and D; the
 * fp32 dQ sums (fast). Offsets into a->ws. */
struct bwd_ws {
    size_t table_k, table_q, dd, acc, total;
    int64_t dd_ld;
};

static void bwd_layout(const lg_attn_t *a, int nk, int nq, int64_t tokens, int fast, struct bwd_ws *w)
{
    w->dd_ld = (tokens + 3) / 4 * 4;
    w->table_k = 0;
    w->table_q = align256((size_t)nk * 8);
    w->dd = w->table_q + align256((size_t)nq * 8);
    w->acc = w->dd + align256((size_t)a->p.hq * (size_t)w->dd_ld * 4);
    w->total = w->acc + (fast ? (size_t)tokens * (size_t)a->p.hq * (size_t)a->p.head_dim * 4 : 0);
}

enum lg_status lg_attn_prepare(lg_attn_t *a, const struct lg_attn_fwd *f, const struct lg_attn_bwd *b,
                               CUstream stream)
{
    static const char *fn = "lg_attn_prepare";
    if (!a || (!f && !b))
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    if (!a->dnn) /* the generated kernels are made at their first call and plan nothing per shape */
        return LG_OK;
    const int64_t qrow = (int64_t)a->p.hq * a->p.head_dim, krow = (int64_t)a->p.hkv * a->p.head_dim;
    struct lg_attn_fwd cf;
    struct lg_attn_bwd cb;
    const struct lg_attn_seqs *sq[2] = {f ? &f->seqs : NULL, b ? &b->seqs : NULL};
    for (int i = 0; i < 2; i++)
        if (sq[i] && (sq[i]->nseq < 1 || sq[i]->tokens < sq[i]->nseq || sq[i]->max_len < 1))
            return lg_fail(LG_ERR_INVALID, "%s: %d samples of %lld tokens, the longest %d: not a microbatch", fn,
                           sq[i]->nseq, (long long)sq[i]->tokens, sq[i]->max_len);
    if (f) { /* the strides the call will have (0: packed) */
        cf = *f;
        cf.ldq = cf.ldq ? cf.ldq : qrow, cf.ldk = cf.ldk ? cf.ldk : krow, cf.ldv = cf.ldv ? cf.ldv : krow;
        cf.ldo = cf.ldo ? cf.ldo : qrow;
    }
    if (b) {
        cb = *b;
        int64_t *lds[] = {&cb.ldq, &cb.ldk, &cb.ldv, &cb.ldo, &cb.lddo, &cb.lddq, &cb.lddk, &cb.lddv};
        const int64_t rows[] = {qrow, krow, krow, qrow, qrow, qrow, krow, krow};
        for (int i = 0; i < 8; i++)
            *lds[i] = *lds[i] ? *lds[i] : rows[i];
    }
    enum lg_status st = bind(a, fn);
    return st != LG_OK ? st : lg_ops_attn_cudnn_prepare(a->dnn, f ? &cf : NULL, b ? &cb : NULL, stream);
}

enum lg_status lg_attn_backward(lg_attn_t *a, const struct lg_attn_bwd *b, CUstream stream)
{
    static const char *fn = "lg_attn_backward";
    if (!a || !b)
        return lg_fail(LG_ERR_INVALID, "%s: null argument", fn);
    struct lg_attn_bwd c = *b;
    enum lg_status st = check_bwd(fn, a, &c);
    if (st == LG_OK)
        st = bind(a, fn);
    if (st != LG_OK)
        return st;
    if (a->dnn)
        return lg_ops_attn_cudnn_backward(a->dnn, &c, stream);

    const int fast = !(a->p.flags & LG_ATTN_DETERMINISTIC), hd = a->p.head_dim, hq = a->p.hq;
    const struct lg_kernel *kpre = NULL, *kdkv = NULL, *kfin = NULL;
    if ((st = kernel(a, K_PRE, &kpre)) != LG_OK || (st = kernel(a, K_DKV, &kdkv)) != LG_OK ||
        (st = kernel(a, fast ? K_CVT : K_DQ, &kfin)) != LG_OK)
        return st;
    const int kv_rows = 16 * kdkv->cfg.nw, nk = entries_of(&c.seqs, kv_rows);
    const int nq = fast ? 0 : entries_of(&c.seqs, kfin->cfg.bm);
    if (nk < 0 || nq < 0)
        return too_many(fn, &c.seqs, nk < 0 ? kv_rows : kfin->cfg.bm);
    struct bwd_ws w;
    bwd_layout(a, nk, nq, c.seqs.tokens, fast, &w);
    if ((st = ensure_ws(a, w.total, stream)) != LG_OK)
        return st;
    const CUdeviceptr dd = a->ws + w.dd, acc = a->ws + w.acc;

    const int64_t rows8 = c.seqs.tokens * hq * (hd / 8);
    struct lg_attn_pre_args pa = {.o = (const void *)c.o, .dout = (const void *)c.dout, .ldo = c.ldo,
                                  .lddo = c.lddo, .dd = (float *)dd, .tokens = c.seqs.tokens, .dd_ld = w.dd_ld,
                                  .hq = hq};
    st = lg_kernel_launch(kpre, (unsigned)cdiv(rows8, kpre->threads), 1, &pa, sizeof pa, stream);
    if (st == LG_OK && fast)
        st = lg_cu_check(cuMemsetD32Async(acc, 0, (size_t)rows8 * 8, stream), "attention: zero dQ sums");
    if (st == LG_OK)
        st = build_table(a, &c.seqs, a->ws + w.table_k, nk, kv_rows, kdkv->cfg.bm, 1, stream);
    if (st != LG_OK)
        return st;
    struct lg_attn_bwd_args ba = {
        .q = (const void *)c.q, .k = (const void *)c.k, .v = (const void *)c.v, .dout = (const void *)c.dout,
        .ldq = c.ldq, .ldk = c.ldk, .ldv = c.ldv, .lddo = c.lddo, .lse = (const float *)c.lse,
        .dd = (const float *)dd, .dd_ld = w.dd_ld, .dq = (void *)c.dq, .dk = (void *)c.dk, .dv = (void *)c.dv,
        .lddq = c.lddq, .lddk = c.lddk, .lddv = c.lddv, .dq_acc = fast ? (float *)acc : NULL,
        .cu = (const int *)c.seqs.cu, .table = (const int *)(a->ws + w.table_k), .hq = hq, .hkv = a->p.hkv,
        .scale = a->scale, .scale_log2 = a->scale * 1.4426950408889634f};
    if ((st = lg_kernel_launch(kdkv, (unsigned)a->p.hkv, (unsigned)nk, &ba, sizeof ba, stream)) != LG_OK)
        return st;
    if (fast) {
        struct lg_attn_cvt_args ca = {.dq_acc = (const float *)acc, .dq = (void *)c.dq, .lddq = c.lddq,
                                      .tokens = c.seqs.tokens, .hq = hq, .scale = a->scale};
        return lg_kernel_launch(kfin, (unsigned)cdiv(rows8, kfin->threads), 1, &ca, sizeof ca, stream);
    }
    st = build_table(a, &c.seqs, a->ws + w.table_q, nq, kfin->cfg.bm, kfin->cfg.bn, 0, stream);
    if (st != LG_OK)
        return st;
    ba.table = (const int *)(a->ws + w.table_q);
    return lg_kernel_launch(kfin, (unsigned)hq, (unsigned)nq, &ba, sizeof ba, stream);
}
