// AVX-512 kernels (F/BW/VL/DQ, plus AVX512_BF16 for the bf16 GEMM), compiled with function target
// attributes so one binary runs everywhere; cpu_features.cc decides whether they are called.
//
// All of them read the packed panels of kernels_internal.h: a 64-byte load gives 16 rows at one k
// (32 for bf16 pairs), so lanes are output rows and activations are broadcast.
//  - decode: one panel at a time, all n (<= 8) tokens per weight load, several independent
//    accumulators per token (split over k) to cover the FMA latency; weights are widened in
//    registers (bf16: shift/mask, f16: vcvtph2ps, int8: vpmovsxbd + vcvtdq2ps, int4: nibble
//    masks with the "- 8" folded into a per-group activation sum), accumulation in fp32.
//  - prefill: microkernel of up to 12 tokens x 32 rows (24 zmm accumulators), K blocked so the
//    weight block is reused by every token block while cached. fp32 weights are read in place,
//    f16/int8/int4 (and bf16 without AVX512_BF16) are first widened to an fp32 block; bf16 with
//    AVX512_BF16 uses vdpbf16ps on bf16 pairs of weights and of (rounded) activations.
#include "kernels_internal.h"

#ifdef BMRT_X86
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace bmrt {
namespace detail {
namespace {

constexpr int64_t kKc = 512;

// Decode streams are also prefetched in software, kPrefetch bytes ahead: the hardware prefetchers
// alone left 10-30% of the read bandwidth unused once the loop does more than load and add
// (conversions, several tokens). 8 KiB measured best among 1-16 KiB. Prefetches never fault, so
// running past the end of the buffer is harmless.
constexpr int64_t kPrefetch = 8192;

BMRT_AVX512 inline void prefetch_ahead(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p) + kPrefetch;
  for (int64_t i = 0; i < bytes; i += 64) _mm_prefetch(c + i, _MM_HINT_T0);
}  // prefill K block (a multiple of 32 for int4 groups, even for pairs)

BMRT_AVX512 inline __mmask16 row_mask(int64_t valid) {
  return valid >= 16 ? __mmask16(0xffff) : __mmask16((1u << std::max<int64_t>(valid, 0)) - 1);
}

// y[t][16p .. 16p+15] = v (+ bias), masked to the rows that exist.
BMRT_AVX512 inline void store_panel(const Job& job, int64_t p, int64_t t, __m512 v) {
  const int64_t rows = job.w->rows, r0 = p * kPanel;
  const __mmask16 m = row_mask(rows - r0);
  if (job.bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, job.bias + r0));
  _mm512_mask_storeu_ps(job.y + t * rows + r0, m, v);
}

// ---------------------------------------------------------------------------------------------
// Decode

// 16 rows at column k of a panel of format F (Q8: without its scale), widened to fp32.
template <WeightFormat F>
BMRT_AVX512 inline __m512 load_rows(const uint8_t* panel, int64_t k) {
  if constexpr (F == WeightFormat::F32) {
    return _mm512_load_ps(reinterpret_cast<const float*>(panel) + k * kPanel);
  } else if constexpr (F == WeightFormat::F16) {
    return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(panel) + k));
  } else {  // Q8
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(panel) + k)));
  }
}

