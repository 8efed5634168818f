/* lua_sandbox.h (private to the lua part): what a data file (a spec or a job file) is evaluated with: the
 * functions lg_run_limited and lg_sandbox_lib that generator/sandbox.lua calls (sandbox.c), and the limited
 * pattern functions of its string library (strfuncs.c, on loragen's matcher in strmatch.c). The budgets they
 * run under and charge against are lua_budget.h's. */
#ifndef LG_LUA_SANDBOX_H
#define LG_LUA_SANDBOX_H

#include <lua.h>

/* The limited pattern functions (strfuncs.c): Lua 5.4's behaviour, charging every matching step. */
int lg_lua_str_find(lua_State *L);
int lg_lua_str_match(lua_State *L);
int lg_lua_str_gmatch(lua_State *L);
int lg_lua_str_gsub(lua_State *L);

/* Registers lg_run_limited and lg_sandbox_lib (sandbox.c) in a new state. */
void lg_lua_sandbox_open(lua_State *L);

#endif
