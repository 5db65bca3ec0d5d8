// BlockSpan against a straightforward double-precision decoder block written out below, on random
// weights: GQA and not, biases, sliding window, prefill then decode, several sessions, batches,
// rewinds, the cache budget, and every weight format's drift. The CUDA implementation is meant to
// pass the same checks. Prints "span: N passed, M failed".
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "../src/core/span.h"
#include "random_block.h"
#include "test_support.h"

using namespace bmrt;
using bmrt_test::make_config;
using bmrt_test::random_layer;
using bmrt_test::Weights;


// The whole sequence x [n, hidden] through the layers at once, in double precision.
static std::vector<double> reference(const BlockConfig& c, const std::vector<Weights>& layers, std::vector<double> x, int64_t n) {
  const int64_t h = c.hidden, inter = c.intermediate, q_dim = int64_t(c.heads) * c.head_dim, kv_dim = int64_t(c.kv_heads) * c.head_dim;
  auto T = [](const Weights& w, LayerTensor t) -> const std::vector<float>& { return w.tensors[static_cast<int>(t)]; };
  auto matmul = [&](const std::vector<double>& in, int64_t cols, const std::vector<float>& w, const std::vector<float>& bias, int64_t rows) {
    std::vector<double> out(static_cast<size_t>(n * rows));
    for (int64_t t = 0; t < n; t++)
      for (int64_t r = 0; r < rows; r++) {
        double acc = bias.empty() ? 0 : bias[r];
        for (int64_t i = 0; i < cols; i++) acc += in[t * cols + i] * w[r * cols + i];
        out[t * rows + r] = acc;
      }
    return out;
  };
  auto norm = [&](const std::vector<double>& in, const std::vector<float>& w) {
    std::vector<double> out(in.size());
    for (int64_t t = 0; t < n; t++) {
      double ss = 0;
      for (int64_t i = 0; i < h; i++) ss += in[t * h + i] * in[t * h + i];
      double inv = 1 / std::sqrt(ss / h + c.rms_norm_eps);
      for (int64_t i = 0; i < h; i++) out[t * h + i] = w[i] * in[t * h + i] * inv;
    }
    return out;
  };
  auto rotate = [&](std::vector<double>& v, int heads, int64_t dim) {
    const int half = c.head_dim / 2;
    for (int64_t t = 0; t < n; t++)
      for (int hd = 0; hd < heads; hd++) {
        double* p = &v[t * dim + hd * c.head_dim];
        for (int j = 0; j < half; j++) {
          double angle = double(t) * c.rope_inverse_frequencies[j];
          double a = p[j], b = p[j + half];
          p[j] = a * std::cos(angle) - b * std::sin(angle);
          p[j + half] = b * std::cos(angle) + a * std::sin(angle);
        }
      }
  };
  for (const Weights& w : layers) {
    auto normed = norm(x, T(w, LayerTensor::InputNorm));
    auto q = matmul(normed, h, T(w, LayerTensor::Q), T(w, LayerTensor::QBias), q_dim);
    auto k = matmul(normed, h, T(w, LayerTensor::K), T(w, LayerTensor::KBias), kv_dim);
    auto v = matmul(normed, h, T(w, LayerTensor::V), T(w, LayerTensor::VBias), kv_dim);
    rotate(q, c.heads, q_dim);
    rotate(k, c.kv_heads, kv_dim);
    std::vector<double> attn(static_cast<size_t>(n * q_dim));
    for (int64_t t = 0; t < n; t++)
      for (int hd = 0; hd < c.heads; hd++) {
        const int kvh = hd / (c.heads / c.kv_heads);
        const int64_t first = c.sliding_window > 0 ? std::max<int64_t>(0, t - c.sliding_window + 1) : 0;
        std::vector<double> s;
        double max = -1e300, sum = 0;
        for (int64_t j = first; j <= t; j++) {
          double dot = 0;
          for (int d = 0; d < c.head_dim; d++) dot += q[t * q_dim + hd * c.head_dim + d] * k[j * kv_dim + kvh * c.head_dim + d];
          s.push_back(dot / std::sqrt(double(c.head_dim)));
          max = std::max(max, s.back());
        }
        for (auto& e : s) sum += (e = std::exp(e - max));
        for (int d = 0; d < c.head_dim; d++) {
          double acc = 0;
          for (int64_t j = first; j <= t; j++) acc += s[j - first] / sum * v[j * kv_dim + kvh * c.head_dim + d];
          attn[t * q_dim + hd * c.head_dim + d] = acc;
        }
      }
    auto o = matmul(attn, q_dim, T(w, LayerTensor::O), T(w, LayerTensor::OBias), h);
    for (size_t i = 0; i < x.size(); i++) x[i] += o[i];
    auto normed2 = norm(x, T(w, LayerTensor::PostAttentionNorm));
    auto gate = matmul(normed2, h, T(w, LayerTensor::Gate), T(w, LayerTensor::GateBias), inter);
    auto up = matmul(normed2, h, T(w, LayerTensor::Up), T(w, LayerTensor::UpBias), inter);
    for (size_t i = 0; i < gate.size(); i++) gate[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
    auto down = matmul(gate, inter, T(w, LayerTensor::Down), T(w, LayerTensor::DownBias), h);
    for (size_t i = 0; i < x.size(); i++) x[i] += down[i];
  }
  return x;
}

static double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); i++) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}

