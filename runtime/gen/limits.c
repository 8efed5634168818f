/* limits.c: the kernels' shape rules as the generator states them (generator/limits.lua, M.published()), for
 * the C callers that check a layer before any kernel exists (lg_lora_init). Read once per process, in a Lua
 * state of its own, so the answer needs no generator handle; every key the generator publishes must be a
 * field of struct lg_gen_limits and every field must be published, or the call fails. */
#include "lg_gen.h"
#include "lg_base.h"
#include "lg_lua.h"

#include <lauxlib.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    size_t offset;
} limit_fields[] = {
    {"rank_min", offsetof(struct lg_gen_limits, rank_min)},
    {"rank_max", offsetof(struct lg_gen_limits, rank_max)},
    {"rank_multiple", offsetof(struct lg_gen_limits, rank_multiple)},
    {"feature_multiple", offsetof(struct lg_gen_limits, feature_multiple)},
    {"mlora_rank_min", offsetof(struct lg_gen_limits, mlora_rank_min)},
    {"mlora_rank_max", offsetof(struct lg_gen_limits, mlora_rank_max)},
    {"mlora_rank_multiple", offsetof(struct lg_gen_limits, mlora_rank_multiple)},
};
#define NLIMITS ((int)(sizeof limit_fields / sizeof limit_fields[0]))

static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct lg_gen_limits cached;
static enum lg_status cached_status;
static char cached_error[512];

/* dtypes = { "bf16", ... } at idx as a bit mask. */
static enum lg_status read_dtypes(lua_State *L, int idx, unsigned *mask)
{
    int n = (int)luaL_len(L, idx);
    for (int i = 1; i <= n; i++) {
        lua_geti(L, idx, i);
        enum lg_dtype t;
        enum lg_status st = lg_dtype_parse(lua_tostring(L, -1), &t);
        lua_pop(L, 1);
        if (st != LG_OK)
            return lg_fail_wrap(LG_ERR_INTERNAL, "generator/limits.lua: dtypes: ");
        *mask |= 1u << t;
    }
    return LG_OK;
}

/* The published table at idx into *l. */
static enum lg_status read_table(lua_State *L, int idx, struct lg_gen_limits *l)
{
    unsigned seen = 0;
    enum lg_status st = LG_OK;
    lua_pushnil(L);
    while (st == LG_OK && lua_next(L, idx)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        int i = 0;
        while (i < NLIMITS && strcmp(key, limit_fields[i].name))
            i++;
        if (!strcmp(key, "dtypes"))
            st = read_dtypes(L, lua_gettop(L), &l->dtypes);
        else if (i == NLIMITS)
            st = lg_fail(LG_ERR_INTERNAL, "generator/limits.lua publishes '%s', which struct lg_gen_limits lacks",
                         key);
        else if (!lua_isinteger(L, -1))
            st = lg_fail(LG_ERR_INTERNAL, "generator/limits.lua: %s is not an integer", key);
        else {
            *(int *)((char *)l + limit_fields[i].offset) = (int)lua_tointeger(L, -1);
            seen |= 1u << i;
        }
        lua_pop(L, 1);
    }
    for (int i = 0; i < NLIMITS && st == LG_OK; i++)
        if (!(seen >> i & 1))
            st = lg_fail(LG_ERR_INTERNAL, "generator/limits.lua does not publish %s", limit_fields[i].name);
    if (st == LG_OK && !l->dtypes)
        st = lg_fail(LG_ERR_INTERNAL, "generator/limits.lua publishes no dtypes");
    return st;
}

static void load_once(void)
{
    lua_State *L;
    cached_status = lg_lua_open(&L);
    if (cached_status == LG_OK) {
        cached_status = lg_lua_pcall_module(L, "generator.limits", "published", 0, 1, LG_ERR_INTERNAL);
        if (cached_status == LG_OK)
            cached_status = read_table(L, lua_gettop(L), &cached);
        lua_close(L);
    }
    if (cached_status != LG_OK)
        snprintf(cached_error, sizeof cached_error, "%s", lg_last_error());
}

enum lg_status lg_gen_limits_get(struct lg_gen_limits *out)
{
    pthread_once(&once, load_once);
    if (cached_status != LG_OK)
        return lg_fail(cached_status, "%s", cached_error);
    *out = cached;
    return LG_OK;
}

int lg_gen_limits_rank_ok(const struct lg_gen_limits *l, int rank)
{
    return rank >= l->rank_min && rank <= l->rank_max && l->rank_multiple > 0 && rank % l->rank_multiple == 0;
}
