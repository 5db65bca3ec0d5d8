// The CPU block span: weights converted to the chosen format at load, fp32 activations, an fp32
// KV cache per session, and the kernels of kernels.h for the projections.
#include "span.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <stdexcept>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "dummy.h"

namespace bmrt {

namespace {

// 64-byte aligned storage for weights (SIMD loads, cache lines).
struct AlignedFree {
  void operator()(void* p) const { ::operator delete(p, std::align_val_t(64)); }
};
using AlignedBytes = std::unique_ptr<void, AlignedFree>;

AlignedBytes aligned_alloc_bytes(size_t bytes) {
  return AlignedBytes(::operator new(std::max<size_t>(bytes, 64), std::align_val_t(64)));
}

// The forward workspace (normed_, q_, ... out_) grows to the largest forward seen. It is kept
// between forwards while it holds at most this many tokens: a decode step of the largest batch a
// session may step (DEFAULT_MAX_BATCH in src/petals/server/handler.ts), so decode steps do not
// reallocate it. A larger forward (a prefill, or a peer's batch-16 frame of 4 MiB) gives it back when it
// ends; otherwise one such frame would hold its size (664 floats a token for the bundled model,
// 46k for a 7B Llama) for the life of the process (issue 20, row 13).
constexpr int64_t kKeptWorkspaceTokens = 64;

// Hands the free pages of every malloc arena back to the system (glibc only): a released
// workspace or a closed session's KV cache would otherwise stay resident in the arenas, behind
// blocks still live (PATCHES.md, "span workspace").
void give_back_free_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace

struct BlockSpan::Layer {
  std::vector<float> input_norm, post_attention_norm;
  Matrix q, k, v, o, gate, up, down;
  std::vector<float> q_bias, k_bias, v_bias, o_bias, gate_bias, up_bias, down_bias;
  std::vector<AlignedBytes> storage;  // owns the matrices' data and scales when they are not packed
  int64_t resident_bytes = 0;         // what the matrices hold in memory
  bool loaded = false;

