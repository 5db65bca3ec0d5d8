// The CUDA span's speed per layer against the device's measured ceilings: the copy bandwidth
// (decode is memory-bound: weight bytes / time as a share of it) and the bf16 matrix rate of a
// large cuBLAS product (prefill is compute-bound: projection FLOPs / time as a share of it).
// Layer shapes of TinyLlama-1.1B, Llama-2-7B and Llama-2-70B, on dummy weights made on the GPU;
// decode is 1 token at KV length 128, timed as the server runs it (hidden state in, all the span's
// layers, hidden state out) and divided by the layers, median of the runs. Decode is also timed
// without CUDA graphs and without the GEMV kernel (BMRT_CUDA_GRAPHS=0, BMRT_CUDA_GEMV=0: launches
// one by one, cuBLAS for every projection, as before both existed). `--span70b` loads a
// 40-block Llama-2-70B span with dummy weights and steps it, with the load time and memory.
//
//   cuda_bench [--quick] [--span70b] [--csv FILE]
// Pairs with bench/torch_layer_bench.py, which times the same layer math in PyTorch on the same GPU.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
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
  int layers;  // in the timed span: enough that one forward's fixed costs are small per layer
};

const Shape SHAPES[] = {
    {"TinyLlama-1.1B", 2048, 5632, 32, 4, 64, 16},
    {"Llama-2-7B", 4096, 11008, 32, 32, 128, 16},
    {"Llama-2-70B", 8192, 28672, 64, 8, 128, 8},
};

BlockConfig config_of(const Shape& s) { return bmrt_test::make_config(s.hidden, s.intermediate, s.heads, s.kv_heads, s.head_dim); }

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
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

