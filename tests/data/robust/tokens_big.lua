-- One concern: an integer beyond what the C int holds.
return {
  name = "x",
  tokens = 2 ^ 40,
  lora = { rank = 8, alpha = 16 },
  linears = { { name = "a", in_features = 64, out_features = 64 } },
}
