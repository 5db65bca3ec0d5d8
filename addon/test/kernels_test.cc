// linear() against the straightforward loop for every weight format, kernel family the CPU can
// run, token count (decode and prefill paths), odd shape, with and without bias, on 1 and 2
// threads; plus the thread pool and the number conversions. Prints "kernels: N passed, M failed".
#include <atomic>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "../src/core/kernels.h"

using namespace bmrt;

static int passed = 0, failed = 0;
#define CHECK(cond, ...)                                  \
  do {                                                    \
    if (cond) {                                           \
      passed++;                                           \
    } else {                                              \
      failed++;                                           \
      std::printf("FAILED %s:%d: ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                           \
      std::printf("\n");                                  \
    }                                                     \
  } while (0)

// A matrix of `format` made from fp32 values, owning its storage.
struct OwnedMatrix {
  Matrix m;
  std::vector<uint8_t> data;
  std::vector<float> scales;
  OwnedMatrix(WeightFormat format, int64_t rows, int64_t cols, const std::vector<float>& values) {
    m.format = format;
    m.rows = rows;
    m.cols = cols;
    data.resize(static_cast<size_t>(weight_format_bytes(format, rows, cols)));
    m.data = data.data();
    switch (format) {
      case WeightFormat::F32: std::copy(values.begin(), values.end(), reinterpret_cast<float*>(data.data())); break;
      case WeightFormat::BF16:
        for (size_t i = 0; i < values.size(); i++) reinterpret_cast<uint16_t*>(data.data())[i] = float_to_bf16(values[i]);
        break;
      case WeightFormat::F16:
        for (size_t i = 0; i < values.size(); i++) reinterpret_cast<uint16_t*>(data.data())[i] = float_to_half(values[i]);
        break;
      case WeightFormat::Q8:
        scales.resize(static_cast<size_t>(rows));
        quantize_q8(values.data(), rows, cols, reinterpret_cast<int8_t*>(data.data()), scales.data());
        break;
      case WeightFormat::Q4:
        scales.resize(static_cast<size_t>(rows * ((cols + 31) / 32)));
        quantize_q4(values.data(), rows, cols, data.data(), scales.data());
        break;
    }
    m.scales = scales.empty() ? nullptr : scales.data();
    prepare_matrix(m);
  }
  ~OwnedMatrix() { release_matrix(m); }
};

static void test_linear() {
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const WeightFormat formats[] = {WeightFormat::F32, WeightFormat::BF16, WeightFormat::F16, WeightFormat::Q8, WeightFormat::Q4};
  const std::vector<std::string> families = {"scalar", "avx2", "avx512", "avx512bf16"};
  struct Shape { int64_t rows, cols; };
  const Shape shapes[] = {{37, 96}, {64, 64}, {13, 160}, {130, 33}, {5, 7}};
  for (WeightFormat format : formats) {
    double worst = 0;
    for (const Shape& shape : shapes) {
      std::vector<float> w(static_cast<size_t>(shape.rows * shape.cols));
      for (auto& v : w) v = normal(rng) / std::sqrt(float(shape.cols));
      OwnedMatrix matrix(format, shape.rows, shape.cols, w);
      std::vector<float> bias(static_cast<size_t>(shape.rows));
      for (auto& v : bias) v = normal(rng);
      for (int64_t n : {1, 2, 3, 4, 5, 7, 33, 128}) {
        std::vector<float> x(static_cast<size_t>(n * shape.cols)), expected(static_cast<size_t>(n * shape.rows));
        for (auto& v : x) v = normal(rng);
        for (bool with_bias : {false, true}) {
          linear_reference(matrix.m, x.data(), n, with_bias ? bias.data() : nullptr, expected.data());
          for (const std::string& family : families) {
            if (!force_kernel_family(family)) continue;
            for (int threads : {1, 2}) {
              ThreadPool pool(threads);
              std::vector<float> got(expected.size(), NAN);
              linear(matrix.m, x.data(), n, with_bias ? bias.data() : nullptr, got.data(), pool);
              // Errors relative to the size of a dot product of these magnitudes (about 1).
              double err = 0;
              for (size_t i = 0; i < got.size(); i++) err = std::max(err, std::abs(double(got[i]) - expected[i]));
              // The bf16 dot-product path rounds activations to bf16 (3 significant digits).
              const bool bf16_activations = format == WeightFormat::BF16 && family == "avx512bf16" && n > 4;
              const double tolerance = bf16_activations ? 3e-2 : 2e-5;
              if (!bf16_activations) worst = std::max(worst, err);
              CHECK(err <= tolerance, "%s %s rows %lld cols %lld n %lld bias %d threads %d: max error %.3g",
                    weight_format_name(format), family.c_str(), (long long)shape.rows, (long long)shape.cols, (long long)n,
                    int(with_bias), threads, err);
            }
          }
          force_kernel_family("");
        }
      }
    }
    std::printf("  linear %-5s max abs error vs reference %.2e\n", weight_format_name(format), worst);
  }
}

static void test_quantization() {
  std::vector<float> w = {0.5f, -1.0f, 0.25f, 0.0f};
  int8_t q[4];
  float scale;
  quantize_q8(w.data(), 1, 4, q, &scale);
  CHECK(std::abs(scale - 1.0f / 127) < 1e-7 && q[1] == -127 && q[0] == 64 && q[3] == 0, "int8 absmax quantisation");
  std::vector<float> g(32);
  for (int i = 0; i < 32; i++) g[i] = float(i - 16) / 16 * 7;
  uint8_t q4[16];
  float s4;
  quantize_q4(g.data(), 1, 32, q4, &s4);
  CHECK(std::abs(s4 - 16.0f / 16 * 7 / 7) < 1e-6 && (q4[0] & 0x0f) == 8 - 7 && (q4[0] >> 4) == 8, "int4 group quantisation");
  CHECK(float_to_bf16(1.0f + 1.0f / 256) == 0x3f80 && bf16_to_float(0x3f82) == 1.0f + 1.0f / 64, "bf16 round to nearest even");
  CHECK(half_to_float(float_to_half(0.333333f)) == 0.333251953125f && float_to_half(1e6f) == 0x7c00, "f16 rounding and overflow");
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24), "f16 subnormals");
}

static void test_pool() {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    CHECK(pool.size() == threads, "pool size");
    for (int round = 0; round < 200; round++) {
      const int tasks = 1 + round % 37;
      std::vector<std::atomic<int>> hits(static_cast<size_t>(tasks));
      std::atomic<bool> bad_thread{false};
      pool.run(tasks, [&](int task, int thread) {
        hits[static_cast<size_t>(task)]++;
        if (thread < 0 || thread >= threads) bad_thread = true;
      });
      bool once = true;
      for (auto& h : hits) once = once && h.load() == 1;
      CHECK(once && !bad_thread, "pool of %d, round %d: every task exactly once on a valid thread", threads, round);
    }
  }
}

int main() {
  std::printf("kernel tests, CPU kernels: %s\n", cpu_kernel_family().c_str());
  test_quantization();
  test_pool();
  test_linear();
  std::printf("kernels: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
