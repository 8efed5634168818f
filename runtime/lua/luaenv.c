/* luaenv.c: builds the restricted Lua state the generator runs in (its capped allocator from budget.c, the
 * sandbox's functions from sandbox.c), and resolves `require` against the generator modules and templates
 * embedded at build time (cmake/embed.cmake). The top of the lua part: nothing in it calls this file back. */
#include "lg_lua.h"
#include "lg_base.h"
#include "lua_budget.h"
#include "lua_sandbox.h"

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

static int l_panic(lua_State *L)
{
    (void)L;
    return 0; /* only reached outside a protected call, which this library never makes */
}

enum lg_status lg_lua_open(lua_State **out)
{
    lua_State *L = lg_lua_budget_state();
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
    lg_lua_sandbox_open(L);
    *out = L;
    return LG_OK;
}

/* The error object on top of the stack as a message: a NUL byte would cut a C string short (a name with
 * "\0" in it would end the report there), so NULs are shown as \0; a bare memory error says whose cap it
 * hit. */
static enum lg_status fail_with_message(lua_State *L, enum lg_status s, const char *prefix)
{
    size_t n;
    const char *msg = lua_tolstring(L, -1, &n);
    if (!msg)
        return lg_fail(s, "%s(error object is not a string)", prefix);
    if (!strcmp(msg, "not enough memory"))
        return lg_fail(s, "%snot enough memory (a Lua state may use %zu MiB)", prefix, LG_LUA_MEM_CAP >> 20);
    char *text = malloc(2 * n + 1);
    if (!text)
        return lg_fail(s, "%s%s", prefix, msg);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (msg[i] == '\0') {
            text[k++] = '\\';
            text[k++] = '0';
        } else {
            text[k++] = msg[i];
        }
    }
    text[k] = '\0';
    enum lg_status r = lg_fail(s, "%s%s", prefix, text);
    free(text);
    return r;
}

enum lg_status lg_lua_pcall_module(lua_State *L, const char *module, const char *fn, int nargs, int nres,
                                   enum lg_status s)
{
    int base = lua_gettop(L) - nargs;
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        enum lg_status r = fail_with_message(L, LG_ERR_INTERNAL, "generator: ");
        lua_settop(L, base);
        return r;
    }
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_insert(L, base + 1);
    if (lua_pcall(L, nargs, nres, 0) != LUA_OK) {
        enum lg_status r = fail_with_message(L, s, "");
        lua_settop(L, base);
        return r;
    }
    return LG_OK;
}