// F32 / F16 / Q8 panels: acc[u][t] sums the k = u (mod U) terms of token t.
template <WeightFormat F, int N>
BMRT_AVX512 void decode_panel_simple(const Job& job, int64_t p) {
  constexpr int U = N >= 8 ? 1 : (8 + N - 1) / N;  // >= 8 independent chains (FMA latency x 2 pipes)
  const int64_t cols = job.w->cols;
  const uint8_t* panel = panel_ptr(*job.w, p);
  const uint8_t* weights = F == WeightFormat::Q8 ? panel + 64 : panel;
  const float* x[N];
  for (int t = 0; t < N; t++) x[t] = job.x + t * cols;
  __m512 acc[U][N];
  for (int u = 0; u < U; u++)
    for (int t = 0; t < N; t++) acc[u][t] = _mm512_setzero_ps();
  int64_t k = 0;
  constexpr int64_t bytes_per_k = F == WeightFormat::F32 ? 64 : F == WeightFormat::F16 ? 32 : 16;
  for (; k + U <= cols; k += U) {
    prefetch_ahead(weights + k * bytes_per_k, U * bytes_per_k);
    for (int u = 0; u < U; u++) {
      const __m512 wv = load_rows<F>(weights, k + u);
      for (int t = 0; t < N; t++) acc[u][t] = _mm512_fmadd_ps(wv, _mm512_set1_ps(x[t][k + u]), acc[u][t]);
    }
  }
  for (; k < cols; k++) {
    const __m512 wv = load_rows<F>(weights, k);
    for (int t = 0; t < N; t++) acc[0][t] = _mm512_fmadd_ps(wv, _mm512_set1_ps(x[t][k]), acc[0][t]);
  }
  for (int t = 0; t < N; t++) {
    __m512 s = acc[0][t];
    for (int u = 1; u < U; u++) s = _mm512_add_ps(s, acc[u][t]);
    if (F == WeightFormat::Q8) s = _mm512_mul_ps(s, _mm512_load_ps(reinterpret_cast<const float*>(panel)));
    store_panel(job, p, t, s);
  }
}

// BF16 panels hold pairs (k, k+1) per row in each 32-bit lane: k+1 is the lane with its low half
// cleared, k is the lane shifted left by 16. Both are exact fp32 values.
template <int N>
BMRT_AVX512 void decode_panel_bf16(const Job& job, int64_t p) {
  constexpr int U = N == 1 ? 4 : N <= 3 ? 2 : 1;  // 2 * U * N >= 8 chains
  const int64_t cols = job.w->cols, full_pairs = cols / 2;
  const __m512i* pairs = reinterpret_cast<const __m512i*>(panel_ptr(*job.w, p));
  const __m512i high = _mm512_set1_epi32(int(0xffff0000u));
  const float* x[N];
  for (int t = 0; t < N; t++) x[t] = job.x + t * cols;
  __m512 even[U][N], odd[U][N];
  for (int u = 0; u < U; u++)
    for (int t = 0; t < N; t++) even[u][t] = odd[u][t] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + U <= full_pairs; i += U) {
    prefetch_ahead(pairs + i, U * 64);
    for (int u = 0; u < U; u++) {
      const __m512i v = _mm512_load_si512(pairs + i + u);
      const __m512 w0 = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      const __m512 w1 = _mm512_castsi512_ps(_mm512_and_si512(v, high));
      const int64_t k = 2 * (i + u);
      for (int t = 0; t < N; t++) {
        even[u][t] = _mm512_fmadd_ps(w0, _mm512_set1_ps(x[t][k]), even[u][t]);
        odd[u][t] = _mm512_fmadd_ps(w1, _mm512_set1_ps(x[t][k + 1]), odd[u][t]);
      }
    }
  }
  for (; i < full_pairs; i++) {
    const __m512i v = _mm512_load_si512(pairs + i);
    const __m512 w0 = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    const __m512 w1 = _mm512_castsi512_ps(_mm512_and_si512(v, high));
    for (int t = 0; t < N; t++) {
      even[0][t] = _mm512_fmadd_ps(w0, _mm512_set1_ps(x[t][2 * i]), even[0][t]);
      odd[0][t] = _mm512_fmadd_ps(w1, _mm512_set1_ps(x[t][2 * i + 1]), odd[0][t]);
    }
  }
  if (cols & 1) {  // last column alone (its pair partner is zero padding)
    const __m512 w0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_load_si512(pairs + full_pairs), 16));
    for (int t = 0; t < N; t++) even[0][t] = _mm512_fmadd_ps(w0, _mm512_set1_ps(x[t][cols - 1]), even[0][t]);
  }
  for (int t = 0; t < N; t++) {
    __m512 s = _mm512_add_ps(even[0][t], odd[0][t]);
    for (int u = 1; u < U; u++) s = _mm512_add_ps(s, _mm512_add_ps(even[u][t], odd[u][t]));
    store_panel(job, p, t, s);
  }
}

