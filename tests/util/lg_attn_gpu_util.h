/* lg_attn_gpu_util.h: what the attention GPU suites (tests/test_attention_gpu.c, tests/test_attention_gpu_calls.c)
 * share: a case (samples, heads, head dim, dtype, layout), its host data (dtype-rounded inputs, results) and
 * device buffers, the CPU reference over all cores, one GPU run, the comparison and its printed row, and the
 * suite's main. Tests only. */
#ifndef LG_ATTN_GPU_UTIL_H
#define LG_ATTN_GPU_UTIL_H

#include "lg_common.h"
#include "lg_attention.h"
#include "lg_gpu_util.h"

#include <check.h>

extern lg_ctx_t *attn_ctx; /* device 0's, made by attn_gpu_main */

#define MAXS 16
struct acase {
    const char *name;
    int nseq;
    int lens[MAXS];
    int hq, hkv, hd;
    enum lg_dtype t;
    int fused; /* q, k, v as views of one [tokens, (hq + 2·hkv)·d] buffer, o and grads with padded rows */
};

struct host {
    int64_t T;
    int32_t cu[MAXS + 1];
    float *q, *k, *v, *dout;           /* dtype-rounded inputs */
    float *o, *lse, *dq, *dk, *dv;     /* results (GPU or reference) */
};

struct dev {
    CUdeviceptr qkv, q, k, v, o, lse, dout, dq, dk, dv, cu;
    int64_t ldq, ldk, ldo, ldg; /* ldg: dq/dk/dv rows; ldo: o and dout */
    size_t bytes_o, bytes_dq, bytes_dk;
};

struct verdict {
    double err[5]; /* worst per-sample relative L2 error: o, lse, dq, dk, dv */
    int ok;
};

/* LORAGEN_ATTN_TEST_MAX_TOKENS skips the larger packs (for slow devices and the CPU emulator's fake driver,
 * tests/tools/attn_emu/fake.sh); unset on a real GPU, where every case runs. */
int attn_skipped(const struct acase *c);
float *attn_rnd(size_t n, uint64_t seed, float scale, enum lg_dtype t);
void attn_outputs_alloc(struct host *h, const struct acase *c);
void attn_inputs_make(struct host *h, const struct acase *c, uint64_t seed);
void attn_host_free(struct host *h);
void attn_dev_alloc(struct dev *D, const struct acase *c, const struct host *h);
void attn_dev_free(struct dev *D);
void attn_dev_upload(struct dev *D, const struct acase *c, const struct host *h);
struct lg_attn_seqs attn_seqs_of(const struct acase *c, const struct host *h, const struct dev *D);
void attn_gpu_run(lg_attn_t *A, const struct acase *c, struct host *h, struct dev *D);
struct verdict attn_compare(const struct acase *c, const struct host *g, const struct host *r);
lg_attn_t *attn_make_attn(const struct acase *c, unsigned flags, const struct lg_attn_tiles *tiles);
/* One case: the reference once, then the GPU in each mode (and with each tile set) against it. */
void attn_run_case(const struct acase *c, const struct lg_attn_tiles *tiles, int ntiles);

/* lg_test_require_gpu() (exits 77 without a GPU), the context, the table's header line, then a suite of one
 * TCase that add(tc) fills, run without forking. Returns the process exit status. */
int attn_gpu_main(const char *suite, void (*add)(TCase *tc));

#endif
