// Decoder-block configs and random weights for the C++ tests and benchmarks (CPU and CUDA spans alike).
#pragma once
#include <cmath>
#include <random>
#include <vector>

#include "../src/core/block.h"

namespace bmrt_test {

using bmrt::BlockConfig;
using bmrt::LayerTensor;

// A block shape with the usual rotary frequencies (base 10000).
inline BlockConfig make_config(int hidden, int inter, int heads, int kv_heads, int head_dim, int window = 0, bool biases = false) {
  BlockConfig c;
  c.hidden = hidden;
  c.intermediate = inter;
  c.heads = heads;
  c.kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.sliding_window = window;
  c.attention_bias = c.mlp_bias = biases;
  for (int j = 0; j < head_dim / 2; j++) c.rope_inverse_frequencies.push_back(std::pow(10000.0f, -2.0f * j / head_dim));
  return c;
}

struct Weights {
  std::vector<std::vector<float>> tensors;  // indexed by LayerTensor
};

inline Weights random_layer(const BlockConfig& c, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t h = c.hidden, inter = c.intermediate, q = int64_t(c.heads) * c.head_dim, kv = int64_t(c.kv_heads) * c.head_dim;
  auto fill = [&](int64_t n, float scale, float offset = 0) {
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = offset + scale * normal(rng);
    return v;
  };
  Weights w;
  w.tensors.resize(static_cast<size_t>(LayerTensor::Count));
  auto set = [&](LayerTensor t, std::vector<float> v) { w.tensors[static_cast<int>(t)] = std::move(v); };
  set(LayerTensor::InputNorm, fill(h, 0.1f, 1));
  set(LayerTensor::Q, fill(q * h, 1 / std::sqrt(float(h))));
  set(LayerTensor::K, fill(kv * h, 1 / std::sqrt(float(h))));
  set(LayerTensor::V, fill(kv * h, 1 / std::sqrt(float(h))));
  set(LayerTensor::O, fill(h * q, 1 / std::sqrt(float(q))));
  set(LayerTensor::PostAttentionNorm, fill(h, 0.1f, 1));
  set(LayerTensor::Gate, fill(inter * h, 1 / std::sqrt(float(h))));
  set(LayerTensor::Up, fill(inter * h, 1 / std::sqrt(float(h))));
  set(LayerTensor::Down, fill(h * inter, 1 / std::sqrt(float(inter))));
  if (c.attention_bias) {
    set(LayerTensor::QBias, fill(q, 0.1f));
    set(LayerTensor::KBias, fill(kv, 0.1f));
    set(LayerTensor::VBias, fill(kv, 0.1f));
    set(LayerTensor::OBias, fill(h, 0.1f));
  }
  if (c.mlp_bias) {
    set(LayerTensor::GateBias, fill(inter, 0.1f));
    set(LayerTensor::UpBias, fill(inter, 0.1f));
    set(LayerTensor::DownBias, fill(h, 0.1f));
  }
  return w;
}

}  // namespace bmrt_test
