/* attention_cudnn.c: cuDNN 9's fused flash attention as the second attention backend (lg_attention.h).
 *
 * cuDNN is loaded at run time (runtime/gpu/cudnn.c); the graphs are built with the backend API
 * (attention_cudnn_graph.c, attention_cudnn_sdpa.c). Execution plans are cached per shape: direction, batch
 * entries b, sequence bound s and the row strides (hq, hkv, d, dtype and scale are fixed per lg_attn_t).
 * So that a training run with a new microbatch every step does not build a plan per step, b is the sample
 * count rounded up to a power of two (the extra entries have length 0 and start at the end of the stream)
 * and s is max_len rounded up to a power of two (at least 64); LORAGEN_CUDNN_EXACT_SHAPES=1 at lg_attn_init
 * uses the exact values instead. The cache keeps the 64 most recently used plans.
 *
 * Per call the backend writes the per-sample lengths and the ragged offsets (cu[i]·ld for each distinct row
 * stride, cu[i]·hq for the LSE) from the host copy of cu into a pinned staging slot and copies them to the
 * device on the call's stream (32 slots in turn, each guarded by an event: a slot is only rewritten once its
 * previous copy has run, so the host waits only if the device is 32 calls behind). The device buffer holds
 * those values, the backward's fp32 softmax_sum and dQ buffers and cuDNN's workspace; it grows on demand
 * (synchronising the stream only then), like the generated backend's workspace.
 *
 * Needs cuDNN >= 9.6 (ragged offsets with GQA and a ragged LSE). The LSE is cuDNN's Stats tensor as is: max +
 * log Σ exp of the scaled scores, natural log, per row and q head, the convention of lg_attention.h. The
 * backward is cuDNN's (dQ by fp32 atomics): LG_ATTN_DETERMINISTIC is refused. */
#include "attention_cudnn_graph.h"
#include "attention_internal.h"
#include "lg_base.h"
#include "lg_gpu.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PLANS 256 /* a trainer prepares every (samples, length) bucket of an epoch: lg_attn_prepare */
#define NSLOT 32

struct plan {
    struct lg_ops_dnn_shape key; /* the call's shape, as looked up */
    struct lg_ops_dnn_shape s;   /* the shape built: the key, or a fallback of it */
    struct lg_ops_dnn b; /* owns every descriptor of the graph and the plan */
    lg_dnn_t exec;
    int64_t ws;
    uint64_t used;
    char note[64];
};

struct lg_ops_attn_cudnn {
    const struct lg_cudnn_api *c;
    cudnnHandle_t handle;
    struct lg_attn_params p;
    int version, arch, exact;
    float scale, neg_inf, one; /* the by-value scalars: the variant pack points at these */
    struct plan *plans[MAX_PLANS];
    int nplans;
    uint64_t tick;
    CUdeviceptr dev;
    size_t dev_size;
    int32_t *pin;     /* NSLOT staging slots of slot_ints each */
    size_t slot_ints;
    CUevent ev[NSLOT];
    int ev_live[NSLOT], next_slot;
    int first_try[2]; /* per direction: the first fallback step worth trying (earlier ones were refused) */
    int stage_mode;   /* LORAGEN_CUDNN_STAGE: STAGE_NEVER, STAGE_MISMATCH, STAGE_AUTO (default), STAGE_ALWAYS */
    char last_note[128];
};

enum {
    STAGE_NEVER = LG_DNN_STAGE_NEVER,
    STAGE_MISMATCH = LG_DNN_STAGE_MISMATCH,
    STAGE_AUTO = LG_DNN_STAGE_AUTO,
    STAGE_ALWAYS = LG_DNN_STAGE_ALWAYS
}; /* which tensors go through packed copies: attention_cudnn_stage.c */

int lg_attn_cudnn_version(void)
{
    const struct lg_cudnn_api *c = lg_cudnn();
    return c ? (int)c->GetVersion() : 0;
}

/* ---- lifetime ---- */

