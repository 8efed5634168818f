-- resources.lua: what one kernel configuration asks of an SM, estimated without compiling it, so the tuner can
-- prune configurations a GPU cannot run (runtime/tune/prune.c compares these with each arch's limits) before it
-- spends any time compiling or timing them.
--
-- estimate(cfg) -> { threads, smem, regs, minb }:
--   threads  threads per block (the op's own threads())
--   smem     shared memory per block in bytes, static + dynamic, as the template lays it out (the .inst's
--            sizeof is the runtime's truth; the formulas below mirror the templates' structs and arrays)
--   regs     a lower bound on the registers per thread the kernel needs without spilling: its accumulators
--            and fragments kept in registers plus a fixed allowance for indices and pointers. A
--            __launch_bounds__ cap below it forces spills.
--   minb     the blocks per SM the configuration's __launch_bounds__ asks for (1: no bound)
-- Ops without tunable resources get the small fixed numbers at the end (their shared memory is a few scratch
-- words).
local kernels = require("generator.kernels")
local attn = require("generator.ops.attn")

local M = {}

local BASE_REGS = 24 -- indices, pointers, loop counters: what every kernel keeps besides its tiles
local H = 2          -- bytes of a 16-bit value

local function pad16(r) return (r + 15) // 16 * 16 end

-- K-split reduction of the down-projection kernels: (wk - 1) warps' partial S tiles in fp32.
local function red_bytes(c, nmod)
  if c.wk == 1 then return 4 end
  return (c.wk - 1) * c.wm * c.mt * nmod * (c.rank // 8) * 4 * 32 * 4
end

local EST = {
  down = function(c)
    return { smem = red_bytes(c, 1), regs = BASE_REGS + c.mt * c.rank // 2 + c.u * (c.rank // 4 + 4 * c.mt) }
  end,
  mlora_down = function(c)
    return { smem = red_bytes(c, c.nmod),
             regs = BASE_REGS + c.nmod * c.mt * c.rank // 2 + c.u * (c.nmod * c.rank // 4 + 4 * c.mt) }
  end,
  -- dY, B and S tiles per cp.async stage (templates/lora/lora_dy.cuh, lg_dy_smem); dB accumulators nct*rank/2
  dy = function(c)
    return { smem = c.st * (64 * 72 + 2 * 64 * (c.rank + 8)) * H, regs = BASE_REGS + 8 + c.nct * c.rank // 2 }
  end,
  mlora_dy = function(c)
    return { smem = c.st * (64 * 72 + 2 * 64 * (c.rank + 8)) * H, regs = BASE_REGS + 8 + c.nct * c.rank // 2 }
  end,
  -- X, dS and A tiles (lg_da_smem); dA partials RP*64/128 per thread, the dX tile 32 more when fused
  da = function(c)
    local rp = pad16(c.rank)
    return { smem = (64 * 72 + 64 * (rp + 8) + rp * 72) * H, regs = BASE_REGS + rp // 2 + 32 * c.fuse }
  end,
  mlora_da = function(c)
    local rp = pad16(c.rank)
    local x = (c.drop == 1 and c.nmod or 1) * 64 * 72
    local a = (c.fuse == 1 and c.nmod * rp or 1) * 72
    return { smem = (x + c.nmod * 64 * (rp + 8) + a) * H, regs = BASE_REGS + c.nmod * rp // 2 + 32 * c.fuse }
  end,
  mlora_expand = function(c)
    local rp = pad16(c.rank)
    return { smem = (64 * (rp + 8) + 64 * (rp + 8)) * H + 64 * 68 * 4, regs = BASE_REGS + 8 * c.nct }
  end,
  attn_fwd = function(c)
    local mt = c.bm // (16 * c.nw)
    return { smem = attn.SMEM.attn_fwd(c), regs = BASE_REGS + mt * (c.hd // 2 + c.bn // 2) }
  end,
  attn_bwd_dkv = function(c)
    return { smem = attn.SMEM.attn_bwd_dkv(c), regs = BASE_REGS + c.hd + c.bm }
  end,
  attn_bwd_dq = function(c)
    local mt = c.bm // (16 * c.nw)
    return { smem = attn.SMEM.attn_bwd_dq(c), regs = BASE_REGS + mt * (c.hd // 2 + c.bn) }
  end,
  -- the row in registers: vpt vectors of 8 fp32 values
  norm_fwd = function(c) return { smem = 32 * 4, regs = BASE_REGS + 8 * c.vpt } end,
  norm_bwd = function(c) return { smem = 32 * 4, regs = BASE_REGS + 16 * c.vpt } end,
  norm_lora_fwd = function(c) return { smem = 16 * 1024, regs = BASE_REGS + c.nlora * c.rank // 2 } end,
  norm_lora_bwd = function(c) return { smem = 16 * 1024, regs = BASE_REGS + c.nlora * c.rank // 2 } end,
}

function M.estimate(cfg)
  local c = kernels.normalize(cfg)
  local op = kernels.OPS[c.op]
  local e = EST[c.op] and EST[c.op](c) or { smem = 1024, regs = BASE_REGS + 8 }
  e.threads = op.threads(c)
  e.minb = c.minb or 1
  return e
end

-- The ops that have an estimate of their own (the others take the fixed one): for tests.
function M.estimated_ops()
  local out = {}
  for k in pairs(EST) do out[#out + 1] = k end
  table.sort(out)
  return out
end

return M
