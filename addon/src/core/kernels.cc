// CPU kernels for the decoder block: weight formats, the matrix products with runtime dispatch,
// and the machine probes the benchmarks compare against.
//
// linear() has two shapes of work:
//  - decode (a few tokens): memory-bound. Each weight is loaded once and used for every token;
//    rows are split among threads, four rows at a time for independent load streams.
//  - prefill (many tokens): compute-bound. Tiles of 4 tokens x 6 weight rows keep 24 accumulators
//    in registers along K; weight rows stay in cache while every token tile passes over them.
//    bf16 weights use the AVX512_BF16 dot product with activations rounded to bf16; other
//    formats are widened to fp32 one block of rows at a time.
#include "kernels.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#define BMRT_X86 1
#include <immintrin.h>
#ifdef _MSC_VER
#include <intrin.h>
#define BMRT_TARGET(x)
#else
#define BMRT_TARGET(x) __attribute__((target(x)))
#endif
#define BMRT_AVX512 BMRT_TARGET("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
#define BMRT_AVX512BF16 BMRT_TARGET("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")
#define BMRT_AVX2 BMRT_TARGET("avx2,fma,f16c")
#endif

namespace bmrt {

// ---------------------------------------------------------------------------------------------
// Formats and conversions

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::F32: return "f32";
    case WeightFormat::BF16: return "bf16";
    case WeightFormat::F16: return "f16";
    case WeightFormat::Q8: return "int8";
    case WeightFormat::Q4: return "int4";
  }
  return "?";
}

int64_t weight_format_bytes(WeightFormat f, int64_t rows, int64_t cols) {
  switch (f) {
    case WeightFormat::F32: return rows * cols * 4;
    case WeightFormat::BF16:
    case WeightFormat::F16: return rows * cols * 2;
    case WeightFormat::Q8: return rows * cols;        // scales are allocated separately
    case WeightFormat::Q4: return rows * ((cols + 31) / 32) * 16;  // a short last group is padded
  }
  return 0;
}

float bf16_to_float(uint16_t bits) {
  uint32_t u = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t float_to_bf16(float value) {
  uint32_t u;
  std::memcpy(&u, &value, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu) != 0) return uint16_t((u >> 16) | 0x40);  // keep NaN a NaN
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exponent = 127 - 15 + 1;
      while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        exponent--;
      }
      bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
  } else if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int32_t exponent = int32_t((x >> 23) & 0xffu);
  uint32_t mantissa = x & 0x7fffffu;
  if (exponent == 0xff) return uint16_t(sign | 0x7c00u | (mantissa ? 0x200u : 0));
  int32_t e = exponent - 127 + 15;
  if (e >= 0x1f) return uint16_t(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return uint16_t(sign);
    mantissa |= 0x800000u;
    const int shift = 14 - e;
    uint32_t half = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1u))) half++;
    return uint16_t(sign | half);
  }
  uint32_t half = (uint32_t(e) << 10) | (mantissa >> 13);
  const uint32_t rest = mantissa & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) half++;  // may carry into the exponent: correct
  return uint16_t(sign | half);
}

void quantize_q8(const float* src, int64_t rows, int64_t cols, int8_t* q, float* scales) {
  for (int64_t r = 0; r < rows; r++) {
    const float* row = src + r * cols;
    float absmax = 0;
    for (int64_t c = 0; c < cols; c++) absmax = std::max(absmax, std::abs(row[c]));
    const float scale = absmax / 127.0f;
    const float inv = scale > 0 ? 1.0f / scale : 0.0f;
    scales[r] = scale;
    for (int64_t c = 0; c < cols; c++) q[r * cols + c] = int8_t(std::lround(std::clamp(row[c] * inv, -127.0f, 127.0f)));
  }
}

