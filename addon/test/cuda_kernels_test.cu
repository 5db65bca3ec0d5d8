// Tests of the CUDA kernels (src/cuda/cuda_kernels.cu) against straightforward double-precision
// host references, on random inputs and the shapes the block span uses; the dummy weights against
// the CPU's. Prints one line per check
// with its max abs difference; exits non-zero on any failure, 0 with "no CUDA device: skipped"
// when there is no GPU.
//   nvcc -std=c++17 -O3 -arch=sm_90 -Iaddon/src/cuda addon/test/cuda_kernels_test.cu addon/src/cuda/cuda_kernels.cu -o /tmp/cuda_kernels_test
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "../src/core/dummy.h"
#include "cuda_kernels.cuh"

namespace ck = bmrt::cuda;
using ck::Element;

namespace {

void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

// A device copy of a host vector (or `count` uninitialised elements); freed on destruction.
template <class T>
class Device {
 public:
  explicit Device(size_t count) : count_(count) { cuda_check(cudaMalloc(&data_, std::max<size_t>(count, 1) * sizeof(T)), "cudaMalloc"); }
  explicit Device(const std::vector<T>& host) : Device(host.size()) {
    cuda_check(cudaMemcpy(data_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "copy to device");
  }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  ~Device() { cudaFree(data_); }
  T* get() const { return data_; }
  std::vector<T> host() const {
    std::vector<T> out(count_);
    cuda_check(cudaDeviceSynchronize(), "kernel");
    cuda_check(cudaMemcpy(out.data(), data_, count_ * sizeof(T), cudaMemcpyDeviceToHost), "copy to host");
    return out;
  }

 private:
  T* data_ = nullptr;
  size_t count_;
};

int failures = 0;
int checks = 0;

// Passes when max |got - ref| <= rtol * max |ref| + atol (NaN in `got` fails).
void expect_close(const std::string& name, const std::vector<float>& got, const std::vector<double>& ref, double rtol,
                  double atol = 1e-6) {
  double diff = 0, peak = 0;
  bool nan = got.size() != ref.size();
  for (size_t i = 0; i < got.size() && i < ref.size(); i++) {
    if (!std::isfinite(got[i])) nan = true;
    diff = std::max(diff, std::fabs(double(got[i]) - ref[i]));
    peak = std::max(peak, std::fabs(ref[i]));
  }
  const double tol = rtol * peak + atol;
  const bool ok = !nan && diff <= tol;
  checks++;
  if (!ok) failures++;
  std::printf("%-4s %-58s max abs diff %.3e (max |ref| %.3e, tol %.1e)%s\n", ok ? "ok" : "FAIL", name.c_str(), diff, peak, tol,
              nan ? " non-finite output" : "");
}

void expect(const std::string& name, bool ok, const std::string& detail = "") {
  checks++;
  if (!ok) failures++;
  std::printf("%-4s %-58s %s\n", ok ? "ok" : "FAIL", name.c_str(), detail.c_str());
}

std::mt19937 rng(1234);

std::vector<float> normal(size_t n, float sigma = 1.0f) {
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<float> uniform(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// ---------------------------------------------------------------------------------------------

uint16_t bf16_reference(float x) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if (std::isnan(x)) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

void test_rms_norm(int64_t rows, int dim, float eps) {
  std::vector<float> x = normal(size_t(rows * dim)), w = uniform(size_t(dim), 0.5f, 1.5f);
  for (int64_t r = 0; r < rows; r++)  // rows of very different magnitudes
    for (int i = 0; i < dim; i++) x[size_t(r * dim + i)] *= std::pow(10.0f, float(r % 5) - 2.0f);
  std::vector<double> ref(x.size());
  for (int64_t r = 0; r < rows; r++) {
    double sum = 0;
    for (int i = 0; i < dim; i++) sum += double(x[size_t(r * dim + i)]) * x[size_t(r * dim + i)];
    const double inv = 1.0 / std::sqrt(sum / dim + eps);
    for (int i = 0; i < dim; i++) ref[size_t(r * dim + i)] = w[size_t(i)] * (x[size_t(r * dim + i)] * inv);
  }
  // Per row the error is relative to that row's scale: check each row against its own peak.
  Device<float> dx(x), dw(w), dout(x.size());
  ck::rms_norm(dx.get(), dw.get(), rows, dim, eps, dout.get(), nullptr);
  const std::vector<float> got = dout.host();
  double worst = 0;
  bool finite = true;
  for (int64_t r = 0; r < rows; r++) {
    double diff = 0, peak = 0;
    for (int i = 0; i < dim; i++) {
      const size_t k = size_t(r * dim + i);
      finite = finite && std::isfinite(got[k]);
      diff = std::max(diff, std::fabs(got[k] - ref[k]));
      peak = std::max(peak, std::fabs(ref[k]));
    }
    worst = std::max(worst, diff / peak);
  }
  char detail[96];
  std::snprintf(detail, sizeof detail, "max diff / row peak %.3e (tol 1e-5)", worst);
  expect("rms_norm rows " + std::to_string(rows) + " dim " + std::to_string(dim), finite && worst <= 1e-5, detail);

  // Written as bf16 and f16: the fp32 result rounded, bit for bit (the span feeds these to the projections).
  Device<uint16_t> dbf(x.size()), dh(x.size());
  ck::rms_norm(dx.get(), dw.get(), rows, dim, eps, reinterpret_cast<__nv_bfloat16*>(dbf.get()), nullptr);
  ck::rms_norm(dx.get(), dw.get(), rows, dim, eps, reinterpret_cast<__half*>(dh.get()), nullptr);
  const std::vector<uint16_t> bf = dbf.host(), h = dh.host();
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); i++) {
    const __half want = __float2half_rn(got[i]);
    uint16_t want_h;
    std::memcpy(&want_h, &want, 2);
    if (bf[i] != bf16_reference(got[i]) || h[i] != want_h) bad++;
  }
  expect("rms_norm to bf16 and f16 rows " + std::to_string(rows) + " dim " + std::to_string(dim), bad == 0, std::to_string(bad) + " mismatches");

  // In place (out == x) gives the same result.
  ck::rms_norm(dx.get(), dw.get(), rows, dim, eps, dx.get(), nullptr);
  const std::vector<float> in_place = dx.host();
  expect("rms_norm in place rows " + std::to_string(rows) + " dim " + std::to_string(dim), in_place == got);
}

void test_conversions() {
  const size_t n = 100003;
  std::vector<float> x = normal(n, 100.0f);
  // Specials and edge cases: zeros, infinities, NaN, bf16 and f16 ties, f16 overflow and subnormals.
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256, 65504.0f, 65520.0f,
                            1e6f, -1e6f, 6e-8f, 3e-8f, 1e-5f, 1e-40f, std::numeric_limits<float>::max(), 1.0f + 1.0f / 2048};
  for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) x[i] = specials[i];
  for (size_t i = 100; i < 1100; i++) x[i] = std::ldexp(x[i], -int(i % 40));  // small magnitudes

