-- ops/lora.lua: the FusedLoRA op family (down, dy, da, reduce) and the kernels one LoRA layer launches.
--
-- Each op names its template, its switch and tile parameters with their allowed values and defaults, the
-- checks that prune impossible combinations, its threads per block, the tag its kernel name carries (the name
-- doubles as the JIT cache-key prefix) and the placeholders of its instantiation in templates/lora/lora.inst.
-- generator/kernels.lua does the rest (the rank rule of generator/limits.lua, normalise, name, emit), and
-- generator/plan.lua turns layer_slots into `loragen gen`'s kernel list. Parameter names are struct lg_kernel_cfg's
-- field names (runtime/include/lg_gen.h); tests/test_gen_truth.c checks every one maps to a field.
local M = {}

M.INST = "templates/lora/lora.inst"

-- The second __launch_bounds__ argument: minb blocks per SM must fit in the register file. minb = 1 omits
-- it and leaves the allocation to the compiler's own heuristic (writing an explicit 1 lets it use more).
local function minb_arg(c)
  return c.minb > 1 and (", " .. c.minb) or ""
end

-- Op names in the order C's enum lg_kernel_op lists them.
M.ORDER = { "down", "dy", "da", "reduce" }

-- params: each switch or tile parameter with its allowed values (variants() walks them in name order).
M.OPS = {
  down = {
    template = "templates/lora/lora_down.cuh",
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
      return { R = c.rank, WM = c.wm, WK = c.wk, MT = c.mt, U = c.u, DROP = c.drop, MINB = minb_arg(c) }
    end,
    check = function(c)
      if c.wm * c.wk > 16 then return "wm*wk must be <= 16 warps" end
      if (c.wk - 1) * c.wm * c.mt * c.rank * 16 * 4 > 48 * 1024 then return "K-split reduction exceeds 48 KiB" end
    end,
  },
  dy = {
    template = "templates/lora/lora_dy.cuh",
    params = { nct = { 1, 2, 4, 8 }, st = { 2, 3, 4 }, minb = { 1, 4, 5, 6 } },
    defaults = { nct = 4, st = 3, minb = 1 },
    threads = function() return 128 end,
    tag = function(c) return ("c%ds%db%d"):format(c.nct, c.st, c.minb) end,
    inst = function(c) return { R = c.rank, NCT = c.nct, ST = c.st, MINB = minb_arg(c) } end,
    -- the dB accumulators (nct*rank/2 registers per thread) must fit beside everything else
    -- (the largest power of two up to 4 with nct * rank <= 128: 128 // rank alone gave 3 or 5, not allowed)
    default_for = function(c) return { nct = c.rank <= 32 and 4 or c.rank <= 64 and 2 or 1 } end,
    check = function(c)
      if c.nct * c.rank > 128 then return "nct*rank > 128 would spill the dB accumulators" end
    end,
  },
  da = {
    template = "templates/lora/lora_da.cuh",
    params = { fuse = { 0, 1 }, drop = { 0, 1 }, minb = { 1, 4, 5, 6 } },
    defaults = { fuse = 0, drop = 0, minb = 4 },
    threads = function() return 128 end,
    tag = function(c)
      return (c.fuse == 1 and "fuse" or "nofuse") .. "_b" .. c.minb .. (c.drop == 1 and "_drop" or "")
    end,
    inst = function(c) return { R = c.rank, FUSE = c.fuse, DROP = c.drop, MINB = minb_arg(c) } end,
  },
  reduce = {
    template = "templates/lora/lora_reduce.cuh",
    params = { out_half = { 0, 1 } },
    defaults = { out_half = 0 },
    threads = function() return 128 end,
    tag = function(c) return c.out_half == 1 and "half" or "f32" end,
    inst = function(c) return { OUT_HALF = c.out_half } end,
    rankless = true,
  },
}

-- The kernels one LoRA layer of (dtype, rank, dropout) launches, one per slot, in a fixed order. A slot is a
-- situation of runtime/ops/lora.c (C's enum lg_layer_slot names the same slots): the generator decides
-- which configuration serves it, lora.c only says which situation it is in and adds its tuned tiles.
--   da_dx_tail  dX wanted and dS sits in dY's tail: without dropout the extended-K GEMM [dY|dS]·[W;A] gives
--               all of dX (no fuse); with it the mask sits between dS·A and dX, so the dA pass adds it
--   da_dx       dX wanted, dS apart: the dA pass adds dS·A (fused)
--   da_no_dx    no dX: the dA pass alone
-- precompile = false: `loragen gen` leaves the slot out (generated on first use instead); da_no_dx serves
-- only a layer whose input needs no gradient, and without dropout it is da_dx_tail's kernel anyway.
function M.layer_slots(dtype, rank, dropout)
  local drop = dropout > 0 and 1 or 0
  return {
    { slot = "down", cfg = { op = "down", dtype = dtype, rank = rank, drop = drop } },
    { slot = "dy", cfg = { op = "dy", dtype = dtype, rank = rank } },
    { slot = "reduce_da", cfg = { op = "reduce", dtype = dtype, out_half = 0 } },
    { slot = "reduce_ds_db", cfg = { op = "reduce", dtype = dtype, out_half = 1 } },
    { slot = "da_dx_tail", cfg = { op = "da", dtype = dtype, rank = rank, fuse = drop, drop = drop } },
    { slot = "da_dx", cfg = { op = "da", dtype = dtype, rank = rank, fuse = 1, drop = drop } },
    { slot = "da_no_dx", cfg = { op = "da", dtype = dtype, rank = rank, fuse = 0, drop = drop },
      precompile = false },
  }
end

return M
