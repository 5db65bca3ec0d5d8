// The CPU head (embeddings, final norm, lm_head) against a double-precision reference, in every
// float format, tied and not, on 1 and 2 threads; and the dummy weights: their range and moments,
// the same values on any number of threads, blocks and heads numbered apart, and a span loaded
// with dummy weights equal to one given the same values by set_layer. Prints
// "head: N passed, M failed".
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <vector>

#include "../src/core/dummy.h"
#include "../src/core/head.h"
#include "../src/core/span.h"
#include "random_block.h"
#include "test_support.h"

using namespace bmrt;

static void test_dummy_values() {
  ThreadPool one(1), two(2);
  const int64_t n = 1 << 20;
  std::vector<float> a(n), b(n);
  const DummyInit init{2.0f, 0.5f};
  fill_dummy(dummy_key(7, 40), init, a.data(), n, one);
  fill_dummy(dummy_key(7, 40), init, b.data(), n, two);
  CHECK(a == b, "dummy values do not depend on the thread count");
  double sum = 0, squares = 0, lo = 1e9, hi = -1e9;
  for (float v : a) {
    const double u = (double(v) - 0.5) / 2.0;
    sum += u;
    squares += u * u;
    lo = std::min(lo, u);
    hi = std::max(hi, u);
  }
  const double mean = sum / n, variance = squares / n - mean * mean;
  CHECK(lo >= -1 && hi < 1 && lo < -0.999 && hi > 0.999, "dummy u spans [-1, 1): %g .. %g", lo, hi);
  CHECK(std::fabs(mean) < 3e-3 && std::fabs(variance - 1.0 / 3) < 3e-3, "dummy u has mean 0 and variance 1/3: %g, %g", mean, variance);
  fill_dummy(dummy_key(8, 40), init, b.data(), n, one);
  int same = 0;
  for (int64_t i = 0; i < n; i++) same += a[i] == b[i];
  CHECK(same < n / 1000, "another seed gives other values (%d of %lld equal)", same, (long long)n);
  CHECK(dummy_stream(0, LayerTensor::Q) != dummy_stream(1, LayerTensor::Q) && dummy_stream(0, LayerTensor::InputNorm) > dummy_stream(HeadTensor::LmHead),
        "blocks and head tensors have streams of their own");
  // Indices past 2^32 (a 70B model's embeddings are not, but the hash takes 64-bit indices).
  CHECK(dummy_uniform(dummy_key(1, 1), (uint64_t(1) << 32) + 5) != dummy_uniform(dummy_key(1, 1), 5), "the index's high half counts");
}

static void test_dummy_span() {
  const BlockConfig c = bmrt_test::make_config(64, 96, 4, 2, 16, 0, true);
  ThreadPool pool(2);
  BlockSpan dummy(c, 2, WeightFormat::F32, 2, 0), given(c, 2, WeightFormat::F32, 2, 0);
  for (int l = 0; l < 2; l++) {
    dummy.load_dummy_layer(l, 10 + l, 3);
    given.set_layer(l, dummy_layer_tensors(c, 10 + l, 3, pool));
  }
  const auto t = dummy_layer_tensors(c, 10, 3, pool);
  const DummyInit q = dummy_init(c, LayerTensor::Q), norm = dummy_init(c, LayerTensor::InputNorm);
  CHECK(q.offset == 0 && std::fabs(q.scale - std::sqrt(3.0 / 64)) < 1e-7 && norm.offset == 1, "projection and norm inits");
  CHECK(t[int(LayerTensor::QBias)].size() == 64 && t[int(LayerTensor::DownBias)].size() == 64, "biases are made when the config has them");
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::vector<float> x(3 * 64), y;
  for (float& v : x) v = normal(rng);
  y = x;
  const int a = dummy.open_session(8), b = given.open_session(8);
  std::vector<Step> sa{{a, -1, 3, x.data()}}, sb{{b, -1, 3, y.data()}};
  dummy.forward(sa);
  given.forward(sb);
  CHECK(x == y, "a span of dummy weights computes what set_layer with the same values does");
}

static double reference_logit(const HeadConfig& c, const std::vector<float>& hidden, const HeadTensors& t, int64_t row) {
  double squares = 0;
  for (int i = 0; i < c.hidden; i++) squares += double(hidden[i]) * hidden[i];
  const double inv = 1 / std::sqrt(squares / c.hidden + c.rms_norm_eps);
  const std::vector<float>& w = c.tied ? t.embeddings : t.lm_head;
  double acc = 0;
  for (int i = 0; i < c.hidden; i++) acc += t.final_norm[i] * hidden[i] * inv * w[row * c.hidden + i];
  return acc;
}

static void test_head(bool tied, WeightFormat format, int threads) {
  HeadConfig c{1000, 96, 1e-5f, tied};
  ThreadPool pool(1);
  const HeadTensors t = dummy_head_tensors(c, 9, pool);
  Head head(c, format, threads);
  head.load_dummy(9);
  const int32_t ids[] = {0, 999, 17};
  std::vector<float> rows(3 * 96);
  head.embed(ids, 3, rows.data());
  double embed_error = 0;
  for (int r = 0; r < 3; r++)
    for (int i = 0; i < 96; i++) embed_error = std::max(embed_error, std::fabs(double(rows[r * 96 + i]) - t.embeddings[ids[r] * 96 + i]));
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> hidden(96), logits(1000);
  for (float& v : hidden) v = normal(rng);
  head.logits(hidden.data(), logits.data());
  double error = 0, peak = 0;
  for (int64_t r = 0; r < 1000; r++) {
    const double want = reference_logit(c, hidden, t, r);
    error = std::max(error, std::fabs(logits[r] - want));
    peak = std::max(peak, std::fabs(want));
  }
  // f32: fp32 rounding only; bf16 / f16 weights (and bf16-rounded inputs on AVX512_BF16) round to 8 / 11 bits.
  const double tolerance = format == WeightFormat::F32 ? 1e-5 : format == WeightFormat::F16 ? 2e-3 : 1.5e-2;
  CHECK(error <= tolerance * peak && embed_error <= (format == WeightFormat::F32 ? 0 : 1e-2),
        "head %s %s, %d threads: logits max diff %.2e of %.2e, embeddings %.1e", weight_format_name(format), tied ? "tied" : "untied",
        threads, error, peak, embed_error);
  bool refused = false;
  try {
    const int32_t bad[] = {1000};
    head.embed(bad, 1, rows.data());
  } catch (const std::invalid_argument&) {
    refused = true;
  }
  CHECK(refused, "a token id outside the vocabulary is refused");
}

int main() {
  test_dummy_values();
  test_dummy_span();
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::F16}) {
    test_head(false, f, 2);
    test_head(true, f, 1);
  }
  bool refused = false;
  try {
    Head q8(HeadConfig{10, 8, 1e-5f, false}, WeightFormat::Q8, 1);
  } catch (const std::invalid_argument&) {
    refused = true;
  }
  CHECK(refused, "an int8 head is refused");
  std::printf("head: %d passed, %d failed\n", bmrt_test::passed, bmrt_test::failed);
  return bmrt_test::failed == 0 ? 0 : 1;
}
