/* sandbox.c: running a data file under the budgets of lua_budget.h (counted by budget.c), and the string
 * and table libraries a data file sees. generator/sandbox.lua builds the file's environment from
 * lg_sandbox_lib("string") and lg_sandbox_lib("table") and calls lg_run_limited(chunk); the limited string
 * library is also what string methods ("x"):rep(n) reach during the run, since the string metatable is switched
 * to it.
 *
 * Every failure comes back as "(spec):LINE: message" (generator/sandbox.lua puts the path in): the message
 * handler adds the line of the data file where an error without a position was raised, and turns a nil or a
 * table given to error() into words; a memory error, which Lua raises without calling the handler, gets the
 * line the hook saw last. */
#include "lua_sandbox.h"
#include "lua_budget.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- the message handler ---- */

static int message_handler(lua_State *L)
{
    int t = lua_type(L, 1);
    const char *msg = t == LUA_TSTRING ? lua_tostring(L, 1) : NULL;
    if (msg && !strncmp(msg, "(spec):", 7)) {
        size_t n = strlen(msg);
        if (n > 14 && !strcmp(msg + n - 14, "stack overflow"))
            lua_pushfstring(L, "%s (a function that calls itself without end?)", msg);
        return 1; /* positioned already */
    }
    int line = lg_lua_data_line(L, 1);
    char where[32] = "";
    if (line > 0)
        snprintf(where, sizeof where, "(spec):%d: ", line);
    if (t == LUA_TSTRING && !strcmp(msg, "C stack overflow"))
        lua_pushfstring(L, "%sC stack overflow (calls nested too deeply: a function that calls itself?)", where);
    else if (t == LUA_TSTRING || t == LUA_TNUMBER)
        lua_pushfstring(L, "%s%s", where, lua_tostring(L, 1));
    else if (t == LUA_TNIL || t == LUA_TNONE)
        lua_pushfstring(L, "%serror() called without a message", where);
    else
        lua_pushfstring(L, "%serror() called with a %s instead of a message", where, luaL_typename(L, 1));
    return 1;
}

/* ---- lg_run_limited(chunk) -> true, value | false, "(spec):LINE: message" ---- */

/* Points the string metatable's __index at the table on top of the stack (popped); pushes the old one. */
static void swap_string_index(lua_State *L)
{
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);        /* new, "", mt */
    lua_getfield(L, -1, "__index"); /* new, "", mt, old */
    lua_pushvalue(L, -4);
    lua_setfield(L, -3, "__index");
    lua_replace(L, -4); /* old, "", mt */
    lua_pop(L, 2);
}

