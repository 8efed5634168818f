/* test_tune_online.c: online tuning without a GPU. lg_tune_lookup_at with a stand-in tuner: a key the database
 * has is not tuned; a new key is tuned once (with the caller's token count and context), filed under the key
 * asked for, and saved to the database file merged with what another process wrote there meanwhile; a failed
 * key is asked once; the tuner's own lookups never tune; with LORAGEN_TUNE_DB=off nothing is written, and a file
 * the process refused is not overwritten. lg_tuner_key_job reads every key spelling back and refuses the rest.
 * `loragen train` refuses a bad LORAGEN_TUNE_ONLINE naming it. */
#include "lg_test.h"
#include "lg_tuner.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *tmp;
static void tmp_up(void) { tmp = lg_test_tmpdir("lg-tune-online"); }
static void tmp_down(void) { lg_test_rm_rf(tmp), free(tmp); }

static struct lg_tune_key key(const char *op, const char *shape, int tokens)
{
    struct lg_tune_key k;
    memset(&k, 0, sizeof k);
    snprintf(k.op, sizeof k.op, "%s", op);
    snprintf(k.shape, sizeof k.shape, "%s", shape);
    snprintf(k.gpu, sizeof k.gpu, "NVIDIA H200");
    k.tokens = tokens, k.dtype = LG_BF16, k.arch = 90, k.sm_count = 132;
    return k;
}

static struct lg_tune_entry entry_for(const struct lg_tune_key *k, int value)
{
    struct lg_tune_entry e;
    memset(&e, 0, sizeof e);
    e.key = *k;
    e.nparams = 1;
    snprintf(e.params[0].name, sizeof e.params[0].name, "dy_nct");
    e.params[0].value = value;
    e.time_ms = 1.0, e.default_ms = 1.25, e.candidates = 9;
    return e;
}

/* the stand-in tuner: counts its calls, fails on shapes starting with "bad", looks a key up from inside */
struct fake {
    int calls;
    int64_t tokens;
    void *ctx;
};

static enum lg_status fake_tune(void *u, void *ctx, const struct lg_tune_key *k, int64_t tokens,
                                struct lg_tune_entry *out, struct lg_tune_info *info)
{
    struct fake *f = u;
    f->calls++, f->tokens = tokens, f->ctx = ctx;
    if (!strncmp(k->shape, "bad", 3))
        return lg_fail(LG_ERR_INVALID, "the stand-in refuses %s", k->shape);
    struct lg_tune_key inner = key("mlora", "k64_m64_r8_a1_p0", 256); /* as a tuner's own layer would */
    ck_assert_ptr_null(lg_tune_lookup_at(&inner, 256, ctx));
    *out = entry_for(k, 4);
    out->key.tokens = 12345; /* a tuner's own key may differ: the entry is filed under the one asked for */
    memset(info, 0, sizeof *info);
    snprintf(info->gpu, sizeof info->gpu, "NVIDIA H200");
    info->sm_count = 132, info->arch = 90;
    snprintf(info->date, sizeof info->date, "2026-12-02T00:00:00Z");
    return LG_OK;
}

static void save_with(const char *path, const struct lg_tune_key *k, int value)
{
    lg_tune_db_t *db;
    CHECK(lg_tune_db_init(&db));
    if (access(path, F_OK) == 0) {
        lg_tune_db_free(db);
        CHECK(lg_tune_db_load(path, &db));
    }
    struct lg_tune_info in = {.gpu = "NVIDIA H200", .sm_count = 132, .arch = 90, .date = "2026-12-02T01:00:00Z"};
    lg_tune_db_set_info(db, &in);
    struct lg_tune_entry e = entry_for(k, value);
    CHECK(lg_tune_db_put(db, &e));
    CHECK(lg_tune_db_save(db, path));
    lg_tune_db_free(db);
}

