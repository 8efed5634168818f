-- One concern: 150 errors are reported as the first 100 and a count.
local lora = { rank = 8, alpha = 16 }
for i = 1, 150 do lora["k" .. i] = i end
return { name = "x", lora = lora, linears = { { name = "a", in_features = 64, out_features = 64 } } }
