/* test_hf.c: safetensors (lg_hf.h): write/read round trips (names, dtypes, shapes, bytes, metadata, tensors
 * streamed through a read callback), the header layout the Python library writes, sharded directories split as
 * huggingface_hub does with their index, and every malformed file or directory the reader must refuse, each
 * with the message it must give. Fixtures are written into a temp dir; test_hf_config.c covers config.json and
 * PEFT. */
#include "lg_hf.h"
#include "lg_half.h"
#include "lg_test.h"

#include <check.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

static char *dir; /* per test (each runs in its own process) */

static void setup(void) { dir = lg_test_tmpdir("lg_hf"); }
static void teardown(void) { lg_test_rm_rf(dir), free(dir); }

static const char *at(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void put_file(const char *path, const void *data, size_t n) { lg_test_write_file(path, data, n); }
static void put_text(const char *path, const char *text) { lg_test_write_text(path, text); }

/* A safetensors file from a header text and `data` zero bytes; hlen overrides the length field when != 0. */
static void put_st(const char *path, const char *header, size_t data, uint64_t hlen)
{
    size_t n = strlen(header);
    unsigned char *b = calloc(1, 8 + n + data);
    uint64_t h = hlen ? hlen : n;
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(h >> (8 * i));
    memcpy(b + 8, header, n);
    put_file(path, b, 8 + n + data);
    free(b);
}

/* The call must fail with `want` and the message hold every fragment (NULL-terminated). */
static void expect_fail(enum lg_status got, enum lg_status want, ...)
{
    const char *msg = lg_last_error();
    ck_assert_msg(got == want, "status %s, wanted %s (%s)", lg_status_str(got), lg_status_str(want), msg);
    va_list ap;
    va_start(ap, want);
    for (const char *f; (f = va_arg(ap, const char *));)
        ck_assert_msg(strstr(msg, f), "message lacks '%s':\n%s", f, msg);
    va_end(ap);
}

/* ---- safetensors ---- */

static enum lg_status ramp(void *user, uint64_t off, void *buf, size_t n)
{
    (void)user;
    for (size_t i = 0; i < n; i++)
        ((unsigned char *)buf)[i] = (unsigned char)((off + i) * 7 + 3);
    return LG_OK;
}

START_TEST(st_roundtrip)
{
    float a[6], s = 2.5f;
    lg_test_fill(a, 6, lg_test_seed(), 1);
    uint16_t b[8], h[3];
    for (int i = 0; i < 8; i++)
        b[i] = lg_f32_to_bf16(a[i % 6] * 3);
    for (int i = 0; i < 3; i++)
        h[i] = lg_f32_to_f16(a[i] - 1);
    int32_t ids[2] = {-7, 1 << 30};
    const uint64_t big = (17u << 20) + 5; /* streamed through the callback, over one 16 MiB chunk */
    struct lg_st_write_tensor t[] = {
        {.name = "w.weight", .dtype = LG_ST_F32, .ndim = 2, .shape = {2, 3}, .data = a},
        {.name = "bf", .dtype = LG_ST_BF16, .ndim = 3, .shape = {2, 2, 2}, .data = b},
        {.name = "half", .dtype = LG_ST_F16, .ndim = 1, .shape = {3}, .data = h},
        {.name = "scalar", .dtype = LG_ST_F32, .ndim = 0, .data = &s},
        {.name = "empty", .dtype = LG_ST_F32, .ndim = 2, .shape = {0, 3}},
        {.name = "ids", .dtype = LG_ST_I32, .ndim = 1, .shape = {2}, .data = ids},
        {.name = "big", .dtype = LG_ST_U8, .ndim = 1, .shape = {(int64_t)big}, .read = ramp},
    };
    const char *kv[] = {"note", "héllo", "step", "12", NULL};
    CHECK(lg_st_write(at("a.safetensors"), t, 7, kv));
    lg_st_t *st;
    CHECK(lg_st_open(at("a.safetensors"), &st));
    ck_assert_uint_eq(lg_st_count(st), 7);
    static const char *sorted[] = {"bf", "big", "empty", "half", "ids", "scalar", "w.weight"};
    for (size_t i = 0; i < 7; i++) {
        struct lg_st_tensor v;
        CHECK(lg_st_tensor(st, i, &v));
        ck_assert_str_eq(v.name, sorted[i]);
        ck_assert_str_eq(v.file, at("a.safetensors"));
    }
    for (size_t i = 0; i < 7; i++) {
        struct lg_st_tensor v;
        CHECK(lg_st_find(st, t[i].name, &v));
        ck_assert_int_eq(v.dtype, t[i].dtype);
        ck_assert_int_eq(v.ndim, t[i].ndim);
        for (int d = 0; d < v.ndim; d++)
            ck_assert_int_eq(v.shape[d], t[i].shape[d]);
        if (t[i].data)
            ck_assert_int_eq(memcmp(v.data, t[i].data, v.nbytes), 0);
    }
    struct lg_st_tensor v;
    CHECK(lg_st_find(st, "big", &v));
    ck_assert_uint_eq(v.nbytes, big);
    unsigned char *want = malloc(big);
    ramp(NULL, 0, want, big);
    ck_assert_int_eq(memcmp(v.data, want, big), 0);
    free(want);
    float f[8];
    CHECK(lg_st_read_f32(st, "bf", 3, (int64_t[]){2, 2, 2}, f));
    for (int i = 0; i < 8; i++)
        ck_assert_float_eq(f[i], lg_bf16_to_f32(b[i]));
    CHECK(lg_st_read_f32(st, "half", 1, (int64_t[]){3}, f));
    for (int i = 0; i < 3; i++)
        ck_assert_float_eq(f[i], lg_f16_to_f32(h[i]));
    CHECK(lg_st_read_f32(st, "scalar", 0, NULL, f));
    ck_assert_float_eq(f[0], 2.5f);
    ck_assert_str_eq(lg_st_metadata(st, "format"), "pt");
    ck_assert_str_eq(lg_st_metadata(st, "note"), "héllo");
    ck_assert_ptr_null(lg_st_metadata(st, "nope"));
    ck_assert(!lg_st_contains(st, "nope") && lg_st_contains(st, "ids"));
    lg_st_close(st);
    /* the layout safetensors.serialize gives: 8-aligned header, descending dtype then name */
    char *raw = lg_test_slurp(at("a.safetensors"), NULL);
    ck_assert_uint_eq(((unsigned char)raw[0] | (unsigned char)raw[1] << 8) % 8, 0);
    const char *order[] = {"\"scalar\"", "\"w.weight\"", "\"ids\"", "\"bf\"", "\"half\"", "\"big\""};
    for (int i = 1; i < 6; i++)
        ck_assert_msg(strstr(raw + 8, order[i - 1]) < strstr(raw + 8, order[i]), "%s before %s", order[i - 1],
                      order[i]);
    ck_assert(strstr(raw + 8, "\"empty\"") < strstr(raw + 8, "\"scalar\""));
    const char *head = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"h\u00e9llo\",\"step\":\"12\"},";
    ck_assert_msg(strncmp(raw + 8, head, strlen(head)) == 0, "%.80s", raw + 8);
    free(raw);
}
END_TEST

START_TEST(st_read_errors)
{
    float a[6] = {1, 2, 3, 4, 5, 6};
    int32_t i32[2] = {1, 2};
    struct lg_st_write_tensor t[] = {{.name = "w", .dtype = LG_ST_F32, .ndim = 2, .shape = {2, 3}, .data = a},
                                     {.name = "i", .dtype = LG_ST_I32, .ndim = 1, .shape = {2}, .data = i32}};
    CHECK(lg_st_write(at("a.safetensors"), t, 2, NULL));
    lg_st_t *st;
    CHECK(lg_st_open(at("a.safetensors"), &st));
    float out[6];
    expect_fail(lg_st_read_f32(st, "w", 2, (int64_t[]){3, 2}, out), LG_ERR_IO, at("a.safetensors"),
                ": tensor w: shape [2, 3], expected [3, 2]", NULL);
    expect_fail(lg_st_read_f32(st, "w", 1, (int64_t[]){6}, out), LG_ERR_IO, "shape [2, 3], expected [6]", NULL);
    expect_fail(lg_st_read_f32(st, "i", 1, (int64_t[]){2}, out), LG_ERR_UNSUPPORTED, "tensor i: dtype I32", NULL);
    expect_fail(lg_st_read_f32(st, "nope", 1, (int64_t[]){2}, out), LG_ERR_IO, "no tensor 'nope'", NULL);
    expect_fail(lg_st_find(st, "nope", &(struct lg_st_tensor){0}), LG_ERR_IO, at("a.safetensors"), "'nope'", NULL);
    lg_st_close(st);
    struct lg_st_write_tensor dup[] = {t[0], t[0]};
    expect_fail(lg_st_write(at("d.safetensors"), dup, 2, NULL), LG_ERR_INVALID, "'w' given twice", NULL);
    expect_fail(lg_st_write(at("d.safetensors"), t, 1, (const char *[]){"a", "1", "a", "2", NULL}),
                LG_ERR_INVALID, "metadata key 'a' given twice", NULL);
}
END_TEST

/* Each malformed file and the fragment its message must hold (besides the path). */
static const struct {
    const char *header;
    size_t data;
    uint64_t hlen;
    const char *frag;
} bad_files[] = {
    {"{}", 0, 1000, "header length 1000 runs past the end of the file"},
    {"{}", 0, 200000000, "over the 100000000-byte limit"},
    {"{not json", 0, 0, "header is not valid JSON"},
    {"[1, 2]", 0, 0, "header is not a JSON object"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
     "\"data_offsets\":[4,8]}}", 8, 0, "duplicate object key"},
    {"{\"a\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, "tensor 'a': unknown dtype 'F99'"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20, 0,
     "tensor 'a': data_offsets [0, 20] hold 20 bytes, but shape [2, 3] of F32 needs 24"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
     "\"data_offsets\":[4,12]}}", 12, 0, "tensor 'b' (data_offsets [4, 12]) overlaps tensor 'a'"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]}}", 10, 0,
     "tensor 'a': data_offsets [0, 24] run past the end of the data (10 bytes): the file is truncated"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],"
     "\"data_offsets\":[8,12]}}", 12, 0, "4 unused bytes before tensor 'b'"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 9, 0, "5 bytes after the last tensor"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, 0, "tensor 'a': 'shape' must be"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,4]}}", 4, 0,
     "tensor 'a': shape product overflows 64 bits"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, 0, "end before they begin"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, 0, "tensor 'a': 'data_offsets' must be [begin, end]"},
    {"{\"__metadata__\":{\"format\":1}}", 0, 0, "__metadata__ 'format' is not a string"},
    {"{\"a\":[]}", 0, 0, "tensor 'a': header entry is not an object"},
};

