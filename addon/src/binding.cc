// The N-API shell around the core (core/span.h and core/head.h, and cuda/ when built with CUDA):
// JS values in, typed arrays out, every forward, logits and weight load on a libuv worker thread
// so the event loop keeps running. Errors become JS exceptions with a `code`: CACHE_FULL (go
// elsewhere), INVALID_ARGUMENT (the caller's fault) or INTERNAL. The CPU and CUDA spans have the
// same class interface, so one template wraps either (JS sees `BlockSpan` and `CudaBlockSpan`);
// likewise the heads (`Head`, `CudaHead`).
#include <napi.h>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/dummy.h"
#include "core/head.h"
#include "core/kernels.h"
#include "core/span.h"
#ifdef BMRT_WITH_CUDA
#include "cuda/cuda_head.h"
#include "cuda/cuda_span.h"
#endif

namespace {

struct ErrorInfo {
  std::string code;
  std::string message;
};

ErrorInfo describe(const std::exception& e) {
  if (dynamic_cast<const bmrt::CacheFullError*>(&e)) return {"CACHE_FULL", e.what()};
  if (dynamic_cast<const std::invalid_argument*>(&e)) return {"INVALID_ARGUMENT", e.what()};
  return {"INTERNAL", e.what()};
}

Napi::Error make_error(Napi::Env env, const ErrorInfo& info) {
  Napi::Error error = Napi::Error::New(env, info.message);
  error.Set("code", Napi::String::New(env, info.code));
  return error;
}

[[noreturn]] void throw_invalid(Napi::Env env, const std::string& message) {
  throw make_error(env, {"INVALID_ARGUMENT", message});
}

bmrt::WeightFormat parse_format(Napi::Env env, const std::string& name) {
  if (name == "f32") return bmrt::WeightFormat::F32;
  if (name == "bf16") return bmrt::WeightFormat::BF16;
  if (name == "f16") return bmrt::WeightFormat::F16;
  if (name == "int8") return bmrt::WeightFormat::Q8;
  if (name == "int4") return bmrt::WeightFormat::Q4;
  throw_invalid(env, "unknown weight format '" + name + "': use f32, bf16, f16, int8 or int4");
}

// A stored dtype by bmrt's name for it (src/inference/dtype.ts: f32, bf16, f16).
bmrt::SourceDType parse_dtype(Napi::Env env, const std::string& name, const std::string& what) {
  if (name == "f32") return bmrt::SourceDType::F32;
  if (name == "bf16") return bmrt::SourceDType::BF16;
  if (name == "f16") return bmrt::SourceDType::F16;
  throw_invalid(env, what + " must be f32, bf16 or f16, got " + name);
}

int64_t integer(Napi::Env env, const Napi::Object& o, const char* key, int64_t fallback, bool required) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) {
    if (required) throw_invalid(env, std::string("missing option ") + key);
    return fallback;
  }
  if (!v.IsNumber()) throw_invalid(env, std::string(key) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d))) throw_invalid(env, std::string(key) + " must be an integer");
  return static_cast<int64_t>(d);
}

// { path, offset, bytes, dtype: 'f32' | 'bf16' | 'f16' }: where a tensor's bytes are in a file.
bmrt::TensorSource parse_source(Napi::Env env, const Napi::Value& value) {
  if (!value.IsObject()) throw_invalid(env, "a tensor source must be an object { path, offset, bytes, dtype }");
  Napi::Object s = value.As<Napi::Object>();
  if (!s.Get("path").IsString()) throw_invalid(env, "tensor source needs a path");
  bmrt::TensorSource source;
  source.path = s.Get("path").As<Napi::String>().Utf8Value();
  source.offset = static_cast<uint64_t>(integer(env, s, "offset", 0, true));
  source.bytes = static_cast<uint64_t>(integer(env, s, "bytes", 0, true));
  source.dtype = parse_dtype(env, s.Get("dtype").ToString().Utf8Value(), "tensor source dtype");
  return source;
}

// A dummy-weight seed: an integer in 0 .. 2^32 - 1.
uint32_t parse_seed(Napi::Env env, const Napi::Value& value) {
  const double d = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0 && d <= 4294967295.0) || d != std::floor(d)) throw_invalid(env, "a dummy-weight seed must be an integer in 0..2^32-1");
  return static_cast<uint32_t>(d);
}

