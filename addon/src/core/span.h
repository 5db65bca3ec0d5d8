// A span of Llama-family decoder blocks [start, end) with per-session KV caches: the CPU
// implementation of the block API. Plain C++ (no N-API); the binding wraps it, and the CUDA
// implementation (cuda/cuda_span.h) offers the same class interface.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>
#include "block.h"
#include "kernels.h"
#include "session_table.h"

namespace bmrt {

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

  // Makes layer `layer` the dummy weights of the model's block `block` (see dummy.h).
  void load_dummy_layer(int layer, int block, uint32_t seed);

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
  int64_t max_cache_tokens() const { return sessions_.max_cache_tokens(); }
  int sessions() const;
  // Bytes the forward workspace holds between forwards (see kKeptWorkspaceTokens in span.cc), as
  // the last forward left it; does not wait for a running forward.
  int64_t workspace_bytes() const { return workspace_bytes_; }

 private:
  struct Layer;
  // A session's cache: per layer it runs, [max_length, kv_heads * head_dim] keys and values.
  struct HostCache {
    std::vector<std::vector<float>> keys, values;
  };
  using Sessions = SessionTable<HostCache>;
  void run_layer(int index, const std::vector<Step>& steps, const Sessions::Batch& batch, float* x);
  void release_large_workspace();

  BlockConfig config_;
  WeightFormat format_;
  std::vector<std::unique_ptr<Layer>> layers_;
  Sessions sessions_;
  std::mutex compute_mutex_;  // one forward at a time (the pool and the scratch are shared)
  ThreadPool pool_;
  // Scratch reused across forwards (guarded by compute_mutex_): kept while it is the size of a
  // decode step, given back after a larger forward (release_large_workspace).
  std::vector<float> normed_, q_, k_, v_, attention_, gate_, up_, out_, scores_;
  std::atomic<int64_t> workspace_bytes_{0};
};

}  // namespace bmrt
