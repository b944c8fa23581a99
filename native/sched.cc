#include "sched.h"

#include <bpf/libbpf.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "causeway.h"

namespace {

#ifndef PIDFD_THREAD
#define PIDFD_THREAD 0x80  // O_EXCL: a pidfd for one thread (Linux 6.9)
#endif

constexpr int kPollMs = 50;                 // how long Stop() may wait for the thread
constexpr size_t kLatencySamples = 1 << 16;  // latencies kept for percentiles

uint64_t BootNs() {
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + ts.tv_nsec;
}

}  // namespace

long long StartTicks(int tid) {
  std::ifstream f("/proc/" + std::to_string(tid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return -1;
  size_t paren = line.rfind(')');  // comm may hold spaces and parentheses
  if (paren == std::string::npos) return -1;
  std::istringstream rest(line.substr(paren + 2));
  std::string field;
  for (int i = 3; i <= 22; i++)
    if (!(rest >> field)) return -1;
  return std::stoll(field);
}

int SchedHandle(void *ctx, void *data, size_t size) {
  if (size == sizeof(cw_sched_event)) static_cast<SchedReactor *>(ctx)->OnEvent(*static_cast<const cw_sched_event *>(data));
  return 0;
}

SchedReactor::SchedReactor(int ringbuf_fd, const std::vector<int> &nice) : nice_(nice) {
  if (nice_.size() != CW_SCHED_PRIOS) throw std::runtime_error("the nice table has 256 entries");
  rb_ = ring_buffer__new(ringbuf_fd, SchedHandle, this, nullptr);
  if (rb_ == nullptr) throw std::runtime_error(std::string("failed to open the scheduler's ring buffer: ") + strerror(errno));
  thread_ = std::thread([this] { Run(); });
}

SchedReactor::~SchedReactor() {
  Stop();
  ring_buffer__free(rb_);
  for (auto &[tid, t] : threads_)
    if (t.pidfd >= 0) close(t.pidfd);
}

SchedReactor::Threads::iterator SchedReactor::Track(int tid, Thread t) {
  auto old = threads_.find(tid);
  if (old != threads_.end()) Forget(old);
  // Right after the thread's own report: the tid names it (another thread could
  // take it only after it exited and pid numbers wrapped around).
  t.pidfd = static_cast<int>(syscall(SYS_pidfd_open, tid, PIDFD_THREAD));
  return threads_.emplace(tid, t).first;
}

void SchedReactor::Forget(Threads::iterator it) {
  if (it->second.pidfd >= 0) close(it->second.pidfd);
  threads_.erase(it);
}

void SchedReactor::Stop() {
  stopping_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
}

void SchedReactor::Run() {
  // The reactor must not wait behind the load it arbitrates: a real-time thread
  // preempts every normal one, and it only sleeps or makes short syscalls.
  struct sched_param sp = {};
  sp.sched_priority = 1;
  bool rt = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
  if (!rt) setpriority(PRIO_PROCESS, 0, -20);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.realtime = rt;
  }
  while (!stopping_.load(std::memory_order_acquire)) {
    int n = ring_buffer__poll(rb_, kPollMs);
    if (n < 0 && n != -EINTR) break;
  }
  ring_buffer__consume(rb_);
}

void SchedReactor::OnEvent(const cw_sched_event &e) {
  std::lock_guard<std::mutex> lock(mu_);
  int tid = static_cast<int>(e.tid);
  if (e.kind == CW_SCHED_EXIT) {
    auto it = threads_.find(tid);
    if (it != threads_.end()) Forget(it);
    return;
  }
  if (e.kind == CW_SCHED_IDLE) {
    // Serving no one: its own nice, if it was reniced.
    auto it = threads_.find(tid);
    if (it == threads_.end() || it->second.start != e.start || it->second.now == it->second.own) return;
    if (setpriority(PRIO_PROCESS, tid, it->second.own) == 0) {
      it->second.now = it->second.own;
      stats_.idled++;
    } else if (errno == ESRCH) {
      Forget(it);
    } else {
      stats_.failed++;
    }
    return;
  }
  if (e.kind == CW_SCHED_ARRIVAL) {
    // Reported from the receive path, not by the thread: its tid may name
    // another thread by now. Only a thread this reactor knows, whose pidfd
    // says it has not exited (then its tid is still its own).
    auto it = threads_.find(tid);
    uint64_t tick = 1000000000ULL / sysconf(_SC_CLK_TCK);
    if (it == threads_.end() || it->second.start / tick != e.start / tick || it->second.pidfd < 0) return;
    struct pollfd p = {it->second.pidfd, POLLIN, 0};
    if (poll(&p, 1, 0) != 0) {  // readable: exited (or an error)
      Forget(it);
      return;
    }
    stats_.arrivals++;
    Set(tid, e.start, e.prio, e.ts);
    return;
  }
  if (e.kind == CW_SCHED_FORK) {
    // The child's own nice is its parent's own. It runs at the nice its parent
    // had when it forked, which may predate a renice of the parent that this
    // reactor made since: make it the parent's nice now.
    auto p = threads_.find(static_cast<int>(e.parent));
    if (p == threads_.end()) return;
    Thread child{e.start, p->second.own, p->second.now, -1};
    errno = 0;
    int has = getpriority(PRIO_PROCESS, tid);
    if (has == -1 && errno != 0) return;  // exited already
    if (has != child.now && setpriority(PRIO_PROCESS, tid, child.now) != 0) child.now = has;
    Track(tid, child);
    return;
  }
  stats_.changes++;
  Set(tid, e.start, e.prio, e.ts);
}

void SchedReactor::Apply(int tid, int prio) {
  long long ticks = StartTicks(tid);
  if (ticks < 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  stats_.changes++;
  Set(tid, static_cast<uint64_t>(ticks) * (1000000000ULL / sysconf(_SC_CLK_TCK)), prio, 0);
}

void SchedReactor::Set(int tid, uint64_t start, int prio, uint64_t ts) {
  auto it = threads_.find(tid);
  uint64_t tick = 1000000000ULL / sysconf(_SC_CLK_TCK);
  // A tid seen before, but another thread now (or, from Apply, known only to the tick).
  if (it != threads_.end() && it->second.start / tick != start / tick) {
    Forget(it);
    it = threads_.end();
  }
  int want = nice_[prio & 0xff];
  if (it == threads_.end()) {
    if (want == kOwn) return;  // untouched and staying so
    errno = 0;
    int own = getpriority(PRIO_PROCESS, tid);
    if (own == -1 && errno != 0) {
      if (errno == ESRCH) stats_.gone++;
      else stats_.failed++;
      return;
    }
    it = Track(tid, Thread{start, own, own, -1});
    stats_.tracked++;
  }
  if (want == kOwn) want = it->second.own;
  if (want == it->second.now) return;
  if (setpriority(PRIO_PROCESS, tid, want) != 0) {
    if (errno == ESRCH) {
      stats_.gone++;
      Forget(it);
    } else {
      stats_.failed++;
    }
    return;
  }
  it->second.now = want;
  stats_.reniced++;
  if (ts != 0 && stats_.latency_ns.size() < kLatencySamples) stats_.latency_ns.push_back(static_cast<uint32_t>(std::min<uint64_t>(BootNs() - ts, UINT32_MAX)));
}

void SchedReactor::Restore() {
  Stop();
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t tick = 1000000000ULL / sysconf(_SC_CLK_TCK);
  for (auto &[tid, t] : threads_) {
    if (t.now == t.own) continue;
    long long ticks = StartTicks(tid);
    if (ticks < 0) continue;  // gone
    if (static_cast<uint64_t>(ticks) != t.start / tick) {
      stats_.reused++;
      continue;
    }
    if (setpriority(PRIO_PROCESS, tid, t.own) == 0) {
      t.now = t.own;
      stats_.restored++;
    } else if (errno != ESRCH) {
      stats_.failed++;
    }
  }
}

SchedReactor::Stats SchedReactor::GetStats() {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}