START_TEST(st_malformed)
{
    lg_st_t *st = (lg_st_t *)1;
    for (size_t i = 0; i < sizeof bad_files / sizeof *bad_files; i++) {
        put_st(at("bad.safetensors"), bad_files[i].header, bad_files[i].data, bad_files[i].hlen);
        expect_fail(lg_st_open(at("bad.safetensors"), &st), LG_ERR_IO, at("bad.safetensors"), bad_files[i].frag,
                    NULL);
        ck_assert_ptr_null(st);
    }
    put_file(at("short.safetensors"), "abc", 3);
    expect_fail(lg_st_open(at("short.safetensors"), &st), LG_ERR_IO, "3 bytes is too short", NULL);
    expect_fail(lg_st_open(at("missing.safetensors"), &st), LG_ERR_IO, "missing.safetensors: cannot open", NULL);
    expect_fail(lg_st_open(dir, &st), LG_ERR_IO, "not a regular file", NULL);
    put_st(at("ok.safetensors"), "{\"__metadata__\":{\"format\":\"pt\"}}", 0, 0); /* no tensors is valid */
    CHECK(lg_st_open(at("ok.safetensors"), &st));
    ck_assert_uint_eq(lg_st_count(st), 0);
    lg_st_close(st);
}
END_TEST

