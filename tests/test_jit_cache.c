/* test_jit_cache.c: the JIT's memory and disk caches: round trip, compile errors writing nothing, corrupt
 * entries rebuilt, directory resolution, fallback to memory only, read-only directories, and no context as a
 * status. Runs without a GPU or a driver (Check forks each case). The key and NVRTC: test_jit.c. */
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

/* ---- helpers ---- */

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

static char *entry_path(const char *dir, const char *src, int arch)
{
    char key[33], name[48];
    lg_jit_cache_key(src, arch, key);
    snprintf(name, sizeof name, "%s.cubin", key);
    return path_join(dir, name);
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*n ? *n : 1);
    ck_assert_uint_eq(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static void spit(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static lg_jit_t *jit_at(const char *dir, int arch)
{
    struct lg_jit_params p = {.cache_dir = dir, .arch = arch};
    lg_jit_t *jit = NULL;
    enum lg_status st = lg_jit_init(&p, &jit);
    ck_assert_msg(st == LG_OK, "lg_jit_init: %s", lg_last_error());
    return jit;
}

static void get_cubin(lg_jit_t *jit, const char *src, int arch, uint8_t **c, size_t *n)
{
    enum lg_status st = lg_jit_get_cubin(jit, src, arch, (void **)c, n);
    ck_assert_msg(st == LG_OK, "lg_jit_get_cubin: %s", lg_last_error());
}

/* ---- memory and disk caches ---- */

START_TEST(memory_cache_hits)
{
    char *dir = jit_tmpdir();
    lg_jit_t *jit = jit_at(dir, 90);
    uint8_t *a, *b, *c;
    size_t na, nb, nc;
    get_cubin(jit, JIT_AXPB_SRC, 90, &a, &na);
    get_cubin(jit, JIT_AXPB_SRC, 0, &b, &nb); /* 0: the jit's arch, the same entry */
    jit_assert_stats(jit, 1, 0, 1, 0);
    ck_assert(na == nb && memcmp(a, b, na) == 0);
    get_cubin(jit, JIT_AXPB_SRC, 89, &c, &nc); /* another arch is another entry */
    jit_assert_stats(jit, 1, 0, 2, 0);
    jit_assert_cubin_elf(c, nc);
    ck_assert_int_eq(count_files(dir), 2);
    free(a), free(b), free(c);
    lg_jit_free(jit);
    jit_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(disk_cache_round_trip)
{
    char *dir = jit_tmpdir();
    lg_jit_t *j1 = jit_at(dir, 90);
    ck_assert_str_eq(lg_jit_cache_dir(j1), dir);
    ck_assert_str_eq(lg_jit_cache_note(j1), "");
    uint8_t *a, *b;
    size_t na, nb;
    get_cubin(j1, JIT_AXPB_SRC, 90, &a, &na);
    jit_assert_stats(j1, 0, 0, 1, 0);
    lg_jit_free(j1);
    ck_assert_int_eq(count_files(dir), 1); /* the entry, and no temp file left behind */
    char *path = entry_path(dir, JIT_AXPB_SRC, 90);
    ck_assert_int_eq(access(path, R_OK), 0);

    lg_jit_t *j2 = jit_at(dir, 90);
    get_cubin(j2, JIT_AXPB_SRC, 90, &b, &nb);
    jit_assert_stats(j2, 0, 1, 0, 0);
    ck_assert(na == nb && memcmp(a, b, na) == 0);
    lg_jit_free(j2);
    free(a), free(b), free(path);
    jit_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(compile_error_through_jit_writes_nothing)
{
    char *dir = jit_tmpdir();
    lg_jit_t *jit = jit_at(dir, 90);
    void *c = NULL;
    size_t n = 0;
    ck_assert_int_eq(lg_jit_get_cubin(jit, JIT_BAD_SRC, 90, &c, &n), LG_ERR_NVRTC);
    ck_assert_msg(strstr(lg_last_error(), "(3): error") != NULL, "detail: %s", lg_last_error());
    jit_assert_stats(jit, 0, 0, 0, 0);
    ck_assert_int_eq(count_files(dir), 0);
    lg_jit_free(jit);
    jit_rm_rf(dir);
    free(dir);
}
END_TEST

enum corruption {
    TRUNC_HALF, TRUNC_HEADER, EMPTY, FLIP_PAYLOAD, GARBAGE_HEADER, OTHER_KEY, SIZE_FIELD, NCORRUPT
};
static const char *CORRUPTION_NAMES[] = {
    "truncated to half", "truncated in the header", "empty", "payload byte flipped", "garbage header",
    "another key's entry", "size field changed",
};

static void corrupt(const char *path, enum corruption how)
{
    size_t n;
    uint8_t *e = slurp(path, &n);
    if (how == TRUNC_HALF || how == TRUNC_HEADER || how == EMPTY)
        ck_assert_int_eq(truncate(path, how == TRUNC_HALF ? (off_t)n / 2 : how == TRUNC_HEADER ? 10 : 0), 0);
    if (how == FLIP_PAYLOAD) {
        e[LG_JIT_ENTRY_HEADER + (n - LG_JIT_ENTRY_HEADER) / 2] ^= 0x10;
        spit(path, e, n);
    }
    if (how == GARBAGE_HEADER) {
        memset(e, 0xa5, LG_JIT_ENTRY_HEADER);
        spit(path, e, n);
    }
    if (how == OTHER_KEY) { /* a whole, valid entry, but for another source */
        struct lg_jit_key k;
        lg_jit_key(JIT_BAD_SRC, 90, &k);
        size_t m;
        void *other = lg_jit_entry_encode(&k, 90, e + LG_JIT_ENTRY_HEADER, n - LG_JIT_ENTRY_HEADER, &m);
        spit(path, other, m);
        free(other);
    }
    if (how == SIZE_FIELD) {
        e[48] ^= 1;
        spit(path, e, n);
    }
    free(e);
}

START_TEST(corrupt_entry_is_rebuilt)
{
    char *dir = jit_tmpdir();
    char *path = entry_path(dir, JIT_AXPB_SRC, 90);
    uint8_t *good, *rebuilt, *again;
    size_t ngood, nrebuilt, nagain;
    lg_jit_t *j1 = jit_at(dir, 90);
    get_cubin(j1, JIT_AXPB_SRC, 90, &good, &ngood);
    lg_jit_free(j1);

    corrupt(path, (enum corruption)_i);
    struct lg_jit_key k;
    lg_jit_key(JIT_AXPB_SRC, 90, &k);
    size_t n;
    uint8_t *e = slurp(path, &n);
    char why[256];
    ck_assert_msg(!lg_jit_entry_check(e, n, &k, 90, why), "%s: not detected", CORRUPTION_NAMES[_i]);
    free(e);

    lg_jit_t *j2 = jit_at(dir, 90);
    get_cubin(j2, JIT_AXPB_SRC, 90, &rebuilt, &nrebuilt);
    jit_assert_stats(j2, 0, 0, 1, 1);
    jit_assert_cubin_elf(rebuilt, nrebuilt);
    lg_jit_free(j2);

    e = slurp(path, &n); /* the rewritten entry is whole */
    ck_assert_msg(lg_jit_entry_check(e, n, &k, 90, why), "%s: rebuilt entry bad: %s", CORRUPTION_NAMES[_i],
                  why);
    free(e);
    lg_jit_t *j3 = jit_at(dir, 90);
    get_cubin(j3, JIT_AXPB_SRC, 90, &again, &nagain);
    jit_assert_stats(j3, 0, 1, 0, 0);
    ck_assert(nagain == nrebuilt && memcmp(again, rebuilt, nagain) == 0);
    lg_jit_free(j3);
    ck_assert_int_eq(count_files(dir), 1);
    free(good), free(rebuilt), free(again), free(path);
    jit_rm_rf(dir);
    free(dir);
}
END_TEST

/* ---- the cache directory ---- */

/* Saves and restores the variables the resolution reads, for runs with CK_FORK=no. */
static const char *ENV_VARS[] = {"LORAGEN_CACHE_DIR", "XDG_CACHE_HOME", "HOME"};
static char *saved_env[3];

static void env_save(void)
{
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(ENV_VARS[i]);
        saved_env[i] = v ? strdup(v) : NULL;
        unsetenv(ENV_VARS[i]);
    }
}

static void env_restore(void)
{
    for (int i = 0; i < 3; i++) {
        if (saved_env[i])
            setenv(ENV_VARS[i], saved_env[i], 1);
        else
            unsetenv(ENV_VARS[i]);
        free(saved_env[i]);
    }
}

static void assert_dir_resolves_to(const char *param, const char *want)
{
    struct lg_jit_params p = {.cache_dir = param, .arch = 90};
    lg_jit_t *jit;
    ck_assert_int_eq(lg_jit_init(&p, &jit), LG_OK);
    if (want) {
        ck_assert_str_eq(lg_jit_cache_dir(jit), want);
        struct stat st;
        ck_assert(stat(want, &st) == 0 && S_ISDIR(st.st_mode)); /* created, parents too */
    } else {
        ck_assert_ptr_null(lg_jit_cache_dir(jit));
        ck_assert_str_ne(lg_jit_cache_note(jit), "");
    }
    lg_jit_free(jit);
}

START_TEST(cache_dir_resolution)
{
    env_save();
    char *tmp = jit_tmpdir();
    char *env_dir = path_join(tmp, "env/deep"), *param_dir = path_join(tmp, "param");
    char *xdg = path_join(tmp, "xdg"), *xdg_dir = path_join(xdg, "loragen");
    char *home = path_join(tmp, "home"), *home_dir = path_join(home, ".cache/loragen");

    assert_dir_resolves_to(NULL, NULL); /* nothing set: memory only, with a note */
    setenv("HOME", home, 1);
    assert_dir_resolves_to(NULL, home_dir);
    setenv("XDG_CACHE_HOME", xdg, 1);
    assert_dir_resolves_to(NULL, xdg_dir);
    setenv("LORAGEN_CACHE_DIR", env_dir, 1);
    assert_dir_resolves_to(NULL, env_dir);
    assert_dir_resolves_to(param_dir, param_dir);

    /* the override is where entries land */
    lg_jit_t *jit = jit_at(NULL, 90);
    uint8_t *c;
    size_t n;
    get_cubin(jit, JIT_AXPB_SRC, 90, &c, &n);
    char *path = entry_path(env_dir, JIT_AXPB_SRC, 90);
    ck_assert_int_eq(access(path, R_OK), 0);
    lg_jit_free(jit);
    free(c), free(path);
    free(env_dir), free(param_dir), free(xdg), free(xdg_dir), free(home), free(home_dir);
    jit_rm_rf(tmp);
    free(tmp);
    env_restore();
}
END_TEST

static void assert_memory_only_works(const char *dir, const char *bad_path)
{
    lg_jit_t *jit = jit_at(dir, 90);
    ck_assert_ptr_null(lg_jit_cache_dir(jit));
    const char *note = lg_jit_cache_note(jit);
    ck_assert_msg(strstr(note, "memory-only") && strstr(note, bad_path), "note: %s", note);
    uint8_t *a, *b;
    size_t na, nb;
    get_cubin(jit, JIT_AXPB_SRC, 90, &a, &na);
    get_cubin(jit, JIT_AXPB_SRC, 90, &b, &nb);
    jit_assert_stats(jit, 1, 0, 1, 0);
    jit_assert_cubin_elf(a, na);
    free(a), free(b);
    lg_jit_free(jit);
}

/* A path under a regular file cannot be created, whoever we run as (root ignores permission bits). */
START_TEST(uncreatable_dir_falls_back_to_memory)
{
    char *tmp = jit_tmpdir();
    char *file = path_join(tmp, "file"), *under = path_join(file, "sub/dir");
    spit(file, "x", 1);
    assert_memory_only_works(under, file);
    assert_memory_only_works(file, file); /* the path exists, but is no directory */
    free(file), free(under);
    jit_rm_rf(tmp);
    free(tmp);
}
END_TEST

START_TEST(no_disk_flag_writes_nothing)
{
    char *dir = jit_tmpdir();
    struct lg_jit_params p = {.cache_dir = dir, .arch = 90, .flags = LG_JIT_NO_DISK_CACHE};
    lg_jit_t *jit;
    ck_assert_int_eq(lg_jit_init(&p, &jit), LG_OK);
    ck_assert_ptr_null(lg_jit_cache_dir(jit));
    uint8_t *c;
    size_t n;
    get_cubin(jit, JIT_AXPB_SRC, 90, &c, &n);
    ck_assert_int_eq(count_files(dir), 0);
    free(c);
    lg_jit_free(jit);
    jit_rm_rf(dir);
    free(dir);
}
END_TEST

/* Read-only directories only bind non-root users; as root the case has nothing to check. */
START_TEST(readonly_dir_is_read_not_written)
{
    if (geteuid() == 0) {
        printf("readonly_dir_is_read_not_written: running as root, permission bits do not bind: skipped\n");
        return;
    }
    char *dir = jit_tmpdir();
    lg_jit_t *j1 = jit_at(dir, 90);
    uint8_t *a, *b, *c;
    size_t na, nb, nc;
    get_cubin(j1, JIT_AXPB_SRC, 90, &a, &na);
    lg_jit_free(j1);
    ck_assert_int_eq(chmod(dir, 0555), 0);
    lg_jit_t *j2 = jit_at(dir, 90);
    ck_assert(strstr(lg_jit_cache_note(j2), "read-only") != NULL);
    get_cubin(j2, JIT_AXPB_SRC, 90, &b, &nb);  /* read */
    get_cubin(j2, JIT_AXPB_SRC, 89, &c, &nc);  /* compiled, not written */
    jit_assert_stats(j2, 0, 1, 1, 0);
    ck_assert_int_eq(count_files(dir), 1);
    lg_jit_free(j2);
    chmod(dir, 0755);
    free(a), free(b), free(c);
    jit_rm_rf(dir);
    free(dir);
}
END_TEST

/* Without a current context (or without a driver) arch 0 and loading fail with a status, not a crash. */
START_TEST(no_context_is_a_status)
{
    struct lg_jit_params p = {0};
    lg_jit_t *jit = (lg_jit_t *)1;
    enum lg_status st = lg_jit_init(&p, &jit);
    ck_assert_msg(st == LG_ERR_NO_GPU || st == LG_ERR_CUDA, "status %d", st);
    ck_assert_ptr_null(jit);
    ck_assert_msg(strstr(lg_last_error(), "arch 0") != NULL, "detail: %s", lg_last_error());

    char *dir = jit_tmpdir();
    jit = jit_at(dir, 90);
    CUfunction f;
    st = lg_jit_get(jit, JIT_AXPB_SRC, "lg_test_axpb", &f);
    ck_assert_msg(st == LG_ERR_NO_GPU || st == LG_ERR_CUDA, "status %d", st);
    ck_assert_msg(strstr(lg_last_error(), "kernel lg_test_axpb: ") == lg_last_error(), "detail: %s",
                  lg_last_error());
    lg_jit_free(jit);
    jit_rm_rf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jit_cache");
    TCase *tc = jit_tcase(s, "cache");
    tcase_add_test(tc, memory_cache_hits);
    tcase_add_test(tc, disk_cache_round_trip);
    tcase_add_test(tc, compile_error_through_jit_writes_nothing);
    tcase_add_loop_test(tc, corrupt_entry_is_rebuilt, 0, NCORRUPT);
    tcase_add_test(tc, cache_dir_resolution);
    tcase_add_test(tc, uncreatable_dir_falls_back_to_memory);
    tcase_add_test(tc, no_disk_flag_writes_nothing);
    tcase_add_test(tc, readonly_dir_is_read_not_written);
    tcase_add_test(tc, no_context_is_a_status);
    int failed = lg_test_run(s, 0);
    return failed ? 1 : 0;
}
