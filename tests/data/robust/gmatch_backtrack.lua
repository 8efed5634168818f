-- One concern: string.gmatch, each step a backtracking match.
for m in string.rep("a", 5000):gmatch("a-a-a-a-b") do
end
return { name = "x", lora = { rank = 8, alpha = 16 }, linears = { { name = "a", in_features = 64, out_features = 64 } } }