// One int4 group (32 columns) of a panel: lo/hi[c][t] += nibble * x, for the low nibbles
// (columns j) and high nibbles (j + 16); c alternates over j to give more independent chains.
template <int N, int C>
BMRT_AVX512 inline void q4_group(const uint8_t* nibbles, const float* const* xg, __m512 (&lo)[C][N], __m512 (&hi)[C][N]) {
  const __m512i mask = _mm512_set1_epi32(0x0f);
  for (int j = 0; j < 16; j++) {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(nibbles) + j));
    const __m512 l = _mm512_cvtepi32_ps(_mm512_and_si512(v, mask));
    const __m512 h = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
    const int c = j % C;
    for (int t = 0; t < N; t++) {
      lo[c][t] = _mm512_fmadd_ps(l, _mm512_set1_ps(xg[t][j]), lo[c][t]);
      hi[c][t] = _mm512_fmadd_ps(h, _mm512_set1_ps(xg[t][j + 16]), hi[c][t]);
    }
  }
}

// sum_k scale * (nibble - 8) * x = scale * (sum_k nibble * x - 8 * sum_k x), per group.
template <int N>
BMRT_AVX512 void decode_panel_q4(const Job& job, int64_t p) {
  constexpr int C = N == 1 ? 4 : N <= 3 ? 2 : 1;  // 2 * C * N >= 8 chains
  const int64_t cols = job.w->cols, groups = (cols + 31) / 32, full = cols / 32;
  const uint8_t* panel = panel_ptr(*job.w, p);
  __m512 acc[N];
  for (int t = 0; t < N; t++) acc[t] = _mm512_setzero_ps();
  alignas(64) float tail[N][32];  // the short last group's activations, zero-padded
  for (int64_t g = 0; g < groups; g++) {
    const float* xg[N];
    for (int t = 0; t < N; t++) {
      if (g < full) {
        xg[t] = job.x + t * cols + g * 32;
      } else {
        for (int j = 0; j < 32; j++) tail[t][j] = g * 32 + j < cols ? job.x[t * cols + g * 32 + j] : 0.0f;
        xg[t] = tail[t];
      }
    }
    __m512 lo[C][N], hi[C][N];
    for (int c = 0; c < C; c++)
      for (int t = 0; t < N; t++) lo[c][t] = hi[c][t] = _mm512_setzero_ps();
    const uint8_t* group = panel + g * 320;
    prefetch_ahead(group, 320);
    q4_group<N, C>(group + 64, xg, lo, hi);
    const __m512 scale = _mm512_load_ps(reinterpret_cast<const float*>(group));
    for (int t = 0; t < N; t++) {
      __m512 s = _mm512_add_ps(lo[0][t], hi[0][t]);
      for (int c = 1; c < C; c++) s = _mm512_add_ps(s, _mm512_add_ps(lo[c][t], hi[c][t]));
      s = _mm512_sub_ps(s, _mm512_set1_ps(8.0f * job.xsum[t * groups + g]));
      acc[t] = _mm512_fmadd_ps(scale, s, acc[t]);
    }
  }
  for (int t = 0; t < N; t++) store_panel(job, p, t, acc[t]);
}

template <int N>
BMRT_AVX512 void decode_n(const Job& job, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; p++) {
    switch (job.w->format) {
      case WeightFormat::F32: decode_panel_simple<WeightFormat::F32, N>(job, p); break;
      case WeightFormat::F16: decode_panel_simple<WeightFormat::F16, N>(job, p); break;
      case WeightFormat::Q8: decode_panel_simple<WeightFormat::Q8, N>(job, p); break;
      case WeightFormat::BF16: decode_panel_bf16<N>(job, p); break;
      case WeightFormat::Q4: decode_panel_q4<N>(job, p); break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Prefill

// C[M tokens][NP panels x 16 rows] over kc columns: w holds the first panel's [k][16] block,
// the second is `pstride` floats further; xp is the token block's [k][M] activations.
// The tile starts from y (later K blocks), the bias, or zero.
template <int M, int NP>
BMRT_AVX512 void ukernel_f32(const float* w, int64_t pstride, const float* xp, int64_t kc, float* y, int64_t ldy,
                             const float* bias, bool accumulate, __mmask16 m0, __mmask16 m1) {
  const __mmask16 masks[2] = {m0, m1};
  __m512 c[M][NP];
  for (int t = 0; t < M; t++)
    for (int h = 0; h < NP; h++)
      c[t][h] = accumulate ? _mm512_maskz_loadu_ps(masks[h], y + t * ldy + 16 * h)
                : bias     ? _mm512_maskz_loadu_ps(masks[h], bias + 16 * h)
                           : _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; k++) {
    const __m512 w0 = _mm512_loadu_ps(w + k * kPanel);
    const __m512 w1 = NP > 1 ? _mm512_loadu_ps(w + pstride + k * kPanel) : w0;
    const float* xk = xp + k * M;
    for (int t = 0; t < M; t++) {
      const __m512 b = _mm512_set1_ps(xk[t]);
      c[t][0] = _mm512_fmadd_ps(w0, b, c[t][0]);
      if (NP > 1) c[t][NP - 1] = _mm512_fmadd_ps(w1, b, c[t][NP - 1]);
    }
  }
  for (int t = 0; t < M; t++)
    for (int h = 0; h < NP; h++) _mm512_mask_storeu_ps(y + t * ldy + 16 * h, masks[h], c[t][h]);
}

using UkernelF32 = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, const float*, bool, __mmask16,
                            __mmask16);

