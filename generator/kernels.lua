-- kernels.lua: turns a kernel configuration into CUDA source: the machinery every op family shares.
--
-- A configuration is a table { op = <name>, dtype = "bf16"|"fp16", rank = r, ... } plus the op's switches
-- and tile parameters. The ops live in one module per family, generator/ops/<family>.lua (FAMILIES below),
-- each naming its template, parameters, defaults, checks, name tag and instantiation; this file normalises a
-- configuration, names it, emits it and lists an op's variants. The source is the shared headers of
-- templates/common/ and the op's template, each behind a #line directive so compile errors point into
-- templates/, followed by the stamped instantiation from the family's .inst file. Output is deterministic:
-- same configuration, same bytes.
local limits = require("generator.limits")

local M = {}

-- The op families, in the order C's enum lg_kernel_op lists their ops (runtime/include/lg_gen.h).
M.FAMILIES = { "lora", "peft", "mlora", "attn", "decoder" }

M.COMMON = { "templates/common/lg_philox.h", "templates/common/lg_args.h", "templates/common/lg_device.cuh" }

-- M.OPS[name]: every op of every family; M.ORDER: their names in enum order; inst_of[name]: the .inst file.
M.OPS, M.ORDER = {}, {}
local inst_of = {}
for _, fam in ipairs(M.FAMILIES) do
  local f = require("generator.ops." .. fam)
  local listed = {}
  for _, name in ipairs(f.ORDER) do
    local op = f.OPS[name]
    if not op then error(("generator/ops/%s.lua: ORDER names '%s', which OPS lacks"):format(fam, name), 0) end
    if M.OPS[name] then error(("generator/ops/%s.lua: op '%s' is defined twice"):format(fam, name), 0) end
    for k in pairs(op.params) do
      if op.defaults[k] == nil then
        error(("generator/ops/%s.lua: %s.%s has no default"):format(fam, name, k), 0)
      end
    end
    M.OPS[name], inst_of[name], listed[name] = op, f.INST, true
    M.ORDER[#M.ORDER + 1] = name
  end
  for name in pairs(f.OPS) do
    if not listed[name] then error(("generator/ops/%s.lua: op '%s' is missing from ORDER"):format(fam, name), 0) end
  end
end

local function source_of(path)
  local text, err = lg_source(path)
  if not text then error(err, 0) end
  return text
end

-- Fills in defaults and validates a configuration; returns it (a copy) or raises a readable error.
function M.normalize(cfg)
  local op = M.OPS[cfg.op]
  if not op then error(("unknown kernel op '%s'"):format(tostring(cfg.op)), 0) end
  local c = { op = cfg.op, dtype = cfg.dtype or "bf16", rank = cfg.rank }
  local dtype_ok = false
  for _, d in ipairs(limits.DTYPES) do dtype_ok = dtype_ok or d == c.dtype end
  if not dtype_ok then error("dtype must be " .. table.concat(limits.DTYPES, " or "), 0) end
  if op.rankless then c.rank = nil
  elseif not limits.rank_ok(c.rank) then
    error(("rank %s is not supported (multiple of %d, %d..%d)"):format(tostring(cfg.rank), limits.RANK_MULTIPLE,
      limits.RANK_MIN, limits.RANK_MAX), 0)
  end
  -- default_for also sees the request, so a default may follow another parameter (mlora: nmod)
  local rank_defaults = (op.default_for and c.rank) and op.default_for(c, cfg) or {}
  for k, allowed in pairs(op.params) do
    local v = cfg[k]
    if v == nil then v = rank_defaults[k] end
    if v == nil then v = op.defaults[k] end
    local ok = false
    for _, a in ipairs(allowed) do if a == v then ok = true end end
    if not ok then
      error(("%s: %s = %s is not one of {%s}"):format(cfg.op, k, tostring(v), table.concat(allowed, ", ")), 0)
    end
    c[k] = v
  end
  for k in pairs(cfg) do
    if k ~= "op" and k ~= "dtype" and k ~= "rank" and op.params[k] == nil then
      error(("%s: unknown parameter '%s'"):format(cfg.op, k), 0)
    end
  end
  if op.check then
    local why = op.check(c)
    if why then error(cfg.op .. ": " .. why, 0) end
  end
  return c
end

-- lg_<op>_<dtype>[_r<rank>][_<tag>]: the configuration spelled out (an op without variants has no tag).
function M.name(c)
  local op = M.OPS[c.op]
  local r = c.rank and ("_r" .. c.rank) or ""
  local tag = op.tag(c)
  return ("lg_%s_%s%s%s"):format(c.op, c.dtype, r, tag ~= "" and ("_" .. tag) or "")
end

-- Every op's name, in the order C's enum lg_kernel_op lists them (gen.c checks the two agree).
function M.op_names()
  return M.ORDER
end

-- What C needs to move a configuration of op `name` across (runtime/gen/gen.c): its parameters, each
-- { name, required }. rank is required of ranked ops; every other parameter has a default.
function M.op_params(name)
  local op = M.OPS[name]
  if not op then error(("unknown kernel op '%s'"):format(tostring(name)), 0) end
  local out = {}
  if not op.rankless then out[1] = { name = "rank", required = true } end
  local keys = {}
  for k in pairs(op.params) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do out[#out + 1] = { name = k, required = false } end
  return out
end

-- The instantiation block for op `opname` from its family's .inst file, with its line number.
local function inst_block(opname, file)
  local text = source_of(file)
  local lines, start, body = {}, nil, {}
  for l in (text .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
  for i, l in ipairs(lines) do
    local name = l:match("^@@%s*(%S+)")
    if name then
      if start then break end
      if name == opname then start = i + 1 end
    elseif start then
      body[#body + 1] = l
    end
  end
  if not start then error(file .. " has no section '" .. opname .. "'", 0) end
  return table.concat(body, "\n"), start
end

local function substitute(text, vars, where)
  local out = text:gsub("%${([%w_]+)}", function(k)
    local v = vars[k]
    if v == nil then error(where .. ": unresolved placeholder ${" .. k .. "}", 0) end
    return tostring(v)
  end)
  return out
end

-- Returns name, source, threads and the normalised configuration. `origin` names what asked for it (spec
-- path or "runtime") and is stamped into the first line.
function M.emit(cfg, origin)
  local c = M.normalize(cfg)
  local op = M.OPS[c.op]
  local name = M.name(c)
  local keys = {}
  for k in pairs(c) do keys[#keys + 1] = k end
  table.sort(keys)
  local desc = {}
  for _, k in ipairs(keys) do desc[#desc + 1] = k .. "=" .. tostring(c[k]) end
  local parts = {
    ("// Generated by loragen generator/kernels.lua from %s: do not edit.\n"):format(origin or "runtime"),
    ("// kernel %s: %s\n"):format(name, table.concat(desc, " ")),
    ("#define LG_DTYPE %d\n"):format(c.dtype == "bf16" and 0 or 1),
  }
  local files = {}
  for _, f in ipairs(M.COMMON) do files[#files + 1] = f end
  -- op.headers: the family's own shared headers (argument layouts, helpers), emitted before the op's template
  for _, f in ipairs(op.headers or {}) do files[#files + 1] = f end
  files[#files + 1] = op.template
  for _, f in ipairs(files) do
    local text = source_of(f)
    if text:find("%${") then error(f .. ": templates must not hold placeholders outside the .inst files", 0) end
    parts[#parts + 1] = ('#line 1 "%s"\n'):format(f)
    parts[#parts + 1] = text
    if text:sub(-1) ~= "\n" then parts[#parts + 1] = "\n" end
  end
  local inst = inst_of[c.op]
  local body, line = inst_block(c.op, inst)
  local vars = op.inst(c)
  vars.NAME = name
  vars.THREADS = op.threads(c)
  parts[#parts + 1] = ('#line %d "%s"\n'):format(line, inst)
  parts[#parts + 1] = substitute(body, vars, inst) .. "\n"
  return name, table.concat(parts), op.threads(c), c
end

-- All configurations of op for (dtype, rank), for the tuner and for compile-every-switch tests.
function M.variants(opname, dtype, rank, fixed)
  local op = M.OPS[opname]
  if not op then error(("unknown kernel op '%s'"):format(tostring(opname)), 0) end
  local keys = {}
  for k in pairs(op.params) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  local function rec(i, cur)
    if i > #keys then
      local c = { op = opname, dtype = dtype, rank = rank }
      for k, v in pairs(cur) do c[k] = v end
      local ok = pcall(M.normalize, c)
      if ok then out[#out + 1] = c end
      return
    end
    local k = keys[i]
    local vals = (fixed and fixed[k] ~= nil) and { fixed[k] } or op.params[k]
    for _, v in ipairs(vals) do
      cur[k] = v
      rec(i + 1, cur)
    end
    cur[k] = nil
  end
  rec(1, {})
  return out
end

return M
