-- One concern: an explicit linear whose out_features (100) is not a multiple of 64.
return {
  name = "bad-dims",
  linears = {
    { name = "proj_a", in_features = 128, out_features = 128 },
    {
      name = "proj_b",
      in_features = 128,
      out_features = 100,
    },
  },
  lora = { rank = 8, alpha = 16 },
}
