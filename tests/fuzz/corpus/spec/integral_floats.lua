-- Valid: sizes written as integral floats (2^7, 16.0) are read as the integers they stand for.
return {
  name = "integral-floats",
  linears = {
    { name = "proj", in_features = 2^7, out_features = 256.0 },
  },
  lora = { rank = 2^4, alpha = 32 },
  dtype = "fp16",
  archs = { "sm_90" },
}
