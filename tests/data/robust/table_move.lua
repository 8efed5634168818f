-- One concern: table.move over a range of 10^15 elements, all in C.

table.move({}, 1, 1e15, 2)
return { name = "x", lora = { rank = 8, alpha = 16 }, linears = { { name = "a", in_features = 64, out_features = 64 } } }