// Prefill `prefill` tokens, then decode the rest one at a time; returns every output row.
static std::vector<float> run_span(BlockSpan& span, const std::vector<float>& x, int64_t n, int64_t prefill) {
  const int64_t h = span.config().hidden;
  int session = span.open_session(n);
  std::vector<float> out(x);
  std::vector<Step> steps(1);
  steps[0] = {session, -1, prefill, out.data()};
  span.forward(steps);
  for (int64_t t = prefill; t < n; t++) {
    steps[0] = {session, -1, 1, out.data() + t * h};
    span.forward(steps);
  }
  span.close_session(session);
  return out;
}

static void test_shape(const char* name, BlockConfig c, int layers, WeightFormat format, double tolerance) {
  std::mt19937 rng(1234);
  std::vector<Weights> weights;
  for (int l = 0; l < layers; l++) weights.push_back(random_layer(c, rng));
  BlockSpan span(c, layers, format, 2, 0);
  for (int l = 0; l < layers; l++) span.set_layer(l, weights[l].tensors);
  const int64_t n = 13;
  std::vector<float> x(static_cast<size_t>(n * c.hidden));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& v : x) v = normal(rng);
  auto expected = reference(c, weights, std::vector<double>(x.begin(), x.end()), n);
  double scale = 0;
  for (double v : expected) scale = std::max(scale, std::abs(v));
  for (int64_t prefill : {int64_t(1), int64_t(5), n}) {
    auto got = run_span(span, x, n, prefill);
    double diff = max_abs_diff(got, expected) / scale;
    CHECK(diff <= tolerance, "%s (%s, prefill %lld): relative max diff %.3g > %.3g", name, weight_format_name(format), (long long)prefill, diff, tolerance);
    if (prefill == 5) std::printf("  %-28s %-5s relative max diff %.2e\n", name, weight_format_name(format), diff);
  }
}

