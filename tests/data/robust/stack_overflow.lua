-- One concern: a function that calls itself without end.
local function f(n) return f(n + 1) + 1 end
local x = f(1)
return { name = "x", lora = { rank = 8, alpha = 16 }, linears = { { name = "a", in_features = 64, out_features = 64 } } }
