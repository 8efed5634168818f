/* jit.c: lg_jit_t: compiled kernels by cache key, looked up in memory, then on disk (jit_disk.c), then
 * compiled with NVRTC (nvrtc.c), and loaded into the current CUDA context.
 *
 * Driver calls go through cudrv.c, which opens libcuda.so.1 on first use: with params->arch set, nothing here
 * touches the driver until lg_jit_get, so `loragen gen` and lg_jit_get_cubin work without one. Every call
 * through lg_jit_t counts exactly one of mem_hits, disk_hits or compiles. */
#include "jit_internal.h"
#include "lg_base.h"
#include "lg_gpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- driver errors ---- */

/* The error's name; the number when the driver cannot name it (the toolkit's stub names nothing). */
static const char *cu_err(CUresult r)
{
    static char buf[64];
    const char *name = NULL;
    if (r == CUDA_ERROR_STUB_LIBRARY)
        return "CUDA_ERROR_STUB_LIBRARY (the toolkit's stub libcuda, not a driver)";
    if (cuGetErrorName(r, &name) == CUDA_SUCCESS && name)
        return name;
    snprintf(buf, sizeof buf, "CUresult %d", (int)r);
    return buf;
}

/* cudrv.c answers CUDA_ERROR_NO_DEVICE when there is no driver at all. */
static enum lg_status cu_status(CUresult r)
{
    return r == CUDA_ERROR_NO_DEVICE || r == CUDA_ERROR_STUB_LIBRARY ? LG_ERR_NO_GPU : LG_ERR_CUDA;
}

/* ---- memory tables ---- */

struct jit_mod {
    struct lg_jit_key key;
    int arch;
    void *cubin;
    size_t size;
    CUmodule mod; /* NULL until lg_jit_get loads it */
};

struct jit_fn {
    size_t mod;
    char *name;
    CUfunction fn;
};

/* Open addressing over indices into the entry arrays; idx1 == 0 marks an empty slot. */
struct jit_slot {
    uint64_t h;
    size_t idx1;
};
struct jit_index {
    struct jit_slot *s;
    size_t cap, n;
};

struct lg_jit {
    int arch;
    struct lg_jit_disk disk;
    struct lg_jit_stats stats;
    struct jit_mod *mods;
    size_t nmods, capmods;
    struct jit_fn *fns;
    size_t nfns, capfns;
    struct jit_index mod_ix, fn_ix;
};

static void index_put_slot(struct jit_slot *s, size_t cap, uint64_t h, size_t idx1)
{
    size_t i = h & (cap - 1);
    while (s[i].idx1)
        i = (i + 1) & (cap - 1);
    s[i].h = h;
    s[i].idx1 = idx1;
}

/* Inserts entry idx under hash h, growing at half full so probes stay short. */
static bool index_insert(struct jit_index *ix, uint64_t h, size_t idx)
{
    if (2 * (ix->n + 1) > ix->cap) {
        size_t cap = ix->cap ? 2 * ix->cap : 64;
        struct jit_slot *s = calloc(cap, sizeof *s);
        if (!s)
            return false;
        for (size_t i = 0; i < ix->cap; i++)
            if (ix->s[i].idx1)
                index_put_slot(s, cap, ix->s[i].h, ix->s[i].idx1);
        free(ix->s);
        ix->s = s;
        ix->cap = cap;
    }
    ix->n++;
    index_put_slot(ix->s, ix->cap, h, idx + 1);
    return true;
}

static uint64_t name_hash(uint64_t seed, const char *name)
{
    uint64_t h[2];
    lg_hash128(name, strlen(name), (uint32_t)seed, h);
    return h[0] ^ seed;
}

static struct jit_mod *mod_find(const lg_jit_t *jit, const struct lg_jit_key *k, size_t *idx)
{
    const struct jit_index *ix = &jit->mod_ix;
    if (!ix->cap)
        return NULL;
    for (size_t i = k->h[0] & (ix->cap - 1); ix->s[i].idx1; i = (i + 1) & (ix->cap - 1)) {
        struct jit_mod *m = &jit->mods[ix->s[i].idx1 - 1];
        if (ix->s[i].h == k->h[0] && m->key.h[1] == k->h[1]) {
            *idx = ix->s[i].idx1 - 1;
            return m;
        }
    }
    return NULL;
}

static struct jit_fn *fn_find(const lg_jit_t *jit, size_t mod, const char *name)
{
    const struct jit_index *ix = &jit->fn_ix;
    uint64_t h = name_hash(jit->mods[mod].key.h[0], name);
    if (!ix->cap)
        return NULL;
    for (size_t i = h & (ix->cap - 1); ix->s[i].idx1; i = (i + 1) & (ix->cap - 1)) {
        struct jit_fn *f = &jit->fns[ix->s[i].idx1 - 1];
        if (ix->s[i].h == h && f->mod == mod && strcmp(f->name, name) == 0)
            return f;
    }
    return NULL;
}