static void test_sessions() {
  BlockConfig c = make_config(64, 96, 4, 2, 16, 0, false);
  std::mt19937 rng(7);
  Weights w = random_layer(c, rng);
  BlockSpan span(c, 1, WeightFormat::F32, 2, 20);
  span.set_layer(0, w.tensors);
  std::vector<float> a(5 * 64), b(3 * 64);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& v : a) v = normal(rng);
  for (auto& v : b) v = normal(rng);
  auto alone_a = run_span(span, a, 5, 5);
  auto alone_b = run_span(span, b, 3, 3);
  // Both in one batch.
  int sa = span.open_session(5), sb = span.open_session(8);
  std::vector<float> ba(a), bb(b);
  std::vector<Step> steps = {{sa, -1, 5, ba.data()}, {sb, -1, 3, bb.data()}};
  span.forward(steps);
  double diff = 0;
  for (size_t i = 0; i < a.size(); i++) diff = std::max(diff, double(std::abs(ba[i] - alone_a[i])));
  for (size_t i = 0; i < b.size(); i++) diff = std::max(diff, double(std::abs(bb[i] - alone_b[i])));
  CHECK(diff < 1e-5, "batched steps differ from separate runs by %g", diff);
  CHECK(span.session_length(sa) == 5 && span.session_length(sb) == 3, "session lengths after a batch");
  // Rewind sb to 1 and replay: same result as the first time.
  std::vector<float> replay(b.begin() + 64, b.end());
  steps = {{sb, 1, 2, replay.data()}};
  span.forward(steps);
  diff = 0;
  for (size_t i = 0; i < replay.size(); i++) diff = std::max(diff, double(std::abs(replay[i] - alone_b[64 + i])));
  CHECK(diff < 1e-5, "rewound replay differs by %g", diff);
  // The cache budget: 5 + 8 reserved of 20.
  bool refused = false;
  try {
    span.open_session(8);
  } catch (const CacheFullError&) {
    refused = true;
  }
  CHECK(refused, "a session over the cache budget was not refused");
  span.close_session(sa);
  CHECK(span.cache_layer_tokens_reserved() == 8, "closing a session returns its reservation");
  // Bad steps are refused before any session changes.
  std::vector<float> nan(64, NAN);
  steps = {{sb, -1, 1, nan.data()}};
  bool nan_refused = false;
  try {
    span.forward(steps);
  } catch (const std::invalid_argument&) {
    nan_refused = true;
  }
  CHECK(nan_refused && span.session_length(sb) == 3, "NaN input refused, session untouched");
}

