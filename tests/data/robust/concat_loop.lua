-- One concern: a loop that builds and drops 16 MiB strings: little live memory, endless allocation.
local s = string.rep("x", 2 ^ 24)
for i = 1, 1000000 do local t = s .. s end
return { name = "x", lora = { rank = 8, alpha = 16 }, linears = { { name = "a", in_features = 64, out_features = 64 } } }
