/* strmatch.c: loragen's pattern matcher, with the semantics of Lua 5.4's patterns (reference manual §6.4.1):
 * single-character classes (".", "%a" and the other letters, their upper-case complements, "%x" for any
 * other x, sets with ranges, classes and "^"), the quantifiers * + - ?, captures and position captures,
 * back-references %1..%9, %b and %f, and "$" at the end. strfuncs.c builds find, match, gmatch and gsub on it.
 *
 * It exists for the sandbox: a backtracking pattern does its work here in C, where Lua's instruction hook never
 * fires, so every matching step is charged to the run's budget (one unit per step, per 16 bytes a repetition
 * scans or a back-reference compares), in batches so that the cost is negligible outside a limited run.
 * Recursion happens at the same points as in Lua (captures, repetitions, "?"), bounded by LG_MATCH_DEPTH, and
 * every error carries Lua's message, since data files may compare them. */
#include "strmatch.h"
#include "lua_budget.h"

#include <ctype.h>
#include <lauxlib.h>
#include <string.h>

#define CHARGE_BATCH 4096 /* units gathered before one call to lg_lua_charge */

static const char *match(struct lg_match *m, const char *s, const char *p);

void lg_match_init(struct lg_match *m, lua_State *L, const char *fn, const char *s, size_t ls, const char *p,
                   size_t lp)
{
    m->L = L;
    m->fn = fn;
    m->src = s;
    m->src_end = s + ls;
    m->pat_end = p + lp;
    m->pending = 0;
    lg_match_reset(m);
}

void lg_match_reset(struct lg_match *m)
{
    m->level = 0;
    m->depth = LG_MATCH_DEPTH;
}

void lg_match_settle(struct lg_match *m)
{
    int64_t n = m->pending;
    m->pending = 0;
    if (n > 0)
        lg_lua_charge(m->L, n, m->fn);
}

void lg_match_charge(struct lg_match *m, int64_t units)
{
    m->pending += units;
    if (m->pending >= CHARGE_BATCH)
        lg_match_settle(m);
}

/* ---- single-character classes ---- */

/* Whether byte c is in the class that letter cl names; a byte that names no class stands for itself. */
static int class_has(int c, int cl)
{
    int in;
    switch (tolower(cl)) {
    case 'a': in = isalpha(c); break;
    case 'c': in = iscntrl(c); break;
    case 'd': in = isdigit(c); break;
    case 'g': in = isgraph(c); break;
    case 'l': in = islower(c); break;
    case 'p': in = ispunct(c); break;
    case 's': in = isspace(c); break;
    case 'u': in = isupper(c); break;
    case 'w': in = isalnum(c); break;
    case 'x': in = isxdigit(c); break;
    case 'z': in = c == 0; break; /* deprecated, still accepted by Lua 5.4 */
    default: return cl == c;
    }
    in = in != 0;
    return isupper(cl) ? !in : in;
}

/* Just past the single-character class that starts at p (p < pat_end): a byte, "%x" or a whole set. In a
 * set the first member (after an optional "^") may be "]", and "%" escapes the byte after it. */
static const char *class_end(struct lg_match *m, const char *p)
{
    const char *end = m->pat_end;
    if (*p == '%') {
        if (p + 1 >= end)
            luaL_error(m->L, "malformed pattern (ends with '%%')");
        return p + 2;
    }
    if (*p != '[')
        return p + 1;
    p++;
    if (p < end && *p == '^')
        p++;
    do {
        if (p >= end)
            luaL_error(m->L, "malformed pattern (missing ']')");
        p += *p == '%' && p + 1 < end ? 2 : 1;
    } while (p >= end || *p != ']');
    return p + 1;
}

/* Whether c is in the set from p (its "[") to ec (its closing "]"). */
static int set_has(int c, const char *p, const char *ec)
{
    int in = 1;
    p++;
    if (*p == '^') {
        in = 0;
        p++;
    }
    for (; p < ec; p++) {
        if (*p == '%') {
            p++;
            if (class_has(c, (unsigned char)*p))
                return in;
        } else if (p[1] == '-' && p + 2 < ec) {
            if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2])
                return in;
            p += 2;
        } else if ((unsigned char)*p == c) {
            return in;
        }
    }
    return !in;
}

