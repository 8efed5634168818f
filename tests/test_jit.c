/* test_jit.c: the JIT: hash and cache key, NVRTC compiles for sm_80/89/90 and their errors, and, where a GPU is
 * present, a kernel loaded through lg_jit_get and launched. The caches: test_jit_cache.c; the helpers both
 * share: tests/util/lg_jit_test.c.
 *
 * Everything but the last case runs without a GPU or a driver, so this suite is a normal test, not a GPU
 * suite: the GPU case prints that it skipped when there is no GPU. Check forks each case, so CUDA is only
 * ever initialised in the GPU case's own process. */
#include "jit_internal.h"
#include "lg_jit.h"
#include "lg_jit_test.h"
#include "lg_test.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- hash and key ---- */

/* SMHasher's verification value for MurmurHash3_x64_128: hashes of the keys {}, {0}, {0,1}, ... with seeds
 * 256-i, hashed again with seed 0; the low 32 bits of the result. */
START_TEST(hash_matches_murmur3_reference)
{
    uint8_t key[256], hashes[16 * 256];
    for (int i = 0; i < 256; i++) {
        key[i] = (uint8_t)i;
        uint64_t h[2];
        lg_hash128(key, (size_t)i, 256u - (uint32_t)i, h);
        for (int b = 0; b < 16; b++)
            hashes[16 * i + b] = (uint8_t)(h[b / 8] >> (8 * (b % 8)));
    }
    uint64_t fin[2];
    lg_hash128(hashes, sizeof hashes, 0, fin);
    ck_assert_uint_eq((uint32_t)fin[0], 0x6384BA69u);
}
END_TEST

START_TEST(hash_streaming_equals_one_shot)
{
    uint8_t data[1000];
    for (int i = 0; i < 1000; i++)
        data[i] = (uint8_t)(i * 131 + 7);
    uint64_t one[2];
    lg_hash128(data, sizeof data, 42, one);
    for (size_t step = 1; step <= 37; step += 3) {
        struct lg_hash128 s;
        lg_hash128_init(&s, 42);
        for (size_t off = 0; off < sizeof data; off += step)
            lg_hash128_update(&s, data + off, off + step <= sizeof data ? step : sizeof data - off);
        uint64_t h[2];
        lg_hash128_final(&s, h);
        ck_assert(h[0] == one[0] && h[1] == one[1]);
    }
}
END_TEST

START_TEST(key_changes_with_every_input)
{
    const char *opts[] = {"--gpu-architecture=sm_90", "-std=c++17", "--fmad=true", "-lineinfo", "-G"};
    const char *opts_b[] = {"--gpu-architecture=sm_90", "-std=c++14", "--fmad=true", "-lineinfo"};
    const char *split1[] = {"ab", "c"}, *split2[] = {"a", "bc"};
    struct lg_jit_key k[10];
    lg_jit_key_ex(JIT_AXPB_SRC, 90, 13000, opts, 4, 1, &k[0]);
    lg_jit_key_ex("extern \"C\" __global__ void f() {}", 90, 13000, opts, 4, 1, &k[1]);
    lg_jit_key_ex(JIT_AXPB_SRC, 89, 13000, opts, 4, 1, &k[2]);
    lg_jit_key_ex(JIT_AXPB_SRC, 90, 13010, opts, 4, 1, &k[3]);
    lg_jit_key_ex(JIT_AXPB_SRC, 90, 13000, opts, 5, 1, &k[4]);    /* an option added */
    lg_jit_key_ex(JIT_AXPB_SRC, 90, 13000, opts_b, 4, 1, &k[5]);  /* an option changed */
    lg_jit_key_ex(JIT_AXPB_SRC, 90, 13000, opts, 4, 2, &k[6]);    /* format version */
    lg_jit_key_ex(JIT_AXPB_SRC, 90, 13000, split1, 2, 1, &k[7]);  /* same bytes, other option boundaries */
    lg_jit_key_ex(JIT_AXPB_SRC, 90, 13000, split2, 2, 1, &k[8]);
    lg_jit_key_ex(JIT_AXPB_SRC, 90, 13000, opts, 4, 1, &k[9]);    /* deterministic */
    for (int i = 0; i < 9; i++)
        for (int j = i + 1; j < 9; j++)
            ck_assert_msg(strcmp(k[i].hex, k[j].hex) != 0, "keys %d and %d collide", i, j);
    ck_assert_str_eq(k[0].hex, k[9].hex);
    /* one changed byte at the end of the source */
    char *src = strdup(JIT_AXPB_SRC);
    src[strlen(src) - 2] = ' ';
    struct lg_jit_key kb;
    lg_jit_key_ex(src, 90, 13000, opts, 4, 1, &kb);
    ck_assert_str_ne(kb.hex, k[0].hex);
    free(src);
}
END_TEST

