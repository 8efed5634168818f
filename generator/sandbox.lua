-- sandbox.lua: evaluates spec and job files as data, and validates them against a schema.
--
-- A data file is Lua source that returns one table. It runs in an empty environment (only a few pure
-- functions: no io, os, require, load or string.dump) under an instruction budget, so a spec cannot touch
-- the machine or hang the tool. Validation collects *every* error, each as "file:line: error: message",
-- where the line is found by locating the key in the source text.
local M = {}

local SAFE = {
  "assert", "error", "ipairs", "next", "pairs", "select", "tonumber", "tostring", "type",
}

local function safe_env()
  local env = {}
  for _, k in ipairs(SAFE) do env[k] = _G[k] end
  env.math = {}
  for k, v in pairs(math) do env.math[k] = v end
  env.string = {}
  for k, v in pairs(string) do if k ~= "dump" then env.string[k] = v end end
  env.table = {}
  for k, v in pairs(table) do env.table[k] = v end
  return env
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

-- Evaluates `text` (named `path` in messages). Returns the table, or nil and "path:line: error: msg".
function M.eval(text, path)
  local chunk, err = load(text, CHUNK, "t", safe_env())
  if not chunk then
    return nil, (with_path(err, path):gsub("^(.-:%d+:) ", "%1 error: "))
  end
  local ok, val = lg_run_limited(chunk, 50000000)
  if not ok then
    if val == "not enough memory" then -- raised by the state's allocation cap, which carries no position
      val = "not enough memory: evaluating the file took more than the 256 MiB a data file may use"
    end
    local msg = with_path(tostring(val), path)
    if not msg:match("^.-:%d+: ") then msg = path .. ":1: " .. msg end
    return nil, (msg:gsub("^(.-:%d+:) ", "%1 error: "))
  end
  if type(val) ~= "table" then
    return nil, ("%s:%d: error: the file must return a table (it returned %s)"):format(path, return_line(text),
      type(val))
  end
  return val
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

function Errors:add(path, msg)
  self.list[#self.list + 1] = { line = self.loc:line_of(path), msg = msg, path = path_str(path) }
end

function Errors:count() return #self.list end

function Errors:report()
  table.sort(self.list, function(a, b)
    if a.line ~= b.line then return a.line < b.line end
    return a.path < b.path
  end)
  local out = {}
  for _, e in ipairs(self.list) do
    out[#out + 1] = string.format("%s:%d: error: %s: %s", self.file, e.line, e.path, e.msg)
  end
  return table.concat(out, "\n")
end

-- Schema nodes:
--   { type = "integer"|"number"|"string"|"boolean"|"table"|"array", required = bool,
--     min =, max =, min_excl =, max_excl =, enum = {...}, fields = {name = node}, items = node,
--     min_len =, max_len =, check = function(value, path, errs) }
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
local function check_node(v, node, path, errs, parent, key)
  local t = node.type
  if t == "integer" then
    local iv = math.type(v) == "float" and math.tointeger(v) or v
    if math.type(iv) ~= "integer" then
      errs:add(path, "expected an integer, got " .. (type(v) == "number" and tostring(v) or type(v)))
      return
    end
    if parent and math.type(v) == "float" then parent[key] = iv end
    v = iv
  elseif t == "number" then
    if type(v) ~= "number" or v ~= v then
      errs:add(path, "expected a number, got " .. type(v)) return
    end
  elseif t == "array" then
    if type(v) ~= "table" or not is_array(v) then
      errs:add(path, "expected a list { ... }, got " .. type(v)) return
    end
  elseif type(v) ~= t then
    errs:add(path, "expected a " .. t .. ", got " .. type(v)) return
  end
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
      errs:add(path, ("'%s' is not one of: %s"):format(tostring(v), table.concat(node.enum, ", ")))
    end
  end
  if t == "table" and node.fields then
    local names = {}
    for k in pairs(v) do names[#names + 1] = k end
    table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(names) do
      if type(k) ~= "string" or not node.fields[k] then
        local known = {}
        for f in pairs(node.fields) do known[#known + 1] = f end
        table.sort(known)
        errs:add(copy_path(path, tostring(k)), "unknown key (known keys: " .. table.concat(known, ", ") .. ")")
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

-- Validates `value` against `schema`; errors go to `errs` (from M.errors). Returns errs:count() == 0.
function M.validate(value, schema, errs)
  check_node(value, schema, {}, errs)
  return errs:count() == 0
end

return M
