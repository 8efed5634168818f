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

-- Evaluates `text` (named `path` in messages). Returns the table, or nil and "path:line: error: msg".
function M.eval(text, path)
  local chunk, err = load(text, "@" .. path, "t", safe_env())
  if not chunk then
    return nil, (err:gsub("^(.-:%d+:) ", "%1 error: "))
  end
  local ok, val = lg_run_limited(chunk, 50000000)
  if not ok then
    local msg = tostring(val)
    if not msg:match("^.-:%d+: ") then msg = path .. ":1: " .. msg end
    return nil, (msg:gsub("^(.-:%d+:) ", "%1 error: "))
  end
  if type(val) ~= "table" then
    return nil, path .. ":1: error: the file must return a table (it returned " .. type(val) .. ")"
  end
  return val
end

-- Source locator: the line of a key path such as {"lora", "rank"} or {"adapters", 2, "dataset"}.
-- Each named key is searched for from the line where its parent was found; an index counts table
-- constructors ("{") at that depth, which is what a hand-written file looks like.
local Locator = {}
Locator.__index = Locator

function M.locator(text)
  local lines = {}
  for l in (text .. "\n"):gmatch("(.-)\r?\n") do lines[#lines + 1] = l end
  return setmetatable({ lines = lines }, Locator)
end

local function strip_comment(l)
  return (l:gsub("%-%-.*$", ""))
end

function Locator:line_of(path)
  local line = 1
  for _, key in ipairs(path) do
    if type(key) == "string" then
      local pat = "%f[%w_]" .. key:gsub("%p", "%%%0") .. "%s*="
      local pat2 = "%[%s*[\"']" .. key:gsub("%p", "%%%0") .. "[\"']%s*%]%s*="
      local found
      for i = line, #self.lines do
        local l = strip_comment(self.lines[i])
        if l:find(pat) or l:find(pat2) then found = i break end
      end
      if not found then return line end
      line = found
    else
      -- the key-th element: count lines that open an element after the parent line.
      local count, found = 0, nil
      for i = line, #self.lines do
        local l = strip_comment(self.lines[i])
        local _, opens = l:gsub("{", "")
        if i == line then opens = opens - 1 end
        if opens > 0 then
          count = count + opens
          if count >= key then found = i break end
        end
      end
      if not found then return line end
      line = found
    end
  end
  return line
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
--     min_len =, check = function(value, path, errs) }
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

local function check_node(v, node, path, errs)
  local t = node.type
  if t == "integer" then
    if math.type(v) ~= "integer" and not (type(v) == "number" and v == math.floor(v) and v == v) then
      errs:add(path, "expected an integer, got " .. (type(v) == "number" and tostring(v) or type(v)))
      return
    end
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
        check_node(v[k], f, copy_path(path, k), errs)
      end
    end
  end
  if t == "array" then
    if node.min_len and #v < node.min_len then
      errs:add(path, ("needs at least %d element(s), got %d"):format(node.min_len, #v))
    end
    if node.items then
      for i, item in ipairs(v) do check_node(item, node.items, copy_path(path, i), errs) end
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