START_TEST(public_key_is_hex_and_follows_source_and_arch)
{
    char a[33], b[33], c[33], again[33];
    lg_jit_cache_key(JIT_AXPB_SRC, 90, a);
    lg_jit_cache_key(JIT_AXPB_SRC, 80, b);
    lg_jit_cache_key(JIT_BAD_SRC, 90, c);
    lg_jit_cache_key(JIT_AXPB_SRC, 90, again);
    ck_assert_uint_eq(strlen(a), 32);
    ck_assert_uint_eq(strspn(a, "0123456789abcdef"), 32);
    ck_assert_str_ne(a, b);
    ck_assert_str_ne(a, c);
    ck_assert_str_eq(a, again);
    struct lg_jit_key k;
    int nopt;
    const char *const *opts = lg_nvrtc_options(90, &nopt);
    lg_jit_key_ex(JIT_AXPB_SRC, 90, lg_nvrtc_version(), opts, nopt, LG_JIT_FORMAT_VERSION, &k);
    ck_assert_str_eq(a, k.hex);
}
END_TEST

/* ---- NVRTC ---- */

START_TEST(options_are_as_specified)
{
    int n = -1;
    const char *const *o = lg_nvrtc_options(90, &n);
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(n, 4);
    ck_assert_ptr_null(o[n]);
    ck_assert_str_eq(o[0], "--gpu-architecture=sm_90");
    int have_std = 0, have_fmad = 0, have_lineinfo = 0;
    for (int i = 0; i < n; i++) {
        have_std |= strcmp(o[i], "-std=c++17") == 0;
        have_fmad |= strcmp(o[i], "--fmad=true") == 0;
        have_lineinfo |= strcmp(o[i], "-lineinfo") == 0;
        ck_assert(strstr(o[i], "default-device") == NULL);
    }
    ck_assert(have_std && have_fmad && have_lineinfo);
    ck_assert_str_eq(lg_nvrtc_options(80, NULL)[0], "--gpu-architecture=sm_80");
    ck_assert_ptr_eq(lg_nvrtc_options(90, NULL), o); /* stable storage */
    ck_assert_ptr_null(lg_nvrtc_options(0, &n));
    ck_assert_int_eq(n, 0);
    ck_assert_ptr_null(lg_nvrtc_options(1000, NULL));
    ck_assert_int_ge(lg_nvrtc_version(), 12000);
}
END_TEST

static const int ARCHS[] = {80, 89, 90};

START_TEST(compile_valid_kernel)
{
    void *cubin = NULL;
    size_t n = 0;
    char *log = NULL;
    enum lg_status st = lg_nvrtc_compile(JIT_AXPB_SRC, "axpb.cu", ARCHS[_i], &cubin, &n, &log);
    ck_assert_msg(st == LG_OK, "sm_%d: %s", ARCHS[_i], lg_last_error());
    jit_assert_cubin_elf(cubin, n);
    ck_assert_ptr_nonnull(log);
    free(cubin);
    free(log);
}
END_TEST

START_TEST(compile_error_reports_source_and_line)
{
    void *cubin = NULL;
    size_t n = 0;
    char *log = (char *)1;
    enum lg_status st = lg_nvrtc_compile(JIT_BAD_SRC, "bad_kernel.cu", 90, &cubin, &n, &log);
    ck_assert_int_eq(st, LG_ERR_NVRTC);
    ck_assert_ptr_null(cubin);
    ck_assert_ptr_null(log);
    const char *e = lg_last_error();
    ck_assert_msg(strncmp(e, "bad_kernel.cu: ", 15) == 0, "detail: %s", e);
    ck_assert_msg(strstr(e, "bad_kernel.cu(3)") != NULL, "no source(line) in: %s", e);
    ck_assert_msg(strstr(e, "error") != NULL, "no error text in: %s", e);
}
END_TEST

START_TEST(compile_bad_arch_fails_cleanly)
{
    void *cubin = NULL;
    size_t n = 0;
    ck_assert_int_eq(lg_nvrtc_compile(JIT_AXPB_SRC, "a.cu", 5, &cubin, &n, NULL), LG_ERR_UNSUPPORTED);
    ck_assert_int_eq(lg_nvrtc_compile(JIT_AXPB_SRC, "a.cu", 1000, &cubin, &n, NULL), LG_ERR_UNSUPPORTED);
    /* in range for us, but no NVRTC 13 target: NVRTC's own refusal comes back as a status */
    enum lg_status st = lg_nvrtc_compile(JIT_AXPB_SRC, "a.cu", 11, &cubin, &n, NULL);
    ck_assert_int_eq(st, LG_ERR_NVRTC);
    ck_assert(strstr(lg_last_error(), "a.cu: ") == lg_last_error());
    ck_assert_int_eq(lg_nvrtc_compile(NULL, "a.cu", 90, &cubin, &n, NULL), LG_ERR_INVALID);
    ck_assert_ptr_null(cubin);
}
END_TEST

