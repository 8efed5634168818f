/* lua_sandbox.h (private to the lua part): the budgets a data file (a spec or a job file) is evaluated under,
 * shared by the state's allocator (luaenv.c), the limited run and libraries (sandbox.c) and the limited pattern
 * matcher (strmatch.c).
 *
 * Lua's instruction-count hook only fires between VM instructions, but a data file can make one instruction
 * or one library call do unbounded work in C: a backtracking pattern, string.rep, table.move over a huge
 * range, a concatenation of a 100 MB string in a loop. So a run under lg_run_limited is bounded on every
 * path, each limit with its own message:
 *   - VM instructions (the count hook);
 *   - work units done by the C library functions a data file can call: one unit is one pattern-matching step,
 *     one table element moved or compared, or 16 bytes a string function builds; the limited string and
 *     table functions charge them before or while they work;
 *   - bytes allocated in total (besides the live-memory cap every state has), so that a loop that builds and
 *     drops big strings ends;
 *   - a deadline in CPU time of the evaluating thread (so a loaded machine does not trip it), checked by the
 *     hook, by the charging functions and by the allocator, as the backstop for whatever the counts miss;
 *   - a longest string that string.rep may build.
 * Outside lg_run_limited (the generator's own code) nothing is counted and the limited functions behave
 * exactly like Lua's. */
#ifndef LG_LUA_SANDBOX_H
#define LG_LUA_SANDBOX_H

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

/* Per state: the allocator's user data. */
struct lg_lua_ctx {
    size_t used;      /* live bytes */
    void *main_block; /* the state's own block: freeing it is the last thing lua_close does */
    int limited;      /* a data file is running */
    int64_t instructions, work; /* left in this run */
    uint64_t alloc_total;       /* allocated in this run */
    double deadline;            /* lg_lua_now() seconds */
    enum lg_sandbox_stop stop;  /* the limit that ended the run */
    int line;                   /* the data file's line the hook (or a refused allocation) saw last */
    lua_State *L;               /* the state, while a run is limited (for the line of a refused allocation) */
};

struct lg_lua_ctx *lg_lua_ctx(lua_State *L);
double lg_lua_now(void); /* this thread's CPU time, seconds */

/* Charges `units` of work done by library function `fn` ("string.find"); raises a Lua error naming the
 * limit when the run's budget or deadline is spent. A no-op outside a limited run. */
void lg_lua_charge(lua_State *L, int64_t units, const char *fn);

/* The limited pattern functions (strmatch.c): Lua 5.4's, charging every matching step. */
int lg_lua_str_find(lua_State *L);
int lg_lua_str_match(lua_State *L);
int lg_lua_str_gmatch(lua_State *L);
int lg_lua_str_gsub(lua_State *L);

/* Records in ctx->line the data file's line now running (the allocator calls it when it refuses, since Lua
 * raises memory errors without calling the message handler). Reads the call stack only. */
void lg_lua_note_line(struct lg_lua_ctx *c);

/* Registers lg_run_limited and lg_sandbox_lib (sandbox.c) in a new state. */
void lg_lua_sandbox_open(lua_State *L);

#endif