  Device<float> dx(x);
  Device<uint16_t> dbf(n), dh(n);
  ck::convert(dx.get(), Element::F32, dbf.get(), Element::BF16, int64_t(n), nullptr);
  ck::convert(dx.get(), Element::F32, dh.get(), Element::F16, int64_t(n), nullptr);
  const std::vector<uint16_t> bf = dbf.host(), h = dh.host();
  size_t bf_bad = 0, h_bad = 0;
  for (size_t i = 0; i < n; i++) {
    const uint16_t want_bf = bf16_reference(x[i]);
    const bool bf_nan = (bf[i] & 0x7f80) == 0x7f80 && (bf[i] & 0x7f) != 0;
    if (std::isnan(x[i]) ? !bf_nan : bf[i] != want_bf) bf_bad++;
    const __half ref_half = __float2half_rn(x[i]);  // the host (software) conversion
    uint16_t want_h;
    std::memcpy(&want_h, &ref_half, 2);
    const bool h_nan = (h[i] & 0x7c00) == 0x7c00 && (h[i] & 0x3ff) != 0;
    if (std::isnan(x[i]) ? !h_nan : h[i] != want_h) h_bad++;
  }
  expect("convert f32 -> bf16 " + std::to_string(n) + " values, bit exact", bf_bad == 0, std::to_string(bf_bad) + " mismatches");
  expect("convert f32 -> f16 " + std::to_string(n) + " values, bit exact", h_bad == 0, std::to_string(h_bad) + " mismatches");

