-- A tiny Llama-shaped model for tests and CPU end-to-end runs: every kernel path at a size a CPU handles.
return {
  name = "tiny",
  model = {
    hidden_size = 128,
    intermediate_size = 320,
    num_attention_heads = 4,
    num_key_value_heads = 2,
    head_dim = 32,
    num_hidden_layers = 2,
    vocab_size = 512,
  },
  lora = {
    rank = 8,
    alpha = 16,
    dropout = 0.1,
  },
  dtype = "bf16",
  archs = { "sm_80", "sm_89", "sm_90" },
  tokens = 77,
}