// Runs a job on a libuv worker thread and settles a promise with its result.
class Job : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  using Result = std::function<Napi::Value(Napi::Env)>;
  Job(Napi::Env env, Work work, Result result)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)), result_(std::move(result)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      work_();
    } catch (const std::exception& e) {
      error_ = describe(e);
      SetError(error_.message);
    }
  }
  void OnOK() override { deferred_.Resolve(result_(Env())); }
  void OnError(const Napi::Error&) override { deferred_.Reject(make_error(Env(), error_).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Work work_;
  Result result_;
  ErrorInfo error_;
};

// Queues `work` on a worker thread; the promise resolves with result(env) (undefined by default).
Napi::Promise queue(Napi::Env env, Job::Work work, Job::Result result = [](Napi::Env e) { return e.Undefined(); }) {
  auto* job = new Job(env, std::move(work), std::move(result));
  Napi::Promise promise = job->promise();
  job->Queue();
  return promise;
}

// The CPU span takes a thread count, the CUDA span a device index.
std::shared_ptr<bmrt::BlockSpan> make_core(bmrt::BlockSpan*, bmrt::BlockConfig c, int layers, bmrt::WeightFormat f, int64_t max_cache,
                                           Napi::Env env, const Napi::Object& o) {
  return std::make_shared<bmrt::BlockSpan>(std::move(c), layers, f, static_cast<int>(integer(env, o, "threads", 1, false)), max_cache);
}
#ifdef BMRT_WITH_CUDA
std::shared_ptr<bmrt::CudaBlockSpan> make_core(bmrt::CudaBlockSpan*, bmrt::BlockConfig c, int layers, bmrt::WeightFormat f, int64_t max_cache,
                                               Napi::Env env, const Napi::Object& o) {
  return std::make_shared<bmrt::CudaBlockSpan>(std::move(c), layers, f, static_cast<int>(integer(env, o, "device", 0, false)), max_cache);
}
std::string device_name(const bmrt::CudaBlockSpan& s) { return "cuda:" + std::to_string(s.device()); }
#endif
std::string device_name(const bmrt::BlockSpan&) { return "cpu"; }
// The CPU span's forward workspace between forwards, in host memory; the CUDA span's is on the device.
void set_workspace_bytes(Napi::Object& o, const bmrt::BlockSpan& s) { o.Set("workspaceBytes", static_cast<double>(s.workspace_bytes())); }
#ifdef BMRT_WITH_CUDA
void set_workspace_bytes(Napi::Object&, const bmrt::CudaBlockSpan&) {}
#endif

template <class Core>
class Span : public Napi::ObjectWrap<Span<Core>> {
  using Base = Napi::ObjectWrap<Span<Core>>;

 public:
  static Napi::Function Define(Napi::Env env, const char* name) {
    return Base::DefineClass(env, name, {
      Base::InstanceMethod("loadLayer", &Span::LoadLayer),
      Base::InstanceMethod("loadDummyLayer", &Span::LoadDummyLayer),
      Base::InstanceMethod("setLayer", &Span::SetLayer),
      Base::InstanceMethod("openSession", &Span::OpenSession),
      Base::InstanceMethod("closeSession", &Span::CloseSession),
      Base::InstanceMethod("sessionLength", &Span::SessionLength),
      Base::InstanceMethod("forward", &Span::Forward),
      Base::InstanceMethod("stats", &Span::Stats),
      Base::InstanceMethod("close", &Span::Close),
    });
  }

  // new BlockSpan({ hidden, intermediate, heads, kvHeads, headDim, rmsNormEps, ropeInverseFrequencies,
  //                 slidingWindow, attentionBias, mlpBias, layers, format, threads, maxCacheTokens })
  // new CudaBlockSpan({ ... the same, with device instead of threads })
  explicit Span(const Napi::CallbackInfo& info) : Base(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw_invalid(env, "BlockSpan needs an options object");
    Napi::Object o = info[0].As<Napi::Object>();
    bmrt::BlockConfig c;
    c.hidden = static_cast<int>(integer(env, o, "hidden", 0, true));
    c.intermediate = static_cast<int>(integer(env, o, "intermediate", 0, true));
    c.heads = static_cast<int>(integer(env, o, "heads", 0, true));
    c.kv_heads = static_cast<int>(integer(env, o, "kvHeads", c.heads, false));
    c.head_dim = static_cast<int>(integer(env, o, "headDim", 0, true));
    c.sliding_window = static_cast<int>(integer(env, o, "slidingWindow", 0, false));
    c.attention_bias = o.Get("attentionBias").ToBoolean();
    c.mlp_bias = o.Get("mlpBias").ToBoolean();
    Napi::Value eps = o.Get("rmsNormEps");
    c.rms_norm_eps = eps.IsNumber() ? eps.As<Napi::Number>().FloatValue() : 1e-5f;
    Napi::Value inv = o.Get("ropeInverseFrequencies");
    if (!inv.IsTypedArray() || inv.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw_invalid(env, "ropeInverseFrequencies must be a Float32Array");
    Napi::Float32Array freqs = inv.As<Napi::Float32Array>();
    c.rope_inverse_frequencies.assign(freqs.Data(), freqs.Data() + freqs.ElementLength());
    Napi::Value format = o.Get("format");
    bmrt::WeightFormat f = parse_format(env, format.IsString() ? format.As<Napi::String>().Utf8Value() : "f32");
    int layers = static_cast<int>(integer(env, o, "layers", 0, true));
    int64_t max_cache = integer(env, o, "maxCacheTokens", 0, false);
    try {
      span_ = make_core(static_cast<Core*>(nullptr), std::move(c), layers, f, max_cache, env, o);
    } catch (const std::exception& e) {
      throw make_error(env, describe(e));
    }
  }

 private:
  std::shared_ptr<Core> span(Napi::Env env) {
    if (!span_) throw make_error(env, {"INVALID_ARGUMENT", "this block span is closed"});
    return span_;
  }

  int layer_index(const Napi::CallbackInfo& info) {
    if (!info[0].IsNumber()) throw_invalid(info.Env(), "layer index must be a number");
    int layer = info[0].As<Napi::Number>().Int32Value();
    if (layer < 0 || layer >= span(info.Env())->layers()) throw_invalid(info.Env(), "layer index out of range");
    return layer;
  }

  // loadLayer(index, sources): sources[i] is { path, offset, bytes, dtype: 'f32'|'bf16'|'f16' } or null,
  // indexed like bmrt::LayerTensor. Reads and converts on a worker thread; returns a promise.
  Napi::Value LoadLayer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int layer = layer_index(info);
    if (!info[1].IsArray()) throw_invalid(env, "loadLayer needs an array of tensor sources");
    Napi::Array list = info[1].As<Napi::Array>();
    if (list.Length() != static_cast<uint32_t>(bmrt::LayerTensor::Count)) throw_invalid(env, "loadLayer needs one source per block tensor");
    std::vector<bmrt::TensorSource> sources(list.Length());
    for (uint32_t i = 0; i < list.Length(); i++) {
      Napi::Value item = list.Get(i);
      if (!item.IsNull() && !item.IsUndefined()) sources[i] = parse_source(env, item);
    }
    auto target = span(env);
    return queue(env, [target, layer, sources]() { target->load_layer(layer, sources); });
  }

  // loadDummyLayer(index, block, seed): the dummy weights of the model's block `block` (see
  // core/dummy.h), made on a worker thread (on the GPU for the CUDA span); returns a promise.
  Napi::Value LoadDummyLayer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const int layer = layer_index(info);
    if (!info[1].IsNumber()) throw_invalid(env, "loadDummyLayer needs the model's block index");
    const int block = info[1].As<Napi::Number>().Int32Value();
    if (block < 0) throw_invalid(env, "the block index must not be negative");
    const uint32_t seed = parse_seed(env, info[2]);
    auto target = span(env);
    return queue(env, [target, layer, block, seed]() { target->load_dummy_layer(layer, block, seed); });
  }

  // setLayer(index, tensors): fp32 values (Float32Array or null per block tensor); synchronous.
  Napi::Value SetLayer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int layer = layer_index(info);
    if (!info[1].IsArray()) throw_invalid(env, "setLayer needs an array of Float32Arrays");
    Napi::Array list = info[1].As<Napi::Array>();
    std::vector<std::vector<float>> tensors(list.Length());
    for (uint32_t i = 0; i < list.Length(); i++) {
      Napi::Value item = list.Get(i);
      if (item.IsNull() || item.IsUndefined()) continue;
      if (!item.IsTypedArray() || item.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
        throw_invalid(env, "setLayer tensors must be Float32Arrays or null");
      Napi::Float32Array a = item.As<Napi::Float32Array>();
      tensors[i].assign(a.Data(), a.Data() + a.ElementLength());
    }
    try {
      span(env)->set_layer(layer, tensors);
    } catch (const std::exception& e) {
      throw make_error(env, describe(e));
    }
    return env.Undefined();
  }

  // openSession(maxLength, firstLayer = 0, layerCount = to the end): layers relative to the span.
  Napi::Value OpenSession(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsNumber()) throw_invalid(env, "openSession needs a max length");
    double max_length = info[0].As<Napi::Number>().DoubleValue();
    if (!(max_length >= 1) || max_length != static_cast<double>(static_cast<int64_t>(max_length)))
      throw_invalid(env, "session max length must be a positive integer");
    auto optional_int = [&](size_t i, const char* name, int fallback) {
      if (info[i].IsUndefined()) return fallback;
      double d = info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : 0.5;
      // Checked before the cast (out-of-range casts are undefined); open_session checks the range.
      if (!(std::fabs(d) <= 1e9) || d != std::floor(d)) throw_invalid(env, std::string(name) + " must be an integer");
      return static_cast<int>(d);
    };
    const int first_layer = optional_int(1, "firstLayer", 0);
    const int layer_count = optional_int(2, "layerCount", -1);
    try {
      return Napi::Number::New(env, span(env)->open_session(static_cast<int64_t>(max_length), first_layer, layer_count));
    } catch (const std::exception& e) {
      throw make_error(env, describe(e));
    }
  }

  Napi::Value CloseSession(const Napi::CallbackInfo& info) {
    if (span_ && info[0].IsNumber()) span_->close_session(info[0].As<Napi::Number>().Int32Value());
    return info.Env().Undefined();
  }

  Napi::Value SessionLength(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsNumber()) throw_invalid(env, "sessionLength needs a session id");
    try {
      return Napi::Number::New(env, static_cast<double>(span(env)->session_length(info[0].As<Napi::Number>().Int32Value())));
    } catch (const std::exception& e) {
      throw make_error(env, describe(e));
    }
  }

  // forward([{ session, hidden: Float32Array, position? }, ...]) → Promise<Float32Array[]>: one
  // batch, every step a different session.
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsArray()) throw_invalid(env, "forward needs an array of steps");
    auto target = span(env);
    Napi::Array list = info[0].As<Napi::Array>();
    const int64_t hidden = target->config().hidden;
    auto buffers = std::make_shared<std::vector<std::vector<float>>>(list.Length());
    auto steps = std::make_shared<std::vector<bmrt::Step>>(list.Length());
    for (uint32_t i = 0; i < list.Length(); i++) {
      if (!list.Get(i).IsObject()) throw_invalid(env, "each step must be an object");
      Napi::Object s = list.Get(i).As<Napi::Object>();
      Napi::Value h = s.Get("hidden");
      if (!h.IsTypedArray() || h.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
        throw_invalid(env, "step hidden states must be a Float32Array");
      Napi::Float32Array a = h.As<Napi::Float32Array>();
      if (a.ElementLength() == 0 || a.ElementLength() % hidden != 0)
        throw_invalid(env, "hidden states must be [tokens, " + std::to_string(hidden) + "] floats, got " +
                               std::to_string(a.ElementLength()) + " values");
      (*buffers)[i].assign(a.Data(), a.Data() + a.ElementLength());  // JS may reuse its array meanwhile
      bmrt::Step& step = (*steps)[i];
      step.session = static_cast<int>(integer(env, s, "session", 0, true));
      step.position = integer(env, s, "position", -1, false);
      step.tokens = static_cast<int64_t>(a.ElementLength()) / hidden;
      step.hidden = (*buffers)[i].data();
    }
    return queue(env, [target, steps]() { target->forward(*steps); }, [buffers](Napi::Env e) {
      Napi::Array out = Napi::Array::New(e, buffers->size());
      for (size_t i = 0; i < buffers->size(); i++) {
        auto& b = (*buffers)[i];
        Napi::Float32Array a = Napi::Float32Array::New(e, b.size());
        std::copy(b.begin(), b.end(), a.Data());
        out.Set(static_cast<uint32_t>(i), a);
      }
      return out;
    });
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto s = span(env);
    Napi::Object o = Napi::Object::New(env);
    o.Set("weightBytes", static_cast<double>(s->weight_bytes()));
    o.Set("cacheBytesPerToken", static_cast<double>(s->cache_bytes_per_token()));
    o.Set("layers", s->layers());
    o.Set("cacheLayerTokensReserved", static_cast<double>(s->cache_layer_tokens_reserved()));
    o.Set("maxCacheTokens", static_cast<double>(s->max_cache_tokens()));  // per block
    o.Set("sessions", s->sessions());
    o.Set("format", bmrt::weight_format_name(s->format()));
    o.Set("device", device_name(*s));
    set_workspace_bytes(o, *s);
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    span_.reset();  // running jobs keep their own reference until they finish
    return info.Env().Undefined();
  }

  std::shared_ptr<Core> span_;
};

