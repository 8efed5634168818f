/* attention_cudnn_stage.c: the cuDNN attention backend's packed copies (attention_cudnn_graph.h): which
 * tensors of a call cuDNN gets through a packed copy rather than in place, and the copies. */
#include "attention_cudnn_graph.h"
#include "lg_base.h"
#include "lg_gpu.h"

#include <stdio.h>
#include <string.h>

/* ---- which tensors ----
 *
 * On cuDNN 9.14 / sm_90 the backward computed dQ and dV wrongly for every sample after the first (dQ zero,
 * dV left unwritten) when a gradient's row stride differed from its input's (dQ's from Q's, dV's from V's),
 * while O, the LSE and dK were right: cuDNN's own tests only ever give each gradient its input's layout (dQ
 * Q's strides and ragged offsets, dK K's, dV V's, dO O's). So a backward pair whose row strides differ
 * goes through packed copies: each member of the pair whose rows are not packed is copied into a packed
 * buffer first (inputs) or from one afterwards (gradients), and cuDNN sees the packed layout, which is
 * right for every sample (LG_DNN_STAGE_MISMATCH). Both failing cases were GQA, whose dK/dV cuDNN sums from
 * per-q-head partials laid out after dK's and dV's row strides (cudnn-frontend's ragged GQA backward), so
 * by default (LG_DNN_STAGE_AUTO) a GQA backward also copies k, v, dk and dv when one of them is not packed: a
 * small copy (hkv·d per token each), leaving only q and dq, of matching strides, in place in the trainer's
 * layout. LG_DNN_STAGE_ALWAYS packs every strided tensor of both directions, LG_DNN_STAGE_NEVER none
 * (LORAGEN_CUDNN_STAGE=auto|mismatch|always|never; tests use never to show cuDNN's own behaviour). */

static const int pair_of[LG_DNN_NLD] = {[LG_DNN_LD_Q] = LG_DNN_LD_DQ, [LG_DNN_LD_K] = LG_DNN_LD_DK,
                                        [LG_DNN_LD_V] = LG_DNN_LD_DV, [LG_DNN_LD_O] = LG_DNN_LD_DO,
                                        [LG_DNN_LD_DO] = LG_DNN_LD_O, [LG_DNN_LD_DQ] = LG_DNN_LD_Q,
                                        [LG_DNN_LD_DK] = LG_DNN_LD_K, [LG_DNN_LD_DV] = LG_DNN_LD_V};
static const char *const ld_name[LG_DNN_NLD] = {"q", "k", "v", "o", "dout", "dq", "dk", "dv"};

const char *lg_ops_attn_cudnn_ld_name(int i) { return i >= 0 && i < LG_DNN_NLD ? ld_name[i] : "?"; }

int64_t lg_ops_attn_cudnn_packed_width(const struct lg_attn_params *p, int i)
{
    const int kv = i == LG_DNN_LD_K || i == LG_DNN_LD_V || i == LG_DNN_LD_DK || i == LG_DNN_LD_DV;
    return (int64_t)(kv ? p->hkv : p->hq) * p->head_dim;
}

static int is_output(int bwd, int i)
{
    return bwd ? i == LG_DNN_LD_DQ || i == LG_DNN_LD_DK || i == LG_DNN_LD_DV : i == LG_DNN_LD_O;
}

unsigned lg_ops_attn_cudnn_stage_mask(const struct lg_attn_params *p, int mode, int bwd,
                                      const int64_t ld[LG_DNN_NLD])
{
    static const int kv[4] = {LG_DNN_LD_K, LG_DNN_LD_V, LG_DNN_LD_DK, LG_DNN_LD_DV};
    int kv_strided = 0;
    for (int j = 0; j < 4; j++)
        kv_strided |= ld[kv[j]] && ld[kv[j]] != lg_ops_attn_cudnn_packed_width(p, kv[j]);
    const int gqa_kv = mode == LG_DNN_STAGE_AUTO && bwd && p->hq != p->hkv && kv_strided;
    unsigned m = 0;
    for (int i = 0; i < LG_DNN_NLD; i++) {
        if (!ld[i] || ld[i] == lg_ops_attn_cudnn_packed_width(p, i))
            continue;
        const int is_kv = i == LG_DNN_LD_K || i == LG_DNN_LD_V || i == LG_DNN_LD_DK || i == LG_DNN_LD_DV;
        const int pairs =
            (mode == LG_DNN_STAGE_MISMATCH || mode == LG_DNN_STAGE_AUTO) && bwd && ld[pair_of[i]] != ld[i];
        if (mode == LG_DNN_STAGE_ALWAYS || pairs || (gqa_kv && is_kv))
            m |= 1u << i;
    }
    return m;
}

static enum lg_status copy_rows(CUdeviceptr dst, int64_t dld, CUdeviceptr src, int64_t sld, int64_t width,
                                int64_t rows, size_t esize, const char *what, CUstream stream)
{
    if (rows <= 0)
        return LG_OK;
    CUDA_MEMCPY2D m;
    memset(&m, 0, sizeof m);
    m.srcMemoryType = CU_MEMORYTYPE_DEVICE, m.srcDevice = src, m.srcPitch = (size_t)sld * esize;
    m.dstMemoryType = CU_MEMORYTYPE_DEVICE, m.dstDevice = dst, m.dstPitch = (size_t)dld * esize;
    m.WidthInBytes = (size_t)width * esize, m.Height = (size_t)rows;
    return lg_cu_check(cuMemcpy2DAsync(&m, stream), what);
}

enum lg_status lg_ops_attn_cudnn_stage_copies(const struct lg_attn_params *p, int bwd, unsigned mask, int out,
                                              const int64_t ld[LG_DNN_NLD], const CUdeviceptr ptr[LG_DNN_NLD],
                                              const CUdeviceptr packed[LG_DNN_NLD], int64_t tokens, CUstream stream)
{
    const size_t e = lg_dtype_size(p->dtype);
    for (int i = 0; i < LG_DNN_NLD; i++) {
        if (!(mask >> i & 1) || is_output(bwd, i) != out)
            continue;
        const int64_t w = lg_ops_attn_cudnn_packed_width(p, i);
        char what[96];
        snprintf(what, sizeof what, "cuDNN attention: packed copy of %s (row stride %lld)", ld_name[i],
                 (long long)ld[i]);
        enum lg_status st = out ? copy_rows(ptr[i], ld[i], packed[i], w, w, tokens, e, what, stream)
                                : copy_rows(packed[i], w, ptr[i], ld[i], w, tokens, e, what, stream);
        if (st != LG_OK)
            return st;
    }
    return LG_OK;
}
