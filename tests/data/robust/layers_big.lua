-- One concern: a layer count no decoder has (it was cast to int).
return {
  name = "x",
  model = { hidden_size = 4096, intermediate_size = 4096, num_attention_heads = 32, num_key_value_heads = 8,
    num_hidden_layers = 2 ^ 33 },
  lora = { rank = 8, alpha = 16 },
}
