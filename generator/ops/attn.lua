-- ops/attn.lua: the flash-attention family (templates/attn/): causal attention over packed variable-length
-- samples with GQA, forward and backward, for runtime/ops/attention.c.
--
--   attn_sched     the block table of a launch (longest work first), built on the device from cu_seqlens
--   attn_fwd       O and LSE per query block and q head
--   attn_bwd_pre   D = rowsum(dO ∘ O)
--   attn_bwd_dkv   dK, dV per key block and KV head over its GQA group (atomic = 1: also dQ by red.add)
--   attn_bwd_dq    the deterministic dQ pass, per query block and q head
--   attn_dq_cvt    dQ = scale·dq_acc after the atomic pass
--
-- Tile parameters: hd head dim; bm query rows per block; bn keys per block (attn_bwd_dkv: 16 per warp, so
-- bn = 16·nw is implied); nw warps; st cp.async stages (1 = load, wait, compute). Register allocation is
-- left to the compiler (these kernels want all 255 registers at one or two blocks per SM). The checks prune what cannot work on any
-- target: a warp owns 16 or 32 query rows, fp32 accumulators at most 192 registers per thread, dynamic shared
-- memory at most 227 KiB (sm_90; the launcher picks smaller tiles where the device allows less, and the
-- context refuses a kernel the device cannot run). Defaults fit every target (<= 99 KiB, sm_89).
local M = {}

M.INST = "templates/attn/attn.inst"

local HEADERS = { "templates/common/lg_attn_args.h", "templates/attn/attn_ptx.cuh", "templates/attn/attn_util.cuh" }

M.ORDER = { "attn_sched", "attn_fwd", "attn_bwd_pre", "attn_bwd_dkv", "attn_bwd_dq", "attn_dq_cvt" }

local SMEM_MAX = 227 * 1024
local ACC_MAX = 192 -- fp32 accumulator registers per thread
local PAD = 8

local function tile_bytes(rows, cols) return rows * (cols + PAD) * 2 end

-- Shared memory of each tiled kernel, as its template's struct lays it out (the .inst's sizeof is the truth
-- the runtime reads; this copy only prunes).
local function fwd_smem(c) return tile_bytes(c.bm, c.hd) + 2 * c.st * tile_bytes(c.bn, c.hd) end
local function dkv_smem(c)
  local bn = 16 * c.nw
  return 2 * tile_bytes(bn, c.hd) + 2 * c.st * tile_bytes(c.bm, c.hd) + 2 * c.st * c.bm * 4 +
         (c.atomic == 1 and tile_bytes(bn, c.bm) or tile_bytes(1, c.bm))
end
local function dq_smem(c) return 2 * tile_bytes(c.bm, c.hd) + 2 * c.st * tile_bytes(c.bn, c.hd) + 2 * c.bm * 4 end

-- A warp owns bm / nw query rows: one or two 16-row m-tiles.
local function rows_per_warp_ok(c)
  local mt = c.bm // (16 * c.nw)
  if mt < 1 or mt > 2 or mt * 16 * c.nw ~= c.bm then
    return ("bm = %d over %d warps must give each warp 16 or 32 rows"):format(c.bm, c.nw)
  end
end

local function smem_ok(bytes)
  if bytes > SMEM_MAX then return ("needs %d bytes of shared memory (> %d)"):format(bytes, SMEM_MAX) end
end

local function tiled_tag(c, extra)
  return ("d%d_m%dn%dw%ds%d%s"):format(c.hd, c.bm, c.bn or 16 * c.nw, c.nw, c.st, extra or "")
end

