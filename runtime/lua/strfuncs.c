/* strfuncs.c: the sandbox's string.find, string.match, string.gmatch and string.gsub, with the behaviour of
 * Lua 5.4's (reference manual §6.4) on top of loragen's matcher (strmatch.c), which charges every matching
 * step to the run's budget. sandbox.c puts them in the limited string library in place of Lua's, whose
 * backtracking runs in C where the instruction hook never fires: string.find(s, string.rep("a-", 30) .. "b")
 * ends with a budget error instead of running for years. Outside a limited run the charges are no-ops. */
#include "lua_sandbox.h"
#include "lua_budget.h"
#include "strmatch.h"

#include <lauxlib.h>
#include <string.h>

/* A 1-based, possibly negative start position as a 1-based offset: 0 and those before the start give 1. */
static size_t start_position(lua_Integer pos, size_t len)
{
    if (pos > 0)
        return (size_t)pos;
    if (pos == 0 || pos < -(lua_Integer)len)
        return 1;
    return len + (size_t)pos + 1;
}

/* Whether p has none of the bytes that make a pattern more than a plain string. */
static int is_plain(const char *p, size_t lp)
{
    static const char specials[] = "^$*+?.([%-";
    for (size_t i = 0; i < lp; i++)
        if (memchr(specials, p[i], sizeof specials - 1))
            return 0;
    return 1;
}

/* The first occurrence of p in s, or NULL; charged one unit per candidate position plus one per 16 bytes it
 * compares there. */
static const char *find_plain(lua_State *L, const char *s, size_t ls, const char *p, size_t lp)
{
    if (lp == 0)
        return s;
    if (lp > ls)
        return NULL;
    int64_t candidates = 0, per = 1 + (int64_t)(lp >> 4);
    const char *last = s + (ls - lp), *hit = NULL;
    for (const char *t = s; t <= last; t++) {
        t = memchr(t, p[0], (size_t)(last - t) + 1);
        if (!t)
            break;
        if (++candidates >= 4096) {
            lg_lua_charge(L, candidates * per, "string.find");
            candidates = 0;
        }
        if (!memcmp(t + 1, p + 1, lp - 1)) {
            hit = t;
            break;
        }
    }
    lg_lua_charge(L, candidates * per, "string.find");
    return hit;
}

/* find (find != 0) and match: the first match at or after init. */
static int find_or_match(lua_State *L, int find)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_position(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls) {
        luaL_pushfail(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || is_plain(p, lp))) {
        const char *hit = find_plain(L, s + init, ls - init, p, lp);
        if (!hit) {
            luaL_pushfail(L);
            return 1;
        }
        lua_pushinteger(L, (lua_Integer)(hit - s) + 1);
        lua_pushinteger(L, (lua_Integer)(hit - s + lp));
        return 2;
    }
    int anchored = lp > 0 && *p == '^';
    if (anchored) {
        p++;
        lp--;
    }
    struct lg_match m;
    lg_match_init(&m, L, find ? "string.find" : "string.match", s, ls, p, lp);
    const char *at = s + init;
    do {
        lg_match_reset(&m);
        const char *e = lg_match_at(&m, at, p);
        if (e) {
            lg_match_settle(&m);
            if (!find)
                return lg_match_push_captures(&m, at, e);
            lua_pushinteger(L, (lua_Integer)(at - s) + 1);
            lua_pushinteger(L, (lua_Integer)(e - s));
            return lg_match_push_captures(&m, NULL, NULL) + 2;
        }
    } while (at++ < m.src_end && !anchored);
    lg_match_settle(&m);
    luaL_pushfail(L);
    return 1;
}

int lg_lua_str_find(lua_State *L)
{
    return find_or_match(L, 1);
}

int lg_lua_str_match(lua_State *L)
{
    return find_or_match(L, 0);
}

/* ---- gmatch ---- */

/* The iterator's state, a userdata kept beside the subject and the pattern (its upvalues). */
struct gmatch {
    const char *at;         /* where the next attempt starts */
    const char *last_end;   /* the end of the last match: an empty match there is skipped */
    const char *p;
    struct lg_match m;
};

