/* jobfile.c: loads a Lua job file (schema and defaults: generator/job.lua) into a job. The Lua side
 * validates and normalises; this side only reads the normalised table (every integer within its C field's
 * range and every number finite, lua_fields.h), builds the cost model, and loads the datasets relative to the
 * job file, prefixing their errors with the job file's line for that adapter. */
#include "lg_io.h"
#include "lg_base.h"
#include "lg_lua.h"
#include "lua_fields.h"

#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A field outside its C range: a bound missing from generator/job.lua. */
static enum lg_status bad_field(const char *path, int line, const char *where, const char *k)
{
    char at[32] = "";
    if (line > 0)
        snprintf(at, sizeof at, ":%d", line);
    return lg_fail(LG_ERR_SPEC, "%s%s: error: '%s%s' is not finite or outside the range of its C field (a bound "
                   "missing from the schema)", path, at, where, k);
}

static const char *str(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    const char *s = lua_tostring(L, -1); /* the table keeps it alive */
    lua_pop(L, 1);
    return s;
}

/* model = {...} gives FLOP-derived coefficients; cost = {...} overrides them one by one; a calibration list
 * replaces the timing terms by a least-squares fit to measured layer times. */
static enum lg_status read_cost(lua_State *L, int top, const char *path, struct lg_costmodel *cm,
                                const char **bad)
{
    struct lg_model_dims d = lg_model_dims_default();
    if (lua_getfield(L, top, "model") == LUA_TTABLE) {
        int m = lua_gettop(L);
        d.hidden = (int)lg_io_lua_int(L, m, "hidden", d.hidden, INT32_MAX, bad);
        d.ffn = (int)lg_io_lua_int(L, m, "ffn", d.ffn, INT32_MAX, bad);
        d.layers = (int)lg_io_lua_int(L, m, "layers", d.layers, INT32_MAX, bad);
        d.heads = (int)lg_io_lua_int(L, m, "heads", d.heads, INT32_MAX, bad);
        d.kv_heads = (int)lg_io_lua_int(L, m, "kv_heads", d.heads, INT32_MAX, bad);
        d.tflops = lg_io_lua_num(L, m, "tflops", d.tflops, bad);
        d.attn_tflops = lg_io_lua_num(L, m, "attention_tflops", d.attn_tflops, bad);
        d.layer_us = lg_io_lua_num(L, m, "layer_us", d.layer_us, bad);
    }
    lua_pop(L, 1);
    if (*bad)
        return bad_field(path, 0, "model.", *bad);
    enum lg_status s = lg_costmodel_from_dims(&d, cm);
    if (s != LG_OK)
        return lg_fail_wrap(s, "%s: model: ", path);
    if (lua_getfield(L, top, "cost") != LUA_TTABLE) {
        lua_pop(L, 1);
        return LG_OK;
    }
    int c = lua_gettop(L);
    cm->layer_us = lg_io_lua_num(L, c, "layer_us", cm->layer_us, bad);
    cm->token_us = lg_io_lua_num(L, c, "token_us", cm->token_us, bad);
    cm->token_rank_us = lg_io_lua_num(L, c, "token_rank_us", cm->token_rank_us, bad);
    cm->attn_us = lg_io_lua_num(L, c, "attention_us", cm->attn_us, bad);
    cm->bwd_linear = lg_io_lua_num(L, c, "backward_linear", cm->bwd_linear, bad);
    cm->bwd_attn = lg_io_lua_num(L, c, "backward_attention", cm->bwd_attn, bad);
    cm->act_bytes = lg_io_lua_num(L, c, "act_bytes_per_token", cm->act_bytes, bad);
    if (*bad) {
        lua_pop(L, 1);
        return bad_field(path, 0, "cost.", *bad);
    }
    if (lua_getfield(L, c, "calibration") == LUA_TTABLE) {
        int cal = lua_gettop(L);
        size_t n = (size_t)lua_rawlen(L, cal);
        struct lg_cost_sample *smp = calloc(n ? n : 1, sizeof *smp);
        if (!smp) {
            lua_pop(L, 2);
            return lg_fail(LG_ERR_OOM, "job: out of memory");
        }
        for (size_t i = 0; i < n && !*bad; i++) {
            lua_rawgeti(L, cal, (lua_Integer)i + 1);
            int e = lua_gettop(L);
            smp[i].tokens = lg_io_lua_num(L, e, "tokens", 0, bad);
            smp[i].sum_len2 = lg_io_lua_num(L, e, "sum_len2", 0, bad);
            smp[i].rank_tokens = lg_io_lua_num(L, e, "rank_tokens", 0, bad);
            smp[i].fwd_us = lg_io_lua_num(L, e, "us", 0, bad);
            lua_pop(L, 1);
            if (*bad) {
                char at[64];
                snprintf(at, sizeof at, "cost.calibration[%zu].", i + 1);
                s = bad_field(path, 0, at, *bad);
            }
        }
        if (s == LG_OK && (s = lg_costmodel_fit(cm, smp, n)) != LG_OK)
            s = lg_fail_wrap(s, "%s: cost.calibration: ", path);
        free(smp);
    }
    lua_pop(L, 2);
    return s;
}