// The bf16 matrix rate (FLOP/s) of an 8192^3 cuBLAS product on random data, fp32 accumulation.
double measure_matmul_peak() {
  const int n = 8192;
  const size_t count = size_t(n) * n;
  std::vector<__nv_bfloat16> host(count);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (auto& v : host) v = __float2bfloat16(uniform(rng));
  void *a = nullptr, *b = nullptr, *c = nullptr;
  cublasHandle_t blas = nullptr;
  if (cudaMalloc(&a, count * 2) != cudaSuccess || cudaMalloc(&b, count * 2) != cudaSuccess || cudaMalloc(&c, count * 2) != cudaSuccess ||
      cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS)
    return 0;
  cudaMemcpy(a, host.data(), count * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(b, host.data(), count * 2, cudaMemcpyHostToDevice);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  const float alpha = 1.0f, beta = 0.0f;
  std::vector<double> rates;
  for (int i = 0; i < 13; i++) {
    cudaEventRecord(start);
    cublasGemmEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &beta, c, CUDA_R_16BF, n,
                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    if (i >= 3) rates.push_back(2.0 * n * n * double(n) / (ms / 1000.0));
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cublasDestroy(blas);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  return median(rates);
}

std::vector<float> random_hidden(int64_t count, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(count));
  for (auto& x : v) x = normal(rng);
  return v;
}

// Median seconds of `runs` forwards (after two warm-ups) of `tokens` tokens at `position`: the same
// position each time, so the KV length stays put.
double time_forward(CudaBlockSpan& span, int session, int64_t position, int64_t tokens, int runs, std::mt19937& rng) {
  const std::vector<float> input = random_hidden(tokens * span.config().hidden, rng);
  std::vector<double> times;
  for (int r = 0; r < runs + 2; r++) {
    std::vector<float> hidden = input;
    std::vector<Step> steps{{session, position, tokens, hidden.data()}};
    const auto start = std::chrono::steady_clock::now();
    span.forward(steps);
    if (r >= 2) times.push_back(seconds_since(start));
  }
  return median(times);
}

// Writes the first `tokens` rows of the session's cache.
void fill_cache(CudaBlockSpan& span, int session, int64_t tokens, std::mt19937& rng) {
  std::vector<float> hidden = random_hidden(tokens * span.config().hidden, rng);
  std::vector<Step> steps{{session, 0, tokens, hidden.data()}};
  span.forward(steps);
}

void set_mode(bool graphs, bool gemv) {
  setenv("BMRT_CUDA_GRAPHS", graphs ? "1" : "0", 1);
  setenv("BMRT_CUDA_GEMV", gemv ? "1" : "0", 1);
}

// Seconds per layer of a decode step at KV length 128, in the mode set_mode chose.
double decode_per_layer(const Shape& s, int runs, std::mt19937& rng) {
  CudaBlockSpan span(config_of(s), s.layers, WeightFormat::BF16, 0, 0);
  for (int l = 0; l < s.layers; l++) span.load_dummy_layer(l, l, 1);
  const int session = span.open_session(256);
  fill_cache(span, session, 128, rng);
  return time_forward(span, session, 128, 1, runs, rng) / s.layers;
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
  const double bandwidth = measure_bandwidth(), peak = measure_matmul_peak();
  std::printf("copy bandwidth (read + write): %.0f GB/s; bf16 matrix rate (cuBLAS 8192^3, random data): %.0f TFLOP/s\n\n", bandwidth / 1e9,
              peak / 1e12);
  if (csv != nullptr)
    std::fprintf(csv, "layer,decode_ms,decode_share_of_bandwidth,decode_no_graphs_ms,decode_cublas_ms,decode_eager_cublas_ms,"
                      "prefill128_ms,prefill512_ms,prefill512_tflops,prefill512_share_of_peak,bandwidth_gbs,matmul_tflops\n");

  std::mt19937 rng(7);
  const int runs = quick ? 5 : 20;
  std::printf("%-16s %9s %6s | %-33s | %9s %9s %8s %6s\n", "layer (bf16)", "decode ms", "% bw", "decode ms: no graphs / cuBLAS / both",
              "pf-128 ms", "pf-512 ms", "TFLOP/s", "% peak");
  for (const Shape& s : SHAPES) {
    set_mode(false, true);
    const double no_graphs = decode_per_layer(s, runs, rng);
    set_mode(true, false);
    const double cublas = decode_per_layer(s, runs, rng);
    set_mode(false, false);
    const double eager_cublas = decode_per_layer(s, runs, rng);
    set_mode(true, true);
    const BlockConfig c = config_of(s);
    CudaBlockSpan span(c, s.layers, WeightFormat::BF16, 0, 0);
    for (int l = 0; l < s.layers; l++) span.load_dummy_layer(l, l, 1);
    const int session = span.open_session(640);
    fill_cache(span, session, 128, rng);
    const double decode = time_forward(span, session, 128, 1, runs, rng) / s.layers;
    const double prefill128 = time_forward(span, session, 0, 128, runs, rng) / s.layers;
    const double prefill512 = time_forward(span, session, 0, 512, quick ? 3 : 10, rng) / s.layers;
    const double layer_bytes = double(span.weight_bytes()) / s.layers;
    const double share = layer_bytes / decode / bandwidth;
    const double matmul_params = (double(s.heads) * s.head_dim * 2 + double(s.kv_heads) * s.head_dim * 2) * s.hidden + 3.0 * s.hidden * s.intermediate;
    const double flops512 = 2.0 * matmul_params * 512 / prefill512;
    std::printf("%-16s %9.3f %5.0f%% | %9.3f / %9.3f / %9.3f | %9.3f %9.3f %8.0f %5.0f%%\n", s.name, decode * 1e3, share * 100, no_graphs * 1e3,
                cublas * 1e3, eager_cublas * 1e3, prefill128 * 1e3, prefill512 * 1e3, flops512 / 1e12, 100 * flops512 / peak);
    if (csv != nullptr)
      std::fprintf(csv, "%s,%.4f,%.3f,%.4f,%.4f,%.4f,%.4f,%.4f,%.1f,%.3f,%.0f,%.0f\n", s.name, decode * 1e3, share, no_graphs * 1e3, cublas * 1e3,
                   eager_cublas * 1e3, prefill128 * 1e3, prefill512 * 1e3, flops512 / 1e12, flops512 / peak, bandwidth / 1e9, peak / 1e12);
  }
  std::printf("(decode: one token at KV length 128 through a span of 16 layers (70B: 8), per layer; %% bw: weight bytes / time / copy bandwidth)\n");

  if (span70b) {
    // A 40-block Llama-2-70B span with dummy weights: the time to make it, the memory it takes,
    // and a prefill and decode through it.
    const Shape& s = SHAPES[2];
    const BlockConfig c = config_of(s);
    const int blocks = 40;
    const int64_t free_before = cuda_free_bytes(0);
    const auto load_start = std::chrono::steady_clock::now();
    CudaBlockSpan span(c, blocks, WeightFormat::BF16, 0, 0);
    for (int l = 0; l < blocks; l++) span.load_dummy_layer(l, l, 1);
    const double load_seconds = seconds_since(load_start);
    const int session = span.open_session(2048);
    const int64_t free_after = cuda_free_bytes(0);
    const double prefill = time_forward(span, session, 0, 512, quick ? 3 : 5, rng);
    fill_cache(span, session, 512, rng);
    const double decode = time_forward(span, session, 512, 1, quick ? 5 : 20, rng);
    std::printf("\nLlama-2-70B shape, %d blocks, bf16: weights %.2f GiB on the GPU, made (dummy) in %.2f s, a 2048-token session's KV cache %.2f GiB;\n"
                "GPU memory used %.2f GiB of %.2f (free %.2f before, %.2f after); prefill-512 %.1f ms, decode at 512 %.2f ms per token (%.1f tokens/s)\n",
                blocks, span.weight_bytes() / 1073741824.0, load_seconds, 2048.0 * span.cache_bytes_per_token() / 1073741824.0,
                (free_before - free_after) / 1073741824.0, devices[0].total_bytes / 1073741824.0, free_before / 1073741824.0,
                free_after / 1073741824.0, prefill * 1e3, decode * 1e3, 1.0 / decode);
  }
  if (csv != nullptr) std::fclose(csv);
  return 0;
}
