/* attention_cudnn_sdpa.c: the scaled-dot-product attention graphs of the cuDNN backend, forward and backward,
 * as cuDNN's fused flash-attention engine recognises them (the same operation pattern cudnn-frontend's SDPA
 * node lowers to; written here against the backend API directly).
 *
 * Layout: cuDNN's tensors are [b, h, s, d] with the packed stream mapped by ragged offsets. Batch entry i is
 * sample i; its rows are tokens, so the s stride is the row stride ld and the h stride is d; the ragged offset
 * tensor ([b+1] int32) holds cu[i]·ld, the element offset of the sample's first row. One offset tensor per
 * distinct ld (q, o, dO and dQ usually share one, k, v, dK and dV another); the LSE ([tokens, hq] fp32) is
 * [b, hq, s, 1] with strides [s·hq, 1, hq, 1] and offsets cu[i]·hq. K enters transposed ([b, hkv, d, s]),
 * and so does V in the backward. The per-sample lengths ([b] int32, zero for padding entries) drive the
 * matmul size overrides and the padding mask; the causal mask is top-left aligned (q and kv of a sample have
 * the same length). Scores, softmax and statistics are fp32; P enters the second matmul in the io type.
 *
 * Forward:  S = Q·Kᵀ (padding 0) → ·scale → padding mask → causal mask → softmax with
 *           Stats = max + log Σ exp(S - max) (natural log, = lse of lg_attention.h, no conversion) → O = P·V.
 * Backward: softmax_sum = Σ_d dO∘O;  S as the forward → - Stats → causal → P = exp;
 *           dV = Pᵀ·dO (GQA: over the hq heads, then reduced to hkv);  dP = dO·Vᵀ;
 *           dS = (dP - softmax_sum)∘P·scale;  dK = dSᵀ·Q (GQA reduced);  dQ = dS·K through an fp32 buffer.
 * softmax_sum and the fp32 dQ buffer are non-virtual: the caller's workspace, packed by token like dQ and the
 * LSE where cuDNN supports it (s->thd_workspace), else [b, hq, s, ·]. With s->padded_stats (the fallback where
 * a ragged Stats tensor is refused) Stats is a padded [b, hq, s, 1] buffer with the same strides and no
 * offsets, which the backend copies to and from the caller's LSE. */
#include "attention_cudnn_graph.h"

#include <math.h>
#include <string.h>

void lg_ops_dnn_shape_slots(struct lg_ops_dnn_shape *s)
{
    s->nmult = 0;
    for (int i = 0; i <= LG_DNN_NLD; i++) {
        const int64_t m = i < LG_DNN_NLD ? s->ld[i] : s->padded_stats ? 0 : s->hq;
        int at = -1;
        if (m > 0) {
            for (int j = 0; j < s->nmult && at < 0; j++)
                if (s->mult[j] == m)
                    at = j;
            if (at < 0)
                s->mult[at = s->nmult++] = m;
        }
        if (i < LG_DNN_NLD)
            s->slot[i] = at;
        else
            s->slot_stats = at;
    }
}

/* The graph under construction and its shared pieces. */
struct g {
    struct lg_ops_dnn *b;
    const struct lg_ops_dnn_shape *s;
    int64_t B, H, G, S, D;
    lg_dnn_t offs[LG_DNN_NLD + 1];
    lg_dnn_t seq_q, seq_kv, scale, neg_inf;
    int64_t ss_dim[4], ss_str[4]; /* [b, hq, s, s] scores */
    int64_t row_dim[4], row_str[4]; /* [b, hq, s, 1] per-row values */
};

/* A [b, heads, s, d] tensor of the token stream with row stride ld (transposed: [b, heads, d, s]). */
static lg_dnn_t stream(struct g *g, const char *name, int64_t uid, int which, int64_t heads, int transposed)
{
    const int64_t ld = g->s->ld[which];
    const int slot = g->s->slot[which];
    struct lg_ops_dnn_tensor t = {
        .name = name, .uid = uid, .type = g->s->type, .ragged = slot >= 0 ? g->offs[slot] : NULL};
    const int64_t dim[4] = {g->B, heads, transposed ? g->D : g->S, transposed ? g->S : g->D};
    const int64_t str[4] = {g->S * ld, g->D, transposed ? 1 : ld, transposed ? ld : 1};
    memcpy(t.dim, dim, sizeof dim), memcpy(t.stride, str, sizeof str);
    return lg_ops_dnn_tensor(g->b, &t);
}

