// The CUDA kernels of a decoder block other than the projections (cuBLAS does those): the same
// math as the CPU span (core/span.cc run_layer), on fp32 activations and an fp32 KV cache.
//
// All pointers are device pointers. Every function only enqueues work on `stream` (it does not
// synchronise) and throws std::runtime_error naming the kernel when the launch fails;
// std::invalid_argument for arguments the kernels cannot handle. Zero-sized calls do nothing.
// Activations are fp32 row-major.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace bmrt::cuda {

// Largest head_dim attention() handles (8 registers per lane of a warp).
constexpr int kMaxAttentionHeadDim = 256;

// out[r][i] = weight[i] * (x[r][i] * inv_r), inv_r = 1 / sqrt(float(mean_i x[r][i]^2) + eps): the
// mean is rounded to float before eps is added, as on the CPU. Sums in fp32 (tree reduction).
// out may equal x (in place).
void rms_norm(const float* x, const float* weight, int64_t rows, int dim, float eps, float* out, cudaStream_t stream);

// fp32 -> bf16 / f16, n elements, round to nearest even (cuBLAS inputs).
void to_bf16(const float* x, int64_t n, __nv_bfloat16* out, cudaStream_t stream);
void to_half(const float* x, int64_t n, __half* out, cudaStream_t stream);

// Rotate-half rotary embedding in place. q: [rows, heads * head_dim], k: [rows, kv_heads * head_dim];
// row r is at position positions[r] (`rows` int64 on the device); inv_freq: head_dim / 2 floats on
// the device. Per head, for j < head_dim / 2: a = v[j], b = v[j + half],
// v[j] = a cos - b sin, v[j + half] = b cos + a sin, angle = float(position) * inv_freq[j] in fp32
// with the precise cosf / sinf. head_dim must be even.
void rope(float* q, float* k, const int64_t* positions, int64_t rows, int heads, int kv_heads, int head_dim,
          const float* inv_freq, cudaStream_t stream);

// Attention of `tokens` new query rows of one session, at positions start .. start + tokens - 1,
// over that session's cache. q: [tokens, heads * head_dim]; keys, values: [capacity,
// kv_heads * head_dim] with rows 0 .. start + tokens - 1 written (the new tokens included); no
// row past that is read. Query head h uses kv head h / (heads / kv_heads). The token at position p
// attends to rows first .. p, first = sliding_window > 0 ? max(0, p - sliding_window + 1) : 0.
// scores = scale * q.k, softmax, out = sum p_j v_j. out: [tokens, heads * head_dim] (must not
// overlap q, keys or values). heads must be a multiple of kv_heads; head_dim <= 256.
void attention(const float* q, const float* keys, const float* values, int64_t start, int64_t tokens, int heads,
               int kv_heads, int head_dim, int sliding_window, float scale, float* out, cudaStream_t stream);

// gate[i] = silu(gate[i]) * up[i] = gate / (1 + exp(-gate)) * up, n elements.
void silu_mul(float* gate, const float* up, int64_t n, cudaStream_t stream);

// y[r][c] += bias[c]; y is [rows, cols].
void add_bias(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream);

// Bandwidth probe for the benchmarks: copies `bytes` from src to dst once with a plain copy kernel
// (16-byte vectors when both pointers are 16-byte aligned), not cudaMemcpy. Time it with events;
// it moves 2 * bytes (read + write). src and dst must not overlap.
void copy_kernel(const void* src, void* dst, int64_t bytes, cudaStream_t stream);

}  // namespace bmrt::cuda
