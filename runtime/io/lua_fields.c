/* lua_fields.c: the checked field readers of lua_fields.h, for the C side of the job-file loaders. */
#include "lua_fields.h"

#include <math.h>

double lg_io_lua_num(lua_State *L, int t, const char *k, double dflt, const char **bad)
{
    double v = dflt;
    if (lua_getfield(L, t, k) == LUA_TNUMBER)
        v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!isfinite(v)) {
        *bad = *bad ? *bad : k;
        return dflt;
    }
    return v;
}

int64_t lg_io_lua_int(lua_State *L, int t, const char *k, int64_t dflt, int64_t max, const char **bad)
{
    int64_t v = dflt;
    if (lua_getfield(L, t, k) != LUA_TNIL) {
        int ok;
        lua_Integer x = lua_tointegerx(L, -1, &ok);
        if (ok && x >= 0 && x <= max)
            v = (int64_t)x;
        else
            *bad = *bad ? *bad : k;
    }
    lua_pop(L, 1);
    return v;
}
