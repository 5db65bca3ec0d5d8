// The CPU emulator's runtime (see cuda_emulator.h): fibers for the threads of a block, and the
// CUDA runtime and cuBLAS functions bmrt calls, on host memory. Only the emulated test programs
// link it; the Node addon never does.
#include "cuda_emulator.h"

#include <cublas_v2.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace bmrt::cuda::emulator {

uint3 thread_index, block_index;
dim3 block_dim, grid_dim;

namespace {

// ---------------------------------------------------------------------------------------------
// Fibers: the threads of one block.

constexpr size_t kStackBytes = 64 * 1024;
constexpr int kMaxThreads = 1024;

// Saves the callee-saved registers on the current stack, stores its pointer in *save, switches to
// the stack at `load` and restores the registers saved there (System V x86-64). Ten times and more
// cheaper than swapcontext, which asks the kernel for the signal mask at every switch: the
// attention tests switch fibers a few hundred million times.
extern "C" void bmrt_emulator_switch(void** save, void* load);
asm(R"(
  .text
  .globl bmrt_emulator_switch
  .hidden bmrt_emulator_switch
  .type bmrt_emulator_switch, @function
bmrt_emulator_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size bmrt_emulator_switch, .-bmrt_emulator_switch
  .section .note.GNU-stack, "", @progbits
  .text
)");

enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
  void* stack_pointer = nullptr;
  uint3 index;
  State state = State::Done;
};

struct Scheduler {
  void* main = nullptr;  // the scheduler's stack pointer while a fiber runs
  std::vector<Fiber> fibers = std::vector<Fiber>(kMaxThreads);
  std::vector<std::unique_ptr<char[]>> stacks;
  Fiber* current = nullptr;
  const std::function<void()>* kernel = nullptr;
  float warp_slots[kMaxThreads / 32][32];
};

Scheduler& scheduler() {
  static Scheduler s;
  return s;
}

std::mutex launch_mutex;  // one launch at a time: the fibers share the scheduler and shared memory

// A fiber's first frame: runs the kernel, then hands control back for good.
[[noreturn]] void fiber_entry() {
  Scheduler& s = scheduler();
  (*s.kernel)();
  s.current->state = State::Done;
  bmrt_emulator_switch(&s.current->stack_pointer, s.main);
  std::abort();  // a finished fiber is never resumed
}

void wait(State why) {
  Scheduler& s = scheduler();
  Fiber* self = s.current;
  self->state = why;
  bmrt_emulator_switch(&self->stack_pointer, s.main);
}

// A new fiber's stack: six zero registers, then fiber_entry as the return address, aligned so
// that fiber_entry starts as if called.
void* fresh_stack(char* stack) {
  auto top = reinterpret_cast<uintptr_t>(stack + kStackBytes) & ~uintptr_t(15);
  auto* slot = reinterpret_cast<void**>(top);
  *--slot = nullptr;                                       // fiber_entry's own return address (never used)
  *--slot = reinterpret_cast<void*>(&fiber_entry);         // where the first switch returns to
  for (int r = 0; r < 6; r++) *--slot = nullptr;           // rbp, rbx, r12..r15
  return slot;
}

