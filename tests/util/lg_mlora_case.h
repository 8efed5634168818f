/* lg_mlora_case.h: the FusedMultiLoRA GPU suites' fixture (test_mlora_gpu.c, test_mlora_gpu_merged.c): a case
 * (adapters, modules, shapes, ranks, dropouts, dtype, strategy), its random inputs with uneven segments, the layer
 * built from them, one GPU forward + backward with every output poisoned first, and the whole case checked
 * against the CPU reference (lg_ref_mlora.h): S, Y, dX and every present slot's dA and dB by relative L2 error,
 * absent adapters' gradients untouched. mc_ctx is the suites' context (set by their main). */
#ifndef LG_MLORA_CASE_H
#define LG_MLORA_CASE_H

#include "lg_gpu_util.h"
#include "lg_half.h"
#include "lg_mlora.h"
#include "lg_ref_mlora.h"
#include "lg_test.h"

extern lg_ctx_t *mc_ctx;

struct mcase {
    const char *name;
    int nad, nmod;
    int64_t K, M[3], tokens; /* tokens: about this many, split unevenly */
    int rank_set;            /* 0: all 16; 1: mixed 4..128; 2: mixed small (4, 8, 12, 20) */
    int drop_set;            /* 0: none; 1: mixed 0/0.1/0.05 */
    enum lg_dtype t;
    enum lg_mlora_strategy strategy;
    int s_apart, ds_apart;   /* S in a separate buffer (b only); dS in the layer's workspace */
};

static inline double mc_tol(enum lg_dtype t) { return t == LG_BF16 ? 1e-2 : 2e-3; }

struct mc_inputs {
    int nseg;
    struct lg_mlora_seg seg[80];
    struct lg_ref_mlora_seg rseg[80];
    int64_t n, MT;
    struct lg_mlora_slot_params *sp;
    struct lg_ref_mlora_slot *rs;
    float *x, *w[3], *bias, *dy;
};

struct mc_run {
    float *y, *dx, *s; /* s: [n, nmod, rmax] like the reference (the slot's columns gathered) */
    float **da, **db;  /* per slot (NULL for rank 0) */
    enum lg_mlora_strategy used;
    int64_t n, MT;
};

void mc_make_inputs(const struct mcase *c, uint64_t seed, struct mc_inputs *in);
void mc_free_inputs(const struct mcase *c, struct mc_inputs *in);
lg_mlora_t *mc_make_layer(const struct mcase *c, const struct mc_inputs *in, uint32_t layer_id);
int mc_present(const struct mc_inputs *in, int a);
void mc_gpu_run(lg_mlora_t *l, const struct mcase *c, const struct mc_inputs *in, enum lg_mlora_strategy strat,
                uint64_t seed, int rmax, struct mc_run *o);
void mc_run_free(const struct mcase *c, struct mc_run *o);
double mc_compare(const char *what, const float *got, const double *ref, size_t n, double tl);
double *mc_dbl(const float *v, size_t n);
/* The whole case against the reference (split: the layer's frozen and dX GEMMs one per module, tiles.split).
 * Prints a PASS/FAIL line; returns 1 when every tensor passes. keep: the GPU run, for the caller to compare and
 * free (mc_run_free); NULL: freed. */
int mc_check_case(const struct mcase *c, enum lg_mlora_strategy strat, int split, struct mc_run *keep);

/* The suites' main: exits 77 without a GPU, makes mc_ctx, runs one test case (no timeout, not forked: the
 * context is made once) holding what add_tests adds, frees mc_ctx; the exit status. */
int mc_main(const char *suite, void (*add_tests)(TCase *tc));

#endif