/* Grows an entry array to hold one more; false when out of memory. */
static bool reserve(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return true;
    size_t nc = *cap ? 2 * *cap : 16;
    void *a = realloc(*arr, nc * elem);
    if (!a)
        return false;
    *arr = a;
    *cap = nc;
    return true;
}

/* Takes ownership of cubin (freed on failure). */
static enum lg_status mod_add(lg_jit_t *jit, const struct lg_jit_key *k, int arch, void *cubin, size_t size,
                              size_t *idx)
{
    if (!reserve((void **)&jit->mods, &jit->capmods, jit->nmods, sizeof *jit->mods) ||
        !index_insert(&jit->mod_ix, k->h[0], jit->nmods)) {
        free(cubin);
        return lg_fail(LG_ERR_OOM, "jit: module table");
    }
    jit->mods[jit->nmods] = (struct jit_mod){.key = *k, .arch = arch, .cubin = cubin, .size = size};
    *idx = jit->nmods++;
    return LG_OK;
}

static enum lg_status fn_add(lg_jit_t *jit, size_t mod, const char *name, CUfunction fn)
{
    char *copy = strdup(name);
    if (!copy || !reserve((void **)&jit->fns, &jit->capfns, jit->nfns, sizeof *jit->fns) ||
        !index_insert(&jit->fn_ix, name_hash(jit->mods[mod].key.h[0], name), jit->nfns)) {
        free(copy);
        return lg_fail(LG_ERR_OOM, "jit: function table");
    }
    jit->fns[jit->nfns++] = (struct jit_fn){.mod = mod, .name = copy, .fn = fn};
    return LG_OK;
}

/* ---- finding a cubin: memory, disk, compile ---- */

static enum lg_status compile_and_store(lg_jit_t *jit, const struct lg_jit_key *k, const char *source,
                                        int arch, void **cubin, size_t *size)
{
    /* A name derived from the key keeps the cubin (its -lineinfo file name) a function of the key alone;
     * generated sources carry #line directives, so diagnostics still point at templates/. */
    char name[48];
    snprintf(name, sizeof name, "lg_jit_%.16s.cu", k->hex);
    enum lg_status st = lg_nvrtc_compile(source, name, arch, cubin, size, NULL);
    if (st != LG_OK)
        return st;
    jit->stats.compiles++;
    lg_jit_disk_store(&jit->disk, k, arch, *cubin, *size);
    return LG_OK;
}

/* The memory entry for (source, arch), created from disk or by compiling when absent. */
static enum lg_status mod_obtain(lg_jit_t *jit, const char *source, int arch, size_t *idx)
{
    struct lg_jit_key k;
    lg_jit_key(source, arch, &k);
    if (mod_find(jit, &k, idx)) {
        jit->stats.mem_hits++;
        return LG_OK;
    }
    void *cubin = NULL;
    size_t size = 0;
    char why[256] = "";
    enum lg_disk_result r = lg_jit_disk_load(&jit->disk, &k, arch, &cubin, &size, why);
    if (r == LG_DISK_HIT) {
        jit->stats.disk_hits++;
        return mod_add(jit, &k, arch, cubin, size, idx);
    }
    if (r == LG_DISK_CORRUPT)
        jit->stats.corrupt_rebuilt++; /* `why` is dropped: a rebuild is the whole remedy */
    enum lg_status st = compile_and_store(jit, &k, source, arch, &cubin, &size);
    return st != LG_OK ? st : mod_add(jit, &k, arch, cubin, size, idx);
}

/* ---- the public API ---- */

/* The current context's compute capability as 10*major + minor. */
static enum lg_status current_arch(int *arch)
{
    CUcontext ctx = NULL;
    CUresult r = cuCtxGetCurrent(&ctx);
    if (cu_status(r) == LG_ERR_NO_GPU)
        return lg_fail(LG_ERR_NO_GPU, "jit: arch 0 asks for the current device, but there is none (%s)",
                       cu_err(r));
    if (r != CUDA_SUCCESS || !ctx)
        return lg_fail(LG_ERR_CUDA, "jit: arch 0 asks for the current context's device, but no CUDA context "
                       "is current (%s); create an lg_ctx_t first or set params->arch",
                       r != CUDA_SUCCESS ? cu_err(r) : "none");
    CUdevice dev;
    int maj = 0, min = 0;
    const CUdevice_attribute MAJ = CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                             MIN = CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR;
    if ((r = cuCtxGetDevice(&dev)) != CUDA_SUCCESS || (r = cuDeviceGetAttribute(&maj, MAJ, dev)) ||
        (r = cuDeviceGetAttribute(&min, MIN, dev)))
        return lg_fail(LG_ERR_CUDA, "jit: querying the current device's compute capability: %s", cu_err(r));
    *arch = 10 * maj + min;
    return LG_OK;
}

