/* test_tune_db.c: the tuning database (runtime/tune/db.c, db_json.c) and `loragen tune` as a program: round
 * trip, deterministic bytes, corrupt, truncated, other-format and other-version files refused naming the file
 * and the reason, key matching and the fallback when nothing matches, the process database from
 * $LORAGEN_TUNE_DB, lg_tune_set_path and the default path; the verb's bad flags, its dry run and its failure
 * without a GPU. No GPU. */
#include "lg_test.h"
#include "lg_tune.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the database ---- */

static struct lg_tune_entry entry(const char *op, const char *shape, int tokens, const char *gpu)
{
    struct lg_tune_entry e;
    memset(&e, 0, sizeof e);
    snprintf(e.key.op, sizeof e.key.op, "%s", op);
    snprintf(e.key.shape, sizeof e.key.shape, "%s", shape);
    snprintf(e.key.gpu, sizeof e.key.gpu, "%s", gpu);
    e.key.tokens = tokens, e.key.dtype = LG_BF16, e.key.arch = 90, e.key.sm_count = 132;
    e.nparams = 2;
    snprintf(e.params[0].name, sizeof e.params[0].name, "down_wm");
    e.params[0].value = 2;
    snprintf(e.params[1].name, sizeof e.params[1].name, "fwd_algo");
    e.params[1].value = 3;
    e.time_ms = 0.8125, e.default_ms = 0.9375, e.candidates = 40, e.failed = 1;
    return e;
}

static lg_tune_db_t *sample_db(void)
{
    lg_tune_db_t *db;
    CHECK(lg_tune_db_init(&db));
    struct lg_tune_info in = {.gpu = "NVIDIA H200", .sm_count = 132, .arch = 90, .driver = 12040, .nvrtc = 12040,
                              .cublaslt = 120401, .date = "2026-12-02T01:00:00Z"};
    lg_tune_db_set_info(db, &in);
    struct lg_tune_entry a = entry("lora", "k4096_m4096_r16_p1", 8192, "NVIDIA H200");
    struct lg_tune_entry b = entry("lora", "k4096_m1024_r16_p1", 2048, "NVIDIA H200");
    struct lg_tune_entry c = entry("norm_fwd", "k4096", 0, "NVIDIA H200");
    CHECK(lg_tune_db_put(db, &a));
    CHECK(lg_tune_db_put(db, &b));
    CHECK(lg_tune_db_put(db, &c));
    return db;
}

static char *tmp;
static void tmp_up(void) { tmp = lg_test_tmpdir("lg-tune"); }
static void tmp_down(void) { lg_test_rm_rf(tmp), free(tmp); }

