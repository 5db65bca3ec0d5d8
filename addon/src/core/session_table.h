// The sessions of a block span and their KV-cache budget, shared by the CPU and CUDA spans: ids,
// Petals' per-block budget, and checking a batch of steps before any session changes. What a
// session's cache is (host vectors, device buffers) is the span's own business: `Cache`.
#pragma once
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace bmrt {

// Thrown when a session's KV cache does not fit the span's budget: the client should go elsewhere.
class CacheFullError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One session's step inside a batch: run `tokens` hidden rows at `position`.
struct Step {
  int session = 0;
  int64_t position = -1;  // -1: the session's current length
  int64_t tokens = 0;
  float* hidden = nullptr;  // [tokens, hidden] in, overwritten with the output
};

template <class Cache>
class SessionTable {
 public:
  struct Session {
    int64_t max_length = 0;
    int64_t length = 0;
    int first_layer = 0;  // the session runs the span's layers [first_layer, first_layer + layer_count)
    int layer_count = 0;
    Cache cache;
    int64_t reserved() const { return max_length * layer_count; }  // layer-tokens
  };

  // A checked batch: each step's session and the position its tokens start at.
  struct Batch {
    std::vector<std::shared_ptr<Session>> sessions;
    std::vector<int64_t> starts;
    int64_t total_tokens = 0;
    int first_layer = 0;
    int end_layer = 0;
  };

  // max_cache_tokens: cache tokens per block (Petals' attn_cache_tokens; 0: unlimited). The
  // budget is max_cache_tokens × layers layer-tokens; a session of max_length tokens over k layers
  // reserves max_length × k, so a client passing through two of ten blocks takes a fifth of a full one.
  SessionTable(int layers, int64_t max_cache_tokens) : layers_(layers), max_cache_tokens_(max_cache_tokens) {}

  // Opens a session over layers [first_layer, first_layer + layer_count) (layer_count -1: to the
  // end); `allocate(session)` fills its cache and may throw CacheFullError when memory runs out.
  template <class Allocate>
  int open(int64_t max_length, int first_layer, int layer_count, Allocate allocate) {
    if (max_length <= 0) throw std::invalid_argument("session max length must be positive");
    if (layer_count == -1) layer_count = layers_ - first_layer;
    if (first_layer < 0 || layer_count <= 0 || int64_t(first_layer) + layer_count > layers_)
      throw std::invalid_argument("a session's layers must be a non-empty part of the span's 0:" + std::to_string(layers_) + ", got " +
                                  std::to_string(first_layer) + ":" + std::to_string(int64_t(first_layer) + layer_count));
    auto session = std::make_shared<Session>();
    session->max_length = max_length;
    session->first_layer = first_layer;
    session->layer_count = layer_count;
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t budget = max_cache_tokens_ * layers_;
    if (max_cache_tokens_ > 0 && reserved_ + session->reserved() > budget)
      throw CacheFullError("attention cache full: " + std::to_string(reserved_) + " of " + std::to_string(budget) +
                           " tokens reserved (" + std::to_string(max_cache_tokens_) + " per block x " + std::to_string(layers_) +
                           " blocks); a session of " + std::to_string(max_length) + " tokens over " + std::to_string(layer_count) +
                           " blocks needs " + std::to_string(session->reserved()));
    allocate(*session);
    const int id = next_id_++;
    reserved_ += session->reserved();
    sessions_[id] = std::move(session);
    return id;
  }

  void close(int id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    reserved_ -= it->second->reserved();
    sessions_.erase(it);  // a forward still running on it holds its own reference
  }

  std::shared_ptr<Session> find(int id) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = sessions_.find(id);
    if (it == sessions_.end()) throw std::invalid_argument("unknown or closed session " + std::to_string(id));
    return it->second;
  }

  int size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<int>(sessions_.size());
  }

  int64_t reserved() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return reserved_;
  }

  int64_t max_cache_tokens() const { return max_cache_tokens_; }

  // Checks every step of a batch (hidden rows of `hidden` floats) before any session changes:
  // known sessions, each once, all over the same layers, positions within what is cached and what
  // the session holds, finite inputs. Throws std::invalid_argument naming the problem.
  Batch check(const std::vector<Step>& steps, int64_t hidden) const {
    if (steps.empty()) throw std::invalid_argument("a forward needs at least one step");
    Batch batch;
    for (size_t i = 0; i < steps.size(); i++) {
      const Step& s = steps[i];
      for (size_t j = 0; j < i; j++)
        if (steps[j].session == s.session) throw std::invalid_argument("session " + std::to_string(s.session) + " appears twice in one batch");
      auto session = find(s.session);
      // One batch runs one sequence of layers: every step's tokens go through the same weights.
      if (i > 0 && (session->first_layer != batch.first_layer || session->first_layer + session->layer_count != batch.end_layer))
        throw std::invalid_argument("all sessions in one batch must run the same blocks: session " + std::to_string(s.session) +
                                    " runs layers " + std::to_string(session->first_layer) + ":" +
                                    std::to_string(session->first_layer + session->layer_count) + ", session " +
                                    std::to_string(steps[0].session) + " runs " + std::to_string(batch.first_layer) + ":" +
                                    std::to_string(batch.end_layer));
      if (s.tokens <= 0 || s.hidden == nullptr) throw std::invalid_argument("a step needs at least one token of hidden states");
      const int64_t start = s.position < 0 ? session->length : s.position;
      if (start > session->length)
        throw std::invalid_argument("position " + std::to_string(start) + " is outside the session's " + std::to_string(session->length) + " cached tokens");
      if (start + s.tokens > session->max_length)
        throw std::invalid_argument("session holds at most " + std::to_string(session->max_length) + " tokens; " + std::to_string(start) +
                                    " cached + " + std::to_string(s.tokens) + " new would exceed it");
      for (int64_t k = 0; k < s.tokens * hidden; k++)
        if (!std::isfinite(s.hidden[k])) throw std::invalid_argument("hidden states contain NaN or infinite values");
      if (i == 0) {
        batch.first_layer = session->first_layer;
        batch.end_layer = session->first_layer + session->layer_count;
      }
      batch.sessions.push_back(std::move(session));
      batch.starts.push_back(start);
      batch.total_tokens += s.tokens;
    }
    return batch;
  }

 private:
  const int layers_;
  const int64_t max_cache_tokens_;
  std::map<int, std::shared_ptr<Session>> sessions_;
  int next_id_ = 1;
  int64_t reserved_ = 0;  // layer-tokens
  mutable std::mutex mutex_;
};

}  // namespace bmrt