void run_block(unsigned threads) {
  Scheduler& s = scheduler();
  while (s.stacks.size() < threads) s.stacks.push_back(std::make_unique<char[]>(kStackBytes));
  for (unsigned t = 0; t < threads; t++) {
    Fiber& f = s.fibers[t];
    f.stack_pointer = fresh_stack(s.stacks[t].get());
    f.index = {t, 0, 0};
    f.state = State::Ready;
  }
  for (;;) {
    for (unsigned t = 0; t < threads; t++) {
      Fiber& f = s.fibers[t];
      if (f.state != State::Ready) continue;
      s.current = &f;
      thread_index = f.index;
      bmrt_emulator_switch(&s.main, f.stack_pointer);
    }
    // Every thread has finished or waits at a barrier: open the barriers that all live threads reached.
    bool live = false, all_at_block = true, released = false;
    for (unsigned t = 0; t < threads; t++) {
      if (s.fibers[t].state == State::Done) continue;
      live = true;
      all_at_block = all_at_block && s.fibers[t].state == State::AtBlockBarrier;
    }
    if (!live) return;
    if (all_at_block) {
      for (unsigned t = 0; t < threads; t++)
        if (s.fibers[t].state == State::AtBlockBarrier) s.fibers[t].state = State::Ready;
      continue;
    }
    for (unsigned w = 0; w * 32 < threads; w++) {
      bool any = false, all = true;
      for (unsigned t = w * 32; t < std::min(threads, w * 32 + 32); t++) {
        if (s.fibers[t].state == State::Done) continue;
        any = true;
        all = all && s.fibers[t].state == State::AtWarpBarrier;
      }
      if (!any || !all) continue;
      for (unsigned t = w * 32; t < std::min(threads, w * 32 + 32); t++)
        if (s.fibers[t].state == State::AtWarpBarrier) s.fibers[t].state = State::Ready;
      released = true;
    }
    if (!released) {
      std::fprintf(stderr, "CUDA emulator: the threads of block %u wait at different barriers (a divergent __syncthreads or shuffle)\n", block_index.x);
      std::abort();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Streams: work runs at once, unless the stream is capturing a graph.

using Operation = std::function<void()>;

struct Graph {
  std::vector<Operation> operations;
};

struct Stream {
  std::unique_ptr<Graph> capture;
};

Stream default_stream;

Stream& stream_of(cudaStream_t stream) { return stream == nullptr ? default_stream : *reinterpret_cast<Stream*>(stream); }

// Runs `operation` now, or records it when `stream` captures.
void submit(cudaStream_t stream, Operation operation) {
  Stream& s = stream_of(stream);
  if (s.capture) s.capture->operations.push_back(std::move(operation));
  else operation();
}

}  // namespace

void launch(dim3 grid, dim3 block, cudaStream_t stream, std::function<void()> kernel) {
  if (grid.y != 1 || grid.z != 1 || block.y != 1 || block.z != 1 || block.x == 0 || block.x > kMaxThreads || grid.x == 0) {
    std::fprintf(stderr, "CUDA emulator: a launch of %u x %u x %u blocks of %u x %u x %u threads (bmrt launches 1-D grids of 1..1024 threads)\n",
                 grid.x, grid.y, grid.z, block.x, block.y, block.z);
    std::abort();
  }
  submit(stream, [grid, block, kernel = std::move(kernel)] {
    std::lock_guard<std::mutex> lock(launch_mutex);
    Scheduler& s = scheduler();
    s.kernel = &kernel;
    grid_dim = grid;
    block_dim = block;
    for (unsigned b = 0; b < grid.x; b++) {
      block_index = {b, 0, 0};
      run_block(block.x);
    }
  });
}

void sync_block() { wait(State::AtBlockBarrier); }

float shuffle_xor(float value, int lane_mask) {
  Scheduler& s = scheduler();
  const unsigned t = s.current->index.x, warp = t / 32, lane = t % 32;
  s.warp_slots[warp][lane] = value;
  wait(State::AtWarpBarrier);  // every lane has written
  const float other = s.warp_slots[warp][lane ^ static_cast<unsigned>(lane_mask)];
  wait(State::AtWarpBarrier);  // every lane has read before any writes again
  return other;
}

}  // namespace bmrt::cuda::emulator

// -------------------------------------------------------------------------------------------------
// The CUDA runtime functions bmrt calls.

using bmrt::cuda::emulator::Graph;
using bmrt::cuda::emulator::Stream;
using bmrt::cuda::emulator::stream_of;
using bmrt::cuda::emulator::submit;

namespace {

constexpr size_t kDeviceBytes = size_t(16) << 30;
std::mutex memory_mutex;
std::map<void*, size_t> allocations;
size_t allocated = 0;

struct Event {
  std::chrono::steady_clock::time_point time;
};

}  // namespace

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int) {
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "bmrt CUDA emulator (CPU)");
  prop->major = 9;
  prop->minor = 0;
  prop->totalGlobalMem = kDeviceBytes;
  prop->multiProcessorCount = 1;
  prop->warpSize = 32;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaGetLastError() { return cudaSuccess; }

const char* cudaGetErrorString(cudaError_t error) { return error == cudaSuccess ? "no error" : "an error (CUDA emulator)"; }

cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

