/* attention_cudnn_graph.c: the descriptor builder over cuDNN's backend API (attention_cudnn_graph.h).
 * Every cuDNN call goes through one of the three checked wrappers below, which name the graph, the object,
 * the call and the attribute when cuDNN refuses it. */
#include "attention_cudnn_graph.h"
#include "lg_base.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

void lg_ops_dnn_init(struct lg_ops_dnn *b, const struct lg_cudnn_api *c, const char *graph)
{
    memset(b, 0, sizeof *b);
    b->c = c, b->graph = graph, b->next_virtual_uid = LG_DNN_FIRST_VIRTUAL;
    if (!c)
        b->st = lg_fail(LG_ERR_UNSUPPORTED, "cuDNN %s graph: cuDNN 9 is not loaded: %s", graph, lg_cudnn_error());
}

void lg_ops_dnn_free(struct lg_ops_dnn *b)
{
    for (int i = b->nall - 1; i >= 0; i--)
        if (b->all[i])
            b->c->BackendDestroyDescriptor(b->all[i]);
    b->nall = 0, b->nops = 0;
}

static void fail(struct lg_ops_dnn *b, cudnnStatus_t s, const char *obj, const char *call, const char *attr)
{
    char what[256];
    snprintf(what, sizeof what, "cuDNN %s graph: %s: %s%s%s", b->graph, obj, call, attr ? " " : "", attr ? attr : "");
    b->st = lg_cudnn_check(s, what);
}

static lg_dnn_t create(struct lg_ops_dnn *b, cudnnBackendDescriptorType_t type, const char *obj, const char *tname)
{
    if (b->st != LG_OK)
        return NULL;
    if (b->nall == LG_DNN_MAXDESC) {
        b->st = lg_fail(LG_ERR_INTERNAL, "cuDNN %s graph: more than %d descriptors", b->graph, LG_DNN_MAXDESC);
        return NULL;
    }
    lg_dnn_t d = NULL;
    cudnnStatus_t s = b->c->BackendCreateDescriptor(type, &d);
    if (s != CUDNN_STATUS_SUCCESS) {
        char call[96];
        snprintf(call, sizeof call, "cudnnBackendCreateDescriptor(%s)", tname);
        fail(b, s, obj, call, NULL);
        return NULL;
    }
    b->all[b->nall++] = d;
    return d;
}
#define CREATE(b, type, obj) create(b, type, obj, #type)

static void set(struct lg_ops_dnn *b, lg_dnn_t d, const char *obj, cudnnBackendAttributeName_t attr, const char *aname,
                cudnnBackendAttributeType_t type, int64_t n, const void *v)
{
    if (b->st != LG_OK || !d)
        return;
    cudnnStatus_t s = b->c->BackendSetAttribute(d, attr, type, n, v);
    if (s != CUDNN_STATUS_SUCCESS)
        fail(b, s, obj, "cudnnBackendSetAttribute", aname);
}
#define SET(b, d, obj, attr, type, n, v) set(b, d, obj, attr, #attr, type, n, v)

static void finalize(struct lg_ops_dnn *b, lg_dnn_t d, const char *obj)
{
    if (b->st != LG_OK || !d)
        return;
    cudnnStatus_t s = b->c->BackendFinalize(d);
    if (s != CUDNN_STATUS_SUCCESS)
        fail(b, s, obj, "cudnnBackendFinalize", NULL);
}

/* ---- tensors ---- */

