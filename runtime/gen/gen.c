/* gen.c: the C face of the Lua kernel generator (generator/kernels.lua, generator/plan.lua). Configurations
 * cross the boundary as Lua tables; the generator owns naming, defaults, validation and source emission. */
#include "lg_gen.h"
#include "lg_base.h"
#include "lg_lua.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

struct lg_gen {
    lua_State *L;
};

static const char *op_names[LG_OP_COUNT] = {"down", "dy", "da", "reduce"};

const char *lg_gen_template_source(const char *path) { return lg_embedded_find(path, NULL); }

const char *lg_kernel_op_name(enum lg_kernel_op op) { return op < LG_OP_COUNT ? op_names[op] : "?"; }

enum lg_status lg_gen_init(lg_gen_t **out)
{
    lg_gen_t *g = calloc(1, sizeof *g);
    if (!g)
        return lg_fail(LG_ERR_OOM, "generator: out of memory");
    enum lg_status st = lg_lua_open(&g->L);
    if (st != LG_OK) {
        free(g);
        return st;
    }
    *out = g;
    return LG_OK;
}

void lg_gen_free(lg_gen_t *g)
{
    if (!g)
        return;
    lua_close(g->L);
    free(g);
}

void lg_kernel_src_free(struct lg_kernel_src *src)
{
    if (src) {
        free(src->source);
        src->source = NULL;
    }
}

static void set_int(lua_State *L, const char *k, int v)
{
    if (v >= 0) {
        lua_pushinteger(L, v);
        lua_setfield(L, -2, k);
    }
}

/* Pushes the Lua table for cfg: only the fields the op takes; zero tile fields are left to defaults. */
static void push_cfg(lua_State *L, const struct lg_kernel_cfg *c)
{
    lua_newtable(L);
    lua_pushstring(L, lg_kernel_op_name(c->op));
    lua_setfield(L, -2, "op");
    lua_pushstring(L, lg_dtype_name(c->dtype));
    lua_setfield(L, -2, "dtype");
    switch (c->op) {
    case LG_OP_DOWN:
        set_int(L, "rank", c->rank);
        set_int(L, "drop", c->drop);
        if (c->wm) set_int(L, "wm", c->wm);
        if (c->wk) set_int(L, "wk", c->wk);
        if (c->mt) set_int(L, "mt", c->mt);
        if (c->u) set_int(L, "u", c->u);
        if (c->minb) set_int(L, "minb", c->minb);
        break;
    case LG_OP_DY:
        set_int(L, "rank", c->rank);
        if (c->nct) set_int(L, "nct", c->nct);
        if (c->st) set_int(L, "st", c->st);
        if (c->minb) set_int(L, "minb", c->minb);
        break;
    case LG_OP_DA:
        set_int(L, "rank", c->rank);
        set_int(L, "fuse", c->fuse);
        set_int(L, "drop", c->drop);
        if (c->minb) set_int(L, "minb", c->minb);
        break;
    default:
        set_int(L, "out_half", c->out_half);
        break;
    }
}

