/* lg_gen_test.h: what the spec and generator suites (tests/test_gen_spec.c, tests/test_gen.c) share: the
 * shipped specs found under specs/, a spec loaded or the case failed, and a TCase without a time limit. Tests
 * only. */
#ifndef LG_GEN_TEST_H
#define LG_GEN_TEST_H

#include "lg_gen.h"

#include <check.h>

#define MAX_SPECS 32
extern char *gen_specs[MAX_SPECS]; /* specs/NAME.lua, relative to the source root (ctest's working directory) */
extern int gen_nspecs;

void gen_find_specs(void); /* fills gen_specs (call first in main) */
void gen_free_specs(void);
struct lg_spec *gen_load_ok(const char *path);
TCase *gen_tcase(Suite *s, const char *name); /* added to s, no time limit */

#endif
