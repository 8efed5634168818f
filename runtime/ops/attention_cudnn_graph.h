/* attention_cudnn_graph.h (private to ops): a small C layer over cuDNN's backend (graph) API, and the SDPA
 * graphs the cuDNN attention backend builds with it (attention_cudnn_sdpa.c).
 *
 * The builder (attention_cudnn_graph.c) creates and finalizes tensor and operation descriptors. Its first
 * failure is sticky: every later call does nothing, and lg_ops_dnn.st holds LG_ERR_* with a message naming the
 * graph, the tensor or operation (by the name given here), the descriptor type, the attribute and cuDNN's
 * status string and last error text. So a graph is written straight through and checked once at the end.
 * Nothing before lg_ops_dnn_plan() needs a handle (or a GPU): tests build every descriptor on machines without one. */
#ifndef LG_OPS_ATTENTION_CUDNN_GRAPH_H
#define LG_OPS_ATTENTION_CUDNN_GRAPH_H

#include "lg_attention.h"
#include "lg_cudnn.h"

#define LG_DNN_MAXDESC 256
#define LG_DNN_MAXOPS 64

typedef cudnnBackendDescriptor_t lg_dnn_t;

struct lg_ops_dnn {
    const struct lg_cudnn_api *c;
    const char *graph;           /* "forward" / "backward", for messages */
    lg_dnn_t all[LG_DNN_MAXDESC];   /* every descriptor made, destroyed by lg_ops_dnn_free */
    int nall;
    lg_dnn_t ops[LG_DNN_MAXOPS];    /* the operations, in the order added (topological) */
    int nops;
    int64_t next_virtual_uid;
    enum lg_status st;           /* the first failure, LG_OK until then */
};

void lg_ops_dnn_init(struct lg_ops_dnn *b, const struct lg_cudnn_api *c, const char *graph);
void lg_ops_dnn_free(struct lg_ops_dnn *b);

/* A tensor: dims/strides in cuDNN order [b, h, s, d]; uid 0: a fresh virtual uid (then virt must be 1). */
struct lg_ops_dnn_tensor {
    const char *name;
    int64_t uid;
    cudnnDataType_t type;
    int64_t dim[4], stride[4];
    int virt, by_value;
    lg_dnn_t ragged; /* ragged offset tensor (element offsets of each batch entry), or NULL */
};
lg_dnn_t lg_ops_dnn_tensor(struct lg_ops_dnn *b, const struct lg_ops_dnn_tensor *t);
/* A virtual tensor of `type` shaped like dims/strides. */
lg_dnn_t lg_ops_dnn_virtual(struct lg_ops_dnn *b, const char *name, cudnnDataType_t type, const int64_t dim[4],
                  const int64_t stride[4]);
/* A by-value scalar ([1,1,1,1]) of `type` (CUDNN_DATA_FLOAT or CUDNN_DATA_INT32); its host value is passed
 * in the variant pack under uid. */
lg_dnn_t lg_ops_dnn_scalar(struct lg_ops_dnn *b, const char *name, int64_t uid, cudnnDataType_t type);

/* Operations; y is made by the caller (lg_ops_dnn_tensor / lg_ops_dnn_virtual). x2 and t may be NULL where the mode
 * takes fewer inputs; axis >= 0 only for CUDNN_POINTWISE_GEN_INDEX. */
void lg_ops_dnn_pointwise(struct lg_ops_dnn *b, const char *name, cudnnPointwiseMode_t mode, cudnnDataType_t math,
                          lg_dnn_t x, lg_dnn_t x2, lg_dnn_t t, lg_dnn_t y, int64_t axis);
/* y = a·b batched; m/n/k overrides: int32 [b,1,1,1] tensors of the actual sizes per batch entry (or NULL);
 * padding: the value written outside the overridden sizes (NaN: none set). */
void lg_ops_dnn_matmul(struct lg_ops_dnn *b, const char *name, lg_dnn_t a, lg_dnn_t bm, lg_dnn_t c, lg_dnn_t m_ovr,
                       lg_dnn_t n_ovr, lg_dnn_t k_ovr, double padding);
void lg_ops_dnn_reduction(struct lg_ops_dnn *b, const char *name, cudnnReduceTensorOp_t op, lg_dnn_t x, lg_dnn_t y);
void lg_ops_dnn_reshape(struct lg_ops_dnn *b, const char *name, lg_dnn_t x, lg_dnn_t y);

/* The finished graph: the operation graph on `handle`, the engine configurations of heuristics mode A (then
 * the fallback list), the first that finalizes as an execution plan. Its workspace size in *ws. Needs a
 * handle: without one, LG_ERR_UNSUPPORTED saying so. The plan is a descriptor of b (freed with it). */
enum lg_status lg_ops_dnn_plan(struct lg_ops_dnn *b, cudnnHandle_t handle, lg_dnn_t *plan, int64_t *ws,
                               char *engine_note, size_t note_size);

/* ---- the SDPA graphs (attention_cudnn_sdpa.c) ---- */

/* Fixed uids of the tensors a call binds (everything else is virtual). */
enum {
    LG_DNN_Q = 1, LG_DNN_K, LG_DNN_V, LG_DNN_O, LG_DNN_STATS, LG_DNN_DO, LG_DNN_DQ, LG_DNN_DK, LG_DNN_DV,
    LG_DNN_SEQ_Q, LG_DNN_SEQ_KV, /* the per-sample lengths, [b] int32 (one device array bound to both) */
    LG_DNN_SCALE, LG_DNN_NEG_INF, LG_DNN_ONE, /* by-value scalars */
    LG_DNN_SOFTMAX_SUM, LG_DNN_DQ_ACC,     /* backward workspace tensors (fp32) */
    LG_DNN_OFFSET0 = 32,                /* ragged offset tensors: LG_DNN_OFFSET0 + index into lg_ops_dnn_shape.mult */
    LG_DNN_FIRST_VIRTUAL = 1000,
};

