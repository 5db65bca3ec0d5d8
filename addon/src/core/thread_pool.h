// A small fixed pool of worker threads for the kernels. run() splits work into tasks, lets the
// workers and the calling thread take them, and returns when all are done. One run() at a time
// per pool (callers serialise); the pool itself never blocks the Node.js event loop because the
// binding only calls it from worker threads.
#pragma once
#include <functional>

namespace bmrt {

class ThreadPool {
 public:
  // threads: total threads that execute tasks, the caller of run() included (>= 1).
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const;
  // Tells the workers that no run follows soon: they sleep at once instead of spinning.
  void rest();
  // Calls fn(task, thread) for every task in [0, tasks), on up to size() threads; thread is in
  // [0, size()) and unique among concurrently running calls (for per-thread scratch buffers).
  void run(int tasks, const std::function<void(int task, int thread)>& fn);

 private:
  struct State;
  State* state_;
};

}  // namespace bmrt