  ~Layer() {
    for (Matrix* m : {&q, &k, &v, &o, &gate, &up, &down}) release_matrix(*m);
  }
};


BlockSpan::BlockSpan(BlockConfig config, int layers, WeightFormat format, int threads, int64_t max_cache_tokens)
    : config_(std::move(config)), format_(format), sessions_(layers, max_cache_tokens), pool_(std::max(1, threads)) {
  check_block_config(config_);
  if (layers <= 0) throw std::invalid_argument("a span needs at least one block");
  for (int i = 0; i < layers; i++) layers_.push_back(std::make_unique<Layer>());
}

BlockSpan::~BlockSpan() = default;

void BlockSpan::set_layer(int layer, const std::vector<std::vector<float>>& tensors) {
  if (layer < 0 || layer >= layers()) throw std::invalid_argument("layer index out of range");
  check_layer_tensors(config_, layer, tensors);
  const BlockConfig& c = config_;
  const int64_t h = c.hidden, inter = c.intermediate, q_dim = int64_t(c.heads) * c.head_dim, kv_dim = int64_t(c.kv_heads) * c.head_dim;

  auto fresh = std::make_unique<Layer>();
  Layer& L = *fresh;
  // Converts to the span's format, lets the kernels pack it, then keeps only what linear() reads:
  // the packed panels when the kernels made them (so weights are held once), else data + scales.
  auto make_matrix = [&](Matrix& m, const std::vector<float>& values, int64_t rows, int64_t cols) {
    m.format = format_;
    m.rows = rows;
    m.cols = cols;
    AlignedBytes data = aligned_alloc_bytes(static_cast<size_t>(weight_format_bytes(format_, rows, cols)));
    AlignedBytes scales;
    const int64_t scale_count = weight_scale_count(format_, rows, cols);
    if (scale_count > 0) scales = aligned_alloc_bytes(static_cast<size_t>(scale_count) * 4);
    m.data = data.get();
    m.scales = static_cast<float*>(scales.get());
    encode_weights(format_, values.data(), rows, cols, m.data, m.scales);
    prepare_matrix(m);
    if (m.packed != nullptr) {
      m.data = nullptr;  // freed when `data` and `scales` go out of scope
      m.scales = nullptr;
      L.resident_bytes += m.packed_bytes;
    } else {
      L.resident_bytes += weight_format_bytes(format_, rows, cols) + scale_count * 4;
      L.storage.push_back(std::move(data));
      if (scales) L.storage.push_back(std::move(scales));
    }
  };
  auto get = [&](LayerTensor t) -> const std::vector<float>& { return tensors[static_cast<int>(t)]; };
  L.input_norm = get(LayerTensor::InputNorm);
  L.post_attention_norm = get(LayerTensor::PostAttentionNorm);
  make_matrix(L.q, get(LayerTensor::Q), q_dim, h);
  make_matrix(L.k, get(LayerTensor::K), kv_dim, h);
  make_matrix(L.v, get(LayerTensor::V), kv_dim, h);
  make_matrix(L.o, get(LayerTensor::O), h, q_dim);
  make_matrix(L.gate, get(LayerTensor::Gate), inter, h);
  make_matrix(L.up, get(LayerTensor::Up), inter, h);
  make_matrix(L.down, get(LayerTensor::Down), h, inter);
  L.q_bias = get(LayerTensor::QBias);
  L.k_bias = get(LayerTensor::KBias);
  L.v_bias = get(LayerTensor::VBias);
  L.o_bias = get(LayerTensor::OBias);
  L.gate_bias = get(LayerTensor::GateBias);
  L.up_bias = get(LayerTensor::UpBias);
  L.down_bias = get(LayerTensor::DownBias);
  L.loaded = true;
  std::lock_guard<std::mutex> lock(compute_mutex_);
  layers_[layer] = std::move(fresh);
}

void BlockSpan::load_layer(int layer, const std::vector<TensorSource>& sources) {
  set_layer(layer, read_layer_tensors(sources));
}

void BlockSpan::load_dummy_layer(int layer, int block, uint32_t seed) {
  std::vector<std::vector<float>> tensors;
  {
    std::lock_guard<std::mutex> lock(compute_mutex_);  // the pool runs one job at a time
    tensors = dummy_layer_tensors(config_, block, seed, pool_);
  }
  set_layer(layer, tensors);
}

int BlockSpan::open_session(int64_t max_length, int first_layer, int layer_count) {
  return sessions_.open(max_length, first_layer, layer_count, [&](Sessions::Session& session) {
    const size_t per_layer = static_cast<size_t>(session.max_length) * config_.kv_heads * config_.head_dim;
    try {
      for (int l = 0; l < session.layer_count; l++) {
        session.cache.keys.emplace_back(per_layer);
        session.cache.values.emplace_back(per_layer);
      }
    } catch (const std::bad_alloc&) {
      throw CacheFullError("out of memory reserving a KV cache of " + std::to_string(session.max_length) + " tokens over " +
                           std::to_string(session.layer_count) + " blocks");
    }
  });
}

void BlockSpan::close_session(int id) {
  sessions_.close(id);
  give_back_free_memory();
}
int64_t BlockSpan::session_length(int id) const { return sessions_.find(id)->length; }
int64_t BlockSpan::session_max_length(int id) const { return sessions_.find(id)->max_length; }
int BlockSpan::sessions() const { return sessions_.size(); }
int64_t BlockSpan::cache_layer_tokens_reserved() const { return sessions_.reserved(); }

int64_t BlockSpan::weight_bytes() const {
  int64_t total = 0;
  for (const auto& L : layers_) {
    total += static_cast<int64_t>((L->input_norm.size() + L->post_attention_norm.size() + L->q_bias.size() + L->k_bias.size() +
                                   L->v_bias.size() + L->o_bias.size() + L->gate_bias.size() + L->up_bias.size() + L->down_bias.size()) * 4);
    total += L->resident_bytes;
  }
  return total;
}

// Called under compute_mutex_ once a forward is over (or failed): frees a workspace grown past a
// decode step's. glibc's malloc would keep most of it anyway: once a large block is freed it
// raises its mmap threshold to that size, so the next prefill's vectors come from the worker
// thread's arena, whose top it trims only past twice that size (mallopt(3), "M_MMAP_THRESHOLD");
// malloc_trim(0) hands the free pages of every arena back (PATCHES.md, "span workspace").
void BlockSpan::release_large_workspace() {
  // normed_ holds max(hidden, q_dim) floats a token of the largest forward since the last release.
  const int64_t width = std::max<int64_t>(config_.hidden, int64_t(config_.heads) * config_.head_dim);
  auto all = {&normed_, &q_, &k_, &v_, &attention_, &gate_, &up_, &out_, &scores_};
  if (static_cast<int64_t>(normed_.capacity()) > kKeptWorkspaceTokens * width) {
    for (auto* v : all) std::vector<float>().swap(*v);
    give_back_free_memory();
  }
  size_t floats = 0;
  for (const auto* v : all) floats += v->capacity();
  workspace_bytes_ = static_cast<int64_t>(floats * sizeof(float));
}

int64_t BlockSpan::cache_bytes_per_token() const {
  return static_cast<int64_t>(layers()) * 2 * config_.kv_heads * config_.head_dim * 4;
}

void BlockSpan::forward(std::vector<Step>& steps) {
  // One forward at a time, checked under the same lock so every step sees its session's length
  // as the previous forward left it.
  std::lock_guard<std::mutex> lock(compute_mutex_);
  // Once this forward is done the kernels' workers should sleep rather than spin: the next one
  // is a network round trip away, and other spans or processes may want the cores meanwhile. And
  // a workspace grown past a decode step's goes back.
  struct Rest {
    BlockSpan& span;
    ~Rest() {
      span.pool_.rest();
      span.release_large_workspace();
    }
  } rest{*this};
  const int64_t h = config_.hidden;
  const Sessions::Batch batch = sessions_.check(steps, h);
  for (int l = batch.first_layer; l < batch.end_layer; l++)
    if (!layers_[l]->loaded) throw std::invalid_argument("block " + std::to_string(l) + " of the span is not loaded");

  std::vector<float> x(static_cast<size_t>(batch.total_tokens * h));
  int64_t row = 0;
  for (size_t i = 0; i < steps.size(); i++) {
    batch.sessions[i]->length = batch.starts[i];  // rewinding discards the cached tokens after `start`
    std::memcpy(x.data() + row * h, steps[i].hidden, static_cast<size_t>(steps[i].tokens * h) * 4);
    row += steps[i].tokens;
  }
  for (int l = batch.first_layer; l < batch.end_layer; l++) run_layer(l, steps, batch, x.data());
  row = 0;
  for (size_t i = 0; i < steps.size(); i++) {
    std::memcpy(steps[i].hidden, x.data() + row * h, static_cast<size_t>(steps[i].tokens * h) * 4);
    row += steps[i].tokens;
    batch.sessions[i]->length = batch.starts[i] + steps[i].tokens;
  }
}

namespace {

// rotate_half rotary embedding of `heads` heads of one token, in place.
void rope(float* x, int heads, int head_dim, const float* cos, const float* sin) {
  const int half = head_dim / 2;
  for (int hd = 0; hd < heads; hd++) {
    float* v = x + hd * head_dim;
    for (int j = 0; j < half; j++) {
      const float a = v[j], b = v[j + half];
      v[j] = a * cos[j] - b * sin[j];
      v[j + half] = b * cos[j] + a * sin[j];
    }
  }
}

const float* bias_or_null(const std::vector<float>& b) { return b.empty() ? nullptr : b.data(); }

}  // namespace

// `index` is the span's layer; `index - batch.first_layer` is its slot in the sessions' caches.
void BlockSpan::run_layer(int index, const std::vector<Step>& steps, const Sessions::Batch& batch, float* x) {
  Layer& L = *layers_[index];
  const size_t slot = static_cast<size_t>(index - batch.first_layer);
  const int64_t total = batch.total_tokens;
  const std::vector<int64_t>& starts = batch.starts;
  const BlockConfig& c = config_;
  const int64_t h = c.hidden, inter = c.intermediate;
  const int64_t q_dim = int64_t(c.heads) * c.head_dim, kv_dim = int64_t(c.kv_heads) * c.head_dim;
  const int half = c.head_dim / 2;
  const int group = c.heads / c.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  normed_.resize(static_cast<size_t>(total * std::max(h, q_dim)));
  q_.resize(static_cast<size_t>(total * q_dim));
  k_.resize(static_cast<size_t>(total * kv_dim));
  v_.resize(static_cast<size_t>(total * kv_dim));
  attention_.resize(static_cast<size_t>(total * q_dim));
  gate_.resize(static_cast<size_t>(total * inter));
  up_.resize(static_cast<size_t>(total * inter));
  out_.resize(static_cast<size_t>(total * h));

  // Attention projections, rotary, and the new keys/values into each session's cache.
  rms_norm(x, L.input_norm.data(), total, h, c.rms_norm_eps, normed_.data());
  linear(L.q, normed_.data(), total, bias_or_null(L.q_bias), q_.data(), pool_);
  linear(L.k, normed_.data(), total, bias_or_null(L.k_bias), k_.data(), pool_);
  linear(L.v, normed_.data(), total, bias_or_null(L.v_bias), v_.data(), pool_);
  std::vector<float> cos(half), sin(half);
  int64_t row = 0;
  for (size_t s = 0; s < steps.size(); s++) {
    HostCache& cache = batch.sessions[s]->cache;
    for (int64_t t = 0; t < steps[s].tokens; t++, row++) {
      const int64_t pos = starts[s] + t;
      for (int j = 0; j < half; j++) {
        const float angle = static_cast<float>(pos) * c.rope_inverse_frequencies[j];
        cos[j] = std::cos(angle);
        sin[j] = std::sin(angle);
      }
      rope(q_.data() + row * q_dim, c.heads, c.head_dim, cos.data(), sin.data());
      rope(k_.data() + row * kv_dim, c.kv_heads, c.head_dim, cos.data(), sin.data());
      std::memcpy(cache.keys[slot].data() + pos * kv_dim, k_.data() + row * kv_dim, kv_dim * 4);
      std::memcpy(cache.values[slot].data() + pos * kv_dim, v_.data() + row * kv_dim, kv_dim * 4);
    }
  }

  // Causal (optionally sliding-window) attention over each session's cache: one task per
  // (step, head), each thread with its own score buffer.
  int64_t longest = 0;
  for (size_t s = 0; s < steps.size(); s++) longest = std::max(longest, starts[s] + steps[s].tokens);
  scores_.resize(static_cast<size_t>(pool_.size() * longest));
  std::vector<int64_t> first_row(steps.size());
  for (size_t s = 0, r = 0; s < steps.size(); r += steps[s].tokens, s++) first_row[s] = static_cast<int64_t>(r);
  const int tasks = static_cast<int>(steps.size()) * c.heads;
  pool_.run(tasks, [&](int task, int thread) {
    const size_t s = static_cast<size_t>(task / c.heads);
    const int head = task % c.heads, kv_head = head / group;
    const float* keys = batch.sessions[s]->cache.keys[slot].data();
    const float* values = batch.sessions[s]->cache.values[slot].data();
    float* scores = scores_.data() + static_cast<size_t>(thread) * longest;
    for (int64_t t = 0; t < steps[s].tokens; t++) {
      const int64_t r = first_row[s] + t, pos = starts[s] + t;
      const int64_t first = c.sliding_window > 0 ? std::max<int64_t>(0, pos - c.sliding_window + 1) : 0;
      const int64_t offset = first * kv_dim + kv_head * c.head_dim;
      attend(q_.data() + r * q_dim + head * c.head_dim, keys + offset, values + offset, pos + 1 - first, kv_dim, c.head_dim,
             scale, scores, attention_.data() + r * q_dim + head * c.head_dim);
    }
  });
  linear(L.o, attention_.data(), total, bias_or_null(L.o_bias), out_.data(), pool_);
  for (int64_t i = 0; i < total * h; i++) x[i] += out_[i];

  // SiLU-gated MLP.
  rms_norm(x, L.post_attention_norm.data(), total, h, c.rms_norm_eps, normed_.data());
  linear(L.gate, normed_.data(), total, bias_or_null(L.gate_bias), gate_.data(), pool_);
  linear(L.up, normed_.data(), total, bias_or_null(L.up_bias), up_.data(), pool_);
  // silu(gate) * up: an exp per element is worth spreading over the threads for long prefills.
  const int64_t elements = total * inter, chunk = 16384;
  pool_.run(static_cast<int>((elements + chunk - 1) / chunk), [&](int task, int) {
    const int64_t end = std::min(elements, (task + 1) * chunk);
    for (int64_t i = task * chunk; i < end; i++) {
      const float g = gate_[i];
      gate_[i] = g / (1.0f + std::exp(-g)) * up_[i];
    }
  });
  linear(L.down, gate_.data(), total, bias_or_null(L.down_bias), out_.data(), pool_);
  for (int64_t i = 0; i < total * h; i++) x[i] += out_[i];
}

}  // namespace bmrt
