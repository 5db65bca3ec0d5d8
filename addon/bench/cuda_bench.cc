// The CUDA span's speed per layer, on random bf16 weights, against the device's measured memory
// bandwidth: decode (1 token at KV length 128; weight bytes / time as a share of the bandwidth)
// and prefill (128 tokens). Layer shapes of TinyLlama-1.1B, Llama-2-7B and Llama-2-70B; each is
// timed on a span of 4 layers and divided by 4, median of the runs. `--span70b` also loads a
// 40-block Llama-2-70B-shaped span and steps it, with the memory figures.
//
//   cuda_bench [--quick] [--span70b] [--csv FILE]
// Pairs with bench/torch_layer_bench.py, which times the same layer math in PyTorch on the same GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../src/cuda/cuda_kernels.cuh"
#include "../src/cuda/cuda_span.h"
#include "../test/random_block.h"

using namespace bmrt;

namespace {

struct Shape {
  const char* name;
  int hidden, intermediate, heads, kv_heads, head_dim;
};

const Shape SHAPES[] = {
    {"TinyLlama-1.1B", 2048, 5632, 32, 4, 64},
    {"Llama-2-7B", 4096, 11008, 32, 32, 128},
    {"Llama-2-70B", 8192, 28672, 64, 8, 128},
};

BlockConfig config_of(const Shape& s) { return bmrt_test::make_config(s.hidden, s.intermediate, s.heads, s.kv_heads, s.head_dim); }

// Small random weights (uploading is the slow part of a big span; the values do not matter).
std::vector<std::vector<float>> random_layer(const BlockConfig& c, std::mt19937& rng) {
  std::uniform_real_distribution<float> uniform(-0.02f, 0.02f);
  const int64_t h = c.hidden, inter = c.intermediate, q = int64_t(c.heads) * c.head_dim, kv = int64_t(c.kv_heads) * c.head_dim;
  const int64_t sizes[] = {h, q * h, kv * h, kv * h, h * q, h, inter * h, inter * h, h * inter};
  std::vector<std::vector<float>> t(static_cast<size_t>(LayerTensor::Count));
  for (int i = 0; i < 9; i++) {
    t[i].resize(static_cast<size_t>(sizes[i]));
    for (auto& x : t[i]) x = i == 0 || i == 5 ? 1.0f : uniform(rng);
  }
  return t;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Device-to-device streaming bandwidth (bytes read + written per second) with a plain copy kernel.
double measure_bandwidth() {
  const int64_t bytes = int64_t(1) << 31;  // 2 GiB each way: far beyond the L2
  void *src = nullptr, *dst = nullptr;
  if (cudaMalloc(&src, bytes) != cudaSuccess || cudaMalloc(&dst, bytes) != cudaSuccess) return 0;
  cudaMemset(src, 1, bytes);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<double> rates;
  for (int i = 0; i < 8; i++) {
    cudaEventRecord(start);
    cuda::copy_kernel(src, dst, bytes, nullptr);
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    if (i > 0) rates.push_back(2.0 * bytes / (ms / 1000.0));
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(src);
  cudaFree(dst);
  return median(rates);
}

// Median seconds of `runs` forwards of `tokens` tokens at `position` (the same position each time,
// so the KV length stays put).
double time_forward(CudaBlockSpan& span, int session, int64_t position, int64_t tokens, int runs, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> input(static_cast<size_t>(tokens * span.config().hidden));
  for (auto& x : input) x = normal(rng);
  std::vector<double> times;
  for (int r = 0; r < runs + 2; r++) {
    std::vector<float> hidden = input;
    std::vector<Step> steps{{session, position, tokens, hidden.data()}};
    const auto start = std::chrono::steady_clock::now();
    span.forward(steps);
    if (r >= 2) times.push_back(seconds_since(start));  // two warm-ups
  }
  return median(times);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, span70b = false;
  FILE* csv = nullptr;
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--span70b") == 0) span70b = true;
    else if (std::strcmp(argv[i], "--csv") == 0 && i + 1 < argc) csv = std::fopen(argv[++i], "w");
    else {
      std::fprintf(stderr, "usage: cuda_bench [--quick] [--span70b] [--csv FILE]\n");
      return 2;
    }
  }
  const auto devices = cuda_devices();
  if (devices.empty()) {
    std::printf("no CUDA device\n");
    return 1;
  }
  std::printf("device: %s (sm_%d%d), %.1f GiB, %.1f GiB free\n", devices[0].name.c_str(), devices[0].major, devices[0].minor,
              devices[0].total_bytes / 1073741824.0, cuda_free_bytes(0) / 1073741824.0);
  const double bandwidth = measure_bandwidth();
  std::printf("copy bandwidth (read + write): %.0f GB/s\n\n", bandwidth / 1e9);
  if (csv != nullptr) std::fprintf(csv, "layer,decode_ms,decode_share_of_bandwidth,prefill128_ms,prefill_tflops\n");

  std::mt19937 rng(7);
  const int layers = 4, runs = quick ? 5 : 20;
  std::printf("%-16s %12s %14s %16s %14s\n", "layer (bf16)", "decode ms", "% bandwidth", "prefill-128 ms", "TFLOP/s");
  for (const Shape& s : SHAPES) {
    const BlockConfig c = config_of(s);
    CudaBlockSpan span(c, layers, WeightFormat::BF16, 0, 0);
    for (int l = 0; l < layers; l++) span.set_layer(l, random_layer(c, rng));
    const int session = span.open_session(256);
    time_forward(span, session, 0, 128, 0, rng);  // fills the cache's first 128 rows
    const double decode = time_forward(span, session, 128, 1, runs, rng) / layers;
    const double prefill = time_forward(span, session, 0, 128, runs, rng) / layers;
    const double layer_bytes = double(span.weight_bytes()) / layers;
    const double share = layer_bytes / decode / bandwidth;
    const double matmul_params = (double(s.heads) * s.head_dim * 2 + double(s.kv_heads) * s.head_dim * 2) * s.hidden + 3.0 * s.hidden * s.intermediate;
    const double tflops = 2.0 * matmul_params * 128 / prefill / 1e12;
    std::printf("%-16s %12.3f %13.0f%% %16.3f %14.1f\n", s.name, decode * 1e3, share * 100, prefill * 1e3, tflops);
    if (csv != nullptr) std::fprintf(csv, "%s,%.4f,%.3f,%.4f,%.2f\n", s.name, decode * 1e3, share, prefill * 1e3, tflops);
  }

  if (span70b) {
    // A 40-block Llama-2-70B-shaped span: the memory it takes, and a prefill and decode through it.
    const Shape& s = SHAPES[2];
    const BlockConfig c = config_of(s);
    const int blocks = 40;
    const int64_t free_before = cuda_free_bytes(0);
    const auto load_start = std::chrono::steady_clock::now();
    CudaBlockSpan span(c, blocks, WeightFormat::BF16, 0, 0);
    const auto weights = random_layer(c, rng);  // one random layer uploaded 40 times: the upload is what is measured
    for (int l = 0; l < blocks; l++) span.set_layer(l, weights);
    const double load_seconds = seconds_since(load_start);
    const int session = span.open_session(2048);
    const int64_t free_after = cuda_free_bytes(0);
    const double prefill = time_forward(span, session, 0, 128, quick ? 3 : 5, rng);
    time_forward(span, session, 0, 128, 0, rng);
    const double decode = time_forward(span, session, 128, 1, quick ? 5 : 20, rng);
    std::printf("\nLlama-2-70B shape, %d blocks, bf16: weights %.2f GiB on the GPU (uploaded in %.1f s), a 2048-token session's KV cache %.2f GiB;\n"
                "GPU memory used %.2f GiB of %.2f (free %.2f before, %.2f after); prefill-128 %.1f ms, decode %.2f ms per token (%.1f tokens/s)\n",
                blocks, span.weight_bytes() / 1073741824.0, load_seconds, 2048.0 * span.cache_bytes_per_token() / 1073741824.0,
                (free_before - free_after) / 1073741824.0, devices[0].total_bytes / 1073741824.0, free_before / 1073741824.0,
                free_after / 1073741824.0, prefill * 1e3, decode * 1e3, 1.0 / decode);
  }
  if (csv != nullptr) std::fclose(csv);
  return 0;
}
