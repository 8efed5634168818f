/* test_gen_cli.c: the `loragen gen` command, run as a program: the .cu files and a manifest that parses and
 * lists them, byte-identical output on a rerun (with or without progress lines), spec errors on stderr with
 * their file:line and exit 1, and usage errors with exit 2.
 *
 * The binary is found next to this test executable (/proc/self/exe), where CMake builds both. Specs are
 * named relative to the source root, ctest's working directory. Compiling needs NVRTC, not a GPU. */
#include "lg_common.h"
#include "lg_test.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ---- */

/* Runs `loragen gen args...`; stdout/stderr go to files under dir. */
static int run_cli(const char *dir, const char *const *args, char **out, char **err)
{
    const char *argv[16] = {"gen"};
    int argc = 1;
    for (; *args && argc < 15; args++)
        argv[argc++] = *args;
    argv[argc] = NULL;
    return lg_test_loragen_run(dir, argv, out, err);
}

/* Checks the manifest in dir lists files that exist; returns how many kernels it lists. */
static int check_manifest(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    json_error_t jerr;
    json_t *m = json_load_file(path, 0, &jerr);
    ck_assert_msg(m != NULL, "%s: %s (line %d)", path, jerr.text, jerr.line);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(m, "spec"), "name")), "tiny");
    ck_assert_int_eq(json_integer_value(json_object_get(m, "rank")), 8);
    ck_assert_int_eq(json_array_size(json_object_get(m, "linears")), 7);
    json_t *ks = json_object_get(m, "kernels");
    ck_assert_int_gt(json_array_size(ks), 0);
    for (size_t i = 0; i < json_array_size(ks); i++) {
        json_t *k = json_array_get(ks, i);
        snprintf(path, sizeof path, "%s/%s", dir, json_string_value(json_object_get(k, "file")));
        ck_assert_msg(access(path, R_OK) == 0, "%s is listed but missing", path);
        ck_assert_ptr_nonnull(json_object_get(k, "config"));
        const char *hash = json_string_value(json_object_get(k, "source_hash"));
        ck_assert_msg(hash && !strncmp(hash, "murmur3-128:", 12) && strlen(hash) == 12 + 32, "source_hash %s",
                      hash ? hash : "(none)");
        json_t *sm90 = json_object_get(json_object_get(k, "compile"), "sm_90");
        ck_assert_msg(json_is_true(json_object_get(sm90, "ok")), "%s: sm_90 not ok",
                      json_string_value(json_object_get(k, "name")));
        ck_assert_int_gt(json_integer_value(json_object_get(sm90, "cubin_bytes")), 0);
    }
    int n = (int)json_array_size(ks);
    json_decref(m);
    return n;
}

/* Every file of a (manifest and .cu files) is in b with the same bytes, and the other way round. */
static void same_files(const char *a, const char *b)
{
    char pat[1024];
    glob_t ga, gb;
    snprintf(pat, sizeof pat, "%s/*.*", a);
    ck_assert_int_eq(glob(pat, 0, NULL, &ga), 0);
    snprintf(pat, sizeof pat, "%s/*.*", b);
    ck_assert_int_eq(glob(pat, 0, NULL, &gb), 0);
    ck_assert_uint_eq(ga.gl_pathc, gb.gl_pathc);
    for (size_t i = 0; i < ga.gl_pathc; i++) {
        size_t na, nb;
        char *da = lg_test_slurp(ga.gl_pathv[i], &na), *db = lg_test_slurp(gb.gl_pathv[i], &nb);
        ck_assert_str_eq(strrchr(ga.gl_pathv[i], '/'), strrchr(gb.gl_pathv[i], '/'));
        ck_assert_msg(na == nb && !memcmp(da, db, na), "%s and %s differ", ga.gl_pathv[i], gb.gl_pathv[i]);
        free(da);
        free(db);
    }
    globfree(&ga);
    globfree(&gb);
}

START_TEST(cli_gen_writes_and_repeats)
{
    char *tmp = lg_test_tmpdir("lg_gen_cli_test"), d1[256], d2[256], *out, *err;
    snprintf(d1, sizeof d1, "%s/one/kernels", tmp); /* nested: gen makes the directories */
    snprintf(d2, sizeof d2, "%s/two", tmp);
    ck_assert_int_eq(run_cli(tmp, (const char *[]){"specs/tiny.lua", "-o", d1, "--quiet", NULL}, &out, &err), 0);
    ck_assert_msg(strstr(out, "[1/") == NULL, "--quiet printed progress:\n%s", out);
    ck_assert_ptr_nonnull(strstr(out, d1));
    int n = check_manifest(d1);
    free(out);
    free(err);
    ck_assert_int_eq(run_cli(tmp, (const char *[]){"specs/tiny.lua", "-o", d2, NULL}, &out, &err), 0);
    ck_assert_msg(strstr(out, "[1/") && strstr(out, " sm_90 ok ("), "no progress lines:\n%s", out);
    ck_assert_msg(lg_test_count_substr(out, " ok (") == 3 * n, "want %d ok lines:\n%s", 3 * n, out);
    same_files(d1, d2);
    free(out);
    free(err);
    lg_test_rm_rf(tmp);
    free(tmp);
}
END_TEST