/* ld indices of lg_ops_dnn_shape.ld (elements between tokens, as lg_attention.h) */
enum {
    LG_DNN_LD_Q,
    LG_DNN_LD_K,
    LG_DNN_LD_V,
    LG_DNN_LD_O,
    LG_DNN_LD_DO,
    LG_DNN_LD_DQ,
    LG_DNN_LD_DK,
    LG_DNN_LD_DV,
    LG_DNN_NLD
};

/* One graph's shape: what a cached plan is built for. */
struct lg_ops_dnn_shape {
    int bwd;              /* 0: forward, 1: backward */
    int b, s;             /* batch entries (samples, padded) and the sequence bound */
    int hq, hkv, d;
    cudnnDataType_t type; /* CUDNN_DATA_BFLOAT16 or CUDNN_DATA_HALF */
    int64_t ld[LG_DNN_NLD];  /* the call's row strides (zeros where a direction does not use them) */
    /* the distinct offset multipliers: mult[i] elements per token; slot[x] indexes mult for tensor x
     * (LG_DNN_LD_*), and slot_stats for the LSE (hq per token) */
    int64_t mult[LG_DNN_NLD + 1];
    int nmult, slot[LG_DNN_NLD], slot_stats;
    int thd_workspace;    /* backward: softmax_sum and dQ_acc packed by token (cuDNN >= 9.6 on sm_90+) */
    int second_padding;   /* backward: the mask applied again after the stats (cuDNN 9.0 - 9.9) */
    int padded_stats;     /* the fallback: Stats [b, hq, s, 1] padded per sample in the workspace (strides
                             [s·hq, 1, hq, 1], no offsets), copied to / from the caller's LSE per sample */
};

/* Fills the offset slots of s from s->ld and s->hq (no LSE slot with padded_stats). */
void lg_ops_dnn_shape_slots(struct lg_ops_dnn_shape *s);
/* Builds every tensor and operation descriptor of the forward or backward graph into b (no handle used). */
void lg_ops_dnn_sdpa_graph(struct lg_ops_dnn *b, const struct lg_ops_dnn_shape *s);


/* ---- the backend's steps (attention_cudnn.c), visible to the tests ---- */

/* The graph shape of one call (ld: LG_DNN_LD_* row strides, zeros for tensors the direction does not use);
 * exact: b and s as given rather than rounded up to powers of two. LG_ERR_UNSUPPORTED if offsets overflow. */
enum lg_status lg_ops_attn_cudnn_shape(const struct lg_attn_params *p, int version, int arch, int exact, int bwd,
                                       const struct lg_attn_seqs *sq, const int64_t ld[LG_DNN_NLD],
                                       struct lg_ops_dnn_shape *s);
/* Builds s's graph into b and, with a handle, its execution plan (*exec, workspace *ws). */
enum lg_status lg_ops_attn_cudnn_build(const struct lg_ops_dnn_shape *s, cudnnHandle_t handle, struct lg_ops_dnn *b,
                                       lg_dnn_t *exec, int64_t *ws, char *note, size_t note_size);
/* The per-call device values: b lengths (0 past nseq), then per multiplier the b+1 offsets. */
void lg_ops_attn_cudnn_meta(const struct lg_ops_dnn_shape *s, const struct lg_attn_seqs *sq, int32_t *out);
/* Which tensors of a call go through packed copies (bit LG_DNN_LD_x: tensor x), by LORAGEN_CUDNN_STAGE's mode
 * (only tensors whose rows are not packed are ever copied): NEVER none; MISMATCH in the backward, each
 * member of a pair (q, dq), (k, dk), (v, dv), (o, dout) whose row strides differ; AUTO (the default) those
 * and, with GQA (hq != hkv), k, v, dk and dv whenever one of them is not packed; ALWAYS every tensor, both
 * directions. ld: the call's row strides (0: unused). */
enum { LG_DNN_STAGE_NEVER, LG_DNN_STAGE_MISMATCH, LG_DNN_STAGE_AUTO, LG_DNN_STAGE_ALWAYS };
unsigned lg_ops_attn_cudnn_stage_mask(const struct lg_attn_params *p, int mode, int bwd,
                                      const int64_t ld[LG_DNN_NLD]);
/* Elements per token of tensor i (LG_DNN_LD_*) when packed; its name ("q", ..., "dv"). */
int64_t lg_ops_attn_cudnn_packed_width(const struct lg_attn_params *p, int i);
const char *lg_ops_attn_cudnn_ld_name(int i);
/* The copies of the tensors in mask (ld, ptr: the caller's; packed: their packed buffers, tokens rows): the
 * inputs into packed (out = 0, before the graph) or the outputs from it (out = 1, after it). */
enum lg_status lg_ops_attn_cudnn_stage_copies(const struct lg_attn_params *p, int bwd, unsigned mask, int out,
                                              const int64_t ld[LG_DNN_NLD], const CUdeviceptr ptr[LG_DNN_NLD],
                                              const CUdeviceptr packed[LG_DNN_NLD], int64_t tokens, CUstream stream);
struct lg_ops_attn_cudnn;
/* "b B s S, engine config i of n" of the last call (benchmarks, tests). */
const char *lg_ops_attn_cudnn_note(const struct lg_ops_attn_cudnn *d);

#endif