// The CPU head takes a thread count, the CUDA head a device index.
std::shared_ptr<bmrt::Head> make_head(bmrt::Head*, bmrt::HeadConfig c, bmrt::WeightFormat f, Napi::Env env, const Napi::Object& o) {
  return std::make_shared<bmrt::Head>(c, f, static_cast<int>(integer(env, o, "threads", 1, false)));
}
std::string head_device(const bmrt::Head&) { return "cpu"; }
#ifdef BMRT_WITH_CUDA
std::shared_ptr<bmrt::CudaHead> make_head(bmrt::CudaHead*, bmrt::HeadConfig c, bmrt::WeightFormat f, Napi::Env env, const Napi::Object& o) {
  return std::make_shared<bmrt::CudaHead>(c, f, static_cast<int>(integer(env, o, "device", 0, false)));
}
std::string head_device(const bmrt::CudaHead& h) { return "cuda:" + std::to_string(h.device()); }
#endif

template <class Core>
class HeadWrap : public Napi::ObjectWrap<HeadWrap<Core>> {
  using Base = Napi::ObjectWrap<HeadWrap<Core>>;

 public:
  static Napi::Function Define(Napi::Env env, const char* name) {
    return Base::DefineClass(env, name, {
      Base::InstanceMethod("load", &HeadWrap::Load),
      Base::InstanceMethod("loadDummy", &HeadWrap::LoadDummy),
      Base::InstanceMethod("embed", &HeadWrap::Embed),
      Base::InstanceMethod("logits", &HeadWrap::Logits),
      Base::InstanceMethod("stats", &HeadWrap::Stats),
      Base::InstanceMethod("close", &HeadWrap::Close),
    });
  }

