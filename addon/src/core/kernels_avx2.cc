// AVX2 + FMA (+ F16C) kernels, for x86 CPUs without AVX-512.
//  - decode (n <= kDecodeMaxAvx2, not int4): like the AVX-512 decode, 16 rows as two ymm halves,
//    weights widened in registers, each panel streamed once.
//  - everything else: a microkernel of up to 6 tokens x 16 rows (12 ymm accumulators) over K
//    blocks; non-fp32 weights are first widened to an fp32 block (in L1). With n <= 6 it also
//    streams each panel once, which is how int4 decodes here.
#include "kernels_internal.h"

#ifdef BMRT_X86
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace bmrt {
namespace detail {
namespace {

constexpr int64_t kKc = 256;  // multiple of 32 (int4 groups)

BMRT_AVX2 inline __m256i lane_mask(int64_t valid) {  // lanes < valid all-ones
  const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::max<int64_t>(0, std::min<int64_t>(valid, 8)))), index);
}

template <int M>
BMRT_AVX2 void ukernel(const float* w, const float* xp, int64_t kc, float* y, int64_t ldy, const float* bias,
                       bool accumulate, int64_t valid) {
  const __m256i mask[2] = {lane_mask(valid), lane_mask(valid - 8)};
  __m256 c[M][2];
  for (int t = 0; t < M; t++)
    for (int h = 0; h < 2; h++)
      c[t][h] = accumulate ? _mm256_maskload_ps(y + t * ldy + 8 * h, mask[h])
                : bias     ? _mm256_maskload_ps(bias + 8 * h, mask[h])
                           : _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; k++) {
    const __m256 w0 = _mm256_loadu_ps(w + k * kPanel), w1 = _mm256_loadu_ps(w + k * kPanel + 8);
    for (int t = 0; t < M; t++) {
      const __m256 b = _mm256_broadcast_ss(xp + k * M + t);
      c[t][0] = _mm256_fmadd_ps(w0, b, c[t][0]);
      c[t][1] = _mm256_fmadd_ps(w1, b, c[t][1]);
    }
  }
  for (int t = 0; t < M; t++)
    for (int h = 0; h < 2; h++) _mm256_maskstore_ps(y + t * ldy + 8 * h, mask[h], c[t][h]);
}

using Ukernel = void (*)(const float*, const float*, int64_t, float*, int64_t, const float*, bool, int64_t);
const Ukernel kUkernels[6] = {ukernel<1>, ukernel<2>, ukernel<3>, ukernel<4>, ukernel<5>, ukernel<6>};