void quantize_q4(const float* src, int64_t rows, int64_t cols, uint8_t* q, float* scales) {
  const int64_t groups = (cols + 31) / 32;  // per row; a short last group is padded with zeros
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t g = 0; g < groups; g++) {
      float v[32] = {};
      const int64_t len = std::min<int64_t>(32, cols - g * 32);
      std::copy(src + r * cols + g * 32, src + r * cols + g * 32 + len, v);
      float absmax = 0;
      for (int i = 0; i < 32; i++) absmax = std::max(absmax, std::abs(v[i]));
      // Symmetric levels -7..7 (the 16th level, -8, is left unused so the grid is centred on zero).
      const float scale = absmax / 7.0f;
      const float inv = scale > 0 ? 1.0f / scale : 0.0f;
      scales[r * groups + g] = scale;
      uint8_t* out = q + (r * groups + g) * 16;
      for (int j = 0; j < 16; j++) {
        const int lo = int(std::lround(std::clamp(v[j] * inv, -7.0f, 7.0f))) + 8;
        const int hi = int(std::lround(std::clamp(v[j + 16] * inv, -7.0f, 7.0f))) + 8;
        out[j] = uint8_t(lo | (hi << 4));
      }
    }
  }
}

// One row of W as fp32 (any format).
static void dequantize_row(const Matrix& w, int64_t r, float* out) {
  const int64_t cols = w.cols;
  switch (w.format) {
    case WeightFormat::F32: std::memcpy(out, static_cast<const float*>(w.data) + r * cols, cols * 4); break;
    case WeightFormat::BF16: {
      const uint16_t* p = static_cast<const uint16_t*>(w.data) + r * cols;
      for (int64_t c = 0; c < cols; c++) out[c] = bf16_to_float(p[c]);
      break;
    }
    case WeightFormat::F16: {
      const uint16_t* p = static_cast<const uint16_t*>(w.data) + r * cols;
      for (int64_t c = 0; c < cols; c++) out[c] = half_to_float(p[c]);
      break;
    }
    case WeightFormat::Q8: {
      const int8_t* p = static_cast<const int8_t*>(w.data) + r * cols;
      for (int64_t c = 0; c < cols; c++) out[c] = w.scales[r] * p[c];
      break;
    }
    case WeightFormat::Q4: {
      const int64_t groups = (cols + 31) / 32;
      const uint8_t* p = static_cast<const uint8_t*>(w.data) + r * groups * 16;
      const float* s = w.scales + r * groups;
      for (int64_t c = 0; c < cols; c++) {
        const int64_t g = c / 32, j = c % 32;
        const uint8_t byte = p[g * 16 + (j % 16)];
        out[c] = s[g] * float(int(j < 16 ? byte & 0x0f : byte >> 4) - 8);
      }
      break;
    }
  }
}

void prepare_matrix(Matrix&) {}

void release_matrix(Matrix& m) {
  m.packed = nullptr;
  m.packed_bytes = 0;
}