START_TEST(online_tunes_new_keys_once)
{
    char *path = lg_test_path(tmp, "tune.json");
    struct lg_tune_key have = key("lora", "k4096_m4096_r16_p1", 8192), fresh = key("mlora", "k4096_m4096_r16_a2_p1", 8192);
    struct lg_tune_key other = key("lora", "k4096_m1024_r16_p1", 2048), failing = key("lora", "bad_shape", 1024);
    save_with(path, &have, 2);
    CHECK(lg_tune_set_path(path));
    struct fake f = {0};
    int ctx_stand_in;
    lg_tune_set_online(fake_tune, &f);
    const struct lg_tune_entry *e = lg_tune_lookup_at(&have, 8000, &ctx_stand_in);
    ck_assert_msg(e && f.calls == 0, "a key the database has was tuned again");
    /* another process of the run adds an entry to the file after this one read it */
    save_with(path, &other, 3);
    e = lg_tune_lookup_at(&fresh, 7777, &ctx_stand_in);
    ck_assert_int_eq(f.calls, 1);
    ck_assert(f.tokens == 7777 && f.ctx == &ctx_stand_in);
    ck_assert_msg(e && lg_tune_key_eq(&e->key, &fresh) && lg_tune_entry_param(e, "dy_nct", 0) == 4,
                  "the winner is not filed under the key asked for");
    ck_assert_int_eq(lg_tune_online_count(), 1);
    ck_assert_ptr_nonnull(lg_tune_lookup_at(&fresh, 9000, &ctx_stand_in));
    ck_assert_ptr_nonnull(lg_tune_lookup(&fresh));
    ck_assert_int_eq(f.calls, 1);
    /* the file: its two entries and the new one */
    lg_tune_db_t *disk;
    CHECK(lg_tune_db_load(path, &disk));
    ck_assert_int_eq(lg_tune_db_count(disk), 3);
    ck_assert_ptr_nonnull(lg_tune_db_find(disk, &have));
    ck_assert_ptr_nonnull(lg_tune_db_find(disk, &other));
    ck_assert_ptr_nonnull(lg_tune_db_find(disk, &fresh));
    lg_tune_db_free(disk);
    /* a failure: reported, the defaults (NULL), and not asked again */
    ck_assert_ptr_null(lg_tune_lookup_at(&failing, 1024, &ctx_stand_in));
    ck_assert_ptr_null(lg_tune_lookup_at(&failing, 1024, &ctx_stand_in));
    ck_assert_int_eq(f.calls, 2);
    ck_assert_int_eq(lg_tune_online_count(), 1);
    /* off again: a new key is not tuned */
    lg_tune_set_online(NULL, NULL);
    struct lg_tune_key later = key("attn", "hq32_hkv8_d128_det", 0);
    ck_assert_ptr_null(lg_tune_lookup_at(&later, 0, &ctx_stand_in));
    ck_assert_int_eq(f.calls, 2);
    free(path);
}
END_TEST

START_TEST(online_without_a_file)
{
    CHECK(lg_tune_set_path("")); /* LORAGEN_TUNE_DB=off */
    struct fake f = {0};
    lg_tune_set_online(fake_tune, &f);
    struct lg_tune_key k = key("lora", "k512_m512_r16_p0", 512);
    ck_assert_ptr_nonnull(lg_tune_lookup_at(&k, 500, NULL));
    ck_assert_ptr_nonnull(lg_tune_lookup(&k));
    ck_assert_int_eq(f.calls, 1);
    lg_tune_set_online(NULL, NULL);
}
END_TEST

START_TEST(online_keeps_a_refused_file)
{
    char *path = lg_test_path(tmp, "broken.json");
    const char *text = "{\"format\": \"loragen-tune\", \"version\": 1, \"entries\": [";
    lg_test_write_text(path, text);
    CHECK(lg_tune_set_path(path));
    struct fake f = {0};
    lg_tune_set_online(fake_tune, &f);
    struct lg_tune_key k = key("lora", "k512_m512_r16_p0", 512);
    ck_assert_msg(lg_tune_lookup_at(&k, 512, NULL) != NULL, "the winner is not kept for the process");
    size_t n;
    char *now = lg_test_slurp(path, &n);
    ck_assert_msg(!strcmp(now, text), "a database file the process refused was overwritten");
    free(now), free(path);
    lg_tune_set_online(NULL, NULL);
}
END_TEST

