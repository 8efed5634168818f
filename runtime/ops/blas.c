/* blas.c: row-major bf16/fp16 GEMMs on column-major cuBLASLt, with a per-shape plan cache.
 *
 * The mapping: a row-major matrix X[r,c] with row stride ld is, byte for byte, the column-major matrix Xᵀ[c,r]
 * with the same ld. So row-major C[m,n] = op(A)·op(B) is column-major Cᵀ[n,m] = op(B)ᵀ·op(A)ᵀ, and we call
 * cuBLASLt with the operands swapped (our B as its A, our A as its B), dims (n, m, k), each operand keeping its
 * own transpose flag. cuBLASLt's bias runs along the rows of its column-major D (length n), which is exactly
 * "one value per column of our row-major C".
 *
 * Descriptors, layouts and the heuristic's algorithm choice cost microseconds of host time and allocations,
 * so they are made once per distinct problem (the plan) and kept in a small open-addressing hash table. */
#include "lg_blas.h"
#include "lg_base.h"
#include "lg_gpu.h"

#include <cublasLt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How many heuristic candidates we ask for; algo_index picks among them (the tuner times each). */
#define LG_BLAS_MAX_ALGOS 8

/* Everything that changes which descriptors or which algorithm are valid. memset to zero before filling so
 * padding bytes compare equal under memcmp. */
struct lg_plan_key {
    int64_t m, n, k, lda, ldb, ldc;
    int32_t dtype, trans_a, trans_b, has_bias, beta_zero, algo_index;
    /* Pointer alignment classes (power of two, capped at 256): cuBLASLt picks kernels assuming at least this
     * alignment, so a plan chosen for 256-byte pointers must not serve a 16-byte-aligned view. */
    uint16_t align_a, align_b, align_c, align_bias;
};

struct lg_plan {
    struct lg_plan_key key;
    uint64_t hash;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t lay_a, lay_b, lay_c; /* of OUR A, B, C (cuBLASLt sees B, A, C; C doubles as D) */
    cublasLtMatmulHeuristicResult_t heur;
    int n_algos;
};

struct lg_blas {
    cublasLtHandle_t lt;
    CUcontext ctx; /* current at init; the workspace lives there */
    CUdeviceptr ws;
    size_t ws_bytes;
    struct lg_plan **slots; /* open addressing, linear probing; cap is a power of two */
    unsigned cap, count;
};

/* ---- validation (no GPU) ---- */

static enum lg_status check_dtype(const struct lg_gemm *g)
{
    if (g->dtype == LG_BF16 || g->dtype == LG_FP16)
        return LG_OK;
    if (g->dtype == LG_FP32)
        return lg_fail(LG_ERR_UNSUPPORTED, "lg_blas_gemm: dtype fp32 is not supported (bf16 or fp16 only)");
    return lg_fail(LG_ERR_INVALID, "lg_blas_gemm: dtype=%d is not a valid lg_dtype", (int)g->dtype);
}

static enum lg_status check_scalars(const struct lg_gemm *g)
{
    const struct { const char *name; int64_t v; } dims[] = {{"m", g->m}, {"n", g->n}, {"k", g->k}};
    for (int i = 0; i < 3; i++)
        if (dims[i].v <= 0)
            return lg_fail(LG_ERR_INVALID, "lg_blas_gemm: %s=%" PRId64 " must be positive", dims[i].name,
                           dims[i].v);
    /* Only 0/1 so that equal problems hash equally. */
    if (g->trans_a != 0 && g->trans_a != 1)
        return lg_fail(LG_ERR_INVALID, "lg_blas_gemm: trans_a=%d must be 0 or 1", g->trans_a);
    if (g->trans_b != 0 && g->trans_b != 1)
        return lg_fail(LG_ERR_INVALID, "lg_blas_gemm: trans_b=%d must be 0 or 1", g->trans_b);
    if (g->algo_index < 0 || g->algo_index >= LG_BLAS_MAX_ALGOS)
        return lg_fail(LG_ERR_INVALID, "lg_blas_gemm: algo_index=%d must be in [0, %d)", g->algo_index,
                       LG_BLAS_MAX_ALGOS);
    return LG_OK;
}

