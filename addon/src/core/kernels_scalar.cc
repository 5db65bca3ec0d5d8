// Portable kernels (any CPU; what ARM and macOS-arm64 builds run). Same packed layout as the SIMD
// kernels: a block of a panel is widened to fp32 [k][16] and every token is accumulated into 16
// lanes, a loop compilers vectorise with whatever SIMD the target has baseline (SSE2, NEON).
#include <algorithm>
#include <vector>

#include "kernels_internal.h"

namespace bmrt {
namespace detail {

void linear_panels_scalar(const Job& job, int64_t p0, int64_t p1) {
  const Matrix& w = *job.w;
  const int64_t cols = w.cols, rows = w.rows, kc = 256;
  thread_local std::vector<float> block;
  if (block.size() < size_t(kc * kPanel)) block.resize(size_t(kc * kPanel));
  for (int64_t p = p0; p < p1; p++) {
    const int64_t r0 = p * kPanel, valid = std::min<int64_t>(kPanel, rows - r0);
    for (int64_t k0 = 0; k0 < cols; k0 += kc) {
      const int64_t len = std::min(kc, cols - k0);
      dequantize_panel_portable(w, p, k0, len, block.data());
      for (int64_t t = 0; t < job.n; t++) {
        float acc[kPanel], acc2[kPanel];  // two partial sums per lane: shorter chains, less rounding
        float* yt = job.y + t * rows + r0;
        for (int j = 0; j < kPanel; j++) {
          acc[j] = k0 > 0 && j < valid ? yt[j] : (job.bias && j < valid && k0 == 0 ? job.bias[r0 + j] : 0.0f);
          acc2[j] = 0.0f;
        }
        const float* xt = job.x + t * cols + k0;
        int64_t k = 0;
        for (; k + 2 <= len; k += 2) {
          const float* b = block.data() + k * kPanel;
          for (int j = 0; j < kPanel; j++) {
            acc[j] += b[j] * xt[k];
            acc2[j] += b[kPanel + j] * xt[k + 1];
          }
        }
        for (; k < len; k++)
          for (int j = 0; j < kPanel; j++) acc[j] += block[k * kPanel + j] * xt[k];
        for (int j = 0; j < valid; j++) yt[j] = acc[j] + acc2[j];
      }
    }
  }
}

double sum_floats_scalar(const float* p, int64_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) s[j] += p[i + j];
  for (; i < n; i++) s[0] += p[i];
  double total = 0;
  for (float v : s) total += v;
  return total;
}

double fma_chains_scalar(int64_t iterations, double* flops) {
  float a[8];
  for (int i = 0; i < 8; i++) a[i] = float(i);
  for (int64_t k = 0; k < iterations; k++)
    for (int i = 0; i < 8; i++) a[i] = a[i] * 0.999999f + 1e-7f;
  *flops = double(iterations) * 8 * 2;
  double total = 0;
  for (float v : a) total += v;
  return total;
}

}  // namespace detail
}  // namespace bmrt
