// CUDA kernels of a decoder block (see cuda_kernels.cuh): elementwise kernels with grid-stride
// loops and 64-bit indices, a block-per-row RMSNorm, a warp-split online-softmax attention, and a
// warp-per-row GEMV for decode. Plain CUDA (warp shuffles only), so it runs on any sm_70+ GPU;
// tuned with Hopper in mind.
#include "cuda_kernels.cuh"

#include <climits>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "../core/dummy.h"

namespace bmrt::cuda {

namespace {

constexpr int kThreads = 256;            // elementwise kernels: 8 warps per block
constexpr int64_t kMaxBlocks = 8192;     // 2M threads: fills any GPU; the grid-stride loops do the rest
constexpr unsigned kFullMask = 0xffffffffu;

void check_launch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("bmrt::cuda::") + kernel + ": " + cudaGetErrorString(status));
}

// Enqueues kernel<<<grid, block, 0, stream>>>(args...). Built with BMRT_CUDA_EMULATOR (the tests
// of machines without a GPU, addon/test/cuda_emulator.h), the same kernel runs on the CPU instead.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream, Args... args) {
#ifdef BMRT_CUDA_EMULATOR
  emulator::launch(grid, block, stream, [=] { kernel(args...); });
#else
  kernel<<<grid, block, 0, stream>>>(args...);
#endif
}

// Blocks for a grid-stride loop over n items (n > 0).
unsigned blocks_for(int64_t n, int threads = kThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// Grid-stride index helpers: 64-bit, so tensors past 2^31 elements are fine.
__device__ __forceinline__ int64_t global_thread() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_threads() { return int64_t(gridDim.x) * blockDim.x; }

// Sum over the 32 lanes; every lane gets the result. All 32 lanes must be active. The xor butterfly
// adds the same two values in every lane at each step (in swapped order, which is exact), so all
// lanes end bit-identical: code that branches on the result stays warp-uniform.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// fp32 to and from the element types, round to nearest even.
template <class T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

// ---------------------------------------------------------------------------------------------
// RMSNorm: one block per row (grid-stride over rows), fp32 partial sums per thread, then a warp
// and a block tree reduction.

// x and out may be the same buffer (T = float): each thread rereads x[i] just before writing out[i].
template <class T>
__global__ void rms_norm_kernel(const float* x, const float* __restrict__ weight, int64_t rows, int dim, float eps, T* out) {
  __shared__ float warp_sums[32];
  __shared__ float row_sum;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * dim;
    T* yr = out + r * dim;
    float s = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += xr[i] * xr[i];
    s = warp_sum(s);
    if (lane == 0) warp_sums[warp] = s;
    __syncthreads();
    if (warp == 0) {
      const float total = warp_sum(lane < warps ? warp_sums[lane] : 0.0f);
      if (lane == 0) row_sum = total;
    }
    __syncthreads();
    // Like the CPU: the mean rounded to float, then + eps; IEEE sqrt and division (no fast math).
    const float inv = 1.0f / sqrtf(row_sum / static_cast<float>(dim) + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = from_float<T>(weight[i] * (xr[i] * inv));
    __syncthreads();  // warp_sums and row_sum are rewritten for the next row
  }
}

// ---------------------------------------------------------------------------------------------
// Elementwise kernels.

template <class From, class To>
__global__ void convert_kernel(const From* __restrict__ x, int64_t n, To* __restrict__ out) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) out[i] = from_float<To>(to_float(x[i]));
}

