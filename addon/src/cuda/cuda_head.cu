// The CUDA head (see cuda_head.h): per token, the hidden row goes in, the final norm writes it in
// the weights' type, the GEMV kernel (or cuBLAS) runs lm_head, and the fp32 logits come back.
#include "cuda_head.h"

#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../core/dummy.h"
#include "cuda_util.h"

namespace bmrt {

using namespace cuda_detail;

struct CudaHead::Impl {
  HeadConfig config;
  WeightFormat format;
  int device;
  cudaStream_t stream = nullptr;
  std::unique_ptr<Projector> projector;
  mutable std::mutex table_mutex;  // embeddings (embed does not wait for a logits in flight)
  std::mutex compute_mutex;        // one load or logits at a time: the scratch is shared
  EmbeddingTable embeddings;
  DeviceBuffer lm_head, final_norm, hidden, normed, logits;
  PinnedBuffer io;  // the hidden row in, the logits out
  bool loaded = false;

  Impl(HeadConfig c, WeightFormat f, int d) : config(c), format(f), device(d) {
    check_head(config, format);
    element_of(format);
    stream = open_device(device);
    projector = std::make_unique<Projector>(device, stream);
    const size_t e = static_cast<size_t>(cuda::element_bytes(element_of(format)));
    lm_head = DeviceBuffer(device, static_cast<size_t>(config.vocab) * config.hidden * e);
    final_norm = DeviceBuffer(device, config.hidden * 4);
    hidden = DeviceBuffer(device, config.hidden * 4);
    normed = DeviceBuffer(device, config.hidden * e);
    logits = DeviceBuffer(device, config.vocab * 4);
    io = PinnedBuffer(device, static_cast<size_t>(std::max(config.hidden, config.vocab)) * 4);
  }

  ~Impl() {
    cudaSetDevice(device);
    projector.reset();
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  // lm_head and the final norm from `upload(uploader)`, the embeddings from `table`.
  template <class Upload>
  void set(EmbeddingTable table, Upload&& upload) {
    std::lock_guard<std::mutex> lock(compute_mutex);
    check(cudaSetDevice(device), "cudaSetDevice");
    {
      Uploader uploader(device, stream);
      upload(uploader);
    }
    check(cudaStreamSynchronize(stream), "loading the head");
    std::lock_guard<std::mutex> table_lock(table_mutex);
    embeddings = std::move(table);
    loaded = true;
  }

  void load(const HeadSources& sources) {
    const int64_t matrix = int64_t(config.vocab) * config.hidden;
    std::vector<float> values = read_tensor(sources.embeddings, "model.embed_tokens.weight");
    if (static_cast<int64_t>(values.size()) != matrix)
      throw std::invalid_argument("head tensor embed_tokens has " + std::to_string(values.size()) + " values, expected " + std::to_string(matrix));
    EmbeddingTable table(values, config.vocab, config.hidden, format);
    set(std::move(table), [&](Uploader& uploader) {
      uploader.upload(final_norm.as<void>(), cuda::Element::F32, config.hidden, sources.final_norm, "model.norm.weight");
      if (config.tied) uploader.upload(lm_head.as<void>(), element_of(format), values);
      else uploader.upload(lm_head.as<void>(), element_of(format), matrix, sources.lm_head, "lm_head.weight");
    });
  }

  void load_dummy(uint32_t seed) {
    const int64_t matrix = int64_t(config.vocab) * config.hidden;
    std::vector<float> values(static_cast<size_t>(matrix));
    {
      ThreadPool pool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
      fill_dummy(dummy_key(seed, dummy_stream(HeadTensor::Embeddings)), dummy_init(HeadTensor::Embeddings, config.hidden), values.data(), matrix, pool);
    }
    EmbeddingTable table(values, config.vocab, config.hidden, format);
    set(std::move(table), [&](Uploader& uploader) {
      const DummyInit norm = dummy_init(HeadTensor::FinalNorm, config.hidden), head = dummy_init(HeadTensor::LmHead, config.hidden);
      cuda::dummy_fill(final_norm.as<float>(), config.hidden, dummy_key(seed, dummy_stream(HeadTensor::FinalNorm)), norm.scale, norm.offset, stream);
      if (config.tied) {
        uploader.upload(lm_head.as<void>(), element_of(format), values);
        return;
      }
      const uint32_t key = dummy_key(seed, dummy_stream(HeadTensor::LmHead));
      with_element(format, [&](auto element) {
        using T = decltype(element);
        cuda::dummy_fill(lm_head.as<T>(), matrix, key, head.scale, head.offset, stream);
      });
    });
  }

  void embed(const int32_t* ids, int64_t n, float* out) const {
    std::lock_guard<std::mutex> lock(table_mutex);
    if (!loaded) throw std::invalid_argument("the head is not loaded");
    embeddings.lookup(ids, n, out);
  }

  void run_logits(const float* row, float* out) {
    std::lock_guard<std::mutex> lock(compute_mutex);
    if (!loaded) throw std::invalid_argument("the head is not loaded");
    check(cudaSetDevice(device), "cudaSetDevice");
    std::memcpy(io.as<float>(), row, config.hidden * sizeof(float));
    check(cudaMemcpyAsync(hidden.as<void>(), io.as<void>(), config.hidden * sizeof(float), cudaMemcpyHostToDevice, stream), "copying the hidden state in");
    with_element(format, [&](auto element) {
      using T = decltype(element);
      cuda::rms_norm(hidden.as<float>(), final_norm.as<float>(), 1, config.hidden, config.rms_norm_eps, normed.as<T>(), stream);
      projector->run(lm_head.as<T>(), config.vocab, config.hidden, normed.as<T>(), 1, logits.as<float>(), false);
    });
    check(cudaMemcpyAsync(io.as<void>(), logits.as<void>(), config.vocab * sizeof(float), cudaMemcpyDeviceToHost, stream), "copying the logits out");
    check(cudaStreamSynchronize(stream), "the head");
    std::memcpy(out, io.as<float>(), config.vocab * sizeof(float));
  }

  int64_t weight_bytes() const {
    std::lock_guard<std::mutex> lock(table_mutex);
    return static_cast<int64_t>(lm_head.bytes() + final_norm.bytes()) + embeddings.bytes();
  }
};

CudaHead::CudaHead(HeadConfig config, WeightFormat format, int device) : impl_(std::make_unique<Impl>(config, format, device)) {}
CudaHead::~CudaHead() = default;
void CudaHead::load(const HeadSources& sources) { impl_->load(sources); }
void CudaHead::load_dummy(uint32_t seed) { impl_->load_dummy(seed); }
void CudaHead::embed(const int32_t* ids, int64_t n, float* out) const { impl_->embed(ids, n, out); }
void CudaHead::logits(const float* hidden, float* out) { impl_->run_logits(hidden, out); }
const HeadConfig& CudaHead::config() const { return impl_->config; }
WeightFormat CudaHead::format() const { return impl_->format; }
int CudaHead::device() const { return impl_->device; }
int64_t CudaHead::weight_bytes() const { return impl_->weight_bytes(); }

}  // namespace bmrt