/* Whether the subject byte at s is in the class [p, ep); never at the subject's end. */
static int class_at(struct lg_match *m, const char *s, const char *p, const char *ep)
{
    if (s >= m->src_end)
        return 0;
    int c = (unsigned char)*s;
    switch (*p) {
    case '.': return 1;
    case '%': return class_has(c, (unsigned char)p[1]);
    case '[': return set_has(c, p, ep - 1);
    default: return (unsigned char)*p == c;
    }
}

/* ---- the items that are not a single class ---- */

/* %bxy at s (p at x): the end of a balanced x...y, or NULL. */
static const char *match_balance(struct lg_match *m, const char *s, const char *p)
{
    if (p + 1 >= m->pat_end)
        luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
    if (s >= m->src_end || *s != p[0])
        return NULL;
    int open = 0;
    for (const char *t = s; t < m->src_end; t++) {
        if (t > s && *t == p[1]) {
            if (--open == 0) {
                lg_match_charge(m, (t - s) >> 4);
                return t + 1;
            }
        } else if (*t == p[0]) {
            open++;
        }
    }
    lg_match_charge(m, (m->src_end - s) >> 4);
    return NULL;
}

/* %f[set] at s (p just after "%f"): the pattern after the set when s is where the set starts (the byte
 * before, or "\0" at the subject's start, is outside it; the byte at s, or "\0" at the end, is in it). */
static const char *match_frontier(struct lg_match *m, const char *s, const char *p)
{
    if (p >= m->pat_end || *p != '[')
        luaL_error(m->L, "missing '[' after '%%f' in pattern");
    const char *ep = class_end(m, p);
    int before = s == m->src ? 0 : (unsigned char)s[-1];
    int here = s < m->src_end ? (unsigned char)*s : 0;
    return !set_has(before, p, ep - 1) && set_has(here, p, ep - 1) ? ep : NULL;
}

/* %1..%9 at s: the end of a copy of that closed capture, or NULL (a position capture never matches). */
static const char *match_backref(struct lg_match *m, const char *s, int digit)
{
    int i = digit - '1';
    if (i < 0 || i >= m->level || m->cap[i].len == LG_CAP_UNFINISHED)
        luaL_error(m->L, "invalid capture index %%%d", i + 1);
    ptrdiff_t len = m->cap[i].len;
    if (len < 0 || m->src_end - s < len)
        return NULL;
    lg_match_charge(m, len >> 4);
    return memcmp(m->cap[i].init, s, (size_t)len) ? NULL : s + len;
}

/* ---- repetitions and captures: the points where matching recurses ---- */

/* The class [p, ep) repeated from s as often as it matches, then fewer until the rest (ep + 1) matches. */
static const char *repeat_longest(struct lg_match *m, const char *s, const char *p, const char *ep)
{
    ptrdiff_t n = 0;
    while (class_at(m, s + n, p, ep))
        n++;
    lg_match_charge(m, n >> 4);
    for (; n >= 0; n--) {
        const char *e = match(m, s + n, ep + 1);
        if (e)
            return e;
    }
    return NULL;
}

/* The class [p, ep) repeated from s as few times as lets the rest (ep + 1) match. */
static const char *repeat_shortest(struct lg_match *m, const char *s, const char *p, const char *ep)
{
    for (;; s++) {
        const char *e = match(m, s, ep + 1);
        if (e)
            return e;
        if (!class_at(m, s, p, ep))
            return NULL;
    }
}

static const char *open_capture(struct lg_match *m, const char *s, const char *p, ptrdiff_t what)
{
    if (m->level >= LG_MATCH_CAPTURES)
        luaL_error(m->L, "too many captures");
    m->cap[m->level].init = s;
    m->cap[m->level].len = what;
    m->level++;
    const char *e = match(m, s, p);
    if (!e)
        m->level--;
    return e;
}

/* ")": closes the innermost capture still open. */
static const char *close_capture(struct lg_match *m, const char *s, const char *p)
{
    int i = m->level - 1;
    while (i >= 0 && m->cap[i].len != LG_CAP_UNFINISHED)
        i--;
    if (i < 0)
        luaL_error(m->L, "invalid pattern capture");
    m->cap[i].len = s - m->cap[i].init;
    const char *e = match(m, s, p);
    if (!e)
        m->cap[i].len = LG_CAP_UNFINISHED;
    return e;
}

