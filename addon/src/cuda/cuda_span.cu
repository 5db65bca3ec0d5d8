// The CUDA block span (see cuda_span.h). One stream and one cuBLAS handle per span; one forward at
// a time. A layer is: RMSNorm, Q/K/V projections (cuBLAS, bf16/f16 inputs, fp32 out), rotary,
// new keys/values copied into each session's cache, attention per session (cuda_kernels.cu), the
// O projection accumulated onto the residual (beta = 1), then the same for the SiLU-gated MLP.
#include "cuda_span.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <stdexcept>
#include <string>

#include "cuda_kernels.cuh"

namespace bmrt {

namespace {

void check(cudaError_t status, const char* what) {
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear it: the span stays usable
    throw CacheFullError(std::string("out of GPU memory: ") + what);
  }
  if (status != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) throw std::runtime_error(std::string("cuBLAS error ") + std::to_string(static_cast<int>(status)) + " in " + what);
}

// Device memory owned by one object; freed on the device it was allocated on.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(int device, size_t bytes) : device_(device), bytes_(bytes) {
    if (bytes > 0) check(cudaMalloc(&data_, bytes), "cudaMalloc");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    std::swap(device_, other.device_);
    return *this;
  }
  ~DeviceBuffer() {
    if (data_ != nullptr) {
      cudaSetDevice(device_);
      cudaFree(data_);
    }
  }
  template <class T>
  T* as() const { return static_cast<T*>(data_); }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  int device_ = 0;
};

// Copies host values to a new device buffer.
template <class T>
DeviceBuffer upload(int device, const std::vector<T>& values) {
  DeviceBuffer buffer(device, values.size() * sizeof(T));
  if (!values.empty()) check(cudaMemcpy(buffer.as<void>(), values.data(), buffer.bytes(), cudaMemcpyHostToDevice), "uploading weights");
  return buffer;
}

// A projection's weights [rows = out features, cols = in features], row-major, bf16 or f16.
struct DeviceMatrix {
  DeviceBuffer data;
  int64_t rows = 0, cols = 0;
};

}  // namespace

struct CudaBlockSpan::Impl {
  struct Layer {
    DeviceBuffer input_norm, post_attention_norm;  // fp32
    DeviceMatrix q, k, v, o, gate, up, down;
    DeviceBuffer q_bias, k_bias, v_bias, o_bias, gate_bias, up_bias, down_bias;  // fp32, or empty
    int64_t bytes = 0;
    bool loaded = false;
  };
  // A session's cache: one buffer of [layer_count][2 (keys, values)][max_length][kv_dim] fp32.
  struct DeviceCache {
    DeviceBuffer kv;
  };
  using Sessions = SessionTable<DeviceCache>;

  BlockConfig config;
  WeightFormat format;
  int device;
  std::vector<std::unique_ptr<Layer>> layers;
  Sessions sessions;
  std::mutex compute_mutex;  // one forward (and one weight upload) at a time: the scratch is shared
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  DeviceBuffer inverse_frequencies;
  // Scratch, grown as needed (guarded by compute_mutex).
  DeviceBuffer x, normed, act16, q, k, v, attention, gate, up, positions;