// One thread per (row, head of q or k, pair j): the angle is recomputed per head, which keeps a
// decode (one row) spread over thousands of threads instead of a serial loop over the heads. The
// threads of k heads also move v's two values at j and j + half into the cache.
__global__ void rope_cache_kernel(float* __restrict__ qkv, int64_t stride, const int64_t* __restrict__ positions, int64_t rows,
                                  int heads, int kv_heads, int head_dim, const float* __restrict__ inv_freq,
                                  float* __restrict__ keys, float* __restrict__ values) {
  const int half = head_dim / 2, all_heads = heads + kv_heads;
  const int64_t q_dim = int64_t(heads) * head_dim, kv_dim = int64_t(kv_heads) * head_dim;
  const int64_t n = rows * all_heads * half;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const int j = static_cast<int>(i % half);
    const int64_t rest = i / half;
    const int hh = static_cast<int>(rest % all_heads);
    const int64_t r = rest / all_heads;
    const int64_t position = positions[r];
    float* row = qkv + r * stride;
    // fp32 angle and the precise cosf/sinf (not __cosf): positions reach 1e5 rad and more.
    const float angle = static_cast<float>(position) * inv_freq[j];
    const float c = cosf(angle), s = sinf(angle);
    if (hh < heads) {
      float* v = row + int64_t(hh) * head_dim;
      const float a = v[j], b = v[j + half];
      v[j] = a * c - b * s;
      v[j + half] = b * c + a * s;
    } else {
      const int64_t head = int64_t(hh - heads) * head_dim;
      const float* k = row + q_dim + head;
      const float a = k[j], b = k[j + half];
      float* key = keys + position * kv_dim + head;
      key[j] = a * c - b * s;
      key[j + half] = b * c + a * s;
      const float* v = row + q_dim + kv_dim + head;
      float* value = values + position * kv_dim + head;
      value[j] = v[j];
      value[j + half] = v[j + half];
    }
  }
}

template <class T>
__global__ void silu_mul_kernel(const float* __restrict__ gate_up, int64_t rows, int64_t inter, T* __restrict__ out) {
  const int64_t n = rows * inter;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const int64_t r = i / inter, c = i % inter;
    const float g = gate_up[r * 2 * inter + c], u = gate_up[r * 2 * inter + inter + c];
    out[i] = from_float<T>(g / (1.0f + expf(-g)) * u);  // same order as the CPU; g -> -inf gives -0, not NaN
  }
}

template <class T>
__global__ void dummy_fill_kernel(T* __restrict__ out, int64_t n, uint32_t key, float scale, float offset) {
  const DummyInit init{scale, offset};
  for (int64_t i = global_thread(); i < n; i += grid_threads()) out[i] = from_float<T>(dummy_value(key, static_cast<uint64_t>(i), init));
}

// ---------------------------------------------------------------------------------------------
// GEMV for decode: one warp per output row. Lane l reads the 16-byte vectors l, l + 32, ... of the
// row, kGemvUnroll of them in flight before any is used, and the same vectors of each token's x
// (x is small and shared by every warp: it stays in L1/L2); then a warp sum. The weights are
// read with streaming loads (evict first): each is used once per step, x many times.

constexpr int kGemvWarps = 8;    // rows per block
constexpr int kGemvUnroll = 4;   // 16-byte loads per lane in flight per row

// The dot product of two 16-byte vectors of T, in fp32. The bytes are copied out rather than
// reinterpreted through a pointer (which breaks C++'s aliasing rules: the CPU emulator's compiler
// read zeros that way); nvcc turns the copies into register moves.
template <class T>
__device__ __forceinline__ float dot16(const uint4& a, const uint4& b) {
  constexpr int kCount = 16 / sizeof(T);
  T wa[kCount], xb[kCount];
  memcpy(wa, &a, 16);
  memcpy(xb, &b, 16);
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kCount; k++) sum += to_float(wa[k]) * to_float(xb[k]);
  return sum;
}

template <class T, int N>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_kernel(const T* __restrict__ w, const T* __restrict__ x, int64_t rows,
                                                               int64_t vectors, float* __restrict__ y, bool accumulate) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  if (row >= rows) return;  // the whole warp leaves together
  const uint4* wr = reinterpret_cast<const uint4*>(w) + row * vectors;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  float acc[N];
#pragma unroll
  for (int t = 0; t < N; t++) acc[t] = 0.0f;
  for (int64_t base = lane; base < vectors; base += 32 * kGemvUnroll) {
    uint4 wv[kGemvUnroll];
#pragma unroll
    for (int u = 0; u < kGemvUnroll; u++) {
      const int64_t i = base + 32 * u;
      wv[u] = i < vectors ? __ldcs(wr + i) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kGemvUnroll; u++) {
      const int64_t i = base + 32 * u;
      if (i < vectors) {
#pragma unroll
        for (int t = 0; t < N; t++) acc[t] += dot16<T>(wv[u], __ldg(xv + t * vectors + i));
      }
    }
  }