/* ---- the pattern, item by item ---- */

/* A single class at p with its quantifier, if any; returns 1 with *s and *p moved on when matching goes on in
 * this loop, 0 with *s set to the result (a match's end or NULL) when it is decided. */
static int match_class_item(struct lg_match *m, const char **s, const char **p)
{
    const char *ep = class_end(m, *p);
    int q = ep < m->pat_end ? *ep : 0;
    if (!class_at(m, *s, *p, ep)) {
        if (q == '*' || q == '?' || q == '-') {
            *p = ep + 1; /* zero repetitions */
            return 1;
        }
        *s = NULL;
        return 0;
    }
    const char *e;
    switch (q) {
    case '?':
        if ((e = match(m, *s + 1, ep + 1))) {
            *s = e;
            return 0;
        }
        *p = ep + 1;
        return 1;
    case '+': *s = repeat_longest(m, *s + 1, *p, ep); return 0;
    case '*': *s = repeat_longest(m, *s, *p, ep); return 0;
    case '-': *s = repeat_shortest(m, *s, *p, ep); return 0;
    default:
        (*s)++;
        *p = ep;
        return 1;
    }
}

static const char *match_items(struct lg_match *m, const char *s, const char *p)
{
    while (p < m->pat_end) {
        if (++m->pending >= CHARGE_BATCH)
            lg_match_settle(m);
        switch (*p) {
        case '(':
            if (p + 1 < m->pat_end && p[1] == ')')
                return open_capture(m, s, p + 2, LG_CAP_POSITION);
            return open_capture(m, s, p + 1, LG_CAP_UNFINISHED);
        case ')': return close_capture(m, s, p + 1);
        case '$':
            if (p + 1 == m->pat_end)
                return s == m->src_end ? s : NULL;
            break; /* a "$" elsewhere is a byte */
        case '%':
            if (p + 1 < m->pat_end && p[1] == 'b') {
                if (!(s = match_balance(m, s, p + 2)))
                    return NULL;
                p += 4;
                continue;
            }
            if (p + 1 < m->pat_end && p[1] == 'f') {
                if (!(p = match_frontier(m, s, p + 2)))
                    return NULL;
                continue;
            }
            if (p + 1 < m->pat_end && isdigit((unsigned char)p[1])) {
                if (!(s = match_backref(m, s, p[1])))
                    return NULL;
                p += 2;
                continue;
            }
            break;
        }
        if (!match_class_item(m, &s, &p))
            return s;
    }
    return s;
}

static const char *match(struct lg_match *m, const char *s, const char *p)
{
    if (m->depth-- == 0)
        luaL_error(m->L, "pattern too complex");
    const char *e = match_items(m, s, p);
    m->depth++;
    return e;
}

const char *lg_match_at(struct lg_match *m, const char *s, const char *p)
{
    return match(m, s, p);
}

/* ---- reading the captures ---- */

ptrdiff_t lg_match_capture(struct lg_match *m, int i, const char *s, const char *e, const char **cap)
{
    if (i >= m->level) {
        if (i != 0)
            luaL_error(m->L, "invalid capture index %%%d", i + 1);
        *cap = s;
        return e - s;
    }
    ptrdiff_t len = m->cap[i].len;
    if (len == LG_CAP_UNFINISHED)
        luaL_error(m->L, "unfinished capture");
    *cap = m->cap[i].init;
    if (len == LG_CAP_POSITION)
        lua_pushinteger(m->L, (lua_Integer)(m->cap[i].init - m->src) + 1);
    return len;
}

int lg_match_push_captures(struct lg_match *m, const char *s, const char *e)
{
    int n = m->level == 0 && s ? 1 : m->level;
    luaL_checkstack(m->L, n, "too many captures");
    for (int i = 0; i < n; i++) {
        const char *cap;
        ptrdiff_t len = lg_match_capture(m, i, s, e, &cap);
        if (len != LG_CAP_POSITION)
            lua_pushlstring(m->L, cap, (size_t)len);
    }
    return n;
}
