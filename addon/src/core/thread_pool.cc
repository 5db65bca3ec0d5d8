// The kernels' thread pool: workers sleep on a condition variable between runs; a run hands out
// task numbers through an atomic counter so fast threads take more tasks.
#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace bmrt {

struct ThreadPool::State {
  std::vector<std::thread> workers;
  std::mutex mutex;
  std::condition_variable wake, finished;
  const std::function<void(int, int)>* fn = nullptr;
  int tasks = 0;
  std::atomic<int> next{0};
  int busy = 0;              // workers still inside the current run
  unsigned long long generation = 0;  // bumps once per run so workers see each run exactly once
  bool stopping = false;

  // Takes tasks until none are left.
  void drain(int thread) {
    for (int task = next.fetch_add(1); task < tasks; task = next.fetch_add(1)) (*fn)(task, thread);
  }

  void work(int thread) {
    unsigned long long seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait(lock, [&] { return stopping || generation != seen; });
        if (stopping) return;
        seen = generation;
      }
      drain(thread);
      std::lock_guard<std::mutex> lock(mutex);
      if (--busy == 0) finished.notify_one();
    }
  }
};

ThreadPool::ThreadPool(int threads) : state_(new State) {
  for (int i = 1; i < std::max(1, threads); i++) state_->workers.emplace_back([this, i] { state_->work(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stopping = true;
  }
  state_->wake.notify_all();
  for (auto& w : state_->workers) w.join();
  delete state_;
}

int ThreadPool::size() const { return static_cast<int>(state_->workers.size()) + 1; }

void ThreadPool::run(int tasks, const std::function<void(int, int)>& fn) {
  if (tasks <= 0) return;
  State& s = *state_;
  if (tasks == 1 || s.workers.empty()) {
    for (int t = 0; t < tasks; t++) fn(t, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.fn = &fn;
    s.tasks = tasks;
    s.next.store(0);
    s.busy = static_cast<int>(s.workers.size());
    s.generation++;
  }
  s.wake.notify_all();
  s.drain(0);
  std::unique_lock<std::mutex> lock(s.mutex);
  s.finished.wait(lock, [&] { return s.busy == 0; });
  s.fn = nullptr;
}

}  // namespace bmrt
