// CPU kernels for the decoder block: weight formats and conversions, load-time quantisation, the
// packed weight layout (see kernels_internal.h), linear() with runtime dispatch and threading,
// and the machine probes the benchmarks compare against. The instruction-set-specific loops live
// in kernels_scalar.cc, kernels_avx2.cc and kernels_avx512.cc.
//
// linear() has two shapes of work:
//  - decode (n <= kDecodeMax tokens): memory-bound. Each packed panel (16 rows) is streamed once
//    and used for every token; panels are split among threads in contiguous ranges.
//  - prefill (more tokens): compute-bound GEMM. Activations are repacked per block of mr tokens
//    (rounded to bf16 pairs for bf16 weights on AVX512_BF16), threads take pairs of panels, and
//    a register-blocked microkernel computes mr tokens x 32 rows over K blocks.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <vector>

#include "kernels_internal.h"

namespace bmrt {

using detail::Family;

// ---------------------------------------------------------------------------------------------
// Formats, conversions, quantisation

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


// ---------------------------------------------------------------------------------------------
// Reference

// One row of W as fp32, read from `data` (any format).
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
    case WeightFormat::Q4: {  // groups of 32, the last one zero-padded when cols % 32 != 0
      const int64_t groups = (cols + 31) / 32;
      const uint8_t* p = static_cast<const uint8_t*>(w.data) + r * groups * 16;
      const float* s = w.scales + r * groups;
      for (int64_t c = 0; c < cols; c++) {
        const int64_t g = c / 32, i = c % 32;
        const uint8_t b = p[g * 16 + i % 16];
        out[c] = s[g] * float(int(i < 16 ? (b & 0x0f) : (b >> 4)) - 8);
      }
      break;
    }
  }
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
// Packing (layout described in kernels_internal.h)