static enum lg_status read_params(lua_State *L, int top, const char *path, struct lg_job_params *p)
{
    const char *bad = NULL;
    *p = lg_job_params_default();
    p->stages = (int)lg_io_lua_int(L, top, "stages", 1, INT32_MAX, &bad);
    p->data_parallel = (int)lg_io_lua_int(L, top, "data_parallel", 1, INT32_MAX, &bad);
    p->p2p_us = lg_io_lua_num(L, top, "p2p_us", 0, &bad);
    p->optimizer_us = lg_io_lua_num(L, top, "optimizer_us", 0, &bad);
    p->pad_multiple = (int)lg_io_lua_int(L, top, "pad_multiple", 16, INT32_MAX, &bad);
    p->shuffle_seed = (uint64_t)lg_io_lua_int(L, top, "seed", 0, INT64_MAX, &bad);
    p->fill_target = (uint32_t)lg_io_lua_int(L, top, "target", 0, UINT32_MAX, &bad);
    const char *ov = str(L, top, "oversize");
    p->oversize = !strcmp(ov, "truncate") ? LG_OVERSIZE_TRUNCATE
                  : !strcmp(ov, "skip")   ? LG_OVERSIZE_SKIP
                                          : LG_OVERSIZE_ERROR;
    int auto_cap = lua_getfield(L, top, "capacity") == LUA_TSTRING;
    lua_pop(L, 1);
    p->capacity_policy = auto_cap ? LG_CAPACITY_AUTO : LG_CAPACITY_FIXED;
    p->capacity = auto_cap ? 0 : (uint32_t)lg_io_lua_int(L, top, "capacity", 0, UINT32_MAX, &bad);
    p->memory_budget_bytes = lg_io_lua_num(L, top, "memory_budget_gb", 0, &bad) * 1e9;
    if (bad)
        return bad_field(path, 0, "", bad);
    return read_cost(L, top, path, &p->cost, &bad);
}

/* The dataset path as given, or joined to the job file's directory when relative. */
static char *dataset_path(const char *job_path, const char *rel)
{
    if (rel[0] == '/')
        return strdup(rel);
    const char *slash = strrchr(job_path, '/');
    size_t dir = slash ? (size_t)(slash - job_path) + 1 : 0;
    char *out = malloc(dir + strlen(rel) + 1);
    if (out) {
        memcpy(out, job_path, dir);
        strcpy(out + dir, rel);
    }
    return out;
}

