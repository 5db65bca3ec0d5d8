// Tests of the kernels: linear() against linear_reference() for every weight format, every kernel
// family this CPU can run (force_kernel_family), token counts that take the decode and the
// prefill paths (n in {1, 2, 3, 7, 33, 128, 200}), odd shapes (rows and cols not multiples of
// 16/32; int4 rows whose length is not a multiple of 32 get a zero-padded last group, as
// quantize_q4 writes them), with and without bias, on 1 and 2 threads; plus the conversions,
// the quantisers and the thread pool. Prints the worst errors per format and
// "kernels: N passed, M failed"; exits non-zero on failure.
//
// Error measure: an output's error is compared with the magnitude m = sum_k |w_k x_k| + |bias|
// (what rounding errors scale with): fp32 accumulation must stay within 1e-5 * m. The bf16 GEMM
// on AVX512_BF16 rounds activations to bf16 (8 significant bits), so there 8e-3 * m.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../src/core/kernels.h"
#include "test_support.h"

using namespace bmrt;

using bmrt_test::OwnedMatrix;


static std::vector<float> random_values(std::mt19937& rng, size_t count, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(count);
  for (float& x : v) x = normal(rng);
  return v;
}

struct Worst {
  double relative = 0;  // max |y - ref| / max |ref| over one output (normwise)
  double absolute = 0;
  double bound = 0;     // max |y - ref| / (sum |w x| + |bias|)
};
static std::map<std::string, Worst> worst;

static const WeightFormat kFormats[] = {WeightFormat::F32, WeightFormat::BF16, WeightFormat::F16, WeightFormat::Q8,
                                        WeightFormat::Q4};

static void test_linear_shape(std::mt19937& rng, int64_t rows, int64_t cols, const std::vector<int64_t>& token_counts,
                              const std::vector<std::string>& families, ThreadPool& pool1, ThreadPool& pool2) {
  const std::vector<float> values = random_values(rng, size_t(rows * cols), 0.5f);
  const std::vector<float> bias = random_values(rng, size_t(rows), 1.0f);
  for (WeightFormat format : kFormats) {
    OwnedMatrix w(format, rows, cols, values);
    // |W| as the reference sees it, for the error magnitudes.
    OwnedMatrix unpacked(format, rows, cols, values, false);
    std::vector<float> abs_w(static_cast<size_t>(rows * cols));
    {
      std::vector<float> identity(size_t(cols * cols), 0.0f);
      for (int64_t c = 0; c < cols; c++) identity[size_t(c * cols + c)] = 1.0f;
      std::vector<float> wt(static_cast<size_t>(cols * rows));  // W^T via the reference: identity rows select columns
      linear_reference(unpacked.m, identity.data(), cols, nullptr, wt.data());
      for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) abs_w[size_t(r * cols + c)] = std::fabs(wt[size_t(c * rows + r)]);
    }
    for (int64_t n : token_counts) {
      const std::vector<float> x = random_values(rng, size_t(n * cols), 1.0f);
      std::vector<double> magnitude(static_cast<size_t>(n * rows));
      for (int64_t t = 0; t < n; t++)
        for (int64_t r = 0; r < rows; r++) {
          double s = 0;
          for (int64_t c = 0; c < cols; c++) s += abs_w[size_t(r * cols + c)] * std::fabs(x[size_t(t * cols + c)]);
          magnitude[size_t(t * rows + r)] = s;
        }
      for (bool with_bias : {false, true}) {
        const float* b = with_bias ? bias.data() : nullptr;
        std::vector<float> ref(static_cast<size_t>(n * rows));
        linear_reference(w.m, x.data(), n, b, ref.data());
        for (const std::string& family : families) {
          force_kernel_family(family);
          const bool bf16_dot = format == WeightFormat::BF16 && family == "avx512bf16" && n > 8;
          const double tolerance = bf16_dot ? 8e-3 : 1e-5;
          for (ThreadPool* pool : {&pool1, &pool2}) {
            for (int variant = 0; variant < (pool == &pool1 ? 2 : 1); variant++) {
              const Matrix& m = variant == 0 ? w.m : unpacked.m;  // variant 1: no packed copy
              std::vector<float> y(static_cast<size_t>(n * rows), std::nanf(""));
              linear(m, x.data(), n, b, y.data(), *pool);
              double max_diff = 0, max_ref = 0, max_bound = 0;
              bool finite = true;
              for (size_t i = 0; i < y.size(); i++) {
                finite = finite && std::isfinite(y[i]);
                const double d = std::fabs(double(y[i]) - ref[i]);
                max_diff = std::max(max_diff, d);
                max_ref = std::max(max_ref, std::fabs(double(ref[i])));
                const double mag = magnitude[i] + (b ? std::fabs(b[i % size_t(rows)]) : 0.0) + 1e-30;
                max_bound = std::max(max_bound, d / mag);
              }
              CHECK(finite && max_bound <= tolerance,
                    "%s %s rows %lld cols %lld n %lld bias %d threads %d packed %d: error %.3g of magnitude (limit %.1g)%s",
                    weight_format_name(format), family.c_str(), (long long)rows, (long long)cols, (long long)n, int(with_bias),
                    pool->size(), int(variant == 0), max_bound, tolerance, finite ? "" : ", not finite");
              Worst& wst = worst[std::string(weight_format_name(format)) + (bf16_dot ? " (bf16 GEMM, x rounded)" : "")];
              wst.relative = std::max(wst.relative, max_diff / std::max(max_ref, 1e-30));
              wst.absolute = std::max(wst.absolute, max_diff);
              wst.bound = std::max(wst.bound, max_bound);
            }
          }
        }
        force_kernel_family("");
      }
    }
  }
}