static lg_dnn_t stats(struct g *g, const char *name, int64_t uid)
{
    const int slot = g->s->slot_stats;
    struct lg_ops_dnn_tensor t = {.name = name,
                                  .uid = uid,
                                  .type = CUDNN_DATA_FLOAT,
                                  .ragged = slot >= 0 ? g->offs[slot] : NULL,
                                  .dim = {g->B, g->H, g->S, 1},
                                  .stride = {g->S * g->H, 1, g->H, 1}};
    return lg_ops_dnn_tensor(g->b, &t);
}

static lg_dnn_t scores(struct g *g, const char *name, cudnnDataType_t type)
{
    return lg_ops_dnn_virtual(g->b, name, type, g->ss_dim, g->ss_str);
}

static lg_dnn_t pw1(struct g *g, const char *name, cudnnPointwiseMode_t mode, lg_dnn_t x, lg_dnn_t y)
{
    lg_ops_dnn_pointwise(g->b, name, mode, CUDNN_DATA_FLOAT, x, NULL, NULL, y, -1);
    return y;
}

static lg_dnn_t pw2(struct g *g, const char *name, cudnnPointwiseMode_t mode, lg_dnn_t x, lg_dnn_t x2, lg_dnn_t y)
{
    lg_ops_dnn_pointwise(g->b, name, mode, CUDNN_DATA_FLOAT, x, x2, NULL, y, -1);
    return y;
}

/* Rows at or past the sample's length and columns past it become -inf (the padding mask). */
static lg_dnn_t padding_mask(struct g *g, const char *tag, lg_dnn_t x)
{
    struct lg_ops_dnn *b = g->b;
    lg_dnn_t r = scores(g, "pad row index", CUDNN_DATA_INT32), c = scores(g, "pad col index", CUDNN_DATA_INT32);
    lg_ops_dnn_pointwise(b, tag, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, x, NULL, NULL, r, 2);
    lg_ops_dnn_pointwise(b, tag, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, x, NULL, NULL, c, 3);
    lg_dnn_t mr = scores(g, "pad row mask", CUDNN_DATA_BOOLEAN), mc = scores(g, "pad col mask", CUDNN_DATA_BOOLEAN);
    lg_ops_dnn_pointwise(b, "row < seq_len_q", CUDNN_POINTWISE_CMP_LT, CUDNN_DATA_BOOLEAN, r, g->seq_q, NULL, mr, -1);
    lg_ops_dnn_pointwise(b, "col < seq_len_kv", CUDNN_POINTWISE_CMP_LT, CUDNN_DATA_BOOLEAN, c, g->seq_kv, NULL, mc, -1);
    lg_dnn_t m = scores(g, "pad mask", CUDNN_DATA_BOOLEAN);
    lg_ops_dnn_pointwise(b, "pad row and col", CUDNN_POINTWISE_LOGICAL_AND, CUDNN_DATA_BOOLEAN, mr, mc, NULL, m, -1);
    lg_dnn_t y = scores(g, "padded scores", CUDNN_DATA_FLOAT);
    lg_ops_dnn_pointwise(b, "select padding", CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, x, g->neg_inf, m, y, -1);
    return y;
}

/* Columns after the row (keys after the query) become -inf. */
static lg_dnn_t causal_mask(struct g *g, lg_dnn_t x)
{
    struct lg_ops_dnn *b = g->b;
    lg_dnn_t r = scores(g, "causal row index", CUDNN_DATA_INT32), c = scores(g, "causal col index", CUDNN_DATA_INT32);
    lg_ops_dnn_pointwise(b, "causal row index", CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, x, NULL, NULL, r, 2);
    lg_ops_dnn_pointwise(b, "causal col index", CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, x, NULL, NULL, c, 3);
    lg_dnn_t m = scores(g, "causal mask", CUDNN_DATA_BOOLEAN);
    lg_ops_dnn_pointwise(b, "row >= col", CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, r, c, NULL, m, -1);
    lg_dnn_t y = scores(g, "causal scores", CUDNN_DATA_FLOAT);
    lg_ops_dnn_pointwise(b, "select causal", CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, x, g->neg_inf, m, y, -1);
    return y;
}

