// The kernels' thread pool. A run publishes (fn, tasks) and bumps a generation counter; workers
// and the caller take task numbers from an atomic counter, so faster threads take more tasks, and
// the run is over when all its tasks are (a worker still waking up is not waited for).
//
// Waking a sleeping thread costs tens of microseconds, about the time a decode step spends on a
// small matrix, so after a run workers spin for a short while (kSpin) watching the generation
// before they sleep on a condition variable, unless the owner said with rest() that its burst of
// runs is over (a span's forward is done: spinning then only takes the cores from other work). The caller likewise spins, then yields, while the
// last tasks finish. Exceptions thrown by fn are caught and the first is rethrown by run().
#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#include <immintrin.h>
static inline void cpu_relax() { _mm_pause(); }
#else
static inline void cpu_relax() { std::this_thread::yield(); }
#endif

namespace bmrt {

namespace {
constexpr auto kSpin = std::chrono::microseconds(300);
}

// One run's work. Workers hold it by shared_ptr, so one that wakes late (after the run is over)
// finds no task left to claim and touches nothing else: run() waits for its tasks to finish, not
// for every worker to report, and a sleeping worker's wake-up never delays it.
struct Run {
  const std::function<void(int, int)>* fn = nullptr;
  int tasks = 0;
  std::atomic<int> next{0};
  std::atomic<int> finished{0};
  std::mutex error_mutex;
  std::exception_ptr error;

  void drain(int thread) {
    for (int task = next.fetch_add(1); task < tasks; task = next.fetch_add(1)) {
      try {
        (*fn)(task, thread);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
      finished.fetch_add(1, std::memory_order_acq_rel);
    }
  }
};

struct ThreadPool::State {
  std::vector<std::thread> workers;
  std::mutex mutex;
  std::condition_variable wake;
  std::atomic<uint64_t> generation{0};  // bumped once per run
  std::atomic<int> sleepers{0};         // workers waiting (or about to wait) on `wake`
  std::atomic<bool> stopping{false};
  std::atomic<bool> resting{false};     // set by rest(): no run is coming soon, do not spin
  std::shared_ptr<Run> current;         // the latest run; read and written with std::atomic_load/store

  // Returns false when the pool is stopping.
  bool wait_for_run(uint64_t seen) {
    const auto spin_until = std::chrono::steady_clock::now() + kSpin;
    for (int i = 0;; i++) {
      if (generation.load(std::memory_order_acquire) != seen) return true;
      if (stopping.load(std::memory_order_relaxed)) return false;
      if (resting.load(std::memory_order_relaxed)) break;
      cpu_relax();
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > spin_until) break;
    }
    std::unique_lock<std::mutex> lock(mutex);
    sleepers.fetch_add(1);  // seq_cst: pairs with run()'s bump-then-check of `sleepers`
    wake.wait(lock, [&] { return stopping.load() || generation.load() != seen; });
    sleepers.fetch_sub(1);
    return !stopping.load();
  }

  void work(int thread) {
    uint64_t seen = 0;
    while (wait_for_run(seen)) {
      seen = generation.load(std::memory_order_acquire);
      std::shared_ptr<Run> run = std::atomic_load(&current);
      if (run) run->drain(thread);
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

void ThreadPool::rest() { state_->resting.store(true, std::memory_order_relaxed); }

int ThreadPool::size() const { return static_cast<int>(state_->workers.size()) + 1; }

void ThreadPool::run(int tasks, const std::function<void(int, int)>& fn) {
  if (tasks <= 0) return;
  State& s = *state_;
  if (tasks == 1 || s.workers.empty()) {  // not worth waking anyone
    for (int t = 0; t < tasks; t++) fn(t, 0);
    return;
  }
  auto run = std::make_shared<Run>();
  run->fn = &fn;
  run->tasks = tasks;
  s.resting.store(false, std::memory_order_relaxed);
  std::atomic_store(&s.current, run);
  s.generation.fetch_add(1);  // seq_cst: publishes the run
  if (s.sleepers.load() > 0) {
    std::lock_guard<std::mutex> lock(s.mutex);  // a worker between its check and wait() holds it
    s.wake.notify_all();
  }
  run->drain(0);
  // Workers may still be finishing tasks they claimed.
  for (int i = 0; run->finished.load(std::memory_order_acquire) != tasks; i++) {
    if (i < 4096) cpu_relax();
    else std::this_thread::yield();
  }
  if (run->error) std::rethrow_exception(run->error);
}

}  // namespace bmrt