  Impl(BlockConfig c, int layer_count, WeightFormat f, int d, int64_t max_cache_tokens)
      : config(std::move(c)), format(f), device(d), sessions(layer_count, max_cache_tokens) {
    check_block_config(config);
    if (layer_count <= 0) throw std::invalid_argument("a span needs at least one block");
    if (config.head_dim > cuda::kMaxAttentionHeadDim)
      throw std::invalid_argument("the CUDA attention kernel handles heads of up to " + std::to_string(cuda::kMaxAttentionHeadDim) +
                                  " dimensions, not " + std::to_string(config.head_dim));
    if (format != WeightFormat::BF16 && format != WeightFormat::F16)
      throw std::invalid_argument(std::string("the CUDA backend stores weights in bf16 or f16, not ") + weight_format_name(format));
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      cudaGetLastError();
      count = 0;
    }
    if (device < 0 || device >= count)
      throw std::invalid_argument("no CUDA device " + std::to_string(device) + " (this machine has " + std::to_string(count) + ")");
    check(cudaSetDevice(device), "cudaSetDevice");
    check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cublasCreate(&blas), "cublasCreate");
    check(cublasSetStream(blas, stream), "cublasSetStream");
    inverse_frequencies = upload(device, config.rope_inverse_frequencies);
    for (int i = 0; i < layer_count; i++) layers.push_back(std::make_unique<Layer>());
  }

  ~Impl() {
    cudaSetDevice(device);
    if (blas != nullptr) cublasDestroy(blas);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  int64_t q_dim() const { return int64_t(config.heads) * config.head_dim; }
  int64_t kv_dim() const { return int64_t(config.kv_heads) * config.head_dim; }

  // Grows `buffer` to hold at least `bytes`.
  void reserve(DeviceBuffer& buffer, size_t bytes) {
    if (buffer.bytes() < bytes) {
      buffer = DeviceBuffer();  // free first, so the old and new never both occupy the GPU
      buffer = DeviceBuffer(device, bytes);
    }
  }

  DeviceMatrix matrix(const std::vector<float>& values, int64_t rows, int64_t cols) {
    std::vector<uint16_t> bits(values.size());
    for (size_t i = 0; i < values.size(); i++)
      bits[i] = format == WeightFormat::BF16 ? float_to_bf16(values[i]) : float_to_half(values[i]);
    return {upload(device, bits), rows, cols};
  }

  void set_layer(int index, const std::vector<std::vector<float>>& t) {
    if (index < 0 || index >= static_cast<int>(layers.size())) throw std::invalid_argument("layer index out of range");
    check_layer_tensors(config, index, t);
    std::lock_guard<std::mutex> lock(compute_mutex);
    check(cudaSetDevice(device), "cudaSetDevice");
    layers[index] = std::make_unique<Layer>();  // frees the old weights before the new ones arrive
    auto fresh = std::make_unique<Layer>();
    Layer& L = *fresh;
    const int64_t h = config.hidden, inter = config.intermediate;
    auto get = [&](LayerTensor which) -> const std::vector<float>& { return t[static_cast<int>(which)]; };
    L.input_norm = upload(device, get(LayerTensor::InputNorm));
    L.post_attention_norm = upload(device, get(LayerTensor::PostAttentionNorm));
    L.q = matrix(get(LayerTensor::Q), q_dim(), h);
    L.k = matrix(get(LayerTensor::K), kv_dim(), h);
    L.v = matrix(get(LayerTensor::V), kv_dim(), h);
    L.o = matrix(get(LayerTensor::O), h, q_dim());
    L.gate = matrix(get(LayerTensor::Gate), inter, h);
    L.up = matrix(get(LayerTensor::Up), inter, h);
    L.down = matrix(get(LayerTensor::Down), h, inter);
    L.q_bias = upload(device, get(LayerTensor::QBias));
    L.k_bias = upload(device, get(LayerTensor::KBias));
    L.v_bias = upload(device, get(LayerTensor::VBias));
    L.o_bias = upload(device, get(LayerTensor::OBias));
    L.gate_bias = upload(device, get(LayerTensor::GateBias));
    L.up_bias = upload(device, get(LayerTensor::UpBias));
    L.down_bias = upload(device, get(LayerTensor::DownBias));
    for (const DeviceBuffer* b : {&L.input_norm, &L.post_attention_norm, &L.q.data, &L.k.data, &L.v.data, &L.o.data, &L.gate.data,
                                  &L.up.data, &L.down.data, &L.q_bias, &L.k_bias, &L.v_bias, &L.o_bias, &L.gate_bias, &L.up_bias, &L.down_bias})
      L.bytes += static_cast<int64_t>(b->bytes());
    L.loaded = true;
    layers[index] = std::move(fresh);
  }

  int open_session(int64_t max_length, int first_layer, int layer_count) {
    return sessions.open(max_length, first_layer, layer_count, [&](Sessions::Session& session) {
      check(cudaSetDevice(device), "cudaSetDevice");
      const size_t bytes = static_cast<size_t>(session.layer_count) * 2 * static_cast<size_t>(session.max_length) * kv_dim() * sizeof(float);
      session.cache.kv = DeviceBuffer(device, bytes);  // CacheFullError when the GPU is full
    });
  }

  // y[n, rows] = x16[n, cols] · W^T (beta 0), or y += … (beta 1). In cuBLAS's column-major terms
  // the row-major W [rows, cols] is a cols × rows matrix and x a cols × n one: y^T = W^T-op · x.
  void linear(const DeviceMatrix& w, const void* x16, int64_t n, float* y, float beta) {
    const float alpha = 1.0f;
    const cudaDataType_t type = format == WeightFormat::BF16 ? CUDA_R_16BF : CUDA_R_16F;
    check(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.rows), static_cast<int>(n), static_cast<int>(w.cols), &alpha,
                       w.data.as<void>(), type, static_cast<int>(w.cols), x16, type, static_cast<int>(w.cols), &beta, y, CUDA_R_32F,
                       static_cast<int>(w.rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx");
  }

  // fp32 activations [n, cols] into the half-precision input buffer the projections read.
  const void* half_input(const float* values, int64_t count) {
    if (format == WeightFormat::BF16) cuda::to_bf16(values, count, act16.as<__nv_bfloat16>(), stream);
    else cuda::to_half(values, count, act16.as<__half>(), stream);
    return act16.as<void>();
  }

  void add_bias(const DeviceBuffer& bias, float* y, int64_t rows, int64_t cols) {
    if (bias.bytes() > 0) cuda::add_bias(y, bias.as<float>(), rows, cols, stream);
  }

  void forward(std::vector<Step>& steps) {
    std::lock_guard<std::mutex> lock(compute_mutex);
    const int64_t h = config.hidden, inter = config.intermediate;
    const Sessions::Batch batch = sessions.check(steps, h);
    for (int l = batch.first_layer; l < batch.end_layer; l++)
      if (!layers[l]->loaded) throw std::invalid_argument("block " + std::to_string(l) + " of the span is not loaded");
    check(cudaSetDevice(device), "cudaSetDevice");
    const int64_t total = batch.total_tokens;
    const size_t f = sizeof(float);
    reserve(x, total * h * f);
    reserve(normed, total * h * f);
    reserve(act16, total * std::max({h, q_dim(), inter}) * 2);
    reserve(q, total * q_dim() * f);
    reserve(k, total * kv_dim() * f);
    reserve(v, total * kv_dim() * f);
    reserve(attention, total * q_dim() * f);
    reserve(gate, total * inter * f);
    reserve(up, total * inter * f);
    reserve(positions, total * sizeof(int64_t));

    // The steps' hidden states and positions, one after another.
    std::vector<int64_t> host_positions;
    host_positions.reserve(total);
    int64_t row = 0;
    for (size_t i = 0; i < steps.size(); i++) {
      batch.sessions[i]->length = batch.starts[i];  // rewinding discards the cached tokens after `start`
      check(cudaMemcpyAsync(x.as<float>() + row * h, steps[i].hidden, steps[i].tokens * h * f, cudaMemcpyHostToDevice, stream), "copying hidden states in");
      for (int64_t t = 0; t < steps[i].tokens; t++) host_positions.push_back(batch.starts[i] + t);
      row += steps[i].tokens;
    }
    check(cudaMemcpyAsync(positions.as<int64_t>(), host_positions.data(), total * sizeof(int64_t), cudaMemcpyHostToDevice, stream), "copying positions");
    for (int l = batch.first_layer; l < batch.end_layer; l++) run_layer(l, steps, batch);
    row = 0;
    for (size_t i = 0; i < steps.size(); i++) {
      check(cudaMemcpyAsync(steps[i].hidden, x.as<float>() + row * h, steps[i].tokens * h * f, cudaMemcpyDeviceToHost, stream), "copying hidden states out");
      row += steps[i].tokens;
    }
    // host_positions must outlive the copy above: wait here, before it goes out of scope.
    check(cudaStreamSynchronize(stream), "the forward");
    for (size_t i = 0; i < steps.size(); i++) batch.sessions[i]->length = batch.starts[i] + steps[i].tokens;
  }

  void run_layer(int index, const std::vector<Step>& steps, const Sessions::Batch& batch) {
    const Layer& L = *layers[index];
    const int64_t slot = index - batch.first_layer;
    const int64_t h = config.hidden, inter = config.intermediate, total = batch.total_tokens;
    const int64_t qd = q_dim(), kvd = kv_dim();
    float* xs = x.as<float>();

    // Attention projections and rotary.
    cuda::rms_norm(xs, L.input_norm.as<float>(), total, static_cast<int>(h), config.rms_norm_eps, normed.as<float>(), stream);
    const void* in = half_input(normed.as<float>(), total * h);
    linear(L.q, in, total, q.as<float>(), 0.0f);
    linear(L.k, in, total, k.as<float>(), 0.0f);
    linear(L.v, in, total, v.as<float>(), 0.0f);
    add_bias(L.q_bias, q.as<float>(), total, qd);
    add_bias(L.k_bias, k.as<float>(), total, kvd);
    add_bias(L.v_bias, v.as<float>(), total, kvd);
    cuda::rope(q.as<float>(), k.as<float>(), positions.as<int64_t>(), total, config.heads, config.kv_heads, config.head_dim,
               inverse_frequencies.as<float>(), stream);

    // Each session: its new keys and values into its cache (rows start.. of this layer's slot),
    // then its queries over the cache.
    const float scale = 1.0f / std::sqrt(static_cast<float>(config.head_dim));
    int64_t row = 0;
    for (size_t s = 0; s < steps.size(); s++) {
      const auto& session = *batch.sessions[s];
      float* keys = session.cache.kv.as<float>() + slot * 2 * session.max_length * kvd;
      float* values = keys + session.max_length * kvd;
      const int64_t start = batch.starts[s], tokens = steps[s].tokens;
      check(cudaMemcpyAsync(keys + start * kvd, k.as<float>() + row * kvd, tokens * kvd * sizeof(float), cudaMemcpyDeviceToDevice, stream), "caching keys");
      check(cudaMemcpyAsync(values + start * kvd, v.as<float>() + row * kvd, tokens * kvd * sizeof(float), cudaMemcpyDeviceToDevice, stream), "caching values");
      cuda::attention(q.as<float>() + row * qd, keys, values, start, tokens, config.heads, config.kv_heads, config.head_dim,
                      config.sliding_window, scale, attention.as<float>() + row * qd, stream);
      row += tokens;
    }
    linear(L.o, half_input(attention.as<float>(), total * qd), total, xs, 1.0f);  // onto the residual
    add_bias(L.o_bias, xs, total, h);

    // SiLU-gated MLP.
    cuda::rms_norm(xs, L.post_attention_norm.as<float>(), total, static_cast<int>(h), config.rms_norm_eps, normed.as<float>(), stream);
    in = half_input(normed.as<float>(), total * h);
    linear(L.gate, in, total, gate.as<float>(), 0.0f);
    linear(L.up, in, total, up.as<float>(), 0.0f);
    add_bias(L.gate_bias, gate.as<float>(), total, inter);
    add_bias(L.up_bias, up.as<float>(), total, inter);
    cuda::silu_mul(gate.as<float>(), up.as<float>(), total * inter, stream);
    linear(L.down, half_input(gate.as<float>(), total * inter), total, xs, 1.0f);
    add_bias(L.down_bias, xs, total, h);
  }
};

std::vector<CudaDeviceInfo> cuda_devices() {
  std::vector<CudaDeviceInfo> devices;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no GPU: not an error for the caller
    return devices;
  }
  for (int d = 0; d < count; d++) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    devices.push_back({prop.name, prop.major, prop.minor, static_cast<int64_t>(prop.totalGlobalMem)});
  }
  return devices;
}