enum lg_status lg_ops_attn_cudnn_init(const struct lg_attn_params *p, float scale, struct lg_ops_attn_cudnn **out)
{
    static const char *fn = "lg_attn_init (cuDNN backend)";
    *out = NULL;
    const struct lg_cudnn_api *c = lg_cudnn();
    if (!c)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: needs cuDNN 9: %s", fn, lg_cudnn_error());
    const int v = (int)c->GetVersion();
    if (v < 90600)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: cuDNN %d is loaded; ragged offsets with GQA and a packed LSE need "
                       "9.6 or later", fn, v);
    if (p->flags & LG_ATTN_DETERMINISTIC)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: cuDNN's backward accumulates dQ with atomics; the deterministic "
                       "mode needs LG_ATTN_GENERATED", fn);
    struct lg_ops_attn_cudnn *d = calloc(1, sizeof *d);
    if (!d)
        return lg_fail(LG_ERR_OOM, "%s: out of memory", fn);
    d->c = c, d->p = *p, d->version = v, d->scale = scale, d->one = 1.0f;
    /* cuDNN before 9.10 prefers the lowest float to -inf as the mask value (as cudnn-frontend does) */
    d->neg_inf = v < 91000 ? -FLT_MAX : -INFINITY;
    const char *ex = getenv("LORAGEN_CUDNN_EXACT_SHAPES");
    d->exact = ex && ex[0] && strcmp(ex, "0");
    const char *sm = getenv("LORAGEN_CUDNN_STAGE");
    d->stage_mode = STAGE_AUTO;
    if (sm && sm[0]) {
        if (!strcmp(sm, "never"))
            d->stage_mode = STAGE_NEVER;
        else if (!strcmp(sm, "mismatch"))
            d->stage_mode = STAGE_MISMATCH;
        else if (!strcmp(sm, "always"))
            d->stage_mode = STAGE_ALWAYS;
        else if (strcmp(sm, "auto")) {
            free(d);
            return lg_fail(LG_ERR_INVALID, "%s: LORAGEN_CUDNN_STAGE is '%s'; it takes auto, mismatch, never or "
                           "always", fn, sm);
        }
    }
    CUdevice dev;
    int major = 0, minor = 0;
    if (cuCtxGetDevice(&dev) == CUDA_SUCCESS) {
        cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
        cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev);
    }
    d->arch = major * 10 + minor;
    cudnnStatus_t s = c->Create(&d->handle);
    if (s != CUDNN_STATUS_SUCCESS) {
        d->handle = NULL;
        lg_cudnn_check(s, "cudnnCreate");
        lg_ops_attn_cudnn_free(d);
        return lg_fail_wrap(LG_ERR_UNSUPPORTED, "%s: cuDNN %d is loaded but gives no handle (is there a GPU?): ", fn,
                            v);
    }
    *out = d;
    return LG_OK;
}

static void plan_free(const struct lg_ops_attn_cudnn *d, struct plan *pl)
{
    (void)d;
    if (!pl)
        return;
    lg_ops_dnn_free(&pl->b);
    free(pl);
}

void lg_ops_attn_cudnn_free(struct lg_ops_attn_cudnn *d)
{
    if (!d)
        return;
    for (int i = 0; i < NSLOT; i++)
        if (d->ev[i]) {
            if (d->ev_live[i])
                cuEventSynchronize(d->ev[i]);
            cuEventDestroy(d->ev[i]);
        }
    for (int i = 0; i < d->nplans; i++)
        plan_free(d, d->plans[i]);
    if (d->pin)
        cuMemFreeHost(d->pin);
    if (d->dev)
        cuMemFree(d->dev);
    if (d->handle)
        d->c->Destroy(d->handle);
    free(d);
}

/* ---- shapes and plans ---- */

static int pow2_at_least(int x, int lo)
{
    int v = lo;
    while (v < x)
        v *= 2;
    return v;
}

