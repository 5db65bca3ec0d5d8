// The CPU head (see head.h).
#include "head.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "dummy.h"

namespace bmrt {

void check_head(const HeadConfig& c, WeightFormat format) {
  if (c.vocab <= 0 || c.hidden <= 0) throw std::invalid_argument("a head needs a positive vocabulary and hidden size");
  if (format != WeightFormat::F32 && format != WeightFormat::BF16 && format != WeightFormat::F16)
    throw std::invalid_argument(std::string("the head stores its weights in f32, bf16 or f16, not ") + weight_format_name(format));
}

namespace {

void check_size(const std::vector<float>& values, int64_t expected, const char* name) {
  if (static_cast<int64_t>(values.size()) != expected)
    throw std::invalid_argument(std::string("head tensor ") + name + " has " + std::to_string(values.size()) + " values, expected " +
                                std::to_string(expected));
}

void check_tensors(const HeadConfig& c, const HeadTensors& t) {
  const int64_t matrix = int64_t(c.vocab) * c.hidden;
  check_size(t.embeddings, matrix, "embed_tokens");
  check_size(t.final_norm, c.hidden, "norm");
  check_size(t.lm_head, c.tied ? 0 : matrix, "lm_head");
}

}  // namespace

HeadTensors read_head_tensors(const HeadConfig& c, const HeadSources& s) {
  HeadTensors t;
  t.embeddings = read_tensor(s.embeddings, "model.embed_tokens.weight");
  t.final_norm = read_tensor(s.final_norm, "model.norm.weight");
  if (!c.tied) t.lm_head = read_tensor(s.lm_head, "lm_head.weight");
  check_tensors(c, t);
  return t;
}

HeadTensors dummy_head_tensors(const HeadConfig& c, uint32_t seed, ThreadPool& pool) {
  HeadTensors t;
  const int64_t matrix = int64_t(c.vocab) * c.hidden;
  auto make = [&](HeadTensor which, int64_t count) {
    std::vector<float> values(static_cast<size_t>(count));
    fill_dummy(dummy_key(seed, dummy_stream(which)), dummy_init(which, c.hidden), values.data(), count, pool);
    return values;
  };
  t.embeddings = make(HeadTensor::Embeddings, matrix);
  t.final_norm = make(HeadTensor::FinalNorm, c.hidden);
  if (!c.tied) t.lm_head = make(HeadTensor::LmHead, matrix);
  return t;
}

EmbeddingTable::EmbeddingTable(const std::vector<float>& values, int64_t vocab, int64_t hidden, WeightFormat format)
    : vocab_(vocab), hidden_(hidden), format_(format) {
  if (format == WeightFormat::F32) {
    full_ = values;
  } else {
    half_.resize(values.size());
    encode_weights(format, values.data(), vocab, hidden, half_.data(), nullptr);
  }
}

void EmbeddingTable::lookup(const int32_t* ids, int64_t n, float* out) const {
  for (int64_t t = 0; t < n; t++) {
    if (ids[t] < 0 || ids[t] >= vocab_)
      throw std::invalid_argument("token id " + std::to_string(ids[t]) + " is outside the vocabulary (0.." + std::to_string(vocab_ - 1) + ")");
  }
  for (int64_t t = 0; t < n; t++) {
    float* row = out + t * hidden_;
    const int64_t offset = int64_t(ids[t]) * hidden_;
    if (format_ == WeightFormat::F32) {
      std::memcpy(row, full_.data() + offset, static_cast<size_t>(hidden_) * 4);
    } else {
      for (int64_t i = 0; i < hidden_; i++)
        row[i] = format_ == WeightFormat::BF16 ? bf16_to_float(half_[offset + i]) : half_to_float(half_[offset + i]);
    }
  }
}

Head::Head(HeadConfig config, WeightFormat format, int threads) : config_(config), format_(format), pool_(std::max(1, threads)) {
  check_head(config_, format_);
}

Head::~Head() { release_matrix(lm_head_); }

void Head::load(const HeadSources& sources) { set(read_head_tensors(config_, sources)); }

void Head::load_dummy(uint32_t seed) {
  HeadTensors tensors;
  {
    std::lock_guard<std::mutex> lock(compute_mutex_);
    tensors = dummy_head_tensors(config_, seed, pool_);
  }
  set(tensors);
}

void Head::set(const HeadTensors& t) {
  check_tensors(config_, t);
  const int64_t vocab = config_.vocab, hidden = config_.hidden;
  EmbeddingTable embeddings(t.embeddings, vocab, hidden, format_);
  Matrix m;
  m.format = format_;
  m.rows = vocab;
  m.cols = hidden;
  std::vector<uint8_t> data(static_cast<size_t>(weight_format_bytes(format_, vocab, hidden)));
  encode_weights(format_, config_.tied ? t.embeddings.data() : t.lm_head.data(), vocab, hidden, data.data(), nullptr);
  m.data = data.data();
  prepare_matrix(m);
  if (m.packed != nullptr) {
    m.data = nullptr;
    data = {};  // linear() reads only the packed copy
  }
  std::lock_guard<std::mutex> lock(compute_mutex_);
  std::lock_guard<std::mutex> table_lock(table_mutex_);
  release_matrix(lm_head_);
  embeddings_ = std::move(embeddings);
  lm_head_ = m;
  lm_head_data_ = std::move(data);
  if (lm_head_.packed == nullptr) lm_head_.data = lm_head_data_.data();
  final_norm_ = t.final_norm;
  normed_.assign(static_cast<size_t>(hidden), 0.0f);
  loaded_ = true;
}

void Head::embed(const int32_t* ids, int64_t n, float* out) const {
  std::lock_guard<std::mutex> lock(table_mutex_);
  if (!loaded_) throw std::invalid_argument("the head is not loaded");
  embeddings_.lookup(ids, n, out);
}

void Head::logits(const float* hidden, float* out) {
  std::lock_guard<std::mutex> lock(compute_mutex_);
  if (!loaded_) throw std::invalid_argument("the head is not loaded");
  struct Rest {
    ThreadPool& pool;
    ~Rest() { pool.rest(); }
  } rest{pool_};
  rms_norm(hidden, final_norm_.data(), 1, config_.hidden, config_.rms_norm_eps, normed_.data());
  linear(lm_head_, normed_.data(), 1, nullptr, out, pool_);
}

int64_t Head::weight_bytes() const {
  std::lock_guard<std::mutex> lock(table_mutex_);  // set() holds it while it swaps the matrices too
  const int64_t lm_head = lm_head_.packed != nullptr ? lm_head_.packed_bytes : static_cast<int64_t>(lm_head_data_.size());
  return embeddings_.bytes() + lm_head + static_cast<int64_t>(final_norm_.size()) * 4;
}

}  // namespace bmrt
