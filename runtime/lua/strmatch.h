/* strmatch.h (private to the lua part): loragen's pattern matcher (strmatch.c), on which strfuncs.c builds the
 * sandbox's string.find, match, gmatch and gsub. The matcher has the semantics of Lua 5.4's patterns
 * (reference manual §6.4.1) and charges its work to the run's budget (lua_budget.h), since it backtracks in C
 * where the instruction hook never fires.
 *
 * Usage: lg_match_init once per subject and pattern, then for each attempt lg_match_reset and
 * lg_match_at(m, s, p) (the end of a match starting at s, or NULL); read the captures with
 * lg_match_push_captures or lg_match_capture; lg_match_settle charges what is still pending. Errors (a
 * malformed pattern, a spent budget) are raised as Lua errors with Lua's messages. */
#ifndef LG_STRMATCH_H
#define LG_STRMATCH_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#define LG_MATCH_CAPTURES 32 /* Lua's LUA_MAXCAPTURES: "too many captures" past it */
#define LG_MATCH_DEPTH 200   /* nested matching calls before "pattern too complex", as in Lua */
#define LG_CAP_UNFINISHED (-1)
#define LG_CAP_POSITION (-2)

struct lg_match {
    lua_State *L;
    const char *fn;             /* "string.find": the function named when the budget runs out */
    const char *src, *src_end;  /* the subject */
    const char *pat_end;        /* the pattern's end (its start is each call's own) */
    int depth;                  /* nested matching calls left */
    int level;                  /* captures opened so far */
    int64_t pending;            /* work units done but not yet charged */
    struct {
        const char *init;
        ptrdiff_t len;          /* a length, LG_CAP_UNFINISHED or LG_CAP_POSITION */
    } cap[LG_MATCH_CAPTURES];
};

void lg_match_init(struct lg_match *m, lua_State *L, const char *fn, const char *s, size_t ls, const char *p,
                   size_t lp);

/* Clears the captures and the depth before an attempt at another position. */
void lg_match_reset(struct lg_match *m);

/* The end of a match of pattern p (up to m->pat_end) starting at subject position s, or NULL. */
const char *lg_match_at(struct lg_match *m, const char *s, const char *p);

/* Adds `units` of work, charging the budget in batches; lg_match_settle charges the rest. */
void lg_match_charge(struct lg_match *m, int64_t units);
void lg_match_settle(struct lg_match *m);

/* Capture i (0-based) of the match [s, e): its start in *cap and its length, or LG_CAP_POSITION with the
 * position already pushed. Index 0 without captures is the whole match. */
ptrdiff_t lg_match_capture(struct lg_match *m, int i, const char *s, const char *e, const char **cap);

/* Pushes the captures of the match [s, e) (the whole match when there are none and s is not NULL); returns
 * how many. */
int lg_match_push_captures(struct lg_match *m, const char *s, const char *e);

#endif
