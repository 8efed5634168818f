-- ops/mlora.lua: the FusedMultiLoRA op family (mlora_down, mlora_dy, mlora_da, mlora_expand, mlora_reduce):
-- many adapters in one microbatch, and merged projections (nmod modules reading one input).
--
-- The kernels' `rank` is the layer's largest padded rank R (a multiple of 8, the generator's kernel rank rule
-- in generator/limits.lua); each (adapter, module) slot has its own rank at run time, any multiple of 4 up to
-- R (limits.MLORA_RANK_*), padded to 8 columns with zero A rows and B columns. nmod is compiled in where the
-- kernel keeps per-module registers (down, da); dy, expand and reduce find their module at run time.
-- Every op names templates/common/lg_mlora_args.h (argument blocks) and templates/mlora/mlora_common.cuh
-- (segment-group lookup) as family headers (op.headers), emitted before its own template. Parameter names are struct lg_kernel_cfg's fields.
local M = {}

M.INST = "templates/mlora/mlora.inst"

local HEADERS = { "templates/common/lg_mlora_args.h", "templates/mlora/mlora_common.cuh" }

local function minb_arg(c)
  return c.minb > 1 and (", " .. c.minb) or ""
end

-- Op names in the order C's enum lg_kernel_op lists them.
M.ORDER = { "mlora_down", "mlora_dy", "mlora_da", "mlora_expand", "mlora_reduce" }

M.OPS = {
  mlora_down = {
    template = "templates/mlora/mlora_down.cuh",
    headers = HEADERS,
    params = { nmod = { 1, 2, 3 }, drop = { 0, 1 }, wm = { 1, 2 }, wk = { 2, 4, 8 }, mt = { 1, 2 }, u = { 1, 2 },
               minb = { 1, 2 } },
    defaults = { nmod = 1, drop = 0, wm = 1, wk = 8, mt = 1, u = 2, minb = 1 },
    -- accumulators and A fragments grow with nmod * rank: fewer K warps and loads in flight for wide layers
    default_for = function(c, req)
      local w = (req.nmod or 1) * c.rank
      if w <= 32 then return { wk = 8, u = 2 } end
      if w <= 64 then return { wk = 4, u = 2 } end
      if w <= 128 then return { wk = 4, u = 1 } end
      return { wk = 2, u = 1 }
    end,
    threads = function(c) return 32 * c.wm * c.wk end,
    tag = function(c)
      return ("n%dw%dx%dm%du%db%d%s"):format(c.nmod, c.wm, c.wk, c.mt, c.u, c.minb, c.drop == 1 and "_drop" or "")
    end,
    inst = function(c)
      return { R = c.rank, NMOD = c.nmod, WM = c.wm, WK = c.wk, MT = c.mt, U = c.u, DROP = c.drop,
               MINB = minb_arg(c) }
    end,
    check = function(c)
      if c.wm * c.wk > 16 then return "wm*wk must be <= 16 warps" end
      if c.nmod * c.rank * (c.u + c.mt) // 2 > 384 then return "nmod*rank*(u+mt)/2 > 384 registers" end
      if (c.wk - 1) * c.wm * c.mt * c.nmod * c.rank * 64 > 48 * 1024 then return "K-split reduction exceeds 48 KiB" end
    end,
  },
  mlora_dy = {
    template = "templates/mlora/mlora_dy.cuh",
    headers = HEADERS,
    params = { nct = { 1, 2, 4 }, st = { 2, 3 }, minb = { 1, 4 } },
    defaults = { nct = 4, st = 3, minb = 1 },
    -- the largest allowed power of two with nct * rank <= 128 (dB accumulators in registers)
    default_for = function(c) return { nct = c.rank <= 32 and 4 or c.rank <= 64 and 2 or 1 } end,
    threads = function() return 128 end,
    tag = function(c) return ("c%ds%db%d"):format(c.nct, c.st, c.minb) end,
    inst = function(c) return { R = c.rank, NCT = c.nct, ST = c.st, MINB = minb_arg(c) } end,
    check = function(c)
      if c.nct * c.rank > 128 then return "nct*rank > 128 would spill the dB accumulators" end
    end,
  },
  mlora_da = {
    template = "templates/mlora/mlora_da.cuh",
    headers = HEADERS,
    params = { nmod = { 1, 2, 3 }, fuse = { 0, 1 }, drop = { 0, 1 }, minb = { 1, 2, 4 } },
    defaults = { nmod = 1, fuse = 0, drop = 0, minb = 1 },
    default_for = function(c, req) return { minb = (req.nmod or 1) * c.rank <= 32 and 4 or 1 } end,
    threads = function() return 128 end,
    tag = function(c)
      return ("n%d_%s_b%d%s"):format(c.nmod, c.fuse == 1 and "fuse" or "nofuse", c.minb, c.drop == 1 and "_drop" or "")
    end,
    inst = function(c) return { R = c.rank, NMOD = c.nmod, FUSE = c.fuse, DROP = c.drop, MINB = minb_arg(c) } end,
  },
  mlora_expand = {
    template = "templates/mlora/mlora_expand.cuh",
    headers = HEADERS,
    params = { nct = { 1, 2, 4 } },
    defaults = { nct = 2 },
    threads = function() return 128 end,
    tag = function(c) return ("c%d"):format(c.nct) end,
    inst = function(c) return { R = c.rank, NCT = c.nct } end,
  },
  mlora_reduce = {
    template = "templates/mlora/mlora_reduce.cuh",
    headers = HEADERS,
    params = { out_half = { 0, 1 } },
    defaults = { out_half = 0 },
    threads = function() return 128 end,
    tag = function(c) return c.out_half == 1 and "half" or "f32" end,
    inst = function(c) return { OUT_HALF = c.out_half } end,
    rankless = true,
  },
}

return M