  // Back to f32 (exact), and f16 -> bf16 (through the exact f32 value, as the CPU loader does).
  Device<float> back(n);
  Device<uint16_t> dbf2(n);
  ck::convert(dh.get(), Element::F16, back.get(), Element::F32, int64_t(n), nullptr);
  ck::convert(dh.get(), Element::F16, dbf2.get(), Element::BF16, int64_t(n), nullptr);
  const std::vector<float> widened = back.host();
  const std::vector<uint16_t> narrowed = dbf2.host();
  size_t wide_bad = 0, narrow_bad = 0;
  for (size_t i = 0; i < n; i++) {
    __half stored;
    std::memcpy(&stored, &h[i], 2);
    const float exact = __half2float(stored);
    if (!(widened[i] == exact || (std::isnan(exact) && std::isnan(widened[i])))) wide_bad++;
    if (!std::isnan(exact) && narrowed[i] != bf16_reference(exact)) narrow_bad++;
  }
  expect("convert f16 -> f32 and f16 -> bf16, bit exact", wide_bad == 0 && narrow_bad == 0,
         std::to_string(wide_bad) + " + " + std::to_string(narrow_bad) + " mismatches");
}

std::vector<float> inverse_frequencies(int head_dim) {
  std::vector<float> f(size_t(head_dim / 2));
  for (int j = 0; j < head_dim / 2; j++) f[size_t(j)] = float(1.0 / std::pow(10000.0, 2.0 * j / head_dim));
  return f;
}

// Rotary on rows of q | k | v (with a row stride past them), k and v into cache rows at the positions.
void test_rope_cache(int heads, int kv_heads, int head_dim) {
  const int64_t rows = 6, q_dim = int64_t(heads) * head_dim, kv_dim = int64_t(kv_heads) * head_dim, stride = q_dim + 2 * kv_dim + 3;
  std::vector<int64_t> positions = {0, 1, 3000, 4095, 70000, 131071};
  const int64_t capacity = 131072;
  std::vector<float> qkv = normal(size_t(rows * stride));
  const std::vector<float> freq = inverse_frequencies(head_dim);
  const int half = head_dim / 2;
  auto rotate = [&](const float* v, int64_t position, double* out) {
    for (int j = 0; j < half; j++) {
      // The angle is specified as an fp32 product; only cos/sin are taken in double.
      const float angle = static_cast<float>(position) * freq[size_t(j)];
      const double c = std::cos(double(angle)), s = std::sin(double(angle));
      const double a = v[j], b = v[j + half];
      out[j] = a * c - b * s;
      out[j + half] = b * c + a * s;
    }
  };
  std::vector<double> q_ref(size_t(rows * q_dim)), k_ref(size_t(rows * kv_dim)), v_ref(size_t(rows * kv_dim));
  for (int64_t r = 0; r < rows; r++) {
    const float* row = qkv.data() + r * stride;
    for (int h = 0; h < heads; h++) rotate(row + h * head_dim, positions[size_t(r)], q_ref.data() + r * q_dim + h * head_dim);
    for (int h = 0; h < kv_heads; h++) rotate(row + q_dim + h * head_dim, positions[size_t(r)], k_ref.data() + r * kv_dim + h * head_dim);
    for (int64_t i = 0; i < kv_dim; i++) v_ref[size_t(r * kv_dim + i)] = row[q_dim + kv_dim + i];
  }
  Device<float> dqkv(qkv), dfreq(freq), keys(size_t(capacity * kv_dim)), values(size_t(capacity * kv_dim));
  Device<int64_t> dpos(positions);
  ck::rope_cache(dqkv.get(), stride, dpos.get(), rows, heads, kv_heads, head_dim, dfreq.get(), keys.get(), values.get(), nullptr);
  const std::vector<float> out = dqkv.host(), k_all = keys.host(), v_all = values.host();
  std::vector<float> q_got, k_got, v_got;
  bool untouched = true;  // k and v in the qkv rows, and the row padding, stay as they were
  for (int64_t r = 0; r < rows; r++) {
    q_got.insert(q_got.end(), out.begin() + r * stride, out.begin() + r * stride + q_dim);
    for (int64_t i = q_dim; i < stride; i++) untouched = untouched && out[size_t(r * stride + i)] == qkv[size_t(r * stride + i)];
    const int64_t p = positions[size_t(r)];
    k_got.insert(k_got.end(), k_all.begin() + p * kv_dim, k_all.begin() + (p + 1) * kv_dim);
    v_got.insert(v_got.end(), v_all.begin() + p * kv_dim, v_all.begin() + (p + 1) * kv_dim);
  }
  const std::string shape = std::to_string(heads) + "/" + std::to_string(kv_heads) + "/" + std::to_string(head_dim);
  expect_close("rope_cache q heads/kv/dim " + shape, q_got, q_ref, 1e-5);
  expect_close("rope_cache cached k heads/kv/dim " + shape, k_got, k_ref, 1e-5);
  expect_close("rope_cache cached v heads/kv/dim " + shape, v_got, v_ref, 0, 0);
  expect("rope_cache leaves k, v and the row padding in place " + shape, untouched);
}

