/* spec.c: loads a spec file through the sandboxed Lua validator (generator/spec.lua) and converts the
 * normalised table into struct lg_spec. All validation lives in Lua so `loragen gen` and the library report
 * the same errors; the schema bounds every integer by what the C fields hold (generator/limits.lua), and this
 * side still reads each one as an integer in the range of its field, never through a float-to-int cast, so a
 * bound missing from the schema is an error here rather than undefined behaviour. */
#include "lg_gen.h"
#include "lg_base.h"
#include "lg_lua.h"

#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static char *dup_field(lua_State *L, int idx, const char *key)
{
    lua_getfield(L, idx, key);
    const char *s = lua_tostring(L, -1);
    char *r = s ? strdup(s) : NULL;
    lua_pop(L, 1);
    return r;
}

/* The conversion's state: the first field out of range is kept for the message. */
struct conv {
    const char *bad;
};

/* A finite number (0 when absent). */
static double num_field(lua_State *L, int idx, const char *key, struct conv *cv)
{
    lua_getfield(L, idx, key);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!isfinite(v) && !cv->bad)
        cv->bad = key;
    return isfinite(v) ? v : 0;
}

/* An integer in [0, max] (0 when absent). */
static int64_t int_field(lua_State *L, int idx, const char *key, int64_t max, struct conv *cv)
{
    lua_getfield(L, idx, key);
    int ok = lua_isnil(L, -1);
    lua_Integer v = ok ? 0 : lua_tointegerx(L, -1, &ok);
    lua_pop(L, 1);
    if (!ok || v < 0 || v > max) {
        if (!cv->bad)
            cv->bad = key;
        return 0;
    }
    return (int64_t)v;
}

static enum lg_status read_linears(lua_State *L, int idx, struct lg_spec *s, struct conv *cv)
{
    lua_getfield(L, idx, "linears");
    int n = (int)luaL_len(L, -1);
    s->linears = calloc(n > 0 ? (size_t)n : 1, sizeof *s->linears);
    if (!s->linears)
        return lg_fail(LG_ERR_OOM, "spec: out of memory");
    for (int i = 0; i < n; i++) {
        lua_geti(L, -1, i + 1);
        int t = lua_gettop(L);
        lua_getfield(L, t, "name");
        size_t len = 0;
        const char *name = lua_tolstring(L, -1, &len);
        if (!name || len >= sizeof s->linears[i].name)
            cv->bad = "linears.name";
        snprintf(s->linears[i].name, sizeof s->linears[i].name, "%s", name ? name : "");
        lua_pop(L, 1);
        s->linears[i].in_features = int_field(L, t, "in_features", INT32_MAX, cv);
        s->linears[i].out_features = int_field(L, t, "out_features", INT32_MAX, cv);
        lua_getfield(L, t, "bias");
        s->linears[i].bias = lua_toboolean(L, -1);
        lua_pop(L, 2);
    }
    s->nlinears = n;
    lua_pop(L, 1);
    return LG_OK;
}