template <int M>
constexpr UkernelF32 pick_f32(int np) {
  return np > 1 ? ukernel_f32<M, 2> : ukernel_f32<M, 1>;
}

UkernelF32 ukernel_f32_for(int64_t m, int np) {
  static const UkernelF32 table[12][2] = {
      {pick_f32<1>(1), pick_f32<1>(2)},   {pick_f32<2>(1), pick_f32<2>(2)},   {pick_f32<3>(1), pick_f32<3>(2)},
      {pick_f32<4>(1), pick_f32<4>(2)},   {pick_f32<5>(1), pick_f32<5>(2)},   {pick_f32<6>(1), pick_f32<6>(2)},
      {pick_f32<7>(1), pick_f32<7>(2)},   {pick_f32<8>(1), pick_f32<8>(2)},   {pick_f32<9>(1), pick_f32<9>(2)},
      {pick_f32<10>(1), pick_f32<10>(2)}, {pick_f32<11>(1), pick_f32<11>(2)}, {pick_f32<12>(1), pick_f32<12>(2)}};
  return table[m - 1][np - 1];
}

// Widens columns [k0, k0 + kc) of panel p to fp32 out[k][16] (k0 a multiple of 32).
BMRT_AVX512 void dequantize_block(const Matrix& w, int64_t p, int64_t k0, int64_t kc, float* out) {
  const uint8_t* panel = panel_ptr(w, p);
  switch (w.format) {
    case WeightFormat::F32: std::memcpy(out, reinterpret_cast<const float*>(panel) + k0 * kPanel, size_t(kc * kPanel * 4)); break;
    case WeightFormat::BF16: {
      const __m512i* pairs = reinterpret_cast<const __m512i*>(panel) + k0 / 2;
      const __m512i high = _mm512_set1_epi32(int(0xffff0000u));
      for (int64_t i = 0; i < (kc + 1) / 2; i++) {  // an odd kc writes one padding column more
        const __m512i v = _mm512_load_si512(pairs + i);
        _mm512_storeu_ps(out + (2 * i) * kPanel, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
        _mm512_storeu_ps(out + (2 * i + 1) * kPanel, _mm512_castsi512_ps(_mm512_and_si512(v, high)));
      }
      break;
    }
    case WeightFormat::F16:
      for (int64_t k = 0; k < kc; k++) _mm512_storeu_ps(out + k * kPanel, load_rows<WeightFormat::F16>(panel, k0 + k));
      break;
    case WeightFormat::Q8: {
      const __m512 scale = _mm512_load_ps(reinterpret_cast<const float*>(panel));
      for (int64_t k = 0; k < kc; k++)
        _mm512_storeu_ps(out + k * kPanel, _mm512_mul_ps(scale, load_rows<WeightFormat::Q8>(panel + 64, k0 + k)));
      break;
    }
    case WeightFormat::Q4: {
      const __m512i mask = _mm512_set1_epi32(0x0f);
      for (int64_t g = k0 / 32; g * 32 < k0 + kc; g++) {
        const uint8_t* group = panel + g * 320;
        const __m512 scale = _mm512_load_ps(reinterpret_cast<const float*>(group));
        const __m512 offset = _mm512_mul_ps(scale, _mm512_set1_ps(8.0f));
        float* o = out + (g * 32 - k0) * kPanel;
        for (int j = 0; j < 16; j++) {
          const __m512i v = _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(group + 64) + j));
          _mm512_storeu_ps(o + j * kPanel, _mm512_fmsub_ps(scale, _mm512_cvtepi32_ps(_mm512_and_si512(v, mask)), offset));
          _mm512_storeu_ps(o + (j + 16) * kPanel, _mm512_fmsub_ps(scale, _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4)), offset));
        }
      }
      break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Prefill with vdpbf16ps: same tile shape, over pairs of columns.

