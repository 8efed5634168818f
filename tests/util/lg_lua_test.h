/* lg_lua_test.h: the Lua suites' two helpers (test_robust, test_strmatch): a trusted state with the sandbox's
 * libraries (lg_lua_open), and a chunk run in it that fails the test with the chunk's error. */
#ifndef LG_LUA_TEST_H
#define LG_LUA_TEST_H

#include "lg_lua.h"
#include "lg_test.h"

#include <lauxlib.h>

static inline lua_State *lg_test_lua_state(void)
{
    lua_State *L;
    CHECK(lg_lua_open(&L));
    return L;
}

static inline void lg_test_lua_run(lua_State *L, const char *code)
{
    if (luaL_dostring(L, code) != LUA_OK)
        ck_abort_msg("%s", lua_tostring(L, -1));
}

#endif