/* The shape of a call (ld: the LG_DNN_LD_* row strides, zeros for tensors the direction does not use). */
enum lg_status lg_ops_attn_cudnn_shape(const struct lg_attn_params *p, int version, int arch, int exact, int bwd,
                                       const struct lg_attn_seqs *sq, const int64_t ld[LG_DNN_NLD],
                                       struct lg_ops_dnn_shape *s)
{
    memset(s, 0, sizeof *s); /* compared bytewise as the cache key */
    s->bwd = bwd, s->hq = p->hq, s->hkv = p->hkv, s->d = p->head_dim;
    s->type = p->dtype == LG_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
    s->b = exact ? sq->nseq : pow2_at_least(sq->nseq, 1);
    s->s = exact ? sq->max_len : pow2_at_least(sq->max_len, 64);
    memcpy(s->ld, ld, sizeof s->ld);
    lg_ops_dnn_shape_slots(s);
    s->thd_workspace = bwd && version >= 90600 && arch >= 90 && arch / 10 != 12;
    s->second_padding = bwd && version >= 90000 && version < 91000;
    int64_t biggest = (int64_t)p->hq;
    for (int i = 0; i < LG_DNN_NLD; i++)
        biggest = ld[i] > biggest ? ld[i] : biggest;
    if (sq->tokens * biggest >= INT32_MAX)
        return lg_fail(LG_ERR_UNSUPPORTED, "cuDNN attention: %lld tokens x row stride %lld overflow the int32 "
                       "ragged offsets", (long long)sq->tokens, (long long)biggest);
    return LG_OK;
}

static const char *dir_name(int bwd) { return bwd ? "backward" : "forward"; }

/* Builds the descriptors of s's graph into pl (no handle: stops, with its message, where one is needed). */
enum lg_status lg_ops_attn_cudnn_build(const struct lg_ops_dnn_shape *s, cudnnHandle_t handle, struct lg_ops_dnn *b,
                                       lg_dnn_t *exec, int64_t *ws, char *note, size_t note_size)
{
    lg_ops_dnn_init(b, lg_cudnn(), dir_name(s->bwd));
    lg_ops_dnn_sdpa_graph(b, s);
    enum lg_status st = lg_ops_dnn_plan(b, handle, exec, ws, note, note_size);
    if (st != LG_OK)
        return lg_fail_wrap(st, "b = %d, s = %d, heads %d/%d, d = %d, %s: ", s->b, s->s, s->hq, s->hkv, s->d,
                            s->type == CUDNN_DATA_BFLOAT16 ? "bf16" : "fp16");
    return LG_OK;
}

/* The fallback steps, tried in order while cuDNN refuses the graph (LG_ERR_UNSUPPORTED): 0 the shape as
 * is; 1 the backward's softmax_sum and dQ buffers padded per sample instead of packed; 2 also the Stats. */
#define NSTEPS 3
static int fallback(const struct lg_ops_dnn_shape *key, int step, struct lg_ops_dnn_shape *s)
{
    *s = *key;
    if (step >= 1) {
        if (!s->thd_workspace && step == 1)
            return 0; /* nothing to change: skip the step */
        s->thd_workspace = 0;
    }
    if (step >= 2) {
        s->padded_stats = 1;
        lg_ops_dnn_shape_slots(s);
    }
    return 1;
}