namespace detail {

int64_t panel_bytes(WeightFormat f, int64_t cols) {
  const int64_t kp = padded_cols(cols);
  switch (f) {
    case WeightFormat::F32: return kp * kPanel * 4;
    case WeightFormat::BF16:
    case WeightFormat::F16: return kp * kPanel * 2;
    case WeightFormat::Q8: return 64 + kp * kPanel;
    case WeightFormat::Q4: return (cols + 31) / 32 * (64 + 256);
  }
  return 0;
}

// Writes panel p of w (rows 16p..16p+15, zero past the last row) into `out`.
static void pack_panel(const Matrix& w, int64_t p, uint8_t* out) {
  const int64_t cols = w.cols, kp = padded_cols(cols);
  const int64_t valid = std::min<int64_t>(kPanel, w.rows - p * kPanel);
  std::memset(out, 0, static_cast<size_t>(panel_bytes(w.format, cols)));
  for (int64_t j = 0; j < valid; j++) {
    const int64_t r = p * kPanel + j;
    switch (w.format) {
      case WeightFormat::F32: {
        const float* src = static_cast<const float*>(w.data) + r * cols;
        float* dst = reinterpret_cast<float*>(out);
        for (int64_t k = 0; k < cols; k++) dst[k * kPanel + j] = src[k];
        break;
      }
      case WeightFormat::BF16: {
        const uint16_t* src = static_cast<const uint16_t*>(w.data) + r * cols;
        uint16_t* dst = reinterpret_cast<uint16_t*>(out);
        for (int64_t k = 0; k < cols; k++) dst[(k / 2) * 2 * kPanel + j * 2 + (k & 1)] = src[k];
        break;
      }
      case WeightFormat::F16: {
        const uint16_t* src = static_cast<const uint16_t*>(w.data) + r * cols;
        uint16_t* dst = reinterpret_cast<uint16_t*>(out);
        for (int64_t k = 0; k < cols; k++) dst[k * kPanel + j] = src[k];
        break;
      }
      case WeightFormat::Q8: {
        const int8_t* src = static_cast<const int8_t*>(w.data) + r * cols;
        reinterpret_cast<float*>(out)[j] = w.scales[r];
        int8_t* dst = reinterpret_cast<int8_t*>(out + 64);
        for (int64_t k = 0; k < cols; k++) dst[k * kPanel + j] = src[k];
        break;
      }
      case WeightFormat::Q4: {
        const int64_t groups = (cols + 31) / 32;
        const uint8_t* src = static_cast<const uint8_t*>(w.data) + r * groups * 16;
        for (int64_t g = 0; g < groups; g++) {
          uint8_t* group = out + g * 320;
          reinterpret_cast<float*>(group)[j] = w.scales[r * groups + g];
          for (int b = 0; b < 16; b++) group[64 + b * kPanel + j] = src[g * 16 + b];
        }
        break;
      }
    }
  }
  (void)kp;
}

void dequantize_panel_portable(const Matrix& w, int64_t p, int64_t k0, int64_t kc, float* out) {
  const uint8_t* panel = panel_ptr(w, p);
  for (int64_t k = k0; k < k0 + kc; k++) {
    float* o = out + (k - k0) * kPanel;
    switch (w.format) {
      case WeightFormat::F32:
        std::memcpy(o, reinterpret_cast<const float*>(panel) + k * kPanel, kPanel * 4);
        break;
      case WeightFormat::BF16: {
        const uint16_t* src = reinterpret_cast<const uint16_t*>(panel) + (k / 2) * 2 * kPanel + (k & 1);
        for (int j = 0; j < kPanel; j++) o[j] = bf16_to_float(src[2 * j]);
        break;
      }
      case WeightFormat::F16: {
        const uint16_t* src = reinterpret_cast<const uint16_t*>(panel) + k * kPanel;
        for (int j = 0; j < kPanel; j++) o[j] = half_to_float(src[j]);
        break;
      }
      case WeightFormat::Q8: {
        const float* scales = reinterpret_cast<const float*>(panel);
        const int8_t* src = reinterpret_cast<const int8_t*>(panel + 64) + k * kPanel;
        for (int j = 0; j < kPanel; j++) o[j] = scales[j] * float(src[j]);
        break;
      }
      case WeightFormat::Q4: {
        const uint8_t* group = panel + (k / 32) * 320;
        const float* scales = reinterpret_cast<const float*>(group);
        const int64_t i = k % 32;
        const uint8_t* src = group + 64 + (i % 16) * kPanel;
        for (int j = 0; j < kPanel; j++) {
          const int nibble = i < 16 ? (src[j] & 0x0f) : (src[j] >> 4);
          o[j] = scales[j] * float(nibble - 8);
        }
        break;
      }
    }
  }
}

}  // namespace detail

void prepare_matrix(Matrix& m) {
  release_matrix(m);
  if (m.rows <= 0 || m.cols <= 0 || !m.data) return;
  const int64_t panels = detail::panel_count(m.rows), bytes = detail::panel_bytes(m.format, m.cols);
  uint8_t* packed = static_cast<uint8_t*>(::operator new(static_cast<size_t>(panels * bytes), std::align_val_t(64)));
  for (int64_t p = 0; p < panels; p++) detail::pack_panel(m, p, packed + p * bytes);
  m.packed = packed;
  m.packed_bytes = panels * bytes;
}

void release_matrix(Matrix& m) {
  if (m.packed) ::operator delete(m.packed, std::align_val_t(64));
  m.packed = nullptr;
  m.packed_bytes = 0;
}

int64_t weight_scale_count(WeightFormat f, int64_t rows, int64_t cols) {
  if (f == WeightFormat::Q8) return rows;
  if (f == WeightFormat::Q4) return rows * ((cols + 31) / 32);
  return 0;
}

void encode_weights(WeightFormat f, const float* values, int64_t rows, int64_t cols, void* data, float* scales) {
  const int64_t count = rows * cols;
  switch (f) {
    case WeightFormat::F32: std::memcpy(data, values, static_cast<size_t>(count) * 4); break;
    case WeightFormat::BF16:
      for (int64_t i = 0; i < count; i++) static_cast<uint16_t*>(data)[i] = float_to_bf16(values[i]);
      break;
    case WeightFormat::F16:
      for (int64_t i = 0; i < count; i++) static_cast<uint16_t*>(data)[i] = float_to_half(values[i]);
      break;
    case WeightFormat::Q8: quantize_q8(values, rows, cols, static_cast<int8_t*>(data), scales); break;
    case WeightFormat::Q4: quantize_q4(values, rows, cols, static_cast<uint8_t*>(data), scales); break;
  }
}