M.OPS = {
  attn_sched = {
    template = "templates/attn/attn_sched.cuh",
    headers = HEADERS,
    params = {},
    defaults = {},
    rankless = true,
    threads = function() return 128 end,
    tag = function() return "" end,
    inst = function() return {} end,
  },
  attn_fwd = {
    template = "templates/attn/attn_fwd.cuh",
    headers = HEADERS,
    params = { hd = { 64, 128 }, bm = { 64, 128 }, bn = { 64, 128 }, nw = { 4, 8 }, st = { 1, 2 } },
    defaults = { hd = 128, bm = 64, bn = 64, nw = 4, st = 2 },
    rankless = true,
    threads = function(c) return 32 * c.nw end,
    tag = function(c) return tiled_tag(c) end,
    inst = function(c)
      return { HD = c.hd, BM = c.bm, BN = c.bn, NW = c.nw, ST = c.st, }
    end,
    check = function(c)
      local why = rows_per_warp_ok(c)
      if why then return why end
      local mt = c.bm // (16 * c.nw)
      if mt * (c.hd // 2 + c.bn // 2) > ACC_MAX then
        return ("%d rows x (head dim %d + %d keys) per warp exceed %d accumulator registers"):format(16 * mt,
          c.hd, c.bn, ACC_MAX)
      end
      return smem_ok(fwd_smem(c))
    end,
  },
  attn_bwd_pre = {
    template = "templates/attn/attn_bwd.cuh",
    headers = HEADERS,
    params = { hd = { 64, 128 } },
    defaults = { hd = 128 },
    rankless = true,
    threads = function() return 256 end,
    tag = function(c) return ("d%d"):format(c.hd) end,
    inst = function(c) return { HD = c.hd } end,
  },
  attn_bwd_dkv = {
    template = "templates/attn/attn_bwd.cuh",
    headers = HEADERS,
    params = { hd = { 64, 128 }, bm = { 64, 128 }, nw = { 4, 8 }, st = { 1, 2 }, atomic = { 0, 1 } },
    defaults = { hd = 128, bm = 64, nw = 4, st = 1, atomic = 0 },
    rankless = true,
    threads = function(c) return 32 * c.nw end,
    tag = function(c) return tiled_tag(c, c.atomic == 1 and "_atomic" or "_det") end,
    inst = function(c)
      return { HD = c.hd, BM = c.bm, BN = 16 * c.nw, NW = c.nw, ST = c.st, ATOMIC = c.atomic,
               }
    end,
    check = function(c)
      -- dK and dV (head dim each) plus Sᵀ and dPᵀ (bm each) per 16 keys
      if c.hd + c.bm > ACC_MAX then
        return ("head dim %d + %d queries per block exceed %d accumulator registers"):format(c.hd, c.bm, ACC_MAX)
      end
      return smem_ok(dkv_smem(c))
    end,
  },
  attn_bwd_dq = {
    template = "templates/attn/attn_bwd.cuh",
    headers = HEADERS,
    params = { hd = { 64, 128 }, bm = { 64, 128 }, bn = { 64, 128 }, nw = { 4, 8 }, st = { 1, 2 } },
    defaults = { hd = 128, bm = 64, bn = 64, nw = 4, st = 1 },
    rankless = true,
    threads = function(c) return 32 * c.nw end,
    tag = function(c) return tiled_tag(c) end,
    inst = function(c)
      return { HD = c.hd, BM = c.bm, BN = c.bn, NW = c.nw, ST = c.st, }
    end,
    check = function(c)
      local why = rows_per_warp_ok(c)
      if why then return why end
      local mt = c.bm // (16 * c.nw)
      -- dQ (head dim / 2) plus S and dP (keys / 2 each) per 16 rows
      if mt * (c.hd // 2 + c.bn) > ACC_MAX then
        return ("%d rows x (head dim %d + 2 x %d keys) per warp exceed %d accumulator registers"):format(16 * mt,
          c.hd, c.bn, ACC_MAX)
      end
      return smem_ok(dq_smem(c))
    end,
  },
  attn_dq_cvt = {
    template = "templates/attn/attn_bwd.cuh",
    headers = HEADERS,
    params = { hd = { 64, 128 } },
    defaults = { hd = 128 },
    rankless = true,
    threads = function() return 256 end,
    tag = function(c) return ("d%d"):format(c.hd) end,
    inst = function(c) return { HD = c.hd } end,
  },
}

-- The shared-memory formulas above, for the tuner's pruning (generator/resources.lua).
M.SMEM = { attn_fwd = fwd_smem, attn_bwd_dkv = dkv_smem, attn_bwd_dq = dq_smem }

return M