lg_dnn_t lg_ops_dnn_tensor(struct lg_ops_dnn *b, const struct lg_ops_dnn_tensor *t)
{
    char obj[96];
    snprintf(obj, sizeof obj, "tensor '%s' (uid %lld)", t->name, (long long)t->uid);
    lg_dnn_t d = CREATE(b, CUDNN_BACKEND_TENSOR_DESCRIPTOR, obj);
    int64_t uid = t->uid;
    if (!uid)
        uid = b->next_virtual_uid++;
    const int64_t align = 16;
    const bool virt = t->virt != 0, byval = t->by_value != 0;
    SET(b, d, obj, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &t->type);
    SET(b, d, obj, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, t->dim);
    SET(b, d, obj, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, t->stride);
    SET(b, d, obj, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    SET(b, d, obj, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
    if (virt)
        SET(b, d, obj, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt);
    if (byval)
        SET(b, d, obj, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &byval);
    if (t->ragged)
        SET(b, d, obj, CUDNN_ATTR_TENSOR_RAGGED_OFFSET_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t->ragged);
    finalize(b, d, obj);
    return b->st == LG_OK ? d : NULL;
}

lg_dnn_t lg_ops_dnn_virtual(struct lg_ops_dnn *b, const char *name, cudnnDataType_t type, const int64_t dim[4],
                  const int64_t stride[4])
{
    struct lg_ops_dnn_tensor t = {.name = name, .type = type, .virt = 1};
    memcpy(t.dim, dim, sizeof t.dim), memcpy(t.stride, stride, sizeof t.stride);
    return lg_ops_dnn_tensor(b, &t);
}

lg_dnn_t lg_ops_dnn_scalar(struct lg_ops_dnn *b, const char *name, int64_t uid, cudnnDataType_t type)
{
    struct lg_ops_dnn_tensor t = {.name = name, .uid = uid, .type = type, .dim = {1, 1, 1, 1}, .stride = {1, 1, 1, 1},
                           .by_value = 1};
    return lg_ops_dnn_tensor(b, &t);
}

/* ---- operations ---- */

static void add_op(struct lg_ops_dnn *b, lg_dnn_t op, const char *obj)
{
    finalize(b, op, obj);
    if (b->st != LG_OK)
        return;
    if (b->nops == LG_DNN_MAXOPS) {
        b->st = lg_fail(LG_ERR_INTERNAL, "cuDNN %s graph: more than %d operations", b->graph, LG_DNN_MAXOPS);
        return;
    }
    b->ops[b->nops++] = op;
}

void lg_ops_dnn_pointwise(struct lg_ops_dnn *b, const char *name, cudnnPointwiseMode_t mode, cudnnDataType_t math,
                          lg_dnn_t x, lg_dnn_t x2, lg_dnn_t t, lg_dnn_t y, int64_t axis)
{
    char obj[96];
    snprintf(obj, sizeof obj, "pointwise '%s' (mode %d)", name, (int)mode);
    lg_dnn_t pw = CREATE(b, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, obj);
    SET(b, pw, obj, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    SET(b, pw, obj, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math);
    if (axis >= 0)
        SET(b, pw, obj, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    finalize(b, pw, obj);
    lg_dnn_t op = CREATE(b, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, obj);
    const float one = 1.0f;
    SET(b, op, obj, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw);
    SET(b, op, obj, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    if (x2)
        SET(b, op, obj, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x2);
    if (t)
        SET(b, op, obj, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t);
    SET(b, op, obj, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    SET(b, op, obj, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one);
    SET(b, op, obj, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one);
    add_op(b, op, obj);
}

void lg_ops_dnn_matmul(struct lg_ops_dnn *b, const char *name, lg_dnn_t a, lg_dnn_t bm, lg_dnn_t c, lg_dnn_t m_ovr,
                       lg_dnn_t n_ovr, lg_dnn_t k_ovr, double padding)
{
    char obj[96];
    snprintf(obj, sizeof obj, "matmul '%s'", name);
    lg_dnn_t mm = CREATE(b, CUDNN_BACKEND_MATMUL_DESCRIPTOR, obj);
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    SET(b, mm, obj, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp);
    if (!isnan(padding))
        SET(b, mm, obj, CUDNN_ATTR_MATMUL_PADDING_VALUE, CUDNN_TYPE_DOUBLE, 1, &padding);
    finalize(b, mm, obj);
    lg_dnn_t op = CREATE(b, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, obj);
    SET(b, op, obj, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a);
    SET(b, op, obj, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &bm);
    SET(b, op, obj, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c);
    SET(b, op, obj, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm);
    if (m_ovr)
        SET(b, op, obj, CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &m_ovr);
    if (n_ovr)
        SET(b, op, obj, CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n_ovr);
    if (k_ovr)
        SET(b, op, obj, CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &k_ovr);
    add_op(b, op, obj);
}

void lg_ops_dnn_reduction(struct lg_ops_dnn *b, const char *name, cudnnReduceTensorOp_t rop, lg_dnn_t x, lg_dnn_t y)
{
    char obj[96];
    snprintf(obj, sizeof obj, "reduction '%s'", name);
    lg_dnn_t rd = CREATE(b, CUDNN_BACKEND_REDUCTION_DESCRIPTOR, obj);
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    SET(b, rd, obj, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp);
    SET(b, rd, obj, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &rop);
    finalize(b, rd, obj);
    lg_dnn_t op = CREATE(b, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, obj);
    SET(b, op, obj, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    SET(b, op, obj, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    SET(b, op, obj, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &rd);
    add_op(b, op, obj);
}

void lg_ops_dnn_reshape(struct lg_ops_dnn *b, const char *name, lg_dnn_t x, lg_dnn_t y)
{
    char obj[96];
    snprintf(obj, sizeof obj, "reshape '%s'", name);
    lg_dnn_t op = CREATE(b, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, obj);
    SET(b, op, obj, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    SET(b, op, obj, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    add_op(b, op, obj);
}

/* ---- the plan ---- */

#define MAX_CFGS 32

/* Engine configurations of one heuristics mode into cfgs (descriptors of b); their number. */
static int heuristics(struct lg_ops_dnn *b, lg_dnn_t graph, cudnnBackendHeurMode_t mode, const char *mname,
                      lg_dnn_t *cfgs)
{
    char obj[64];
    snprintf(obj, sizeof obj, "engine heuristics (%s)", mname);
    lg_dnn_t h = CREATE(b, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, obj);
    SET(b, h, obj, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph);
    SET(b, h, obj, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    finalize(b, h, obj);
    if (b->st != LG_OK)
        return 0;
    int64_t n = 0;
    cudnnStatus_t s = b->c->BackendGetAttribute(h, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                                                &n, NULL);
    if (s != CUDNN_STATUS_SUCCESS) {
        fail(b, s, obj, "cudnnBackendGetAttribute", "CUDNN_ATTR_ENGINEHEUR_RESULTS (count)");
        return 0;
    }
    if (n > MAX_CFGS)
        n = MAX_CFGS;
    for (int64_t i = 0; i < n; i++)
        cfgs[i] = CREATE(b, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, obj);
    if (b->st != LG_OK || n == 0)
        return 0;
    int64_t got = 0;
    s = b->c->BackendGetAttribute(h, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n, &got, cfgs);
    if (s != CUDNN_STATUS_SUCCESS) {
        fail(b, s, obj, "cudnnBackendGetAttribute", "CUDNN_ATTR_ENGINEHEUR_RESULTS");
        return 0;
    }
    return (int)(got < n ? got : n);
}

enum lg_status lg_ops_dnn_plan(struct lg_ops_dnn *b, cudnnHandle_t handle, lg_dnn_t *plan, int64_t *ws, char *note,
                        size_t note_size)
{
    *plan = NULL, *ws = 0;
    if (note_size)
        note[0] = '\0';
    if (b->st != LG_OK)
        return b->st;
    if (!handle)
        return b->st = lg_fail(LG_ERR_UNSUPPORTED,
                               "cuDNN %s graph: its %d operations are built, but the operation graph needs a cuDNN "
                               "handle, which needs a GPU", b->graph, b->nops);
    lg_dnn_t g = CREATE(b, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
    SET(b, g, "operation graph", CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, b->nops, b->ops);
    SET(b, g, "operation graph", CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    finalize(b, g, "operation graph");
    lg_dnn_t cfgs[MAX_CFGS];
    int n = heuristics(b, g, CUDNN_HEUR_MODE_A, "mode A", cfgs);
    if (b->st == LG_OK && n == 0)
        n = heuristics(b, g, CUDNN_HEUR_MODE_FALLBACK, "fallback", cfgs);
    if (b->st != LG_OK)
        return b->st;
    if (n == 0)
        return b->st = lg_fail(LG_ERR_UNSUPPORTED,
                               "cuDNN %s graph: the heuristics (mode A and fallback) offer no engine for this "
                               "graph (%d operations)", b->graph, b->nops);
    /* the first configuration that finalizes; each refusal is kept for the message */
    char why[1024] = "";
    size_t wl = 0;
    for (int i = 0; i < n; i++) {
        lg_dnn_t p = NULL;
        cudnnStatus_t s = b->c->BackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &p);
        if (s == CUDNN_STATUS_SUCCESS) {
            b->c->BackendSetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
            s = b->c->BackendSetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                          1, &cfgs[i]);
            if (s == CUDNN_STATUS_SUCCESS)
                s = b->c->BackendFinalize(p);
        }
        if (s == CUDNN_STATUS_SUCCESS && b->nall < LG_DNN_MAXDESC) {
            b->all[b->nall++] = p;
            int64_t cnt = 0;
            s = b->c->BackendGetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &cnt, ws);
            if (s != CUDNN_STATUS_SUCCESS) {
                fail(b, s, "execution plan", "cudnnBackendGetAttribute", "CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE");
                return b->st;
            }
            if (note_size)
                snprintf(note, note_size, "engine config %d of %d", i + 1, n);
            *plan = p;
            return LG_OK;
        }
        char last[256];
        lg_cudnn_last_error(last, sizeof last);
        if (wl < sizeof why)
            wl += (size_t)snprintf(why + wl, sizeof why - wl, "%s[%d] status %d (%s)%s%s", i ? "; " : "", i,
                                   (int)s, b->c->GetErrorString(s), last[0] ? ": " : "", last);
        if (p)
            b->c->BackendDestroyDescriptor(p);
    }
    return b->st = lg_fail(LG_ERR_UNSUPPORTED, "cuDNN %s graph: none of the %d engine configurations finalizes "
                           "as an execution plan: %s", b->graph, n, why);
}