  // new Head({ vocab, hidden, rmsNormEps, tied, format, threads }), new CudaHead({ ..., device })
  explicit HeadWrap(const Napi::CallbackInfo& info) : Base(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw_invalid(env, "Head needs an options object");
    Napi::Object o = info[0].As<Napi::Object>();
    bmrt::HeadConfig c;
    c.vocab = static_cast<int>(integer(env, o, "vocab", 0, true));
    c.hidden = static_cast<int>(integer(env, o, "hidden", 0, true));
    Napi::Value eps = o.Get("rmsNormEps");
    c.rms_norm_eps = eps.IsNumber() ? eps.As<Napi::Number>().FloatValue() : 1e-5f;
    c.tied = o.Get("tied").ToBoolean();
    Napi::Value format = o.Get("format");
    const bmrt::WeightFormat f = parse_format(env, format.IsString() ? format.As<Napi::String>().Utf8Value() : "f32");
    try {
      head_ = make_head(static_cast<Core*>(nullptr), c, f, env, o);
    } catch (const std::exception& e) {
      throw make_error(env, describe(e));
    }
  }

 private:
  std::shared_ptr<Core> head(Napi::Env env) {
    if (!head_) throw make_error(env, {"INVALID_ARGUMENT", "this head is closed"});
    return head_;
  }

