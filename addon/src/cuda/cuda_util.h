// What the CUDA span and the CUDA head share (CUDA code only, not part of the addon's interface):
// error checks, device and pinned host buffers, the projections (GEMV or cuBLAS), and the uploader
// that moves checkpoint tensors to the GPU through pinned staging buffers.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../core/block.h"
#include "../core/kernels.h"
#include "../core/platform.h"
#include "../core/session_table.h"
#include "cuda_kernels.cuh"

namespace bmrt::cuda_detail {

inline void check(cudaError_t status, const char* what) {
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear it: the span stays usable
    throw CacheFullError(std::string("out of GPU memory: ") + what);
  }
  if (status != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

inline void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) throw std::runtime_error(std::string("cuBLAS error ") + std::to_string(static_cast<int>(status)) + " in " + what);
}

// An on/off switch from the environment (debugging and the benchmarks' comparisons): on unless "0".
inline bool enabled(const char* variable) {
  const char* value = std::getenv(variable);
  return value == nullptr || std::strcmp(value, "0") != 0;
}

// Makes `device` current and a non-blocking stream on it; std::invalid_argument when there is no such device.
inline cudaStream_t open_device(int device) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no GPU
    count = 0;
  }
  if (device < 0 || device >= count)
    throw std::invalid_argument("no CUDA device " + std::to_string(device) + " (this machine has " + std::to_string(count) + ")");
  check(cudaSetDevice(device), "cudaSetDevice");
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  return stream;
}

enum class Memory { Device, Pinned };

