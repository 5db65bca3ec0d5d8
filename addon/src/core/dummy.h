// Dummy weights (`--load-format dummy`, vLLM's name for the same thing): every tensor of a model's
// shape made from a hash of (seed, tensor, element index), for benchmarks at sizes whose
// checkpoints do not fit on a disk. Counter-based, so any element is made on its own: the CPU
// makes them with its threads, the GPU in a kernel, src/inference/dummy-weights.ts in plain JS,
// and all three give the same fp32 values bit for bit (two servers of one block, or a CPU and a
// GPU span, compute the same model). `bmrt make-test-model` writes the same values to files.
//
// A value is offset + scale * u with u uniform in [-1, 1): scale sqrt(3 / fan_in) for projections
// (the variance of N(0, 1 / fan_in)), sqrt(3) for the embeddings, 0.1 around 1 for norms and
// around 0 for biases. The two roundings (the product, then the sum) are explicit, so no
// compiler may fuse them into one FMA.
#pragma once
#include <cstdint>
#include <vector>

#include "block.h"

#ifdef __CUDACC__
#define BMRT_HOST_DEVICE __host__ __device__
#else
#define BMRT_HOST_DEVICE
#endif

namespace bmrt {

class ThreadPool;

// The tensors of the model's head, numbered apart from the blocks' (see dummy_stream).
enum class HeadTensor { Embeddings = 0, FinalNorm = 1, LmHead = 2 };

// value = offset + scale * u
struct DummyInit {
  float scale = 0;
  float offset = 0;
};

// The stream of block `block`'s tensor `t` (blocks are numbered in the whole model, so two spans
// that hold the same block make the same values), and of a head tensor.
inline uint32_t dummy_stream(int block, LayerTensor t) { return uint32_t(block + 1) * 32u + uint32_t(t); }
inline uint32_t dummy_stream(HeadTensor t) { return uint32_t(t); }

// murmur3's 32-bit finaliser: a bijection that spreads every input bit over the output.
BMRT_HOST_DEVICE inline uint32_t dummy_mix(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

// One tensor's key: everything but the element index.
BMRT_HOST_DEVICE inline uint32_t dummy_key(uint32_t seed, uint32_t stream) { return dummy_mix(seed ^ dummy_mix(stream * 0x9e3779b9u + 1u)); }

// u in [-1, 1) for element `index` (24 random bits, so u is exact in fp32).
BMRT_HOST_DEVICE inline float dummy_uniform(uint32_t key, uint64_t index) {
  uint32_t h = dummy_mix(uint32_t(index) ^ key);
  h = dummy_mix(h + key + uint32_t(index >> 32));
  return float(int32_t(h >> 8) - (1 << 23)) * (1.0f / float(1 << 23));
}

// Element `index` of the tensor with `key` and `init`: the product and the sum rounded apart.
BMRT_HOST_DEVICE inline float dummy_value(uint32_t key, uint64_t index, DummyInit init) {
  const float u = dummy_uniform(key, index);
#ifdef __CUDA_ARCH__
  return __fadd_rn(init.offset, __fmul_rn(init.scale, u));  // nvcc would fuse a * b + c
#else
  const float product = init.scale * u;  // two statements: not contracted in ISO C++ mode
  return init.offset + product;
#endif
}

// How a block's tensor is initialised (projections by their fan-in).
DummyInit dummy_init(const BlockConfig& config, LayerTensor t);
// How a head tensor is initialised; `hidden` is the model's hidden size.
DummyInit dummy_init(HeadTensor t, int hidden);

// out[i] = init.offset + init.scale * dummy_uniform(key, i) for i < count, on the pool's threads.
void fill_dummy(uint32_t key, DummyInit init, float* out, int64_t count, ThreadPool& pool);
// The same values stored as a checkpoint would (F32, F16 or BF16 little-endian bytes, rounded to
// nearest even): `out` holds count * source_element_bytes(dtype) bytes.
void fill_dummy_bytes(uint32_t key, DummyInit init, SourceDType dtype, void* out, int64_t count, ThreadPool& pool);

// Block `block`'s tensors (indexed by LayerTensor, biases only when the config has them) in fp32.
std::vector<std::vector<float>> dummy_layer_tensors(const BlockConfig& config, int block, uint32_t seed, ThreadPool& pool);

}  // namespace bmrt