#pragma unroll
  for (int t = 0; t < N; t++) {
    const float sum = warp_sum(acc[t]);
    if (lane == 0) {
      float* out = y + t * rows + row;
      *out = accumulate ? *out + sum : sum;
    }
  }
}

__global__ void add_bias_kernel(float* __restrict__ y, const float* __restrict__ bias, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) y[i] += bias[i % cols];
}

// Vector part: 16-byte loads and stores; the last bytes % 16 bytes are copied one by one.
__global__ void copy_kernel_vec(const uint4* __restrict__ src, uint4* __restrict__ dst, int64_t vectors,
                                const unsigned char* __restrict__ tail_src, unsigned char* __restrict__ tail_dst,
                                int tail) {
  for (int64_t i = global_thread(); i < vectors; i += grid_threads()) dst[i] = src[i];
  if (global_thread() < tail) tail_dst[global_thread()] = tail_src[global_thread()];
}

__global__ void copy_kernel_bytes(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) dst[i] = src[i];
}

// ---------------------------------------------------------------------------------------------
// Attention.
//
// One block per (head, tile of QT consecutive query tokens); NW warps. The block's keys (the union
// of its queries' ranges) are cut into groups of G consecutive rows, dealt round-robin to the
// warps. Within a warp, lane l holds dims l, l + 32, ... (DPL = ceil(head_dim / 32) of them) of
// each query, of the accumulators, and of the key/value rows it loads, so every row load is one
// coalesced 128-byte access per register. A score is a per-lane partial dot product summed with
// warp_sum, which leaves it identical in every lane, so the online softmax (running max m, sum l,
// accumulator acc) is warp-uniform with no divergence. At the end each warp puts its (m, l, acc)
// per query in shared memory and the block merges them: out = sum_w acc_w e^(m_w - M) /
// sum_w l_w e^(m_w - M), M = max_w m_w.
//
// QT = 1 for decode (the cache is read once per head; 16 warps keep many loads in flight); QT = 4
// for prefill, where each K/V row loaded serves 4 queries (4x less L2 traffic on the O(n^2) part).

template <class T>
struct AttentionArgs {
  const float* q;
  int64_t q_stride;
  const float* keys;
  const float* values;
  const int64_t* start;  // on the device
  T* out;
  int64_t tokens;
  int heads, kv_heads, head_dim, sliding_window;
  float scale;
};