START_TEST(cli_gen_errors)
{
    char *tmp = lg_test_tmpdir("lg_gen_cli_test"), d[256], *out, *err;
    snprintf(d, sizeof d, "%s/k", tmp);
    ck_assert_int_eq(run_cli(tmp, (const char *[]){"tests/data/specs/rank_zero.lua", "-o", d, NULL}, &out, &err), 1);
    ck_assert_msg(strstr(err, "tests/data/specs/rank_zero.lua:10: error:"), "stderr:\n%s", err);
    ck_assert_msg(access(d, F_OK) != 0, "a bad spec must not create the output directory");
    free(out), free(err);
    ck_assert_int_eq(run_cli(tmp, (const char *[]){"tests/data/specs/many_errors.lua", NULL}, &out, &err), 1);
    ck_assert_int_eq(lg_test_count_substr(err, "error:"), 6);
    free(out), free(err);
    ck_assert_int_eq(run_cli(tmp, (const char *[]){"specs/tiny.lua", "--arch", "sm_75", NULL}, &out, &err), 2);
    ck_assert_msg(strstr(err, "sm_75") && strstr(err, "usage:"), "stderr:\n%s", err);
    free(out), free(err);
    ck_assert_int_eq(run_cli(tmp, (const char *[]){"specs/tiny.lua", "--frobnicate", NULL}, &out, &err), 2);
    ck_assert_ptr_nonnull(strstr(err, "usage:"));
    free(out), free(err);
    ck_assert_int_eq(run_cli(tmp, (const char *[]){NULL}, &out, &err), 2);
    free(out), free(err);
    ck_assert_int_eq(run_cli(tmp, (const char *[]){"--help", NULL}, &out, &err), 0);
    ck_assert_ptr_nonnull(strstr(out, "usage: loragen gen SPEC"));
    free(out), free(err);
    /* --no-compile and --arch: only the sources and a manifest without compile results */
    ck_assert_int_eq(run_cli(tmp, (const char *[]){"specs/tiny.lua", "-o", d, "--arch=sm_90", "--no-compile", NULL},
                             &out, &err), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/manifest.json", d);
    char *m = lg_test_slurp(path, NULL);
    ck_assert_ptr_nonnull(strstr(m, "\"compiled\": false"));
    ck_assert_ptr_null(strstr(m, "cubin_bytes"));
    ck_assert_ptr_nonnull(strstr(m, "\"sm_90\""));
    ck_assert_ptr_null(strstr(m, "\"sm_80\""));
    free(m), free(out), free(err);
    lg_test_rm_rf(tmp);
    free(tmp);
}
END_TEST

/* A kernel that fails to compile is reported with its arch and NVRTC log; the rest still compile, the manifest
 * records the failure, and the exit status is 1. The failure is a syntax error planted after line 45 of a
 * copy of templates/lora/lora_dy.cuh, picked up through LORAGEN_SOURCE_DIR. */
START_TEST(cli_gen_compile_failure)
{
    char *tmp = lg_test_tmpdir("lg_gen_cli_test"), src[256], d[256], path[512], *out, *err;
    snprintf(src, sizeof src, "%s/src", tmp);
    ck_assert_int_eq(mkdir(src, 0777), 0);
    snprintf(src, sizeof src, "%s/src/templates", tmp);
    ck_assert_int_eq(mkdir(src, 0777), 0);
    snprintf(src, sizeof src, "%s/src/templates/lora", tmp);
    ck_assert_int_eq(mkdir(src, 0777), 0);
    snprintf(d, sizeof d, "%s/k", tmp);
    char *text = lg_test_slurp("templates/lora/lora_dy.cuh", NULL), *p = text;
    for (int l = 1; l < 46; l++)
        p = strchr(p, '\n') + 1;
    snprintf(path, sizeof path, "%s/lora_dy.cuh", src);
    FILE *f = fopen(path, "wb");
    fprintf(f, "%.*sint lg_planted_error = ;\n%s", (int)(p - text), text, p);
    fclose(f);
    free(text);
    snprintf(path, sizeof path, "%s/src", tmp);
    setenv("LORAGEN_SOURCE_DIR", path, 1);
    ck_assert_int_eq(run_cli(tmp, (const char *[]){"specs/tiny.lua", "-o", d, "--arch", "sm_90", "-q", NULL},
                             &out, &err), 1);
    ck_assert_msg(strstr(err, "lg_dy_") && strstr(err, "sm_90 FAILED"), "stderr:\n%s", err);
    ck_assert_msg(strstr(err, "templates/lora/lora_dy.cuh(46)"), "no NVRTC log pointing into templates/:\n%s", err);
    ck_assert_msg(strstr(out, "1 failed"), "summary:\n%s", out);
    snprintf(path, sizeof path, "%s/manifest.json", d);
    json_t *m = json_load_file(path, 0, NULL);
    ck_assert_ptr_nonnull(m);
    json_t *ks = json_object_get(m, "kernels");
    int failed = 0, ok = 0;
    for (size_t i = 0; i < json_array_size(ks); i++) {
        json_t *r = json_object_get(json_object_get(json_array_get(ks, i), "compile"), "sm_90");
        if (json_is_true(json_object_get(r, "ok")))
            ok++;
        else {
            failed++;
            ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(r, "error")), "lora/lora_dy.cuh(46)"));
        }
    }
    ck_assert_int_eq(failed, 1);
    ck_assert_int_eq(ok, (int)json_array_size(ks) - 1);
    json_decref(m);
    free(out), free(err);
    lg_test_rm_rf(tmp);
    free(tmp);
}
END_TEST

/* ---- suite ---- */

int main(void)
{
    Suite *s = suite_create("gen_cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 0); /* no time limits in tests: NVRTC and machines vary */
    suite_add_tcase(s, tc);
    tcase_add_test(tc, cli_gen_writes_and_repeats);
    tcase_add_test(tc, cli_gen_errors);
    tcase_add_test(tc, cli_gen_compile_failure);
    int failed = lg_test_run(s, 0);
    return failed ? 1 : 0;
}
