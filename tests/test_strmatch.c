/* test_strmatch.c: the sandbox's pattern functions (runtime/lua/strfuncs.c on loragen's matcher, strmatch.c)
 * against the stock string library of Lua 5.4: a seeded random differential test (thousands of subjects and
 * patterns over a small alphabet of pattern bytes, through find, plain find, match, gmatch with and without
 * init, gsub with string, number, table and function replacements, with and without a count), comparing every
 * result and every error message, outside and inside a limited run; hand cases for each of Lua's error
 * messages and the recursion bound; the budget ending a backtracking pattern in each function. The seed is
 * printed; LORAGEN_TEST_SEED=N repeats a run. */
#include "lg_lua.h"
#include "lg_lua_test.h"
#include "lg_test.h"

#include <check.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>


/* Defines S (the limited string library), ser (a call's outcome as text) and same(what, f, g, ...). */
static const char *common =
    "S = lg_sandbox_lib('string')\n"
    "function ser(ok, ...)\n"
    "  local out = { tostring(ok), select('#', ...) }\n"
    "  for i = 1, select('#', ...) do local v = select(i, ...)\n"
    "    out[#out + 1] = (math.type(v) or type(v)) .. ':' .. tostring(v) end\n"
    "  return table.concat(out, '|')\n"
    "end\n"
    "function same(what, f, g, ...)\n"
    "  local a, b = ser(pcall(f, ...)), ser(pcall(g, ...))\n"
    "  if a ~= b then error(what .. '\\n  stock:   ' .. a .. '\\n  limited: ' .. b, 0) end\n"
    "  return a\n"
    "end\n";

static const char *fuzz =
    "local bytes = { 'a', 'b', '1', '2', ' ', '%', '(', ')', '[', ']', '^', '$', '*', '+', '-', '?', '.', 'b', 'f' }\n"
    "local tokens = { '%a', '%d', '%s', '%w', '%l', '%u', '%p', '%x', '%c', '%g', '%A', '%D', '%S', '%W', '%P', '%.',\n"
    "  '%%', '%b()', '%bab', '%f[%a]', '%f[^a]', '%f[%s]', '[a-b]', '[^%d]', '[%a1]', '[]a]', '[^]a]', '[a-]', '()',\n"
    "  '%1', '%2', '%0', '(a)', '(a*)', '(.-)', '.-', 'a*', 'b+', 'a?', '%z', '[%w_]+', '^(a)' }\n"
    "local letters = { 'a', 'b', '1', '2', ' ', '(', ')', 'A', 'B', '.', '%', '\\0', '_' }\n"
    "local repls = { 'x', '%0', '%1', '%2', '<%1>', '%%', '%', 'a%b', '', '%0%0', '[%2%1]', '%9' }\n"
    "local tables = { { a = 'X', b = false, ['1'] = 7, ab = 'Y' }, { a = {} }, {} }\n"
    "local function pick(t) return t[math.random(#t)] end\n"
    "local function pattern()\n"
    "  local out = {}\n"
    "  for _ = 1, math.random(0, 8) do out[#out + 1] = math.random() < 0.6 and pick(bytes) or pick(tokens) end\n"
    "  return table.concat(out)\n"
    "end\n"
    "local function subject()\n"
    "  local out = {}\n"
    "  for _ = 1, math.random(0, 12) do out[#out + 1] = pick(letters) end\n"
    "  return table.concat(out)\n"
    "end\n"
    "local function repl_fn(x, ...)\n"
    "  local k = (#tostring(x) + select('#', ...)) % 6\n"
    "  if k == 0 then return nil elseif k == 1 then return false elseif k == 2 then return tostring(x):upper()\n"
    "  elseif k == 3 then return 42 elseif k == 4 and math.type(x) then return {} end\n"
    "  return '<' .. tostring(x) .. '>'\n"
    "end\n"
    "local function walk(it, ...)\n"
    "  local out = {}\n"
    "  local f = it(...)\n"
    "  for _ = 1, 40 do local r = ser(true, f()) if r == 'true|0' then break end out[#out + 1] = r end\n"
    "  return table.concat(out, ';')\n"
    "end\n"
    "function fuzz(cases)\n"
    "  for c = 1, cases do\n"
    "    local s, p = subject(), pattern()\n"
    "    local init = math.random() < 0.3 and nil or math.random(-15, 15)\n"
    "    local w = ('case %d: s=%q p=%q init=%s'):format(c, s, p, tostring(init))\n"
    "    same('find ' .. w, string.find, S.find, s, p, init)\n"
    "    same('plain find ' .. w, string.find, S.find, s, p, init or 1, true)\n"
    "    same('match ' .. w, string.match, S.match, s, p, init)\n"
    "    same('gmatch ' .. w, function() return walk(string.gmatch, s, p) end, function() return walk(S.gmatch, s, p) end)\n"
    "    same('gmatch init ' .. w, function() return walk(string.gmatch, s, p, init) end,\n"
    "         function() return walk(S.gmatch, s, p, init) end)\n"
    "    local r, n = pick(repls), math.random(-1, 3)\n"
    "    same('gsub ' .. r .. ' ' .. w, string.gsub, S.gsub, s, p, r)\n"
    "    same('gsub n=' .. n .. ' ' .. r .. ' ' .. w, string.gsub, S.gsub, s, p, r, n)\n"
    "    same('gsub number ' .. w, string.gsub, S.gsub, s, p, 7)\n"
    "    local t = math.random(#tables)\n"
    "    same('gsub table ' .. t .. ' ' .. w, string.gsub, S.gsub, s, p, tables[t])\n"
    "    same('gsub table n ' .. w, string.gsub, S.gsub, s, p, tables[t], n)\n"
    "    same('gsub function ' .. w, string.gsub, S.gsub, s, p, repl_fn)\n"
    "    same('gsub function n ' .. w, string.gsub, S.gsub, s, p, repl_fn, n)\n"
    "  end\n"
    "end\n";