static enum lg_status find_plan(struct lg_ops_attn_cudnn *d, const struct lg_ops_dnn_shape *key, struct plan **out)
{
    for (int i = 0; i < d->nplans; i++)
        if (!memcmp(&d->plans[i]->key, key, sizeof *key)) {
            d->plans[i]->used = ++d->tick;
            *out = d->plans[i];
            return LG_OK;
        }
    struct plan *pl = calloc(1, sizeof *pl);
    if (!pl)
        return lg_fail(LG_ERR_OOM, "cuDNN attention: out of memory");
    memcpy(&pl->key, key, sizeof *key); /* bytewise, padding included: the lookup compares bytes */
    enum lg_status st = LG_ERR_UNSUPPORTED;
    char first[768] = "";
    for (int step = d->first_try[key->bwd]; step < NSTEPS && st == LG_ERR_UNSUPPORTED; step++) {
        if (!fallback(key, step, &pl->s))
            continue;
        st = lg_ops_attn_cudnn_build(&pl->s, d->handle, &pl->b, &pl->exec, &pl->ws, pl->note, sizeof pl->note);
        if (st == LG_OK) {
            d->first_try[key->bwd] = step; /* later shapes start here */
            if (step)
                snprintf(pl->note + strlen(pl->note), sizeof pl->note - strlen(pl->note), ", fallback %d", step);
            break;
        }
        if (!first[0])
            snprintf(first, sizeof first, "%s", lg_last_error());
        lg_ops_dnn_free(&pl->b);
    }
    if (st != LG_OK) {
        plan_free(d, pl);
        if (first[0] && strcmp(first, lg_last_error()))
            return lg_fail_wrap(st, "(first refusal, as given: %s) then, after the fallbacks: ", first);
        return st;
    }
    pl->used = ++d->tick;
    if (d->nplans == MAX_PLANS) { /* evict the least recently used */
        int lru = 0;
        for (int i = 1; i < d->nplans; i++)
            if (d->plans[i]->used < d->plans[lru]->used)
                lru = i;
        plan_free(d, d->plans[lru]);
        d->plans[lru] = d->plans[--d->nplans];
    }
    d->plans[d->nplans++] = pl;
    *out = pl;
    return LG_OK;
}

/* ---- per-call memory ---- */

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

/* Device layout of one call: lengths and offsets, then (backward) softmax_sum and the fp32 dQ, then the
 * engine's workspace. */
struct layout {
    size_t meta_ints, stats, ssum, dqacc, ws, total;
};

static void layout_of(const struct plan *pl, const struct lg_attn_seqs *sq, struct layout *L)
{
    const struct lg_ops_dnn_shape *s = &pl->s;
    L->meta_ints = (size_t)s->b + (size_t)s->nmult * (size_t)(s->b + 1);
    size_t at = align256(L->meta_ints * 4);
    L->stats = at;
    if (s->padded_stats)
        at += align256((size_t)s->b * s->hq * s->s * 4);
    size_t ssum_bytes = 0, dq_bytes = 0;
    if (s->bwd) {
        const int packed = s->thd_workspace && !s->padded_stats;
        ssum_bytes = packed ? (size_t)sq->tokens * s->hq * 4 : (size_t)s->b * s->hq * s->s * 4;
        /* packed by token with dQ's row stride; sized for Q's too where that is wider (only with
         * LORAGEN_CUDNN_STAGE=never: the engine may address it like Q, see the packed copies below) */
        const int64_t ldq = s->ld[LG_DNN_LD_DQ] > s->ld[LG_DNN_LD_Q] ? s->ld[LG_DNN_LD_DQ] : s->ld[LG_DNN_LD_Q];
        dq_bytes = s->thd_workspace ? (size_t)sq->tokens * (size_t)ldq * 4
                                    : (size_t)s->b * s->hq * s->s * (size_t)s->d * 4;
    }
    L->ssum = at, at += align256(ssum_bytes);
    L->dqacc = at, at += align256(dq_bytes);
    L->ws = at, at += align256((size_t)pl->ws);
    L->total = at;
}

static enum lg_status ensure_dev(struct lg_ops_attn_cudnn *d, size_t bytes, CUstream stream)
{
    if (bytes <= d->dev_size)
        return LG_OK;
    if (d->dev) {
        cuStreamSynchronize(stream); /* earlier calls may still use the old buffer */
        cuMemFree(d->dev);
        d->dev = 0, d->dev_size = 0;
    }
    bytes += bytes / 4;
    enum lg_status st = lg_cu_check(cuMemAlloc(&d->dev, bytes), "cuDNN attention workspace");
    if (st == LG_OK)
        d->dev_size = bytes;
    return st;
}