static int get_int(lua_State *L, int idx, const char *k)
{
    lua_getfield(L, idx, k);
    int v = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Reads a normalised Lua cfg table at idx back into C. */
static void read_cfg(lua_State *L, int idx, struct lg_kernel_cfg *c)
{
    memset(c, 0, sizeof *c);
    lua_getfield(L, idx, "op");
    const char *op = lua_tostring(L, -1);
    for (int i = 0; i < LG_OP_COUNT; i++)
        if (op && !strcmp(op, op_names[i]))
            c->op = (enum lg_kernel_op)i;
    lua_pop(L, 1);
    lua_getfield(L, idx, "dtype");
    lg_dtype_parse(lua_tostring(L, -1), &c->dtype);
    lua_pop(L, 1);
    c->rank = get_int(L, idx, "rank");
    c->drop = get_int(L, idx, "drop");
    c->fuse = get_int(L, idx, "fuse");
    c->out_half = get_int(L, idx, "out_half");
    c->wm = get_int(L, idx, "wm");
    c->wk = get_int(L, idx, "wk");
    c->mt = get_int(L, idx, "mt");
    c->u = get_int(L, idx, "u");
    c->nct = get_int(L, idx, "nct");
    c->st = get_int(L, idx, "st");
    c->minb = get_int(L, idx, "minb");
}

enum lg_status lg_gen_kernel(lg_gen_t *g, const struct lg_kernel_cfg *cfg, const char *origin,
                             struct lg_kernel_src *out)
{
    lua_State *L = g->L;
    int top = lua_gettop(L);
    push_cfg(L, cfg);
    lua_pushstring(L, origin ? origin : "runtime");
    enum lg_status st = lg_lua_pcall_module(L, "generator.kernels", "emit", 2, 3, LG_ERR_INVALID);
    if (st != LG_OK)
        return lg_fail_wrap(st, "generating %s kernel: ", lg_kernel_op_name(cfg->op));
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", lua_tostring(L, -3));
    size_t n;
    const char *src = lua_tolstring(L, -2, &n);
    out->source = malloc(n + 1);
    if (!out->source) {
        lua_settop(L, top);
        return lg_fail(LG_ERR_OOM, "generator: out of memory");
    }
    memcpy(out->source, src, n + 1);
    out->threads = (int)lua_tointeger(L, -1);
    lua_settop(L, top);
    /* the normalised configuration, defaults filled in */
    push_cfg(L, cfg);
    if (lg_lua_pcall_module(L, "generator.kernels", "normalize", 1, 1, LG_ERR_INVALID) == LG_OK)
        read_cfg(L, lua_gettop(L), &out->cfg);
    lua_settop(L, top);
    return LG_OK;
}

static void push_spec(lua_State *L, const struct lg_spec *s)
{
    lua_newtable(L);
    lua_pushstring(L, s->path ? s->path : s->name);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, lg_dtype_name(s->dtype));
    lua_setfield(L, -2, "dtype");
    lua_pushinteger(L, s->rank);
    lua_setfield(L, -2, "rank");
    lua_pushnumber(L, s->dropout);
    lua_setfield(L, -2, "dropout");
}

enum lg_status lg_gen_spec_kernels(lg_gen_t *g, const struct lg_spec *spec, struct lg_kernel_src **out,
                                   int *count)
{
    lua_State *L = g->L;
    int top = lua_gettop(L);
    push_spec(L, spec);
    enum lg_status st = lg_lua_pcall_module(L, "generator.plan", "spec_kernels", 1, 1, LG_ERR_SPEC);
    if (st != LG_OK)
        return st;
    int n = (int)luaL_len(L, -1);
    struct lg_kernel_src *arr = calloc(n > 0 ? (size_t)n : 1, sizeof *arr);
    if (!arr) {
        lua_settop(L, top);
        return lg_fail(LG_ERR_OOM, "generator: out of memory");
    }
    for (int i = 0; i < n; i++) {
        lua_geti(L, -1, i + 1);
        int t = lua_gettop(L);
        lua_getfield(L, t, "name");
        snprintf(arr[i].name, sizeof arr[i].name, "%s", lua_tostring(L, -1));
        lua_getfield(L, t, "source");
        arr[i].source = strdup(lua_tostring(L, -1));
        arr[i].threads = get_int(L, t, "threads");
        lua_getfield(L, t, "cfg");
        read_cfg(L, lua_gettop(L), &arr[i].cfg);
        lua_settop(L, t - 1);
    }
    lua_settop(L, top);
    *out = arr;
    *count = n;
    return LG_OK;
}

enum lg_status lg_gen_variants(lg_gen_t *g, enum lg_kernel_op op, enum lg_dtype dtype, int rank,
                               struct lg_kernel_cfg **out, int *count)
{
    lua_State *L = g->L;
    int top = lua_gettop(L);
    lua_pushstring(L, lg_kernel_op_name(op));
    lua_pushstring(L, lg_dtype_name(dtype));
    lua_pushinteger(L, rank);
    enum lg_status st = lg_lua_pcall_module(L, "generator.kernels", "variants", 3, 1, LG_ERR_INVALID);
    if (st != LG_OK)
        return st;
    int n = (int)luaL_len(L, -1);
    struct lg_kernel_cfg *arr = calloc(n > 0 ? (size_t)n : 1, sizeof *arr);
    if (!arr) {
        lua_settop(L, top);
        return lg_fail(LG_ERR_OOM, "generator: out of memory");
    }
    for (int i = 0; i < n; i++) {
        lua_geti(L, -1, i + 1);
        read_cfg(L, lua_gettop(L), &arr[i]);
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    *out = arr;
    *count = n;
    return LG_OK;
}