START_TEST(key_job_reads_every_spelling)
{
    struct lg_tuner_key_job j;
    struct lg_tune_key k = key("lora", "k4096_m14336_r16_p1", 8192);
    CHECK(lg_tuner_key_job(&k, &j));
    ck_assert(j.family == LG_TUNER_LORA && j.lora.in_features == 4096 && j.lora.out_features == 14336 &&
              j.lora.rank == 16 && j.lora.dropout > 0 && j.lora.dtype == LG_BF16);
    k = key("mlora", "k4096_m4096x1024x1024_r16_a4_p0", 8192);
    k.dtype = LG_FP16;
    CHECK(lg_tuner_key_job(&k, &j));
    ck_assert(j.family == LG_TUNER_MLORA && j.mlora.in_features == 4096 && j.mlora.nmod == 3 &&
              j.mlora.out_features[0] == 4096 && j.mlora.out_features[2] == 1024 && j.mlora.nadapters == 4 &&
              j.mlora.rank == 16 && j.mlora.dropout == 0 && j.mlora.dtype == LG_FP16);
    k = key("mlora", "k14336_m4096_r32_a1_p1", 2048);
    CHECK(lg_tuner_key_job(&k, &j));
    ck_assert(j.mlora.nmod == 1 && j.mlora.out_features[0] == 4096 && j.mlora.rank == 32);
    k = key("attn", "hq32_hkv8_d128_det", 0);
    CHECK(lg_tuner_key_job(&k, &j));
    ck_assert(j.family == LG_TUNER_ATTN && j.attn.hq == 32 && j.attn.hkv == 8 && j.attn.head_dim == 128 &&
              (j.attn.flags & LG_ATTN_DETERMINISTIC) && j.attn.backend == LG_ATTN_GENERATED);
    k = key("attn", "hq40_hkv8_d128_atomic", 0);
    CHECK(lg_tuner_key_job(&k, &j));
    ck_assert(!(j.attn.flags & LG_ATTN_DETERMINISTIC));
    const char *bad[][2] = {
        {"lora", "k4096_m_r16_p1"},           {"lora", "k4096_m4096_r16_p2"},  {"lora", "k4096_m4096_r16_p1x"},
        {"mlora", "k4096_m4096x_r16_a1_p1"},  {"mlora", "k64_m64x64x64x64_r8_a1_p0"},
        {"mlora", "k4096_m4096_r16_a0_p1"},   {"mlora", "k4096_mx64_r16_a1_p1"},
        {"attn", "hq32_hkv8_d128_fast"},      {"attn", "hq32_hkv8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        k = key(bad[i][0], bad[i][1], 0);
        ck_assert_msg(lg_tuner_key_job(&k, &j) == LG_ERR_INVALID, "%s %s was read", bad[i][0], bad[i][1]);
        ck_assert_msg(strstr(lg_last_error(), bad[i][1]), "%s", lg_last_error());
    }
    k = key("norm_fwd", "k4096", 0);
    ck_assert_int_eq(lg_tuner_key_job(&k, &j), LG_ERR_UNSUPPORTED);
}
END_TEST

START_TEST(cli_refuses_a_bad_env_value)
{
    setenv("LORAGEN_TUNE_ONLINE", "maybe", 1);
    char *out, *err;
    const char *args[] = {"train", "specs/jobs/does-not-matter.lua", NULL};
    int st = lg_test_loragen_run(tmp, args, &out, &err);
    unsetenv("LORAGEN_TUNE_ONLINE");
    ck_assert_msg(st == 2 && strstr(err, "LORAGEN_TUNE_ONLINE is 'maybe'"), "status %d: %s", st, err);
    free(out), free(err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tune_online");
    TCase *t = tcase_create("online");
    tcase_add_checked_fixture(t, tmp_up, tmp_down);
    tcase_add_test(t, online_tunes_new_keys_once);
    tcase_add_test(t, online_without_a_file);
    tcase_add_test(t, online_keeps_a_refused_file);
    tcase_add_test(t, key_job_reads_every_spelling);
    tcase_add_test(t, cli_refuses_a_bad_env_value);
    suite_add_tcase(s, t);
    return lg_test_run(s, 0); /* forked: each test gets its own process database */
}