/* A pinned slot of at least n ints whose previous copy has run. */
static enum lg_status stage_slot(struct lg_ops_attn_cudnn *d, size_t n, int *slot)
{
    if (n > d->slot_ints) {
        for (int i = 0; i < NSLOT; i++)
            if (d->ev_live[i])
                cuEventSynchronize(d->ev[i]), d->ev_live[i] = 0;
        if (d->pin)
            cuMemFreeHost(d->pin), d->pin = NULL;
        size_t want = n < 1024 ? 1024 : n * 2;
        enum lg_status st = lg_cu_check(cuMemAllocHost((void **)&d->pin, want * NSLOT * 4), "cuDNN staging");
        if (st != LG_OK) {
            d->slot_ints = 0;
            return st;
        }
        d->slot_ints = want;
    }
    const int i = d->next_slot;
    d->next_slot = (i + 1) % NSLOT;
    if (!d->ev[i]) {
        enum lg_status st = lg_cu_check(cuEventCreate(&d->ev[i], CU_EVENT_DISABLE_TIMING), "cuDNN staging event");
        if (st != LG_OK)
            return st;
    }
    if (d->ev_live[i])
        cuEventSynchronize(d->ev[i]);
    d->ev_live[i] = 0;
    *slot = i;
    return LG_OK;
}

/* Lengths (b, zero past nseq) then for each multiplier m the b+1 offsets cu[min(i, nseq)]·m. */
void lg_ops_attn_cudnn_meta(const struct lg_ops_dnn_shape *s, const struct lg_attn_seqs *sq, int32_t *out)
{
    for (int i = 0; i < s->b; i++)
        out[i] = i < sq->nseq ? sq->cu_host[i + 1] - sq->cu_host[i] : 0;
    for (int m = 0; m < s->nmult; m++)
        for (int i = 0; i <= s->b; i++)
            out[s->b + m * (s->b + 1) + i] = (int32_t)(sq->cu_host[i < sq->nseq ? i : sq->nseq] * s->mult[m]);
}

/* ---- execution ---- */

struct binding {
    int64_t uid[40];
    void *ptr[40];
    int n;
};

static void bind(struct binding *v, int64_t uid, void *p) { v->uid[v->n] = uid, v->ptr[v->n++] = p; }

/* The padded-Stats fallback: sample i's rows of the padded [b, s, hq] buffer to or from its rows of the LSE. */
static enum lg_status copy_stats(const struct lg_ops_dnn_shape *s, const struct lg_attn_seqs *sq, CUdeviceptr padded,
                                 CUdeviceptr lse, int to_padded, CUstream stream)
{
    for (int i = 0; i < sq->nseq; i++) {
        const CUdeviceptr p = padded + (CUdeviceptr)((size_t)i * s->s * s->hq * 4);
        const CUdeviceptr l = lse + (CUdeviceptr)((size_t)sq->cu_host[i] * s->hq * 4);
        const size_t bytes = (size_t)(sq->cu_host[i + 1] - sq->cu_host[i]) * s->hq * 4;
        enum lg_status st = lg_cu_check(to_padded ? cuMemcpyDtoDAsync(p, l, bytes, stream)
                                                  : cuMemcpyDtoDAsync(l, p, bytes, stream),
                                        "cuDNN attention: LSE copy (padded Stats fallback)");
        if (st != LG_OK)
            return st;
    }
    return LG_OK;
}

/* What a call of these samples and row strides runs: the staged tensors (mask; ld, the strides cuDNN sees), its
 * plan (found or built) and its device memory (the layout, then each staged copy at stage_at). */