static enum lg_status read_adapter(lua_State *L, int t, int i, const char *path, lg_job_t *job)
{
    char where[1024];
    const char *bad = NULL;
    int dline = (int)lg_io_lua_int(L, t, "dataset_line", 1, INT32_MAX, &bad);
    int line = (int)lg_io_lua_int(L, t, "line", 1, INT32_MAX, &bad);
    char *dpath = dataset_path(path, str(L, t, "dataset"));
    if (!dpath)
        return lg_fail(LG_ERR_OOM, "job: out of memory");
    const char *fmt = str(L, t, "format");
    lg_dataset_t *ds;
    enum lg_status s = lg_dataset_load(dpath, !strcmp(fmt, "jsonl") ? LG_DATASET_JSONL : LG_DATASET_TRACE, &ds);
    free(dpath);
    if (s != LG_OK)
        return lg_fail_wrap(s, "%s:%d: error: adapters[%d].dataset: ", path, dline, i);
    struct lg_adapter_params ap = {
        .name = str(L, t, "name"),
        .global_batch = (int)lg_io_lua_int(L, t, "global_batch", 1, INT32_MAX, &bad),
        .rank = (int)lg_io_lua_int(L, t, "rank", 16, INT32_MAX, &bad),
        .alpha = lg_io_lua_num(L, t, "alpha", 32, &bad),
        .dropout = lg_io_lua_num(L, t, "dropout", 0, &bad),
        .lr = lg_io_lua_num(L, t, "lr", 1e-4, &bad),
    };
    lua_getfield(L, t, "drop_last");
    ap.drop_last = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (bad) {
        char at[48];
        snprintf(at, sizeof at, "adapters[%d].", i);
        lg_dataset_free(ds);
        return bad_field(path, line, at, bad);
    }
    snprintf(where, sizeof where, "%s:%d: error: adapters[%d] ('%s')", path, line, i, ap.name);
    s = lg_job_add_adapter(job, &ap, ds, where);
    return s == LG_ERR_INVALID ? lg_fail_wrap(LG_ERR_SPEC, "%s", "") : s;
}

static enum lg_status build(lua_State *L, const char *path, lg_job_t **out)
{
    int top = lua_gettop(L);
    struct lg_job_params p;
    enum lg_status s = read_params(L, top, path, &p);
    if (s != LG_OK)
        return s;
    lg_job_t *job;
    if ((s = lg_job_init(&p, &job)) != LG_OK)
        return lg_fail_wrap(s, "%s: ", path);
    const char *name = str(L, top, "name");
    if ((s = lg_job_set_name(job, name ? name : "job")) != LG_OK) {
        lg_job_free(job);
        return s;
    }
    lua_getfield(L, top, "adapters");
    int ads = lua_gettop(L);
    int n = (int)lua_rawlen(L, ads);
    for (int i = 1; s == LG_OK && i <= n; i++) {
        lua_rawgeti(L, ads, i);
        s = read_adapter(L, lua_gettop(L), i, path, job);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (s == LG_OK && lg_job_adapter_count(job) == 0)
        s = lg_fail(LG_ERR_SPEC, "%s: no adapters", path);
    if (s != LG_OK) {
        lg_job_free(job);
        return s;
    }
    *out = job;
    return LG_OK;
}

/* device: read by a trainer (lg_job_load_device); capacity > 0 overrides the capacity policy. */
static enum lg_status load(const char *path, int device, uint32_t capacity, lg_job_t **out)
{
    if (!path || !out)
        return lg_fail(LG_ERR_INVALID, "lg_job_load: null argument");
    char *text;
    size_t size;
    enum lg_status s = lg_file_read(path, LG_FILE_LIMIT_TEXT, &text, &size);
    if (s != LG_OK)
        return s;
    lua_State *L;
    if ((s = lg_lua_open(&L)) != LG_OK) {
        free(text);
        return s;
    }
    lua_pushlstring(L, text, size);
    lua_pushstring(L, path);
    free(text);
    lua_createtable(L, 0, 2);
    lua_pushboolean(L, device);
    lua_setfield(L, -2, "device");
    if (capacity) {
        lua_pushinteger(L, (lua_Integer)capacity);
        lua_setfield(L, -2, "capacity");
    }
    s = lg_lua_pcall_module(L, "generator.job", "load", 3, 1, LG_ERR_SPEC);
    if (s == LG_OK)
        s = build(L, path, out);
    lua_close(L);
    return s;
}

enum lg_status lg_job_load(const char *path, lg_job_t **out) { return load(path, 0, 0, out); }

enum lg_status lg_job_load_device(const char *path, uint32_t capacity, lg_job_t **out)
{
    return load(path, 1, capacity, out);
}
