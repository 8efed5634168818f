-- sandbox.lua: evaluates spec and job files as data, and validates them against a schema.
--
-- A data file is Lua source that returns one table. It runs in an empty environment (only a few pure
-- functions: no io, os, require, load or string.dump) under the budgets of runtime/lua/lua_sandbox.h (VM
-- instructions, the work of the string and table functions, memory, time), so a spec cannot touch the machine
-- or hang the tool: its string and table libraries are the limited ones lg_sandbox_lib gives, whose pattern
-- matching and repetition count against the budget. Validation collects every error (up to MAX_ERRORS), each
-- as "file:line: error: message", where the line is found by locating the key in the source text.
--
-- Besides each node's own rules, validation applies these to every value: a number must be finite; an
-- integer node must state its max (a schema without one is a generator bug, so every integer fits the C type
-- it is read into); a string must be valid UTF-8 without NUL bytes, at most limits.STRING_MAX bytes.
local limits = require("generator.limits")

local M = {}

M.MAX_ERRORS = 100
-- A table with named fields has at most this many keys: sorting and locating millions of unknown keys would
-- take the trusted validator minutes.
M.MAX_KEYS = 1000

local SAFE = {
  "assert", "error", "ipairs", "next", "pairs", "select", "tonumber", "tostring", "type",
}

local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

local function safe_env()
  local env = {}
  for _, k in ipairs(SAFE) do env[k] = _G[k] end
  env.math = copy(math)
  env.string = copy(lg_sandbox_lib("string")) -- no dump; find/match/gmatch/gsub/rep charge the budget
  env.table = copy(lg_sandbox_lib("table"))   -- sort/move/concat/unpack/insert/remove charge the budget
  return env
end