void linear_reference(const Matrix& w, const float* x, int64_t n, const float* bias, float* y) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; r++) {
    dequantize_row(w, r, row.data());
    for (int64_t t = 0; t < n; t++) {
      double acc = bias ? bias[r] : 0.0;
      for (int64_t c = 0; c < w.cols; c++) acc += double(x[t * w.cols + c]) * row[c];
      y[t * w.rows + r] = float(acc);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatch

enum class Family { Scalar, Avx2, Avx512, Avx512Bf16 };

static Family detect() {
#ifdef BMRT_X86
#ifdef _MSC_VER
  int info[4];
  __cpuid(info, 0);
  const int max_leaf = info[0];
  __cpuid(info, 1);
  const bool osxsave = (info[2] & (1 << 27)) != 0, fma = (info[2] & (1 << 12)) != 0, f16c = (info[2] & (1 << 29)) != 0;
  if (!osxsave || max_leaf < 7) return Family::Scalar;
  const unsigned long long xcr0 = _xgetbv(0);
  __cpuidex(info, 7, 0);
  const bool avx2 = (info[1] & (1 << 5)) != 0 && (xcr0 & 0x6) == 0x6 && fma && f16c;
  const bool avx512 = (info[1] & (1 << 16)) && (info[1] & (1 << 17)) && (info[1] & (1 << 30)) && (info[1] & (1u << 31)) && (xcr0 & 0xe6) == 0xe6;
  __cpuidex(info, 7, 1);
  const bool bf16 = (info[0] & (1 << 5)) != 0;
#else
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const bool bf16 = __builtin_cpu_supports("avx512bf16");
#endif
  if (avx512 && bf16) return Family::Avx512Bf16;
  if (avx512) return Family::Avx512;
  if (avx2) return Family::Avx2;
#endif
  return Family::Scalar;
}

static const Family detected = detect();
static std::atomic<Family> active{detected};

static const char* family_name(Family f) {
  switch (f) {
    case Family::Scalar: return "scalar";
    case Family::Avx2: return "avx2";
    case Family::Avx512: return "avx512";
    case Family::Avx512Bf16: return "avx512bf16";
  }
  return "?";
}

std::string cpu_kernel_family() { return family_name(active.load()); }

bool force_kernel_family(const std::string& name) {
  if (name.empty()) {
    active = detected;
    return true;
  }
  for (Family f : {Family::Scalar, Family::Avx2, Family::Avx512, Family::Avx512Bf16}) {
    if (name == family_name(f)) {
      if (static_cast<int>(f) > static_cast<int>(detected)) return false;
      active = f;
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Portable kernels: widen each row to fp32, dot it with every token.

static float dot_scalar(const float* a, const float* b, int64_t n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; i++) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

#ifdef BMRT_X86
BMRT_AVX2 static float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  __m256 s = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  float total = _mm_cvtss_f32(h);
  for (; i < n; i++) total += a[i] * b[i];
  return total;
}
#endif

static void linear_rows_portable(const Matrix& w, const float* x, int64_t n, const float* bias, float* y, int64_t r0,
                                 int64_t r1, std::vector<float>& row, bool avx2) {
  row.resize(static_cast<size_t>(w.cols));
  for (int64_t r = r0; r < r1; r++) {
    dequantize_row(w, r, row.data());
    for (int64_t t = 0; t < n; t++) {
#ifdef BMRT_X86
      const float d = avx2 ? dot_avx2(row.data(), x + t * w.cols, w.cols) : dot_scalar(row.data(), x + t * w.cols, w.cols);
#else
      (void)avx2;
      const float d = dot_scalar(row.data(), x + t * w.cols, w.cols);
#endif
      y[t * w.rows + r] = d + (bias ? bias[r] : 0.0f);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AVX-512 kernels

#ifdef BMRT_X86

BMRT_AVX512 static inline __mmask16 tail_mask(int64_t remaining) {
  return remaining >= 16 ? __mmask16(0xffff) : remaining <= 0 ? __mmask16(0) : __mmask16((1u << remaining) - 1);
}

// 16 weights of row `p` from element c, widened to fp32 (masked past the end of the row).
template <WeightFormat F>
BMRT_AVX512 static inline __m512 load_weights(const void* p, int64_t c, __mmask16 m) {
  if constexpr (F == WeightFormat::F32) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(p) + c);
  } else if constexpr (F == WeightFormat::BF16) {
    __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + c);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else if constexpr (F == WeightFormat::F16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + c));
  } else {  // Q8 (row scale applied by the caller)
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, static_cast<const int8_t*>(p) + c)));
  }
}

template <WeightFormat F>
static inline const void* row_pointer(const Matrix& w, int64_t r) {
  if constexpr (F == WeightFormat::F32) return static_cast<const float*>(w.data) + r * w.cols;
  else if constexpr (F == WeightFormat::Q8) return static_cast<const int8_t*>(w.data) + r * w.cols;
  else return static_cast<const uint16_t*>(w.data) + r * w.cols;
}

// Decode: R rows x N tokens, each weight loaded once.
template <WeightFormat F, int N, int R>
BMRT_AVX512 static void gemv_block(const Matrix& w, const float* x, const float* bias, float* y, int64_t r0) {
  __m512 acc[N][R];
  for (int t = 0; t < N; t++)
    for (int i = 0; i < R; i++) acc[t][i] = _mm512_setzero_ps();
  const void* rows[R];
  for (int i = 0; i < R; i++) rows[i] = row_pointer<F>(w, r0 + i);
  const int64_t cols = w.cols;
  for (int64_t c = 0; c < cols; c += 16) {
    const __mmask16 m = tail_mask(cols - c);
    __m512 xv[N];
    for (int t = 0; t < N; t++) xv[t] = _mm512_maskz_loadu_ps(m, x + t * cols + c);
    for (int i = 0; i < R; i++) {
      const __m512 wv = load_weights<F>(rows[i], c, m);
      for (int t = 0; t < N; t++) acc[t][i] = _mm512_fmadd_ps(wv, xv[t], acc[t][i]);
    }
  }
  for (int i = 0; i < R; i++) {
    const float scale = F == WeightFormat::Q8 ? w.scales[r0 + i] : 1.0f;
    for (int t = 0; t < N; t++) y[t * w.rows + r0 + i] = _mm512_reduce_add_ps(acc[t][i]) * scale + (bias ? bias[r0 + i] : 0.0f);
  }
}