int64_t cuda_free_bytes(int device) {
  int previous = 0;
  check(cudaGetDevice(&previous), "cudaGetDevice");
  check(cudaSetDevice(device), "cudaSetDevice");
  size_t free_bytes = 0, total_bytes = 0;
  const cudaError_t status = cudaMemGetInfo(&free_bytes, &total_bytes);
  cudaSetDevice(previous);
  check(status, "cudaMemGetInfo");
  return static_cast<int64_t>(free_bytes);
}

CudaBlockSpan::CudaBlockSpan(BlockConfig config, int layers, WeightFormat format, int device, int64_t max_cache_tokens)
    : impl_(std::make_unique<Impl>(std::move(config), layers, format, device, max_cache_tokens)) {}
CudaBlockSpan::~CudaBlockSpan() = default;

void CudaBlockSpan::load_layer(int layer, const std::vector<TensorSource>& sources) { impl_->set_layer(layer, read_layer_tensors(sources)); }
void CudaBlockSpan::set_layer(int layer, const std::vector<std::vector<float>>& tensors) { impl_->set_layer(layer, tensors); }
int CudaBlockSpan::open_session(int64_t max_length, int first_layer, int layer_count) { return impl_->open_session(max_length, first_layer, layer_count); }
void CudaBlockSpan::close_session(int session) { impl_->sessions.close(session); }
int64_t CudaBlockSpan::session_length(int session) const { return impl_->sessions.find(session)->length; }
int64_t CudaBlockSpan::session_max_length(int session) const { return impl_->sessions.find(session)->max_length; }
void CudaBlockSpan::forward(std::vector<Step>& steps) { impl_->forward(steps); }
const BlockConfig& CudaBlockSpan::config() const { return impl_->config; }
int CudaBlockSpan::layers() const { return static_cast<int>(impl_->layers.size()); }
WeightFormat CudaBlockSpan::format() const { return impl_->format; }
int CudaBlockSpan::device() const { return impl_->device; }
int64_t CudaBlockSpan::cache_layer_tokens_reserved() const { return impl_->sessions.reserved(); }
int64_t CudaBlockSpan::max_cache_tokens() const { return impl_->sessions.max_cache_tokens(); }
int CudaBlockSpan::sessions() const { return impl_->sessions.size(); }

int64_t CudaBlockSpan::weight_bytes() const {
  int64_t total = 0;
  for (const auto& L : impl_->layers) total += L->bytes;
  return total;
}

int64_t CudaBlockSpan::cache_bytes_per_token() const {
  return static_cast<int64_t>(layers()) * 2 * impl_->kv_dim() * static_cast<int64_t>(sizeof(float));
}

}  // namespace bmrt