static enum lg_status call_plan(struct lg_ops_attn_cudnn *d, int bwd, const struct lg_attn_seqs *sq,
                                const int64_t ld_call[LG_DNN_NLD], unsigned *mask, int64_t ld[LG_DNN_NLD],
                                struct plan **pl, struct layout *L, size_t stage_at[LG_DNN_NLD])
{
    *mask = lg_ops_attn_cudnn_stage_mask(&d->p, d->stage_mode, bwd, ld_call);
    for (int i = 0; i < LG_DNN_NLD; i++)
        ld[i] = *mask >> i & 1 ? lg_ops_attn_cudnn_packed_width(&d->p, i) : ld_call[i];
    struct lg_ops_dnn_shape key;
    enum lg_status st = lg_ops_attn_cudnn_shape(&d->p, d->version, d->arch, d->exact, bwd, sq, ld, &key);
    if (st == LG_OK)
        st = find_plan(d, &key, pl);
    if (st != LG_OK)
        return st;
    layout_of(*pl, sq, L);
    for (int i = 0; i < LG_DNN_NLD; i++) {
        stage_at[i] = 0;
        if (*mask >> i & 1) {
            stage_at[i] = L->total;
            L->total += align256((size_t)sq->tokens * (size_t)ld[i] * lg_dtype_size(d->p.dtype));
        }
    }
    return LG_OK;
}

