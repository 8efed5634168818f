/* budget.c: the accounting of a limited run (lua_budget.h): the state's capped allocator, the instruction
 * hook, the work charged by the limited library functions, the CPU deadline, and the words for the limit that
 * ended a run. Everything else in the lua part charges against this file; it calls none of them. */
#include "lua_budget.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Per state: the allocator's user data. */
struct budget {
    size_t used;      /* live bytes */
    void *main_block; /* the state's own block: freeing it is the last thing lua_close does */
    int limited;      /* a data file is running */
    int64_t instructions, work; /* left in this run */
    uint64_t alloc_total;       /* allocated in this run */
    double deadline;            /* now() seconds */
    enum lg_sandbox_stop stop;  /* the limit that ended the run */
    int line;                   /* the data file's line the hook (or a refused allocation) saw last */
    lua_State *L;               /* the state, while a run is limited (for the line of a refused allocation) */
};

static struct budget *budget_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

/* CPU time of this thread, so that a loaded machine does not stop a file that a quiet one evaluates. */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The CPU time a run may take: LG_SANDBOX_SECONDS, or $LORAGEN_SANDBOX_SECONDS (tests; very slow machines). */
static double run_seconds(void)
{
    const char *e = getenv("LORAGEN_SANDBOX_SECONDS");
    char *end;
    double v = e && *e ? strtod(e, &end) : 0;
    return e && *e && !*end && v > 0 && v < 86400 ? v : LG_SANDBOX_SECONDS;
}

const char *lg_lua_stop_message(enum lg_sandbox_stop why, char *buf, size_t n)
{
    switch (why) {
    case LG_STOP_INSTRUCTIONS:
        return "instruction budget exceeded (endless loop?)";
    case LG_STOP_WORK:
        snprintf(buf, n, "the file's string and table functions did more than %d steps of work (a pattern that "
                 "backtracks, or a huge repetition?)", LG_SANDBOX_WORK);
        return buf;
    case LG_STOP_ALLOC_TOTAL:
        snprintf(buf, n, "not enough memory: evaluating the file allocated more than %llu GiB in all (a loop "
                 "building big strings?)", (unsigned long long)(LG_SANDBOX_ALLOC_TOTAL >> 30));
        return buf;
    case LG_STOP_MEMORY:
        snprintf(buf, n, "not enough memory: evaluating the file took more than the %zu MiB a data file may use",
                 LG_LUA_MEM_CAP >> 20);
        return buf;
    case LG_STOP_DEADLINE:
        snprintf(buf, n, "evaluating the file took more than %g s of CPU time", run_seconds());
        return buf;
    case LG_STOP_NONE:
        break;
    }
    return "stopped";
}

int lg_lua_data_line(lua_State *L, int level)
{
    lua_Debug ar;
    for (; lua_getstack(L, level, &ar); level++)
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0 && !strcmp(ar.source, "=(spec)"))
            return ar.currentline;
    return 0;
}

/* Records the data file's line now running (the allocator calls it when it refuses, since Lua raises memory
 * errors without calling the message handler). Reads the call stack only. */
static void note_line(struct budget *b)
{
    int line = b->L ? lg_lua_data_line(b->L, 0) : 0;
    if (line > 0)
        b->line = line;
}

/* ---- memory ---- */

/* Memory cap: a spec or job file is data, but Lua can still be asked for string.rep("x", 2^33). Every state
 * refuses allocations past LG_LUA_MEM_CAP live bytes, which Lua reports as "not enough memory". While a data
 * file runs, growing allocations also count toward the run's total, and a large one checks the run's
 * deadline: refusing it ends the run with a memory error that sandbox.c words by the stop reason. */
static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct budget *m = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        m->used -= old;
        if (ptr && ptr == m->main_block)
            free(m);
        return NULL;
    }
    if (nsize > old) {
        enum lg_sandbox_stop why = LG_STOP_NONE;
        if (m->used - old + nsize > LG_LUA_MEM_CAP)
            why = LG_STOP_MEMORY;
        else if (m->limited && (m->alloc_total += nsize - old) > LG_SANDBOX_ALLOC_TOTAL)
            why = LG_STOP_ALLOC_TOTAL;
        else if (m->limited && nsize - old >= (64 << 10) && now() > m->deadline)
            why = LG_STOP_DEADLINE;
        if (why != LG_STOP_NONE) {
            if (m->limited && !m->stop) {
                m->stop = why;
                note_line(m);
            }
            return NULL;
        }
    }
    void *np = realloc(ptr, nsize);
    if (!np)
        return NULL;
    m->used = m->used - old + nsize;
    if (!m->main_block)
        m->main_block = np;
    return np;
}

lua_State *lg_lua_budget_state(void)
{
    struct budget *m = calloc(1, sizeof *m);
    lua_State *L = m ? lua_newstate(capped_alloc, m) : NULL;
    if (m && !L)
        free(m);
    return L;
}

/* ---- instructions, work and the deadline ---- */

/* Raises the error of the limit that ended the run; level: luaL_where's (0 in the hook). */
static int stop_run(lua_State *L, enum lg_sandbox_stop why, int level)
{
    char buf[256];
    luaL_where(L, level);
    lua_pushstring(L, lg_lua_stop_message(why, buf, sizeof buf));
    lua_concat(L, 2);
    budget_of(L)->stop = why;
    return lua_error(L);
}

void lg_lua_charge(lua_State *L, int64_t units, const char *fn)
{
    struct budget *c = budget_of(L);
    if (!c->limited)
        return;
    c->work -= units;
    enum lg_sandbox_stop why = c->work < 0 ? LG_STOP_WORK : now() > c->deadline ? LG_STOP_DEADLINE
                                                                                : LG_STOP_NONE;
    if (why == LG_STOP_NONE)
        return;
    char buf[256];
    luaL_where(L, 1);
    lua_pushfstring(L, "%s: %s", fn, lg_lua_stop_message(why, buf, sizeof buf));
    lua_concat(L, 2);
    c->stop = why;
    lua_error(L);
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    struct budget *c = budget_of(L);
    if (lua_getinfo(L, "l", ar) && ar->currentline > 0)
        c->line = ar->currentline;
    c->instructions -= LG_SANDBOX_HOOK_EVERY;
    if (c->instructions < 0)
        stop_run(L, LG_STOP_INSTRUCTIONS, 0); /* level 0: the interrupted function, so the line of the loop */
    if (now() > c->deadline)
        stop_run(L, LG_STOP_DEADLINE, 0);
}

void lg_lua_budget_begin(lua_State *L)
{
    struct budget *c = budget_of(L);
    *c = (struct budget){.used = c->used, .main_block = c->main_block, .limited = 1,
                         .instructions = LG_SANDBOX_INSTRUCTIONS, .work = LG_SANDBOX_WORK,
                         .deadline = now() + run_seconds(), .L = L};
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, LG_SANDBOX_HOOK_EVERY);
}

enum lg_sandbox_stop lg_lua_budget_end(lua_State *L, int *line)
{
    struct budget *c = budget_of(L);
    lua_sethook(L, NULL, 0, 0);
    c->limited = 0;
    c->L = NULL;
    if (line)
        *line = c->line;
    return c->stop;
}

int lg_lua_budget_running(lua_State *L)
{
    return budget_of(L)->limited;
}