static void test_conversions() {
  // bf16: round to nearest, ties to even.
  CHECK(float_to_bf16(1.0f) == 0x3f80, "bf16(1)");
  uint32_t u = 0x3f808000u;  // exactly halfway between 0x3f80 and 0x3f81: ties to even (0x3f80)
  float f;
  std::memcpy(&f, &u, 4);
  CHECK(float_to_bf16(f) == 0x3f80, "bf16 tie to even (down)");
  u = 0x3f818000u;
  std::memcpy(&f, &u, 4);
  CHECK(float_to_bf16(f) == 0x3f82, "bf16 tie to even (up)");
  u = 0x3f808001u;
  std::memcpy(&f, &u, 4);
  CHECK(float_to_bf16(f) == 0x3f81, "bf16 above halfway");
  CHECK(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))), "bf16 NaN stays NaN");
  CHECK(bf16_to_float(float_to_bf16(-2.5f)) == -2.5f, "bf16 exact value");
  // half: every finite half survives half -> float -> half.
  int bad = 0;
  for (uint32_t h = 0; h < 0x10000; h++) {
    if ((h & 0x7c00u) == 0x7c00u) continue;
    if (float_to_half(half_to_float(uint16_t(h))) != h) bad++;
  }
  CHECK(bad == 0, "%d halves do not round-trip", bad);
  CHECK(half_to_float(float_to_half(65504.0f)) == 65504.0f, "half max");
  CHECK(std::isinf(half_to_float(float_to_half(1e6f))), "half overflow to inf");
  CHECK(half_to_float(float_to_half(1.0f + 1.0f / 4096)) == 1.0f, "half rounds to even");
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24), "smallest subnormal half");
}

static void test_quantizers(std::mt19937& rng) {
  const int64_t rows = 5, cols = 70;
  const std::vector<float> v = random_values(rng, size_t(rows * cols), 1.0f);
  std::vector<int8_t> q8(static_cast<size_t>(rows * cols));
  std::vector<float> s8(static_cast<size_t>(rows));
  quantize_q8(v.data(), rows, cols, q8.data(), s8.data());
  double worst8 = 0;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++)
      worst8 = std::max(worst8, double(std::fabs(s8[r] * q8[size_t(r * cols + c)] - v[size_t(r * cols + c)]) / s8[r]));
  CHECK(worst8 <= 0.5 + 1e-4, "q8 error %.3g steps", worst8);
  const int64_t groups = (cols + 31) / 32;
  std::vector<uint8_t> q4(static_cast<size_t>(rows * groups * 16));
  std::vector<float> s4(static_cast<size_t>(rows * groups));
  quantize_q4(v.data(), rows, cols, q4.data(), s4.data());
  double worst4 = 0;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) {
      const int64_t g = c / 32, i = c % 32;
      const uint8_t b = q4[size_t((r * groups + g) * 16 + i % 16)];
      const float s = s4[size_t(r * groups + g)];
      const float value = s * float(int(i < 16 ? b & 15 : b >> 4) - 8);
      worst4 = std::max(worst4, double(std::fabs(value - v[size_t(r * cols + c)]) / s));
    }
  CHECK(worst4 <= 0.5 + 1e-4, "q4 error %.3g steps", worst4);
}

