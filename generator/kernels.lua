-- kernels.lua: turns a kernel configuration into CUDA source.
--
-- A configuration is a table { op = "down"|"dy"|"da"|"reduce", dtype = "bf16"|"fp16", rank = r, ... } plus
-- the op's switches and tile parameters (see OPS). The source is the shared headers and the op's template,
-- each behind a #line directive so compile errors point into templates/, followed by the stamped
-- instantiation from templates/kernels.inst. Output is deterministic: same configuration, same bytes.
local M = {}

-- Per op: template file, switch/tile parameters with their allowed values, threads per block, and how the
-- kernel name encodes the configuration (it doubles as the JIT cache-key prefix).
M.OPS = {
  down = {
    template = "templates/lora_down.cuh",
    params = { drop = { 0, 1 }, wm = { 1, 2, 4, 8 }, wk = { 1, 2, 4, 8 }, mt = { 1, 2 }, u = { 1, 2, 4 },
               minb = { 1, 2, 3 } },
    defaults = { drop = 0, wm = 1, wk = 8, mt = 1, u = 2, minb = 1 },
    -- the K-split reduction buffer grows with the rank: fewer K warps at high rank
    default_for = function(c) return { wk = c.rank <= 64 and 8 or 4 } end,
    threads = function(c) return 32 * c.wm * c.wk end,
    tag = function(c)
      return ("w%dx%dm%du%db%d%s"):format(c.wm, c.wk, c.mt, c.u, c.minb, c.drop == 1 and "_drop" or "")
    end,
    inst = function(c)
      return { R = c.rank, WM = c.wm, WK = c.wk, MT = c.mt, U = c.u, DROP = c.drop, MINB = M.minb_arg(c) }
    end,
    check = function(c)
      if c.wm * c.wk > 16 then return "wm*wk must be <= 16 warps" end
      if (c.wk - 1) * c.wm * c.mt * c.rank * 16 * 4 > 48 * 1024 then return "K-split reduction exceeds 48 KiB" end
    end,
  },
  dy = {
    template = "templates/lora_dy.cuh",
    params = { nct = { 1, 2, 4, 8 }, st = { 2, 3, 4 }, minb = { 1, 4, 5, 6 } },
    defaults = { nct = 4, st = 3, minb = 1 },
    threads = function() return 128 end,
    tag = function(c) return ("c%ds%db%d"):format(c.nct, c.st, c.minb) end,
    inst = function(c) return { R = c.rank, NCT = c.nct, ST = c.st, MINB = M.minb_arg(c) } end,
    -- the dB accumulators (nct*rank/2 registers per thread) must fit beside everything else
    default_for = function(c) return { nct = math.max(1, math.min(4, 128 // c.rank)) } end,
    check = function(c)
      if c.nct * c.rank > 128 then return "nct*rank > 128 would spill the dB accumulators" end
    end,
  },
  da = {
    template = "templates/lora_da.cuh",
    params = { fuse = { 0, 1 }, drop = { 0, 1 }, minb = { 1, 4, 5, 6 } },
    defaults = { fuse = 0, drop = 0, minb = 4 },
    threads = function() return 128 end,
    tag = function(c)
      return (c.fuse == 1 and "fuse" or "nofuse") .. "_b" .. c.minb .. (c.drop == 1 and "_drop" or "")
    end,
    inst = function(c) return { R = c.rank, FUSE = c.fuse, DROP = c.drop, MINB = M.minb_arg(c) } end,
  },
  reduce = {
    template = "templates/lora_reduce.cuh",
    params = { out_half = { 0, 1 } },
    defaults = { out_half = 0 },
    threads = function() return 128 end,
    tag = function(c) return c.out_half == 1 and "half" or "f32" end,
    inst = function(c) return { OUT_HALF = c.out_half } end,
    rankless = true,
  },
}

-- The second __launch_bounds__ argument: minb blocks per SM must fit in the register file. minb = 1 omits
-- it and leaves the allocation to the compiler's own heuristic (writing an explicit 1 lets it use more).
function M.minb_arg(c)
  return c.minb > 1 and (", " .. c.minb) or ""
end

local COMMON = { "templates/lg_philox.h", "templates/lg_args.h", "templates/lg_device.cuh" }

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
  if c.dtype ~= "bf16" and c.dtype ~= "fp16" then error("dtype must be bf16 or fp16", 0) end
  if op.rankless then c.rank = nil
  elseif math.type(c.rank) ~= "integer" or c.rank < 8 or c.rank % 8 ~= 0 or c.rank > 128 then
    error(("rank %s is not supported (multiple of 8, 8..128)"):format(tostring(cfg.rank)), 0)
  end
  local rank_defaults = (op.default_for and c.rank) and op.default_for(c) or {}
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

function M.name(c)
  local op = M.OPS[c.op]
  local r = c.rank and ("_r" .. c.rank) or ""
  return ("lg_%s_%s%s_%s"):format(c.op, c.dtype, r, op.tag(c))
end

-- The instantiation block for op `c.op` from templates/kernels.inst, with its line number.
local function inst_block(opname)
  local text = source_of("templates/kernels.inst")
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
  if not start then error("templates/kernels.inst has no section '" .. opname .. "'", 0) end
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

-- Returns name, source, threads for a configuration. `origin` names what asked for it (spec path or
-- "runtime") and is stamped into the first line.
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
  for _, f in ipairs(COMMON) do files[#files + 1] = f end
  files[#files + 1] = op.template
  for _, f in ipairs(files) do
    local text = source_of(f)
    if text:find("%${") then error(f .. ": templates must not hold placeholders outside kernels.inst", 0) end
    parts[#parts + 1] = ('#line 1 "%s"\n'):format(f)
    parts[#parts + 1] = text
    if text:sub(-1) ~= "\n" then parts[#parts + 1] = "\n" end
  end
  local body, line = inst_block(c.op)
  local vars = op.inst(c)
  vars.NAME = name
  vars.THREADS = op.threads(c)
  parts[#parts + 1] = ('#line %d "templates/kernels.inst"\n'):format(line)
  parts[#parts + 1] = substitute(body, vars, "templates/kernels.inst") .. "\n"
  return name, table.concat(parts), op.threads(c)
end

-- All configurations of op for (dtype, rank), for the tuner and for compile-every-switch tests.
function M.variants(opname, dtype, rank, fixed)
  local op = M.OPS[opname]
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
