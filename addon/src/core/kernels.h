// The compute kernels of a decoder block, with runtime CPU dispatch (AVX-512 incl. BF16, AVX2/FMA,
// portable scalar). Everything here is device-neutral plain C++: no N-API, no JS types, so the
// CUDA implementation can offer the same functions.
#pragma once
#include <cstdint>
#include <string>
#include "thread_pool.h"

namespace bmrt {

// How a weight matrix is stored in memory.
enum class WeightFormat {
  F32,   // float
  BF16,  // uint16 bfloat16 bit patterns
  F16,   // uint16 IEEE half bit patterns
  Q8,    // int8, one float scale per row: w[r][c] = scale[r] * q[r][c]
  Q4,    // int4 in groups of 32 along a row, one float scale per group: w = scale * (nibble - 8);
         // byte j of a group holds element j in its low nibble and element j + 16 in its high
         // nibble; a row's short last group is padded with zeros (ceil(cols / 32) groups per row)
};

const char* weight_format_name(WeightFormat f);
// Bytes of storage for a [rows, cols] matrix of format f, scales not included.
int64_t weight_format_bytes(WeightFormat f, int64_t rows, int64_t cols);

// A weight matrix W of [rows, cols] (PyTorch Linear layout: rows = out features, cols = in
// features), row-major, in one of the formats. The kernels may also keep a packed copy
// (see prepare_matrix) to make GEMM fast; `packed` is owned by the Matrix.
struct Matrix {
  WeightFormat format = WeightFormat::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  void* data = nullptr;          // weight_format_bytes(format, rows, cols) bytes
  float* scales = nullptr;       // Q8: rows floats; Q4: rows * ceil(cols / 32) floats; else null
  void* packed = nullptr;        // kernel-private layout built by prepare_matrix, or null
  int64_t packed_bytes = 0;
};

// Called once after a Matrix's data is filled: lets the kernels build a packed layout.
// Must keep `data` usable (the reference kernels and the tests read it).
void prepare_matrix(Matrix& m);
// Frees what prepare_matrix allocated.
void release_matrix(Matrix& m);

// y[n][rows] = x[n][cols] · W^T (+ bias[rows] when bias != null). x, y fp32 row-major.
// n = 1..few is the memory-bound decode case (stream each weight once); large n is the
// compute-bound prefill case (blocked GEMM).
void linear(const Matrix& w, const float* x, int64_t n, const float* bias, float* y, ThreadPool& pool);

// Row-wise RMSNorm of x [rows, dim] times weight, rounding like the fp32 reference (Hugging Face):
// the mean of squares (summed in double) rounded to float, then eps. out may not alias x.
void rms_norm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out);

// The straightforward loop, in double precision; the oracle the tests compare linear() with.
void linear_reference(const Matrix& w, const float* x, int64_t n, const float* bias, float* y);

// One query head attending over `count` cached positions: scores[j] = scale * q·keys[j], softmax,
// out = sum_j p[j] * values[j]. keys[j] starts at keys + j * stride (likewise values); `scores`
// is scratch of `count` floats. The vector length is `dim` (the head size).
void attend(const float* q, const float* keys, const float* values, int64_t count, int64_t stride, int dim, float scale,
            float* scores, float* out);

// What the CPU offers and which kernel family linear() uses (e.g. "avx512bf16", "avx2", "scalar").
std::string cpu_kernel_family();
// Forces a family for tests/benchmarks ("avx512bf16", "avx512", "avx2", "scalar"); returns false
// when the CPU cannot run it. "" restores automatic choice.
bool force_kernel_family(const std::string& family);

// Conversions and load-time quantisation (round to nearest; scales are absmax / 127 or / 7).
float bf16_to_float(uint16_t bits);
uint16_t float_to_bf16(float value);
float half_to_float(uint16_t bits);
uint16_t float_to_half(float value);
void quantize_q8(const float* src, int64_t rows, int64_t cols, int8_t* q, float* scales);
// Scales per row: Q8 one per row, Q4 one per group of 32 (ceil(cols / 32) per row), else none.
int64_t weight_scale_count(WeightFormat f, int64_t rows, int64_t cols);
// Stores a [rows, cols] fp32 matrix in format f: `data` holds weight_format_bytes, `scales`
// weight_scale_count floats (null when there are none).
void encode_weights(WeightFormat f, const float* values, int64_t rows, int64_t cols, void* data, float* scales);
void quantize_q4(const float* src, int64_t rows, int64_t cols, uint8_t* q, float* scales);

// Machine probes for the benchmarks, measured over about `seconds`:
// read bandwidth in bytes/s of streaming a buffer much larger than the caches with all threads;
double measure_read_bandwidth(ThreadPool& pool, double seconds);
// peak fp32 FMA throughput in FLOP/s (2 per FMA) with all threads;
double measure_fma_peak(ThreadPool& pool, double seconds);
// peak bf16 dot-product throughput in FLOP/s (AVX512_BF16 vdpbf16ps), or 0 when absent.
double measure_bf16_peak(ThreadPool& pool, double seconds);

}  // namespace bmrt
