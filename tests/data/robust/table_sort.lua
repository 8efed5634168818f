-- One concern: sorting a big table again and again (each sort is one C call).
local t = {}
for i = 1, 100000 do t[i] = -i end
for k = 1, 1000 do table.sort(t) end
return { name = "x", lora = { rank = 8, alpha = 16 }, linears = { { name = "a", in_features = 64, out_features = 64 } } }