// Widens columns [k0, k0 + kc) of panel p to fp32 out[k][16]; int4 takes the portable path.
BMRT_AVX2 void dequantize_block(const Matrix& w, int64_t p, int64_t k0, int64_t kc, float* out) {
  const uint8_t* panel = panel_ptr(w, p);
  switch (w.format) {
    case WeightFormat::BF16: {
      const __m256i* pairs = reinterpret_cast<const __m256i*>(panel) + k0;  // 2 ymm per pair of columns
      const __m256i high = _mm256_set1_epi32(int(0xffff0000u));
      for (int64_t i = 0; i < (kc + 1) / 2; i++)
        for (int h = 0; h < 2; h++) {
          const __m256i v = _mm256_load_si256(pairs + 2 * i + h);
          _mm256_storeu_ps(out + 2 * i * kPanel + 8 * h, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
          _mm256_storeu_ps(out + (2 * i + 1) * kPanel + 8 * h, _mm256_castsi256_ps(_mm256_and_si256(v, high)));
        }
      break;
    }
    case WeightFormat::F16: {
      const __m128i* h = reinterpret_cast<const __m128i*>(panel) + 2 * k0;
      for (int64_t k = 0; k < 2 * kc; k++) _mm256_storeu_ps(out + 8 * k, _mm256_cvtph_ps(_mm_load_si128(h + k)));
      break;
    }
    case WeightFormat::Q8: {
      const float* scales = reinterpret_cast<const float*>(panel);
      const __m256 s0 = _mm256_loadu_ps(scales), s1 = _mm256_loadu_ps(scales + 8);
      const int8_t* q = reinterpret_cast<const int8_t*>(panel + 64) + k0 * kPanel;
      for (int64_t k = 0; k < kc; k++) {
        __m128i b;
        std::memcpy(&b, q + k * kPanel, 16);
        _mm256_storeu_ps(out + k * kPanel, _mm256_mul_ps(s0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b))));
        _mm256_storeu_ps(out + k * kPanel + 8, _mm256_mul_ps(s1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)))));
      }
      break;
    }
    case WeightFormat::Q4: {
      const __m256i mask = _mm256_set1_epi32(0x0f);
      for (int64_t g = k0 / 32; g * 32 < k0 + kc; g++) {
        const uint8_t* group = panel + g * 320;
        const float* scales = reinterpret_cast<const float*>(group);
        float* o = out + (g * 32 - k0) * kPanel;
        for (int h = 0; h < 2; h++) {  // rows 0-7, 8-15
          const __m256 scale = _mm256_loadu_ps(scales + 8 * h);
          const __m256 offset = _mm256_mul_ps(scale, _mm256_set1_ps(8.0f));
          for (int j = 0; j < 16; j++) {
            __m128i b;
            std::memcpy(&b, group + 64 + j * kPanel + 8 * h, 8);
            const __m256i v = _mm256_cvtepu8_epi32(b);
            _mm256_storeu_ps(o + j * kPanel + 8 * h, _mm256_fmsub_ps(scale, _mm256_cvtepi32_ps(_mm256_and_si256(v, mask)), offset));
            _mm256_storeu_ps(o + (j + 16) * kPanel + 8 * h,
                             _mm256_fmsub_ps(scale, _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4)), offset));
          }
        }
      }
      break;
    }
    default: dequantize_panel_portable(w, p, k0, kc, out); break;
  }
}

// ---------------------------------------------------------------------------------------------
// Decode (n <= kDecodeMaxAvx2): weights widened in registers, each panel streamed once.

// Rows 0-7 and 8-15 at column k of an F32 / F16 / Q8 panel (Q8 without its scale).
template <WeightFormat F>
BMRT_AVX2 inline void load_rows(const uint8_t* panel, int64_t k, __m256& lo, __m256& hi) {
  if constexpr (F == WeightFormat::F32) {
    const float* p = reinterpret_cast<const float*>(panel) + k * kPanel;
    lo = _mm256_load_ps(p);
    hi = _mm256_load_ps(p + 8);
  } else if constexpr (F == WeightFormat::F16) {
    const __m128i* p = reinterpret_cast<const __m128i*>(panel) + 2 * k;
    lo = _mm256_cvtph_ps(_mm_load_si128(p));
    hi = _mm256_cvtph_ps(_mm_load_si128(p + 1));
  } else {
    const __m128i b = _mm_load_si128(reinterpret_cast<const __m128i*>(panel) + k);
    lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
  }
}

BMRT_AVX2 inline void store_panel(const Job& job, int64_t p, int64_t t, __m256 lo, __m256 hi) {
  const int64_t rows = job.w->rows, r0 = p * kPanel;
  const __m256i m0 = lane_mask(rows - r0), m1 = lane_mask(rows - r0 - 8);
  if (job.bias) {
    lo = _mm256_add_ps(lo, _mm256_maskload_ps(job.bias + r0, m0));
    hi = _mm256_add_ps(hi, _mm256_maskload_ps(job.bias + r0 + 8, m1));
  }
  _mm256_maskstore_ps(job.y + t * rows + r0, m0, lo);
  _mm256_maskstore_ps(job.y + t * rows + r0 + 8, m1, hi);
}

