// Reading and checking a block's tensors, shared by the CPU and CUDA spans.
#include "block.h"

#include <cstring>
#include <stdexcept>

#include "kernels.h"
#include "platform.h"

namespace bmrt {

const char* tensor_suffix(LayerTensor t) {
  static const char* names[] = {
      "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
      "self_attn.o_proj.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
      "mlp.down_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
      "self_attn.o_proj.bias", "mlp.gate_proj.bias", "mlp.up_proj.bias", "mlp.down_proj.bias"};
  return names[static_cast<int>(t)];
}

size_t source_element_bytes(SourceDType d) { return d == SourceDType::F32 ? 4 : 2; }

// Raw checkpoint values to fp32.
static std::vector<float> to_float(const std::vector<uint8_t>& raw, SourceDType dtype) {
  size_t count = raw.size() / source_element_bytes(dtype);
  std::vector<float> out(count);
  if (dtype == SourceDType::F32) {
    std::memcpy(out.data(), raw.data(), count * 4);
  } else {
    const uint8_t* p = raw.data();
    for (size_t i = 0; i < count; i++) {
      uint16_t bits;
      std::memcpy(&bits, p + 2 * i, 2);
      out[i] = dtype == SourceDType::BF16 ? bf16_to_float(bits) : half_to_float(bits);
    }
  }
  return out;
}

std::vector<float> read_tensor(const TensorSource& s, const char* name) {
  if (s.bytes % source_element_bytes(s.dtype) != 0)
    throw std::invalid_argument(s.path + ": tensor " + name + " has a byte size that is not a whole number of values");
  std::vector<uint8_t> raw(s.bytes);
  try {
    read_file_range(s.path, s.offset, s.bytes, raw.data());
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(e.what()) + " while reading tensor " + name);
  }
  return to_float(raw, s.dtype);
}

std::vector<std::vector<float>> read_layer_tensors(const std::vector<TensorSource>& sources) {
  if (sources.size() != static_cast<size_t>(LayerTensor::Count)) throw std::invalid_argument("a block needs one source per LayerTensor");
  std::vector<std::vector<float>> tensors(sources.size());
  for (size_t t = 0; t < sources.size(); t++) {
    if (sources[t].bytes == 0) continue;  // absent (a bias the model does not have)
    tensors[t] = read_tensor(sources[t], tensor_suffix(static_cast<LayerTensor>(t)));
  }
  return tensors;
}

TensorShape layer_tensor_shape(const BlockConfig& c, LayerTensor t) {
  const int64_t h = c.hidden, inter = c.intermediate, q_dim = int64_t(c.heads) * c.head_dim, kv_dim = int64_t(c.kv_heads) * c.head_dim;
  switch (t) {
    case LayerTensor::InputNorm:
    case LayerTensor::PostAttentionNorm: return {h, 1, true};
    case LayerTensor::Q: return {q_dim, h, true};
    case LayerTensor::K:
    case LayerTensor::V: return {kv_dim, h, true};
    case LayerTensor::O: return {h, q_dim, true};
    case LayerTensor::Gate:
    case LayerTensor::Up: return {inter, h, true};
    case LayerTensor::Down: return {h, inter, true};
    case LayerTensor::QBias: return {q_dim, 1, c.attention_bias};
    case LayerTensor::KBias:
    case LayerTensor::VBias: return {kv_dim, 1, c.attention_bias};
    case LayerTensor::OBias: return {h, 1, c.attention_bias};
    case LayerTensor::GateBias:
    case LayerTensor::UpBias: return {inter, 1, c.mlp_bias};
    case LayerTensor::DownBias: return {h, 1, c.mlp_bias};
    case LayerTensor::Count: break;
  }
  return {};
}

void check_layer_tensors(const BlockConfig& c, int layer, const std::vector<std::vector<float>>& tensors) {
  if (tensors.size() != static_cast<size_t>(LayerTensor::Count)) throw std::invalid_argument("a block needs one entry per LayerTensor");
  for (int t = 0; t < static_cast<int>(LayerTensor::Count); t++) {
    const size_t expected = static_cast<size_t>(layer_tensor_shape(c, static_cast<LayerTensor>(t)).size());
    if (tensors[t].size() != expected)
      throw std::invalid_argument(std::string("tensor ") + tensor_suffix(static_cast<LayerTensor>(t)) + " of block " +
                                  std::to_string(layer) + " has " + std::to_string(tensors[t].size()) + " values, expected " +
                                  std::to_string(expected));
  }
}

void check_block_config(const BlockConfig& c) {
  if (c.hidden <= 0 || c.intermediate <= 0 || c.heads <= 0 || c.kv_heads <= 0 || c.head_dim <= 0 || c.head_dim % 2 != 0)
    throw std::invalid_argument("block config needs positive hidden, intermediate, heads, kv_heads and an even head_dim");
  if (c.heads % c.kv_heads != 0) throw std::invalid_argument("heads must be a multiple of kv_heads");
  if (static_cast<int>(c.rope_inverse_frequencies.size()) != c.head_dim / 2)
    throw std::invalid_argument("rope_inverse_frequencies must hold head_dim / 2 values");
}

}  // namespace bmrt