/* scale·Q·Kᵀ with both masks (the part the forward and backward share). */
static lg_dnn_t masked_scores(struct g *g, lg_dnn_t q, lg_dnn_t kt, double padding)
{
    lg_dnn_t s1 = scores(g, "Q.KT", CUDNN_DATA_FLOAT);
    lg_ops_dnn_matmul(g->b, "Q.KT", q, kt, s1, g->seq_q, g->seq_kv, NULL, padding);
    lg_dnn_t s2 = pw2(g, "scale", CUDNN_POINTWISE_MUL, s1, g->scale, scores(g, "scaled", CUDNN_DATA_FLOAT));
    return padding_mask(g, "padding", s2);
}

static lg_dnn_t row_tensor(struct g *g, const char *name)
{
    return lg_ops_dnn_virtual(g->b, name, CUDNN_DATA_FLOAT, g->row_dim, g->row_str);
}

static void forward(struct g *g)
{
    const struct lg_ops_dnn_shape *s = g->s;
    lg_dnn_t q = stream(g, "Q", LG_DNN_Q, LG_DNN_LD_Q, g->H, 0),
             kt = stream(g, "K (as KT)", LG_DNN_K, LG_DNN_LD_K, g->G, 1);
    lg_dnn_t v = stream(g, "V", LG_DNN_V, LG_DNN_LD_V, g->G, 0), o = stream(g, "O", LG_DNN_O, LG_DNN_LD_O, g->H, 0);
    lg_dnn_t st = stats(g, "Stats (LSE)", LG_DNN_STATS);
    lg_dnn_t x = causal_mask(g, masked_scores(g, q, kt, 0.0));
    lg_dnn_t mx = row_tensor(g, "row max");
    lg_ops_dnn_reduction(g->b, "row max", CUDNN_REDUCE_TENSOR_MAX, x, mx);
    lg_dnn_t e = pw2(g, "minus max", CUDNN_POINTWISE_SUB, x, mx, scores(g, "minus max", CUDNN_DATA_FLOAT));
    e = pw1(g, "exp", CUDNN_POINTWISE_EXP, e, scores(g, "exp", CUDNN_DATA_FLOAT));
    lg_dnn_t sum = row_tensor(g, "row sum");
    lg_ops_dnn_reduction(g->b, "row sum", CUDNN_REDUCE_TENSOR_ADD, e, sum);
    lg_dnn_t lg = pw1(g, "log sum", CUDNN_POINTWISE_LOG, sum, row_tensor(g, "log sum"));
    pw2(g, "stats = max + log sum", CUDNN_POINTWISE_ADD, mx, lg, st);
    lg_dnn_t p = pw2(g, "softmax", CUDNN_POINTWISE_DIV, e, sum, scores(g, "P", s->type));
    lg_ops_dnn_matmul(g->b, "P.V", p, v, o, g->seq_q, NULL, g->seq_kv, NAN);
}

/* y = x reshaped to [b, h, n, m] with strides swapped: the transpose of the last two dims, as a view. */
static lg_dnn_t transposed_scores(struct g *g, const char *name, lg_dnn_t x)
{
    const int64_t dim[4] = {g->B, g->H, g->S, g->S}, str[4] = {g->H * g->S * g->S, g->S * g->S, 1, g->S};
    lg_dnn_t y = lg_ops_dnn_virtual(g->b, name, g->s->type, dim, str);
    lg_ops_dnn_reshape(g->b, name, x, y);
    return y;
}

/* out = aᵀ-side matmul over all hq heads, reduced to hkv heads for GQA: dV = Pᵀ·dO, dK = dSᵀ·Q. */
static void grad_kv(struct g *g, const char *name, lg_dnn_t at, lg_dnn_t rhs, lg_dnn_t out)
{
    if (g->H == g->G) {
        lg_ops_dnn_matmul(g->b, name, at, rhs, out, g->seq_kv, NULL, g->seq_q, NAN);
        return;
    }
    const int64_t dim[4] = {g->B, g->H, g->S, g->D}, str[4] = {g->H * g->S * g->D, g->S * g->D, g->D, 1};
    lg_dnn_t full = lg_ops_dnn_virtual(g->b, name, g->s->type, dim, str);
    lg_ops_dnn_matmul(g->b, name, at, rhs, full, g->seq_kv, NULL, g->seq_q, NAN);
    lg_ops_dnn_reduction(g->b, name, CUDNN_REDUCE_TENSOR_ADD, full, out);
}

