// The CPU block span: weights converted to the chosen format at load, fp32 activations, an fp32
// KV cache per session, and the kernels of kernels.h for the projections.
#include "span.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <stdexcept>

#include "platform.h"

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

const char* tensor_suffix(LayerTensor t) {
  static const char* names[] = {
      "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
      "self_attn.o_proj.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
      "mlp.down_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
      "self_attn.o_proj.bias", "mlp.gate_proj.bias", "mlp.up_proj.bias", "mlp.down_proj.bias"};
  return names[static_cast<int>(t)];
}

size_t source_element_bytes(SourceDType d) { return d == SourceDType::F32 ? 4 : 2; }

// Raw checkpoint values to fp32.
std::vector<float> to_float(const std::vector<uint8_t>& raw, SourceDType dtype) {
  size_t count = raw.size() / source_element_bytes(dtype);
  std::vector<float> out(count);
  if (dtype == SourceDType::F32) {
    std::memcpy(out.data(), raw.data(), count * 4);
  } else {
    const uint8_t* p = raw.data();
    for (size_t i = 0; i < count; i++) {
      uint16_t bits;
      std::memcpy(&bits, p + 2 * i, 2);
      out[i] = dtype == SourceDType::BF16 ? bf16_to_float(bits) : half_to_float(bits);
    }
  }
  return out;
}

bool all_finite(const float* x, int64_t count) {
  for (int64_t i = 0; i < count; i++)
    if (!std::isfinite(x[i])) return false;
  return true;
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

struct BlockSpan::Session {
  int64_t max_length = 0;
  int64_t length = 0;
  int first_layer = 0;  // the session runs layers [first_layer, first_layer + keys.size())
  std::vector<std::vector<float>> keys, values;  // per layer it runs: [max_length, kv_heads * head_dim]
  int layer_count() const { return static_cast<int>(keys.size()); }
  int64_t reserved() const { return max_length * layer_count(); }  // layer-tokens
};

BlockSpan::BlockSpan(BlockConfig config, int layers, WeightFormat format, int threads, int64_t max_cache_tokens)
    : config_(std::move(config)), format_(format), max_cache_tokens_(max_cache_tokens), pool_(std::max(1, threads)) {
  const BlockConfig& c = config_;
  if (c.hidden <= 0 || c.intermediate <= 0 || c.heads <= 0 || c.kv_heads <= 0 || c.head_dim <= 0 || c.head_dim % 2 != 0)
    throw std::invalid_argument("block config needs positive hidden, intermediate, heads, kv_heads and an even head_dim");
  if (c.heads % c.kv_heads != 0) throw std::invalid_argument("heads must be a multiple of kv_heads");
  if (static_cast<int>(c.rope_inverse_frequencies.size()) != c.head_dim / 2)
    throw std::invalid_argument("rope_inverse_frequencies must hold head_dim / 2 values");
  if (layers <= 0) throw std::invalid_argument("a span needs at least one block");
  for (int i = 0; i < layers; i++) layers_.push_back(std::make_unique<Layer>());
}

BlockSpan::~BlockSpan() = default;

void BlockSpan::set_layer(int layer, const std::vector<std::vector<float>>& tensors) {
  if (layer < 0 || layer >= layers()) throw std::invalid_argument("layer index out of range");
  const BlockConfig& c = config_;
  const int64_t h = c.hidden, inter = c.intermediate, q_dim = int64_t(c.heads) * c.head_dim, kv_dim = int64_t(c.kv_heads) * c.head_dim;
  struct Shape { int64_t rows, cols; bool needed; };
  const Shape shapes[] = {
      {h, 1, true}, {q_dim, h, true}, {kv_dim, h, true}, {kv_dim, h, true}, {h, q_dim, true}, {h, 1, true},
      {inter, h, true}, {inter, h, true}, {h, inter, true},
      {q_dim, 1, c.attention_bias}, {kv_dim, 1, c.attention_bias}, {kv_dim, 1, c.attention_bias}, {h, 1, c.attention_bias},
      {inter, 1, c.mlp_bias}, {inter, 1, c.mlp_bias}, {h, 1, c.mlp_bias}};
  if (tensors.size() != static_cast<size_t>(LayerTensor::Count)) throw std::invalid_argument("set_layer needs one entry per LayerTensor");
  for (int t = 0; t < static_cast<int>(LayerTensor::Count); t++) {
    size_t expected = shapes[t].needed ? static_cast<size_t>(shapes[t].rows * shapes[t].cols) : 0;
    if (tensors[t].size() != expected)
      throw std::invalid_argument(std::string("tensor ") + tensor_suffix(static_cast<LayerTensor>(t)) + " of block " +
                                  std::to_string(layer) + " has " + std::to_string(tensors[t].size()) + " values, expected " +
                                  std::to_string(expected));
  }

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
  if (sources.size() != static_cast<size_t>(LayerTensor::Count)) throw std::invalid_argument("load_layer needs one source per LayerTensor");
  std::vector<std::vector<float>> tensors(sources.size());
  for (size_t t = 0; t < sources.size(); t++) {
    const TensorSource& s = sources[t];
    if (s.bytes == 0) continue;  // absent (a bias the model does not have)
    if (s.bytes % source_element_bytes(s.dtype) != 0)
      throw std::invalid_argument(s.path + ": tensor " + tensor_suffix(static_cast<LayerTensor>(t)) + " has a byte size that is not a whole number of values");
    std::vector<uint8_t> raw(s.bytes);
    try {
      read_file_range(s.path, s.offset, s.bytes, raw.data());
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string(e.what()) + " while reading tensor " + tensor_suffix(static_cast<LayerTensor>(t)));
    }
    tensors[t] = to_float(raw, s.dtype);
  }
  set_layer(layer, tensors);
}

