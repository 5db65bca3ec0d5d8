// The model's head (embeddings, final norm, lm_head) for a client with an NVIDIA GPU: the same
// interface as the CPU head (core/head.h). lm_head lives on the GPU in bf16, f16 or f32 and runs as
// one GEMV per token (Llama-2-70B's 0.5 GB lm_head: about 0.15 ms on an H200 against tens of ms
// on CPU cores); the embeddings stay in host memory, where a lookup is a row copy.
#pragma once
#include <cstdint>
#include <memory>

#include "../core/head.h"

namespace bmrt {

class CudaHead {
 public:
  CudaHead(HeadConfig config, WeightFormat format, int device);
  ~CudaHead();

  void load(const HeadSources& sources);
  void load_dummy(uint32_t seed);
  void embed(const int32_t* ids, int64_t n, float* out) const;
  void logits(const float* hidden, float* out);

  const HeadConfig& config() const;
  WeightFormat format() const;
  int device() const;
  int64_t weight_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bmrt