static void model_tensors(struct lg_st_write_tensor *t, float *data, int n)
{
    static char names[8][32];
    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "t%d.weight", i);
        t[i] = (struct lg_st_write_tensor){.name = names[i], .dtype = LG_ST_F32, .ndim = 1, .shape = {64},
                                           .data = data + 64 * i};
    }
}

START_TEST(st_sharded)
{
    float data[8 * 64];
    lg_test_fill(data, 8 * 64, lg_test_seed(), 1);
    struct lg_st_write_tensor t[8];
    model_tensors(t, data, 8);
    t[2].shape[0] = 192; /* 768 bytes, over the limit: a shard of its own, ahead of the one being filled */
    CHECK(lg_st_write_model(dir, t, 6, 600, (const char *[]){"origin", "test", NULL}));
    /* 256-byte tensors, 600-byte shards, as huggingface_hub splits them: {2} {0,1} {3,4} {5} */
    for (int k = 1; k <= 4; k++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-00004.safetensors", k);
        struct stat sb;
        ck_assert_msg(stat(at(name), &sb) == 0, "%s missing", name);
    }
    char *idx = lg_test_slurp(at("model.safetensors.index.json"), NULL);
    ck_assert_msg(strstr(idx, "\"total_size\": 2048") && strstr(idx, "\"total_parameters\": 512"), "%s", idx);
    ck_assert(strstr(idx, "\"t2.weight\": \"model-00001-of-00004.safetensors\""));
    ck_assert(strstr(idx, "\"t1.weight\": \"model-00002-of-00004.safetensors\""));
    ck_assert(strstr(idx, "\"t3.weight\": \"model-00003-of-00004.safetensors\""));
    ck_assert(strstr(idx, "\"t5.weight\": \"model-00004-of-00004.safetensors\""));
    free(idx);
    lg_st_t *st;
    CHECK(lg_st_open_model(dir, &st));
    ck_assert_uint_eq(lg_st_count(st), 6);
    ck_assert_str_eq(lg_st_path(st), dir);
    ck_assert_str_eq(lg_st_metadata(st, "origin"), "test");
    float got[192];
    CHECK(lg_st_read_f32(st, "t2.weight", 1, (int64_t[]){192}, got));
    ck_assert_int_eq(memcmp(got, data + 128, sizeof got), 0);
    struct lg_st_tensor v;
    CHECK(lg_st_find(st, "t4.weight", &v));
    ck_assert_str_eq(v.file, at("model-00003-of-00004.safetensors"));
    ck_assert_int_eq(memcmp(v.data, data + 256, 256), 0);
    lg_st_close(st);
    /* Written again unsharded: one file, and no index or shard of the old save left behind. */
    CHECK(lg_st_write_model(dir, t, 6, 0, NULL));
    struct stat sb;
    ck_assert(stat(at("model.safetensors"), &sb) == 0);
    ck_assert(stat(at("model.safetensors.index.json"), &sb) != 0);
    ck_assert(stat(at("model-00001-of-00004.safetensors"), &sb) != 0);
    CHECK(lg_st_open_model(dir, &st));
    ck_assert_uint_eq(lg_st_count(st), 6);
    lg_st_close(st);
}
END_TEST