static void read_archs(lua_State *L, int idx, struct lg_spec *s)
{
    lua_getfield(L, idx, "archs");
    int n = (int)luaL_len(L, -1);
    for (int i = 0; i < n && s->narchs < LG_MAX_ARCHS; i++) {
        lua_geti(L, -1, i + 1);
        const char *a = lua_tostring(L, -1);
        if (a && !strncmp(a, "sm_", 3))
            s->archs[s->narchs++] = atoi(a + 3);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static int bool_field(lua_State *L, int idx, const char *key)
{
    lua_getfield(L, idx, key);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static void read_model(lua_State *L, int idx, struct lg_spec_model *m, struct conv *cv)
{
    if (lua_getfield(L, idx, "model") == LUA_TTABLE) {
        int t = lua_gettop(L);
        char *fam = dup_field(L, t, "family");
        m->present = 1;
        m->qwen2 = fam && !strcmp(fam, "qwen2");
        free(fam);
        m->hidden_size = (int)int_field(L, t, "hidden_size", INT32_MAX, cv);
        m->intermediate_size = (int)int_field(L, t, "intermediate_size", INT32_MAX, cv);
        m->num_attention_heads = (int)int_field(L, t, "num_attention_heads", INT32_MAX, cv);
        m->num_key_value_heads = (int)int_field(L, t, "num_key_value_heads", INT32_MAX, cv);
        m->head_dim = (int)int_field(L, t, "head_dim", INT32_MAX, cv);
        m->num_hidden_layers = (int)int_field(L, t, "num_hidden_layers", INT32_MAX, cv);
        m->vocab_size = (int)int_field(L, t, "vocab_size", INT32_MAX, cv);
        m->attention_bias = bool_field(L, t, "attention_bias");
        m->tie_word_embeddings = bool_field(L, t, "tie_word_embeddings");
        m->rope_theta = num_field(L, t, "rope_theta", cv);
        m->rms_norm_eps = num_field(L, t, "rms_norm_eps", cv);
        m->rope_llama3 = bool_field(L, t, "rope_llama3");
        m->rope_factor = num_field(L, t, "rope_factor", cv);
        m->rope_low_freq_factor = num_field(L, t, "rope_low_freq_factor", cv);
        m->rope_high_freq_factor = num_field(L, t, "rope_high_freq_factor", cv);
        m->rope_original_max_position = (int)int_field(L, t, "rope_original_max_position", INT32_MAX, cv);
        /* q_proj's width in 64 bits: the schema bounds it by the kernels' features, checked again here */
        if ((int64_t)m->num_attention_heads * m->head_dim > INT32_MAX && !cv->bad)
            cv->bad = "num_attention_heads * head_dim";
    }
    lua_pop(L, 1);
}

static enum lg_status convert(lua_State *L, int idx, struct lg_spec *s)
{
    s->name = dup_field(L, idx, "name");
    s->path = dup_field(L, idx, "path");
    char *dt = dup_field(L, idx, "dtype");
    enum lg_status st = lg_dtype_parse(dt, &s->dtype);
    free(dt);
    if (st != LG_OK)
        return st;
    struct conv cv = {NULL};
    s->rank = (int)int_field(L, idx, "rank", INT32_MAX, &cv);
    s->alpha = num_field(L, idx, "alpha", &cv);
    s->dropout = num_field(L, idx, "dropout", &cv);
    s->tokens = (int)int_field(L, idx, "tokens", INT32_MAX, &cv);
    s->layers = (int)int_field(L, idx, "layers", INT32_MAX, &cv);
    read_archs(L, idx, s);
    read_model(L, idx, &s->model, &cv);
    if ((st = read_linears(L, idx, s, &cv)) != LG_OK)
        return st;
    if (cv.bad)
        return lg_fail(LG_ERR_INTERNAL, "%s: generator/spec.lua passed %s out of the range of its C field (a bound "
                       "missing from the schema)", s->path ? s->path : "spec", cv.bad);
    return LG_OK;
}

enum lg_status lg_spec_load(const char *path, struct lg_spec **out)
{
    char *text;
    size_t n;
    enum lg_status st = lg_file_read(path, LG_FILE_LIMIT_TEXT, &text, &n);
    if (st != LG_OK)
        return lg_fail(LG_ERR_SPEC, "%s", lg_last_error());
    lua_State *L;
    if ((st = lg_lua_open(&L)) != LG_OK) {
        free(text);
        return st;
    }
    lua_pushlstring(L, text, n);
    lua_pushstring(L, path);
    free(text);
    st = lg_lua_pcall_module(L, "generator.spec", "load", 2, 2, LG_ERR_SPEC);
    if (st == LG_OK && lua_isnil(L, -2))
        st = lg_fail(LG_ERR_SPEC, "%s", lua_tostring(L, -1));
    struct lg_spec *s = NULL;
    if (st == LG_OK) {
        s = calloc(1, sizeof *s);
        st = s ? convert(L, lua_gettop(L) - 1, s) : lg_fail(LG_ERR_OOM, "spec: out of memory");
    }
    lua_close(L);
    if (st != LG_OK) {
        lg_spec_free(s);
        return st;
    }
    *out = s;
    return LG_OK;
}

void lg_spec_free(struct lg_spec *s)
{
    if (!s)
        return;
    free(s->name);
    free(s->path);
    free(s->linears);
    free(s);
}
