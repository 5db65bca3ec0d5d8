// Dummy weights on the CPU (see dummy.h).
#include "dummy.h"

#include <algorithm>
#include <cmath>

#include "kernels.h"
#include "thread_pool.h"

namespace bmrt {

namespace {

// sqrt(3 / fan_in) rounded once to float (the JS side computes the same double and rounds it).
float uniform_scale(double fan_in) { return static_cast<float>(std::sqrt(3.0 / fan_in)); }

}  // namespace

DummyInit dummy_init(const BlockConfig& c, LayerTensor t) {
  const double h = c.hidden, q = double(c.heads) * c.head_dim, inter = c.intermediate;
  switch (t) {
    case LayerTensor::InputNorm:
    case LayerTensor::PostAttentionNorm: return {0.1f, 1.0f};
    case LayerTensor::Q:
    case LayerTensor::K:
    case LayerTensor::V:
    case LayerTensor::Gate:
    case LayerTensor::Up: return {uniform_scale(h), 0.0f};
    case LayerTensor::O: return {uniform_scale(q), 0.0f};
    case LayerTensor::Down: return {uniform_scale(inter), 0.0f};
    default: return {0.1f, 0.0f};  // biases
  }
}

DummyInit dummy_init(HeadTensor t, int hidden) {
  switch (t) {
    case HeadTensor::Embeddings: return {uniform_scale(1.0), 0.0f};
    case HeadTensor::FinalNorm: return {0.1f, 1.0f};
    case HeadTensor::LmHead: return {uniform_scale(hidden), 0.0f};
  }
  return {};
}

void fill_dummy(uint32_t key, DummyInit init, float* out, int64_t count, ThreadPool& pool) {
  const int64_t chunk = 1 << 16;
  const int tasks = static_cast<int>((count + chunk - 1) / chunk);
  pool.run(tasks, [&](int task, int) {
    const int64_t end = std::min(count, (task + 1) * chunk);
    for (int64_t i = int64_t(task) * chunk; i < end; i++) out[i] = dummy_value(key, static_cast<uint64_t>(i), init);
  });
}

void fill_dummy_bytes(uint32_t key, DummyInit init, SourceDType dtype, void* out, int64_t count, ThreadPool& pool) {
  const int64_t chunk = 1 << 16;
  const int tasks = static_cast<int>((count + chunk - 1) / chunk);
  pool.run(tasks, [&](int task, int) {
    const int64_t end = std::min(count, (task + 1) * chunk);
    for (int64_t i = int64_t(task) * chunk; i < end; i++) {
      const float v = dummy_value(key, static_cast<uint64_t>(i), init);
      if (dtype == SourceDType::F32) static_cast<float*>(out)[i] = v;
      else static_cast<uint16_t*>(out)[i] = dtype == SourceDType::BF16 ? float_to_bf16(v) : float_to_half(v);
    }
  });
}

std::vector<std::vector<float>> dummy_layer_tensors(const BlockConfig& c, int block, uint32_t seed, ThreadPool& pool) {
  std::vector<std::vector<float>> tensors(static_cast<size_t>(LayerTensor::Count));
  for (int t = 0; t < static_cast<int>(LayerTensor::Count); t++) {
    const LayerTensor which = static_cast<LayerTensor>(t);
    const int64_t size = layer_tensor_shape(c, which).size();
    tensors[t].resize(static_cast<size_t>(size));
    fill_dummy(dummy_key(seed, dummy_stream(block, which)), dummy_init(c, which), tensors[t].data(), size, pool);
  }
  return tensors;
}

}  // namespace bmrt
