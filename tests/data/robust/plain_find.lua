-- One concern: a plain search (no pattern) that compares a long needle at every position.
local hay = string.rep("a", 1000000)
local at = hay:find(string.rep("a", 500000) .. "b", 1, true)
return { name = "x", lora = { rank = 8, alpha = 16 }, linears = { { name = "a", in_features = 64, out_features = 64 } } }
