/* lg_test.c: see lg_test.h. */
#include "lg_test.h"

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int g_device = -1;

int lg_test_device(void) { return g_device; }

int lg_test_have_gpu(void)
{
    int n = 0;
    if (cuInit(0) != CUDA_SUCCESS || cuDeviceGetCount(&n) != CUDA_SUCCESS || n == 0)
        return 0;
    return 1;
}

void lg_test_require_gpu(void)
{
    if (!lg_test_have_gpu()) {
        printf("no GPU present: skipping\n");
        exit(77);
    }
    g_device = 0;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void lg_test_fill(float *x, size_t n, uint64_t seed, float scale)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++)
        x[i] = scale * (float)((double)(splitmix(&s) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

uint64_t lg_test_seed(void)
{
    static uint64_t seed;
    static int have;
    if (!have) {
        const char *e = getenv("LORAGEN_TEST_SEED");
        seed = e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL) * 2654435761u;
        have = 1;
        fprintf(stderr, "LORAGEN_TEST_SEED=%llu\n", (unsigned long long)seed);
    }
    return seed;
}

double lg_test_rel_err(const float *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            return INFINITY;
        double d = (double)a[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

int lg_test_run(Suite *s, int nofork)
{
    SRunner *sr = srunner_create(s);
    if (nofork)
        srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

char *lg_test_tmpdir(const char *prefix)
{
    char *d = malloc(strlen(prefix) + 16);
    sprintf(d, "/tmp/%s.XXXXXX", prefix);
    ck_assert_msg(mkdtemp(d) != NULL, "mkdtemp %s: %s", d, strerror(errno));
    return d;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

void lg_test_rm_rf(const char *dir) { nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

char *lg_test_slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    size_t len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(len + 1);
    ck_assert_uint_eq(fread(b, 1, len, f), len);
    b[len] = '\0';
    fclose(f);
    if (n)
        *n = len;
    return b;
}

int lg_test_count_substr(const char *s, const char *needle)
{
    int n = 0;
    size_t l = strlen(needle);
    for (const char *p = strstr(s, needle); p; p = strstr(p + l, needle))
        n++;
    return n;
}
