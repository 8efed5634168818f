/* lg_gen_test.c: the helpers of the spec and generator suites (lg_gen_test.h). */
#include "lg_gen_test.h"
#include "lg_test.h"

#include <check.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>

char *gen_specs[MAX_SPECS]; /* specs/NAME.lua, relative to the source root (ctest's working directory) */
int gen_nspecs;

struct lg_spec *gen_load_ok(const char *path)
{
    struct lg_spec *s = NULL;
    enum lg_status st = lg_spec_load(path, &s);
    ck_assert_msg(st == LG_OK, "%s: %s", path, lg_last_error());
    return s;
}

void gen_find_specs(void)
{
    glob_t gl;
    if (glob("specs/*.lua", 0, NULL, &gl) != 0)
        return;
    for (size_t i = 0; i < gl.gl_pathc && gen_nspecs < MAX_SPECS; i++)
        gen_specs[gen_nspecs++] = strdup(gl.gl_pathv[i]);
    globfree(&gl);
}

TCase *gen_tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 0); /* no time limits in tests: NVRTC and machines vary */
    suite_add_tcase(s, tc);
    return tc;
}

void gen_free_specs(void)
{
    for (int i = 0; i < gen_nspecs; i++)
        free(gen_specs[i]);
}
