-- plan.lua: which kernels a spec needs, and how each is launched. `loragen gen` writes these; the runtime
-- (runtime/ops/lora.c, through lg_gen_layer_kernels) asks for the same slots when it builds a layer, so the
-- two agree: the choice itself lives in generator/ops/lora.lua (layer_slots).
local kernels = require("generator.kernels")
local lora = require("generator.ops.lora")

local M = {}

-- The slots of one LoRA layer of (dtype, rank, dropout): { slot, cfg, precompile } (defaults, before tuning).
M.layer_slots = lora.layer_slots

-- The configurations `loragen gen` prepares for such a layer, in slot order (duplicates left in).
function M.layer_kernels(dtype, rank, dropout)
  local list = {}
  for _, s in ipairs(lora.layer_slots(dtype, rank, dropout)) do
    if s.precompile ~= false then list[#list + 1] = s.cfg end
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
