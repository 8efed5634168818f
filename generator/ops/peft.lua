-- ops/peft.lua: the unfused baseline (LoRA as PEFT runs it), an op family like FusedLoRA's so that
-- bench/bench_lora.c asks the generator for it and test_gen compiles it for every arch. Four elementwise
-- kernels from templates/peft/peft_ref.cuh, instantiated by templates/peft/peft.inst: no rank, no switches,
-- only the dtype. They take their arguments one by one (cuLaunchKernel's parameter list), not one block.
local M = {}

M.INST = "templates/peft/peft.inst"

-- Op names in the order C's enum lg_kernel_op lists them.
M.ORDER = { "peft_dropout", "peft_dropout_bwd", "peft_axpy", "peft_scale" }

M.OPS = {}
for _, name in ipairs(M.ORDER) do
  M.OPS[name] = {
    template = "templates/peft/peft_ref.cuh",
    params = {},
    defaults = {},
    rankless = true,
    threads = function() return 256 end,
    tag = function() return "" end,
    inst = function() return {} end,
  }
end

return M