static void backward(struct g *g)
{
    struct lg_ops_dnn *b = g->b;
    const struct lg_ops_dnn_shape *s = g->s;
    lg_dnn_t q = stream(g, "Q", LG_DNN_Q, LG_DNN_LD_Q, g->H, 0),
             kt = stream(g, "K (as KT)", LG_DNN_K, LG_DNN_LD_K, g->G, 1);
    lg_dnn_t vt = stream(g, "V (as VT)", LG_DNN_V, LG_DNN_LD_V, g->G, 1),
             o = stream(g, "O", LG_DNN_O, LG_DNN_LD_O, g->H, 0);
    lg_dnn_t dO = stream(g, "dO", LG_DNN_DO, LG_DNN_LD_DO, g->H, 0),
             dq = stream(g, "dQ", LG_DNN_DQ, LG_DNN_LD_DQ, g->H, 0);
    lg_dnn_t dk = stream(g, "dK", LG_DNN_DK, LG_DNN_LD_DK, g->G, 0),
             dv = stream(g, "dV", LG_DNN_DV, LG_DNN_LD_DV, g->G, 0);
    lg_dnn_t st = stats(g, "Stats (LSE)", LG_DNN_STATS);
    lg_dnn_t one = lg_ops_dnn_scalar(b, "one", LG_DNN_ONE, CUDNN_DATA_FLOAT);

    /* softmax_sum = Σ_d dO∘O, non-virtual (the engine reads it back) */
    const int64_t hd_dim[4] = {g->B, g->H, g->S, g->D}, hd_str[4] = {g->H * g->S * g->D, g->D, g->H * g->D, 1};
    lg_dnn_t x =
        pw2(g, "dO*O", CUDNN_POINTWISE_MUL, dO, o, lg_ops_dnn_virtual(b, "dO*O", CUDNN_DATA_FLOAT, hd_dim, hd_str));
    lg_dnn_t red = row_tensor(g, "sum dO*O");
    lg_ops_dnn_reduction(b, "sum dO*O", CUDNN_REDUCE_TENSOR_ADD, x, red);
    struct lg_ops_dnn_tensor sst = {.name = "softmax_sum", .uid = LG_DNN_SOFTMAX_SUM, .type = CUDNN_DATA_FLOAT,
                             .dim = {g->B, g->H, g->S, 1}};
    if (s->thd_workspace && !s->padded_stats) {
        const int64_t str[4] = {g->S * g->H, 1, g->H, 1};
        memcpy(sst.stride, str, sizeof str), sst.ragged = g->offs[s->slot_stats];
    } else {
        memcpy(sst.stride, g->row_str, sizeof sst.stride);
    }
    lg_dnn_t ssum = pw2(g, "softmax_sum", CUDNN_POINTWISE_MUL, red, one, lg_ops_dnn_tensor(b, &sst));

    /* P = exp(S - Stats) under both masks */
    x = masked_scores(g, q, kt, NAN);
    x = pw2(g, "minus stats", CUDNN_POINTWISE_SUB, x, st, scores(g, "minus stats", CUDNN_DATA_FLOAT));
    if (s->second_padding)
        x = padding_mask(g, "padding after stats", x);
    x = causal_mask(g, x);
    lg_dnn_t p = pw1(g, "exp", CUDNN_POINTWISE_EXP, x, scores(g, "P", CUDNN_DATA_FLOAT));
    grad_kv(g, "PT.dO", transposed_scores(g, "PT", p), dO, dv);

    /* dS = (dO·Vᵀ - softmax_sum)∘P·scale */
    lg_dnn_t dp = scores(g, "dO.VT", CUDNN_DATA_FLOAT);
    lg_ops_dnn_matmul(b, "dO.VT", dO, vt, dp, g->seq_q, g->seq_kv, NULL, NAN);
    x = pw2(g, "dP - softmax_sum", CUDNN_POINTWISE_SUB, dp, ssum, scores(g, "dP - sum", CUDNN_DATA_FLOAT));
    x = pw2(g, "times P", CUDNN_POINTWISE_MUL, x, p, scores(g, "dS unscaled", CUDNN_DATA_FLOAT));
    lg_dnn_t ds = pw2(g, "dS scale", CUDNN_POINTWISE_MUL, x, g->scale, scores(g, "dS", CUDNN_DATA_FLOAT));
    grad_kv(g, "dST.Q", transposed_scores(g, "dST", ds), q, dk);

    /* dQ = dS·K through the fp32 buffer, then converted */
    /* fp32 like every virtual tensor cudnn-frontend leaves untyped (its reshape of K is one of them) */
    struct lg_ops_dnn_tensor kr = {.name = "K (reshaped back)", .type = CUDNN_DATA_FLOAT, .virt = 1,
                            .dim = {g->B, g->G, g->S, g->D},
                            .stride = {g->S * s->ld[LG_DNN_LD_K], g->D, s->ld[LG_DNN_LD_K], 1},
                            .ragged = g->offs[s->slot[LG_DNN_LD_K]]};
    lg_dnn_t k = lg_ops_dnn_tensor(b, &kr);
    lg_ops_dnn_reshape(b, "K", kt, k);
    struct lg_ops_dnn_tensor acc = {.name = "dQ fp32", .uid = LG_DNN_DQ_ACC, .type = CUDNN_DATA_FLOAT,
                             .dim = {g->B, g->H, g->S, g->D}};
    if (s->thd_workspace) {
        const int64_t ld = s->ld[LG_DNN_LD_DQ], str[4] = {g->S * ld, g->D, ld, 1};
        memcpy(acc.stride, str, sizeof str), acc.ragged = g->offs[s->slot[LG_DNN_LD_DQ]];
    } else {
        memcpy(acc.stride, hd_str, sizeof acc.stride);
        acc.stride[1] = g->S * g->D, acc.stride[2] = g->D;
    }
    lg_dnn_t dqa = lg_ops_dnn_tensor(b, &acc);
    lg_ops_dnn_matmul(b, "dS.K", ds, k, dqa, g->seq_q, NULL, g->seq_kv, NAN);
    pw1(g, "dQ convert", CUDNN_POINTWISE_IDENTITY, dqa, dq);
}

