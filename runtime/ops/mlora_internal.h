/* mlora_internal.h (ops, private): what the FusedMultiLoRA files share: the segment table object (mlora_seg.c
 * builds it) and the layer object (mlora.c builds it, mlora_run.c launches with both). */
#ifndef LG_MLORA_INTERNAL_H
#define LG_MLORA_INTERNAL_H

#include "lg_mlora.h"
#include "common/lg_args.h"
#include "common/lg_mlora_args.h"

struct lg_mlora_segments {
    int max;                          /* capacity in segments */
    int nseg;                         /* non-empty segments of the current table */
    int64_t n;                        /* tokens */
    int nadapters;                    /* the id range it was checked against */
    struct lg_mlora_segrec *h;        /* pinned: max records, then LG_MLORA_NG x (nseg + 1) prefix counts */
    CUdeviceptr d;                    /* the same layout on the device */
    size_t bytes;
    CUevent uploaded;                 /* the last upload has run: the pinned copy may be rewritten */
    int pending;
    int total[LG_MLORA_NG];           /* groups of height 16 << gi over all segments */
    unsigned char *present;           /* [nadapters]: 1 when the adapter has tokens */
    int present_cap;
};

/* The backward's scratch (partial dS, dB and dA sums, dS apart from dY): a layer's own, or one several layers
 * share (lg_mlora_share_ws). */
struct lg_mlora_ws {
    CUdeviceptr p;
    size_t size;
};

#define LG_MLORA_KCACHE 32 /* kernels a layer resolves (per configuration, once) */

struct lg_mlora {
    lg_ctx_t *ctx;
    enum lg_dtype dtype;
    int nmod, nad, R, rmax, ext_cols, wmax, has_bias;
    int64_t K, M[LG_MLORA_MAX_MODULES], moff[LG_MLORA_MAX_MODULES], MT, Mmax, ldw;
    uint32_t layer_id;
    struct lg_mlora_slot *hs;   /* host copy of the training slot table [nad * nmod] */
    CUdeviceptr w, bias, grads; /* weights [[W|B…],[A…|0]], bias [MT], fp32 gradients of every slot */
    CUdeviceptr slots;          /* device slot tables: training, then evaluation (no dropout) */
    struct lg_mlora_ws own, *ws; /* ws: &own, or a shared workspace */
    CUdeviceptr ds_buf;
    int64_t ds_ld;
    struct lg_mlora_tiles tiles;
    int tiles_set;                   /* lg_mlora_set_tiles chose them: the tuning database is not consulted */
    int tuned_bucket;                /* the token bucket the tiles were looked up for (0: none yet) */
    int arch_done;                   /* arch_tiles worked out */
    struct lg_mlora_tiles arch_tiles; /* the arch heuristic's tiles (mlora_tune.c) */
    struct {
        struct lg_kernel_cfg c;
        const struct lg_kernel *k;
    } kc[LG_MLORA_KCACHE];
    int nkc;
};

/* Takes the tuning database's tiles for n tokens' bucket, or the arch heuristic's, unless the caller set tiles
 * (mlora_tune.c). */
void lg_ops_mlora_consult(lg_mlora_t *l, int64_t n);
/* A GEMM at the layer's algorithm index; an index from the database beyond what cuBLASLt offers for this call
 * (another token count of its bucket) falls back to the heuristic's first (mlora_tune.c). */
enum lg_status lg_ops_mlora_gemm(const lg_mlora_t *l, struct lg_gemm *g, CUstream stream);

/* The device view of the current table. */
struct lg_mlora_segs lg_mlora_segs_view(const struct lg_mlora_segments *s);

#endif
