// The CUDA block span (see cuda_span.h). One stream, one cuBLAS handle and one forward at a time
// per span. A layer, for T the weights' element type:
//   rms_norm -> T | qkv = x W_qkv^T | rotary, k and v into each session's cache | attention -> T |
//   x += o W_o^T | rms_norm -> T | gate_up = x W_gate_up^T | silu(gate) * up -> T | x += down W_down^T
// nine launches for a decode step (plus one rotary and one attention per further session, and the
// biases where a model has them). Launching them one by one from the host costs more than they
// take on an H200 for small layers (the measured 7B layer ran at 54% of the memory bandwidth that
// way), so decode steps (at most kGraphMaxTokens tokens) run as a CUDA graph captured on the
// session's first such step and replayed after: whatever changes between steps (the hidden
// states, the positions) lives in device buffers the graph reads, not in its launch arguments.
#include "cuda_span.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "../core/dummy.h"
#include "cuda_util.h"

namespace bmrt {

using namespace cuda_detail;

namespace {

// Steps of at most this many tokens in all run as graphs; longer ones are compute-bound anyway.
constexpr int64_t kGraphMaxTokens = 16;
// Graphs kept at most (one per open session's step shape); past it they are dropped and recaptured.
constexpr size_t kMaxGraphs = 256;

}  // namespace

struct CudaBlockSpan::Impl {
  // A projection's weights [rows = out features, cols = in features], row-major, in the span's type.
  struct DeviceMatrix {
    DeviceBuffer data;
    int64_t rows = 0, cols = 0;
  };
  struct Layer {
    DeviceBuffer input_norm, post_attention_norm;  // fp32
    DeviceMatrix qkv, o, gate_up, down;            // q, k, v rows one after another; gate then up
    DeviceBuffer qkv_bias, o_bias, gate_up_bias, down_bias;  // fp32, or empty
    int64_t bytes = 0;
    bool loaded = false;
  };
  // A session's cache: one buffer of [layer_count][2 (keys, values)][max_length][kv_dim] fp32.
  struct DeviceCache {
    DeviceBuffer kv;
  };
  using Sessions = SessionTable<DeviceCache>;
  // A captured decode: which layers, and each step's (session, tokens) in order.
  struct GraphKey {
    int first_layer, end_layer;
    std::vector<std::pair<int, int64_t>> steps;
    bool operator<(const GraphKey& o) const { return std::tie(first_layer, end_layer, steps) < std::tie(o.first_layer, o.end_layer, o.steps); }
  };

  BlockConfig config;
  WeightFormat format;
  int device;
  std::vector<std::unique_ptr<Layer>> layers;
  Sessions sessions;
  std::mutex compute_mutex;  // one forward (and one weight upload) at a time: the scratch is shared
  cudaStream_t stream = nullptr;
  std::unique_ptr<Projector> projector;
  std::unique_ptr<Uploader> uploader;  // while weights load; released by the first forward
  DeviceBuffer inverse_frequencies;
  // Scratch, grown as needed (guarded by compute_mutex); captured graphs point into it.
  int64_t scratch_tokens = 0;
  DeviceBuffer x, act, qkv, gate_up, positions;
  PinnedBuffer io;  // the steps' positions, and their hidden states in and out
  std::map<GraphKey, cudaGraphExec_t> graphs;
  bool use_graphs;
  std::mutex closed_mutex;
  std::vector<int> closed;  // sessions closed since the last forward: their graphs go

  Impl(BlockConfig c, int layer_count, WeightFormat f, int d, int64_t max_cache_tokens)
      : config(std::move(c)), format(f), device(d), sessions(layer_count, max_cache_tokens), use_graphs(enabled("BMRT_CUDA_GRAPHS")) {
    check_block_config(config);
    if (layer_count <= 0) throw std::invalid_argument("a span needs at least one block");
    if (config.head_dim > cuda::kMaxAttentionHeadDim)
      throw std::invalid_argument("the CUDA attention kernel handles heads of up to " + std::to_string(cuda::kMaxAttentionHeadDim) +
                                  " dimensions, not " + std::to_string(config.head_dim));
    element_of(format);  // refuses int8 and int4
    stream = open_device(device);
    projector = std::make_unique<Projector>(device, stream);
    inverse_frequencies = DeviceBuffer(device, config.rope_inverse_frequencies.size() * 4);
    check(cudaMemcpy(inverse_frequencies.as<void>(), config.rope_inverse_frequencies.data(), inverse_frequencies.bytes(), cudaMemcpyHostToDevice),
          "copying rotary frequencies");
    for (int i = 0; i < layer_count; i++) layers.push_back(std::make_unique<Layer>());
  }

