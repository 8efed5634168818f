/* lua_budget.h (private to the lua part): the budgets a data file (a spec or a job file) is evaluated under,
 * and the accounting every other file of the part charges against (budget.c). The bottom of the part: it
 * calls nothing in luaenv.c, sandbox.c, strmatch.c or strfuncs.c.
 *
 * Lua's instruction-count hook only fires between VM instructions, but a data file can make one instruction
 * or one library call do unbounded work in C: a backtracking pattern, string.rep, table.move over a huge
 * range, a concatenation of a 100 MB string in a loop. So a run between lg_lua_budget_begin and
 * lg_lua_budget_end is bounded on every path, each limit with its own message:
 *   - VM instructions (the count hook);
 *   - work units done by the C library functions a data file can call: one unit is one pattern-matching step,
 *     one table element moved or compared, or 16 bytes a string function builds; the limited string and
 *     table functions (sandbox.c, strfuncs.c, strmatch.c) charge them before or while they work;
 *   - bytes allocated in total (besides the live-memory cap every state has), so that a loop that builds and
 *     drops big strings ends;
 *   - a deadline in CPU time of the evaluating thread (so a loaded machine does not trip it), checked by the
 *     hook, by the charging functions and by the allocator, as the backstop for whatever the counts miss;
 *   - a longest string that string.rep may build.
 * Outside a run (the generator's own code) nothing is counted and the limited functions behave exactly like
 * Lua's. */
#ifndef LG_LUA_BUDGET_H
#define LG_LUA_BUDGET_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#define LG_LUA_MEM_CAP ((size_t)256 << 20)               /* live bytes, every state */
#define LG_SANDBOX_INSTRUCTIONS 50000000                 /* VM instructions per data file */
#define LG_SANDBOX_WORK 20000000                         /* C library work units per data file */
#define LG_SANDBOX_ALLOC_TOTAL ((uint64_t)4 << 30)       /* bytes allocated per data file, freed or not */
#define LG_SANDBOX_SECONDS 10.0                          /* CPU seconds per data file */
#define LG_SANDBOX_STRING_MAX ((size_t)16 << 20)         /* longest string string.rep builds */
#define LG_SANDBOX_HOOK_EVERY 1024                       /* instructions between hook calls */

/* Which limit ended a run (0: none). */
enum lg_sandbox_stop {
    LG_STOP_NONE = 0,
    LG_STOP_INSTRUCTIONS,
    LG_STOP_WORK,
    LG_STOP_ALLOC_TOTAL,
    LG_STOP_MEMORY,
    LG_STOP_DEADLINE,
};

/* A new state whose allocator enforces LG_LUA_MEM_CAP on its live bytes and, during a run, the run's
 * allocation budgets; NULL when out of memory. Close it with lua_close. */
lua_State *lg_lua_budget_state(void);

/* Starts a limited run on L: fresh budgets, the count hook, a CPU deadline of LG_SANDBOX_SECONDS (or
 * $LORAGEN_SANDBOX_SECONDS). lg_lua_budget_end stops counting and returns the limit that ended the run
 * (LG_STOP_NONE when none did) and, in *line, the data file's line last seen (0 when unknown). */
void lg_lua_budget_begin(lua_State *L);
enum lg_sandbox_stop lg_lua_budget_end(lua_State *L, int *line);

/* Whether a run is being counted on L. */
int lg_lua_budget_running(lua_State *L);

/* Charges `units` of work done by library function `fn` ("string.find"); raises a Lua error naming the
 * limit when the run's budget or deadline is spent. A no-op outside a run. */
void lg_lua_charge(lua_State *L, int64_t units, const char *fn);

/* The words for the limit `why` (written into buf when they need numbers). */
const char *lg_lua_stop_message(enum lg_sandbox_stop why, char *buf, size_t n);

/* The first line of the data file (chunk "=(spec)") on L's call stack from `level` up, or 0. */
int lg_lua_data_line(lua_State *L, int level);

#endif
