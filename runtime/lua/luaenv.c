/* luaenv.c: builds the restricted Lua state the generator runs in, and resolves `require` against the
 * generator modules and templates embedded at build time (cmake/embed.cmake). */
#include "lg_lua.h"
#include "lg_base.h"

#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lg_embedded_file {
    const char *path;
    const char *data;
    size_t size;
};
extern const struct lg_embedded_file lg_embedded_files[];

const char *lg_embedded_find(const char *path, size_t *size)
{
    for (const struct lg_embedded_file *f = lg_embedded_files; f->path; f++)
        if (strcmp(f->path, path) == 0) {
            if (size)
                *size = f->size;
            return f->data;
        }
    return NULL;
}

/* Source text of an embedded file, or of $LORAGEN_SOURCE_DIR/path when that variable is set. Pushes the text
 * (or nil + message). Exposed to Lua as lg_source(path). */
static int l_source(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (strstr(path, "..")) /* no escaping the source tree */
        return luaL_error(L, "lg_source: bad path '%s'", path);
    const char *root = getenv("LORAGEN_SOURCE_DIR");
    if (root && *root) {
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", root, path);
        char *data;
        size_t n;
        if (lg_file_read(full, LG_FILE_LIMIT_TEXT, &data, &n) == LG_OK) {
            lua_pushlstring(L, data, n);
            free(data);
            return 1;
        }
    }
    size_t n;
    const char *d = lg_embedded_find(path, &n);
    if (!d) {
        lua_pushnil(L);
        lua_pushfstring(L, "no embedded file '%s'", path);
        return 2;
    }
    lua_pushlstring(L, d, n);
    return 1;
}

/* lg_run_limited(f, budget): calls f() and fails once it has run about `budget` VM instructions, so a data
 * file with an endless loop cannot hang the tool. Returns true, value or false, message. */
static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    /* Level 0 inside a hook is the interrupted function, so the message names the line of the loop. */
    luaL_where(L, 0);
    lua_pushstring(L, "instruction budget exceeded (endless loop?)");
    lua_concat(L, 2);
    lua_error(L);
}

static int l_run_limited(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_Integer budget = luaL_checkinteger(L, 2);
    lua_settop(L, 1);
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, (int)(budget > 0x7fffffff ? 0x7fffffff : budget));
    int rc = lua_pcall(L, 0, 1, 0);
    lua_sethook(L, NULL, 0, 0);
    lua_pushboolean(L, rc == LUA_OK);
    lua_insert(L, -2);
    return 2;
}

/* require("generator.x"): loads generator/x.lua once and caches its value in the registry. */
static int l_require(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "lg_loaded");
    if (lua_getfield(L, -1, name) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (const char *p = name; *p; p++)
        luaL_addchar(&b, *p == '.' ? '/' : *p);
    luaL_addstring(&b, ".lua");
    luaL_pushresult(&b);
    const char *path = lua_tostring(L, -1);
    lua_pushcfunction(L, l_source);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 2);
    if (lua_isnil(L, -2))
        return luaL_error(L, "module '%s' not found: %s", name, lua_tostring(L, -1));
    lua_pop(L, 1);
    size_t n;
    const char *src = lua_tolstring(L, -1, &n);
    lua_pushfstring(L, "@%s", path);
    if (luaL_loadbufferx(L, src, n, lua_tostring(L, -1), "t") != LUA_OK)
        return lua_error(L);
    lua_call(L, 0, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, -6, name); /* lg_loaded[name] = value */
    return 1;
}

/* Memory cap: a spec or job file is data, but Lua can still be asked for string.rep("x", 2^33). The state
 * refuses allocations past LG_LUA_MEM_CAP, which Lua reports as "not enough memory" like any other error. */
#define LG_LUA_MEM_CAP ((size_t)256 << 20)

struct lua_mem {
    size_t used;
    void *main_block; /* the state's own block: freeing it is the last thing lua_close does */
};

static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct lua_mem *m = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        m->used -= old;
        if (ptr && ptr == m->main_block)
            free(m);
        return NULL;
    }
    if (nsize > old && m->used - old + nsize > LG_LUA_MEM_CAP)
        return NULL;
    void *np = realloc(ptr, nsize);
    if (!np)
        return NULL;
    m->used = m->used - old + nsize;
    if (!m->main_block)
        m->main_block = np;
    return np;
}

static int l_panic(lua_State *L)
{
    (void)L;
    return 0; /* only reached outside a protected call, which this library never makes */
}

enum lg_status lg_lua_open(lua_State **out)
{
    struct lua_mem *m = calloc(1, sizeof *m);
    lua_State *L = m ? lua_newstate(capped_alloc, m) : NULL;
    if (m && !L)
        free(m);
    if (L)
        lua_atpanic(L, l_panic);
    if (!L)
        return lg_fail(LG_ERR_OOM, "cannot create a Lua state");
    static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},       {LUA_TABLIBNAME, luaopen_table},
                                    {LUA_STRLIBNAME, luaopen_string}, {LUA_MATHLIBNAME, luaopen_math},
                                    {LUA_UTF8LIBNAME, luaopen_utf8},  {NULL, NULL}};
    for (const luaL_Reg *l = libs; l->func; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    /* Nothing in this state touches the file system except through l_source. */
    static const char *drop[] = {"dofile", "loadfile", NULL};
    for (const char **d = drop; *d; d++) {
        lua_pushnil(L);
        lua_setglobal(L, *d);
    }
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "lg_loaded");
    lua_register(L, "require", l_require);
    lua_register(L, "lg_source", l_source);
    lua_register(L, "lg_run_limited", l_run_limited);
    *out = L;
    return LG_OK;
}

enum lg_status lg_lua_pcall_module(lua_State *L, const char *module, const char *fn, int nargs, int nres,
                                   enum lg_status s)
{
    int base = lua_gettop(L) - nargs;
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        enum lg_status r = lg_fail(LG_ERR_INTERNAL, "generator: %s", msg ? msg : "?");
        lua_settop(L, base);
        return r;
    }
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_insert(L, base + 1);
    if (lua_pcall(L, nargs, nres, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        enum lg_status r = lg_fail(s, "%s", msg ? msg : "(error object is not a string)");
        lua_settop(L, base);
        return r;
    }
    return LG_OK;
}