START_TEST(random_patterns_behave_like_luas)
{
    const char *env = getenv("LORAGEN_TEST_SEED");
    long seed = env ? atol(env) : (long)time(NULL);
    printf("test_strmatch: seed %ld (LORAGEN_TEST_SEED=%ld repeats it)\n", seed, seed);
    fflush(stdout);
    lua_State *L = lg_test_lua_state();
    lg_test_lua_run(L, common);
    lg_test_lua_run(L, fuzz);
    char code[256];
    snprintf(code, sizeof code,
             "math.randomseed(%ld)\n"
             "fuzz(4000)\n"
             "local ok, err = lg_run_limited(function() fuzz(300) return 1 end)\n"
             "assert(ok, err)\n",
             seed);
    lg_test_lua_run(L, code);
    lua_close(L);
}
END_TEST

/* Each error message of Lua's matcher, raised by the limited functions with the same words. */
START_TEST(errors_are_luas)
{
    lua_State *L = lg_test_lua_state();
    lg_test_lua_run(L, common);
    lg_test_lua_run(L, "local cases = {\n"
               "  { 'find', { 'abc', 'a%' }, \"malformed pattern (ends with '%')\" },\n"
               "  { 'match', { 'abc', '[a' }, \"malformed pattern (missing ']')\" },\n"
               "  { 'match', { 'abc', '[^]' }, \"malformed pattern (missing ']')\" },\n"
               "  { 'match', { 'abc', '[a%' }, \"malformed pattern (missing ']')\" },\n"
               "  { 'find', { 'abc', '%f' }, \"missing '[' after '%f' in pattern\" },\n"
               "  { 'find', { 'abc', '%fa' }, \"missing '[' after '%f' in pattern\" },\n"
               "  { 'find', { 'abc', '(%1)' }, 'invalid capture index %1' },\n"
               "  { 'find', { 'abc', '%0' }, 'invalid capture index %0' },\n"
               "  { 'find', { 'abc', '(a)%2' }, 'invalid capture index %2' },\n"
               "  { 'gsub', { 'abc', 'a', '%2' }, 'invalid capture index %2' },\n"
               "  { 'match', { 'abc', 'a)' }, 'invalid pattern capture' },\n"
               "  { 'find', { 'abc', '(a' }, 'unfinished capture' },\n"
               "  { 'match', { 'abc', string.rep('()', 33) }, 'too many captures' },\n"
               "  { 'find', { string.rep('a', 300), string.rep('a?', 200) }, 'pattern too complex' },\n"
               "  { 'find', { 'abc', '%b' }, \"malformed pattern (missing arguments to '%b')\" },\n"
               "  { 'find', { 'abc', '%ba' }, \"malformed pattern (missing arguments to '%b')\" },\n"
               "  { 'gsub', { 'abc', 'b', '%' }, \"invalid use of '%' in replacement string\" },\n"
               "  { 'gsub', { 'abc', 'b', '%x' }, \"invalid use of '%' in replacement string\" },\n"
               "  { 'gsub', { 'abc', 'b', { b = {} } }, 'invalid replacement value (a table)' },\n"
               "  { 'gsub', { 'abc', 'b', function() return true end }, 'invalid replacement value (a boolean)' },\n"
               "}\n"
               "for _, c in ipairs(cases) do\n"
               "  local fn, args, want = c[1], c[2], c[3]\n"
               "  local got = same(fn .. ' ' .. args[2], string[fn], S[fn], table.unpack(args))\n"
               "  assert(got == 'false|1|string:' .. want, fn .. ' ' .. args[2] .. ': ' .. got)\n"
               "end\n"
               "-- the recursion bound is Lua's: 199 nested optional items match, 200 do not\n"
               "assert(same('a?199', string.find, S.find, ('a'):rep(300), ('a?'):rep(199)) == 'true|2|integer:1|integer:199')\n"
               "local it = S.gmatch('abc', '(a')\n"
               "local ok, err = pcall(it)\n"
               "assert(not ok and err == 'unfinished capture', err)\n");
    lua_close(L);
}
END_TEST

/* A pattern that backtracks exponentially ends with the budget's error, named by its function. */
START_TEST(backtracking_ends_with_the_budget)
{
    lua_State *L = lg_test_lua_state();
    lg_test_lua_run(L, common);
    lg_test_lua_run(L, "local s, p = ('a'):rep(40), ('a-'):rep(30) .. 'b'\n"
               "local calls = {\n"
               "  find = function() return S.find(s, p) end,\n"
               "  match = function() return S.match(s, p) end,\n"
               "  gmatch = function() return S.gmatch(s, p)() end,\n"
               "  gsub = function() return S.gsub(s, p, 'x') end,\n"
               "}\n"
               "for name, f in pairs(calls) do\n"
               "  local ok, err = lg_run_limited(f)\n"
               "  assert(not ok and err:find('string.' .. name .. ': the file', 1, true), name .. ': ' .. tostring(err))\n"
               "end\n"
               "-- a long plain search is charged too\n"
               "local big = ('a'):rep(1 << 22)\n"
               "local ok, err = lg_run_limited(function() for _ = 1, 100 do S.find(big, 'ab', 1, true) end return 1 end)\n"
               "assert(not ok and err:find('string.find: ', 1, true), tostring(err))\n");
    lua_close(L);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("strmatch");
    TCase *tc = tcase_create("strmatch");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, random_patterns_behave_like_luas);
    tcase_add_test(tc, errors_are_luas);
    tcase_add_test(tc, backtracking_ends_with_the_budget);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