  // load({ embeddings, finalNorm, lmHead }): tensor sources (lmHead ignored when tied) → promise.
  Napi::Value Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw_invalid(env, "load needs { embeddings, finalNorm, lmHead }");
    Napi::Object o = info[0].As<Napi::Object>();
    auto target = head(env);
    bmrt::HeadSources sources;
    sources.embeddings = parse_source(env, o.Get("embeddings"));
    sources.final_norm = parse_source(env, o.Get("finalNorm"));
    if (!target->config().tied) sources.lm_head = parse_source(env, o.Get("lmHead"));
    return queue(env, [target, sources]() { target->load(sources); });
  }

  // loadDummy(seed) → promise: the dummy head of core/dummy.h.
  Napi::Value LoadDummy(const Napi::CallbackInfo& info) {
    auto target = head(info.Env());
    const uint32_t seed = parse_seed(info.Env(), info[0]);
    return queue(info.Env(), [target, seed]() { target->load_dummy(seed); });
  }

  // embed(ids: Int32Array) → Float32Array [ids.length, hidden], synchronous (a row copy per id).
  Napi::Value Embed(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw_invalid(env, "embed needs an Int32Array of token ids");
    Napi::Int32Array ids = info[0].As<Napi::Int32Array>();
    auto target = head(env);
    Napi::Float32Array out = Napi::Float32Array::New(env, ids.ElementLength() * static_cast<size_t>(target->config().hidden));
    try {
      target->embed(ids.Data(), static_cast<int64_t>(ids.ElementLength()), out.Data());
    } catch (const std::exception& e) {
      throw make_error(env, describe(e));
    }
    return out;
  }

  // logits(hidden: Float32Array [n, hidden]) → Promise<Float32Array [vocab]> of the last row.
  Napi::Value Logits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto target = head(env);
    const size_t hidden = static_cast<size_t>(target->config().hidden);
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw_invalid(env, "logits needs a Float32Array of hidden states");
    Napi::Float32Array a = info[0].As<Napi::Float32Array>();
    if (a.ElementLength() == 0 || a.ElementLength() % hidden != 0)
      throw_invalid(env, "hidden states must be [tokens, " + std::to_string(hidden) + "] floats, got " + std::to_string(a.ElementLength()) + " values");
    auto row = std::make_shared<std::vector<float>>(a.Data() + a.ElementLength() - hidden, a.Data() + a.ElementLength());
    auto logits = std::make_shared<std::vector<float>>(static_cast<size_t>(target->config().vocab));
    return queue(env, [target, row, logits]() { target->logits(row->data(), logits->data()); }, [logits](Napi::Env e) {
      Napi::Float32Array out = Napi::Float32Array::New(e, logits->size());
      std::copy(logits->begin(), logits->end(), out.Data());
      return out;
    });
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto h = head(env);
    Napi::Object o = Napi::Object::New(env);
    o.Set("weightBytes", static_cast<double>(h->weight_bytes()));
    o.Set("format", bmrt::weight_format_name(h->format()));
    o.Set("device", head_device(*h));
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    head_.reset();  // running jobs keep their own reference until they finish
    return info.Env().Undefined();
  }

  std::shared_ptr<Core> head_;
};

