// A span of Llama-family decoder blocks [start, end) with per-session KV caches: the CPU
// implementation of the block API. Plain C++ (no N-API); the binding wraps it, and a CUDA
// implementation will offer the same class interface.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>
#include "kernels.h"

namespace bmrt {

// Thrown when a session's KV cache does not fit the span's budget: the client should go elsewhere.
class CacheFullError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

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

// One session's step inside a batch: run `tokens` hidden rows at `position`.
struct Step {
  int session = 0;
  int64_t position = -1;  // -1: the session's current length
  int64_t tokens = 0;
  float* hidden = nullptr;  // [tokens, hidden] in, overwritten with the output
};

class BlockSpan {
 public:
  // max_cache_tokens: cache tokens per block (Petals' attn_cache_tokens; 0: unlimited). The span's
  // budget is max_cache_tokens × layers() layer-tokens, and a session of max_length tokens over k
  // layers reserves max_length × k of it, so sessions over fewer blocks take proportionally less.
  BlockSpan(BlockConfig config, int layers, WeightFormat format, int threads, int64_t max_cache_tokens);
  ~BlockSpan();

  // Reads and converts one block's tensors; `sources` is indexed by LayerTensor (biases only when
  // the config has them). Throws with the tensor and file named on any mismatch or read error.
  void load_layer(int layer, const std::vector<TensorSource>& sources);

  // Same, from fp32 values in memory (tests and benchmarks); same indexing.
  void set_layer(int layer, const std::vector<std::vector<float>>& tensors);

  // A session over layers [first_layer, first_layer + layer_count) of the span (layer_count -1: to
  // the end), so a client can enter the span mid-way and leave it mid-way; its KV cache holds only
  // those layers. Throws CacheFullError when its max_length × layer_count does not fit the budget.
  int open_session(int64_t max_length, int first_layer = 0, int layer_count = -1);
  void close_session(int session);
  int64_t session_length(int session) const;
  int64_t session_max_length(int session) const;

  // Runs the steps (different sessions, all over the same layers) through their sessions' layers;
  // linear layers see all the steps' tokens at once, so a batch streams each weight once. Throws
  // std::invalid_argument for bad steps before touching any session.
  void forward(std::vector<Step>& steps);

  const BlockConfig& config() const { return config_; }
  int layers() const { return static_cast<int>(layers_.size()); }
  WeightFormat format() const { return format_; }
  int64_t weight_bytes() const;
  int64_t cache_bytes_per_token() const;
  // Layer-tokens reserved by open sessions (max_length × layer count, summed).
  int64_t cache_layer_tokens_reserved() const;
  int64_t max_cache_tokens() const { return max_cache_tokens_; }
  int sessions() const;

 private:
  struct Layer;
  struct Session;
  std::shared_ptr<Session> find_session(int id) const;
  void run_layer(int index, int first_layer, std::vector<Step>& steps, std::vector<std::shared_ptr<Session>>& sessions,
                 std::vector<int64_t>& starts, float* x, int64_t total);

  BlockConfig config_;
  WeightFormat format_;
  int64_t max_cache_tokens_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::map<int, std::shared_ptr<Session>> sessions_;  // a running forward keeps its sessions alive
  int next_session_ = 1;
  int64_t cache_reserved_ = 0;  // layer-tokens
  mutable std::mutex sessions_mutex_;  // guards sessions_ and cache_reserved_
  std::mutex compute_mutex_;           // one forward at a time (the pool and the scratch are shared)
  ThreadPool pool_;
  // Scratch reused across forwards (guarded by compute_mutex_).
  std::vector<float> normed_, q_, k_, v_, attention_, gate_, up_, out_, scores_;
};

}  // namespace bmrt
