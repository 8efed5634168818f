-- One concern: string.gsub with a backtracking pattern over a long subject.
local s = string.rep("x", 3000)
local out = s:gsub("x-x-x-x-y", "")
return { name = "x", lora = { rank = 8, alpha = 16 }, linears = { { name = "a", in_features = 64, out_features = 64 } } }