Napi::Value KernelFamily(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), bmrt::cpu_kernel_family());
}

Napi::Value ForceKernelFamily(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), bmrt::force_kernel_family(info[0].ToString().Utf8Value()));
}

// probe(kind, threads, seconds) → Promise<number>: 'bandwidth' (bytes/s), 'fma' or 'bf16' (FLOP/s).
Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string kind = info[0].ToString().Utf8Value();
  if (kind != "bandwidth" && kind != "fma" && kind != "bf16") throw_invalid(env, "probe kind must be bandwidth, fma or bf16");
  int threads = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 1;
  double seconds = info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : 1.0;
  auto result = std::make_shared<double>(0);
  return queue(env,
               [kind, threads, seconds, result]() {
                 bmrt::ThreadPool pool(std::max(1, threads));
                 if (kind == "bandwidth") *result = bmrt::measure_read_bandwidth(pool, seconds);
                 else if (kind == "fma") *result = bmrt::measure_fma_peak(pool, seconds);
                 else *result = bmrt::measure_bf16_peak(pool, seconds);
               },
               [result](Napi::Env e) { return Napi::Number::New(e, *result); });
}

// dummyTensor(seed, stream, scale, offset, count, dtype) → Promise<Uint8Array>: `count` dummy
// values (core/dummy.h) stored as f32, bf16 or f16 bytes, made on all cores (bmrt make-test-model).
Napi::Value DummyTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint32_t seed = parse_seed(env, info[0]);
  const uint32_t stream = parse_seed(env, info[1]);
  if (!info[2].IsNumber() || !info[3].IsNumber() || !info[4].IsNumber()) throw_invalid(env, "dummyTensor needs scale, offset and count numbers");
  const bmrt::DummyInit init{info[2].As<Napi::Number>().FloatValue(), info[3].As<Napi::Number>().FloatValue()};
  const double count = info[4].As<Napi::Number>().DoubleValue();
  if (!(count >= 0 && count <= 4e9) || count != std::floor(count)) throw_invalid(env, "dummyTensor's count must be an integer in 0..4e9");
  const bmrt::SourceDType stored = parse_dtype(env, info[5].ToString().Utf8Value(), "dummyTensor's dtype");
  const int64_t n = static_cast<int64_t>(count);
  auto bytes = std::make_shared<std::vector<uint8_t>>();
  return queue(env,
               [seed, stream, init, n, stored, bytes]() {
                 bmrt::ThreadPool pool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
                 bytes->resize(static_cast<size_t>(n) * bmrt::source_element_bytes(stored));
                 bmrt::fill_dummy_bytes(bmrt::dummy_key(seed, stream), init, stored, bytes->data(), n, pool);
               },
               [bytes](Napi::Env e) {
                 Napi::Uint8Array out = Napi::Uint8Array::New(e, bytes->size());
                 std::copy(bytes->begin(), bytes->end(), out.Data());
                 return out;
               });
}