template <WeightFormat F, int N>
BMRT_AVX2 void decode_panel_simple(const Job& job, int64_t p) {
  constexpr int U = N == 1 ? 4 : N == 2 ? 2 : 1;  // 2 * U * N >= 6..8 independent chains
  const int64_t cols = job.w->cols;
  const uint8_t* panel = panel_ptr(*job.w, p);
  const uint8_t* weights = F == WeightFormat::Q8 ? panel + 64 : panel;
  const float* x[N];
  for (int t = 0; t < N; t++) x[t] = job.x + t * cols;
  __m256 acc[U][N][2];
  for (int u = 0; u < U; u++)
    for (int t = 0; t < N; t++) acc[u][t][0] = acc[u][t][1] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + U <= cols; k += U)
    for (int u = 0; u < U; u++) {
      __m256 lo, hi;
      load_rows<F>(weights, k + u, lo, hi);
      for (int t = 0; t < N; t++) {
        const __m256 b = _mm256_broadcast_ss(x[t] + k + u);
        acc[u][t][0] = _mm256_fmadd_ps(lo, b, acc[u][t][0]);
        acc[u][t][1] = _mm256_fmadd_ps(hi, b, acc[u][t][1]);
      }
    }
  for (; k < cols; k++) {
    __m256 lo, hi;
    load_rows<F>(weights, k, lo, hi);
    for (int t = 0; t < N; t++) {
      const __m256 b = _mm256_broadcast_ss(x[t] + k);
      acc[0][t][0] = _mm256_fmadd_ps(lo, b, acc[0][t][0]);
      acc[0][t][1] = _mm256_fmadd_ps(hi, b, acc[0][t][1]);
    }
  }
  for (int t = 0; t < N; t++) {
    __m256 lo = acc[0][t][0], hi = acc[0][t][1];
    for (int u = 1; u < U; u++) lo = _mm256_add_ps(lo, acc[u][t][0]), hi = _mm256_add_ps(hi, acc[u][t][1]);
    if (F == WeightFormat::Q8) {
      const float* scales = reinterpret_cast<const float*>(panel);
      lo = _mm256_mul_ps(lo, _mm256_loadu_ps(scales));
      hi = _mm256_mul_ps(hi, _mm256_loadu_ps(scales + 8));
    }
    store_panel(job, p, t, lo, hi);
  }
}

// BF16 pairs (k, k+1) per 32-bit lane: k+1 = lane with the low half cleared, k = lane << 16.
template <int N>
BMRT_AVX2 void decode_panel_bf16(const Job& job, int64_t p) {
  constexpr int U = N == 1 ? 4 : N == 2 ? 2 : 1;
  const int64_t cols = job.w->cols, pairs = (cols + 1) / 2;
  const __m256i* w = reinterpret_cast<const __m256i*>(panel_ptr(*job.w, p));
  const __m256i high = _mm256_set1_epi32(int(0xffff0000u));
  const float* x[N];
  for (int t = 0; t < N; t++) x[t] = job.x + t * cols;
  __m256 acc[U][N][2];
  for (int u = 0; u < U; u++)
    for (int t = 0; t < N; t++) acc[u][t][0] = acc[u][t][1] = _mm256_setzero_ps();
  const int64_t full = cols / 2;  // pairs with both columns present
  int64_t i = 0;
  for (; i < full; i += U) {
    const int un = int(std::min<int64_t>(U, full - i));
    for (int u = 0; u < U; u++) {
      if (u >= un) break;
      for (int h = 0; h < 2; h++) {
        const __m256i v = _mm256_load_si256(w + 2 * (i + u) + h);
        const __m256 even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        const __m256 odd = _mm256_castsi256_ps(_mm256_and_si256(v, high));
        for (int t = 0; t < N; t++) {
          acc[u][t][h] = _mm256_fmadd_ps(even, _mm256_broadcast_ss(x[t] + 2 * (i + u)), acc[u][t][h]);
          acc[u][t][h] = _mm256_fmadd_ps(odd, _mm256_broadcast_ss(x[t] + 2 * (i + u) + 1), acc[u][t][h]);
        }
      }
    }
  }
  if (pairs > full) {  // odd cols: the last column pairs with zero padding
    for (int h = 0; h < 2; h++) {
      const __m256 even = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_load_si256(w + 2 * full + h), 16));
      for (int t = 0; t < N; t++) acc[0][t][h] = _mm256_fmadd_ps(even, _mm256_broadcast_ss(x[t] + cols - 1), acc[0][t][h]);
    }
  }
  for (int t = 0; t < N; t++) {
    __m256 lo = acc[0][t][0], hi = acc[0][t][1];
    for (int u = 1; u < U; u++) lo = _mm256_add_ps(lo, acc[u][t][0]), hi = _mm256_add_ps(hi, acc[u][t][1]);
    store_panel(job, p, t, lo, hi);
  }
}

