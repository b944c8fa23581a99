// The scheduler's reactor: a thread that renices threads of the run the moment
// the shim reports that they hold a record of another priority
// (bpf/lib/sched.bpf.h), and gives every thread its own nice back.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

// A thread's start time in clock ticks since boot (/proc/TID/stat, field 22), or -1:
// with the tid, a thread's identity (a tid alone is reused).
long long StartTicks(int tid);

struct ring_buffer;
struct cw_sched_event;

class SchedReactor {
 public:
  static constexpr int kOwn = 100;  // a table entry: the thread's own nice

  // nice[p] for record priority p: -20..19, or kOwn. Throws std::runtime_error.
  SchedReactor(int ringbuf_fd, const std::vector<int> &nice);
  ~SchedReactor();  // stops the thread; does not restore (Restore() does)

  // JS thread: user space gave thread tid a record of priority prio.
  void Apply(int tid, int prio);
  // JS thread, at the end: stop, then every reniced thread still alive gets its own nice back.
  void Stop();
  void Restore();

  struct Stats {
    uint64_t changes = 0;    // priority changes reported (kernel and user space)
    uint64_t reniced = 0;    // setpriority calls that changed a nice value
    uint64_t gone = 0;       // threads that had exited when reniced (ESRCH)
    uint64_t failed = 0;     // other setpriority/getpriority failures
    uint64_t arrivals = 0;   // renices ahead of a read: a record arrived where the thread read last
    uint64_t idled = 0;      // threads given their own nice back while waiting in accept()
    uint64_t restored = 0;   // threads given their own nice back at the end
    uint64_t reused = 0;     // at the end: tids now another thread (left alone)
    uint64_t tracked = 0;    // threads reniced at some point
    bool realtime = false;   // the reactor runs SCHED_FIFO
    std::vector<uint32_t> latency_ns;  // report to renice, a sample of them
  };
  Stats GetStats();

 private:
  struct Thread {
    uint64_t start;  // start_boottime ns: tid + start = this thread, not a later one
    int own;         // its nice before the scheduler touched it
    int now;         // its nice as last set
    int pidfd;       // the thread's pidfd (-1: none): tells whether the tid still names it
  };
  using Threads = std::unordered_map<int, Thread>;
  Threads::iterator Track(int tid, Thread t);  // mu_ held: opens the pidfd
  void Forget(Threads::iterator it);          // mu_ held: closes it
  void Run();
  void OnEvent(const cw_sched_event &e);
  void Set(int tid, uint64_t start, int prio, uint64_t ts);  // mu_ held

  ring_buffer *rb_ = nullptr;
  std::vector<int> nice_;
  std::mutex mu_;
  Threads threads_;
  Stats stats_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;

  friend int SchedHandle(void *, void *, size_t);
};
