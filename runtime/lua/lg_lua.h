/* lg_lua.h (internal): the embedded Lua 5.4 interpreter that runs the generator and reads spec/job files.
 *
 * The state opens only base, table, string, math and utf8: no io, os, package or debug, for trusted and
 * untrusted code alike. `require "generator.x"` resolves to the embedded generator/x.lua (or to the file under
 * $LORAGEN_SOURCE_DIR when that is set, for working on the generator without rebuilding). Data files (specs,
 * jobs) are evaluated by generator/sandbox.lua in an empty environment with an instruction budget.
 *
 *   lua_State *L;
 *   if (lg_lua_open(&L) != LG_OK) return ...;
 *   lua_pushstring(L, text); lua_pushstring(L, path);
 *   lg_lua_pcall_module(L, "generator.spec", "load", 2, 2, LG_ERR_SPEC);
 *   lua_close(L);
 */
#ifndef LG_LUA_H
#define LG_LUA_H

#include "lg_base.h"

#include <lua.h>

enum lg_status lg_lua_open(lua_State **out);

/* An embedded source file ("templates/lora_down.cuh", "generator/spec.lua"); NULL when absent. */
const char *lg_embedded_find(const char *path, size_t *size);

/* Calls module.fn with the `nargs` values on top of the stack; leaves `nres` results. A Lua error becomes
 * LG_ERR_SPEC (status `s`) with the Lua message as the detail. */
enum lg_status lg_lua_pcall_module(lua_State *L, const char *module, const char *fn, int nargs, int nres,
                                   enum lg_status s);

#endif