template <class T, int DPL, int QT, int NW>
__global__ void __launch_bounds__(NW * 32, 1) attention_kernel(const AttentionArgs<T> a) {
  constexpr int HD = DPL * 32;           // head_dim rounded up to whole warps
  constexpr int G = DPL <= 4 ? 8 : 4;    // rows per group: G * DPL loads of K and of V in flight per lane
  __shared__ float shared_max[NW][QT], shared_sum[NW][QT];
  __shared__ float shared_acc[NW][QT][HD];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int head = static_cast<int>(blockIdx.x % a.heads);
  const int64_t tiles = (a.tokens + QT - 1) / QT;
  const int64_t tile = tiles - 1 - static_cast<int64_t>(blockIdx.x / a.heads);  // longest rows start first
  const int64_t t0 = tile * QT;
  const int kv_head = head / (a.heads / a.kv_heads);
  const int64_t start = *a.start;
  const int64_t out_stride = int64_t(a.heads) * a.head_dim, kv_stride = int64_t(a.kv_heads) * a.head_dim;
  const float* keys = a.keys + int64_t(kv_head) * a.head_dim;
  const float* values = a.values + int64_t(kv_head) * a.head_dim;

  // Each query's key rows [lo, hi); a query past `tokens` (short last tile) gets an empty range.
  int64_t lo[QT], hi[QT];
  float qv[QT][DPL], acc[QT][DPL], m[QT], l[QT];
  int64_t end = 0;
#pragma unroll
  for (int t = 0; t < QT; t++) {
    const bool valid = t0 + t < a.tokens;
    const int64_t p = start + t0 + t;
    lo[t] = !valid ? 0 : a.sliding_window > 0 && p >= a.sliding_window ? p - a.sliding_window + 1 : 0;
    hi[t] = valid ? p + 1 : 0;
    if (hi[t] > end) end = hi[t];
    const float* qt = a.q + (valid ? t0 + t : 0) * a.q_stride + int64_t(head) * a.head_dim;
#pragma unroll
    for (int i = 0; i < DPL; i++) {
      const int d = lane + 32 * i;
      qv[t][i] = valid && d < a.head_dim ? __ldg(qt + d) : 0.0f;  // zero padding adds nothing to the dots
      acc[t][i] = 0.0f;
    }
    m[t] = -INFINITY;
    l[t] = 0.0f;
  }
  const int64_t begin = lo[0];  // query 0 has the smallest position, hence the smallest first row

  for (int64_t base = begin + int64_t(warp) * G; base < end; base += int64_t(NW) * G) {
    float kr[G][DPL], vr[G][DPL];
#pragma unroll
    for (int g = 0; g < G; g++) {
      const int64_t j = base + g;
#pragma unroll
      for (int i = 0; i < DPL; i++) {
        const int d = lane + 32 * i;
        const bool ok = j < end && d < a.head_dim;  // never reads a row past the last query's position
        kr[g][i] = ok ? __ldg(keys + j * kv_stride + d) : 0.0f;
        vr[g][i] = ok ? __ldg(values + j * kv_stride + d) : 0.0f;
      }
    }
#pragma unroll
    for (int t = 0; t < QT; t++) {
      float s[G];
      float group_max = -INFINITY;
#pragma unroll
      for (int g = 0; g < G; g++) {
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++) dot += qv[t][i] * kr[g][i];
        dot = warp_sum(dot);
        const int64_t j = base + g;
        s[g] = j >= lo[t] && j < hi[t] ? dot * a.scale : -INFINITY;  // masked: weight exp(-inf) = 0
        group_max = fmaxf(group_max, s[g]);
      }
      if (group_max == -INFINITY) continue;  // no row of this group is visible to query t (warp-uniform)
      const float m_new = fmaxf(m[t], group_max);
      const float correction = expf(m[t] - m_new);  // 0 while m[t] is still -inf (acc and l are 0 then)
      l[t] *= correction;
#pragma unroll
      for (int i = 0; i < DPL; i++) acc[t][i] *= correction;
#pragma unroll
      for (int g = 0; g < G; g++) {
        const float p = expf(s[g] - m_new);
        l[t] += p;
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[t][i] += p * vr[g][i];
      }
      m[t] = m_new;
    }
  }

  // Merge the warps. A warp that saw no visible row has m = -inf, l = 0 and is skipped; every
  // real query sees at least its own row, so some warp has a finite m and l >= 1.
#pragma unroll
  for (int t = 0; t < QT; t++) {
    if (lane == 0) {
      shared_max[warp][t] = m[t];
      shared_sum[warp][t] = l[t];
    }
#pragma unroll
    for (int i = 0; i < DPL; i++) shared_acc[warp][t][lane + 32 * i] = acc[t][i];
  }
  __syncthreads();
  for (int e = threadIdx.x; e < QT * HD; e += NW * 32) {
    const int t = e / HD, d = e % HD;
    if (t0 + t >= a.tokens || d >= a.head_dim) continue;
    float big = -INFINITY;
    for (int w = 0; w < NW; w++) big = fmaxf(big, shared_max[w][t]);
    float sum = 0.0f, o = 0.0f;
    for (int w = 0; w < NW; w++) {
      if (shared_max[w][t] == -INFINITY) continue;
      const float f = expf(shared_max[w][t] - big);
      sum += shared_sum[w][t] * f;
      o += shared_acc[w][t][d] * f;
    }
    a.out[(t0 + t) * out_stride + int64_t(head) * a.head_dim + d] = from_float<T>(o / sum);
  }
}