/* 16 bytes: what TMA and the vectorised loads of cuBLASLt's fast Hopper kernels need. */
static enum lg_status check_ptr(const char *name, const void *p, int required)
{
    if (!p)
        return required ? lg_fail(LG_ERR_INVALID, "lg_blas_gemm: pointer %s is NULL", name) : LG_OK;
    if ((uintptr_t)p % 16)
        return lg_fail(LG_ERR_INVALID, "lg_blas_gemm: pointer %s=%p is not 16-byte aligned", name, p);
    return LG_OK;
}

static enum lg_status check_pointers(const struct lg_gemm *g)
{
    enum lg_status s;
    if ((s = check_ptr("a", g->a, 1)) || (s = check_ptr("b", g->b, 1)) || (s = check_ptr("c", g->c, 1)) ||
        (s = check_ptr("bias", g->bias, 0)))
        return s;
    return LG_OK;
}

/* One operand as stored, row-major [rows, cols] in problem letters (e.g. "k","m" for a transposed A): ld must
 * reach past a row, and a row stride in bytes must keep every row 16-byte aligned. */
struct lg_ld_check {
    const char *ld_name, *op, *row_name, *col_name, *note;
    int64_t ld, rows, cols;
};

static enum lg_status check_ld(const struct lg_ld_check *c, size_t esize)
{
    if (c->ld < c->cols)
        return lg_fail(LG_ERR_INVALID,
                       "lg_blas_gemm: %s=%" PRId64 " is less than %s=%" PRId64 ", the row length of %s stored "
                       "row-major as [%s,%s] = [%" PRId64 ",%" PRId64 "]%s",
                       c->ld_name, c->ld, c->col_name, c->cols, c->op, c->row_name, c->col_name, c->rows, c->cols,
                       c->note);
    if ((uint64_t)c->ld * esize % 16)
        return lg_fail(LG_ERR_INVALID,
                       "lg_blas_gemm: %s=%" PRId64 " (%" PRIu64 " bytes) is not a multiple of 16 bytes", c->ld_name,
                       c->ld, (uint64_t)c->ld * esize);
    return LG_OK;
}

static enum lg_status check_lds(const struct lg_gemm *g)
{
    size_t es = lg_dtype_size(g->dtype);
    const struct lg_ld_check a[2] = {{"lda", "A", "m", "k", "", g->lda, g->m, g->k},
                                     {"lda", "A", "k", "m", " (trans_a=1)", g->lda, g->k, g->m}};
    const struct lg_ld_check b[2] = {{"ldb", "B", "k", "n", "", g->ldb, g->k, g->n},
                                     {"ldb", "B", "n", "k", " (trans_b=1)", g->ldb, g->n, g->k}};
    const struct lg_ld_check c = {"ldc", "C", "m", "n", "", g->ldc, g->m, g->n};
    enum lg_status s;
    if ((s = check_ld(&a[g->trans_a], es)) || (s = check_ld(&b[g->trans_b], es)) || (s = check_ld(&c, es)))
        return s;
    return LG_OK;
}

enum lg_status lg_gemm_validate(const struct lg_gemm *g)
{
    if (!g)
        return lg_fail(LG_ERR_INVALID, "lg_blas_gemm: problem is NULL");
    enum lg_status s;
    if ((s = check_dtype(g)) || (s = check_scalars(g)) || (s = check_pointers(g)) || (s = check_lds(g)))
        return s;
    return LG_OK;
}

/* ---- errors ---- */