int BlockSpan::open_session(int64_t max_length, int first_layer, int layer_count) {
  if (max_length <= 0) throw std::invalid_argument("session max length must be positive");
  if (layer_count == -1) layer_count = layers() - first_layer;
  if (first_layer < 0 || layer_count <= 0 || int64_t(first_layer) + layer_count > layers())
    throw std::invalid_argument("a session's layers must be a non-empty part of the span's 0:" + std::to_string(layers()) + ", got " +
                                std::to_string(first_layer) + ":" + std::to_string(int64_t(first_layer) + layer_count));
  const int64_t needed = max_length * layer_count;
  std::lock_guard<std::mutex> lock(sessions_mutex_);
  // Petals' accounting: the budget is max_cache_tokens per block, and a session pays for the
  // blocks it uses, so a client passing through two of ten blocks takes a fifth of a full one.
  const int64_t budget = max_cache_tokens_ * layers();
  if (max_cache_tokens_ > 0 && cache_reserved_ + needed > budget)
    throw CacheFullError("attention cache full: " + std::to_string(cache_reserved_) + " of " + std::to_string(budget) +
                         " tokens reserved (" + std::to_string(max_cache_tokens_) + " per block x " + std::to_string(layers()) +
                         " blocks); a session of " + std::to_string(max_length) + " tokens over " + std::to_string(layer_count) +
                         " blocks needs " + std::to_string(needed));
  auto session = std::make_shared<Session>();
  session->max_length = max_length;
  session->first_layer = first_layer;
  const size_t per_layer = static_cast<size_t>(max_length) * config_.kv_heads * config_.head_dim;
  try {
    for (int l = 0; l < layer_count; l++) {
      session->keys.emplace_back(per_layer);
      session->values.emplace_back(per_layer);
    }
  } catch (const std::bad_alloc&) {
    throw CacheFullError("out of memory reserving a KV cache of " + std::to_string(max_length) + " tokens over " +
                         std::to_string(layer_count) + " blocks");
  }
  int id = next_session_++;
  cache_reserved_ += session->reserved();
  sessions_[id] = std::move(session);
  return id;
}