template <class T, int QT, int NW>
void launch_attention(const AttentionArgs<T>& a, cudaStream_t stream) {
  const int64_t blocks = (a.tokens + QT - 1) / QT * a.heads;
  if (blocks > INT_MAX) throw std::invalid_argument("bmrt::cuda::attention: too many tokens for one launch");
  const dim3 grid(static_cast<unsigned>(blocks)), block(NW * 32);
  switch ((a.head_dim + 31) / 32) {  // registers per lane: one template instance per size
    case 1: launch(attention_kernel<T, 1, QT, NW>, grid, block, stream, a); break;
    case 2: launch(attention_kernel<T, 2, QT, NW>, grid, block, stream, a); break;
    case 3: launch(attention_kernel<T, 3, QT, NW>, grid, block, stream, a); break;
    case 4: launch(attention_kernel<T, 4, QT, NW>, grid, block, stream, a); break;
    case 5: launch(attention_kernel<T, 5, QT, NW>, grid, block, stream, a); break;
    case 6: launch(attention_kernel<T, 6, QT, NW>, grid, block, stream, a); break;
    case 7: launch(attention_kernel<T, 7, QT, NW>, grid, block, stream, a); break;
    case 8: launch(attention_kernel<T, 8, QT, NW>, grid, block, stream, a); break;
    default: throw std::invalid_argument("bmrt::cuda::attention: head_dim over 256");
  }
}

}  // namespace

template <class T>
void rms_norm(const float* x, const float* weight, int64_t rows, int dim, float eps, T* out, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return;
  // Up to 1024 threads per row (a decode row is one block: wide is faster); whole warps.
  const int threads = dim >= 1024 ? 1024 : (dim + 31) / 32 * 32;
  const unsigned blocks = static_cast<unsigned>(rows < 65535 ? rows : 65535);
  launch(rms_norm_kernel<T>, blocks, threads, stream, x, weight, rows, dim, eps, out);
  check_launch("rms_norm");
}

namespace {

template <class From>
void convert_from(const From* src, void* dst, Element to, int64_t n, cudaStream_t stream) {
  switch (to) {
    case Element::F32: launch(convert_kernel<From, float>, blocks_for(n), kThreads, stream, src, n, static_cast<float*>(dst)); break;
    case Element::F16: launch(convert_kernel<From, __half>, blocks_for(n), kThreads, stream, src, n, static_cast<__half*>(dst)); break;
    case Element::BF16: launch(convert_kernel<From, __nv_bfloat16>, blocks_for(n), kThreads, stream, src, n, static_cast<__nv_bfloat16*>(dst)); break;
  }
}

}  // namespace

void convert(const void* src, Element from, void* dst, Element to, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  switch (from) {
    case Element::F32: convert_from(static_cast<const float*>(src), dst, to, n, stream); break;
    case Element::F16: convert_from(static_cast<const __half*>(src), dst, to, n, stream); break;
    case Element::BF16: convert_from(static_cast<const __nv_bfloat16*>(src), dst, to, n, stream); break;
  }
  check_launch("convert");
}

void rope_cache(float* qkv, int64_t stride, const int64_t* positions, int64_t rows, int heads, int kv_heads, int head_dim,
                const float* inv_freq, float* keys, float* values, cudaStream_t stream) {
  if (head_dim <= 0 || head_dim % 2 != 0 || heads < 0 || kv_heads < 0)
    throw std::invalid_argument("bmrt::cuda::rope_cache: head_dim must be even and positive");
  const int64_t n = rows * (heads + kv_heads) * (head_dim / 2);
  if (n <= 0) return;
  launch(rope_cache_kernel, blocks_for(n), kThreads, stream, qkv, stride, positions, rows, heads, kv_heads, head_dim, inv_freq, keys, values);
  check_launch("rope_cache");
}

template <class T>
void attention(const float* q, int64_t q_stride, const float* keys, const float* values, const int64_t* start, int64_t tokens,
               int heads, int kv_heads, int head_dim, int sliding_window, float scale, T* out, cudaStream_t stream) {
  if (tokens <= 0 || heads <= 0) return;
  if (kv_heads <= 0 || heads % kv_heads != 0)
    throw std::invalid_argument("bmrt::cuda::attention: heads must be a multiple of kv_heads");
  if (head_dim <= 0 || head_dim > kMaxAttentionHeadDim)
    throw std::invalid_argument("bmrt::cuda::attention: head_dim must be 1..256");
  const AttentionArgs<T> a{q, q_stride, keys, values, start, out, tokens, heads, kv_heads, head_dim, sliding_window, scale};
  // Decode and short steps: one query per block, the most blocks. Longer steps share K/V rows.
  if (tokens < 8) launch_attention<T, 1, 16>(a, stream);
  else launch_attention<T, 4, 8>(a, stream);
  check_launch("attention");
}