// Attention of `tokens` queries at positions start.. over a cache of start + tokens rows (plus
// poisoned rows that must never be read: past the last position, and before the window).
void test_attention(int heads, int kv_heads, int head_dim, int64_t start, int64_t tokens, int window) {
  const int64_t capacity = start + tokens + 5, kv_dim = int64_t(kv_heads) * head_dim, q_dim = int64_t(heads) * head_dim;
  const int group = heads / kv_heads;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  std::vector<float> q = normal(size_t(tokens * q_dim), 2.0f);  // sharper softmax than N(0, 1)
  std::vector<float> keys = normal(size_t(capacity * kv_dim)), values = normal(size_t(capacity * kv_dim));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const int64_t first_needed = window > 0 ? std::max<int64_t>(0, start - window + 1) : 0;
  for (int64_t r = 0; r < capacity; r++)
    if (r >= start + tokens || r < first_needed)
      for (int64_t i = 0; i < kv_dim; i++) keys[size_t(r * kv_dim + i)] = values[size_t(r * kv_dim + i)] = nan;

  std::vector<double> ref(size_t(tokens * q_dim));
  std::vector<double> scores;
  for (int64_t t = 0; t < tokens; t++) {
    const int64_t p = start + t, first = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
    for (int h = 0; h < heads; h++) {
      const float* qv = q.data() + t * q_dim + h * head_dim;
      const int64_t off = int64_t(h / group) * head_dim;
      scores.assign(size_t(p + 1 - first), 0.0);
      double peak = -INFINITY;
      for (int64_t j = first; j <= p; j++) {
        double dot = 0;
        for (int d = 0; d < head_dim; d++) dot += double(qv[d]) * keys[size_t(j * kv_dim + off + d)];
        scores[size_t(j - first)] = dot * scale;
        peak = std::max(peak, dot * scale);
      }
      double sum = 0;
      for (double& s : scores) sum += (s = std::exp(s - peak));
      double* out = ref.data() + t * q_dim + h * head_dim;
      for (int64_t j = first; j <= p; j++)
        for (int d = 0; d < head_dim; d++) out[d] += scores[size_t(j - first)] / sum * values[size_t(j * kv_dim + off + d)];
    }
  }

  // The queries sit in wider rows (as in the span's q | k | v rows), the start position on the device.
  const int64_t q_stride = q_dim + 2 * kv_dim;
  std::vector<float> rows(size_t(tokens * q_stride), nan);
  for (int64_t t = 0; t < tokens; t++) std::copy(q.begin() + t * q_dim, q.begin() + (t + 1) * q_dim, rows.begin() + t * q_stride);
  Device<float> dq(rows), dk(keys), dv(values);
  Device<int64_t> dstart(std::vector<int64_t>{start});
  Device<float> dout(std::vector<float>(size_t(tokens * q_dim), nan));  // every output must be written
  ck::attention(dq.get(), q_stride, dk.get(), dv.get(), dstart.get(), tokens, heads, kv_heads, head_dim, window, scale, dout.get(), nullptr);
  char name[128];
  std::snprintf(name, sizeof name, "attention %d/%d/%d start %lld tokens %lld window %d", heads, kv_heads, head_dim,
                (long long)start, (long long)tokens, window);
  const std::vector<float> got = dout.host();
  expect_close(name, got, ref, 1e-4);
  // Written as bf16: the same values rounded.
  Device<uint16_t> dbf(size_t(tokens * q_dim));
  ck::attention(dq.get(), q_stride, dk.get(), dv.get(), dstart.get(), tokens, heads, kv_heads, head_dim, window, scale,
                reinterpret_cast<__nv_bfloat16*>(dbf.get()), nullptr);
  const std::vector<uint16_t> bf = dbf.host();
  size_t bad = 0;
  for (size_t i = 0; i < bf.size(); i++) bad += bf[i] != bf16_reference(got[i]);
  expect(std::string(name) + " to bf16", bad == 0, std::to_string(bad) + " mismatches");
}