// ---------------------------------------------------------------------------------------------
// attend()

static void attend_portable(const float* q, const float* keys, const float* values, int64_t count, int64_t stride, int dim,
                            float scale, float* scores, float* out) {
  float max = -INFINITY;
  for (int64_t j = 0; j < count; j++) {
    const float* k = keys + j * stride;
    float dot = 0;
    for (int d = 0; d < dim; d++) dot += q[d] * k[d];
    scores[j] = dot * scale;
    max = std::max(max, scores[j]);
  }
  float sum = 0;
  for (int64_t j = 0; j < count; j++) sum += (scores[j] = std::exp(scores[j] - max));
  std::fill(out, out + dim, 0.0f);
  for (int64_t j = 0; j < count; j++) {
    const float p = scores[j] / sum;
    const float* v = values + j * stride;
    for (int d = 0; d < dim; d++) out[d] += p * v[d];
  }
}

void attend(const float* q, const float* keys, const float* values, int64_t count, int64_t stride, int dim, float scale,
            float* scores, float* out) {
#ifdef BMRT_X86
  if (detail::active_family() >= Family::Avx512) return detail::attend_avx512(q, keys, values, count, stride, dim, scale, scores, out);
#endif
  attend_portable(q, keys, values, count, stride, dim, scale, scores, out);
}

// ---------------------------------------------------------------------------------------------
// linear()

namespace {

// A thread-local buffer that only grows (per call of linear() it is reused, not reallocated).
template <typename T>
T* scratch(std::vector<T>& v, size_t count) {
  if (v.size() < count) v.resize(count);
  return v.data();
}

// Runs fn(first, last) over [0, units) cut into at most `tasks` contiguous ranges.
template <typename Fn>
void parallel_ranges(ThreadPool& pool, int64_t units, int64_t tasks, const Fn& fn) {
  tasks = std::max<int64_t>(1, std::min(tasks, units));
  pool.run(static_cast<int>(tasks), [&](int task, int) {
    fn(units * task / tasks, units * (task + 1) / tasks);
  });
}

// No packed copy (prepare_matrix not called): dequantise rows from `data` one at a time.
void linear_unpacked(const Matrix& w, const float* x, int64_t n, const float* bias, float* y, ThreadPool& pool) {
  parallel_ranges(pool, w.rows, pool.size() * 4, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(w.cols));
    for (int64_t r = r0; r < r1; r++) {
      dequantize_row(w, r, row.data());
      for (int64_t t = 0; t < n; t++) {
        const float* xt = x + t * w.cols;
        float s[4] = {0, 0, 0, 0};
        int64_t c = 0;
        for (; c + 4 <= w.cols; c += 4)
          for (int i = 0; i < 4; i++) s[i] += row[c + i] * xt[c + i];
        for (; c < w.cols; c++) s[0] += row[c] * xt[c];
        y[t * w.rows + r] = (s[0] + s[1]) + (s[2] + s[3]) + (bias ? bias[r] : 0.0f);
      }
    }
  });
}

#ifdef BMRT_X86
// Activations of token block b laid out [k][m] (fp32), or [k/2][m] bf16 pairs.
void pack_activations(const detail::Job& job, Family family, float* xp, uint32_t* xbp, ThreadPool& pool) {
  const int64_t cols = job.w->cols, pairs = (cols + 1) / 2;
  const detail::TokenBlocks blocks(job.n, job.mr);
  parallel_ranges(pool, blocks.count, blocks.count, [&](int64_t b0, int64_t b1) {
    thread_local std::vector<uint32_t> row_pairs;
    for (int64_t b = b0; b < b1; b++) {
      const int64_t t0 = blocks.start(b), m = blocks.size(b);
      if (xp) {
        float* out = xp + t0 * cols;
        for (int64_t t = 0; t < m; t++) {
          const float* in = job.x + (t0 + t) * cols;
          for (int64_t k = 0; k < cols; k++) out[k * m + t] = in[k];
        }
      } else {
        uint32_t* out = xbp + t0 * pairs;
        uint32_t* rp = scratch(row_pairs, static_cast<size_t>(pairs));
        for (int64_t t = 0; t < m; t++) {
          const float* in = job.x + (t0 + t) * cols;
          if (family == Family::Avx512Bf16) {
            detail::round_to_bf16_pairs_avx512bf16(in, cols, rp);
          } else {
            for (int64_t k = 0; k < pairs; k++) {
              const uint32_t lo = float_to_bf16(in[2 * k]), hi = 2 * k + 1 < cols ? float_to_bf16(in[2 * k + 1]) : 0;
              rp[k] = lo | (hi << 16);
            }
          }
          for (int64_t k = 0; k < pairs; k++) out[k * m + t] = rp[k];
        }
      }
    }
  });
}
#endif

}  // namespace