/* ---- on a GPU ---- */

/* Runs y = a*x + b through f on n fresh random elements, y poisoned with NaN first, and checks every one. */
static void run_axpb(CUfunction f, int n, uint64_t seed)
{
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), ab[2];
    lg_test_fill(x, n, seed, 1.0f);
    lg_test_fill(ab, 2, seed + 1, 4.0f);
    for (int i = 0; i < n; i++)
        y[i] = NAN;
    CUdeviceptr dx, dy;
    CU_CHECK(cuMemAlloc(&dx, n * sizeof *x));
    CU_CHECK(cuMemAlloc(&dy, n * sizeof *y));
    CU_CHECK(cuMemcpyHtoD(dx, x, n * sizeof *x));
    CU_CHECK(cuMemcpyHtoD(dy, y, n * sizeof *y));
    void *args[] = {&dy, &dx, &ab[0], &ab[1], &n};
    CU_CHECK(cuLaunchKernel(f, (n + 127) / 128, 1, 1, 128, 1, 1, 0, NULL, args, NULL));
    CU_CHECK(cuCtxSynchronize());
    CU_CHECK(cuMemcpyDtoH(y, dy, n * sizeof *y));
    for (int i = 0; i < n; i++) { /* NaN (an element never written) fails the comparison */
        double ref = (double)ab[0] * x[i] + ab[1];
        ck_assert_msg(fabs(y[i] - ref) <= 1e-6 * (fabs(ref) + 1), "y[%d] = %g, want %g", i, y[i], ref);
    }
    cuMemFree(dx);
    cuMemFree(dy);
    free(x);
    free(y);
}

START_TEST(gpu_launch)
{
    if (!lg_test_have_gpu()) { /* initialises CUDA in this (forked) process only */
        printf("gpu_launch: no GPU: skipped\n");
        return;
    }
    CUdevice dev;
    CUcontext ctx;
    CU_CHECK(cuDeviceGet(&dev, 0));
    CU_CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CU_CHECK(cuCtxSetCurrent(ctx));
    uint64_t seed = lg_test_seed();
    char *dir = jit_tmpdir();
    struct lg_jit_params p = {.cache_dir = dir}; /* arch 0: the current device's */
    lg_jit_t *jit;
    ck_assert_msg(lg_jit_init(&p, &jit) == LG_OK, "%s", lg_last_error());
    CUfunction f, f2;
    ck_assert_msg(lg_jit_get(jit, JIT_AXPB_SRC, "lg_test_axpb", &f) == LG_OK, "%s", lg_last_error());
    ck_assert_int_eq(lg_jit_get(jit, JIT_AXPB_SRC, "lg_test_axpb", &f2), LG_OK);
    ck_assert_ptr_eq(f, f2);
    jit_assert_stats(jit, 1, 0, 1, 0);
    ck_assert_int_eq(lg_jit_get(jit, JIT_AXPB_SRC, "lg_test_missing", &f2), LG_ERR_CUDA);
    ck_assert_msg(strstr(lg_last_error(), "CUDA_ERROR_NOT_FOUND"), "detail: %s", lg_last_error());
    run_axpb(f, 1000, seed);
    lg_jit_free(jit);

    /* a second instance loads the disk entry into the driver */
    ck_assert_int_eq(lg_jit_init(&p, &jit), LG_OK);
    ck_assert_int_eq(lg_jit_get(jit, JIT_AXPB_SRC, "lg_test_axpb", &f), LG_OK);
    jit_assert_stats(jit, 0, 1, 0, 0);
    run_axpb(f, 4097, seed + 1);
    lg_jit_free(jit);
    cuDevicePrimaryCtxRelease(dev);
    jit_rm_rf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jit");
    TCase *tc = jit_tcase(s, "key");
    tcase_add_test(tc, hash_matches_murmur3_reference);
    tcase_add_test(tc, hash_streaming_equals_one_shot);
    tcase_add_test(tc, key_changes_with_every_input);
    tcase_add_test(tc, public_key_is_hex_and_follows_source_and_arch);
    tc = jit_tcase(s, "nvrtc");
    tcase_add_test(tc, options_are_as_specified);
    tcase_add_loop_test(tc, compile_valid_kernel, 0, 3);
    tcase_add_test(tc, compile_error_reports_source_and_line);
    tcase_add_test(tc, compile_bad_arch_fails_cleanly);
    tc = jit_tcase(s, "gpu");
    tcase_add_test(tc, gpu_launch);
    int failed = lg_test_run(s, 0);
    return failed ? 1 : 0;
}