#if defined(_MSC_VER) && !defined(__clang__)
BMRT_AVX512BF16 inline __m512bh as_bh(__m512i v) {
  __m512bh r;
  std::memcpy(&r, &v, sizeof r);
  return r;
}
#else
BMRT_AVX512BF16 inline __m512bh as_bh(__m512i v) { return (__m512bh)v; }
#endif

template <int M, int NP>
BMRT_AVX512BF16 void ukernel_bf16(const __m512i* w, int64_t pstride, const uint32_t* xp, int64_t pairs, float* y,
                                  int64_t ldy, const float* bias, bool accumulate, __mmask16 m0, __mmask16 m1) {
  const __mmask16 masks[2] = {m0, m1};
  __m512 c[M][NP];
  for (int t = 0; t < M; t++)
    for (int h = 0; h < NP; h++)
      c[t][h] = accumulate ? _mm512_maskz_loadu_ps(masks[h], y + t * ldy + 16 * h)
                : bias     ? _mm512_maskz_loadu_ps(masks[h], bias + 16 * h)
                           : _mm512_setzero_ps();
  for (int64_t i = 0; i < pairs; i++) {
    const __m512bh w0 = as_bh(_mm512_load_si512(w + i));
    const __m512bh w1 = NP > 1 ? as_bh(_mm512_load_si512(w + pstride + i)) : w0;
    const uint32_t* xi = xp + i * M;
    for (int t = 0; t < M; t++) {
      const __m512bh b = as_bh(_mm512_set1_epi32(int(xi[t])));
      c[t][0] = _mm512_dpbf16_ps(c[t][0], w0, b);
      if (NP > 1) c[t][NP - 1] = _mm512_dpbf16_ps(c[t][NP - 1], w1, b);
    }
  }
  for (int t = 0; t < M; t++)
    for (int h = 0; h < NP; h++) _mm512_mask_storeu_ps(y + t * ldy + 16 * h, masks[h], c[t][h]);
}

using UkernelBf16 = void (*)(const __m512i*, int64_t, const uint32_t*, int64_t, float*, int64_t, const float*, bool,
                             __mmask16, __mmask16);

template <int M>
constexpr UkernelBf16 pick_bf16(int np) {
  return np > 1 ? ukernel_bf16<M, 2> : ukernel_bf16<M, 1>;
}

UkernelBf16 ukernel_bf16_for(int64_t m, int np) {
  static const UkernelBf16 table[12][2] = {
      {pick_bf16<1>(1), pick_bf16<1>(2)},   {pick_bf16<2>(1), pick_bf16<2>(2)},   {pick_bf16<3>(1), pick_bf16<3>(2)},
      {pick_bf16<4>(1), pick_bf16<4>(2)},   {pick_bf16<5>(1), pick_bf16<5>(2)},   {pick_bf16<6>(1), pick_bf16<6>(2)},
      {pick_bf16<7>(1), pick_bf16<7>(2)},   {pick_bf16<8>(1), pick_bf16<8>(2)},   {pick_bf16<9>(1), pick_bf16<9>(2)},
      {pick_bf16<10>(1), pick_bf16<10>(2)}, {pick_bf16<11>(1), pick_bf16<11>(2)}, {pick_bf16<12>(1), pick_bf16<12>(2)}};
  return table[m - 1][np - 1];
}

}  // namespace

void decode_avx512(const Job& job, int64_t p0, int64_t p1) {
  switch (job.n) {
    case 1: decode_n<1>(job, p0, p1); break;
    case 2: decode_n<2>(job, p0, p1); break;
    case 3: decode_n<3>(job, p0, p1); break;
    case 4: decode_n<4>(job, p0, p1); break;
    case 5: decode_n<5>(job, p0, p1); break;
    case 6: decode_n<6>(job, p0, p1); break;
    case 7: decode_n<7>(job, p0, p1); break;
    default: decode_n<8>(job, p0, p1); break;
  }
}