// int4: groups of 32 (16 bytes), one scale each.
template <int N, int R>
BMRT_AVX512 static void gemv_block_q4(const Matrix& w, const float* x, const float* bias, float* y, int64_t r0) {
  __m512 acc[N][R];
  for (int t = 0; t < N; t++)
    for (int i = 0; i < R; i++) acc[t][i] = _mm512_setzero_ps();
  const int64_t cols = w.cols, groups = (cols + 31) / 32;
  const __m128i low = _mm_set1_epi8(0x0f);
  const __m512 eight = _mm512_set1_ps(8.0f);
  for (int64_t g = 0; g < groups; g++) {
    // A short last group reads no x past the row's end (its padding weights are zero anyway).
    const __mmask16 m0 = tail_mask(cols - g * 32), m1 = tail_mask(std::max<int64_t>(0, cols - g * 32 - 16));
    __m512 x0[N], x1[N];
    for (int t = 0; t < N; t++) {
      x0[t] = _mm512_maskz_loadu_ps(m0, x + t * cols + g * 32);
      x1[t] = _mm512_maskz_loadu_ps(m1, x + t * cols + g * 32 + 16);
    }
    for (int i = 0; i < R; i++) {
      const int64_t r = r0 + i;
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint8_t*>(w.data) + (r * groups + g) * 16));
      const __m512 lo = _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(b, low))), eight);
      const __m512 hi = _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b, 4), low))), eight);
      const __m512 scale = _mm512_set1_ps(w.scales[r * groups + g]);
      for (int t = 0; t < N; t++) {
        const __m512 part = _mm512_fmadd_ps(hi, x1[t], _mm512_mul_ps(lo, x0[t]));
        acc[t][i] = _mm512_fmadd_ps(part, scale, acc[t][i]);
      }
    }
  }
  for (int i = 0; i < R; i++)
    for (int t = 0; t < N; t++) y[t * w.rows + r0 + i] = _mm512_reduce_add_ps(acc[t][i]) + (bias ? bias[r0 + i] : 0.0f);
}

template <WeightFormat F, int N>
BMRT_AVX512 static void gemv_rows(const Matrix& w, const float* x, const float* bias, float* y, int64_t r0, int64_t r1) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    if constexpr (F == WeightFormat::Q4) gemv_block_q4<N, 4>(w, x, bias, y, r);
    else gemv_block<F, N, 4>(w, x, bias, y, r);
  }
  for (; r < r1; r++) {
    if constexpr (F == WeightFormat::Q4) gemv_block_q4<N, 1>(w, x, bias, y, r);
    else gemv_block<F, N, 1>(w, x, bias, y, r);
  }
}

template <WeightFormat F>
BMRT_AVX512 static void gemv_avx512(const Matrix& w, const float* x, int64_t n, const float* bias, float* y, int64_t r0, int64_t r1) {
  switch (n) {
    case 1: gemv_rows<F, 1>(w, x, bias, y, r0, r1); break;
    case 2: gemv_rows<F, 2>(w, x, bias, y, r0, r1); break;
    case 3: gemv_rows<F, 3>(w, x, bias, y, r0, r1); break;
    default: gemv_rows<F, 4>(w, x, bias, y, r0, r1); break;
  }
}

