// A span of Llama-family decoder blocks on an NVIDIA GPU: the CUDA implementation of the block
// API, with the same class interface as the CPU span (core/span.h), so the binding wraps either.
// Weights live on the GPU in bf16 or f16 (cuBLAS does the projections, fp32 accumulation);
// activations and the per-session KV caches are fp32 on the GPU; a forward copies the steps'
// hidden states in once and out once, and runs all of the span's layers in between.
//
// No CUDA types appear here (the implementation is behind a pointer), so the binding compiles
// with the ordinary C++ compiler.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../core/block.h"
#include "../core/kernels.h"
#include "../core/session_table.h"

namespace bmrt {

// What the CUDA runtime reports about one device.
struct CudaDeviceInfo {
  std::string name;
  int major = 0, minor = 0;  // compute capability
  int64_t total_bytes = 0;
};

// The devices this process can use; empty when there is no driver or no GPU (never throws for that).
std::vector<CudaDeviceInfo> cuda_devices();

// Free memory on `device` now. Asking creates the process's context there (a few hundred MB),
// which is why cuda_devices() does not ask every device.
int64_t cuda_free_bytes(int device);

class CudaBlockSpan {
 public:
  // format: BF16 or F16 (the projections' storage; others are refused). device: the CUDA device
  // index. max_cache_tokens: as in BlockSpan (per block; 0 unlimited).
  CudaBlockSpan(BlockConfig config, int layers, WeightFormat format, int device, int64_t max_cache_tokens);
  ~CudaBlockSpan();

  void load_layer(int layer, const std::vector<TensorSource>& sources);
  void set_layer(int layer, const std::vector<std::vector<float>>& tensors);

  int open_session(int64_t max_length, int first_layer = 0, int layer_count = -1);
  void close_session(int session);
  int64_t session_length(int session) const;
  int64_t session_max_length(int session) const;

  void forward(std::vector<Step>& steps);

  const BlockConfig& config() const;
  int layers() const;
  WeightFormat format() const;
  int device() const;
  int64_t weight_bytes() const;
  int64_t cache_bytes_per_token() const;
  int64_t cache_layer_tokens_reserved() const;
  int64_t max_cache_tokens() const;
  int sessions() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bmrt
