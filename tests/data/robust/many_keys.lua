-- One concern: a table with far more keys than its fields (validating a million took minutes).
local lora = { rank = 8, alpha = 16 }
for i = 1, 5000 do lora["k" .. i] = i end
return { name = "x", lora = lora, linears = { { name = "a", in_features = 64, out_features = 64 } } }
