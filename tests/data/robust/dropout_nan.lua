-- One concern: NaN (0/0) where a number is expected.
return {
  name = "x",
  lora = { rank = 8, alpha = 16,
    dropout = 0 / 0 },
  linears = { { name = "a", in_features = 64, out_features = 64 } },
}