static void describe(const struct lg_gemm *g, char *buf, size_t size)
{
    snprintf(buf, size,
             "%s m=%" PRId64 " n=%" PRId64 " k=%" PRId64 " op=%c%c lda=%" PRId64 " ldb=%" PRId64 " ldc=%" PRId64
             "%s",
             lg_dtype_name(g->dtype), g->m, g->n, g->k, g->trans_a ? 'T' : 'N', g->trans_b ? 'T' : 'N', g->lda,
             g->ldb, g->ldc, g->bias ? " +bias" : "");
}

static enum lg_status lt_fail(cublasStatus_t st, const char *what, const struct lg_gemm *g)
{
    char shape[192];
    describe(g, shape, sizeof shape);
    return lg_fail(LG_ERR_CUBLAS, "lg_blas_gemm: %s failed for %s: %s (%s, status %d)", what, shape,
                   cublasLtGetStatusName(st), cublasLtGetStatusString(st), (int)st);
}

static enum lg_status cu_fail(CUresult r, const char *what)
{
    const char *name = NULL;
    cuGetErrorName(r, &name);
    enum lg_status s = r == CUDA_ERROR_OUT_OF_MEMORY ? LG_ERR_OOM : LG_ERR_CUDA;
    return lg_fail(s, "%s failed: %s (%d)", what, name ? name : "unknown CUDA error", (int)r);
}

/* ---- plan keys and the hash table ---- */

static uint16_t align_class(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    if (!v)
        return 0;
    uintptr_t low = v & (~v + 1); /* lowest set bit */
    return (uint16_t)(low > 256 ? 256 : low);
}

static void make_key(const struct lg_gemm *g, struct lg_plan_key *key)
{
    memset(key, 0, sizeof *key);
    key->m = g->m, key->n = g->n, key->k = g->k;
    key->lda = g->lda, key->ldb = g->ldb, key->ldc = g->ldc;
    key->dtype = g->dtype, key->trans_a = g->trans_a, key->trans_b = g->trans_b;
    key->has_bias = g->bias != NULL;
    /* beta==0 means C is never read; the tuner's best algorithm can differ when it is, so keep them apart. */
    key->beta_zero = g->beta == 0.0f;
    key->algo_index = g->algo_index;
    key->align_a = align_class(g->a), key->align_b = align_class(g->b), key->align_c = align_class(g->c);
    key->align_bias = align_class(g->bias);
}

