// CUDA kernels of a decoder block (see cuda_kernels.cuh): elementwise kernels with grid-stride
// loops and 64-bit indices, a block-per-row RMSNorm, and a warp-split online-softmax attention.
// Plain CUDA (warp shuffles only), so it runs on any sm_70+ GPU; tuned with Hopper in mind.
#include "cuda_kernels.cuh"

#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

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

// ---------------------------------------------------------------------------------------------
// RMSNorm: one block per row (grid-stride over rows), fp32 partial sums per thread, then a warp
// and a block tree reduction.

// x and out may be the same buffer: each thread rereads x[i] just before writing out[i].
__global__ void rms_norm_kernel(const float* x, const float* __restrict__ weight, int64_t rows, int dim, float eps,
                                float* out) {
  __shared__ float warp_sums[32];
  __shared__ float row_sum;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * dim;
    float* yr = out + r * dim;
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
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = weight[i] * (xr[i] * inv);
    __syncthreads();  // warp_sums and row_sum are rewritten for the next row
  }
}

// ---------------------------------------------------------------------------------------------
// Elementwise kernels.

__global__ void to_bf16_kernel(const float* __restrict__ x, int64_t n, __nv_bfloat16* __restrict__ out) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) out[i] = __float2bfloat16_rn(x[i]);
}

__global__ void to_half_kernel(const float* __restrict__ x, int64_t n, __half* __restrict__ out) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) out[i] = __float2half_rn(x[i]);
}

// One thread per (row, head of q or k, pair j): the angle is recomputed per head, which keeps a
// decode (one row) spread over thousands of threads instead of a serial loop over the heads.
__global__ void rope_kernel(float* __restrict__ q, float* __restrict__ k, const int64_t* __restrict__ positions,
                            int64_t rows, int heads, int kv_heads, int head_dim, const float* __restrict__ inv_freq) {
  const int half = head_dim / 2, all_heads = heads + kv_heads;
  const int64_t n = rows * all_heads * half;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const int j = static_cast<int>(i % half);
    const int64_t rest = i / half;
    const int hh = static_cast<int>(rest % all_heads);
    const int64_t r = rest / all_heads;
    float* v = hh < heads ? q + (r * heads + hh) * head_dim : k + (r * kv_heads + (hh - heads)) * head_dim;
    // fp32 angle and the precise cosf/sinf (not __cosf): positions reach 1e5 rad and more.
    const float angle = static_cast<float>(positions[r]) * inv_freq[j];
    const float c = cosf(angle), s = sinf(angle);
    const float a = v[j], b = v[j + half];
    v[j] = a * c - b * s;
    v[j + half] = b * c + a * s;
  }
}

__global__ void silu_mul_kernel(float* __restrict__ gate, const float* __restrict__ up, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const float g = gate[i];
    gate[i] = g / (1.0f + expf(-g)) * up[i];  // same order as the CPU; g -> -inf gives -0, not NaN
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

struct AttentionArgs {
  const float* q;
  const float* keys;
  const float* values;
  float* out;
  int64_t start, tokens;
  int heads, kv_heads, head_dim, sliding_window;
  float scale;
};

template <int DPL, int QT, int NW>
__global__ void __launch_bounds__(NW * 32, 1) attention_kernel(const AttentionArgs a) {
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
  const int64_t q_stride = int64_t(a.heads) * a.head_dim, kv_stride = int64_t(a.kv_heads) * a.head_dim;
  const float* keys = a.keys + int64_t(kv_head) * a.head_dim;
  const float* values = a.values + int64_t(kv_head) * a.head_dim;

  // Each query's key rows [lo, hi); a query past `tokens` (short last tile) gets an empty range.
  int64_t lo[QT], hi[QT];
  float qv[QT][DPL], acc[QT][DPL], m[QT], l[QT];
  int64_t end = 0;
#pragma unroll
  for (int t = 0; t < QT; t++) {
    const bool valid = t0 + t < a.tokens;
    const int64_t p = a.start + t0 + t;
    lo[t] = !valid ? 0 : a.sliding_window > 0 && p >= a.sliding_window ? p - a.sliding_window + 1 : 0;
    hi[t] = valid ? p + 1 : 0;
    if (hi[t] > end) end = hi[t];
    const float* qt = a.q + (valid ? t0 + t : 0) * q_stride + int64_t(head) * a.head_dim;
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
    a.out[(t0 + t) * q_stride + int64_t(head) * a.head_dim + d] = o / sum;
  }
}

template <int QT, int NW>
void launch_attention(const AttentionArgs& a, cudaStream_t stream) {
  const int64_t blocks = (a.tokens + QT - 1) / QT * a.heads;
  if (blocks > INT_MAX) throw std::invalid_argument("bmrt::cuda::attention: too many tokens for one launch");
  const dim3 grid(static_cast<unsigned>(blocks)), block(NW * 32);
  switch ((a.head_dim + 31) / 32) {  // registers per lane: one template instance per size
    case 1: attention_kernel<1, QT, NW><<<grid, block, 0, stream>>>(a); break;
    case 2: attention_kernel<2, QT, NW><<<grid, block, 0, stream>>>(a); break;
    case 3: attention_kernel<3, QT, NW><<<grid, block, 0, stream>>>(a); break;
    case 4: attention_kernel<4, QT, NW><<<grid, block, 0, stream>>>(a); break;
    case 5: attention_kernel<5, QT, NW><<<grid, block, 0, stream>>>(a); break;
    case 6: attention_kernel<6, QT, NW><<<grid, block, 0, stream>>>(a); break;
    case 7: attention_kernel<7, QT, NW><<<grid, block, 0, stream>>>(a); break;
    case 8: attention_kernel<8, QT, NW><<<grid, block, 0, stream>>>(a); break;
    default: throw std::invalid_argument("bmrt::cuda::attention: head_dim over 256");
  }
}

}  // namespace