  ~Impl() {
    cudaSetDevice(device);
    drop_graphs();
    uploader.reset();
    projector.reset();
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  int64_t q_dim() const { return int64_t(config.heads) * config.head_dim; }
  int64_t kv_dim() const { return int64_t(config.kv_heads) * config.head_dim; }
  int64_t qkv_dim() const { return q_dim() + 2 * kv_dim(); }
  size_t element_bytes() const { return static_cast<size_t>(cuda::element_bytes(element_of(format))); }

  void drop_graphs() {
    for (auto& [key, exec] : graphs) cudaGraphExecDestroy(exec);
    graphs.clear();
  }

  // ---------------------------------------------------------------------------------------------
  // Weights

  // Where tensor t of a layer goes: a buffer, the element offset in it, and whether it holds the
  // span's element type (the matrices) or fp32 (norms and biases).
  struct Target {
    void* base;
    int64_t offset;
    bool matrix;
  };

  Target target(Layer& L, LayerTensor t) const {
    const int64_t h = config.hidden, inter = config.intermediate, q = q_dim(), kv = kv_dim();
    switch (t) {
      case LayerTensor::InputNorm: return {L.input_norm.as<void>(), 0, false};
      case LayerTensor::PostAttentionNorm: return {L.post_attention_norm.as<void>(), 0, false};
      case LayerTensor::Q: return {L.qkv.data.as<void>(), 0, true};
      case LayerTensor::K: return {L.qkv.data.as<void>(), q * h, true};
      case LayerTensor::V: return {L.qkv.data.as<void>(), (q + kv) * h, true};
      case LayerTensor::O: return {L.o.data.as<void>(), 0, true};
      case LayerTensor::Gate: return {L.gate_up.data.as<void>(), 0, true};
      case LayerTensor::Up: return {L.gate_up.data.as<void>(), inter * h, true};
      case LayerTensor::Down: return {L.down.data.as<void>(), 0, true};
      case LayerTensor::QBias: return {L.qkv_bias.as<void>(), 0, false};
      case LayerTensor::KBias: return {L.qkv_bias.as<void>(), q, false};
      case LayerTensor::VBias: return {L.qkv_bias.as<void>(), q + kv, false};
      case LayerTensor::OBias: return {L.o_bias.as<void>(), 0, false};
      case LayerTensor::GateBias: return {L.gate_up_bias.as<void>(), 0, false};
      case LayerTensor::UpBias: return {L.gate_up_bias.as<void>(), inter, false};
      case LayerTensor::DownBias: return {L.down_bias.as<void>(), 0, false};
      case LayerTensor::Count: break;
    }
    throw std::logic_error("no such layer tensor");
  }

  // A layer's buffers, uninitialised.
  std::unique_ptr<Layer> allocate_layer() const {
    auto L = std::make_unique<Layer>();
    const int64_t h = config.hidden, inter = config.intermediate;
    const size_t f = 4, e = element_bytes();
    auto matrix = [&](DeviceMatrix& m, int64_t rows, int64_t cols) {
      m.data = DeviceBuffer(device, static_cast<size_t>(rows * cols) * e);
      m.rows = rows;
      m.cols = cols;
    };
    L->input_norm = DeviceBuffer(device, h * f);
    L->post_attention_norm = DeviceBuffer(device, h * f);
    matrix(L->qkv, qkv_dim(), h);
    matrix(L->o, h, q_dim());
    matrix(L->gate_up, 2 * inter, h);
    matrix(L->down, h, inter);
    if (config.attention_bias) {
      L->qkv_bias = DeviceBuffer(device, qkv_dim() * f);
      L->o_bias = DeviceBuffer(device, h * f);
    }
    if (config.mlp_bias) {
      L->gate_up_bias = DeviceBuffer(device, 2 * inter * f);
      L->down_bias = DeviceBuffer(device, h * f);
    }
    for (const DeviceBuffer* b : {&L->input_norm, &L->post_attention_norm, &L->qkv.data, &L->o.data, &L->gate_up.data, &L->down.data,
                                  &L->qkv_bias, &L->o_bias, &L->gate_up_bias, &L->down_bias})
      L->bytes += static_cast<int64_t>(b->bytes());
    return L;
  }

  // Builds layer `index` with fill(target, tensor, element count) for every present tensor.
  template <class Fill>
  void build_layer(int index, Fill&& fill) {
    if (index < 0 || index >= static_cast<int>(layers.size())) throw std::invalid_argument("layer index out of range");
    std::lock_guard<std::mutex> lock(compute_mutex);
    check(cudaSetDevice(device), "cudaSetDevice");
    drop_graphs();                              // they point at the old weights
    layers[index] = std::make_unique<Layer>();  // frees the old weights before the new ones arrive
    auto L = allocate_layer();
    for (int t = 0; t < static_cast<int>(LayerTensor::Count); t++) {
      const LayerTensor which = static_cast<LayerTensor>(t);
      const TensorShape shape = layer_tensor_shape(config, which);
      if (shape.present) fill(target(*L, which), which, shape.size());
    }
    check(cudaStreamSynchronize(stream), "loading weights");
    L->loaded = true;
    layers[index] = std::move(L);
  }

  Uploader& staging() {
    if (!uploader) uploader = std::make_unique<Uploader>(device, stream);
    return *uploader;
  }

  cuda::Element element_for(const Target& target) const { return target.matrix ? element_of(format) : cuda::Element::F32; }

  void* at(const Target& target) const { return static_cast<char*>(target.base) + target.offset * cuda::element_bytes(element_for(target)); }

  void load_layer(int index, const std::vector<TensorSource>& sources) {
    if (sources.size() != static_cast<size_t>(LayerTensor::Count)) throw std::invalid_argument("a block needs one source per LayerTensor");
    build_layer(index, [&](const Target& target, LayerTensor t, int64_t count) {
      staging().upload(at(target), element_for(target), count, sources[static_cast<int>(t)], tensor_suffix(t));
    });
  }

  void set_layer(int index, const std::vector<std::vector<float>>& tensors) {
    check_layer_tensors(config, index, tensors);
    build_layer(index, [&](const Target& target, LayerTensor t, int64_t) {
      staging().upload(at(target), element_for(target), tensors[static_cast<int>(t)]);
    });
  }

  void load_dummy_layer(int index, int block, uint32_t seed) {
    build_layer(index, [&](const Target& target, LayerTensor t, int64_t count) {
      const DummyInit init = dummy_init(config, t);
      const uint32_t key = dummy_key(seed, dummy_stream(block, t));
      switch (element_for(target)) {
        case cuda::Element::F32: cuda::dummy_fill(static_cast<float*>(at(target)), count, key, init.scale, init.offset, stream); break;
        case cuda::Element::F16: cuda::dummy_fill(static_cast<__half*>(at(target)), count, key, init.scale, init.offset, stream); break;
        case cuda::Element::BF16: cuda::dummy_fill(static_cast<__nv_bfloat16*>(at(target)), count, key, init.scale, init.offset, stream); break;
      }
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Sessions and forwards

  int open_session(int64_t max_length, int first_layer, int layer_count) {
    return sessions.open(max_length, first_layer, layer_count, [&](Sessions::Session& session) {
      check(cudaSetDevice(device), "cudaSetDevice");
      const size_t bytes = static_cast<size_t>(session.layer_count) * 2 * static_cast<size_t>(session.max_length) * kv_dim() * sizeof(float);
      session.cache.kv = DeviceBuffer(device, bytes);  // CacheFullError when the GPU is full
    });
  }

  void close_session(int id) {
    sessions.close(id);
    std::lock_guard<std::mutex> lock(closed_mutex);
    closed.push_back(id);
  }

  // Drops the graphs of closed sessions (their caches are gone; their ids never come back).
  void forget_closed() {
    std::vector<int> gone;
    {
      std::lock_guard<std::mutex> lock(closed_mutex);
      gone.swap(closed);
    }
    if (gone.empty()) return;
    for (auto it = graphs.begin(); it != graphs.end();) {
      const bool stale = std::any_of(it->first.steps.begin(), it->first.steps.end(),
                                     [&](const auto& step) { return std::find(gone.begin(), gone.end(), step.first) != gone.end(); });
      if (stale) {
        cudaGraphExecDestroy(it->second);
        it = graphs.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Scratch for `tokens` tokens, in steps of powers of two; a move invalidates every graph.
  void ensure_scratch(int64_t tokens) {
    if (tokens <= scratch_tokens) return;
    int64_t size = 16;
    while (size < tokens) size *= 2;
    const int64_t h = config.hidden, inter = config.intermediate;
    const size_t f = 4;
    drop_graphs();
    reserve(x, device, size * h * f);
    reserve(act, device, size * std::max({h, q_dim(), inter}) * element_bytes());
    reserve(qkv, device, size * qkv_dim() * f);
    reserve(gate_up, device, size * 2 * inter * f);
    reserve(positions, device, size * sizeof(int64_t));
    reserve(io, device, size * (h * f + sizeof(int64_t)));
    scratch_tokens = size;
  }

  void forward(std::vector<Step>& steps) {
    std::lock_guard<std::mutex> lock(compute_mutex);
    const int64_t h = config.hidden;
    const Sessions::Batch batch = sessions.check(steps, h);
    for (int l = batch.first_layer; l < batch.end_layer; l++)
      if (!layers[l]->loaded) throw std::invalid_argument("block " + std::to_string(l) + " of the span is not loaded");
    check(cudaSetDevice(device), "cudaSetDevice");
    uploader.reset();  // loading is over: give back its pinned buffers
    forget_closed();
    const int64_t total = batch.total_tokens;
    ensure_scratch(total);

    // The steps' positions and hidden states, one after another, in one copy each way.
    int64_t* host_positions = io.as<int64_t>();
    float* hidden = reinterpret_cast<float*>(host_positions + total);
    int64_t row = 0;
    for (size_t i = 0; i < steps.size(); i++) {
      batch.sessions[i]->length = batch.starts[i];  // rewinding discards the cached tokens after `start`
      std::memcpy(hidden + row * h, steps[i].hidden, steps[i].tokens * h * sizeof(float));
      for (int64_t t = 0; t < steps[i].tokens; t++) host_positions[row + t] = batch.starts[i] + t;
      row += steps[i].tokens;
    }
    check(cudaMemcpyAsync(x.as<void>(), hidden, total * h * sizeof(float), cudaMemcpyHostToDevice, stream), "copying hidden states in");
    check(cudaMemcpyAsync(positions.as<void>(), host_positions, total * sizeof(int64_t), cudaMemcpyHostToDevice, stream), "copying positions");
    if (use_graphs && total <= kGraphMaxTokens) replay(steps, batch);
    else run_layers(steps, batch);
    check(cudaMemcpyAsync(hidden, x.as<void>(), total * h * sizeof(float), cudaMemcpyDeviceToHost, stream), "copying hidden states out");
    check(cudaStreamSynchronize(stream), "the forward");
    row = 0;
    for (size_t i = 0; i < steps.size(); i++) {
      std::memcpy(steps[i].hidden, hidden + row * h, steps[i].tokens * h * sizeof(float));
      row += steps[i].tokens;
      batch.sessions[i]->length = batch.starts[i] + steps[i].tokens;
    }
  }

  // Runs the batch's layers as a graph: captured the first time this (layers, sessions, token
  // counts) comes, replayed after. If capturing fails the span says so once and runs eagerly.
  void replay(const std::vector<Step>& steps, const Sessions::Batch& batch) {
    GraphKey key{batch.first_layer, batch.end_layer, {}};
    for (const Step& s : steps) key.steps.emplace_back(s.session, s.tokens);
    auto found = graphs.find(key);
    if (found == graphs.end()) {
      if (graphs.size() >= kMaxGraphs) drop_graphs();
      cudaGraphExec_t exec = nullptr;
      try {
        exec = capture(steps, batch);
      } catch (const std::runtime_error& e) {
        std::fprintf(stderr, "bmrt: CUDA graph capture failed (%s); running decode steps without graphs\n", e.what());
        use_graphs = false;
        run_layers(steps, batch);
        return;
      }
      found = graphs.emplace(std::move(key), exec).first;
    }
    check(cudaGraphLaunch(found->second, stream), "cudaGraphLaunch");
  }

  cudaGraphExec_t capture(const std::vector<Step>& steps, const Sessions::Batch& batch) {
    check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    cudaGraph_t graph = nullptr;
    try {
      run_layers(steps, batch);
    } catch (...) {
      cudaStreamEndCapture(stream, &graph);  // leaves capture mode whatever happened
      if (graph != nullptr) cudaGraphDestroy(graph);
      cudaGetLastError();
      throw;
    }
    check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
    cudaGraphExec_t exec = nullptr;
    const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    check(status, "cudaGraphInstantiate");
    return exec;
  }

  void run_layers(const std::vector<Step>& steps, const Sessions::Batch& batch) {
    with_element(format, [&](auto element) {
      using T = decltype(element);
      for (int l = batch.first_layer; l < batch.end_layer; l++) run_layer<T>(l, steps, batch);
    });
  }

  template <class T>
  void project(const DeviceMatrix& w, const T* in, int64_t n, float* out, bool accumulate) {
    projector->run(w.data.as<T>(), w.rows, w.cols, in, n, out, accumulate);
  }

  void add_bias(const DeviceBuffer& bias, float* y, int64_t rows, int64_t cols) {
    if (bias.bytes() > 0) cuda::add_bias(y, bias.as<float>(), rows, cols, stream);
  }

  template <class T>
  void run_layer(int index, const std::vector<Step>& steps, const Sessions::Batch& batch) {
    const Layer& L = *layers[index];
    const int64_t slot = index - batch.first_layer;
    const int64_t h = config.hidden, inter = config.intermediate, total = batch.total_tokens;
    const int64_t qd = q_dim(), kvd = kv_dim(), ld = qkv_dim();
    float* xs = x.as<float>();
    T* in = act.as<T>();

    // Attention: projections, rotary and the cache, then each session's queries over its cache.
    cuda::rms_norm(xs, L.input_norm.as<float>(), total, static_cast<int>(h), config.rms_norm_eps, in, stream);
    project(L.qkv, in, total, qkv.as<float>(), false);
    add_bias(L.qkv_bias, qkv.as<float>(), total, ld);
    const float scale = 1.0f / std::sqrt(static_cast<float>(config.head_dim));
    int64_t row = 0;
    for (size_t s = 0; s < steps.size(); s++) {
      const auto& session = *batch.sessions[s];
      float* keys = session.cache.kv.as<float>() + slot * 2 * session.max_length * kvd;
      float* values = keys + session.max_length * kvd;
      const int64_t tokens = steps[s].tokens;
      float* q = qkv.as<float>() + row * ld;
      const int64_t* where = positions.as<int64_t>() + row;
      cuda::rope_cache(q, ld, where, tokens, config.heads, config.kv_heads, config.head_dim, inverse_frequencies.as<float>(), keys, values, stream);
      cuda::attention(q, ld, keys, values, where, tokens, config.heads, config.kv_heads, config.head_dim, config.sliding_window, scale,
                      in + row * qd, stream);
      row += tokens;
    }
    project(L.o, in, total, xs, true);  // onto the residual
    add_bias(L.o_bias, xs, total, h);

    // SiLU-gated MLP.
    cuda::rms_norm(xs, L.post_attention_norm.as<float>(), total, static_cast<int>(h), config.rms_norm_eps, in, stream);
    project(L.gate_up, in, total, gate_up.as<float>(), false);
    add_bias(L.gate_up_bias, gate_up.as<float>(), total, 2 * inter);
    cuda::silu_mul(gate_up.as<float>(), total, inter, in, stream);
    project(L.down, in, total, xs, true);
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

void CudaBlockSpan::load_layer(int layer, const std::vector<TensorSource>& sources) { impl_->load_layer(layer, sources); }
void CudaBlockSpan::set_layer(int layer, const std::vector<std::vector<float>>& tensors) { impl_->set_layer(layer, tensors); }
void CudaBlockSpan::load_dummy_layer(int layer, int block, uint32_t seed) { impl_->load_dummy_layer(layer, block, seed); }
int CudaBlockSpan::open_session(int64_t max_length, int first_layer, int layer_count) { return impl_->open_session(max_length, first_layer, layer_count); }
void CudaBlockSpan::close_session(int session) { impl_->close_session(session); }
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