#ifdef BMRT_WITH_CUDA
// cudaFreeBytes(device) → free memory on that device now.
Napi::Value CudaFreeBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw_invalid(env, "cudaFreeBytes needs a device index");
  try {
    return Napi::Number::New(env, static_cast<double>(bmrt::cuda_free_bytes(info[0].As<Napi::Number>().Int32Value())));
  } catch (const std::exception& e) {
    throw make_error(env, describe(e));
  }
}

// cudaDevices() → [{ name, major, minor, totalBytes }]: empty without a driver or GPU.
Napi::Value CudaDevices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto devices = bmrt::cuda_devices();
  Napi::Array out = Napi::Array::New(env, devices.size());
  for (size_t i = 0; i < devices.size(); i++) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("name", devices[i].name);
    d.Set("major", devices[i].major);
    d.Set("minor", devices[i].minor);
    d.Set("totalBytes", static_cast<double>(devices[i].total_bytes));
    out.Set(static_cast<uint32_t>(i), d);
  }
  return out;
}
#endif

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("BlockSpan", Span<bmrt::BlockSpan>::Define(env, "BlockSpan"));
  exports.Set("Head", HeadWrap<bmrt::Head>::Define(env, "Head"));
  exports.Set("dummyTensor", Napi::Function::New(env, DummyTensor));
#ifdef BMRT_WITH_CUDA
  exports.Set("CudaBlockSpan", Span<bmrt::CudaBlockSpan>::Define(env, "CudaBlockSpan"));
  exports.Set("CudaHead", HeadWrap<bmrt::CudaHead>::Define(env, "CudaHead"));
  exports.Set("cudaDevices", Napi::Function::New(env, CudaDevices));
  exports.Set("cudaFreeBytes", Napi::Function::New(env, CudaFreeBytes));
#endif
  exports.Set("kernelFamily", Napi::Function::New(env, KernelFamily));
  exports.Set("forceKernelFamily", Napi::Function::New(env, ForceKernelFamily));
  exports.Set("probe", Napi::Function::New(env, Probe));
  return exports;
}

}  // namespace

NODE_API_MODULE(bmrt, Init)