START_TEST(st_sharded_errors)
{
    float data[3 * 64] = {0};
    struct lg_st_write_tensor t[3];
    model_tensors(t, data, 3);
    lg_st_t *st;
    expect_fail(lg_st_open_model(dir, &st), LG_ERR_IO, "no model.safetensors or model.safetensors.index.json", NULL);
    CHECK(lg_st_write(at("s1.safetensors"), t, 2, NULL));
    CHECK(lg_st_write(at("s2.safetensors"), t + 1, 2, NULL)); /* t1 in both */
    char idx[512];
    snprintf(idx, sizeof idx, "%s", at("model.safetensors.index.json"));
    put_text(idx, "{\"weight_map\": {\"t0.weight\": \"s1.safetensors\", \"t2.weight\": \"gone.safetensors\"}}");
    expect_fail(lg_st_open_model(dir, &st), LG_ERR_IO, idx, "names shard gone.safetensors",
                at("gone.safetensors"), NULL);
    put_text(idx, "{\"weight_map\": {\"t0.weight\": \"s1.safetensors\", \"t2.weight\": \"s2.safetensors\"}}");
    expect_fail(lg_st_open_model(dir, &st), LG_ERR_IO, "tensor 't1.weight' is in both", at("s1.safetensors"),
                at("s2.safetensors"), NULL);
    CHECK(lg_st_write(at("s2.safetensors"), t + 2, 1, NULL));
    put_text(idx, "{\"weight_map\": {\"t0.weight\": \"s1.safetensors\", \"t9.weight\": \"s2.safetensors\"}}");
    expect_fail(lg_st_open_model(dir, &st), LG_ERR_IO, idx,
                "tensor 't9.weight' is mapped to shard s2.safetensors, which has no such tensor", NULL);
    put_text(idx, "{\"weight_map\": {\"t0.weight\": \"s2.safetensors\", \"t1.weight\": \"s1.safetensors\", "
                  "\"t2.weight\": \"s2.safetensors\"}}");
    expect_fail(lg_st_open_model(dir, &st), LG_ERR_IO, "'t0.weight' is mapped to shard s2.safetensors but found "
                "in s1.safetensors", NULL);
    put_text(idx, "{\"weight_map\": {\"t0.weight\": \"../s1.safetensors\"}}");
    expect_fail(lg_st_open_model(dir, &st), LG_ERR_IO, "weight_map['t0.weight'] must be a file name", NULL);
    put_text(idx, "{\"weight_map\": {}}");
    expect_fail(lg_st_open_model(dir, &st), LG_ERR_IO, "missing or empty 'weight_map'", NULL);
    put_st(at("s2.safetensors"), "{\"t2.weight\":{\"dtype\":\"F32\",\"shape\":[64],\"data_offsets\":[0,256]}}", 100,
           0);
    put_text(idx, "{\"weight_map\": {\"t0.weight\": \"s1.safetensors\", \"t2.weight\": \"s2.safetensors\"}}");
    expect_fail(lg_st_open_model(dir, &st), LG_ERR_IO, "shard s2.safetensors: ", "truncated", NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hf");
    TCase *tc = tcase_create("safetensors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 0); /* no time limits in tests */
    tcase_add_test(tc, st_roundtrip);
    tcase_add_test(tc, st_read_errors);
    tcase_add_test(tc, st_malformed);
    tcase_add_test(tc, st_sharded);
    tcase_add_test(tc, st_sharded_errors);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
