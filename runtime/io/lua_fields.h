/* lua_fields.h (private to the io part): reading the fields of a table that generator/job.lua validated and
 * normalised, without trusting that the schema bounded every one. A number must be finite and an integer
 * must be an integer (or an integral float) within the range of the C field it goes into, so a bound missing
 * from a schema becomes an error naming the field, never a float-to-int cast (undefined behaviour past the
 * field's range). An absent field gives the default; a number field that holds something else is left at its
 * default, an integer field that does is refused.
 *
 *   const char *bad = NULL;
 *   int layers = (int)lg_io_lua_int(L, t, "layers", 32, INT32_MAX, &bad);
 *   double lr = lg_io_lua_num(L, t, "lr", 1e-4, &bad);
 *   if (bad) return lg_fail(LG_ERR_SPEC, "%s: '%s' is outside ...", path, bad);
 */
#ifndef LG_IO_LUA_FIELDS_H
#define LG_IO_LUA_FIELDS_H

#include <lua.h>
#include <stdint.h>

/* t[k] as a finite double; dflt when absent. A non-finite value sets *bad to k (when *bad is still NULL). */
double lg_io_lua_num(lua_State *L, int t, const char *k, double dflt, const char **bad);

/* t[k] as an integer in 0 .. max; dflt when absent. A value that is not an integer (or an integral float), or
 * one outside the range, sets *bad to k (when *bad is still NULL) and gives dflt. */
int64_t lg_io_lua_int(lua_State *L, int t, const char *k, int64_t dflt, int64_t max, const char **bad);

#endif