-- A string from a data file as messages show it: printable, bytes that are not (control characters, invalid
-- UTF-8, NUL) as \ddd, and long ones cut, so that a name cannot garble or cut short the report.
function M.quote(v)
  if type(v) ~= "string" then return tostring(v) end
  local out, i, n = {}, 1, #v
  while i <= n and #out < 80 do
    local c = v:byte(i)
    local len = c < 0x80 and 1 or c >= 0xf0 and 4 or c >= 0xe0 and 3 or c >= 0xc2 and 2 or 0
    local ch = len > 0 and v:sub(i, i + len - 1)
    if len == 1 and (c < 0x20 or c == 0x7f) then
      out[#out + 1] = ("\\%d"):format(c)
    elseif len > 1 and utf8.len(ch) == 1 then
      out[#out + 1] = ch
      i = i + len - 1
    elseif len == 1 then
      out[#out + 1] = ch
    else
      out[#out + 1] = ("\\%d"):format(c)
    end
    i = i + 1
  end
  return table.concat(out) .. (i <= n and "..." or "")
end

-- A number as messages show it (0/0 prints as "-nan" or "nan" depending on the platform).
local function num_str(v)
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" end
  if v == -math.huge then return "-inf" end
  return tostring(v)
end

-- Lua shortens chunk names to about 60 characters in messages, so the chunk runs under a short name that
-- is swapped for the real path afterwards: long absolute paths stay whole.
local CHUNK = "=(spec)"

local function with_path(msg, path)
  return (msg:gsub("^%(spec%):(%d+): ", function(line) return path .. ":" .. line .. ": " end))
end

-- The line of the file's last top-level `return`, where a wrong return value is best reported.
local function return_line(text)
  local n, found = 0, 1
  for l in (text .. "\n"):gmatch("(.-)\r?\n") do
    n = n + 1
    if l:match("^return%f[^%w_]") then found = n end
  end
  return found
end

-- Lua's parser reports these without a position.
local UNPOSITIONED = {
  ["C stack overflow"] = "the file nests tables, parentheses or calls too deeply for Lua's parser (C stack overflow)",
  ["not enough memory"] = "not enough memory to parse the file",
}

-- Evaluates `text` (named `path` in messages). Returns the table, or nil and "path:line: error: msg".
function M.eval(text, path)
  local chunk, err = load(text, CHUNK, "t", safe_env())
  if not chunk then
    err = tostring(err)
    if not err:match("^%(spec%):%d+: ") then
      return nil, ("%s: error: %s"):format(path, UNPOSITIONED[err] or err)
    end
    return nil, (with_path(err, path):gsub("^(.-:%d+:) ", "%1 error: "))
  end
  local ok, val = lg_run_limited(chunk)
  if not ok then -- runtime/lua/sandbox.c gives every failure as "(spec):LINE: message"
    -- the message may be the file's own (error("...")): control bytes and NULs would garble or cut the report
    local msg = with_path(tostring(val), path):gsub("[%z\1-\31\127]", function(c) return "\\" .. c:byte() end)
    if not msg:match("^.-:%d+: ") then msg = path .. ":1: " .. msg end
    return nil, (msg:gsub("^(.-:%d+:) ", "%1 error: "))
  end
  if type(val) ~= "table" then
    return nil, ("%s:%d: error: the file must return a table (it returned %s)"):format(path, return_line(text),
      type(val))
  end
  return val
end

-- Runs fn(...) (a loader's validation of a data file, trusted code without the budgets) and turns a failure
-- that escapes it (the state's memory cap, hit while checking what a file left in memory) into
-- "path: error: ..." instead of a bare "not enough memory". Returns fn's results.
function M.protect(path, fn, ...)
  local res = table.pack(pcall(fn, ...))
  if res[1] then return table.unpack(res, 2, res.n) end
  local msg = tostring(res[2])
  if msg:match("^[^\n]-:%d+: error: ") or msg:match("^[^\n]-: error: ") then error(msg, 0) end
  if msg == "not enough memory" then
    msg = "not enough memory checking the file (what it built leaves too little of the 256 MiB a Lua state may use)"
  end
  error(("%s: error: %s"):format(path, msg), 0)
end

-- Source locator: the line of a key path such as {"lora", "rank"} or {"adapters", 2, "dataset"}.
-- A named key is searched for from where its parent was found (the first `key =` after it). An index is
-- found by reading the table constructor that follows the parent: a small scanner that skips strings and
-- comments counts the elements at its top level, so {"a", "b"} on one line or spread over several lines,
-- and lists of tables alike, resolve to the element's own line.
local Locator = {}
Locator.__index = Locator

function Locator:line_at(off)
  local lo, hi = 1, #self.starts
  while lo < hi do
    local mid = (lo + hi + 1) // 2
    if self.starts[mid] <= off then lo = mid else hi = mid - 1 end
  end
  return lo
end

-- Skips white space and comments from offset p.
local function skip_blank(text, p)
  while true do
    p = text:find("[^%s]", p) or #text + 1
    if text:sub(p, p + 1) ~= "--" then return p end
    local eq = text:match("^%-%-%[(=*)%[", p)
    if eq then
      local _, e = text:find("]" .. eq .. "]", p, true)
      p = (e or #text) + 1
    else
      p = (text:find("\n", p, true) or #text) + 1
    end
  end
end

-- Offset just past a string literal starting at p.
local function skip_string(text, p)
  local q = text:sub(p, p)
  if q == "[" then
    local eq = text:match("^%[(=*)%[", p)
    local _, e = text:find("]" .. eq .. "]", p, true)
    return (e or #text) + 1
  end
  local i = p + 1
  while i <= #text do
    local c = text:sub(i, i)
    if c == "\\" then i = i + 2
    elseif c == q or c == "\n" then return i + 1
    else i = i + 1 end
  end
  return i
end

-- The offset where the n-th element of the table constructor at (or after blanks from) p starts, or nil.
local function nth_element(text, p, n)
  p = skip_blank(text, p)
  if text:sub(p, p) ~= "{" then return nil end
  local depth, count, expect = 0, 0, false
  while p <= #text do
    p = skip_blank(text, p)
    local c = text:sub(p, p)
    if depth == 1 and expect and c ~= "}" and c ~= "," and c ~= ";" then
      count = count + 1
      if count == n then return p end
      expect = false
    end
    if c == "{" then
      depth = depth + 1
      if depth == 1 then expect = true end
      p = p + 1
    elseif c == "}" then
      depth = depth - 1
      if depth == 0 then return nil end
      p = p + 1
    elseif (c == "," or c == ";") and depth == 1 then
      expect = true
      p = p + 1
    elseif c == '"' or c == "'" or text:match("^%[=*%[", p) then
      p = skip_string(text, p)
    else
      p = p + 1
    end
  end
  return nil
end

-- `text` with every comment turned into spaces (newlines kept), so offsets and lines stay the same and a
-- key inside a comment is never found.
local function blank_comments(text)
  local out, p, from = {}, 1, 1
  while p <= #text do
    local c = text:sub(p, p)
    if c == '"' or c == "'" or text:match("^%[=*%[", p) then
      p = skip_string(text, p)
    elseif text:sub(p, p + 1) == "--" then
      local e = skip_blank(text, p) - 1
      out[#out + 1] = text:sub(from, p - 1)
      out[#out + 1] = (text:sub(p, e):gsub("[^\n]", " "))
      p, from = e + 1, e + 1
    else
      p = p + 1
    end
  end
  out[#out + 1] = text:sub(from)
  return table.concat(out)
end

function M.locator(text)
  local code = blank_comments(text)
  local lines, starts, pos = {}, {}, 1
  for l, nl in (code .. "\n"):gmatch("([^\n]*)(\n)") do
    lines[#lines + 1] = l
    starts[#starts + 1] = pos
    pos = pos + #l + #nl
  end
  return setmetatable({ lines = lines, starts = starts, text = code }, Locator)
end

-- The offset just past `key =` at or after offset p, or nil.
function Locator:find_key(key, p)
  local esc = key:gsub("%p", "%%%0")
  local pats = { "%f[%w_]" .. esc .. "%s*=", "%[%s*[\"']" .. esc .. "[\"']%s*%]%s*=" }
  local first = self:line_at(p)
  for i = first, #self.lines do
    local l = self.lines[i]
    local from = i == first and (p - self.starts[i] + 1) or 1
    local best
    for _, pat in ipairs(pats) do
      local _, e = l:find(pat, from)
      if e and (not best or e < best) then best = e end
    end
    if best then return self.starts[i] + best end
  end
  return nil
end

function Locator:line_of(path)
  local p = 1
  for _, key in ipairs(path) do
    local found
    if type(key) == "string" then
      found = self:find_key(key, p)
    else
      found = nth_element(self.text, p, key)
    end
    if not found then break end
    p = found
  end
  return self:line_at(p)
end

local function path_str(path)
  local s = ""
  for _, k in ipairs(path) do
    if type(k) == "number" then s = s .. "[" .. k .. "]"
    elseif not k:match("^[%a_][%w_]*$") then s = s .. '["' .. M.quote(k) .. '"]'
    else s = (s == "" and k) or (s .. "." .. k) end
  end
  return s == "" and "(top level)" or s
end
M.path_str = path_str

-- Error collector shared by validation passes.
local Errors = {}
Errors.__index = Errors

function M.errors(file, text)
  return setmetatable({ file = file, loc = M.locator(text), list = {} }, Errors)
end

-- After MAX_ERRORS, errors are only counted: a file with a million bad keys gets a report of readable size
-- (and locating a million keys in the text would take minutes).
function Errors:add(path, msg)
  self.n = (self.n or 0) + 1
  if self.n > M.MAX_ERRORS then return end
  self.list[#self.list + 1] = { line = self.loc:line_of(path), msg = msg, path = path_str(path) }
end

function Errors:count() return self.n or 0 end

function Errors:report()
  table.sort(self.list, function(a, b)
    if a.line ~= b.line then return a.line < b.line end
    return a.path < b.path
  end)
  local out = {}
  for _, e in ipairs(self.list) do
    out[#out + 1] = string.format("%s:%d: error: %s: %s", self.file, e.line, e.path, e.msg)
  end
  if self:count() > #self.list then
    out[#out + 1] = ("%s: ... and %d more errors"):format(self.file, self:count() - #self.list)
  end
  return table.concat(out, "\n")
end

-- Schema nodes:
--   { type = "integer"|"number"|"string"|"boolean"|"table"|"array", required = bool,
--     min =, max =, min_excl =, max_excl =, enum = {...}, fields = {name = node}, items = node,
--     min_len =, max_len = (array elements, or string bytes), check = function(value, path, errs) }
local function copy_path(path, k)
  local p = {}
  for i, v in ipairs(path) do p[i] = v end
  p[#p + 1] = k
  return p
end

local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

-- `parent`/`key` locate v so that an integral float (2^7, 16.0) is stored back as the integer it stands for:
-- later checks and the C side then see one kind of number.
-- A key of a data table as a path element: strings as they are, anything else by its type (a table's address
-- would make the message differ from run to run).
local function key_name(k)
  if type(k) == "string" or math.type(k) == "integer" then return k end
  if type(k) == "number" then return num_str(k) end
  return "(a " .. type(k) .. " key)"
end

local function check_string(v, node, path, errs)
  local max = node.max_len or limits.STRING_MAX
  if node.min_len and #v < node.min_len then
    errs:add(path, "must not be empty")
  elseif #v > max then
    errs:add(path, ("%d bytes is longer than the %d a %s may have"):format(#v, max,
      node.max_len and "value here" or "string"))
  elseif v:find("\0", 1, true) then
    errs:add(path, ("'%s' holds a NUL byte (at byte %d), which C would take for its end"):format(M.quote(v),
      v:find("\0", 1, true)))
  elseif not utf8.len(v) then
    local _, bad = utf8.len(v)
    errs:add(path, ("'%s' is not valid UTF-8 (byte %d)"):format(M.quote(v), bad))
  else
    return true
  end
  return false
end

local function check_node(v, node, path, errs, parent, key)
  local t = node.type
  if t == "integer" then
    local iv = math.type(v) == "float" and math.tointeger(v) or v
    if math.type(iv) ~= "integer" then
      errs:add(path, "expected an integer, got " .. (type(v) == "number" and num_str(v) or type(v)))
      return
    end
    if parent and math.type(v) == "float" then parent[key] = iv end
    v = iv
  elseif t == "number" then
    if type(v) ~= "number" then
      errs:add(path, "expected a number, got " .. type(v)) return
    end
    if v ~= v or v == math.huge or v == -math.huge then
      errs:add(path, "must be a finite number (got " .. num_str(v) .. ")") return
    end
  elseif t == "array" then
    if type(v) ~= "table" or not is_array(v) then
      errs:add(path, "expected a list { ... }, got " .. type(v)) return
    end
  elseif type(v) ~= t then
    errs:add(path, "expected a " .. t .. ", got " .. type(v)) return
  end
  if t == "string" and not check_string(v, node, path, errs) then return end
  if t == "integer" or t == "number" then
    if node.min and v < node.min then errs:add(path, ("must be >= %s (got %s)"):format(node.min, v)) end
    if node.max and v > node.max then errs:add(path, ("must be <= %s (got %s)"):format(node.max, v)) end
    if node.min_excl and v <= node.min_excl then errs:add(path, ("must be > %s (got %s)"):format(node.min_excl, v)) end
    if node.max_excl and v >= node.max_excl then errs:add(path, ("must be < %s (got %s)"):format(node.max_excl, v)) end
  end
  if node.enum then
    local ok = false
    for _, e in ipairs(node.enum) do if e == v then ok = true end end
    if not ok then
      errs:add(path, ("'%s' is not one of: %s"):format(M.quote(tostring(v)), table.concat(node.enum, ", ")))
    end
  end
  if t == "table" and node.fields then
    local names = {}
    for k in pairs(v) do
      names[#names + 1] = k
      if #names > M.MAX_KEYS then
        errs:add(path, ("has more than %d keys (a table here takes only its known keys)"):format(M.MAX_KEYS))
        return
      end
    end
    table.sort(names, function(a, b) return tostring(key_name(a)) < tostring(key_name(b)) end)
    local known
    for _, k in ipairs(names) do
      if type(k) ~= "string" or not node.fields[k] then
        if not known then
          known = {}
          for f in pairs(node.fields) do known[#known + 1] = f end
          table.sort(known)
          known = table.concat(known, ", ")
        end
        errs:add(copy_path(path, key_name(k)), "unknown key (known keys: " .. known .. ")")
      end
    end
    local fnames = {}
    for k in pairs(node.fields) do fnames[#fnames + 1] = k end
    table.sort(fnames)
    for _, k in ipairs(fnames) do
      local f = node.fields[k]
      if v[k] == nil then
        if f.required then errs:add(path, "missing required key '" .. k .. "'") end
      else
        check_node(v[k], f, copy_path(path, k), errs, v, k)
      end
    end
  end
  if t == "array" then
    if node.min_len and #v < node.min_len then
      errs:add(path, ("needs at least %d element(s), got %d"):format(node.min_len, #v))
    end
    if node.max_len and #v > node.max_len then
      errs:add(path, ("takes at most %d element(s), got %d"):format(node.max_len, #v))
    end
    if node.items then
      for i, item in ipairs(v) do check_node(item, node.items, copy_path(path, i), errs, v, i) end
    end
  end
  if node.check then node.check(v, path, errs) end
end

-- The schema's own rule: every integer node states its max (raises, naming the field, when one does not).
local function check_schema(node, where)
  if node.type == "integer" and node.max == nil and node.max_excl == nil then
    error(("generator bug: schema field %s is an integer without a max"):format(where), 0)
  end
  for k, f in pairs(node.fields or {}) do check_schema(f, where .. "." .. k) end
  if node.items then check_schema(node.items, where .. "[]") end
end
M.check_schema = check_schema

-- Validates `value` against `schema`; errors go to `errs` (from M.errors). Returns errs:count() == 0.
function M.validate(value, schema, errs)
  check_schema(schema, "(top)")
  check_node(value, schema, {}, errs)
  return errs:count() == 0
end

return M