// Loop order per pair of panels: K blocks outside, token blocks inside, so the (widened) weight
// block of 32 rows x kKc columns is loaded from memory once and reused by all token blocks.
void gemm_avx512(const Job& job, int64_t p0, int64_t p1) {
  const Matrix& w = *job.w;
  const int64_t cols = w.cols, rows = w.rows, stride = panel_bytes(w.format, cols) / 4;
  const TokenBlocks blocks(job.n, job.mr);
  thread_local std::vector<float> widened;
  if (widened.size() < size_t(2 * (kKc + 1) * kPanel)) widened.resize(size_t(2 * (kKc + 1) * kPanel));
  for (int64_t p = p0; p < p1; p += 2) {
    const int np = p + 1 < p1 ? 2 : 1;
    const __mmask16 m0 = row_mask(rows - p * kPanel), m1 = row_mask(rows - (p + 1) * kPanel);
    const float* bias = job.bias ? job.bias + p * kPanel : nullptr;
    for (int64_t k0 = 0; k0 < cols; k0 += kKc) {
      const int64_t kc = std::min(kKc, cols - k0);
      const float* wb;
      int64_t pstride;
      if (w.format == WeightFormat::F32) {
        wb = reinterpret_cast<const float*>(panel_ptr(w, p)) + k0 * kPanel;
        pstride = stride;
      } else {
        pstride = (kKc + 1) * kPanel;
        for (int h = 0; h < np; h++) dequantize_block(w, p + h, k0, kc, widened.data() + h * pstride);
        wb = widened.data();
      }
      for (int64_t b = 0; b < blocks.count; b++) {
        const int64_t t0 = blocks.start(b), m = blocks.size(b);
        ukernel_f32_for(m, np)(wb, pstride, job.xp + t0 * cols + k0 * m, kc, job.y + t0 * rows + p * kPanel, rows,
                               bias, k0 > 0, m0, m1);
      }
    }
  }
}

void gemm_avx512bf16(const Job& job, int64_t p0, int64_t p1) {
  const Matrix& w = *job.w;
  const int64_t cols = w.cols, rows = w.rows, pairs = (cols + 1) / 2, kcp = kKc / 2;
  const int64_t stride = panel_bytes(w.format, cols) / 64;  // in 64-byte vectors
  const TokenBlocks blocks(job.n, job.mr);
  for (int64_t p = p0; p < p1; p += 2) {
    const int np = p + 1 < p1 ? 2 : 1;
    const __mmask16 m0 = row_mask(rows - p * kPanel), m1 = row_mask(rows - (p + 1) * kPanel);
    const float* bias = job.bias ? job.bias + p * kPanel : nullptr;
    const __m512i* panel = reinterpret_cast<const __m512i*>(panel_ptr(w, p));
    for (int64_t i0 = 0; i0 < pairs; i0 += kcp) {
      const int64_t len = std::min(kcp, pairs - i0);
      for (int64_t b = 0; b < blocks.count; b++) {
        const int64_t t0 = blocks.start(b), m = blocks.size(b);
        ukernel_bf16_for(m, np)(panel + i0, stride, job.xbp + t0 * pairs + i0 * m, len, job.y + t0 * rows + p * kPanel,
                                rows, bias, i0 > 0, m0, m1);
      }
    }
  }
}

// Round-to-nearest-even via vcvtne2ps2bf16; an odd count pairs the last value with zero.
namespace {

BMRT_AVX512BF16 void round_pairs(const float* src, int64_t count, uint32_t* dst) {
  int64_t i = 0;
  for (; i + 32 <= count; i += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
    std::memcpy(dst + i / 2, &v, 64);
  }
  if (i < count) {
    const int64_t rest = count - i;
    const __mmask16 lo = row_mask(rest), hi = row_mask(rest - 16);
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + i + 16), _mm512_maskz_loadu_ps(lo, src + i));
    std::memcpy(dst + i / 2, &v, size_t((rest + 1) / 2 * 4));
  }
}

// ---------------------------------------------------------------------------------------------
// Probes