void test_silu_mul() {
  const int64_t rows = 3, inter = (1 << 18) + 7, n = rows * inter;
  std::vector<float> gate_up(size_t(2 * n));
  const std::vector<float> gate = uniform(size_t(n), -30.0f, 30.0f), up = normal(size_t(n));
  std::vector<double> ref(static_cast<size_t>(n));
  for (int64_t r = 0; r < rows; r++)
    for (int64_t i = 0; i < inter; i++) {
      float g = gate[size_t(r * inter + i)];
      if (r == 0 && i < 2) g = i == 0 ? -200.0f : 200.0f;  // exp(200) overflows: silu must give -0, not NaN
      const float u = up[size_t(r * inter + i)];
      gate_up[size_t(r * 2 * inter + i)] = g;
      gate_up[size_t(r * 2 * inter + inter + i)] = u;
      ref[size_t(r * inter + i)] = g / (1.0 + std::exp(-double(g))) * u;
    }
  Device<float> dgu(gate_up), dout{size_t(n)};
  ck::silu_mul(dgu.get(), rows, inter, dout.get(), nullptr);
  expect_close("silu_mul rows " + std::to_string(rows) + " inter " + std::to_string(inter), dout.host(), ref, 1e-6);
}

// The decode GEMV: y (+)= x W^T for 1..4 tokens, against double sums of the same (rounded) values.
// Tolerance: fp32 accumulation, 2e-5 of the largest sum of |w x| terms (28672 terms in fp32 lanes).
template <class T>
void test_gemv(const char* type, int64_t rows, int64_t cols, int64_t tokens, bool accumulate) {
  auto round = [](float v) {
    const T t = T(v);
    return float(t);
  };
  std::vector<float> w = normal(size_t(rows * cols)), x = normal(size_t(tokens * cols)), y = normal(size_t(tokens * rows));
  for (auto& v : w) v = round(v);
  for (auto& v : x) v = round(v);
  std::vector<T> wt(w.begin(), w.end()), xt(x.begin(), x.end());
  std::vector<double> ref(size_t(tokens * rows));
  double magnitude = 0;
  for (int64_t t = 0; t < tokens; t++)
    for (int64_t r = 0; r < rows; r++) {
      double acc = accumulate ? y[size_t(t * rows + r)] : 0.0, size = 0;
      for (int64_t c = 0; c < cols; c++) {
        acc += double(w[size_t(r * cols + c)]) * x[size_t(t * cols + c)];
        size += std::fabs(double(w[size_t(r * cols + c)]) * x[size_t(t * cols + c)]);
      }
      ref[size_t(t * rows + r)] = acc;
      magnitude = std::max(magnitude, size);
    }
  Device<T> dw(wt), dx(xt);
  Device<float> dy(y);
  ck::gemv(dw.get(), dx.get(), rows, cols, tokens, dy.get(), accumulate, nullptr);
  char name[128];
  std::snprintf(name, sizeof name, "gemv %s %lld x %lld, %lld tokens%s", type, (long long)rows, (long long)cols, (long long)tokens,
                accumulate ? ", accumulating" : "");
  expect_close(name, dy.host(), ref, 0, 2e-5 * magnitude);
}

// Dummy weights on the GPU: the CPU's values (core/dummy.h) bit for bit, in fp32 and rounded to bf16.
void test_dummy_fill() {
  const int64_t n = (1 << 20) + 3;
  const uint32_t key = bmrt::dummy_key(5, bmrt::dummy_stream(3, bmrt::LayerTensor::Gate));
  const bmrt::DummyInit inits[] = {{0.02f, 0.0f}, {0.1f, 1.0f}};
  for (const bmrt::DummyInit& init : inits) {
    Device<float> df{size_t(n)};
    Device<uint16_t> dbf{size_t(n)};
    ck::dummy_fill(df.get(), n, key, init.scale, init.offset, nullptr);
    ck::dummy_fill(reinterpret_cast<__nv_bfloat16*>(dbf.get()), n, key, init.scale, init.offset, nullptr);
    const std::vector<float> f = df.host();
    const std::vector<uint16_t> bf = dbf.host();
    size_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
      const float want = bmrt::dummy_value(key, uint64_t(i), init);
      if (f[size_t(i)] != want || bf[size_t(i)] != bf16_reference(want)) bad++;
    }
    char name[96];
    std::snprintf(name, sizeof name, "dummy_fill scale %g offset %g: the CPU's values", init.scale, init.offset);
    expect(name, bad == 0, std::to_string(bad) + " mismatches");
  }
}

