/* nvrtc.c: compiling generated CUDA source to a cubin with NVRTC, and naming a compilation: the options, the
 * NVRTC version and the 128-bit cache key over everything that can change the cubin.
 *
 * Needs no GPU and no driver: `loragen gen` checks every kernel for every arch on a machine without one.
 * The key is base's 128-bit hash (lg_base.h): an accidental collision between cache entries is a non-event.
 * It is not cryptographic; the cache directory is trusted like any other build output. */
#include "jit_internal.h"
#include "lg_base.h"

#include <nvrtc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- options and version ---- */

/* Options live in static storage per arch so callers can hold the pointers; archs are sm_10..sm_255. */
#define LG_ARCH_MAX 256
#define LG_NOPT 4

const char *const *lg_nvrtc_options(int arch, int *count)
{
    static char arch_opt[LG_ARCH_MAX][32];
    static const char *opts[LG_ARCH_MAX][LG_NOPT + 1];
    if (count)
        *count = 0;
    if (arch < 10 || arch >= LG_ARCH_MAX)
        return NULL;
    if (!opts[arch][0]) {
        /* Plain sm_XX, never sm_XXa: arch-specific features (wgmma) get their own option when needed. */
        snprintf(arch_opt[arch], sizeof arch_opt[arch], "--gpu-architecture=sm_%d", arch);
        opts[arch][0] = arch_opt[arch];
        opts[arch][1] = "-std=c++17";
        opts[arch][2] = "--fmad=true";
        opts[arch][3] = "-lineinfo"; /* profilers and sanitizers map SASS back to templates/ lines */
        opts[arch][4] = NULL;
    }
    if (count)
        *count = LG_NOPT;
    return opts[arch];
}

int lg_nvrtc_version(void)
{
    static int version = -1;
    if (version < 0) {
        int maj = 0, min = 0;
        if (nvrtcVersion(&maj, &min) != NVRTC_SUCCESS)
            maj = min = 0;
        version = maj * 1000 + min * 10;
    }
    return version;
}

/* ---- compile ---- */

static char *program_log(nvrtcProgram prog)
{
    size_t n = 0;
    if (nvrtcGetProgramLogSize(prog, &n) != NVRTC_SUCCESS || n == 0)
        n = 1;
    char *log = malloc(n);
    if (!log)
        return NULL;
    if (n == 1 || nvrtcGetProgramLog(prog, log) != NVRTC_SUCCESS)
        log[0] = '\0';
    log[n - 1] = '\0';
    return log;
}

static enum lg_status take_cubin(nvrtcProgram prog, const char *name, void **cubin, size_t *size)
{
    size_t n = 0;
    nvrtcResult r = nvrtcGetCUBINSize(prog, &n);
    if (r != NVRTC_SUCCESS || n == 0)
        return lg_fail(LG_ERR_NVRTC, "%s: no cubin from NVRTC (%s)", name, nvrtcGetErrorString(r));
    void *buf = malloc(n);
    if (!buf)
        return lg_fail(LG_ERR_OOM, "%s: cubin of %zu bytes", name, n);
    r = nvrtcGetCUBIN(prog, buf);
    if (r != NVRTC_SUCCESS) {
        free(buf);
        return lg_fail(LG_ERR_NVRTC, "%s: nvrtcGetCUBIN: %s", name, nvrtcGetErrorString(r));
    }
    *cubin = buf;
    *size = n;
    return LG_OK;
}

enum lg_status lg_nvrtc_compile(const char *source, const char *src_name, int arch, void **cubin,
                                size_t *cubin_size, char **log_out)
{
    const char *name = src_name ? src_name : "lg_source.cu";
    if (log_out)
        *log_out = NULL;
    if (!source || !cubin || !cubin_size)
        return lg_fail(LG_ERR_INVALID, "%s: lg_nvrtc_compile: null source or output", name);
    int nopt = 0;
    const char *const *opts = lg_nvrtc_options(arch, &nopt);
    if (!opts)
        return lg_fail(LG_ERR_UNSUPPORTED, "%s: arch %d is not an sm_XX we can target", name, arch);

    nvrtcProgram prog;
    nvrtcResult r = nvrtcCreateProgram(&prog, source, name, 0, NULL, NULL);
    if (r != NVRTC_SUCCESS)
        return lg_fail(LG_ERR_NVRTC, "%s: nvrtcCreateProgram: %s", name, nvrtcGetErrorString(r));
    r = nvrtcCompileProgram(prog, nopt, opts);
    char *log = program_log(prog);
    enum lg_status st;
    if (r != NVRTC_SUCCESS)
        st = lg_fail(LG_ERR_NVRTC, "%s: NVRTC compile for sm_%d failed (%s):\n%s", name, arch,
                     nvrtcGetErrorString(r), log ? log : "(log lost: out of memory)");
    else
        st = take_cubin(prog, name, cubin, cubin_size);
    nvrtcDestroyProgram(&prog);
    if (st == LG_OK && log_out)
        *log_out = log;
    else
        free(log);
    return st;
}

/* ---- cache key ---- */

/* Each field goes in as (tag, length, bytes), so no two different field lists hash the same byte stream:
 * options {"ab","c"} and {"a","bc"} differ, and so does a source that happens to end like an option. */
static void key_field(struct lg_hash128 *s, uint8_t tag, const void *data, uint64_t n)
{
    uint8_t hdr[9] = {tag};
    for (int i = 0; i < 8; i++)
        hdr[1 + i] = (uint8_t)(n >> (8 * i));
    lg_hash128_update(s, hdr, sizeof hdr);
    lg_hash128_update(s, data, (size_t)n);
}

static void key_int(struct lg_hash128 *s, uint8_t tag, int v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)((uint32_t)v >> (8 * i));
    key_field(s, tag, b, 4);
}

void lg_jit_key_ex(const char *source, int arch, int nvrtc_version, const char *const *opts, int nopt,
                   int format_version, struct lg_jit_key *out)
{
    struct lg_hash128 s;
    lg_hash128_init(&s, 0);
    key_field(&s, 'L', "loragen-jit", 11);
    key_int(&s, 'F', format_version);
    key_int(&s, 'A', arch);
    key_int(&s, 'V', nvrtc_version);
    key_int(&s, 'N', nopt);
    for (int i = 0; i < nopt; i++)
        key_field(&s, 'O', opts[i], strlen(opts[i]));
    key_field(&s, 'S', source ? source : "", source ? strlen(source) : 0);
    lg_hash128_final(&s, out->h);
    snprintf(out->hex, sizeof out->hex, "%016llx%016llx", (unsigned long long)out->h[0],
             (unsigned long long)out->h[1]);
}

void lg_jit_key(const char *source, int arch, struct lg_jit_key *out)
{
    int nopt = 0;
    const char *const *opts = lg_nvrtc_options(arch, &nopt);
    lg_jit_key_ex(source, arch, lg_nvrtc_version(), opts, nopt, LG_JIT_FORMAT_VERSION, out);
}

void lg_jit_cache_key(const char *source, int arch, char key_out[33])
{
    struct lg_jit_key k;
    lg_jit_key(source, arch, &k);
    memcpy(key_out, k.hex, 33);
}