BMRT_AVX512 double sum_floats(const float* p, int64_t n) {
  __m512 a[8];
  for (int j = 0; j < 8; j++) a[j] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 128 <= n; i += 128)
    for (int j = 0; j < 8; j++) a[j] = _mm512_add_ps(a[j], _mm512_loadu_ps(p + i + 16 * j));
  for (int j = 1; j < 8; j++) a[0] = _mm512_add_ps(a[0], a[j]);
  double total = _mm512_reduce_add_ps(a[0]);
  for (; i < n; i++) total += p[i];
  return total;
}

BMRT_AVX512 double fma_chains(int64_t iterations, double* flops) {
  constexpr int kChains = 16;  // > FMA latency x throughput on any AVX-512 core
  __m512 a[kChains];
  const __m512 m = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < kChains; i++) a[i] = _mm512_set1_ps(float(i));
  for (int64_t k = 0; k < iterations; k++)
    for (int i = 0; i < kChains; i++) a[i] = _mm512_fmadd_ps(a[i], m, b);
  for (int i = 1; i < kChains; i++) a[0] = _mm512_add_ps(a[0], a[i]);
  *flops = double(iterations) * kChains * 16 * 2;
  return _mm512_reduce_add_ps(a[0]);
}

BMRT_AVX512BF16 double bf16_chains(int64_t iterations, double* flops) {
  constexpr int kChains = 16;
  __m512 a[kChains];
  const __m512bh x = as_bh(_mm512_set1_epi16(0x3f80)), y = as_bh(_mm512_set1_epi16(0x3380));
  for (int i = 0; i < kChains; i++) a[i] = _mm512_set1_ps(float(i));
  for (int64_t k = 0; k < iterations; k++)
    for (int i = 0; i < kChains; i++) a[i] = _mm512_dpbf16_ps(a[i], x, y);
  for (int i = 1; i < kChains; i++) a[0] = _mm512_add_ps(a[0], a[i]);
  *flops = double(iterations) * kChains * 32 * 2;  // 32 bf16 products, each a multiply and an add
  return _mm512_reduce_add_ps(a[0]);
}

}  // namespace

// The entry points the header declares carry no target attribute (in C++ a declaration and a
// definition with different target attributes would make GCC treat them as multiversions).
void round_to_bf16_pairs_avx512bf16(const float* src, int64_t count, uint32_t* dst) { round_pairs(src, count, dst); }
double sum_floats_avx512(const float* p, int64_t n) { return sum_floats(p, n); }
double fma_chains_avx512(int64_t iterations, double* flops) { return fma_chains(iterations, flops); }
double bf16_chains_avx512bf16(int64_t iterations, double* flops) { return bf16_chains(iterations, flops); }

// Scores with one masked vector pass per 16 values of the head, a scalar softmax, then the
// weighted sum of values accumulated 16 lanes at a time.
BMRT_AVX512 void attend_avx512(const float* q, const float* keys, const float* values, int64_t count, int64_t stride, int dim,
                               float scale, float* scores, float* out) {
  float max = -INFINITY;
  for (int64_t j = 0; j < count; j++) {
    const float* k = keys + j * stride;
    __m512 acc = _mm512_setzero_ps();
    for (int d = 0; d < dim; d += 16) {
      const __mmask16 m = dim - d >= 16 ? __mmask16(0xffff) : __mmask16((1u << (dim - d)) - 1);
      acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + d), _mm512_maskz_loadu_ps(m, k + d), acc);
    }
    scores[j] = _mm512_reduce_add_ps(acc) * scale;
    max = scores[j] > max ? scores[j] : max;
  }
  float sum = 0;
  for (int64_t j = 0; j < count; j++) sum += (scores[j] = std::exp(scores[j] - max));
  const float inv = 1.0f / sum;
  for (int d = 0; d < dim; d += 16) {
    const __mmask16 m = dim - d >= 16 ? __mmask16(0xffff) : __mmask16((1u << (dim - d)) - 1);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = 0; j < count; j++) acc = _mm512_fmadd_ps(_mm512_set1_ps(scores[j]), _mm512_maskz_loadu_ps(m, values + j * stride + d), acc);
    _mm512_mask_storeu_ps(out + d, m, _mm512_mul_ps(acc, _mm512_set1_ps(inv)));
  }
}

}  // namespace detail
}  // namespace bmrt

#endif  // BMRT_X86
