/* tuner_internal.h: what the tuner's files share: a tile group's candidates from the pruned search space
 * (tuner_space.c), for the FusedLoRA and attention tuners and their public group listings; the descent's
 * shared steps (tuner_descent.c): logging, inputs, reading outputs, the error, a measurement, the final round. */
#ifndef LG_TUNER_INTERNAL_H
#define LG_TUNER_INTERNAL_H

#include "lg_tuner.h"
#include "lg_gpu.h"

#include <stddef.h>
#include <stdint.h>

/* A tile group: kernel configuration fields and where each lives in the caller's tiles struct. */
struct lg_tuner_tgroup {
    const char *name;
    const char *fields[5]; /* struct lg_kernel_cfg field names; NULL-terminated when fewer */
    size_t off[5];         /* byte offsets of the matching int in the tiles struct */
};

/* cand[0] = *cur; then, for each variant of base (the group's fields taken from cur where non-zero) that the
 * arch and shape allow, nearest first and at most max of them, cur with the group's fields set to the
 * variant's. Tiles structs are tsize bytes; cand holds max + 1. */
enum lg_status lg_tuner_build_group(lg_gen_t *gen, int arch, const struct lg_tune_shape *shape,
                                    const struct lg_kernel_cfg *base, const struct lg_tuner_tgroup *g,
                                    const void *cur, size_t tsize, int max, void *cand, int *n,
                                    struct lg_tuner_space_info *info);

/* ---- the descent's shared steps (tuner_descent.c), for the FusedLoRA, FusedMultiLoRA and attention tuners ---- */

/* One tuner's candidates and harness callbacks: cand holds the tiles structs (csize bytes each) that select(i)
 * makes current, cand[0] the best so far. */
struct lg_tuner_run {
    const struct lg_tuner_opts *o;
    void *u;
    enum lg_status (*select)(void *u, int i);
    enum lg_status (*run)(void *u, CUstream stream);
    enum lg_status (*check)(void *u, int i, double *err, int *ok);
    void *cand;
    size_t csize;
};

/* A line to o->log (when set). */
void lg_tuner_logf(const struct lg_tuner_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* splitmix64: the next value of the stream at *s. */
uint64_t lg_tuner_mix(uint64_t *s);

/* Rows rows[0..nrows) of a device matrix of cols dtype values a row, as floats, to dst (nrows x cols). */
enum lg_status lg_tuner_fetch_rows(enum lg_dtype dtype, const int64_t *rows, int nrows, CUdeviceptr src,
                                   int64_t cols, float *dst);

/* The largest relative L2 error of got against ref over the parts [cut[k], cut[k + 1]), k < nparts; NaN in
 * any part gives NaN. */
double lg_tuner_worst_err(const float *got, const float *ref, const size_t *cut, int nparts);

/* Measures cand[0..n) with lg_tune_measure (0 = the best so far): counts failed and mismatched candidates in
 * out and logs each that scores +inf, raises out->max_err, adds n - 1 to out->entry.candidates, gives the
 * times of cand[0] and of the fastest in ms[0], ms[1], and moves the fastest to cand[0]. */
enum lg_status lg_tuner_measure(const struct lg_tuner_run *r, const char *group, int n,
                                struct lg_tuner_outcome *out, double *ms);

/* A GEMM's cuBLASLt candidates: cand[0], then cand[0] with the int at byte offset algo_off (its fwd_algo or
 * dx_algo) set to each other index below cnt (at most 8 in all). Gives how many candidates there are. */
int lg_tuner_algo_cands(const struct lg_tuner_run *r, size_t algo_off, int cnt);

/* The final round: the winner (cand[0]) against base side by side; the faster lands in cand[0], their times in
 * out->entry.default_ms and time_ms; out->entry.candidates stays the descent's count (at least 1). The
 * caller writes cand[0] into the entry. */
enum lg_status lg_tuner_final(const struct lg_tuner_run *r, const void *base, struct lg_tuner_outcome *out);

#endif
