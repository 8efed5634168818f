-- One concern: string.find with a pattern that backtracks; the sandbox's work budget must stop it.
local subject = string.rep("a", 30)
local found = string.find(subject, string.rep("a-", 30) .. "b")
return { name = "x", lora = { rank = 8, alpha = 16 }, linears = { { name = "a", in_features = 64, out_features = 64 } } }
