/* lg_test.h: helpers shared by the test suites and the benchmarks: an exiting CHECK() for library, driver and
 * NVRTC calls, GPU detection that skips (exit 77), seeded random fills, and error norms.
 *
 * GPU suites run with CK_FORK=no semantics: call lg_test_require_gpu() first in main(), which initialises
 * CUDA in this process or exits 77 when no GPU is present. */
#ifndef LG_TEST_H
#define LG_TEST_H

#include "lg_common.h"

#include <check.h>
#include "lg_gpu.h"
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#define CHECK(stmt)                                                                                        \
    do {                                                                                                   \
        enum lg_status s_ = (stmt);                                                                        \
        if (s_ != LG_OK) {                                                                                 \
            fprintf(stderr, "%s:%d: %s failed: %s: %s [device %d]\n", __FILE__, __LINE__, #stmt,           \
                    lg_status_str(s_), lg_last_error(), lg_test_device());                                 \
            exit(1);                                                                                       \
        }                                                                                                  \
    } while (0)

#define CU_CHECK(stmt)                                                                                     \
    do {                                                                                                   \
        CUresult r_ = (stmt);                                                                              \
        if (r_ != CUDA_SUCCESS) {                                                                          \
            const char *n_ = NULL;                                                                         \
            cuGetErrorName(r_, &n_);                                                                       \
            fprintf(stderr, "%s:%d: %s failed: %s [device %d]\n", __FILE__, __LINE__, #stmt,               \
                    n_ ? n_ : "?", lg_test_device());                                                      \
            exit(1);                                                                                       \
        }                                                                                                  \
    } while (0)

/* The device index in use (-1 before lg_test_require_gpu). */
int lg_test_device(void);
/* Initialises CUDA and makes device 0's primary context current; exits 77 when no GPU is usable. */
void lg_test_require_gpu(void);
/* True when a GPU is usable; initialises CUDA in this process (call only from the forked child or with
 * CK_FORK=no). */
int lg_test_have_gpu(void);

/* Deterministic uniform values in [-scale, scale) from a 64-bit seed (splitmix64). */
void lg_test_fill(float *x, size_t n, uint64_t seed, float scale);
uint64_t lg_test_seed(void); /* from $LORAGEN_TEST_SEED, else time-based; printed once */

/* Runs every case of s (each in a forked child unless nofork), prints Check's summary and returns the
 * process exit status: 0 when all passed, 1 otherwise. Frees s. */
int lg_test_run(Suite *s, int nofork);
/* One suite of one test case named "gpu" without a timeout, holding what add puts in it, run (nofork: in this
 * process, for suites that make one GPU context in main); 1 when a test failed. */
int lg_test_run_case(const char *suite, void (*add)(TCase *tc), int nofork);

/* Fixture helpers; each exits the test on failure. */
char *lg_test_tmpdir(const char *prefix);            /* fresh directory under /tmp; free() it; safe in main() */
void lg_test_rm_rf(const char *dir);                  /* removes a directory tree */
char *lg_test_slurp(const char *path, size_t *n);     /* whole file, NUL-terminated; free() it */
int lg_test_count_substr(const char *s, const char *needle);
char *lg_test_path(const char *dir, const char *rel);             /* dir/rel, malloc'd */
void lg_test_write_file(const char *path, const void *data, size_t n);
void lg_test_write_text(const char *path, const char *text);

/* The built `loragen` beside the test binary; running it with args (NULL-terminated), stdout and stderr
 * going to dir/stdout.txt and dir/stderr.txt. run = spawn + wait; wait returns the exit status and the two
 * outputs (free() them). */
const char *lg_test_loragen(void);
pid_t lg_test_spawn(const char *dir, const char *const *args);
int lg_test_wait(const char *dir, pid_t pid, char **out, char **err);
int lg_test_loragen_run(const char *dir, const char *const *args, char **out, char **err);

/* Relative L2 error ||a-b|| / ||b||; +inf if any element of a is NaN or inf. */
double lg_test_rel_err(const float *a, const double *b, size_t n);

/* Finite differences: a scalar loss of some inputs, recomputed by f(ctx). lg_test_check_fd perturbs every
 * element of v by +-h (central differences) and fails unless the analytic gradient g agrees to 1e-2 relative
 * (floor: 1e-2 of the largest gradient, for elements whose gradient is near zero). lg_test_wsum is the usual
 * loss: the outputs weighted by fixed random numbers r. */
typedef double (*lg_test_loss_fn)(void *ctx);
void lg_test_check_fd(const char *what, lg_test_loss_fn f, void *ctx, float *v, const float *g, int64_t n, float h);
double lg_test_wsum(const float *out, const float *r, int64_t n);

#endif
