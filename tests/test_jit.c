/* test_jit.c: the JIT: hash and cache key, NVRTC compiles for sm_80/89/90 and their errors, the memory and
 * disk caches (round trip, corrupt entries, directory resolution, fallback to memory only), and, where a GPU
 * is present, a kernel loaded through lg_jit_get and launched.
 *
 * Everything but the last case runs without a GPU or a driver, so this suite is a normal test, not a GPU
 * suite: the GPU case prints that it skipped when there is no GPU. Check forks each case, so CUDA is only
 * ever initialised in the GPU case's own process. */
#include "jit_internal.h"
#include "lg_jit.h"
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

static const char *AXPB_SRC =
    "extern \"C\" __global__ void lg_test_axpb(float *y, const float *x, float a, float b, int n)\n"
    "{\n"
    "    int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
    "    if (i < n)\n"
    "        y[i] = a * x[i] + b;\n"
    "}\n";

/* The error is on line 3. */
static const char *BAD_SRC = "extern \"C\" __global__ void lg_test_bad(float *y)\n"
                             "{\n"
                             "    y[0] = 1.0f +;\n"
                             "}\n";

/* ---- helpers ---- */

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void rm_rf(const char *dir) { nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static char *make_tmpdir(void)
{
    char *d = strdup("/tmp/lg_jit_test.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(d));
    return d;
}

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

static void assert_cubin_elf(const uint8_t *c, size_t n)
{
    ck_assert_uint_gt(n, 64);
    ck_assert_mem_eq(c, "\x7f" "ELF", 4);
    ck_assert_uint_eq(c[4], 2);                      /* ELFCLASS64 */
    ck_assert_uint_eq(c[18] | (c[19] << 8), 190);     /* EM_CUDA */
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

static void assert_stats(lg_jit_t *jit, unsigned mem, unsigned disk, unsigned comp, unsigned corrupt)
{
    struct lg_jit_stats s;
    lg_jit_get_stats(jit, &s);
    bool ok = s.mem_hits == mem && s.disk_hits == disk && s.compiles == comp && s.corrupt_rebuilt == corrupt;
    ck_assert_msg(ok, "stats mem %u disk %u compiles %u corrupt %u, expected %u %u %u %u", s.mem_hits,
                  s.disk_hits, s.compiles, s.corrupt_rebuilt, mem, disk, comp, corrupt);
}

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
    lg_jit_key_ex(AXPB_SRC, 90, 13000, opts, 4, 1, &k[0]);
    lg_jit_key_ex("extern \"C\" __global__ void f() {}", 90, 13000, opts, 4, 1, &k[1]);
    lg_jit_key_ex(AXPB_SRC, 89, 13000, opts, 4, 1, &k[2]);
    lg_jit_key_ex(AXPB_SRC, 90, 13010, opts, 4, 1, &k[3]);
    lg_jit_key_ex(AXPB_SRC, 90, 13000, opts, 5, 1, &k[4]);    /* an option added */
    lg_jit_key_ex(AXPB_SRC, 90, 13000, opts_b, 4, 1, &k[5]);  /* an option changed */
    lg_jit_key_ex(AXPB_SRC, 90, 13000, opts, 4, 2, &k[6]);    /* format version */
    lg_jit_key_ex(AXPB_SRC, 90, 13000, split1, 2, 1, &k[7]);  /* same bytes, other option boundaries */
    lg_jit_key_ex(AXPB_SRC, 90, 13000, split2, 2, 1, &k[8]);
    lg_jit_key_ex(AXPB_SRC, 90, 13000, opts, 4, 1, &k[9]);    /* deterministic */
    for (int i = 0; i < 9; i++)
        for (int j = i + 1; j < 9; j++)
            ck_assert_msg(strcmp(k[i].hex, k[j].hex) != 0, "keys %d and %d collide", i, j);
    ck_assert_str_eq(k[0].hex, k[9].hex);
    /* one changed byte at the end of the source */
    char *src = strdup(AXPB_SRC);
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
    lg_jit_cache_key(AXPB_SRC, 90, a);
    lg_jit_cache_key(AXPB_SRC, 80, b);
    lg_jit_cache_key(BAD_SRC, 90, c);
    lg_jit_cache_key(AXPB_SRC, 90, again);
    ck_assert_uint_eq(strlen(a), 32);
    ck_assert_uint_eq(strspn(a, "0123456789abcdef"), 32);
    ck_assert_str_ne(a, b);
    ck_assert_str_ne(a, c);
    ck_assert_str_eq(a, again);
    struct lg_jit_key k;
    int nopt;
    const char *const *opts = lg_nvrtc_options(90, &nopt);
    lg_jit_key_ex(AXPB_SRC, 90, lg_nvrtc_version(), opts, nopt, LG_JIT_FORMAT_VERSION, &k);
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
    enum lg_status st = lg_nvrtc_compile(AXPB_SRC, "axpb.cu", ARCHS[_i], &cubin, &n, &log);
    ck_assert_msg(st == LG_OK, "sm_%d: %s", ARCHS[_i], lg_last_error());
    assert_cubin_elf(cubin, n);
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
    enum lg_status st = lg_nvrtc_compile(BAD_SRC, "bad_kernel.cu", 90, &cubin, &n, &log);
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
    ck_assert_int_eq(lg_nvrtc_compile(AXPB_SRC, "a.cu", 5, &cubin, &n, NULL), LG_ERR_UNSUPPORTED);
    ck_assert_int_eq(lg_nvrtc_compile(AXPB_SRC, "a.cu", 1000, &cubin, &n, NULL), LG_ERR_UNSUPPORTED);
    /* in range for us, but no NVRTC 13 target: NVRTC's own refusal comes back as a status */
    enum lg_status st = lg_nvrtc_compile(AXPB_SRC, "a.cu", 11, &cubin, &n, NULL);
    ck_assert_int_eq(st, LG_ERR_NVRTC);
    ck_assert(strstr(lg_last_error(), "a.cu: ") == lg_last_error());
    ck_assert_int_eq(lg_nvrtc_compile(NULL, "a.cu", 90, &cubin, &n, NULL), LG_ERR_INVALID);
    ck_assert_ptr_null(cubin);
}
END_TEST

/* ---- memory and disk caches ---- */

START_TEST(memory_cache_hits)
{
    char *dir = make_tmpdir();
    lg_jit_t *jit = jit_at(dir, 90);
    uint8_t *a, *b, *c;
    size_t na, nb, nc;
    get_cubin(jit, AXPB_SRC, 90, &a, &na);
    get_cubin(jit, AXPB_SRC, 0, &b, &nb); /* 0: the jit's arch, the same entry */
    assert_stats(jit, 1, 0, 1, 0);
    ck_assert(na == nb && memcmp(a, b, na) == 0);
    get_cubin(jit, AXPB_SRC, 89, &c, &nc); /* another arch is another entry */
    assert_stats(jit, 1, 0, 2, 0);
    assert_cubin_elf(c, nc);
    ck_assert_int_eq(count_files(dir), 2);
    free(a), free(b), free(c);
    lg_jit_free(jit);
    rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(disk_cache_round_trip)
{
    char *dir = make_tmpdir();
    lg_jit_t *j1 = jit_at(dir, 90);
    ck_assert_str_eq(lg_jit_cache_dir(j1), dir);
    ck_assert_str_eq(lg_jit_cache_note(j1), "");
    uint8_t *a, *b;
    size_t na, nb;
    get_cubin(j1, AXPB_SRC, 90, &a, &na);
    assert_stats(j1, 0, 0, 1, 0);
    lg_jit_free(j1);
    ck_assert_int_eq(count_files(dir), 1); /* the entry, and no temp file left behind */
    char *path = entry_path(dir, AXPB_SRC, 90);
    ck_assert_int_eq(access(path, R_OK), 0);

    lg_jit_t *j2 = jit_at(dir, 90);
    get_cubin(j2, AXPB_SRC, 90, &b, &nb);
    assert_stats(j2, 0, 1, 0, 0);
    ck_assert(na == nb && memcmp(a, b, na) == 0);
    lg_jit_free(j2);
    free(a), free(b), free(path);
    rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(compile_error_through_jit_writes_nothing)
{
    char *dir = make_tmpdir();
    lg_jit_t *jit = jit_at(dir, 90);
    void *c = NULL;
    size_t n = 0;
    ck_assert_int_eq(lg_jit_get_cubin(jit, BAD_SRC, 90, &c, &n), LG_ERR_NVRTC);
    ck_assert_msg(strstr(lg_last_error(), "(3): error") != NULL, "detail: %s", lg_last_error());
    assert_stats(jit, 0, 0, 0, 0);
    ck_assert_int_eq(count_files(dir), 0);
    lg_jit_free(jit);
    rm_rf(dir);
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
        lg_jit_key(BAD_SRC, 90, &k);
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
    char *dir = make_tmpdir();
    char *path = entry_path(dir, AXPB_SRC, 90);
    uint8_t *good, *rebuilt, *again;
    size_t ngood, nrebuilt, nagain;
    lg_jit_t *j1 = jit_at(dir, 90);
    get_cubin(j1, AXPB_SRC, 90, &good, &ngood);
    lg_jit_free(j1);

    corrupt(path, (enum corruption)_i);
    struct lg_jit_key k;
    lg_jit_key(AXPB_SRC, 90, &k);
    size_t n;
    uint8_t *e = slurp(path, &n);
    char why[256];
    ck_assert_msg(!lg_jit_entry_check(e, n, &k, 90, why), "%s: not detected", CORRUPTION_NAMES[_i]);
    free(e);

    lg_jit_t *j2 = jit_at(dir, 90);
    get_cubin(j2, AXPB_SRC, 90, &rebuilt, &nrebuilt);
    assert_stats(j2, 0, 0, 1, 1);
    assert_cubin_elf(rebuilt, nrebuilt);
    lg_jit_free(j2);

    e = slurp(path, &n); /* the rewritten entry is whole */
    ck_assert_msg(lg_jit_entry_check(e, n, &k, 90, why), "%s: rebuilt entry bad: %s", CORRUPTION_NAMES[_i],
                  why);
    free(e);
    lg_jit_t *j3 = jit_at(dir, 90);
    get_cubin(j3, AXPB_SRC, 90, &again, &nagain);
    assert_stats(j3, 0, 1, 0, 0);
    ck_assert(nagain == nrebuilt && memcmp(again, rebuilt, nagain) == 0);
    lg_jit_free(j3);
    ck_assert_int_eq(count_files(dir), 1);
    free(good), free(rebuilt), free(again), free(path);
    rm_rf(dir);
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
    char *tmp = make_tmpdir();
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
    get_cubin(jit, AXPB_SRC, 90, &c, &n);
    char *path = entry_path(env_dir, AXPB_SRC, 90);
    ck_assert_int_eq(access(path, R_OK), 0);
    lg_jit_free(jit);
    free(c), free(path);
    free(env_dir), free(param_dir), free(xdg), free(xdg_dir), free(home), free(home_dir);
    rm_rf(tmp);
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
    get_cubin(jit, AXPB_SRC, 90, &a, &na);
    get_cubin(jit, AXPB_SRC, 90, &b, &nb);
    assert_stats(jit, 1, 0, 1, 0);
    assert_cubin_elf(a, na);
    free(a), free(b);
    lg_jit_free(jit);
}

/* A path under a regular file cannot be created, whoever we run as (root ignores permission bits). */
START_TEST(uncreatable_dir_falls_back_to_memory)
{
    char *tmp = make_tmpdir();
    char *file = path_join(tmp, "file"), *under = path_join(file, "sub/dir");
    spit(file, "x", 1);
    assert_memory_only_works(under, file);
    assert_memory_only_works(file, file); /* the path exists, but is no directory */
    free(file), free(under);
    rm_rf(tmp);
    free(tmp);
}
END_TEST

START_TEST(no_disk_flag_writes_nothing)
{
    char *dir = make_tmpdir();
    struct lg_jit_params p = {.cache_dir = dir, .arch = 90, .flags = LG_JIT_NO_DISK_CACHE};
    lg_jit_t *jit;
    ck_assert_int_eq(lg_jit_init(&p, &jit), LG_OK);
    ck_assert_ptr_null(lg_jit_cache_dir(jit));
    uint8_t *c;
    size_t n;
    get_cubin(jit, AXPB_SRC, 90, &c, &n);
    ck_assert_int_eq(count_files(dir), 0);
    free(c);
    lg_jit_free(jit);
    rm_rf(dir);
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
    char *dir = make_tmpdir();
    lg_jit_t *j1 = jit_at(dir, 90);
    uint8_t *a, *b, *c;
    size_t na, nb, nc;
    get_cubin(j1, AXPB_SRC, 90, &a, &na);
    lg_jit_free(j1);
    ck_assert_int_eq(chmod(dir, 0555), 0);
    lg_jit_t *j2 = jit_at(dir, 90);
    ck_assert(strstr(lg_jit_cache_note(j2), "read-only") != NULL);
    get_cubin(j2, AXPB_SRC, 90, &b, &nb);  /* read */
    get_cubin(j2, AXPB_SRC, 89, &c, &nc);  /* compiled, not written */
    assert_stats(j2, 0, 1, 1, 0);
    ck_assert_int_eq(count_files(dir), 1);
    lg_jit_free(j2);
    chmod(dir, 0755);
    free(a), free(b), free(c);
    rm_rf(dir);
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

    char *dir = make_tmpdir();
    jit = jit_at(dir, 90);
    CUfunction f;
    st = lg_jit_get(jit, AXPB_SRC, "lg_test_axpb", &f);
    ck_assert_msg(st == LG_ERR_NO_GPU || st == LG_ERR_CUDA, "status %d", st);
    ck_assert_msg(strstr(lg_last_error(), "kernel lg_test_axpb: ") == lg_last_error(), "detail: %s",
                  lg_last_error());
    lg_jit_free(jit);
    rm_rf(dir);
    free(dir);
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
    char *dir = make_tmpdir();
    struct lg_jit_params p = {.cache_dir = dir}; /* arch 0: the current device's */
    lg_jit_t *jit;
    ck_assert_msg(lg_jit_init(&p, &jit) == LG_OK, "%s", lg_last_error());
    CUfunction f, f2;
    ck_assert_msg(lg_jit_get(jit, AXPB_SRC, "lg_test_axpb", &f) == LG_OK, "%s", lg_last_error());
    ck_assert_int_eq(lg_jit_get(jit, AXPB_SRC, "lg_test_axpb", &f2), LG_OK);
    ck_assert_ptr_eq(f, f2);
    assert_stats(jit, 1, 0, 1, 0);
    ck_assert_int_eq(lg_jit_get(jit, AXPB_SRC, "lg_test_missing", &f2), LG_ERR_CUDA);
    ck_assert_msg(strstr(lg_last_error(), "CUDA_ERROR_NOT_FOUND"), "detail: %s", lg_last_error());
    run_axpb(f, 1000, seed);
    lg_jit_free(jit);

    /* a second instance loads the disk entry into the driver */
    ck_assert_int_eq(lg_jit_init(&p, &jit), LG_OK);
    ck_assert_int_eq(lg_jit_get(jit, AXPB_SRC, "lg_test_axpb", &f), LG_OK);
    assert_stats(jit, 0, 1, 0, 0);
    run_axpb(f, 4097, seed + 1);
    lg_jit_free(jit);
    cuDevicePrimaryCtxRelease(dev);
    rm_rf(dir);
    free(dir);
}
END_TEST

static TCase *tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 0); /* no time limits in tests: NVRTC speed varies by machine */
    suite_add_tcase(s, tc);
    return tc;
}

int main(void)
{
    Suite *s = suite_create("jit");
    TCase *tc = tcase(s, "key");
    tcase_add_test(tc, hash_matches_murmur3_reference);
    tcase_add_test(tc, hash_streaming_equals_one_shot);
    tcase_add_test(tc, key_changes_with_every_input);
    tcase_add_test(tc, public_key_is_hex_and_follows_source_and_arch);
    tc = tcase(s, "nvrtc");
    tcase_add_test(tc, options_are_as_specified);
    tcase_add_loop_test(tc, compile_valid_kernel, 0, 3);
    tcase_add_test(tc, compile_error_reports_source_and_line);
    tcase_add_test(tc, compile_bad_arch_fails_cleanly);
    tc = tcase(s, "cache");
    tcase_add_test(tc, memory_cache_hits);
    tcase_add_test(tc, disk_cache_round_trip);
    tcase_add_test(tc, compile_error_through_jit_writes_nothing);
    tcase_add_loop_test(tc, corrupt_entry_is_rebuilt, 0, NCORRUPT);
    tcase_add_test(tc, cache_dir_resolution);
    tcase_add_test(tc, uncreatable_dir_falls_back_to_memory);
    tcase_add_test(tc, no_disk_flag_writes_nothing);
    tcase_add_test(tc, readonly_dir_is_read_not_written);
    tcase_add_test(tc, no_context_is_a_status);
    tc = tcase(s, "gpu");
    tcase_add_test(tc, gpu_launch);
    int failed = lg_test_run(s, 0);
    return failed ? 1 : 0;
}
