// What a decoder block is, for every implementation of the block API (CPU and CUDA): its shape,
// the tensors it holds, where their bytes live in a checkpoint, and reading and checking them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace bmrt {

struct BlockConfig {
  int hidden = 0;
  int intermediate = 0;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  float rms_norm_eps = 1e-5f;
  // Rotary inverse frequencies (head_dim / 2 of them), scaling already applied by the caller.
  std::vector<float> rope_inverse_frequencies;
  int sliding_window = 0;  // 0: full causal attention
  bool attention_bias = false;  // q, k, v and o projections have biases
  bool mlp_bias = false;        // gate, up and down projections have biases
};

// Storage dtypes of checkpoint tensors.
enum class SourceDType { F32, F16, BF16 };

// Where a tensor's raw little-endian bytes live in a file (a safetensors data range).
struct TensorSource {
  std::string path;
  uint64_t offset = 0;
  uint64_t bytes = 0;
  SourceDType dtype = SourceDType::F32;
};

// The tensors of one decoder block, by their Hugging Face names' suffixes.
enum class LayerTensor {
  InputNorm, Q, K, V, O, PostAttentionNorm, Gate, Up, Down,
  QBias, KBias, VBias, OBias, GateBias, UpBias, DownBias, Count
};

// A tensor's shape in a block of `config`: [rows, cols] (vectors have cols 1); `present` is false
// for the biases the config does not have.
struct TensorShape {
  int64_t rows = 0, cols = 0;
  bool present = false;
  int64_t size() const { return present ? rows * cols : 0; }
};
TensorShape layer_tensor_shape(const BlockConfig& config, LayerTensor t);

// Bytes of one value of a checkpoint dtype.
size_t source_element_bytes(SourceDType d);

// Reads one tensor and converts it to fp32; errors name the file and `name`.
std::vector<float> read_tensor(const TensorSource& source, const char* name);

// Reads every present source (bytes 0: absent) and converts it to fp32. Errors name the file and tensor.
std::vector<std::vector<float>> read_layer_tensors(const std::vector<TensorSource>& sources);

// Throws std::invalid_argument unless `tensors` (indexed by LayerTensor) has exactly the sizes
// block `layer` of `config` needs (biases only when the config has them).
void check_layer_tensors(const BlockConfig& config, int layer, const std::vector<std::vector<float>>& tensors);

// The tensor's Hugging Face name suffix, e.g. "self_attn.q_proj.weight".
const char* tensor_suffix(LayerTensor t);

// Throws std::invalid_argument unless the config describes a block the kernels can run.
void check_block_config(const BlockConfig& config);

}  // namespace bmrt