// Prefill: T tokens x R rows of fp32 weights (rows `wr`, each `cols` long, possibly a widened copy).
template <int T, int R>
BMRT_AVX512 static void tile_f32(const float* const* wr, const float* x, int64_t cols, int64_t ldy, float* y, const float* bias) {
  __m512 acc[T][R];
  for (int t = 0; t < T; t++)
    for (int i = 0; i < R; i++) acc[t][i] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= cols; c += 16) {
    __m512 xv[T];
    for (int t = 0; t < T; t++) xv[t] = _mm512_loadu_ps(x + t * cols + c);
    for (int i = 0; i < R; i++) {
      const __m512 wv = _mm512_loadu_ps(wr[i] + c);
      for (int t = 0; t < T; t++) acc[t][i] = _mm512_fmadd_ps(wv, xv[t], acc[t][i]);
    }
  }
  if (c < cols) {
    const __mmask16 m = tail_mask(cols - c);
    for (int i = 0; i < R; i++) {
      const __m512 wv = _mm512_maskz_loadu_ps(m, wr[i] + c);
      for (int t = 0; t < T; t++) acc[t][i] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + t * cols + c), acc[t][i]);
    }
  }
  for (int t = 0; t < T; t++)
    for (int i = 0; i < R; i++) y[t * ldy + i] = _mm512_reduce_add_ps(acc[t][i]) + (bias ? bias[i] : 0.0f);
}

// Same over bf16 pairs with vdpbf16ps: weights and activations both bf16, fp32 sums.
template <int T, int R>
BMRT_AVX512BF16 static void tile_bf16(const uint16_t* const* wr, const uint16_t* x, int64_t cols, int64_t ldy, float* y, const float* bias) {
  __m512 acc[T][R];
  for (int t = 0; t < T; t++)
    for (int i = 0; i < R; i++) acc[t][i] = _mm512_setzero_ps();
  for (int64_t c = 0; c < cols; c += 32) {
    const __mmask32 m = cols - c >= 32 ? __mmask32(0xffffffffu) : __mmask32((1u << (cols - c)) - 1);
    __m512bh xv[T];
    for (int t = 0; t < T; t++) xv[t] = (__m512bh)_mm512_maskz_loadu_epi16(m, x + t * cols + c);
    for (int i = 0; i < R; i++) {
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, wr[i] + c);
      for (int t = 0; t < T; t++) acc[t][i] = _mm512_dpbf16_ps(acc[t][i], wv, xv[t]);
    }
  }
  for (int t = 0; t < T; t++)
    for (int i = 0; i < R; i++) y[t * ldy + i] = _mm512_reduce_add_ps(acc[t][i]) + (bias ? bias[i] : 0.0f);
}

constexpr int kTileTokens = 4, kTileRows = 6;

// Runs tile kernel K over all tokens for a block of up to kTileRows rows.
template <typename W, template <int, int> class Tile>
struct TileRunner;

template <int T, int R>
struct TileF32 {
  BMRT_AVX512 static void run(const float* const* wr, const float* x, int64_t cols, int64_t ldy, float* y, const float* bias) {
    tile_f32<T, R>(wr, x, cols, ldy, y, bias);
  }
};
template <int T, int R>
struct TileBf16 {
  BMRT_AVX512BF16 static void run(const uint16_t* const* wr, const uint16_t* x, int64_t cols, int64_t ldy, float* y, const float* bias) {
    tile_bf16<T, R>(wr, x, cols, ldy, y, bias);
  }
};

// Dispatches the remainder shapes (fewer tokens or rows than a full tile) to instantiations.
template <template <int, int> class Tile, int T, typename E>
static void tile_rows(int rows, const E* const* wr, const E* x, int64_t cols, int64_t ldy, float* y, const float* bias) {
  switch (rows) {
    case 1: Tile<T, 1>::run(wr, x, cols, ldy, y, bias); break;
    case 2: Tile<T, 2>::run(wr, x, cols, ldy, y, bias); break;
    case 3: Tile<T, 3>::run(wr, x, cols, ldy, y, bias); break;
    case 4: Tile<T, 4>::run(wr, x, cols, ldy, y, bias); break;
    case 5: Tile<T, 5>::run(wr, x, cols, ldy, y, bias); break;
    default: Tile<T, 6>::run(wr, x, cols, ldy, y, bias); break;
  }
}

template <template <int, int> class Tile, typename E>
static void gemm_block(int rows, const E* const* wr, const E* x, int64_t n, int64_t cols, int64_t ldy, float* y, const float* bias) {
  int64_t t = 0;
  for (; t + kTileTokens <= n; t += kTileTokens) tile_rows<Tile, kTileTokens>(rows, wr, x + t * cols, cols, ldy, y + t * ldy, bias);
  for (; t < n; t++) tile_rows<Tile, 1>(rows, wr, x + t * cols, cols, ldy, y + t * ldy, bias);
}

