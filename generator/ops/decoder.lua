-- ops/decoder.lua: the decoder op family: everything a Llama/Qwen2 layer needs besides the LoRA linear layers
-- and attention. Templates in templates/decoder/, instantiations in templates/decoder/decoder.inst, argument
-- blocks in templates/common/lg_decoder_args.h (shared with runtime/ops/dec_*.c).
--
--   norm_fwd, norm_bwd          fused residual add + RMSNorm, one row per block in registers (vpt vectors of 8
--                               per thread: k <= 1024·vpt)
--   norm_lora_fwd               the same forward on 16-row tiles with S of up to 3 projections reading y (q/k/v;
--                               gate/up) computed in lora_down's exact arithmetic (ranked: rank = the largest)
--   norm_lora_bwd               the backward with the masked LoRA dX correction of those projections folded in
--   rope                        rotary embedding, forward and backward (runtime sign), in place on q and k
--   swiglu_fwd, swiglu_bwd      silu(g)·u and its gradient
--   swiglu_lora_fwd             the forward with down_proj's S folded in (lora_down's arithmetic)
--   embed                       embedding gather
--   xent                        softmax + loss + dlogits of one chunk of LM-head logits, in place
--   adamw_sq, adamw_fin, adamw_upd   AdamW over one adapter's multi-tensor table (norm partials, finish, update)
--
-- Each op lists its template (after the family's headers: the argument blocks and shared helpers), its switches with their
-- allowed values, the checks that prune impossible configurations, threads, name tag and instantiation.
local lora = require("generator.ops.lora")

local M = {}

M.INST = "templates/decoder/decoder.inst"

-- op.headers: emitted after templates/common/ and before the op's template (generator/kernels.lua)
local HEADERS = { "templates/common/lg_decoder_args.h", "templates/decoder/dec_common.cuh" }
local function files(t) return "templates/decoder/" .. t end

-- The K split of the S-computing kernels must be lora_down's, so that S is its output bit for bit: its
-- default for the rank (generator/ops/lora.lua), one rule.
local function wk_of(c) return lora.OPS.down.default_for({ rank = c.rank }).wk end

-- MMA accumulators of the S / correction kernels: nlora · rank / 2 registers per thread.
local ACC_RANK_MAX = 192
local function acc_check(c)
  if c.nlora * c.rank > ACC_RANK_MAX then
    return ("nlora*rank = %d exceeds %d (the accumulators would spill): compute S with FusedLoRA's own kernels")
      :format(c.nlora * c.rank, ACC_RANK_MAX)
  end
end
-- Two blocks of 256 threads per SM when the accumulators leave room (128 registers each).
local function minb2(c) return c.nlora * c.rank <= 96 and ", 2" or "" end

local VPT = { 1, 2, 4, 8, 16 }

local function plain(template, threads)
  return {
    template = files(template), headers = HEADERS, params = {}, defaults = {}, rankless = true,
    threads = function() return threads end, tag = function() return "" end, inst = function() return {} end,
  }
end

-- Op names in the order C's enum lg_kernel_op lists them.
M.ORDER = { "norm_fwd", "norm_bwd", "norm_lora_fwd", "norm_lora_bwd", "rope", "swiglu_fwd", "swiglu_bwd",
            "swiglu_lora_fwd", "embed", "xent", "adamw_sq", "adamw_fin", "adamw_upd" }

M.OPS = {
  norm_fwd = {
    template = files("norm_row.cuh"), headers = HEADERS, params = { vpt = VPT }, defaults = { vpt = 4 }, rankless = true,
    threads = function() return 128 end,
    tag = function(c) return "v" .. c.vpt end,
    inst = function(c) return { VPT = c.vpt } end,
  },
  norm_bwd = {
    template = files("norm_row.cuh"), headers = HEADERS, params = { vpt = VPT }, defaults = { vpt = 4 }, rankless = true,
    threads = function() return 128 end,
    tag = function(c) return "v" .. c.vpt end,
    inst = function(c) return { VPT = c.vpt } end,
  },
  norm_lora_fwd = {
    template = files("norm_tile.cuh"), headers = HEADERS,
    params = { nlora = { 1, 2, 3 }, drop = { 0, 1 } }, defaults = { nlora = 1, drop = 0 },
    threads = function(c) return 32 * wk_of(c) end,
    tag = function(c) return ("n%dw%d%s"):format(c.nlora, wk_of(c), c.drop == 1 and "_drop" or "") end,
    inst = function(c)
      return { R = c.rank, NB = c.nlora, WK = wk_of(c), DROP = c.drop, MINB = wk_of(c) == 8 and minb2(c) or "" }
    end,
    check = acc_check,
  },
  norm_lora_bwd = {
    template = files("norm_tile.cuh"), headers = HEADERS,
    params = { nlora = { 1, 2, 3 }, drop = { 0, 1 } }, defaults = { nlora = 1, drop = 0 },
    threads = function() return 256 end,
    tag = function(c) return ("n%d%s"):format(c.nlora, c.drop == 1 and "_drop" or "") end,
    inst = function(c) return { R = c.rank, NB = c.nlora, DROP = c.drop, MINB = minb2(c) } end,
    check = acc_check,
  },
  rope = plain("rope.cuh", 256),
  swiglu_fwd = plain("swiglu.cuh", 256),
  swiglu_bwd = plain("swiglu.cuh", 256),
  swiglu_lora_fwd = {
    template = files("swiglu.cuh"), headers = HEADERS, params = { drop = { 0, 1 } }, defaults = { drop = 0 },
    threads = function(c) return 32 * wk_of(c) end,
    tag = function(c) return ("w%d%s"):format(wk_of(c), c.drop == 1 and "_drop" or "") end,
    inst = function(c)
      return { R = c.rank, WK = wk_of(c), DROP = c.drop, MINB = (wk_of(c) == 8 and c.rank <= 64) and ", 2" or "" }
    end,
  },
  embed = plain("embed.cuh", 256),
  xent = plain("xent.cuh", 512),
  adamw_sq = plain("adamw.cuh", 256),
  adamw_fin = plain("adamw.cuh", 256),
  adamw_upd = plain("adamw.cuh", 256),
}

-- Where the masked LoRA dX correction keep·mask ⊙ (dS·A) of the projections reading a norm's output goes
-- (docs/design.md, "extended K"): "gemm" when the extended-K dX GEMM [dY|dS]·[W;A] already gives it (no
-- dropout and dS in dY's tail), else "norm" when a norm backward reads that dX next (it folds the correction
-- into its own pass: no extra trip over dX), else "da" (FusedLoRA's dA pass adds it, reading and writing dX).
function M.dx_correction(dropout, ds_in_tail, norm_follows)
  if dropout == 0 and ds_in_tail then return "gemm" end
  if norm_follows then return "norm" end
  return "da"
end

return M