void linear(const Matrix& w, const float* x, int64_t n, const float* bias, float* y, ThreadPool& pool) {
  if (n <= 0 || w.rows <= 0) return;
  if (w.cols <= 0) {
    for (int64_t t = 0; t < n; t++)
      for (int64_t r = 0; r < w.rows; r++) y[t * w.rows + r] = bias ? bias[r] : 0.0f;
    return;
  }
  if (!w.packed) return linear_unpacked(w, x, n, bias, y, pool);

  const Family family = detail::active_family();
  const int threads = pool.size();
  const int64_t panels = detail::panel_count(w.rows);
  detail::Job job;
  job.w = &w;
  job.x = x;
  job.n = n;
  job.bias = bias;
  job.y = y;

  if (family == Family::Scalar) {
    parallel_ranges(pool, panels, threads * 4, [&](int64_t p0, int64_t p1) { detail::linear_panels_scalar(job, p0, p1); });
    return;
  }
#ifdef BMRT_X86
  if (family >= Family::Avx512 && n <= detail::kDecodeMax) {
    thread_local std::vector<float> xsum;
    if (w.format == WeightFormat::Q4) {
      const int64_t groups = (w.cols + 31) / 32;
      float* s = scratch(xsum, static_cast<size_t>(n * groups));
      for (int64_t t = 0; t < n; t++)
        for (int64_t g = 0; g < groups; g++) {
          float total = 0;
          for (int64_t c = g * 32; c < std::min(w.cols, g * 32 + 32); c++) total += x[t * w.cols + c];
          s[t * groups + g] = total;
        }
      job.xsum = s;
    }
    // One contiguous range per thread: each thread streams a single long run of memory. Finer
    // dynamic splits measured slower here (every range start breaks a prefetch stream), and the
    // spinning workers start together so equal static shares finish together.
    parallel_ranges(pool, panels, threads, [&](int64_t p0, int64_t p1) { detail::decode_avx512(job, p0, p1); });
    return;
  }
  if (family == Family::Avx2 && n <= detail::kDecodeMaxAvx2 && w.format != WeightFormat::Q4) {
    parallel_ranges(pool, panels, threads, [&](int64_t p0, int64_t p1) { detail::decode_avx2(job, p0, p1); });
    return;
  }
  // Prefill (and AVX2 int4 decode): GEMM over packed activations.
  const bool bf16_dot = family == Family::Avx512Bf16 && w.format == WeightFormat::BF16;
  job.mr = bf16_dot ? detail::kMrBf16 : family >= Family::Avx512 ? detail::kMrAvx512 : detail::kMrAvx2;
  thread_local std::vector<float> xp;
  thread_local std::vector<uint32_t> xbp;
  if (bf16_dot) job.xbp = scratch(xbp, static_cast<size_t>(n * ((w.cols + 1) / 2)));
  else job.xp = scratch(xp, static_cast<size_t>(n * w.cols));
  pack_activations(job, family, const_cast<float*>(job.xp), const_cast<uint32_t*>(job.xbp), pool);
  const int64_t pairs = (panels + 1) / 2;  // threads take pairs of panels (the microkernel's 32 rows)
  parallel_ranges(pool, pairs, threads * 8, [&](int64_t a, int64_t b) {
    const int64_t p0 = 2 * a, p1 = std::min(panels, 2 * b);
    if (bf16_dot) detail::gemm_avx512bf16(job, p0, p1);
    else if (family >= Family::Avx512) detail::gemm_avx512(job, p0, p1);
    else detail::gemm_avx2(job, p0, p1);
  });
#endif
}