static enum lg_status run(struct lg_ops_attn_cudnn *d, const char *fn, int bwd, const struct lg_attn_seqs *sq,
                          const int64_t ld_call[LG_DNN_NLD], const CUdeviceptr ptr_call[LG_DNN_NLD], CUdeviceptr lse,
                          CUstream stream)
{
    /* the layout cuDNN sees: staged tensors packed */
    unsigned mask;
    int64_t ld[LG_DNN_NLD];
    CUdeviceptr ptr[LG_DNN_NLD];
    for (int i = 0; i < LG_DNN_NLD; i++)
        ptr[i] = ptr_call[i];
    struct plan *pl = NULL;
    struct layout L;
    size_t stage_at[LG_DNN_NLD];
    enum lg_status st = call_plan(d, bwd, sq, ld_call, &mask, ld, &pl, &L, stage_at);
    if (st != LG_OK)
        return lg_fail_wrap(st, "%s: ", fn);
    const struct lg_ops_dnn_shape s = pl->s; /* as built (a fallback may differ from the key) */
    snprintf(d->last_note, sizeof d->last_note, "b %d s %d, %s", s.b, s.s, pl->note);
    if (mask) {
        size_t nl = strlen(d->last_note);
        nl += (size_t)snprintf(d->last_note + nl, sizeof d->last_note - nl, ", packed copies:");
        for (int i = 0; i < LG_DNN_NLD && nl < sizeof d->last_note; i++)
            if (mask >> i & 1)
                nl += (size_t)snprintf(d->last_note + nl, sizeof d->last_note - nl, " %s",
                                       lg_ops_attn_cudnn_ld_name(i));
    }
    int slot = 0;
    if ((st = ensure_dev(d, L.total, stream)) != LG_OK || (st = stage_slot(d, L.meta_ints, &slot)) != LG_OK)
        return lg_fail_wrap(st, "%s: ", fn);
    int32_t *meta = d->pin + (size_t)slot * d->slot_ints;
    lg_ops_attn_cudnn_meta(&s, sq, meta);
    st = lg_cu_check(cuMemcpyHtoDAsync(d->dev, meta, L.meta_ints * 4, stream), "cuDNN attention: offsets upload");
    if (st == LG_OK)
        st = lg_cu_check(cuEventRecord(d->ev[slot], stream), "cuDNN attention: staging event");
    if (st != LG_OK)
        return lg_fail_wrap(st, "%s: ", fn);
    d->ev_live[slot] = 1;
    for (int i = 0; i < LG_DNN_NLD; i++)
        if (mask >> i & 1)
            ptr[i] = d->dev + (CUdeviceptr)stage_at[i];
    if (mask)
        st = lg_ops_attn_cudnn_stage_copies(&d->p, bwd, mask, 0, ld_call, ptr_call, ptr, sq->tokens, stream);
    if (st != LG_OK)
        return lg_fail_wrap(st, "%s: ", fn);

    struct binding v = {.n = 0};
    static const int64_t uid_of[LG_DNN_NLD] = {
        [LG_DNN_LD_Q] = LG_DNN_Q,   [LG_DNN_LD_K] = LG_DNN_K,   [LG_DNN_LD_V] = LG_DNN_V,   [LG_DNN_LD_O] = LG_DNN_O,
        [LG_DNN_LD_DO] = LG_DNN_DO, [LG_DNN_LD_DQ] = LG_DNN_DQ, [LG_DNN_LD_DK] = LG_DNN_DK, [LG_DNN_LD_DV] = LG_DNN_DV};
    for (int i = 0; i < LG_DNN_NLD; i++)
        if (ld[i])
            bind(&v, uid_of[i], (void *)ptr[i]);
    const CUdeviceptr stats = s.padded_stats ? d->dev + L.stats : lse;
    bind(&v, LG_DNN_STATS, (void *)stats);
    bind(&v, LG_DNN_SEQ_Q, (void *)d->dev), bind(&v, LG_DNN_SEQ_KV, (void *)d->dev);
    for (int m = 0; m < s.nmult; m++)
        bind(&v, LG_DNN_OFFSET0 + m, (void *)(d->dev + (CUdeviceptr)(4 * ((size_t)s.b + (size_t)m * (s.b + 1)))));
    bind(&v, LG_DNN_SCALE, &d->scale), bind(&v, LG_DNN_NEG_INF, &d->neg_inf);
    if (bwd) {
        bind(&v, LG_DNN_ONE, &d->one);
        bind(&v, LG_DNN_SOFTMAX_SUM, (void *)(d->dev + L.ssum)), bind(&v, LG_DNN_DQ_ACC, (void *)(d->dev + L.dqacc));
    }
    void *ws = pl->ws ? (void *)(d->dev + L.ws) : NULL;
    if (s.padded_stats && bwd && (st = copy_stats(&s, sq, stats, lse, 1, stream)) != LG_OK)
        return lg_fail_wrap(st, "%s: ", fn);

    lg_dnn_t pack = NULL;
    cudnnStatus_t cs = d->c->BackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
    const char *what = "cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)";
    if (cs == CUDNN_STATUS_SUCCESS) {
        what = "variant pack: CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS";
        cs = d->c->BackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, v.n, v.uid);
    }
    if (cs == CUDNN_STATUS_SUCCESS) {
        what = "variant pack: CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS";
        cs = d->c->BackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, v.n, v.ptr);
    }
    if (cs == CUDNN_STATUS_SUCCESS) {
        what = "variant pack: CUDNN_ATTR_VARIANT_PACK_WORKSPACE";
        cs = d->c->BackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    }
    if (cs == CUDNN_STATUS_SUCCESS)
        what = "variant pack: cudnnBackendFinalize", cs = d->c->BackendFinalize(pack);
    if (cs == CUDNN_STATUS_SUCCESS)
        what = "cudnnSetStream", cs = d->c->SetStream(d->handle, (cudaStream_t)stream);
    if (cs == CUDNN_STATUS_SUCCESS)
        what = "cudnnBackendExecute", cs = d->c->BackendExecute(d->handle, pl->exec, pack);
    if (pack)
        d->c->BackendDestroyDescriptor(pack);
    if (cs != CUDNN_STATUS_SUCCESS) {
        char w[192];
        snprintf(w, sizeof w, "%s: cuDNN %s graph (b %d, s %d, %s, workspace %lld bytes): %s", fn, dir_name(bwd), s.b,
                 s.s, pl->note, (long long)pl->ws, what);
        return lg_cudnn_check(cs, w);
    }
    if (s.padded_stats && !bwd && (st = copy_stats(&s, sq, stats, lse, 0, stream)) != LG_OK)
        return lg_fail_wrap(st, "%s: ", fn);
    if (mask)
        st = lg_ops_attn_cudnn_stage_copies(&d->p, bwd, mask, 1, ld_call, ptr_call, ptr, sq->tokens, stream);
    if (st != LG_OK)
        return lg_fail_wrap(st, "%s: ", fn);
    return LG_OK;
}

