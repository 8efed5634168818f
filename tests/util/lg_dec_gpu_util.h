/* lg_dec_gpu_util.h: what the decoder-op GPU suites (tests/test_decoder_ops_gpu_*.c) share: the context, seeded
 * dtype-rounded inputs, element-wise and bitwise comparisons that print one PASS/FAIL line, strided device
 * copies, the table of cases (op, dtype, shape, switches), the FusedLoRA readers of a case, and the loop test
 * op_matches_reference with the suite's main. Tests only. */
#ifndef LG_DEC_GPU_UTIL_H
#define LG_DEC_GPU_UTIL_H

#include "lg_common.h"
#include "lg_decoder_ops.h"
#include "lg_gpu_util.h"
#include "lg_lora.h"

#include <check.h>

extern lg_ctx_t *dec_ctx; /* device 0's, made by lg_dec_gpu_main */

float *dec_rnd(size_t n, uint64_t seed, float scale, enum lg_dtype t);
uint16_t *dec_to_half(const float *v, size_t n, enum lg_dtype t);
/* One unit in the last place of dtype, relative. */
double dec_ulp(enum lg_dtype t);
/* Every element: |got - ref| <= atol + rtol·|ref| with atol = aabs · rms(ref); NaN fails. Prints one line. */
int dec_close_to(const char *what, const float *got, const double *ref, int64_t rows, int64_t cols, double rtol,
             double aabs);
double *dec_dbl(const float *v, size_t n);
int dec_close_f(const char *what, const float *got, const float *ref, int64_t rows, int64_t cols, double rtol,
            double aabs);
/* Bitwise equality of two dtype matrices read back as floats (NaN fails). */
int dec_same_bits(const char *what, const float *got, const float *want, int64_t rows, int64_t cols);
float *dec_download(CUdeviceptr p, int64_t ld, int64_t rows, int64_t cols, enum lg_dtype t);
CUdeviceptr dec_upload_new(const float *v, int64_t ld, int64_t rows, int64_t cols, enum lg_dtype t);
/* Copies rows x cols dtype elements between strided device buffers. */
void dec_copy_rows(CUdeviceptr dst, int64_t ldd, CUdeviceptr src, int64_t lds, int64_t rows, int64_t cols, size_t e);
uint64_t dec_case_seed(int i);

/* ---- the table ---- */

enum op { T_NORM_FWD, T_NORM_BWD, T_PLACE, T_ROPE, T_SWIGLU, T_EMBED, T_XENT, T_ADAMW };
extern const char *const dec_op_name[];

enum {
    F_NOADD = 1,    /* norm: no x (h = res) */
    F_INPLACE = 2,  /* norm: h written over res; swiglu bwd: dg over g, du over u */
    F_ACC = 4,      /* norm bwd: accumulate into dres; xent: dx_beta = 1 */
    F_LLAMA3 = 8,   /* rope: llama3 scaling */
    F_TIED = 16,    /* xent: the head is the embedding table */
    F_WITHS = 32,   /* swiglu: with down_proj's S */
    F_PAD = 64,     /* padded leading dimensions, padding checked untouched */
};

struct tcase {
    enum op op;
    enum lg_dtype t;
    int64_t n, k; /* tokens; features (hidden, inter, head_dim, vocab-free width) */
    int nlora, rank[3];
    float p; /* readers' dropout */
    int flags;
    int a, b, c; /* rope: hq, hkv, nseq; xent: vocab/8, chunk, -; adamw: steps, nan_step, clip (x1000) */
};

/* The readers of a case: ranks from the table, alpha = 2r, layer ids 11, 12, 13. */
struct lg_lora_reader dec_reader(const struct tcase *c, int i);
/* A FusedLoRA layer for reader i of a case (in = K, out = 64): its A block is where the norm reads A. */
lg_lora_t *dec_reader_layer(const struct tcase *c, int i, int64_t K, uint64_t seed, float **a_host);
CUdeviceptr dec_reader_a(lg_lora_t *L, int64_t K, int r, enum lg_dtype t);
/* S = s·keep·(y ⊙ mask)·Aᵀ in double from the GPU's y. */
double *dec_ref_s(const struct tcase *c, int i, const float *y, int64_t n, int64_t K, const float *a, uint64_t seed);

/* Runs one suite: lg_test_require_gpu() (exits 77 without a GPU), the context, then the loop test
 * op_matches_reference over cases[0..ncases) through run (ncases may be 0), then extra(tc) to add more tests
 * (may be NULL). Returns the process exit status. */
int lg_dec_gpu_main(const char *suite, const struct tcase *cases, int ncases,
                    int (*run)(const struct tcase *c, uint64_t seed), void (*extra)(TCase *tc));

#endif
