// The CUDA span against the CPU span (fp32 weights: the reference) on the same random weights:
// several shapes (GQA and not, biases, a sliding window), prefill then decode, several sessions in
// one batch, sessions over part of the span, rewinds, the cache budget and bad steps; each with
// decode graphs and the GEMV kernel (the defaults) and without either. Also: weights loaded from a
// file in another dtype (converted on the GPU), dummy weights made on the GPU against the CPU's,
// a layer replaced after graphs were captured, and the CUDA head against the CPU head. The CUDA
// span keeps weights in bf16, f16 or f32 and rounds the projections' inputs to them, so outputs
// are compared by relative max difference: printed for every case, bounded by 3e-2 (bf16), 5e-3
// (f16) and 1e-4 (f32, which differs from the CPU only in the order of fp32 sums). Without a GPU
// it prints "no CUDA device: skipped" and passes.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "../src/core/dummy.h"
#include "../src/core/head.h"
#include "../src/core/span.h"
#include "../src/cuda/cuda_head.h"
#include "../src/cuda/cuda_span.h"
#include "random_block.h"
#include "test_support.h"

using namespace bmrt;
using bmrt_test::random_layer;
using bmrt_test::Weights;

struct Shape {
  const char* name;
  int hidden, intermediate, heads, kv_heads, head_dim, layers, window;
  bool biases;
};

static BlockConfig config_of(const Shape& s) {
  return bmrt_test::make_config(s.hidden, s.intermediate, s.heads, s.kv_heads, s.head_dim, s.window, s.biases);
}

static std::vector<float> random_hidden(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = normal(rng);
  return v;
}