void BlockSpan::close_session(int id) {
  std::lock_guard<std::mutex> lock(sessions_mutex_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  cache_reserved_ -= it->second->reserved();
  sessions_.erase(it);  // a forward still running on it holds its own reference
}

std::shared_ptr<BlockSpan::Session> BlockSpan::find_session(int id) const {
  std::lock_guard<std::mutex> lock(sessions_mutex_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) throw std::invalid_argument("unknown or closed session " + std::to_string(id));
  return it->second;
}

int64_t BlockSpan::session_length(int id) const { return find_session(id)->length; }
int64_t BlockSpan::session_max_length(int id) const { return find_session(id)->max_length; }

int BlockSpan::sessions() const {
  std::lock_guard<std::mutex> lock(sessions_mutex_);
  return static_cast<int>(sessions_.size());
}

int64_t BlockSpan::cache_layer_tokens_reserved() const {
  std::lock_guard<std::mutex> lock(sessions_mutex_);
  return cache_reserved_;
}

int64_t BlockSpan::weight_bytes() const {
  int64_t total = 0;
  for (const auto& L : layers_) {
    total += static_cast<int64_t>((L->input_norm.size() + L->post_attention_norm.size() + L->q_bias.size() + L->k_bias.size() +
                                   L->v_bias.size() + L->o_bias.size() + L->gate_bias.size() + L->up_bias.size() + L->down_bias.size()) * 4);
    total += L->resident_bytes;
  }
  return total;
}

int64_t BlockSpan::cache_bytes_per_token() const {
  return static_cast<int64_t>(layers()) * 2 * config_.kv_heads * config_.head_dim * 4;
}

void BlockSpan::forward(std::vector<Step>& steps) {
  if (steps.empty()) throw std::invalid_argument("a forward needs at least one step");
  // One forward at a time, validated under the same lock so every step sees its session's
  // length as the previous forward left it.
  std::lock_guard<std::mutex> lock(compute_mutex_);
  // Once this forward is done the kernels' workers should sleep rather than spin: the next one
  // is a network round trip away, and other spans or processes may want the cores meanwhile.
  struct Rest {
    ThreadPool& pool;
    ~Rest() { pool.rest(); }
  } rest{pool_};
  const int64_t h = config_.hidden;

  // Validate everything before changing any session.
  std::vector<std::shared_ptr<Session>> sessions;
  std::vector<int64_t> starts;
  int64_t total = 0;
  for (size_t i = 0; i < steps.size(); i++) {
    const Step& s = steps[i];
    for (size_t j = 0; j < i; j++)
      if (steps[j].session == s.session) throw std::invalid_argument("session " + std::to_string(s.session) + " appears twice in one batch");
    auto session = find_session(s.session);
    // One batch runs one sequence of layers: every step's tokens go through the same weights.
    if (i > 0 && (session->first_layer != sessions[0]->first_layer || session->layer_count() != sessions[0]->layer_count()))
      throw std::invalid_argument("all sessions in one batch must run the same blocks: session " + std::to_string(s.session) +
                                  " runs layers " + std::to_string(session->first_layer) + ":" +
                                  std::to_string(session->first_layer + session->layer_count()) + ", session " +
                                  std::to_string(steps[0].session) + " runs " + std::to_string(sessions[0]->first_layer) + ":" +
                                  std::to_string(sessions[0]->first_layer + sessions[0]->layer_count()));
    if (s.tokens <= 0 || s.hidden == nullptr) throw std::invalid_argument("a step needs at least one token of hidden states");
    int64_t start = s.position < 0 ? session->length : s.position;
    if (start > session->length)
      throw std::invalid_argument("position " + std::to_string(start) + " is outside the session's " + std::to_string(session->length) + " cached tokens");
    if (start + s.tokens > session->max_length)
      throw std::invalid_argument("session holds at most " + std::to_string(session->max_length) + " tokens; " + std::to_string(start) +
                                  " cached + " + std::to_string(s.tokens) + " new would exceed it");
    if (!all_finite(s.hidden, s.tokens * h)) throw std::invalid_argument("hidden states contain NaN or infinite values");
    sessions.push_back(std::move(session));
    starts.push_back(start);
    total += s.tokens;
  }
  const int first = sessions[0]->first_layer, end = first + sessions[0]->layer_count();
  for (int l = first; l < end; l++)
    if (!layers_[l]->loaded) throw std::invalid_argument("block " + std::to_string(l) + " of the span is not loaded");

  std::vector<float> x(static_cast<size_t>(total * h));
  int64_t row = 0;
  for (size_t i = 0; i < steps.size(); i++) {
    sessions[i]->length = starts[i];  // rewinding discards the cached tokens after `start`
    std::memcpy(x.data() + row * h, steps[i].hidden, static_cast<size_t>(steps[i].tokens * h) * 4);
    row += steps[i].tokens;
  }
  for (int l = first; l < end; l++) run_layer(l, first, steps, sessions, starts, x.data(), total);
  row = 0;
  for (size_t i = 0; i < steps.size(); i++) {
    std::memcpy(steps[i].hidden, x.data() + row * h, static_cast<size_t>(steps[i].tokens * h) * 4);
    row += steps[i].tokens;
    sessions[i]->length = starts[i] + steps[i].tokens;
  }
}

namespace {

// Row-wise RMSNorm, rounding like the fp32 reference (Hugging Face) does.
void rms_norm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out) {
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * dim;
    double sum = 0;
    for (int64_t i = 0; i < dim; i++) sum += double(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(double(static_cast<float>(sum / dim)) + eps));
    for (int64_t i = 0; i < dim; i++) out[r * dim + i] = weight[i] * (xr[i] * inv);
  }
}

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

// `index` is the span's layer; `index - first_layer` is its slot in the sessions' caches.
void BlockSpan::run_layer(int index, int first_layer, std::vector<Step>& steps, std::vector<std::shared_ptr<Session>>& sessions,
                          std::vector<int64_t>& starts, float* x, int64_t total) {
  Layer& L = *layers_[index];
  const size_t slot = static_cast<size_t>(index - first_layer);
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
    Session& session = *sessions[s];
    for (int64_t t = 0; t < steps[s].tokens; t++, row++) {
      const int64_t pos = starts[s] + t;
      for (int j = 0; j < half; j++) {
        const float angle = static_cast<float>(pos) * c.rope_inverse_frequencies[j];
        cos[j] = std::cos(angle);
        sin[j] = std::sin(angle);
      }
      rope(q_.data() + row * q_dim, c.heads, c.head_dim, cos.data(), sin.data());
      rope(k_.data() + row * kv_dim, c.kv_heads, c.head_dim, cos.data(), sin.data());
      std::memcpy(session.keys[slot].data() + pos * kv_dim, k_.data() + row * kv_dim, kv_dim * 4);
      std::memcpy(session.values[slot].data() + pos * kv_dim, v_.data() + row * kv_dim, kv_dim * 4);
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
    const float* keys = sessions[s]->keys[slot].data();
    const float* values = sessions[s]->values[slot].data();
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