cudaError_t cudaMalloc(void** pointer, size_t bytes) {
  std::lock_guard<std::mutex> lock(memory_mutex);
  if (allocated + bytes > kDeviceBytes || posix_memalign(pointer, 256, std::max<size_t>(bytes, 1)) != 0) return cudaErrorMemoryAllocation;
  // Fresh device memory holds whatever was there: NaN bytes make a read before a write show.
  std::memset(*pointer, 0xff, bytes);
  allocations[*pointer] = bytes;
  allocated += bytes;
  return cudaSuccess;
}

cudaError_t cudaFree(void* pointer) {
  if (pointer == nullptr) return cudaSuccess;
  std::lock_guard<std::mutex> lock(memory_mutex);
  auto it = allocations.find(pointer);
  if (it == allocations.end()) return cudaErrorInvalidValue;
  allocated -= it->second;
  allocations.erase(it);
  std::free(pointer);
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** pointer, size_t bytes) {
  return posix_memalign(pointer, 256, std::max<size_t>(bytes, 1)) == 0 ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFreeHost(void* pointer) {
  std::free(pointer);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  std::lock_guard<std::mutex> lock(memory_mutex);
  *free_bytes = kDeviceBytes - allocated;
  *total_bytes = kDeviceBytes;
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t stream) {
  submit(stream, [=] { std::memcpy(dst, src, bytes); });
  return cudaSuccess;
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  std::memset(dst, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  *stream = reinterpret_cast<cudaStream_t>(new Stream());
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete reinterpret_cast<Stream*>(stream);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = reinterpret_cast<cudaEvent_t>(new Event());
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) { return cudaEventCreate(event); }

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete reinterpret_cast<Event*>(event);
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  submit(stream, [event] { reinterpret_cast<Event*>(event)->time = std::chrono::steady_clock::now(); });
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = std::chrono::duration<float, std::milli>(reinterpret_cast<Event*>(end)->time - reinterpret_cast<Event*>(start)->time).count();
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  Stream& s = stream_of(stream);
  if (s.capture) return cudaErrorIllegalState;
  s.capture = std::make_unique<Graph>();
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  Stream& s = stream_of(stream);
  if (!s.capture) return cudaErrorIllegalState;
  *graph = reinterpret_cast<cudaGraph_t>(s.capture.release());
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  *exec = reinterpret_cast<cudaGraphExec_t>(new Graph(*reinterpret_cast<Graph*>(graph)));
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete reinterpret_cast<Graph*>(graph);
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete reinterpret_cast<Graph*>(exec);
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  const Graph* graph = reinterpret_cast<const Graph*>(exec);
  submit(stream, [graph] {
    for (const auto& operation : graph->operations) operation();
  });
  return cudaSuccess;
}

// -------------------------------------------------------------------------------------------------
// cuBLAS: the one product bmrt asks for, C = alpha op(A) B + beta C with op = transpose, A and B of
// one type (fp32, fp16, bf16), C fp32, accumulated in fp32.

struct cublasContext {
  cudaStream_t stream = nullptr;
};

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  *handle = new cublasContext();
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t, void*, size_t) { return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* A, cudaDataType Atype, int lda, const void* B, cudaDataType Btype, int ldb, const void* beta, void* C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType, cublasGemmAlgo_t) {
  if (transa != CUBLAS_OP_T || transb != CUBLAS_OP_N || Atype != Btype || Ctype != CUDA_R_32F || computeType != CUBLAS_COMPUTE_32F ||
      (Atype != CUDA_R_32F && Atype != CUDA_R_16F && Atype != CUDA_R_16BF))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);  // read now, as cuBLAS does
  auto value = [Atype](const void* p, int64_t i) -> float {
    if (Atype == CUDA_R_32F) return static_cast<const float*>(p)[i];
    if (Atype == CUDA_R_16F) return __half2float(static_cast<const __half*>(p)[i]);
    return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  };
  submit(handle->stream, [=] {
    float* c = static_cast<float*>(C);
    for (int j = 0; j < n; j++)
      for (int i = 0; i < m; i++) {
        float sum = 0.0f;
        for (int l = 0; l < k; l++) sum += value(A, int64_t(i) * lda + l) * value(B, int64_t(j) * ldb + l);
        float& out = c[int64_t(j) * ldc + i];
        out = b == 0.0f ? a * sum : a * sum + b * out;
      }
  });
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
