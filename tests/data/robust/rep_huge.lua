-- One concern: string.rep asked for a gigabyte.
local s = string.rep("x", 1e9)
return { name = "x", lora = { rank = 8, alpha = 16 }, linears = { { name = "a", in_features = 64, out_features = 64 } } }