// max |a - b| / max |b|
static double relative_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); i++) {
    diff = std::max(diff, std::fabs(double(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return diff / scale;
}

// Runs the same steps through both spans and compares every output.
struct Pair {
  BlockSpan cpu;
  CudaBlockSpan gpu;
  int64_t hidden;
  double worst = 0;
  Pair(const BlockConfig& c, int layers, WeightFormat format, int64_t max_cache)
      : cpu(c, layers, WeightFormat::F32, 2, max_cache), gpu(c, layers, format, 0, max_cache), hidden(c.hidden) {}

  // One batch: (cpu session, gpu session, position, tokens) per step, same random inputs to both.
  void step(const std::vector<std::array<int64_t, 4>>& batch, std::mt19937& rng, const char* what, double bound) {
    std::vector<std::vector<float>> in_cpu, in_gpu;
    std::vector<Step> cpu_steps, gpu_steps;
    for (const auto& b : batch) in_cpu.push_back(random_hidden(b[3] * hidden, rng));
    in_gpu = in_cpu;
    for (size_t i = 0; i < batch.size(); i++) {
      cpu_steps.push_back({static_cast<int>(batch[i][0]), batch[i][2], batch[i][3], in_cpu[i].data()});
      gpu_steps.push_back({static_cast<int>(batch[i][1]), batch[i][2], batch[i][3], in_gpu[i].data()});
    }
    cpu.forward(cpu_steps);
    gpu.forward(gpu_steps);
    for (size_t i = 0; i < batch.size(); i++) {
      const double d = relative_diff(in_gpu[i], in_cpu[i]);
      worst = std::max(worst, d);
      CHECK(d < bound, "%s, step %zu: relative max diff %.3e over %.1e", what, i, d, bound);
    }
  }
};

static double bound_for(WeightFormat format) { return format == WeightFormat::BF16 ? 3e-2 : format == WeightFormat::F16 ? 5e-3 : 1e-4; }

static void check_shape(const Shape& s, WeightFormat format, const char* mode, std::mt19937& rng) {
  const BlockConfig c = config_of(s);
  const double bound = bound_for(format);
  Pair pair(c, s.layers, format, 0);
  for (int l = 0; l < s.layers; l++) {
    Weights w = random_layer(c, rng);
    pair.cpu.set_layer(l, w.tensors);
    pair.gpu.set_layer(l, w.tensors);
  }
  // Two sessions over the whole span, one over its second half.
  const int a_cpu = pair.cpu.open_session(256), a_gpu = pair.gpu.open_session(256);
  const int b_cpu = pair.cpu.open_session(256), b_gpu = pair.gpu.open_session(256);
  const int half = s.layers / 2;
  const int c_cpu = pair.cpu.open_session(64, half), c_gpu = pair.gpu.open_session(64, half);
  pair.step({{a_cpu, a_gpu, -1, 37}}, rng, "prefill of 37", bound);
  pair.step({{b_cpu, b_gpu, -1, 5}}, rng, "prefill of 5", bound);
  for (int t = 0; t < 6; t++) pair.step({{a_cpu, a_gpu, -1, 1}, {b_cpu, b_gpu, -1, 1}}, rng, "batched decode of two sessions", bound);
  pair.step({{a_cpu, a_gpu, 20, 3}}, rng, "rewind to 20, then 3 tokens", bound);
  pair.step({{c_cpu, c_gpu, -1, 9}}, rng, "a session over the second half", bound);
  pair.step({{c_cpu, c_gpu, -1, 1}}, rng, "its decode", bound);
  CHECK(pair.gpu.session_length(a_gpu) == 23 && pair.gpu.session_length(b_gpu) == 11 && pair.gpu.session_length(c_gpu) == 10,
        "session lengths after the steps");
  // A closed session's graphs go; a new session (a new id) captures its own.
  pair.cpu.close_session(b_cpu);
  pair.gpu.close_session(b_gpu);
  const int d_cpu = pair.cpu.open_session(32), d_gpu = pair.gpu.open_session(32);
  pair.step({{d_cpu, d_gpu, -1, 2}}, rng, "a new session after a close", bound);
  for (int t = 0; t < 3; t++) pair.step({{d_cpu, d_gpu, -1, 1}}, rng, "its decode", bound);
  // Replacing a layer after graphs were captured: they must not run the old weights.
  Weights w = random_layer(c, rng);
  pair.cpu.set_layer(0, w.tensors);
  pair.gpu.set_layer(0, w.tensors);
  for (int t = 0; t < 2; t++) pair.step({{d_cpu, d_gpu, -1, 1}}, rng, "decode after block 0 was replaced", bound);
  std::printf("  %-34s %-4s %-22s relative max diff %.2e\n", s.name, weight_format_name(format), mode, pair.worst);
}

// The same block from a checkpoint-like file: tensors stored in `stored` (converted to the span's
// format on the GPU, or copied as they are when they match), against the CPU span reading the file.
static void check_file(WeightFormat format, SourceDType stored, std::mt19937& rng) {
  const Shape s{"from a file", 256, 688, 8, 2, 32, 2, 0, true};
  const BlockConfig c = config_of(s);
  const std::string path = "/tmp/bmrt_cuda_span_test_" + std::to_string(static_cast<int>(stored)) + ".bin";
  std::vector<std::vector<TensorSource>> sources(2);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    uint64_t offset = 0;
    for (int l = 0; l < 2; l++) {
      const Weights w = random_layer(c, rng);
      for (int t = 0; t < static_cast<int>(LayerTensor::Count); t++) {
        TensorSource source{path, offset, 0, stored};
        for (float v : w.tensors[t]) {
          if (stored == SourceDType::F32) {
            out.write(reinterpret_cast<const char*>(&v), 4);
          } else {
            const uint16_t bits = stored == SourceDType::BF16 ? float_to_bf16(v) : float_to_half(v);
            out.write(reinterpret_cast<const char*>(&bits), 2);
          }
          source.bytes += source_element_bytes(stored);
        }
        offset += source.bytes;
        sources[l].push_back(source);
      }
    }
  }
  Pair pair(c, 2, format, 0);
  for (int l = 0; l < 2; l++) {
    pair.cpu.load_layer(l, sources[l]);
    pair.gpu.load_layer(l, sources[l]);
  }
  std::remove(path.c_str());
  const int a_cpu = pair.cpu.open_session(64), a_gpu = pair.gpu.open_session(64);
  pair.step({{a_cpu, a_gpu, -1, 20}}, rng, "prefill from a file", bound_for(format));
  for (int t = 0; t < 3; t++) pair.step({{a_cpu, a_gpu, -1, 1}}, rng, "decode from a file", bound_for(format));
  const char* names[] = {"f32", "f16", "bf16"};
  std::printf("  %-34s %-4s stored as %-12s relative max diff %.2e\n", s.name, weight_format_name(format), names[static_cast<int>(stored)], pair.worst);
}

// Dummy weights made on the GPU compute what the CPU's do (f32: the same weights exactly).
static void check_dummy(WeightFormat format, std::mt19937& rng) {
  const Shape s{"dummy weights", 512, 1376, 8, 2, 64, 3, 0, true};
  Pair pair(config_of(s), s.layers, format, 0);
  for (int l = 0; l < s.layers; l++) {
    pair.cpu.load_dummy_layer(l, 40 + l, 1);
    pair.gpu.load_dummy_layer(l, 40 + l, 1);
  }
  const int a_cpu = pair.cpu.open_session(64), a_gpu = pair.gpu.open_session(64);
  pair.step({{a_cpu, a_gpu, -1, 11}}, rng, "dummy prefill", bound_for(format));
  for (int t = 0; t < 3; t++) pair.step({{a_cpu, a_gpu, -1, 1}}, rng, "dummy decode", bound_for(format));
  std::printf("  %-34s %-4s %-22s relative max diff %.2e\n", s.name, weight_format_name(format), "", pair.worst);
}

// The CUDA head against the CPU head (f32 weights) on dummy weights, tied and not.
static void check_head(WeightFormat format, bool tied, std::mt19937& rng) {
  const HeadConfig c{32000, 1024, 1e-5f, tied};
  Head cpu(c, WeightFormat::F32, 4);
  CudaHead gpu(c, format, 0);
  cpu.load_dummy(1);
  gpu.load_dummy(1);
  const int32_t ids[] = {0, 31999, 123};
  std::vector<float> a(3 * 1024), b(3 * 1024);
  cpu.embed(ids, 3, a.data());
  gpu.embed(ids, 3, b.data());
  const double embed = relative_diff(b, a);
  std::vector<float> hidden = random_hidden(1024, rng), want(32000), got(32000);
  cpu.logits(hidden.data(), want.data());
  gpu.logits(hidden.data(), got.data());
  const double d = relative_diff(got, want);
  CHECK(d < bound_for(format) && embed < (format == WeightFormat::F32 ? 1e-7 : 1e-2),
        "CUDA head %s %s: logits relative max diff %.3e, embeddings %.1e", weight_format_name(format), tied ? "tied" : "untied", d, embed);
  std::printf("  %-34s %-4s %-22s relative max diff %.2e\n", "head, vocab 32000", weight_format_name(format), tied ? "tied" : "untied", d);
}

static void check_errors(std::mt19937& rng) {
  const Shape s{"errors", 64, 128, 4, 2, 16, 2, 0, false};
  const BlockConfig c = config_of(s);
  CudaBlockSpan span(c, 2, WeightFormat::BF16, 0, 100);  // 100 tokens per block
  for (int l = 0; l < 2; l++) span.set_layer(l, random_layer(c, rng).tensors);
  const int a = span.open_session(80);
  bool full = false;
  try {
    span.open_session(40);
  } catch (const CacheFullError&) {
    full = true;
  }
  CHECK(full, "a session past the per-block budget is refused with CacheFullError");
  CHECK(span.open_session(40, 1, 1) > 0, "a one-block session of 40 fits the remaining budget");
  std::vector<float> nan(64, NAN);
  std::vector<Step> bad{{a, -1, 1, nan.data()}};
  bool refused = false;
  try {
    span.forward(bad);
  } catch (const std::invalid_argument&) {
    refused = true;
  }
  CHECK(refused && span.session_length(a) == 0, "NaN input is refused before any session changes");
  bool format_refused = false;
  try {
    CudaBlockSpan q8(c, 1, WeightFormat::Q8, 0, 0);
  } catch (const std::invalid_argument&) {
    format_refused = true;
  }
  CHECK(format_refused, "int8 weights are refused on CUDA with a clear error");
  bool unloaded = false;
  try {
    CudaBlockSpan empty(c, 2, WeightFormat::BF16, 0, 0);
    const int e = empty.open_session(8);
    std::vector<float> x(64, 1.0f);
    std::vector<Step> steps{{e, -1, 1, x.data()}};
    empty.forward(steps);
  } catch (const std::invalid_argument&) {
    unloaded = true;
  }
  CHECK(unloaded, "a forward through blocks that were never loaded is refused");
}

int main() {
  const auto devices = cuda_devices();
  if (devices.empty()) {
    std::printf("no CUDA device: skipped\n");
    return 0;
  }
  std::printf("device 0: %s (sm_%d%d), %.1f of %.1f GiB free\n", devices[0].name.c_str(), devices[0].major, devices[0].minor,
              cuda_free_bytes(0) / 1073741824.0, devices[0].total_bytes / 1073741824.0);
  std::mt19937 rng(1234);
  const Shape shapes[] = {
      {"MHA 8/8, head 16, 2 blocks", 128, 352, 8, 8, 16, 2, 0, false},
      {"GQA 8/2, head 64, 3 blocks, biases", 512, 1376, 8, 2, 64, 3, 0, true},
#ifndef BMRT_CUDA_EMULATOR  // minutes in the CPU emulator
      {"GQA 32/8, head 128, 2 blocks", 4096, 11008, 32, 8, 128, 2, 0, false},
#endif
      {"GQA 8/4, window 16, 2 blocks", 256, 512, 8, 4, 32, 2, 16, false},
      {"head 96 (not a power of two)", 384, 1024, 4, 2, 96, 2, 0, false},
  };
  // BMRT_CUDA_GRAPHS and BMRT_CUDA_GEMV are read when a span is made.
  const struct {
    const char* name;
    const char* graphs;
    const char* gemv;
  } modes[] = {{"graphs + GEMV", "1", "1"}, {"no graphs, GEMV", "0", "1"}, {"graphs, cuBLAS only", "1", "0"}};
  for (const auto& mode : modes) {
    setenv("BMRT_CUDA_GRAPHS", mode.graphs, 1);
    setenv("BMRT_CUDA_GEMV", mode.gemv, 1);
    for (const Shape& s : shapes) check_shape(s, WeightFormat::BF16, mode.name, rng);
  }
  setenv("BMRT_CUDA_GRAPHS", "1", 1);
  setenv("BMRT_CUDA_GEMV", "1", 1);
  for (const Shape& s : shapes) {
    check_shape(s, WeightFormat::F16, modes[0].name, rng);
    check_shape(s, WeightFormat::F32, modes[0].name, rng);
  }
  check_file(WeightFormat::BF16, SourceDType::F32, rng);
  check_file(WeightFormat::BF16, SourceDType::BF16, rng);
  check_file(WeightFormat::F32, SourceDType::F16, rng);
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16}) check_dummy(f, rng);
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16}) {
    check_head(f, false, rng);
    check_head(f, true, rng);
  }
  check_errors(rng);
  std::printf("cuda span: %d passed, %d failed\n", bmrt_test::passed, bmrt_test::failed);
  return bmrt_test::failed == 0 ? 0 : 1;
}
