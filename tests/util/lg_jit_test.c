/* lg_jit_test.c: the helpers of the JIT suites (lg_jit_test.h). */
#include "lg_jit_test.h"
#include "lg_jit.h"

#include <check.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *const JIT_AXPB_SRC =
    "extern \"C\" __global__ void lg_test_axpb(float *y, const float *x, float a, float b, int n)\n"
    "{\n"
    "    int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
    "    if (i < n)\n"
    "        y[i] = a * x[i] + b;\n"
    "}\n";

/* The error is on line 3. */
const char *const JIT_BAD_SRC = "extern \"C\" __global__ void lg_test_bad(float *y)\n"
                                "{\n"
                                "    y[0] = 1.0f +;\n"
                                "}\n";
static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

void jit_rm_rf(const char *dir) { nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

char *jit_tmpdir(void)
{
    char *d = strdup("/tmp/lg_jit_test.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(d));
    return d;
}

void jit_assert_cubin_elf(const uint8_t *c, size_t n)
{
    ck_assert_uint_gt(n, 64);
    ck_assert_mem_eq(c, "\x7f" "ELF", 4);
    ck_assert_uint_eq(c[4], 2);                      /* ELFCLASS64 */
    ck_assert_uint_eq(c[18] | (c[19] << 8), 190);     /* EM_CUDA */
}

void jit_assert_stats(lg_jit_t *jit, unsigned mem, unsigned disk, unsigned comp, unsigned corrupt)
{
    struct lg_jit_stats s;
    lg_jit_get_stats(jit, &s);
    bool ok = s.mem_hits == mem && s.disk_hits == disk && s.compiles == comp && s.corrupt_rebuilt == corrupt;
    ck_assert_msg(ok, "stats mem %u disk %u compiles %u corrupt %u, expected %u %u %u %u", s.mem_hits,
                  s.disk_hits, s.compiles, s.corrupt_rebuilt, mem, disk, comp, corrupt);
}

TCase *jit_tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 0); /* no time limits in tests: NVRTC speed varies by machine */
    suite_add_tcase(s, tc);
    return tc;
}