// ---------------------------------------------------------------------------------------------
// Probes

static double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

static double sum_floats(const float* p, int64_t n) {
#ifdef BMRT_X86
  const Family f = detail::active_family();
  if (f >= Family::Avx512) return detail::sum_floats_avx512(p, n);
  if (f == Family::Avx2) return detail::sum_floats_avx2(p, n);
#endif
  return detail::sum_floats_scalar(p, n);
}

double measure_read_bandwidth(ThreadPool& pool, double seconds) {
  const int threads = pool.size();
  const int64_t per_thread = (int64_t(512) << 20) / 4 / threads / 64 * 64;  // 512 MiB of floats in all
  const int64_t count = per_thread * threads;
  std::unique_ptr<float, void (*)(float*)> buffer(
      static_cast<float*>(::operator new(static_cast<size_t>(count) * 4, std::align_val_t(64))),
      [](float* p) { ::operator delete(p, std::align_val_t(64)); });
  pool.run(threads, [&](int task, int) {  // first touch by the thread that will read it (NUMA)
    float* p = buffer.get() + per_thread * task;
    for (int64_t i = 0; i < per_thread; i++) p[i] = 1.0f;
  });
  std::atomic<double> sink{0};
  double best = 0;
  const auto start = std::chrono::steady_clock::now();
  int passes = 0;
  do {
    const auto pass = std::chrono::steady_clock::now();
    pool.run(threads, [&](int task, int) {
      const double s = sum_floats(buffer.get() + per_thread * task, per_thread);
      double expected = sink.load();
      while (!sink.compare_exchange_weak(expected, expected + s)) {
      }
    });
    best = std::max(best, double(count) * 4 / seconds_since(pass));
  } while (++passes < 3 || seconds_since(start) < seconds);
  return best;
}

static double measure_chains(ThreadPool& pool, double seconds, double (*chains)(int64_t, double*)) {
  const int64_t iterations = int64_t(1) << 21;
  const int threads = pool.size();
  std::atomic<double> sink{0};
  double best = 0, flops = 0;
  chains(1000, &flops);  // warm up (AVX-512 frequency licence, page faults)
  const auto start = std::chrono::steady_clock::now();
  int passes = 0;
  do {
    const auto pass = std::chrono::steady_clock::now();
    pool.run(threads, [&](int, int) {
      double f = 0;
      const double v = chains(iterations, &f);
      double expected = sink.load();
      while (!sink.compare_exchange_weak(expected, expected + v)) {
      }
      flops = f;
    });
    best = std::max(best, flops * threads / seconds_since(pass));
  } while (++passes < 3 || seconds_since(start) < seconds);
  return best;
}

double measure_fma_peak(ThreadPool& pool, double seconds) {
#ifdef BMRT_X86
  const Family f = detail::active_family();
  if (f >= Family::Avx512) return measure_chains(pool, seconds, detail::fma_chains_avx512);
  if (f == Family::Avx2) return measure_chains(pool, seconds, detail::fma_chains_avx2);
#endif
  return measure_chains(pool, seconds, detail::fma_chains_scalar);
}

double measure_bf16_peak(ThreadPool& pool, double seconds) {
#ifdef BMRT_X86
  if (detail::active_family() == Family::Avx512Bf16) return measure_chains(pool, seconds, detail::bf16_chains_avx512bf16);
#endif
  (void)pool;
  (void)seconds;
  return 0;
}

// Row-wise RMSNorm, rounding like the fp32 reference (Hugging Face) does.
void rms_norm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out) {
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * dim;
    double sum = 0;
    for (int64_t i = 0; i < dim; i++) sum += double(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(double(static_cast<float>(sum / dim)) + eps));
    for (int64_t i = 0; i < dim; i++) out[r * dim + i] = weight[i] * (xr[i] * inv);
  }
}

}  // namespace bmrt
