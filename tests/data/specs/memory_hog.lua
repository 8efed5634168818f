-- One concern: the file keeps 640 MiB alive (40 strings of 16 MiB); the sandbox's memory cap must refuse it,
-- not the machine.
local keep = {}
for i = 1, 40 do keep[i] = string.rep(string.char(64 + i), 2 ^ 23) .. string.rep("y", 2 ^ 23) end
return { name = "bad-memory", lora = { rank = 8, alpha = 16 }, linears = { { name = "a", in_features = 64, out_features = 64 } } }
