// The client's ends of a model: token embeddings, the final RMSNorm and lm_head (a Petals client
// holds these while servers run the blocks). The CPU head keeps lm_head in the chosen float format,
// packed for the kernels, and runs it on its own threads: Llama-2-70B's 32000 x 8192 lm_head is
// 0.5 GB of bf16 streamed once per token, memory-bound like a block's decode. The CUDA head
// (cuda/cuda_head.h) has the same interface with lm_head on the GPU.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "block.h"
#include "kernels.h"
#include "thread_pool.h"

namespace bmrt {

struct HeadConfig {
  int vocab = 0;
  int hidden = 0;
  float rms_norm_eps = 1e-5f;
  bool tied = false;  // lm_head is the token embeddings
};

// Where the head's tensors are in a checkpoint; lm_head is not read when the config is tied.
struct HeadSources {
  TensorSource embeddings, final_norm, lm_head;
};

// The head's tensors in fp32, from files or dummy; lm_head is empty when tied.
struct HeadTensors {
  std::vector<float> embeddings, final_norm, lm_head;
};

// Throws std::invalid_argument unless the head can be built: positive sizes, a float format.
void check_head(const HeadConfig& config, WeightFormat format);
HeadTensors read_head_tensors(const HeadConfig& config, const HeadSources& sources);
HeadTensors dummy_head_tensors(const HeadConfig& config, uint32_t seed, ThreadPool& pool);

// Token embeddings in a float storage format (bf16 halves a 70B model's 1 GB of fp32 rows).
class EmbeddingTable {
 public:
  EmbeddingTable() = default;
  EmbeddingTable(const std::vector<float>& values, int64_t vocab, int64_t hidden, WeightFormat format);
  // out[t] = the embedding of ids[t] in fp32; std::invalid_argument for an id outside the vocabulary.
  void lookup(const int32_t* ids, int64_t n, float* out) const;
  int64_t bytes() const { return int64_t(full_.size() * 4 + half_.size() * 2); }

 private:
  int64_t vocab_ = 0, hidden_ = 0;
  WeightFormat format_ = WeightFormat::F32;
  std::vector<float> full_;     // F32
  std::vector<uint16_t> half_;  // BF16 or F16 bit patterns
};

class Head {
 public:
  // format: F32, BF16 or F16 for both matrices; threads: for lm_head (>= 1).
  Head(HeadConfig config, WeightFormat format, int threads);
  ~Head();

  void load(const HeadSources& sources);
  void load_dummy(uint32_t seed);
  // out: [n, hidden] fp32.
  void embed(const int32_t* ids, int64_t n, float* out) const;
  // The logits [vocab] of one hidden row: final norm, then lm_head.
  void logits(const float* hidden, float* out);

  const HeadConfig& config() const { return config_; }
  WeightFormat format() const { return format_; }
  int64_t weight_bytes() const;

 private:
  void set(const HeadTensors& tensors);

  HeadConfig config_;
  WeightFormat format_;
  ThreadPool pool_;
  std::mutex compute_mutex_;        // one logits or dummy fill at a time: the pool and scratch are shared
  mutable std::mutex table_mutex_;  // embeddings_ (embed does not wait for a logits in flight)
  EmbeddingTable embeddings_;
  std::vector<float> final_norm_, normed_;
  Matrix lm_head_;
  std::vector<uint8_t> lm_head_data_;  // lm_head_'s storage when the kernels did not pack it
  bool loaded_ = false;
};

}  // namespace bmrt