void lg_ops_dnn_sdpa_graph(struct lg_ops_dnn *b, const struct lg_ops_dnn_shape *s)
{
    struct g g = {.b = b, .s = s, .B = s->b, .H = s->hq, .G = s->hkv, .S = s->s, .D = s->d};
    const int64_t ss_dim[4] = {g.B, g.H, g.S, g.S}, ss_str[4] = {g.H * g.S * g.S, g.S * g.S, g.S, 1};
    const int64_t row_dim[4] = {g.B, g.H, g.S, 1}, row_str[4] = {g.H * g.S, g.S, 1, 1};
    memcpy(g.ss_dim, ss_dim, sizeof ss_dim), memcpy(g.ss_str, ss_str, sizeof ss_str);
    memcpy(g.row_dim, row_dim, sizeof row_dim), memcpy(g.row_str, row_str, sizeof row_str);
    for (int i = 0; i < s->nmult; i++) {
        struct lg_ops_dnn_tensor t = {.name = "ragged offsets", .uid = LG_DNN_OFFSET0 + i, .type = CUDNN_DATA_INT32,
                               .dim = {g.B + 1, 1, 1, 1}, .stride = {1, 1, 1, 1}};
        g.offs[i] = lg_ops_dnn_tensor(b, &t);
    }
    struct lg_ops_dnn_tensor sq = {.name = "seq_len_q", .uid = LG_DNN_SEQ_Q, .type = CUDNN_DATA_INT32,
                            .dim = {g.B, 1, 1, 1}, .stride = {1, 1, 1, 1}};
    g.seq_q = lg_ops_dnn_tensor(b, &sq);
    sq.name = "seq_len_kv", sq.uid = LG_DNN_SEQ_KV;
    g.seq_kv = lg_ops_dnn_tensor(b, &sq);
    g.scale = lg_ops_dnn_scalar(b, "attn_scale", LG_DNN_SCALE, CUDNN_DATA_FLOAT);
    g.neg_inf = lg_ops_dnn_scalar(b, "-inf", LG_DNN_NEG_INF, CUDNN_DATA_FLOAT);
    if (s->bwd)
        backward(&g);
    else
        forward(&g);
}