static void test_thread_pool() {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    CHECK(pool.size() == threads, "pool size %d", pool.size());
    bool all_once = true, ids_ok = true, exclusive = true;
    std::vector<std::atomic<int>> busy(static_cast<size_t>(threads));
    for (auto& b : busy) b = 0;
    for (int round = 0; round < 2000; round++) {
      const int tasks = round % 37;
      std::vector<std::atomic<int>> hits(static_cast<size_t>(tasks));
      for (auto& h : hits) h = 0;
      pool.run(tasks, [&](int task, int thread) {
        if (thread < 0 || thread >= threads) {
          ids_ok = false;
          return;
        }
        if (busy[size_t(thread)].exchange(1) != 0) exclusive = false;  // two tasks on one id at once
        hits[size_t(task)]++;
        if (round % 100 == 0) std::this_thread::yield();
        busy[size_t(thread)] = 0;
      });
      for (auto& h : hits) all_once = all_once && h.load() == 1;
      if (round % 7 == 0) {  // let the workers fall asleep: the next run must not depend on their waking
        pool.rest();
        std::this_thread::sleep_for(std::chrono::microseconds(round % 3 == 0 ? 500 : 20));
      }
    }
    CHECK(all_once, "%d threads: every task runs exactly once", threads);
    CHECK(ids_ok, "%d threads: thread ids in range", threads);
    CHECK(exclusive, "%d threads: a thread id is never used by two tasks at once", threads);
    bool thrown = false;
    try {
      pool.run(10, [](int task, int) {
        if (task == 7) throw std::runtime_error("task 7");
      });
    } catch (const std::runtime_error&) {
      thrown = true;
    }
    CHECK(thrown, "%d threads: an exception in a task reaches run()'s caller", threads);
    std::atomic<int> after{0};
    pool.run(5, [&](int, int) { after++; });
    CHECK(after == 5, "%d threads: the pool works after an exception", threads);
  }
}

int main() {
  std::mt19937 rng(12345);
  test_conversions();
  test_quantizers(rng);
  test_thread_pool();

  std::vector<std::string> families;
  for (const char* f : {"scalar", "avx2", "avx512", "avx512bf16"})
    if (force_kernel_family(f)) families.push_back(f);
  force_kernel_family("");
  std::printf("kernel family: %s (testing:", cpu_kernel_family().c_str());
  for (auto& f : families) std::printf(" %s", f.c_str());
  std::printf(")\n");

  ThreadPool pool1(1), pool2(2);
  const std::vector<int64_t> all_n = {1, 2, 3, 7, 33, 128, 200};
  test_linear_shape(rng, 37, 50, all_n, families, pool1, pool2);   // odd everything
  test_linear_shape(rng, 64, 96, all_n, families, pool1, pool2);   // whole panels and groups
  test_linear_shape(rng, 1, 33, {1, 9, 128}, families, pool1, pool2);
  test_linear_shape(rng, 83, 1061, {1, 4, 8, 9, 33}, families, pool1, pool2);  // several K blocks, odd K

  for (auto& [name, w] : worst)
    std::printf("  %-32s max error: %.3g relative (to max |y|), %.3g absolute, %.3g of sum |w x|\n", name.c_str(), w.relative,
                w.absolute, w.bound);
  std::printf("kernels: %d passed, %d failed\n", bmrt_test::passed, bmrt_test::failed);
  return bmrt_test::failed == 0 ? 0 : 1;
}
