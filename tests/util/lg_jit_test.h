/* lg_jit_test.h: what the JIT suites (tests/test_jit.c, tests/test_jit_cache.c) share: a valid kernel source
 * and one with a compile error on line 3, temporary directories, the cubin's ELF header check, the cache's
 * counters, and a TCase without a time limit. Tests only. */
#ifndef LG_JIT_TEST_H
#define LG_JIT_TEST_H

#include "lg_common.h"
#include "lg_jit.h"

#include <check.h>
#include <stdint.h>

extern const char *const JIT_AXPB_SRC; /* lg_test_axpb(y, x, a, b, n): y = a·x + b */
/* The error is on line 3. */
extern const char *const JIT_BAD_SRC;

void jit_rm_rf(const char *dir);
char *jit_tmpdir(void); /* /tmp/lg_jit_test.XXXXXX; free() it */
void jit_assert_cubin_elf(const uint8_t *c, size_t n);
void jit_assert_stats(lg_jit_t *jit, unsigned mem, unsigned disk, unsigned comp, unsigned corrupt);
TCase *jit_tcase(Suite *s, const char *name); /* added to s, no time limit */

#endif