static uint64_t key_hash(const struct lg_plan_key *key)
{
    const unsigned char *p = (const unsigned char *)key;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < sizeof *key; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static struct lg_plan *table_find(const lg_blas_t *blas, const struct lg_plan_key *key, uint64_t h)
{
    if (!blas->cap)
        return NULL;
    for (unsigned i = (unsigned)h & (blas->cap - 1);; i = (i + 1) & (blas->cap - 1)) {
        struct lg_plan *p = blas->slots[i];
        if (!p)
            return NULL;
        if (p->hash == h && memcmp(&p->key, key, sizeof *key) == 0)
            return p;
    }
}

static void table_put(struct lg_plan **slots, unsigned cap, struct lg_plan *p)
{
    unsigned i = (unsigned)p->hash & (cap - 1);
    while (slots[i])
        i = (i + 1) & (cap - 1);
    slots[i] = p;
}

/* Keeps the load factor at or below 1/2 so probes stay short and a free slot always exists. */
static enum lg_status table_insert(lg_blas_t *blas, struct lg_plan *p)
{
    if (2 * (blas->count + 1) > blas->cap) {
        unsigned cap = blas->cap ? 2 * blas->cap : 16;
        struct lg_plan **slots = calloc(cap, sizeof *slots);
        if (!slots)
            return lg_fail(LG_ERR_OOM, "lg_blas_gemm: out of host memory for the plan cache");
        for (unsigned i = 0; i < blas->cap; i++)
            if (blas->slots[i])
                table_put(slots, cap, blas->slots[i]);
        free(blas->slots);
        blas->slots = slots;
        blas->cap = cap;
    }
    table_put(blas->slots, blas->cap, p);
    blas->count++;
    return LG_OK;
}

/* ---- plan creation ---- */

static void plan_destroy(struct lg_plan *p)
{
    if (!p)
        return;
    if (p->lay_a)
        cublasLtMatrixLayoutDestroy(p->lay_a);
    if (p->lay_b)
        cublasLtMatrixLayoutDestroy(p->lay_b);
    if (p->lay_c)
        cublasLtMatrixLayoutDestroy(p->lay_c);
    if (p->desc)
        cublasLtMatmulDescDestroy(p->desc);
    free(p);
}

static cudaDataType_t lt_dtype(enum lg_dtype t) { return t == LG_BF16 ? CUDA_R_16BF : CUDA_R_16F; }

/* The swapped operation: cuBLASLt's A is our B (transa = trans_b), its B is our A (transb = trans_a). */
static cublasStatus_t desc_create(const struct lg_gemm *g, cublasLtMatmulDesc_t *out)
{
    cublasStatus_t st = cublasLtMatmulDescCreate(out, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (st)
        return st;
    int32_t pmode = CUBLASLT_POINTER_MODE_HOST;
    int32_t ta = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    int32_t tb = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    st = cublasLtMatmulDescSetAttribute(*out, CUBLASLT_MATMUL_DESC_POINTER_MODE, &pmode, sizeof pmode);
    if (!st)
        st = cublasLtMatmulDescSetAttribute(*out, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    if (!st)
        st = cublasLtMatmulDescSetAttribute(*out, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    if (st || !g->bias)
        return st;
    /* The bias pointer is set here too: the heuristic reads its value to infer the bias alignment. */
    uint32_t epi = CUBLASLT_EPILOGUE_BIAS;
    int32_t bias_type = lt_dtype(g->dtype);
    st = cublasLtMatmulDescSetAttribute(*out, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
    if (!st)
        st = cublasLtMatmulDescSetAttribute(*out, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                            sizeof bias_type);
    if (!st)
        st = cublasLtMatmulDescSetAttribute(*out, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias, sizeof g->bias);
    return st;
}

/* Column-major layouts of the stored buffers: a row-major [r,c] buffer is a column-major [c,r] one. */
static cublasStatus_t layouts_create(const struct lg_gemm *g, struct lg_plan *p)
{
    cudaDataType_t t = lt_dtype(g->dtype);
    uint64_t m = (uint64_t)g->m, n = (uint64_t)g->n, k = (uint64_t)g->k;
    /* our A: row-major [m,k] (col-major [k,m]) or, transposed, row-major [k,m] (col-major [m,k]) */
    cublasStatus_t st = g->trans_a ? cublasLtMatrixLayoutCreate(&p->lay_a, t, m, k, g->lda)
                                   : cublasLtMatrixLayoutCreate(&p->lay_a, t, k, m, g->lda);
    if (st)
        return st;
    /* our B: row-major [k,n] (col-major [n,k]) or, transposed, row-major [n,k] (col-major [k,n]) */
    st = g->trans_b ? cublasLtMatrixLayoutCreate(&p->lay_b, t, k, n, g->ldb)
                    : cublasLtMatrixLayoutCreate(&p->lay_b, t, n, k, g->ldb);
    if (st)
        return st;
    /* our C: row-major [m,n] = col-major [n,m] */
    return cublasLtMatrixLayoutCreate(&p->lay_c, t, n, m, g->ldc);
}

static cublasStatus_t pref_create(const lg_blas_t *blas, const struct lg_plan_key *key,
                                  cublasLtMatmulPreference_t *out)
{
    cublasStatus_t st = cublasLtMatmulPreferenceCreate(out);
    if (st)
        return st;
    uint64_t ws = blas->ws_bytes;
    /* cuBLASLt's A/B are our B/A; its C and D are both our C. */
    uint32_t al[4] = {key->align_b, key->align_a, key->align_c, key->align_c};
    const cublasLtMatmulPreferenceAttributes_t attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    st = cublasLtMatmulPreferenceSetAttribute(*out, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    for (int i = 0; i < 4 && !st; i++)
        st = cublasLtMatmulPreferenceSetAttribute(*out, attr[i], &al[i], sizeof al[i]);
    return st;
}

/* Asks the heuristic for up to LG_BLAS_MAX_ALGOS candidates and keeps the one algo_index names. */
static enum lg_status choose_algo(lg_blas_t *blas, const struct lg_gemm *g, struct lg_plan *p)
{
    cublasLtMatmulPreference_t pref = NULL;
    cublasStatus_t st = pref_create(blas, &p->key, &pref);
    if (st) {
        if (pref)
            cublasLtMatmulPreferenceDestroy(pref);
        return lt_fail(st, "creating the matmul preference", g);
    }
    cublasLtMatmulHeuristicResult_t res[LG_BLAS_MAX_ALGOS];
    int got = 0;
    memset(res, 0, sizeof res);
    st = cublasLtMatmulAlgoGetHeuristic(blas->lt, p->desc, p->lay_b, p->lay_a, p->lay_c, p->lay_c, pref,
                                        LG_BLAS_MAX_ALGOS, res, &got);
    cublasLtMatmulPreferenceDestroy(pref);
    /* NOT_SUPPORTED is how the heuristic says "no algorithm"; treat it like an empty answer. */
    if (st && st != CUBLAS_STATUS_NOT_SUPPORTED)
        return lt_fail(st, "cublasLtMatmulAlgoGetHeuristic", g);
    int n = 0;
    for (int i = 0; i < got && !st; i++)
        if (res[i].state == CUBLAS_STATUS_SUCCESS)
            res[n++] = res[i];
    char shape[192];
    describe(g, shape, sizeof shape);
    if (n == 0)
        return lg_fail(LG_ERR_CUBLAS,
                       "lg_blas_gemm: cuBLASLt has no algorithm for %s (workspace %zu bytes, alignments a=%u b=%u "
                       "c=%u bytes)",
                       shape, blas->ws_bytes, p->key.align_a, p->key.align_b, p->key.align_c);
    if (g->algo_index >= n)
        return lg_fail(LG_ERR_INVALID, "lg_blas_gemm: algo_index=%d but cuBLASLt offers %d algorithm%s for %s",
                       g->algo_index, n, n == 1 ? "" : "s", shape);
    p->heur = res[g->algo_index];
    p->n_algos = n;
    return LG_OK;
}

static enum lg_status plan_create(lg_blas_t *blas, const struct lg_gemm *g, const struct lg_plan_key *key,
                                  uint64_t h, struct lg_plan **out)
{
    struct lg_plan *p = calloc(1, sizeof *p);
    if (!p)
        return lg_fail(LG_ERR_OOM, "lg_blas_gemm: out of host memory for a plan");
    p->key = *key;
    p->hash = h;
    enum lg_status s = LG_OK;
    cublasStatus_t st = desc_create(g, &p->desc);
    if (st)
        s = lt_fail(st, "creating the matmul descriptor", g);
    else if ((st = layouts_create(g, p)))
        s = lt_fail(st, "creating the matrix layouts", g);
    else
        s = choose_algo(blas, g, p);
    if (!s)
        s = table_insert(blas, p);
    if (s) {
        plan_destroy(p);
        return s;
    }
    *out = p;
    return LG_OK;
}

static enum lg_status plan_get(lg_blas_t *blas, const struct lg_gemm *g, struct lg_plan **out)
{
    struct lg_plan_key key;
    make_key(g, &key);
    uint64_t h = key_hash(&key);
    struct lg_plan *p = table_find(blas, &key, h);
    if (p) {
        *out = p;
        return LG_OK;
    }
    return plan_create(blas, g, &key, h, out);
}

/* ---- public API ---- */

enum lg_status lg_blas_init(size_t workspace_bytes, lg_blas_t **out)
{
    if (!out)
        return lg_fail(LG_ERR_INVALID, "lg_blas_init: out is NULL");
    *out = NULL;
    CUcontext ctx = NULL;
    CUresult r = cuCtxGetCurrent(&ctx);
    if (r != CUDA_SUCCESS)
        return cu_fail(r, "lg_blas_init: cuCtxGetCurrent");
    if (!ctx)
        return lg_fail(LG_ERR_CUDA, "lg_blas_init: no current CUDA context (make one current first)");
    lg_blas_t *blas = calloc(1, sizeof *blas);
    if (!blas)
        return lg_fail(LG_ERR_OOM, "lg_blas_init: out of host memory");
    cublasStatus_t st = cublasLtCreate(&blas->lt);
    if (st) {
        free(blas);
        return lg_fail(LG_ERR_CUBLAS, "lg_blas_init: cublasLtCreate failed: %s (%s)", cublasLtGetStatusName(st),
                       cublasLtGetStatusString(st));
    }
    if (workspace_bytes) {
        r = cuMemAlloc(&blas->ws, workspace_bytes);
        if (r != CUDA_SUCCESS) {
            cublasLtDestroy(blas->lt);
            free(blas);
            return cu_fail(r, "lg_blas_init: cuMemAlloc of the cuBLASLt workspace");
        }
    }
    blas->ws_bytes = workspace_bytes;
    blas->ctx = ctx;
    *out = blas;
    return LG_OK;
}

void lg_blas_free(lg_blas_t *blas)
{
    if (!blas)
        return;
    for (unsigned i = 0; i < blas->cap; i++)
        plan_destroy(blas->slots[i]);
    free(blas->slots);
    /* The workspace belongs to the init-time context, whichever is current now; if that context is already
     * gone, so is the allocation. */
    if (blas->ws && cuCtxPushCurrent(blas->ctx) == CUDA_SUCCESS) {
        cuMemFree(blas->ws);
        cuCtxPopCurrent(NULL);
    }
    cublasLtDestroy(blas->lt);
    free(blas);
}

enum lg_status lg_blas_gemm(lg_blas_t *blas, const struct lg_gemm *g, CUstream stream)
{
    if (!blas)
        return lg_fail(LG_ERR_INVALID, "lg_blas_gemm: blas handle is NULL");
    enum lg_status s = lg_gemm_validate(g);
    struct lg_plan *p = NULL;
    if (s || (s = plan_get(blas, g, &p)))
        return s;
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
    /* The plan may have been made with another bias buffer of the same alignment class. */
    if (g->bias)
        st = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias, sizeof g->bias);
    if (st)
        return lt_fail(st, "setting the bias pointer", g);
    st = cublasLtMatmul(blas->lt, p->desc, &g->alpha, g->b, p->lay_b, g->a, p->lay_a, &g->beta, g->c, p->lay_c,
                        g->c, p->lay_c, &p->heur.algo, (void *)(uintptr_t)blas->ws, blas->ws_bytes,
                        (cudaStream_t)stream);
    if (st)
        return lt_fail(st, "cublasLtMatmul", g);
    return LG_OK;
}

int lg_blas_algo_count(lg_blas_t *blas, const struct lg_gemm *g)
{
    if (!blas) {
        lg_fail(LG_ERR_INVALID, "lg_blas_algo_count: blas handle is NULL");
        return 0;
    }
    if (lg_gemm_validate(g))
        return 0;
    struct lg_gemm g0 = *g;
    g0.algo_index = 0; /* every index shares the candidate list; plan 0 is the one a default call uses */
    struct lg_plan *p = NULL;
    if (plan_get(blas, &g0, &p))
        return 0;
    return p->n_algos;
}

unsigned lg_blas_plan_count(const lg_blas_t *blas) { return blas ? blas->count : 0; }