template <class T>
void silu_mul(const float* gate_up, int64_t rows, int64_t inter, T* out, cudaStream_t stream) {
  if (rows <= 0 || inter <= 0) return;
  launch(silu_mul_kernel<T>, blocks_for(rows * inter), kThreads, stream, gate_up, rows, inter, out);
  check_launch("silu_mul");
}

void add_bias(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  launch(add_bias_kernel, blocks_for(rows * cols), kThreads, stream, y, bias, rows, cols);
  check_launch("add_bias");
}

template <class T>
void gemv(const T* w, const T* x, int64_t rows, int64_t cols, int64_t tokens, float* y, bool accumulate, cudaStream_t stream) {
  if (rows <= 0 || tokens <= 0) return;
  if (!gemv_fits<T>(cols, tokens)) throw std::invalid_argument("bmrt::cuda::gemv: needs 1..4 tokens and rows of whole 16-byte vectors");
  const int64_t vectors = cols * int64_t(sizeof(T)) / 16;
  const int64_t blocks = (rows + kGemvWarps - 1) / kGemvWarps;
  if (blocks > INT_MAX) throw std::invalid_argument("bmrt::cuda::gemv: too many rows");
  const dim3 grid(static_cast<unsigned>(blocks)), block(kGemvWarps * 32);
  switch (tokens) {
    case 1: launch(gemv_kernel<T, 1>, grid, block, stream, w, x, rows, vectors, y, accumulate); break;
    case 2: launch(gemv_kernel<T, 2>, grid, block, stream, w, x, rows, vectors, y, accumulate); break;
    case 3: launch(gemv_kernel<T, 3>, grid, block, stream, w, x, rows, vectors, y, accumulate); break;
    default: launch(gemv_kernel<T, 4>, grid, block, stream, w, x, rows, vectors, y, accumulate); break;
  }
  check_launch("gemv");
}

template <class T>
void dummy_fill(T* out, int64_t n, uint32_t key, float scale, float offset, cudaStream_t stream) {
  if (n <= 0) return;
  launch(dummy_fill_kernel<T>, blocks_for(n), kThreads, stream, out, n, key, scale, offset);
  check_launch("dummy_fill");
}

void copy_kernel(const void* src, void* dst, int64_t bytes, cudaStream_t stream) {
  if (bytes <= 0) return;
  const auto* s = static_cast<const unsigned char*>(src);
  auto* d = static_cast<unsigned char*>(dst);
  if ((reinterpret_cast<uintptr_t>(s) | reinterpret_cast<uintptr_t>(d)) % 16 == 0) {
    const int64_t vectors = bytes / 16;
    const int tail = static_cast<int>(bytes % 16);
    // At least one block so the tail is copied when there are no whole vectors.
    launch(copy_kernel_vec, vectors > 0 ? blocks_for(vectors) : 1, kThreads, stream, reinterpret_cast<const uint4*>(s), reinterpret_cast<uint4*>(d), vectors, s + vectors * 16, d + vectors * 16, tail);
  } else {
    launch(copy_kernel_bytes, blocks_for(bytes), kThreads, stream, s, d, bytes);
  }
  check_launch("copy_kernel");
}

// The element types every templated function is built for.
#define BMRT_INSTANTIATE(T)                                                                                                   \
  template void rms_norm<T>(const float*, const float*, int64_t, int, float, T*, cudaStream_t);                             \
  template void attention<T>(const float*, int64_t, const float*, const float*, const int64_t*, int64_t, int, int, int, int, \
                             float, T*, cudaStream_t);                                                                       \
  template void silu_mul<T>(const float*, int64_t, int64_t, T*, cudaStream_t);                                              \
  template void gemv<T>(const T*, const T*, int64_t, int64_t, int64_t, float*, bool, cudaStream_t);                          \
  template void dummy_fill<T>(T*, int64_t, uint32_t, float, float, cudaStream_t);
BMRT_INSTANTIATE(float)
BMRT_INSTANTIATE(__nv_bfloat16)
BMRT_INSTANTIATE(__half)
#undef BMRT_INSTANTIATE

}  // namespace bmrt::cuda
