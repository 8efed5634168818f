-- One concern: the file asks for 512 MiB; the sandbox's memory cap must refuse it, not the machine.
local s = string.rep("x", 2 ^ 29)
return { name = "bad-memory", lora = { rank = 8, alpha = 16 }, linears = { { name = "a", in_features = 64, out_features = 64 } } }
