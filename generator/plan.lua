-- plan.lua: which kernels a spec needs, and how each is launched. `loragen gen` writes these; the runtime
-- asks for the same configurations when it builds a layer, so the two agree.
local kernels = require("generator.kernels")

local M = {}

-- The configurations one LoRA layer of (dtype, rank, dropout) launches (defaults, before tuning).
function M.layer_kernels(dtype, rank, dropout)
  local drop = dropout > 0 and 1 or 0
  local list = {
    { op = "down", dtype = dtype, rank = rank, drop = drop },
    { op = "dy", dtype = dtype, rank = rank },
    { op = "reduce", dtype = dtype, out_half = 0 },
    { op = "reduce", dtype = dtype, out_half = 1 },
  }
  if drop == 1 then
    list[#list + 1] = { op = "da", dtype = dtype, rank = rank, fuse = 1, drop = 1 }
  else
    -- extended-K dX GEMM (no fuse) and the fallback for dY buffers without room for dS (fuse, no mask)
    list[#list + 1] = { op = "da", dtype = dtype, rank = rank, fuse = 0, drop = 0 }
    list[#list + 1] = { op = "da", dtype = dtype, rank = rank, fuse = 1, drop = 0 }
  end
  return list
end

-- The kernels of a validated spec (from generator.spec), each { name, cfg, source, threads }, in a fixed
-- order with duplicates removed.
function M.spec_kernels(spec)
  local out, seen = {}, {}
  for _, cfg in ipairs(M.layer_kernels(spec.dtype, spec.rank, spec.dropout)) do
    local c = kernels.normalize(cfg)
    local name, source, threads = kernels.emit(c, spec.path)
    if not seen[name] then
      seen[name] = true
      out[#out + 1] = { name = name, cfg = c, source = source, threads = threads }
    end
  end
  return out
end

return M