void rms_norm(const float* x, const float* weight, int64_t rows, int dim, float eps, float* out, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return;
  // Up to 1024 threads per row (a decode row is one block: wide is faster); whole warps.
  const int threads = dim >= 1024 ? 1024 : (dim + 31) / 32 * 32;
  const unsigned blocks = static_cast<unsigned>(rows < 65535 ? rows : 65535);
  rms_norm_kernel<<<blocks, threads, 0, stream>>>(x, weight, rows, dim, eps, out);
  check_launch("rms_norm");
}

void to_bf16(const float* x, int64_t n, __nv_bfloat16* out, cudaStream_t stream) {
  if (n <= 0) return;
  to_bf16_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n, out);
  check_launch("to_bf16");
}

void to_half(const float* x, int64_t n, __half* out, cudaStream_t stream) {
  if (n <= 0) return;
  to_half_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n, out);
  check_launch("to_half");
}

void rope(float* q, float* k, const int64_t* positions, int64_t rows, int heads, int kv_heads, int head_dim,
          const float* inv_freq, cudaStream_t stream) {
  if (head_dim <= 0 || head_dim % 2 != 0 || heads < 0 || kv_heads < 0)
    throw std::invalid_argument("bmrt::cuda::rope: head_dim must be even and positive");
  const int64_t n = rows * (heads + kv_heads) * (head_dim / 2);
  if (n <= 0) return;
  rope_kernel<<<blocks_for(n), kThreads, 0, stream>>>(q, k, positions, rows, heads, kv_heads, head_dim, inv_freq);
  check_launch("rope");
}

void attention(const float* q, const float* keys, const float* values, int64_t start, int64_t tokens, int heads,
               int kv_heads, int head_dim, int sliding_window, float scale, float* out, cudaStream_t stream) {
  if (tokens <= 0 || heads <= 0) return;
  if (kv_heads <= 0 || heads % kv_heads != 0)
    throw std::invalid_argument("bmrt::cuda::attention: heads must be a multiple of kv_heads");
  if (head_dim <= 0 || head_dim > kMaxAttentionHeadDim)
    throw std::invalid_argument("bmrt::cuda::attention: head_dim must be 1..256");
  if (start < 0) throw std::invalid_argument("bmrt::cuda::attention: negative start");
  const AttentionArgs a{q, keys, values, out, start, tokens, heads, kv_heads, head_dim, sliding_window, scale};
  // Decode and short steps: one query per block, the most blocks. Longer steps share K/V rows.
  if (tokens < 8) launch_attention<1, 16>(a, stream);
  else launch_attention<4, 8>(a, stream);
  check_launch("attention");
}

void silu_mul(float* gate, const float* up, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  silu_mul_kernel<<<blocks_for(n), kThreads, 0, stream>>>(gate, up, n);
  check_launch("silu_mul");
}

void add_bias(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  add_bias_kernel<<<blocks_for(rows * cols), kThreads, 0, stream>>>(y, bias, rows, cols);
  check_launch("add_bias");
}

void copy_kernel(const void* src, void* dst, int64_t bytes, cudaStream_t stream) {
  if (bytes <= 0) return;
  const auto* s = static_cast<const unsigned char*>(src);
  auto* d = static_cast<unsigned char*>(dst);
  if ((reinterpret_cast<uintptr_t>(s) | reinterpret_cast<uintptr_t>(d)) % 16 == 0) {
    const int64_t vectors = bytes / 16;
    const int tail = static_cast<int>(bytes % 16);
    // At least one block so the tail is copied when there are no whole vectors.
    copy_kernel_vec<<<vectors > 0 ? blocks_for(vectors) : 1, kThreads, 0, stream>>>(
        reinterpret_cast<const uint4*>(s), reinterpret_cast<uint4*>(d), vectors, s + vectors * 16, d + vectors * 16, tail);
  } else {
    copy_kernel_bytes<<<blocks_for(bytes), kThreads, 0, stream>>>(s, d, bytes);
  }
  check_launch("copy_kernel");
}

}  // namespace bmrt::cuda