BMRT_AVX512 static void to_bf16_rows(const float* x, int64_t count, uint16_t* out) {
  int64_t i = 0;
  for (; i < count; i++) out[i] = float_to_bf16(x[i]);
}

#endif  // BMRT_X86

// ---------------------------------------------------------------------------------------------
// linear(): choose decode or prefill, split rows among threads.

constexpr int64_t kDecodeTokens = 4;

struct Scratch {
  std::vector<float> rows;           // widened weight rows of one block
  std::vector<uint16_t> activations; // x rounded to bf16 (shared by all threads of one call)
};

void linear(const Matrix& w, const float* x, int64_t n, const float* bias, float* y, ThreadPool& pool) {
  if (n <= 0) return;
  const Family family = active.load();
  const int threads = pool.size();
  thread_local std::vector<float> portable_row;

#ifdef BMRT_X86
  if (family >= Family::Avx512) {
    if (n <= kDecodeTokens) {
      // Enough tasks for balance, each a multiple of 4 rows.
      const int64_t per_task = std::max<int64_t>(4, ((w.rows + threads * 8 - 1) / (threads * 8) + 3) / 4 * 4);
      const int tasks = static_cast<int>((w.rows + per_task - 1) / per_task);
      pool.run(tasks, [&](int task, int) {
        const int64_t r0 = task * per_task, r1 = std::min(w.rows, r0 + per_task);
        for (int64_t t = 0; t < n; t += kDecodeTokens) {
          const int64_t count = std::min(kDecodeTokens, n - t);
          const float* xt = x + t * w.cols;
          float* yt = y + t * w.rows;
          switch (w.format) {
            case WeightFormat::F32: gemv_avx512<WeightFormat::F32>(w, xt, count, bias, yt, r0, r1); break;
            case WeightFormat::BF16: gemv_avx512<WeightFormat::BF16>(w, xt, count, bias, yt, r0, r1); break;
            case WeightFormat::F16: gemv_avx512<WeightFormat::F16>(w, xt, count, bias, yt, r0, r1); break;
            case WeightFormat::Q8: gemv_avx512<WeightFormat::Q8>(w, xt, count, bias, yt, r0, r1); break;
            case WeightFormat::Q4: gemv_avx512<WeightFormat::Q4>(w, xt, count, bias, yt, r0, r1); break;
          }
        }
      });
      return;
    }
    const int tasks = static_cast<int>((w.rows + kTileRows - 1) / kTileRows);
    if (w.format == WeightFormat::BF16 && family == Family::Avx512Bf16) {
      std::vector<uint16_t> xb(static_cast<size_t>(n * w.cols));
      to_bf16_rows(x, n * w.cols, xb.data());
      pool.run(tasks, [&](int task, int) {
        const int64_t r0 = int64_t(task) * kTileRows;
        const int rows = static_cast<int>(std::min<int64_t>(kTileRows, w.rows - r0));
        const uint16_t* wr[kTileRows];
        for (int i = 0; i < rows; i++) wr[i] = static_cast<const uint16_t*>(w.data) + (r0 + i) * w.cols;
        gemm_block<TileBf16>(rows, wr, xb.data(), n, w.cols, w.rows, y + r0, bias ? bias + r0 : nullptr);
      });
      return;
    }
    std::vector<std::vector<float>> widened(static_cast<size_t>(threads));
    pool.run(tasks, [&](int task, int thread) {
      const int64_t r0 = int64_t(task) * kTileRows;
      const int rows = static_cast<int>(std::min<int64_t>(kTileRows, w.rows - r0));
      const float* wr[kTileRows];
      if (w.format == WeightFormat::F32) {
        for (int i = 0; i < rows; i++) wr[i] = static_cast<const float*>(w.data) + (r0 + i) * w.cols;
      } else {
        std::vector<float>& buffer = widened[thread];
        buffer.resize(static_cast<size_t>(kTileRows * w.cols));
        for (int i = 0; i < rows; i++) {
          dequantize_row(w, r0 + i, buffer.data() + i * w.cols);
          wr[i] = buffer.data() + i * w.cols;
        }
      }
      gemm_block<TileF32>(rows, wr, x, n, w.cols, w.rows, y + r0, bias ? bias + r0 : nullptr);
    });
    return;
  }
#endif
  const bool avx2 = family == Family::Avx2;
  const int64_t per_task = std::max<int64_t>(1, (w.rows + threads * 4 - 1) / (threads * 4));
  const int tasks = static_cast<int>((w.rows + per_task - 1) / per_task);
  pool.run(tasks, [&](int task, int) {
    const int64_t r0 = task * per_task, r1 = std::min(w.rows, r0 + per_task);
    linear_rows_portable(w, x, n, bias, y, r0, r1, portable_row, avx2);
  });
}