static int l_run_limited(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_pushcfunction(L, message_handler);
    lua_insert(L, 1); /* handler, chunk */
    lua_getfield(L, LUA_REGISTRYINDEX, "lg_sandbox_string");
    swap_string_index(L);
    lua_insert(L, 1); /* old __index, handler, chunk */
    lg_lua_budget_begin(L);
    int rc = lua_pcall(L, 0, 1, 2);
    int line;
    enum lg_sandbox_stop why = lg_lua_budget_end(L, &line);
    lua_pushvalue(L, 1);
    swap_string_index(L);
    lua_pop(L, 1);
    if (rc == LUA_OK) {
        lua_pushboolean(L, 1);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushboolean(L, 0);
    if (rc == LUA_ERRMEM || rc == LUA_ERRERR) { /* no handler ran: the message is Lua's bare one */
        char buf[256];
        if (why == LG_STOP_NONE)
            why = LG_STOP_MEMORY;
        lua_pushfstring(L, "(spec):%d: %s", line > 0 ? line : 1, lg_lua_stop_message(why, buf, sizeof buf));
    } else {
        lua_pushvalue(L, -2);
    }
    return 2;
}

/* ---- the limited string and table functions ---- */

/* Calls the original function (upvalue 1) with this call's arguments. */
static int call_original(lua_State *L)
{
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

/* An integer argument as the original function will read it (an integral float too); dflt when absent. What
 * the original refuses does not matter here: it raises its own error after the charge. */
static int64_t opt_int(lua_State *L, int arg, int64_t dflt)
{
    int ok;
    lua_Integer v = lua_tointegerx(L, arg, &ok);
    if (ok)
        return (int64_t)v;
    if (lua_type(L, arg) == LUA_TNUMBER) { /* a float beyond the integers: charge as much as it asks */
        double d = lua_tonumber(L, arg);
        return d > 0 ? INT64_MAX / 2 : -(INT64_MAX / 2);
    }
    return dflt;
}

/* The elements a range [i, j] spans, for charging: 0 when empty, saturated so nothing overflows. */
static int64_t span(int64_t i, int64_t j)
{
    const int64_t most = INT64_MAX / 4;
    if (j < i)
        return 0;
    if (i < -most || j > most || j - i >= most)
        return most;
    return j - i + 1;
}

static int l_rep(lua_State *L)
{
    size_t l, lsep = 0;
    luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    if (n > 0 && lg_lua_budget_running(L)) {
        double total = (double)n * (double)l + (double)(n - 1) * (double)lsep;
        if (total > (double)LG_SANDBOX_STRING_MAX) {
            char buf[160];
            snprintf(buf, sizeof buf, "string.rep: a %.0f-byte string is more than the %d MiB a data file may build",
                     total, (int)(LG_SANDBOX_STRING_MAX >> 20));
            return luaL_error(L, "%s", buf);
        }
        lg_lua_charge(L, (int64_t)(total / 16) + 1, "string.rep");
    }
    return call_original(L);
}

static int l_sort(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int64_t n = (int64_t)lua_rawlen(L, 1);
    lg_lua_charge(L, n > 1 ? n * (int64_t)ceil(log2((double)n)) : 1, "table.sort");
    return call_original(L);
}

static int l_move(lua_State *L)
{
    lg_lua_charge(L, span(opt_int(L, 2, 1), opt_int(L, 3, 0)) + 1, "table.move");
    return call_original(L);
}

static int l_concat(lua_State *L)
{
    int64_t n = lua_istable(L, 1) ? (int64_t)lua_rawlen(L, 1) : 0;
    lg_lua_charge(L, span(opt_int(L, 3, 1), opt_int(L, 4, n)) + 1, "table.concat");
    return call_original(L);
}

static int l_unpack(lua_State *L)
{
    int64_t n = lua_istable(L, 1) ? (int64_t)lua_rawlen(L, 1) : 0;
    lg_lua_charge(L, span(opt_int(L, 2, 1), opt_int(L, 3, n)) + 1, "table.unpack");
    return call_original(L);
}

/* insert and remove shift the elements after the position: up to the whole length. */
static int l_shift(lua_State *L)
{
    int64_t n = lua_istable(L, 1) ? (int64_t)lua_rawlen(L, 1) : 0;
    lg_lua_charge(L, n + 1, lua_tostring(L, lua_upvalueindex(2)));
    return call_original(L);
}

struct wrap {
    const char *name;
    lua_CFunction fn; /* a charging wrapper of the original, or a replacement when `replace` */
    int replace;
};

static const struct wrap string_wraps[] = {
    {"find", lg_lua_str_find, 1},   {"match", lg_lua_str_match, 1}, {"gmatch", lg_lua_str_gmatch, 1},
    {"gsub", lg_lua_str_gsub, 1},   {"rep", l_rep, 0},              {NULL, NULL, 0},
};
static const struct wrap table_wraps[] = {
    {"sort", l_sort, 0},     {"move", l_move, 0},     {"concat", l_concat, 0}, {"unpack", l_unpack, 0},
    {"insert", l_shift, 0},  {"remove", l_shift, 0},  {NULL, NULL, 0},
};

/* A copy of library `lib` (a global table) with the wrapped functions swapped in and `drop` left out;
 * stored as registry[key]. */
static void build_lib(lua_State *L, const char *lib, const struct wrap *w, const char *drop, const char *key)
{
    lua_newtable(L);
    int out = lua_gettop(L);
    lua_getglobal(L, lib);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) == LUA_TSTRING && (!drop || strcmp(lua_tostring(L, -2), drop))) {
            lua_pushvalue(L, -2);
            lua_pushvalue(L, -2);
            lua_settable(L, out);
        }
        lua_pop(L, 1);
    }
    for (; w->name; w++) {
        if (w->replace) {
            lua_pushcfunction(L, w->fn);
        } else {
            lua_getfield(L, -1, w->name);
            lua_pushfstring(L, "%s.%s", lib, w->name);
            lua_pushcclosure(L, w->fn, 2);
        }
        lua_setfield(L, out, w->name);
    }
    lua_pop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, key);
}

/* lg_sandbox_lib("string" | "table"): the limited library (shared; sandbox.lua copies it per file). */
static int l_sandbox_lib(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    if (strcmp(name, "string") && strcmp(name, "table"))
        return luaL_error(L, "lg_sandbox_lib: no limited library '%s'", name);
    lua_getfield(L, LUA_REGISTRYINDEX, !strcmp(name, "string") ? "lg_sandbox_string" : "lg_sandbox_table");
    return 1;
}

void lg_lua_sandbox_open(lua_State *L)
{
    build_lib(L, "string", string_wraps, "dump", "lg_sandbox_string");
    build_lib(L, "table", table_wraps, NULL, "lg_sandbox_table");
    lua_register(L, "lg_run_limited", l_run_limited);
    lua_register(L, "lg_sandbox_lib", l_sandbox_lib);
}