static void fwd_strides(const struct lg_attn_fwd *f, int64_t ld[LG_DNN_NLD])
{
    memset(ld, 0, sizeof(int64_t) * LG_DNN_NLD);
    ld[LG_DNN_LD_Q] = f->ldq, ld[LG_DNN_LD_K] = f->ldk, ld[LG_DNN_LD_V] = f->ldv, ld[LG_DNN_LD_O] = f->ldo;
}

static void bwd_strides(const struct lg_attn_bwd *b, int64_t ld[LG_DNN_NLD])
{
    memset(ld, 0, sizeof(int64_t) * LG_DNN_NLD);
    ld[LG_DNN_LD_Q] = b->ldq, ld[LG_DNN_LD_K] = b->ldk, ld[LG_DNN_LD_V] = b->ldv, ld[LG_DNN_LD_O] = b->ldo;
    ld[LG_DNN_LD_DO] = b->lddo, ld[LG_DNN_LD_DQ] = b->lddq, ld[LG_DNN_LD_DK] = b->lddk, ld[LG_DNN_LD_DV] = b->lddv;
}

enum lg_status lg_ops_attn_cudnn_forward(struct lg_ops_attn_cudnn *d, const struct lg_attn_fwd *f, CUstream stream)
{
    int64_t ld[LG_DNN_NLD];
    CUdeviceptr ptr[LG_DNN_NLD] = {0};
    fwd_strides(f, ld);
    ptr[LG_DNN_LD_Q] = f->q, ptr[LG_DNN_LD_K] = f->k, ptr[LG_DNN_LD_V] = f->v, ptr[LG_DNN_LD_O] = f->o;
    return run(d, "lg_attn_forward", 0, &f->seqs, ld, ptr, f->lse, stream);
}

enum lg_status lg_ops_attn_cudnn_prepare(struct lg_ops_attn_cudnn *d, const struct lg_attn_fwd *f,
                                         const struct lg_attn_bwd *b, CUstream stream)
{
    for (int bwd = 0; bwd < 2; bwd++) {
        if (bwd ? !b : !f)
            continue;
        int64_t ld_call[LG_DNN_NLD], ld[LG_DNN_NLD];
        bwd ? bwd_strides(b, ld_call) : fwd_strides(f, ld_call);
        unsigned mask;
        struct plan *pl;
        struct layout L;
        size_t stage_at[LG_DNN_NLD];
        enum lg_status st = call_plan(d, bwd, bwd ? &b->seqs : &f->seqs, ld_call, &mask, ld, &pl, &L, stage_at);
        if (st == LG_OK)
            st = ensure_dev(d, L.total, stream);
        if (st != LG_OK)
            return lg_fail_wrap(st, "lg_attn_prepare (%s): ", dir_name(bwd));
    }
    return LG_OK;
}

enum lg_status lg_ops_attn_cudnn_backward(struct lg_ops_attn_cudnn *d, const struct lg_attn_bwd *b, CUstream stream)
{
    int64_t ld[LG_DNN_NLD];
    bwd_strides(b, ld);
    const CUdeviceptr ptr[LG_DNN_NLD] = {[LG_DNN_LD_Q] = b->q,   [LG_DNN_LD_K] = b->k,   [LG_DNN_LD_V] = b->v,
                                      [LG_DNN_LD_O] = b->o,   [LG_DNN_LD_DO] = b->dout, [LG_DNN_LD_DQ] = b->dq,
                                      [LG_DNN_LD_DK] = b->dk, [LG_DNN_LD_DV] = b->dv};
    return run(d, "lg_attn_backward", 1, &b->seqs, ld, ptr, b->lse, stream);
}

const char *lg_ops_attn_cudnn_note(const struct lg_ops_attn_cudnn *d) { return d ? d->last_note : ""; }