void test_add_bias(int64_t rows, int64_t cols) {
  std::vector<float> y = normal(size_t(rows * cols)), bias = normal(size_t(cols));
  std::vector<double> ref(y.size());
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) ref[size_t(r * cols + c)] = double(y[size_t(r * cols + c)]) + bias[size_t(c)];
  Device<float> dy(y), db(bias);
  ck::add_bias(dy.get(), db.get(), rows, cols, nullptr);
  expect_close("add_bias " + std::to_string(rows) + " x " + std::to_string(cols), dy.host(), ref, 1e-6);
}

// Copies `bytes` between offsets of two buffers; the bytes around the destination must stay put.
void test_copy(int64_t bytes, int src_offset, int dst_offset) {
  const int64_t size = bytes + 64;
  std::vector<uint8_t> src(static_cast<size_t>(size)), dst(static_cast<size_t>(size));
  for (auto& b : src) b = uint8_t(rng());
  for (auto& b : dst) b = uint8_t(rng());
  Device<uint8_t> ds(src), dd(dst);
  ck::copy_kernel(ds.get() + src_offset, dd.get() + dst_offset, bytes, nullptr);
  std::vector<uint8_t> want = dst;
  std::memcpy(want.data() + dst_offset, src.data() + src_offset, size_t(bytes));
  char name[96];
  std::snprintf(name, sizeof name, "copy_kernel %lld bytes, offsets %d -> %d", (long long)bytes, src_offset, dst_offset);
  expect(name, dd.host() == want);
}