template <int N>
BMRT_AVX2 void decode_n(const Job& job, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; p++) {
    switch (job.w->format) {
      case WeightFormat::F32: decode_panel_simple<WeightFormat::F32, N>(job, p); break;
      case WeightFormat::F16: decode_panel_simple<WeightFormat::F16, N>(job, p); break;
      case WeightFormat::Q8: decode_panel_simple<WeightFormat::Q8, N>(job, p); break;
      case WeightFormat::BF16: decode_panel_bf16<N>(job, p); break;
      case WeightFormat::Q4: break;  // not taken: int4 uses the GEMM path (see linear())
    }
  }
}

BMRT_AVX2 double sum_floats(const float* p, int64_t n) {
  __m256 a[8];
  for (int j = 0; j < 8; j++) a[j] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64)
    for (int j = 0; j < 8; j++) a[j] = _mm256_add_ps(a[j], _mm256_loadu_ps(p + i + 8 * j));
  for (int j = 1; j < 8; j++) a[0] = _mm256_add_ps(a[0], a[j]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, a[0]);
  double total = 0;
  for (float v : lanes) total += v;
  for (; i < n; i++) total += p[i];
  return total;
}

BMRT_AVX2 double fma_chains(int64_t iterations, double* flops) {
  constexpr int kChains = 12;
  __m256 a[kChains];
  const __m256 m = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < kChains; i++) a[i] = _mm256_set1_ps(float(i));
  for (int64_t k = 0; k < iterations; k++)
    for (int i = 0; i < kChains; i++) a[i] = _mm256_fmadd_ps(a[i], m, b);
  for (int i = 1; i < kChains; i++) a[0] = _mm256_add_ps(a[0], a[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, a[0]);
  *flops = double(iterations) * kChains * 8 * 2;
  return lanes[0];
}

}  // namespace

void gemm_avx2(const Job& job, int64_t p0, int64_t p1) {
  const Matrix& w = *job.w;
  const int64_t cols = w.cols, rows = w.rows;
  const TokenBlocks blocks(job.n, job.mr);
  thread_local std::vector<float> widened;
  if (widened.size() < size_t((kKc + 1) * kPanel)) widened.resize(size_t((kKc + 1) * kPanel));
  for (int64_t p = p0; p < p1; p++) {
    const int64_t valid = rows - p * kPanel;
    const float* bias = job.bias ? job.bias + p * kPanel : nullptr;
    for (int64_t k0 = 0; k0 < cols; k0 += kKc) {
      const int64_t kc = std::min(kKc, cols - k0);
      const float* wb;
      if (w.format == WeightFormat::F32) {
        wb = reinterpret_cast<const float*>(panel_ptr(w, p)) + k0 * kPanel;
      } else {
        dequantize_block(w, p, k0, kc, widened.data());
        wb = widened.data();
      }
      for (int64_t b = 0; b < blocks.count; b++) {
        const int64_t t0 = blocks.start(b), m = blocks.size(b);
        kUkernels[m - 1](wb, job.xp + t0 * cols + k0 * m, kc, job.y + t0 * rows + p * kPanel, rows, bias, k0 > 0, valid);
      }
    }
  }
}

void decode_avx2(const Job& job, int64_t p0, int64_t p1) {
  switch (job.n) {
    case 1: decode_n<1>(job, p0, p1); break;
    case 2: decode_n<2>(job, p0, p1); break;
    case 3: decode_n<3>(job, p0, p1); break;
    default: decode_n<4>(job, p0, p1); break;
  }
}

double sum_floats_avx2(const float* p, int64_t n) { return sum_floats(p, n); }
double fma_chains_avx2(int64_t iterations, double* flops) { return fma_chains(iterations, flops); }

}  // namespace detail
}  // namespace bmrt

#endif  // BMRT_X86