static int gmatch_next(lua_State *L)
{
    struct gmatch *g = lua_touserdata(L, lua_upvalueindex(3));
    g->m.L = L; /* the iterator may run in another coroutine than gmatch did */
    for (const char *at = g->at; at <= g->m.src_end; at++) {
        lg_match_reset(&g->m);
        const char *e = lg_match_at(&g->m, at, g->p);
        if (e && e != g->last_end) {
            g->at = g->last_end = e;
            lg_match_settle(&g->m);
            return lg_match_push_captures(&g->m, at, e);
        }
    }
    g->at = g->m.src_end + 1;
    lg_match_settle(&g->m);
    return 0;
}

int lg_lua_str_gmatch(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_position(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls)
        init = ls + 1; /* past the end: no match at all */
    lua_settop(L, 2);
    struct gmatch *g = lua_newuserdatauv(L, sizeof *g, 0);
    lg_match_init(&g->m, L, "string.gmatch", s, ls, p, lp);
    g->at = s + init;
    g->last_end = NULL;
    g->p = p;
    lua_pushcclosure(L, gmatch_next, 3);
    return 1;
}

/* ---- gsub ---- */

/* Appends the replacement string (argument 3) for the match [s, e): "%0" the match, "%1".."%9" a capture,
 * "%%" a "%". */
static void add_template(struct lg_match *m, luaL_Buffer *b, const char *s, const char *e)
{
    lua_State *L = m->L;
    size_t l;
    const char *r = lua_tolstring(L, 3, &l), *end = r + l, *pc;
    while ((pc = memchr(r, '%', (size_t)(end - r)))) {
        luaL_addlstring(b, r, (size_t)(pc - r));
        int c = pc + 1 < end ? (unsigned char)pc[1] : 0;
        if (c == '%') {
            luaL_addchar(b, '%');
        } else if (c == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else if (c >= '1' && c <= '9') {
            const char *cap;
            ptrdiff_t len = lg_match_capture(m, c - '1', s, e, &cap);
            if (len == LG_CAP_POSITION)
                luaL_addvalue(b);
            else
                luaL_addlstring(b, cap, (size_t)len);
        } else {
            luaL_error(L, "invalid use of '%c' in replacement string", '%');
        }
        r = pc + 2;
    }
    luaL_addlstring(b, r, (size_t)(end - r));
}

/* Appends the replacement for the match [s, e); returns whether it changed the text (a function or table
 * giving false or nil keeps the match as it was). */
static int add_replacement(struct lg_match *m, luaL_Buffer *b, const char *s, const char *e, int type)
{
    lua_State *L = m->L;
    if (type == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = lg_match_push_captures(m, s, e);
        lua_call(L, n, 1);
    } else if (type == LUA_TTABLE) {
        const char *cap;
        ptrdiff_t len = lg_match_capture(m, 0, s, e, &cap);
        if (len != LG_CAP_POSITION)
            lua_pushlstring(L, cap, (size_t)len);
        lua_gettable(L, 3);
    } else {
        add_template(m, b, s, e);
        return 1;
    }
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return 0;
    }
    if (!lua_isstring(L, -1))
        return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    luaL_addvalue(b);
    return 1;
}

int lg_lua_str_gsub(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    int type = lua_type(L, 3);
    lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
    luaL_argexpected(L, type == LUA_TNUMBER || type == LUA_TSTRING || type == LUA_TFUNCTION || type == LUA_TTABLE,
                     3, "string/function/table");
    int anchored = lp > 0 && *p == '^';
    if (anchored) {
        p++;
        lp--;
    }
    struct lg_match m;
    lg_match_init(&m, L, "string.gsub", s, ls, p, lp);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    const char *at = s, *last_end = NULL;
    lua_Integer n = 0;
    int changed = 0;
    while (n < max) {
        lg_match_reset(&m);
        const char *e = lg_match_at(&m, at, p);
        if (e && e != last_end) {
            n++;
            changed |= add_replacement(&m, &b, at, e, type);
            at = last_end = e;
        } else if (at < m.src_end) {
            luaL_addchar(&b, *at++);
        } else {
            break;
        }
        if (anchored)
            break;
    }
    lg_match_settle(&m);
    if (!changed) {
        lua_pushvalue(L, 1);
    } else {
        luaL_addlstring(&b, at, (size_t)(m.src_end - at));
        luaL_pushresult(&b);
    }
    lua_pushinteger(L, n);
    return 2;
}
