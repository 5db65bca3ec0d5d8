// Shared by the C++ tests and the kernel bench: a CHECK macro that counts, and a weight matrix
// that owns its storage.
#pragma once
#include <cstdio>
#include <vector>

#include "../src/core/kernels.h"

namespace bmrt_test {

inline int passed = 0, failed = 0;

// A matrix of `format` made from fp32 values, owning its data and scales (and, once prepared,
// its packed copy).
struct OwnedMatrix {
  bmrt::Matrix m;
  std::vector<uint8_t> data;
  std::vector<float> scales;
  OwnedMatrix(bmrt::WeightFormat format, int64_t rows, int64_t cols, const std::vector<float>& values, bool prepare = true) {
    m.format = format;
    m.rows = rows;
    m.cols = cols;
    data.resize(static_cast<size_t>(bmrt::weight_format_bytes(format, rows, cols)));
    scales.resize(static_cast<size_t>(bmrt::weight_scale_count(format, rows, cols)));
    m.data = data.data();
    m.scales = scales.empty() ? nullptr : scales.data();
    bmrt::encode_weights(format, values.data(), rows, cols, m.data, m.scales);
    if (prepare) bmrt::prepare_matrix(m);
  }
  ~OwnedMatrix() { bmrt::release_matrix(m); }
  OwnedMatrix(const OwnedMatrix&) = delete;
  OwnedMatrix& operator=(const OwnedMatrix&) = delete;
};

}  // namespace bmrt_test

#define CHECK(cond, ...)                                  \
  do {                                                    \
    if (cond) {                                           \
      bmrt_test::passed++;                                \
    } else {                                              \
      bmrt_test::failed++;                                \
      std::printf("FAILED %s:%d: ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                           \
      std::printf("\n");                                  \
    }                                                     \
  } while (0)
