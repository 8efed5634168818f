-- One concern: evaluation past the CPU-time deadline (the test sets LORAGEN_SANDBOX_SECONDS = 0.05).
local n = 0
for i = 1, 4e7 do n = n + 1 end
return { name = "x", lora = { rank = 8, alpha = 16 }, linears = { { name = "a", in_features = 64, out_features = 64 } } }