void test_argument_errors() {
  bool threw = false;
  try {
    ck::attention(nullptr, 0, nullptr, nullptr, nullptr, 1, 4, 4, 258, 0, 1.0f, static_cast<float*>(nullptr), nullptr);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  expect("attention refuses head_dim 258", threw);
  threw = false;
  try {
    ck::attention(nullptr, 0, nullptr, nullptr, nullptr, 1, 6, 4, 64, 0, 1.0f, static_cast<float*>(nullptr), nullptr);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  expect("attention refuses heads not a multiple of kv_heads", threw);
  threw = false;
  try {
    ck::gemv<float>(nullptr, nullptr, 4, 6, 1, nullptr, false, nullptr);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  expect("gemv refuses rows that are not whole 16-byte vectors", threw);
  // Zero-sized calls launch nothing and do not fail.
  ck::rms_norm(nullptr, nullptr, 0, 64, 1e-5f, static_cast<float*>(nullptr), nullptr);
  ck::silu_mul(nullptr, 0, 64, static_cast<float*>(nullptr), nullptr);
  ck::attention(nullptr, 0, nullptr, nullptr, nullptr, 0, 8, 8, 64, 0, 1.0f, static_cast<float*>(nullptr), nullptr);
  ck::gemv<float>(nullptr, nullptr, 0, 8, 1, nullptr, false, nullptr);
  expect("zero-sized calls", cudaDeviceSynchronize() == cudaSuccess);
}

// Informational timings (not checks): decode over a long cache and a prefill.
void time_attention(int heads, int kv_heads, int head_dim, int64_t start, int64_t tokens) {
  const int64_t kv_dim = int64_t(kv_heads) * head_dim, rows = start + tokens;
  Device<float> q(normal(size_t(tokens * heads * head_dim))), k(normal(size_t(rows * kv_dim))), v(normal(size_t(rows * kv_dim)));
  Device<float> out(size_t(tokens * heads * head_dim));
  Device<int64_t> dstart(std::vector<int64_t>{start});
  const int64_t q_stride = int64_t(heads) * head_dim;
  cudaEvent_t begin, end;
  cuda_check(cudaEventCreate(&begin), "event");
  cuda_check(cudaEventCreate(&end), "event");
  const int runs = 20;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  ck::attention(q.get(), q_stride, k.get(), v.get(), dstart.get(), tokens, heads, kv_heads, head_dim, 0, scale, out.get(), nullptr);  // warm-up
  cuda_check(cudaEventRecord(begin), "record");
  for (int r = 0; r < runs; r++)
    ck::attention(q.get(), q_stride, k.get(), v.get(), dstart.get(), tokens, heads, kv_heads, head_dim, 0, scale, out.get(), nullptr);
  cuda_check(cudaEventRecord(end), "record");
  cuda_check(cudaEventSynchronize(end), "sync");
  float ms = 0;
  cuda_check(cudaEventElapsedTime(&ms, begin, end), "elapsed");
  const double us = 1000.0 * ms / runs, cache_bytes = 2.0 * rows * kv_dim * 4;
  std::printf("time attention %d/%d/%d start %lld tokens %lld: %.1f us (KV cache %.1f MB, %.0f GB/s)\n", heads, kv_heads,
              head_dim, (long long)start, (long long)tokens, us, cache_bytes / 1e6, cache_bytes / (us * 1e3));
  cudaEventDestroy(begin);
  cudaEventDestroy(end);
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();  // clear the "no device" / "no driver" error
    std::printf("no CUDA device: skipped\n");
    return 0;
  }
  try {
    cudaDeviceProp prop;
    cuda_check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    std::printf("device 0: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);

    for (int dim : {64, 8192, 100, 3000}) test_rms_norm(5, dim, 1e-5f);
    test_rms_norm(1, 8192, 1e-6f);
    test_rms_norm(70001, 64, 1e-6f);  // more rows than the grid: the row loop
    test_conversions();

    struct Shape {
      int heads, kv_heads, head_dim;
    };
    const Shape shapes[] = {{8, 8, 64}, {32, 8, 128}, {64, 8, 128}, {4, 2, 8}, {8, 2, 256}, {6, 3, 96}, {4, 1, 80}};
    struct Case {
      int64_t start, tokens;
      int window;
    };
    const Case cases[] = {{0, 7, 0},    {100, 1, 0},  {3000, 1, 0},  {50, 33, 0},  {0, 64, 0}, {10, 8, 0},
                          {0, 7, 16},   {100, 1, 16}, {3000, 1, 16}, {50, 33, 16}, {0, 64, 16}, {50, 33, 1},
                          {3, 2, 16}};
    for (const Shape& s : shapes) {
      test_rope_cache(s.heads, s.kv_heads, s.head_dim);
      for (const Case& c : cases) test_attention(s.heads, s.kv_heads, s.head_dim, c.start, c.tokens, c.window);
    }
    test_silu_mul();
    for (int64_t tokens = 1; tokens <= ck::kGemvMaxTokens; tokens++) {
      test_gemv<float>("f32", 1000, 4096, tokens, tokens % 2 == 0);
      test_gemv<__nv_bfloat16>("bf16", 1000, 4096, tokens, tokens % 2 == 1);
      test_gemv<__half>("f16", 1000, 4096, tokens, false);
    }
    test_gemv<__nv_bfloat16>("bf16", 7, 8, 1, false);         // one vector per row: most lanes idle
    test_gemv<__nv_bfloat16>("bf16", 4097, 2056, 1, true);   // rows past whole blocks, cols past whole warp sweeps
    test_gemv<__nv_bfloat16>("bf16", 64, 28672, 2, false);   // a 70B down projection's row length
    test_gemv<float>("f32", 33, 12, 3, true);
    test_dummy_fill();
    test_add_bias(7, 1000);
    test_add_bias(1, 5);
    test_copy((1 << 20) + 5, 0, 0);
    test_copy(1000, 1, 3);
    test_copy(7, 0, 0);
    test_copy(16, 16, 32);
    test_argument_errors();

#ifndef BMRT_CUDA_EMULATOR  // timings of the emulator mean nothing
    time_attention(64, 8, 128, 3000, 1);
    time_attention(32, 8, 128, 3000, 1);
    time_attention(32, 8, 128, 0, 1024);
#endif
  } catch (const std::exception& e) {
    std::printf("FAIL error: %s\n", e.what());
    return 1;
  }
  std::printf("%d of %d checks passed\n", checks - failures, checks);
  return failures == 0 ? 0 : 1;
}