// ---------------------------------------------------------------------------------------------
// Probes

static double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

#ifdef BMRT_X86
BMRT_AVX512 static float sum_avx512(const float* p, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

BMRT_AVX512 static double fma_chains(int64_t iterations) {
  __m512 a[12];
  const __m512 m = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps(float(i));
  for (int64_t k = 0; k < iterations; k++)
    for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], m, b);
  __m512 s = a[0];
  for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, a[i]);
  return _mm512_reduce_add_ps(s);
}

BMRT_AVX512BF16 static double bf16_chains(int64_t iterations) {
  __m512 a[12];
  const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3380);
  for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps(float(i));
  for (int64_t k = 0; k < iterations; k++)
    for (int i = 0; i < 12; i++) a[i] = _mm512_dpbf16_ps(a[i], x, y);
  __m512 s = a[0];
  for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, a[i]);
  return _mm512_reduce_add_ps(s);
}
#endif

double measure_read_bandwidth(ThreadPool& pool, double seconds) {
  const int64_t count = int64_t(1) << 28;  // 1 GiB of floats, far beyond any cache
  std::unique_ptr<float[]> buffer(new float[count]);
  const int threads = pool.size();
  pool.run(threads, [&](int task, int) {  // first touch by the thread that will read it
    const int64_t begin = count / threads * task, end = task + 1 == threads ? count : count / threads * (task + 1);
    for (int64_t i = begin; i < end; i++) buffer[i] = 1.0f;
  });
  std::atomic<double> sink{0};
  double best = 0;
  const auto start = std::chrono::steady_clock::now();
  do {
    const auto pass = std::chrono::steady_clock::now();
    pool.run(threads, [&](int task, int) {
      const int64_t begin = count / threads * task, len = count / threads;
      float s = 0;
#ifdef BMRT_X86
      if (active.load() >= Family::Avx512) s = sum_avx512(buffer.get() + begin, len);
      else
#endif
        for (int64_t i = 0; i < len; i += 16) s += buffer[begin + i];  // one float per cache line
      double expected = sink.load();
      while (!sink.compare_exchange_weak(expected, expected + s)) {}
    });
    best = std::max(best, double(count / threads * threads) * 4 / seconds_since(pass));
  } while (seconds_since(start) < seconds);
  return best;
}

static double measure_chains(ThreadPool& pool, double seconds, double flops_per_iteration, double (*chains)(int64_t)) {
  const int64_t iterations = 1 << 22;
  const int threads = pool.size();
  std::atomic<double> sink{0};
  double best = 0;
  const auto start = std::chrono::steady_clock::now();
  do {
    const auto pass = std::chrono::steady_clock::now();
    pool.run(threads, [&](int, int) {
      double v = chains(iterations), expected = sink.load();
      while (!sink.compare_exchange_weak(expected, expected + v)) {}
    });
    best = std::max(best, flops_per_iteration * iterations * threads / seconds_since(pass));
  } while (seconds_since(start) < seconds);
  return best;
}

double measure_fma_peak(ThreadPool& pool, double seconds) {
#ifdef BMRT_X86
  if (active.load() >= Family::Avx512) return measure_chains(pool, seconds, 12.0 * 16 * 2, fma_chains);
#endif
  (void)pool;
  (void)seconds;
  return 0;
}

double measure_bf16_peak(ThreadPool& pool, double seconds) {
#ifdef BMRT_X86
  if (active.load() == Family::Avx512Bf16) return measure_chains(pool, seconds, 12.0 * 32 * 2, bf16_chains);
#endif
  (void)pool;
  (void)seconds;
  return 0;
}

}  // namespace bmrt