START_TEST(db_round_trip)
{
    lg_tune_db_t *db = sample_db();
    char *p = lg_test_path(tmp, "sub/tune.json"), *p2 = lg_test_path(tmp, "sub/again.json");
    char *dir = lg_test_path(tmp, "sub");
    CHECK(lg_dir_create(dir));
    CHECK(lg_tune_db_save(db, p));
    lg_tune_db_t *rd;
    CHECK(lg_tune_db_load(p, &rd));
    ck_assert_int_eq(lg_tune_db_count(rd), 3);
    ck_assert_str_eq(lg_tune_db_info(rd)->gpu, "NVIDIA H200");
    ck_assert_int_eq(lg_tune_db_info(rd)->cublaslt, 120401);
    ck_assert_str_eq(lg_tune_db_info(rd)->date, "2026-12-02T01:00:00Z");
    for (int i = 0; i < 3; i++) {
        const struct lg_tune_entry *e = lg_tune_db_entry(db, i), *f = lg_tune_db_find(rd, &e->key);
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(f->nparams, 2);
        ck_assert_int_eq(lg_tune_entry_param(f, "down_wm", 0), 2);
        ck_assert_int_eq(lg_tune_entry_param(f, "fwd_algo", 0), 3);
        ck_assert_int_eq(lg_tune_entry_param(f, "absent", 7), 7);
        ck_assert(fabs(f->time_ms - 0.8125) < 1e-9 && fabs(f->default_ms - 0.9375) < 1e-9);
        ck_assert_int_eq(f->candidates, 40);
        ck_assert_int_eq(f->failed, 1);
    }
    /* the same database gives the same bytes, whatever the insertion order */
    CHECK(lg_tune_db_save(rd, p2));
    size_t n1, n2;
    char *t1 = lg_test_slurp(p, &n1), *t2 = lg_test_slurp(p2, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert(!memcmp(t1, t2, n1));
    /* a put with the same key replaces */
    struct lg_tune_entry e = entry("lora", "k4096_m4096_r16_p1", 8192, "NVIDIA H200");
    e.params[0].value = 4;
    CHECK(lg_tune_db_put(rd, &e));
    ck_assert_int_eq(lg_tune_db_count(rd), 3);
    ck_assert_int_eq(lg_tune_entry_param(lg_tune_db_find(rd, &e.key), "down_wm", 0), 4);
    free(t1), free(t2), free(p), free(p2), free(dir);
    lg_tune_db_free(db), lg_tune_db_free(rd);
}
END_TEST

START_TEST(db_key_matching)
{
    lg_tune_db_t *db = sample_db();
    struct lg_tune_key k = entry("lora", "k4096_m4096_r16_p1", 8192, "NVIDIA H200").key;
    ck_assert_ptr_nonnull(lg_tune_db_find(db, &k));
    /* each field of the key matters: anything else falls back (NULL: the caller keeps the defaults) */
    struct lg_tune_key m = k;
    m.tokens = 4096;
    ck_assert_ptr_null(lg_tune_db_find(db, &m));
    m = k, m.sm_count = 114;
    ck_assert_ptr_null(lg_tune_db_find(db, &m));
    m = k, snprintf(m.gpu, sizeof m.gpu, "NVIDIA H100 80GB HBM3");
    ck_assert_ptr_null(lg_tune_db_find(db, &m));
    m = k, m.arch = 89;
    ck_assert_ptr_null(lg_tune_db_find(db, &m));
    m = k, m.dtype = LG_FP16;
    ck_assert_ptr_null(lg_tune_db_find(db, &m));
    m = k, snprintf(m.shape, sizeof m.shape, "k4096_m4096_r16_p0");
    ck_assert_ptr_null(lg_tune_db_find(db, &m));
    m = k, snprintf(m.op, sizeof m.op, "mlora");
    ck_assert_ptr_null(lg_tune_db_find(db, &m));
    /* buckets: the smallest power of two at or above the count, at least 256 */
    ck_assert_int_eq(lg_tune_bucket(1), 256);
    ck_assert_int_eq(lg_tune_bucket(8192), 8192);
    ck_assert_int_eq(lg_tune_bucket(8193), 16384);
    ck_assert_int_eq(lg_tune_bucket(5000), 8192);
    lg_tune_db_free(db);
}
END_TEST

/* Writes text as a database file and expects it refused with a message naming the file and containing want. */
static void expect_refused(const char *name, const char *text, const char *want)
{
    char *p = lg_test_path(tmp, name);
    lg_test_write_text(p, text);
    lg_tune_db_t *db = NULL;
    enum lg_status st = lg_tune_db_load(p, &db);
    ck_assert_msg(st != LG_OK, "%s was accepted", name);
    ck_assert_ptr_null(db);
    ck_assert_msg(strstr(lg_last_error(), p) && strstr(lg_last_error(), want), "%s: '%s' lacks '%s'", name,
                  lg_last_error(), want);
    free(p);
}

START_TEST(db_refuses_bad_files)
{
    lg_tune_db_t *db = sample_db();
    char *p = lg_test_path(tmp, "good.json");
    CHECK(lg_tune_db_save(db, p));
    size_t n;
    char *good = lg_test_slurp(p, &n);
    /* truncated at every tenth of the file */
    for (int cut = 1; cut < 10; cut++) {
        char *t = strndup(good, n * (size_t)cut / 10);
        expect_refused("truncated.json", t, "corrupt or truncated JSON");
        free(t);
    }
    expect_refused("garbage.json", "\x01\x02 not json", "corrupt or truncated JSON");
    expect_refused("array.json", "[1, 2]", "not a JSON object");
    expect_refused("other.json", "{\"format\": \"something-else\", \"version\": 1}", "format");
    /* another version: the message says to re-tune */
    char *v2 = strdup(good);
    char *at = strstr(v2, "\"version\": 1");
    ck_assert_ptr_nonnull(at);
    at[11] = '2';
    expect_refused("v2.json", v2, "version 2");
    /* a bad field names the entry and the field */
    char *bad = strdup(good);
    at = strstr(bad, "\"down_wm\": 2");
    ck_assert_ptr_nonnull(at);
    memcpy(at, "\"down_wm\":[]", 12);
    expect_refused("badparam.json", bad, "entries[0].params.down_wm: not an integer");
    char *neg = strdup(good);
    at = strstr(neg, "\"time_ms\": ");
    ck_assert_ptr_nonnull(at);
    at[11] = '-', at[12] = '1'; /* 0.8125 -> -18125 */
    expect_refused("negtime.json", neg, "time_ms");
    char *dt = strdup(good);
    at = strstr(dt, "\"bf16\"");
    memcpy(at, "\"fp32\"", 6);
    expect_refused("dtype.json", dt, "dtype");
    expect_refused("noentries.json",
                   "{\"format\": \"loragen-tune\", \"version\": 1, \"measured_on\": {\"gpu\": \"G\", \"sm_count\": 1, "
                   "\"arch\": 90, \"driver\": 1, \"nvrtc\": 1, \"cublaslt\": 1, \"date\": \"d\"}}",
                   "entries");
    /* a missing file */
    lg_tune_db_t *none = NULL;
    char *missing = lg_test_path(tmp, "missing.json");
    ck_assert_int_ne(lg_tune_db_load(missing, &none), LG_OK);
    ck_assert_msg(strstr(lg_last_error(), missing), "%s", lg_last_error());
    free(missing), free(v2), free(bad), free(neg), free(dt), free(good), free(p);
    lg_tune_db_free(db);
}
END_TEST

/* ---- the process database ---- */

/* Every shipped database (tunedb/) loads: a file the runtime would report and ignore must not ship. */
START_TEST(shipped_databases_load)
{
    const char *files[] = {"tunedb/h200.json"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        lg_tune_db_t *db = NULL;
        if (lg_tune_db_load(files[i], &db) != LG_OK)
            ck_abort_msg("%s: %s", files[i], lg_last_error());
        ck_assert_int_gt(lg_tune_db_count(db), 0);
        lg_tune_db_free(db);
    }
}
END_TEST

START_TEST(default_db_from_env)
{
    lg_tune_db_t *db = sample_db();
    char *p = lg_test_path(tmp, "env.json");
    CHECK(lg_tune_db_save(db, p));
    setenv("LORAGEN_TUNE_DB", p, 1);
    ck_assert_str_eq(lg_tune_default_path(), p);
    struct lg_tune_key k = entry("norm_fwd", "k4096", 0, "NVIDIA H200").key;
    ck_assert_ptr_nonnull(lg_tune_lookup(&k));
    ck_assert_int_eq(lg_tune_db_count(lg_tune_default()), 3);
    ck_assert_str_eq(lg_tune_default_problem(), "");
    k.sm_count = 1;
    ck_assert_ptr_null(lg_tune_lookup(&k));
    free(p);
    lg_tune_db_free(db);
}
END_TEST

START_TEST(default_db_corrupt_is_ignored)
{
    char *p = lg_test_path(tmp, "corrupt.json");
    lg_test_write_text(p, "{\"format\": \"loragen-tune\", \"vers");
    setenv("LORAGEN_TUNE_DB", p, 1);
    const lg_tune_db_t *db = lg_tune_default();
    ck_assert_ptr_nonnull(db);
    ck_assert_int_eq(lg_tune_db_count(db), 0);
    ck_assert_msg(strstr(lg_tune_default_problem(), p) && strstr(lg_tune_default_problem(), "truncated"), "%s",
                  lg_tune_default_problem());
    free(p);
}
END_TEST

START_TEST(default_db_override_and_off)
{
    setenv("LORAGEN_TUNE_DB", "off", 1);
    ck_assert_str_eq(lg_tune_default_path(), "");
    unsetenv("LORAGEN_TUNE_DB");
    setenv("XDG_CACHE_HOME", "/nonexistent-xdg", 1);
    ck_assert_str_eq(lg_tune_default_path(), "/nonexistent-xdg/loragen/tune.json");
    /* no file at the default path: empty, and not a problem */
    ck_assert_int_eq(lg_tune_db_count(lg_tune_default()), 0);
    ck_assert_str_eq(lg_tune_default_problem(), "");
}
END_TEST

START_TEST(default_db_set_path_missing)
{
    char *p = lg_test_path(tmp, "nothing-here.json");
    CHECK(lg_tune_set_path(p));
    ck_assert_int_eq(lg_tune_db_count(lg_tune_default()), 0);
    ck_assert_msg(strstr(lg_tune_default_problem(), p), "%s", lg_tune_default_problem());
    free(p);
}
END_TEST

/* ---- loragen tune: its errors ---- */

struct cli_case {
    const char *args[8]; /* const: tiny is a run-time string */
    int status;
    const char *want; /* in stderr */
};

START_TEST(cli_errors)
{
    char *bad = lg_test_path(tmp, "bad.json"), *tiny = realpath("specs/tiny.lua", NULL);
    ck_assert_msg(tiny, "run from the source tree (specs/tiny.lua)");
    lg_test_write_text(bad, "{\"format\": \"loragen-tune\", \"version\": 7}");
    const struct cli_case cases[] = {
        {{"tune", NULL}, 2, "missing SPEC"},
        {{"tune", tiny, "--tokens", NULL}, 2, "--tokens expects a comma-separated list"},
        {{"tune", tiny, "--tokens", "2048,x", NULL}, 2, "--tokens expects an integer in 1..16777216, got 'x'"},
        {{"tune", tiny, "--tokens", "2048,,4096", NULL}, 2, "--tokens expects a comma-separated list"},
        {{"tune", tiny, "--max-candidates", "0", NULL}, 2, "--max-candidates expects an integer in 1..4096"},
        {{"tune", tiny, "--rounds", "many", NULL}, 2, "--rounds expects an integer"},
        {{"tune", tiny, "--out", NULL}, 2, "--out expects a file name"},
        {{"tune", tiny, "--frobnicate", NULL}, 2, "unknown option '--frobnicate'"},
        {{"tune", tiny, "--families", "lora,gpu", NULL}, 2, "--families: 'gpu' is not one of lora, mlora, attention"},
        {{"tune", tiny, "--adapters", "0", NULL}, 2, "--adapters expects an integer in 1..4096"},
        {{"tune", tiny, "--arch", "sm_75", NULL}, 2, "--arch expects sm_80, sm_86, sm_89 or sm_90"},
        {{"tune", tiny, tiny, NULL}, 2, "one SPEC expected"},
        {{"tune", "specs/no-such-spec.lua", NULL}, 1, "specs/no-such-spec.lua"},
        {{"tune", tiny, "--out", bad, NULL}, 1, "is not a tuning database loragen can read"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out, *err;
        int st = lg_test_loragen_run(tmp, cases[i].args, &out, &err);
        ck_assert_msg(st == cases[i].status && strstr(err, cases[i].want), "case %zu: exit %d, stderr '%s' (want %d, '%s')",
                      i, st, err, cases[i].status, cases[i].want);
        free(out), free(err);
    }
    /* the bad file was left as it was */
    size_t n;
    char *text = lg_test_slurp(bad, &n);
    ck_assert(strstr(text, "\"version\": 7"));
    free(text), free(bad), free(tiny);
}
END_TEST

START_TEST(cli_without_gpu)
{
    if (lg_test_have_gpu())
        return; /* test_tune_gpu tunes for real */
    char *out, *err, *db = lg_test_path(tmp, "new.json"), *tiny = realpath("specs/tiny.lua", NULL);
    const char *args[] = {"tune", tiny, "--out", db, NULL};
    int st = lg_test_loragen_run(tmp, args, &out, &err);
    ck_assert_msg(st == 1 && strstr(err, "loragen tune: no GPU"), "exit %d, stderr '%s'", st, err);
    ck_assert_int_ne(access(db, F_OK), 0); /* nothing written */
    free(out), free(err), free(db), free(tiny);
}
END_TEST

START_TEST(cli_dry_run)
{
    char *out, *err, *spec = realpath("specs/llama-3.1-8b.lua", NULL);
    const char *args[] = {"tune", spec, "--dry-run", "--arch", "sm_89", "--tokens", "2048,8192", NULL};
    int st = lg_test_loragen_run(tmp, args, &out, &err);
    ck_assert_msg(st == 0, "exit %d: %s", st, err);
    ck_assert_msg(strstr(out, "lora k4096_m14336 (gate_proj)") && strstr(out, "attention hq32_hkv8_d128_det") &&
                  strstr(out, "mlora q,k,v x1 adapters") && strstr(out, "17 jobs"), "%s", out);
    ck_assert_int_eq(lg_test_count_substr(out, "  down "), 8);      /* 4 FusedLoRA shapes, 4 FusedMultiLoRA layers */
    ck_assert_int_eq(lg_test_count_substr(out, "  expand "), 4);
    free(out), free(err), free(spec);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tune_db");
    TCase *d = tcase_create("db");
    tcase_add_checked_fixture(d, tmp_up, tmp_down);
    tcase_add_test(d, db_round_trip);
    tcase_add_test(d, db_key_matching);
    tcase_add_test(d, db_refuses_bad_files);
    tcase_add_test(d, shipped_databases_load);
    tcase_add_test(d, default_db_from_env);
    tcase_add_test(d, default_db_corrupt_is_ignored);
    tcase_add_test(d, default_db_override_and_off);
    tcase_add_test(d, default_db_set_path_missing);
    tcase_add_test(d, cli_errors);
    tcase_add_test(d, cli_without_gpu);
    tcase_add_test(d, cli_dry_run);
    suite_add_tcase(s, d);
    return lg_test_run(s, 0);
}