// A session over layers [1, 3) of a 4-layer span gives what a 2-layer span of those layers gives,
// prefill then decode; a batch mixing layer ranges is refused; the budget counts layer-tokens.
static void test_sub_range() {
  BlockConfig c = make_config(64, 128, 4, 2, 16, 0, false);
  std::mt19937 rng(11);
  std::vector<Weights> weights;
  for (int l = 0; l < 4; l++) weights.push_back(random_layer(c, rng));
  BlockSpan full(c, 4, WeightFormat::F32, 2, 0), part(c, 2, WeightFormat::F32, 2, 0);
  for (int l = 0; l < 4; l++) full.set_layer(l, weights[l].tensors);
  for (int l = 0; l < 2; l++) part.set_layer(l, weights[1 + l].tensors);
  const int64_t n = 9, prefill = 4, h = c.hidden;
  std::vector<float> x(static_cast<size_t>(n * h));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& v : x) v = normal(rng);
  auto expected = run_span(part, x, n, prefill);
  int session = full.open_session(n, 1, 2);
  CHECK(full.cache_layer_tokens_reserved() == 2 * n, "a 2-layer session of %lld reserves %lld layer-tokens, not %lld",
        (long long)n, (long long)(2 * n), (long long)full.cache_layer_tokens_reserved());
  std::vector<float> got(x);
  std::vector<Step> steps = {{session, -1, prefill, got.data()}};
  full.forward(steps);
  for (int64_t t = prefill; t < n; t++) {
    steps = {{session, -1, 1, got.data() + t * h}};
    full.forward(steps);
  }
  double diff = 0;
  for (size_t i = 0; i < got.size(); i++) diff = std::max(diff, double(std::abs(got[i] - expected[i])));
  CHECK(diff <= 1e-6, "layers 1:3 of a 4-layer span differ from a 2-layer span by %g", diff);

  // Sessions over different layers cannot share a batch (their tokens meet different weights).
  int whole = full.open_session(4);
  std::vector<float> a(static_cast<size_t>(h), 0.5f), b(static_cast<size_t>(h), 0.5f);
  steps = {{session, 0, 1, a.data()}, {whole, -1, 1, b.data()}};
  bool mixed_refused = false;
  try {
    full.forward(steps);
  } catch (const std::invalid_argument& e) {
    mixed_refused = std::string(e.what()).find("same blocks") != std::string::npos;
  }
  CHECK(mixed_refused && full.session_length(session) == n && full.session_length(whole) == 0, "a mixed-range batch refused, sessions untouched");

  // Out-of-span layer ranges are refused.
  for (auto range : {std::pair<int, int>{3, 2}, {-1, 2}, {4, -1}, {0, 0}, {0, 5}}) {
    bool refused = false;
    try {
      full.open_session(4, range.first, range.second);
    } catch (const std::invalid_argument&) {
      refused = true;
    }
    CHECK(refused, "layers %d (+%d) of a 4-layer span refused", range.first, range.second);
  }

  // Budget: 10 tokens per block × 4 blocks = 40 layer-tokens.
  BlockSpan budget(c, 4, WeightFormat::F32, 1, 10);
  for (int l = 0; l < 4; l++) budget.set_layer(l, weights[l].tensors);
  int s1 = budget.open_session(10, 1, 2);  // 20
  int s2 = budget.open_session(5);          // 20: 40 of 40
  CHECK(budget.cache_layer_tokens_reserved() == 40, "reserved %lld layer-tokens, expected 40", (long long)budget.cache_layer_tokens_reserved());
  std::string message;
  try {
    budget.open_session(1, 3, 1);
  } catch (const CacheFullError& e) {
    message = e.what();
  }
  CHECK(message.find("40 of 40 tokens reserved") != std::string::npos && message.find("needs 1") != std::string::npos,
        "a full budget refuses even one layer-token: '%s'", message.c_str());
  budget.close_session(s1);
  CHECK(budget.cache_layer_tokens_reserved() == 20, "closing a sub-range session returns its 20 layer-tokens");
  int s3 = budget.open_session(20, 0, 1);  // 20 more fit again
  CHECK(budget.cache_layer_tokens_reserved() == 40, "a 1-layer session of 20 reserves 20");
  budget.close_session(s2);
  budget.close_session(s3);
}

int main() {
  std::printf("span tests, kernels: %s\n", cpu_kernel_family().c_str());
  test_shape("MHA 1 block", make_config(64, 160, 4, 4, 16, 0, false), 1, WeightFormat::F32, 2e-5);
  test_shape("GQA 8/2, biases, 3 blocks", make_config(96, 224, 8, 2, 12, 0, true), 3, WeightFormat::F32, 2e-5);
  test_shape("sliding window 4, 2 blocks", make_config(64, 128, 4, 2, 16, 4, false), 2, WeightFormat::F32, 2e-5);
  const BlockConfig wide = make_config(128, 256, 8, 2, 16, 0, false);
  test_shape("GQA 8/2, 2 blocks", wide, 2, WeightFormat::F32, 2e-5);
  test_shape("GQA 8/2, 2 blocks", wide, 2, WeightFormat::BF16, 3e-2);
  test_shape("GQA 8/2, 2 blocks", wide, 2, WeightFormat::F16, 5e-3);
  test_shape("GQA 8/2, 2 blocks", wide, 2, WeightFormat::Q8, 3e-2);
  test_shape("GQA 8/2, 2 blocks", wide, 2, WeightFormat::Q4, 0.25);
  test_sessions();
  test_sub_range();
  std::printf("span: %d passed, %d failed\n", bmrt_test::passed, bmrt_test::failed);
  return bmrt_test::failed == 0 ? 0 : 1;
}
