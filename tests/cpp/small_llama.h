#pragma once
// A small random-weight Llama with Llama 2's vocabulary (32000), so Meta's real tokenizer can drive it in tests.
#include <kclip/llama.h>

#include <torch/torch.h>

namespace kclip::testing {

inline Llama small_random_llama() {
  torch::manual_seed(0);
  LlamaConfig config;  // vocab_size 32000 by default
  config.hidden_size = 16;
  config.intermediate_size = 24;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.max_position_embeddings = 64;
  return Llama(config);
}

}  // namespace kclip::testing
