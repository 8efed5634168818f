/* lg_test.c: see lg_test.h. */
#include "lg_test.h"

#include <fcntl.h>
#include <libgen.h>
#include <sys/wait.h>
#include <unistd.h>

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

int lg_test_run_case(const char *suite, void (*add)(TCase *tc), int nofork)
{
    Suite *s = suite_create(suite);
    TCase *tc = tcase_create("gpu");
    tcase_set_timeout(tc, 0);
    add(tc);
    suite_add_tcase(s, tc);
    return lg_test_run(s, nofork);
}

char *lg_test_tmpdir(const char *prefix)
{
    char *d = malloc(strlen(prefix) + 16);
    sprintf(d, "/tmp/%s.XXXXXX", prefix);
    if (!mkdtemp(d)) /* no ck_assert: one that holds reports progress, which fails outside a test (in a main) */
        ck_abort_msg("mkdtemp %s: %s", d, strerror(errno));
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

char *lg_test_path(const char *dir, const char *rel)
{
    char *p = malloc(strlen(dir) + strlen(rel) + 2);
    if (!p)
        ck_abort_msg("out of memory");
    sprintf(p, "%s/%s", dir, rel);
    return p;
}

void lg_test_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s: %s", path, strerror(errno));
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

void lg_test_write_text(const char *path, const char *text) { lg_test_write_file(path, text, strlen(text)); }

const char *lg_test_loragen(void)
{
    static char exe[1100];
    if (!exe[0]) {
        char self[1024];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        ck_assert_int_gt(n, 0);
        self[n] = '\0';
        snprintf(exe, sizeof exe, "%s/loragen", dirname(self));
        ck_assert_msg(access(exe, X_OK) == 0, "%s: %s", exe, strerror(errno));
    }
    return exe;
}

pid_t lg_test_spawn(const char *dir, const char *const *args)
{
    const char *argv[32] = {lg_test_loragen()};
    int argc = 1;
    for (; *args && argc < 31; args++)
        argv[argc++] = *args;
    argv[argc] = NULL;
    char *fo = lg_test_path(dir, "stdout.txt"), *fe = lg_test_path(dir, "stderr.txt");
    /* Truncated here, before the fork: opened in the child, the truncation could land while the caller is
     * already reading the previous run's output (it polls stdout.txt right after this returns). */
    int o = open(fo, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), e = open(fe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_msg(o >= 0 && e >= 0, "open %s, %s: %s", fo, fe, strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(o, 1);
        dup2(e, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(o);
    close(e);
    free(fo);
    free(fe);
    return pid;
}

int lg_test_wait(const char *dir, pid_t pid, char **out, char **err)
{
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "loragen did not exit normally");
    char *fo = lg_test_path(dir, "stdout.txt"), *fe = lg_test_path(dir, "stderr.txt");
    *out = lg_test_slurp(fo, NULL);
    *err = lg_test_slurp(fe, NULL);
    free(fo);
    free(fe);
    return WEXITSTATUS(status);
}

int lg_test_loragen_run(const char *dir, const char *const *args, char **out, char **err)
{
    return lg_test_wait(dir, lg_test_spawn(dir, args), out, err);
}

void lg_test_check_fd(const char *what, lg_test_loss_fn f, void *ctx, float *v, const float *g, int64_t n, float h)
{
    double gmax = 0;
    for (int64_t i = 0; i < n; i++) {
        ck_assert_msg(isfinite(g[i]), "%s: gradient %lld is %g", what, (long long)i, g[i]);
        gmax = fmax(gmax, fabs(g[i]));
    }
    for (int64_t i = 0; i < n; i++) {
        const float keep = v[i];
        v[i] = keep + h;
        const float up = v[i]; /* the steps as floats represent them */
        const double lp = f(ctx);
        v[i] = keep - h;
        const float dn = v[i];
        const double lm = f(ctx);
        v[i] = keep;
        const double num = (lp - lm) / ((double)up - dn);
        ck_assert_msg(fabs(num - g[i]) <= 1e-2 * fmax(fmax(fabs(num), fabs(g[i])), 1e-2 * gmax),
                      "%s[%lld]: numeric %.8g, analytic %.8g", what, (long long)i, num, g[i]);
    }
}

double lg_test_wsum(const float *out, const float *r, int64_t n)
{
    double acc = 0;
    for (int64_t i = 0; i < n; i++)
        acc += (double)out[i] * r[i];
    return acc;
}