// Memory owned by one object: on the GPU (freed on the device it was allocated on), or page-locked
// host memory, from which copies run at the host link's speed and asynchronously.
template <Memory Kind>
class Buffer {
 public:
  Buffer() = default;
  Buffer(int device, size_t bytes) : bytes_(bytes), device_(device) {
    if (bytes == 0) return;
    if constexpr (Kind == Memory::Device) check(cudaMalloc(&data_, bytes), "cudaMalloc");
    else check(cudaMallocHost(&data_, bytes), "cudaMallocHost");
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& other) noexcept { *this = std::move(other); }
  Buffer& operator=(Buffer&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    std::swap(device_, other.device_);
    return *this;
  }
  ~Buffer() {
    if (data_ == nullptr) return;
    if constexpr (Kind == Memory::Device) {
      cudaSetDevice(device_);
      cudaFree(data_);
    } else {
      cudaFreeHost(data_);
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

using DeviceBuffer = Buffer<Memory::Device>;
using PinnedBuffer = Buffer<Memory::Pinned>;

// Grows `buffer` to hold at least `bytes` (freeing first, so the old and new never both occupy
// memory); returns whether it moved.
template <Memory Kind>
bool reserve(Buffer<Kind>& buffer, int device, size_t bytes) {
  if (buffer.bytes() >= bytes) return false;
  buffer = Buffer<Kind>();
  buffer = Buffer<Kind>(device, bytes);
  return true;
}

// The element type the GPU stores a weight format in.
inline cuda::Element element_of(WeightFormat f) {
  switch (f) {
    case WeightFormat::F32: return cuda::Element::F32;
    case WeightFormat::F16: return cuda::Element::F16;
    case WeightFormat::BF16: return cuda::Element::BF16;
    default: throw std::invalid_argument(std::string("the CUDA backend stores weights in f32, bf16 or f16, not ") + weight_format_name(f));
  }
}

inline cuda::Element element_of(SourceDType d) {
  return d == SourceDType::F32 ? cuda::Element::F32 : d == SourceDType::F16 ? cuda::Element::F16 : cuda::Element::BF16;
}

template <class T> constexpr cudaDataType_t blas_type();
template <> constexpr cudaDataType_t blas_type<float>() { return CUDA_R_32F; }
template <> constexpr cudaDataType_t blas_type<__half>() { return CUDA_R_16F; }
template <> constexpr cudaDataType_t blas_type<__nv_bfloat16>() { return CUDA_R_16BF; }

// Calls fn(T()) with T the element type of `format` (float, __half or __nv_bfloat16).
template <class Fn>
void with_element(WeightFormat format, Fn&& fn) {
  switch (element_of(format)) {
    case cuda::Element::F32: fn(float()); break;
    case cuda::Element::F16: fn(__half()); break;
    case cuda::Element::BF16: fn(__nv_bfloat16()); break;
  }
}

// The projections: y[n, rows] (+)= x[n, cols] · W^T for a row-major W [rows, cols] of T, fp32
// out. Decode-sized products run the GEMV kernel (memory-bound, one launch); the rest cuBLAS with
// fp32 accumulation (for f32 weights plain fp32, never TF32). BMRT_CUDA_GEMV=0 sends everything
// to cuBLAS.
class Projector {
 public:
  Projector(int device, cudaStream_t stream) : gemv_(enabled("BMRT_CUDA_GEMV")) {
    check(cublasCreate(&blas_), "cublasCreate");
    check(cublasSetStream(blas_, stream), "cublasSetStream");
    // An explicit workspace: cuBLAS then allocates nothing while a graph is being captured.
    workspace_ = DeviceBuffer(device, kWorkspaceBytes);
    check(cublasSetWorkspace(blas_, workspace_.as<void>(), kWorkspaceBytes), "cublasSetWorkspace");
    stream_ = stream;
  }
  Projector(const Projector&) = delete;
  Projector& operator=(const Projector&) = delete;
  ~Projector() {
    if (blas_ != nullptr) cublasDestroy(blas_);
  }

  template <class T>
  void run(const T* w, int64_t rows, int64_t cols, const T* x, int64_t n, float* y, bool accumulate) {
    if (gemv_ && cuda::gemv_fits<T>(cols, n)) {
      cuda::gemv(w, x, rows, cols, n, y, accumulate, stream_);
      return;
    }
    // Column-major terms: the row-major W [rows, cols] is a cols x rows matrix and x a cols x n
    // one, so y^T = op(W)^T x with op = transpose.
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    check(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows), static_cast<int>(n), static_cast<int>(cols), &alpha, w,
                       blas_type<T>(), static_cast<int>(cols), x, blas_type<T>(), static_cast<int>(cols), &beta, y, CUDA_R_32F,
                       static_cast<int>(rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx");
  }

  bool gemv() const { return gemv_; }

 private:
  static constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // cuBLAS's advice for Hopper
  cublasHandle_t blas_ = nullptr;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer workspace_;
  bool gemv_;
};

// Moves tensors to the GPU at the host link's speed: the bytes go through two pinned staging
// buffers in turn (the host fills one while the other's copy runs) and, when the checkpoint's dtype
// differs from the stored one, are converted on the GPU. No fp32 copy of a bf16 checkpoint is
// ever made on the host.
class Uploader {
 public:
  Uploader(int device, cudaStream_t stream) : device_(device), stream_(stream) {
    for (auto& e : done_) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
  }
  Uploader(const Uploader&) = delete;
  Uploader& operator=(const Uploader&) = delete;
  ~Uploader() {
    for (auto& e : done_) cudaEventDestroy(e);
  }

  // Fills `count` values of `to` at dst from values of `from` that read(host, first, n) writes,
  // n values from value `first` on, into host memory. Returns when the copies are done.
  void upload(void* dst, cuda::Element to, int64_t count, cuda::Element from,
              const std::function<void(void* host, int64_t first, int64_t n)>& read) {
    const int64_t from_bytes = cuda::element_bytes(from), to_bytes = cuda::element_bytes(to);
    const int64_t chunk = kChunkBytes / from_bytes;
    for (int slot = 0; slot < 2; slot++) {
      reserve(staging_[slot], device_, static_cast<size_t>(std::min(count, chunk) * from_bytes));
      if (from != to) reserve(raw_[slot], device_, static_cast<size_t>(std::min(count, chunk) * from_bytes));
    }
    for (int64_t first = 0, k = 0; first < count; first += chunk, k++) {
      const int slot = static_cast<int>(k % 2);
      const int64_t n = std::min(chunk, count - first);
      check(cudaEventSynchronize(done_[slot]), "waiting for a staging buffer");  // its previous copy is done
      read(staging_[slot].as<void>(), first, n);
      char* target = static_cast<char*>(dst) + first * to_bytes;
      if (from == to) {
        check(cudaMemcpyAsync(target, staging_[slot].as<void>(), n * from_bytes, cudaMemcpyHostToDevice, stream_), "uploading weights");
      } else {
        check(cudaMemcpyAsync(raw_[slot].as<void>(), staging_[slot].as<void>(), n * from_bytes, cudaMemcpyHostToDevice, stream_), "uploading weights");
        cuda::convert(raw_[slot].as<void>(), from, target, to, n, stream_);
      }
      check(cudaEventRecord(done_[slot], stream_), "cudaEventRecord");
    }
    check(cudaStreamSynchronize(stream_), "uploading weights");
  }

  // A tensor of a checkpoint file.
  void upload(void* dst, cuda::Element to, int64_t count, const TensorSource& source, const char* name) {
    const cuda::Element from = element_of(source.dtype);
    if (source.bytes != static_cast<uint64_t>(count) * cuda::element_bytes(from))
      throw std::invalid_argument(source.path + ": tensor " + name + " has " + std::to_string(source.bytes) + " bytes, expected " +
                                  std::to_string(count * cuda::element_bytes(from)));
    upload(dst, to, count, from, [&](void* host, int64_t first, int64_t n) {
      const int64_t bytes = cuda::element_bytes(from);
      try {
        read_file_range(source.path, source.offset + first * bytes, n * bytes, host);
      } catch (const std::exception& e) {
        throw std::runtime_error(std::string(e.what()) + " while reading tensor " + name);
      }
    });
  }

  // fp32 values in host memory.
  void upload(void* dst, cuda::Element to, const std::vector<float>& values) {
    upload(dst, to, static_cast<int64_t>(values.size()), cuda::Element::F32,
           [&](void* host, int64_t first, int64_t n) { std::memcpy(host, values.data() + first, n * 4); });
  }

 private:
  static constexpr int64_t kChunkBytes = int64_t(32) << 20;
  int device_;
  cudaStream_t stream_;
  PinnedBuffer staging_[2];
  DeviceBuffer raw_[2];
  cudaEvent_t done_[2] = {nullptr, nullptr};
};

}  // namespace bmrt::cuda_detail
