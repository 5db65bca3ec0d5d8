// The CUDA kernels of a decoder block and of the model's head: the same math as the CPU span
// (core/span.cc run_layer), on fp32 activations and an fp32 KV cache, with the projections' inputs
// in the weights' element type T (float, bf16 or half). Stages that follow one another are fused
// where the CPU rounds the same way anyway (the norm writes T, the MLP's SiLU writes T, rotary
// writes the KV cache), so a decode step of one layer is nine launches.
//
// All pointers are device pointers. Every function only enqueues work on `stream` (it does not
// synchronise) and throws std::runtime_error naming the kernel when the launch fails;
// std::invalid_argument for arguments the kernels cannot handle. Zero-sized calls do nothing.
// Activations are row-major. Functions templated on T are instantiated for float, __nv_bfloat16
// and __half.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace bmrt::cuda {

// Largest head_dim attention() handles (8 registers per lane of a warp).
constexpr int kMaxAttentionHeadDim = 256;
// Most tokens gemv() takes; more go to cuBLAS.
constexpr int kGemvMaxTokens = 4;

// Element types of buffers whose type is known only at run time (checkpoint tensors, weights).
enum class Element { F32, F16, BF16 };
inline int element_bytes(Element e) { return e == Element::F32 ? 4 : 2; }

// out[r][i] = T(weight[i] * (x[r][i] * inv_r)), inv_r = 1 / sqrt(float(mean_i x[r][i]^2) + eps):
// the mean is rounded to float before eps is added, as on the CPU. Sums in fp32 (tree reduction).
// With T = float, out may equal x (in place).
template <class T>
void rms_norm(const float* x, const float* weight, int64_t rows, int dim, float eps, T* out, cudaStream_t stream);

// n values of type `from` to type `to`, round to nearest even (src and dst must not overlap).
void convert(const void* src, Element from, void* dst, Element to, int64_t n, cudaStream_t stream);

// Rotate-half rotary embedding and the KV cache write of `rows` tokens of one session. Row r of
// qkv (row stride `stride` floats) holds q [heads * head_dim], then k and v [kv_heads * head_dim]
// each; it is the token at position positions[r] (`rows` int64 on the device). q is rotated in
// place; the rotated k goes to keys[positions[r]] and v to values[positions[r]] (rows of
// kv_heads * head_dim). Per head, for j < head_dim / 2: a = v[j], b = v[j + half],
// v[j] = a cos - b sin, v[j + half] = b cos + a sin, angle = float(position) * inv_freq[j] in
// fp32 with the precise cosf / sinf. head_dim must be even.
void rope_cache(float* qkv, int64_t stride, const int64_t* positions, int64_t rows, int heads, int kv_heads, int head_dim,
                const float* inv_freq, float* keys, float* values, cudaStream_t stream);

// Attention of `tokens` new query rows of one session at positions *start .. *start + tokens - 1
// (`start`: one int64 on the device, so a captured graph replays at any position) over that
// session's cache. q: [tokens] rows of heads * head_dim floats, row stride q_stride; keys, values:
// [capacity, kv_heads * head_dim] with rows 0 .. start + tokens - 1 written (the new tokens
// included); no row past that is read. Query head h uses kv head h / (heads / kv_heads). The token
// at position p attends to rows first .. p, first = sliding_window > 0 ? max(0, p - sliding_window
// + 1) : 0. scores = scale * q.k, softmax, out = T(sum p_j v_j). out: [tokens, heads * head_dim]
// (must not overlap q, keys or values). heads must be a multiple of kv_heads; head_dim <= 256.
template <class T>
void attention(const float* q, int64_t q_stride, const float* keys, const float* values, const int64_t* start, int64_t tokens,
               int heads, int kv_heads, int head_dim, int sliding_window, float scale, T* out, cudaStream_t stream);

// out[r][i] = T(silu(g) * u) = T(g / (1 + exp(-g)) * u), g = gate_up[r][i], u = gate_up[r][inter + i]
// (gate_up: [rows, 2 * inter], the gate and up projections side by side); out: [rows, inter].
template <class T>
void silu_mul(const float* gate_up, int64_t rows, int64_t inter, T* out, cudaStream_t stream);

// y[r][c] += bias[c]; y is [rows, cols].
void add_bias(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream);

// Whether gemv() takes a product of `tokens` rows of `cols` values: rows of whole 16-byte vectors.
template <class T>
constexpr bool gemv_fits(int64_t cols, int64_t tokens) {
  return tokens >= 1 && tokens <= kGemvMaxTokens && cols % (16 / int64_t(sizeof(T))) == 0;
}

// y[t][r] = sum_c w[r][c] * x[t][c] (+ y[t][r] when accumulate) for t < tokens, in fp32: the
// decode-sized product, memory-bound on w. w: [rows, cols]; x: [tokens, cols]; y: [tokens, rows].
// Needs gemv_fits<T>(cols, tokens) and 16-byte aligned w and x.
template <class T>
void gemv(const T* w, const T* x, int64_t rows, int64_t cols, int64_t tokens, float* y, bool accumulate, cudaStream_t stream);

// out[i] = T(offset + scale * u_i) for i < n: the dummy weights of core/dummy.h for `key`, made
// on the GPU with the same values the CPU makes.
template <class T>
void dummy_fill(T* out, int64_t n, uint32_t key, float scale, float offset, cudaStream_t stream);

// Bandwidth probe for the benchmarks: copies `bytes` from src to dst once with a plain copy kernel
// (16-byte vectors when both pointers are 16-byte aligned), not cudaMemcpy. Time it with events;
// it moves 2 * bytes (read + write). src and dst must not overlap.
void copy_kernel(const void* src, void* dst, int64_t bytes, cudaStream_t stream);

}  // namespace bmrt::cuda
