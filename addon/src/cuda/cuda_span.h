// A span of Llama-family decoder blocks on an NVIDIA GPU: the CUDA implementation of the block
// API, with the same class interface as the CPU span (core/span.h), so the binding wraps either.
// Weights live on the GPU in bf16, f16 or f32, the q/k/v and the gate/up projections each as one
// matrix; decode-sized projections run a GEMV kernel, the rest cuBLAS, both accumulating in fp32;
// activations and the per-session KV caches are fp32 on the GPU. A forward copies the steps'
// hidden states in once and out once, and runs all of the span's layers in between: for decode
// steps as one replay of a captured CUDA graph (capturing once per session).
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
  // format: BF16, F16 or F32 (the projections' storage; int8 and int4 are refused). device: the
  // CUDA device index. max_cache_tokens: as in BlockSpan (per block; 0 unlimited).
  CudaBlockSpan(BlockConfig config, int layers, WeightFormat format, int device, int64_t max_cache_tokens);
  ~CudaBlockSpan();

  // Reads the block's tensors straight into GPU memory (see cuda_util.h's Uploader).
  void load_layer(int layer, const std::vector<TensorSource>& sources);
  void set_layer(int layer, const std::vector<std::vector<float>>& tensors);
  // Makes layer `layer` the dummy weights of the model's block `block`, on the GPU (core/dummy.h).
  void load_dummy_layer(int layer, int block, uint32_t seed);

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