enum lg_status lg_jit_init(const struct lg_jit_params *p, lg_jit_t **out)
{
    static const struct lg_jit_params defaults = {0};
    if (!out)
        return lg_fail(LG_ERR_INVALID, "lg_jit_init: null output");
    *out = NULL;
    if (!p)
        p = &defaults;
    int arch = p->arch;
    enum lg_status st = arch ? LG_OK : current_arch(&arch);
    if (st != LG_OK)
        return st;
    if (!lg_nvrtc_options(arch, NULL))
        return lg_fail(LG_ERR_UNSUPPORTED, "lg_jit_init: arch %d is not an sm_XX we can target", arch);
    lg_jit_t *jit = calloc(1, sizeof *jit);
    if (!jit)
        return lg_fail(LG_ERR_OOM, "lg_jit_init");
    jit->arch = arch;
    if ((st = lg_jit_disk_open(&jit->disk, p->cache_dir, p->flags)) != LG_OK) {
        free(jit);
        return st;
    }
    *out = jit;
    return LG_OK;
}

void lg_jit_free(lg_jit_t *jit)
{
    if (!jit)
        return;
    for (size_t i = 0; i < jit->nmods; i++) {
        if (jit->mods[i].mod)
            cuModuleUnload(jit->mods[i].mod); /* may fail if the context is gone; nothing to do then */
        free(jit->mods[i].cubin);
    }
    for (size_t i = 0; i < jit->nfns; i++)
        free(jit->fns[i].name);
    free(jit->mods);
    free(jit->fns);
    free(jit->mod_ix.s);
    free(jit->fn_ix.s);
    lg_jit_disk_close(&jit->disk);
    free(jit);
}

static enum lg_status mod_load(struct jit_mod *m)
{
    if (m->mod)
        return LG_OK;
    CUresult r = cuModuleLoadData(&m->mod, m->cubin);
    if (r != CUDA_SUCCESS) {
        m->mod = NULL;
        return lg_fail(cu_status(r), "jit: cuModuleLoadData (sm_%d, key %s): %s", m->arch, m->key.hex,
                       cu_err(r));
    }
    return LG_OK;
}

enum lg_status lg_jit_get(lg_jit_t *jit, const char *source, const char *kernel_name, CUfunction *out)
{
    if (!jit || !source || !kernel_name || !out)
        return lg_fail(LG_ERR_INVALID, "lg_jit_get: null argument");
    size_t idx;
    enum lg_status st = mod_obtain(jit, source, jit->arch, &idx);
    if (st != LG_OK)
        return lg_fail_wrap(st, "kernel %s: ", kernel_name);
    struct jit_fn *f = fn_find(jit, idx, kernel_name);
    if (f) {
        *out = f->fn;
        return LG_OK;
    }
    struct jit_mod *m = &jit->mods[idx];
    if ((st = mod_load(m)) != LG_OK)
        return lg_fail_wrap(st, "kernel %s: ", kernel_name);
    CUfunction fn;
    CUresult r = cuModuleGetFunction(&fn, m->mod, kernel_name);
    if (r != CUDA_SUCCESS)
        return lg_fail(LG_ERR_CUDA, "kernel %s: cuModuleGetFunction (key %s): %s", kernel_name, m->key.hex,
                       cu_err(r));
    if ((st = fn_add(jit, idx, kernel_name, fn)) != LG_OK)
        return st;
    *out = fn;
    return LG_OK;
}

enum lg_status lg_jit_get_cubin(lg_jit_t *jit, const char *source, int arch, void **cubin, size_t *size)
{
    if (!jit || !source || !cubin || !size)
        return lg_fail(LG_ERR_INVALID, "lg_jit_get_cubin: null argument");
    if (!arch)
        arch = jit->arch;
    size_t idx;
    enum lg_status st = mod_obtain(jit, source, arch, &idx);
    if (st != LG_OK)
        return st;
    const struct jit_mod *m = &jit->mods[idx];
    if (!(*cubin = malloc(m->size)))
        return lg_fail(LG_ERR_OOM, "lg_jit_get_cubin: %zu bytes", m->size);
    memcpy(*cubin, m->cubin, m->size);
    *size = m->size;
    return LG_OK;
}

void lg_jit_get_stats(const lg_jit_t *jit, struct lg_jit_stats *out) { *out = jit->stats; }

const char *lg_jit_cache_dir(const lg_jit_t *jit) { return jit->disk.dir; }

const char *lg_jit_cache_note(const lg_jit_t *jit) { return jit->disk.note; }
