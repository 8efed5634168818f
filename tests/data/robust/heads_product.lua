-- One concern: heads x head_dim (q_proj's width) past what the kernels take, though each is in range.
return {
  name = "x",
  model = { hidden_size = 4096, intermediate_size = 4096, num_attention_heads = 1024,
    num_key_value_heads = 1024, head_dim = 1024, num_hidden_layers = 2 },
  lora = { rank = 8, alpha = 16 },
}
