// The addon: loads the kernel shim (or the benchmark floor) through its libbpf
// skeleton, attaches it, reads its events and counters, and reads and writes
// the records of tracked threads. Every method runs on the JS thread unless it
// says otherwise; the typed wrapper is src/kernel/native.ts.
#include <napi.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>

#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "batch.h"
#include "causeway.h"
#include "event_reader.h"
#include "jsonl.h"
#include "layers.h"
#include "process.h"
#include "sched.h"
#include "sdk.h"
#include "signals.h"
#include "floor.skel.h"
#include "shim.skel.h"

#ifndef PIDFD_THREAD
#define PIDFD_THREAD 0x80  // O_EXCL: a pidfd for one thread (Linux 6.9)
#endif

namespace {

// Throws Error("failed to <step>: <strerror>") with .errno set.
[[noreturn]] void ThrowErrno(Napi::Env env, int err, const std::string &step) {
  if (err < 0) err = -err;
  Napi::Error e = Napi::Error::New(env, "failed to " + step + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  throw e;
}

// libbpf's own messages go to a buffer that load errors quote.
thread_local std::string *g_libbpf_log = nullptr;
int LibbpfPrint(enum libbpf_print_level level, const char *fmt, va_list args) {
  if (level == LIBBPF_DEBUG || g_libbpf_log == nullptr) return 0;
  char line[1024];
  vsnprintf(line, sizeof(line), fmt, args);
  if (g_libbpf_log->size() < 64 * 1024) g_libbpf_log->append(line);
  return 0;
}

struct LogScope {
  std::string log;
  LogScope() { g_libbpf_log = &log; }
  ~LogScope() { g_libbpf_log = nullptr; }
};

int PidfdOpen(int tid) {
  int fd = static_cast<int>(syscall(SYS_pidfd_open, tid, PIDFD_THREAD));
  if (fd < 0 && errno == EINVAL) fd = static_cast<int>(syscall(SYS_pidfd_open, tid, 0));
  return fd;
}

// CLOCK_REALTIME - CLOCK_BOOTTIME in ns: turns the shim's times into epoch times.
int64_t BootToEpochNs() {
  struct timespec rt, bt;
  clock_gettime(CLOCK_BOOTTIME, &bt);
  clock_gettime(CLOCK_REALTIME, &rt);
  return (int64_t)(rt.tv_sec - bt.tv_sec) * 1000000000LL + (rt.tv_nsec - bt.tv_nsec);
}

}  // namespace

// One loaded instance: the shim scoped to a cgroup, or the floor.
class Shim : public Napi::ObjectWrap<Shim> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Shim",
                       {
                           InstanceMethod("startEvents", &Shim::StartEvents),
                           InstanceMethod("stopEvents", &Shim::StopEvents),
                           InstanceMethod("counters", &Shim::Counters),
                           InstanceMethod("readTask", &Shim::ReadTask),
                           InstanceMethod("writeRecord", &Shim::WriteRecord),
                           InstanceMethod("adoptThread", &Shim::AdoptThread),
                           InstanceMethod("enableExistingTcp", &Shim::EnableExistingTcp),
                           InstanceMethod("mapLookup", &Shim::MapLookup),
                           InstanceMethod("mapUpdate", &Shim::MapUpdate),
                           InstanceMethod("mapDelete", &Shim::MapDelete),
                           InstanceMethod("mapKeys", &Shim::MapKeys),
                           InstanceMethod("sdkSlots", &Shim::SdkSlots),
                           InstanceMethod("sdkRelease", &Shim::SdkRelease),
                           InstanceMethod("setSdkSlot", &Shim::SetSdkSlot),
                           InstanceMethod("schedStart", &Shim::SchedStart),
                           InstanceMethod("schedStats", &Shim::SchedStats),
                           InstanceMethod("schedStop", &Shim::SchedStop),
                           InstanceMethod("detach", &Shim::Detach),
                           InstanceMethod("destroy", &Shim::Destroy),
                       });
  }

  // new Shim({ kind: 'shim' | 'floor', cgroupPath, ringbufBytes, ... })
  // Opens, loads and attaches; throws "failed to <step>: ..." with libbpf's log.
  explicit Shim(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Shim>(info) {
    Napi::Env env = info.Env();
    Napi::Object opts = info[0].As<Napi::Object>();
    std::string kind = opts.Get("kind").As<Napi::String>();
    LogScope log;
    int err;
    if (kind == "floor") {
      floor_ = cw_floor::open();
      if (floor_ == nullptr) Fail(env, errno, "open the floor programs", log.log);
      {
        SignalsHeld held;
        err = cw_floor::load(floor_);
      }
      if (err != 0) Fail(env, err, "load the floor programs", log.log);
      if ((err = cw_floor::attach(floor_)) != 0) Fail(env, err, "attach the floor programs", log.log);
      return;
    }
    shim_ = cw_shim::open();
    if (shim_ == nullptr) Fail(env, errno, "open the shim", log.log);
    shim_->rodata->cw_emit_events = opts.Get("emitEvents").ToBoolean().Value();
    shim_->rodata->cw_opt_kind = opts.Get("optKind").As<Napi::Number>().Uint32Value();
    shim_->rodata->cw_opt_exid = opts.Get("optExid").As<Napi::Number>().Uint32Value();
    shim_->rodata->cw_follow_tracked = opts.Get("followTracked").ToBoolean().Value();
    shim_->rodata->cw_boot_to_epoch_ns = static_cast<uint64_t>(BootToEpochNs());
    uint32_t rb_bytes = opts.Get("ringbufBytes").As<Napi::Number>().Uint32Value();
    if ((err = bpf_map__set_max_entries(shim_->maps.events, rb_bytes)) != 0)
      Fail(env, err, "size the ring buffer", log.log);
    // The reader drains on a timer (event_reader.cc); a wake-up is for a backlog
    // that would fill the ring before it: a quarter of it.
    shim_->rodata->cw_wakeup_bytes = rb_bytes / 4;
    Napi::Value max_chans = opts.Get("maxChannels");
    if (max_chans.IsNumber() &&
        (err = bpf_map__set_max_entries(shim_->maps.chans, max_chans.As<Napi::Number>().Uint32Value())) != 0)
      Fail(env, err, "size the channel table", log.log);
    // Run on demand only (enableExistingTcp), never attached with the rest.
    bpf_program__set_autoattach(shim_->progs.enable_existing_tcp, false);
    {
      SignalsHeld held;
      err = cw_shim::load(shim_);
    }
    if (err != 0) Fail(env, err, "load the shim", log.log);

    // The run's cgroup, by fd: scopes the fork hook and carries the sockops program.
    std::string cgroup = opts.Get("cgroupPath").As<Napi::String>();
    cgroup_ = cgroup;
    int cgfd = open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cgfd < 0) Fail(env, errno, "open the run's cgroup " + cgroup, log.log);
    uint32_t zero = 0, cgfd32 = static_cast<uint32_t>(cgfd);
    err = bpf_map__update_elem(shim_->maps.run_cgroup, &zero, sizeof(zero), &cgfd32, sizeof(cgfd32), BPF_ANY);
    if (err != 0) {
      close(cgfd);
      Fail(env, err, "scope the shim to the run's cgroup " + cgroup, log.log);
    }

    // Trusted networks: [{ prefixlen, addr: Buffer(16) }], before anything runs.
    Napi::Array trust = opts.Get("trust").As<Napi::Array>();
    for (uint32_t i = 0; i < trust.Length(); i++) {
      Napi::Object n = trust.Get(i).As<Napi::Object>();
      struct cw_lpm_key key = {};
      key.prefixlen = n.Get("prefixlen").As<Napi::Number>().Uint32Value();
      auto addr = n.Get("addr").As<Napi::Buffer<uint8_t>>();
      memcpy(key.addr, addr.Data(), std::min<size_t>(addr.Length(), sizeof(key.addr)));
      uint8_t one = 1;
      if ((err = bpf_map__update_elem(shim_->maps.trusted_nets, &key, sizeof(key), &one, sizeof(one), BPF_ANY)) != 0)
        Fail(env, err, "set the trusted networks", log.log);
    }
    if ((err = cw_shim::attach(shim_)) != 0) {
      close(cgfd);
      Fail(env, err, "attach the shim", log.log);
    }

    // sockops has no automatic attachment: it goes on the run's cgroup.
    sockops_link_ = bpf_program__attach_cgroup(shim_->progs.handle_sockops, cgfd);
    err = errno;
    close(cgfd);
    if (sockops_link_ == nullptr) Fail(env, err, "attach the TCP option program to " + cgroup, log.log);
  }

  ~Shim() override { Free(); }

 private:
  [[noreturn]] void Fail(Napi::Env env, int err, const std::string &step, const std::string &log) {
    Free();
    if (err < 0) err = -err;
    std::string msg = "failed to " + step + ": " + strerror(err);
    if (!log.empty()) msg += "\nlibbpf: " + log.substr(log.size() > 4000 ? log.size() - 4000 : 0);
    Napi::Error e = Napi::Error::New(env, msg);
    e.Set("errno", Napi::Number::New(env, err));
    throw e;
  }

  void RequireShim(Napi::Env env) {
    if (shim_ == nullptr) throw Napi::Error::New(env, floor_ ? "the floor has no maps" : "the shim was destroyed");
  }

  // startEvents(onBatch, pollMs): a reader thread delivers Buffers of whole
  // struct cw_event, at most pollMs after they were written unless the ring
  // fills first; onBatch(null) marks the end after stopEvents().
  Napi::Value StartEvents(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    RequireShim(env);
    if (reader_) throw Napi::Error::New(env, "events are already being read");
    int poll_ms = info[1].As<Napi::Number>().Int32Value();
    if (poll_ms < 1 || poll_ms > 10000) throw Napi::RangeError::New(env, "pollMs must be 1 to 10000");
    reader_ = std::make_unique<EventReader>(env, bpf_map__fd(shim_->maps.events), info[0].As<Napi::Function>(),
                                            sizeof(struct cw_event), poll_ms);
    return env.Undefined();
  }

  Napi::Value StopEvents(const Napi::CallbackInfo &info) {
    if (reader_) reader_->RequestStop();
    return info.Env().Undefined();
  }

  // counters(): BigInt per enum cw_counter, summed over CPUs.
  Napi::Value Counters(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    RequireShim(env);
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) ThrowErrno(env, ncpu, "count CPUs");
    std::vector<uint64_t> values(ncpu);
    Napi::Array out = Napi::Array::New(env, CW_C_MAX);
    for (uint32_t i = 0; i < CW_C_MAX; i++) {
      int err = bpf_map__lookup_elem(shim_->maps.counters, &i, sizeof(i), values.data(),
                                     values.size() * sizeof(uint64_t), 0);
      if (err) ThrowErrno(env, err, "read counters");
      uint64_t sum = 0;
      for (uint64_t v : values) sum += v;
      out.Set(i, Napi::BigInt::New(env, sum));
    }
    return out;
  }

  // readTask(tid): Buffer holding struct cw_task, or null if the thread has no record.
  Napi::Value ReadTask(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    RequireShim(env);
    int tid = info[0].As<Napi::Number>().Int32Value();
    int pidfd = PidfdOpen(tid);
    if (pidfd < 0) ThrowErrno(env, errno, "open thread " + std::to_string(tid));
    struct cw_task task;
    int err = bpf_map__lookup_elem(shim_->maps.tasks, &pidfd, sizeof(pidfd), &task, sizeof(task), 0);
    close(pidfd);
    if (err == -ENOENT) return env.Null();
    if (err) ThrowErrno(env, err, "read the record of thread " + std::to_string(tid));
    return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<uint8_t *>(&task), sizeof(task));
  }

  // writeRecord(tid, Buffer of struct cw_record): the thread's next syscalls carry it.
  Napi::Value WriteRecord(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    RequireShim(env);
    int tid = info[0].As<Napi::Number>().Int32Value();
    auto rec = info[1].As<Napi::Buffer<uint8_t>>();
    if (rec.Length() != sizeof(struct cw_record))
      throw Napi::TypeError::New(env, "a record is " + std::to_string(sizeof(struct cw_record)) + " bytes");
    int pidfd = PidfdOpen(tid);
    if (pidfd < 0) ThrowErrno(env, errno, "open thread " + std::to_string(tid));
    struct cw_task task;
    // Keep the syscall in flight, if any; a fresh record re-adopts on the next read.
    if (bpf_map__lookup_elem(shim_->maps.tasks, &pidfd, sizeof(pidfd), &task, sizeof(task), 0) != 0)
      memset(&task, 0, sizeof(task));
    memcpy(&task.rec, rec.Data(), sizeof(task.rec));
    task.src = 0;
    if (sched_) task.sched = task.rec.priority + 1;  // the reactor is told below, not by the shim
    int err = bpf_map__update_elem(shim_->maps.tasks, &pidfd, sizeof(pidfd), &task, sizeof(task), BPF_ANY);
    close(pidfd);
    if (err) ThrowErrno(env, err, "write the record of thread " + std::to_string(tid));
    if (sched_) sched_->Apply(tid, task.rec.priority);
    return env.Undefined();
  }

  // adoptThread(tid, Buffer of struct cw_record, start): follows a thread that
  // runs already (causeway attach). start is the thread's start time (field 22
  // of /proc/TID/stat) as read when it was found in the target: the thread is
  // held by a pidfd, then its start time is read again, so a tid reused since
  // is never adopted. A thread followed already (a child of an adopted one)
  // keeps its record. Returns "adopted", "followed" or "gone".
  Napi::Value AdoptThread(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    RequireShim(env);
    int tid = info[0].As<Napi::Number>().Int32Value();
    auto rec = info[1].As<Napi::Buffer<uint8_t>>();
    uint64_t start = static_cast<uint64_t>(info[2].As<Napi::Number>().Int64Value());
    if (rec.Length() != sizeof(struct cw_record))
      throw Napi::TypeError::New(env, "a record is " + std::to_string(sizeof(struct cw_record)) + " bytes");
    int pidfd = PidfdOpen(tid);
    if (pidfd < 0) return Napi::String::New(env, "gone");
    if (StartTicks(tid) != static_cast<long long>(start)) {
      close(pidfd);
      return Napi::String::New(env, "gone");
    }
    struct cw_task task;
    memset(&task, 0, sizeof(task));
    memcpy(&task.rec, rec.Data(), sizeof(task.rec));
    int err = bpf_map__update_elem(shim_->maps.tasks, &pidfd, sizeof(pidfd), &task, sizeof(task), BPF_NOEXIST);
    close(pidfd);
    if (err == -EEXIST) return Napi::String::New(env, "followed");
    if (err == -ESRCH) return Napi::String::New(env, "gone");
    if (err) ThrowErrno(env, err, "follow thread " + std::to_string(tid));
    if (sched_) sched_->Apply(tid, task.rec.priority);
    return Napi::String::New(env, "adopted");
  }

  // enableExistingTcp(cgroupId: bigint, level, netns: string[]): switches the
  // option callbacks on for established connections made in the cgroup (id,
  // depth below the v2 root) or below, in each network namespace named (a
  // path such as /proc/PID/ns/net): the iterator sees the namespace of the
  // thread that creates it, so this thread enters each one and comes back.
  // Returns how many connections it switched on.
  Napi::Value EnableExistingTcp(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    RequireShim(env);
    bool lossless = true;
    shim_->bss->cw_iter_cgid = info[0].As<Napi::BigInt>().Uint64Value(&lossless);
    shim_->bss->cw_iter_level = info[1].As<Napi::Number>().Uint32Value();
    shim_->bss->cw_iter_enabled = 0;
    Napi::Array netns = info[2].As<Napi::Array>();
    bpf_link *link = bpf_program__attach_iter(shim_->progs.enable_existing_tcp, nullptr);
    if (link == nullptr) ThrowErrno(env, errno, "attach the TCP iterator (Linux 6.10 for TCP_BPF_SOCK_OPS_CB_FLAGS)");
    int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home < 0) {
      int e = errno;
      bpf_link__destroy(link);
      ThrowErrno(env, e, "open this thread's network namespace");
    }
    std::string failed;
    for (uint32_t i = 0; i < netns.Length() && failed.empty(); i++) {
      std::string path = netns.Get(i).As<Napi::String>();
      int ns = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
        if (ns >= 0) close(ns);
        continue;  // the process left or exited: its namespace is not ours to fix
      }
      close(ns);
      int it = bpf_iter_create(bpf_link__fd(link));
      if (it < 0) failed = "create the TCP iterator in " + path + ": " + strerror(errno);
      char buf[64];
      while (it >= 0 && read(it, buf, sizeof(buf)) > 0) {
      }
      if (it >= 0) close(it);
      if (setns(home, CLONE_NEWNET) != 0) {
        // Never leave the JavaScript thread in another namespace.
        fprintf(stderr, "causeway: cannot return to its own network namespace: %s\n", strerror(errno));
        abort();
      }
    }
    close(home);
    bpf_link__destroy(link);
    if (!failed.empty()) throw Napi::Error::New(env, failed);
    return Napi::Number::New(env, shim_->bss->cw_iter_enabled);
  }

  // schedStart(nice: number[256], skprio: number[256]): the scheduler runs.
  // nice[p]: -20..19, or 100 for the thread's own; skprio[p]: -1 to leave, else SO_PRIORITY.
  Napi::Value SchedStart(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    RequireShim(env);
    if (sched_) throw Napi::Error::New(env, "the scheduler already runs");
    Napi::Array nice = info[0].As<Napi::Array>(), skprio = info[1].As<Napi::Array>();
    if (nice.Length() != CW_SCHED_PRIOS || skprio.Length() != CW_SCHED_PRIOS)
      throw Napi::RangeError::New(env, "the scheduler's tables have 256 entries");
    std::vector<int> table(CW_SCHED_PRIOS);
    bool any_skprio = false;
    for (uint32_t p = 0; p < CW_SCHED_PRIOS; p++) {
      table[p] = nice.Get(p).As<Napi::Number>().Int32Value();
      int v = skprio.Get(p).As<Napi::Number>().Int32Value();
      uint32_t value = v < 0 ? 0 : static_cast<uint32_t>(v) + 1;
      any_skprio |= value != 0;
      int err = bpf_map__update_elem(shim_->maps.sched_skprio, &p, sizeof(p), &value, sizeof(value), BPF_ANY);
      if (err) ThrowErrno(env, err, "set the scheduler's socket priorities");
    }
    try {
      sched_ = std::make_unique<SchedReactor>(bpf_map__fd(shim_->maps.sched_rb), table);
    } catch (const std::exception &e) {
      throw Napi::Error::New(env, e.what());
    }
    if (any_skprio) {
      int cgfd = open(cgroup_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (cgfd < 0) ThrowErrno(env, errno, "open the run's cgroup " + cgroup_);
      egress_link_ = bpf_program__attach_cgroup(shim_->progs.handle_egress_prio, cgfd);
      int err = errno;
      close(cgfd);
      if (egress_link_ == nullptr) {
        sched_.reset();
        ThrowErrno(env, err, "attach the socket priority program to " + cgroup_);
      }
    }
    SetPolicySched(env, 1);
    return env.Undefined();
  }

  // schedStop(): no more renicing; every thread still reniced gets its own nice back.
  Napi::Value SchedStop(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!sched_) return env.Undefined();
    if (shim_) SetPolicySched(env, 0);
    if (egress_link_) bpf_link__destroy(egress_link_);
    egress_link_ = nullptr;
    sched_->Restore();
    return env.Undefined();
  }

  Napi::Value SchedStats(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!sched_) return env.Null();
    SchedReactor::Stats s = sched_->GetStats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("changes", static_cast<double>(s.changes));
    o.Set("reniced", static_cast<double>(s.reniced));
    o.Set("gone", static_cast<double>(s.gone));
    o.Set("failed", static_cast<double>(s.failed));
    o.Set("restored", static_cast<double>(s.restored));
    o.Set("idled", static_cast<double>(s.idled));
    o.Set("arrivals", static_cast<double>(s.arrivals));
    o.Set("reused", static_cast<double>(s.reused));
    o.Set("threads", static_cast<double>(s.tracked));
    o.Set("realtime", s.realtime);
    Napi::Array lat = Napi::Array::New(env, s.latency_ns.size());
    for (size_t i = 0; i < s.latency_ns.size(); i++) lat.Set(static_cast<uint32_t>(i), s.latency_ns[i]);
    o.Set("latencyNs", lat);
    return o;
  }

  void SetPolicySched(Napi::Env env, uint8_t on) {
    uint32_t zero = 0;
    struct cw_policy p = {};
    bpf_map__lookup_elem(shim_->maps.policy, &zero, sizeof(zero), &p, sizeof(p), 0);
    p.sched = on;
    int err = bpf_map__update_elem(shim_->maps.policy, &zero, sizeof(zero), &p, sizeof(p), BPF_ANY);
    if (err) ThrowErrno(env, err, "turn the scheduler " + std::string(on ? "on" : "off"));
  }

  // The maps that user space may read and change, by name (the rest are the shim's own).
  bpf_map *UserMap(Napi::Env env, const Napi::Value &name) {
    RequireShim(env);
    std::string n = name.As<Napi::String>();
    static const char *const allowed[] = {"policy", "ingress_ports", "egress_strip", "chans", "sk_in", "sk_out"};
    for (const char *a : allowed)
      if (n == a) return bpf_object__find_map_by_name(shim_->obj, a);
    throw Napi::Error::New(env, "no user-visible map named " + n);
  }

  // mapLookup(name, key) -> Buffer or null.
  Napi::Value MapLookup(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    bpf_map *m = UserMap(env, info[0]);
    auto key = info[1].As<Napi::Buffer<uint8_t>>();
    std::vector<uint8_t> value(bpf_map__value_size(m));
    int err = bpf_map__lookup_elem(m, key.Data(), key.Length(), value.data(), value.size(), 0);
    if (err == -ENOENT) return env.Null();
    if (err) ThrowErrno(env, err, "look up map " + std::string(bpf_map__name(m)));
    return Napi::Buffer<uint8_t>::Copy(env, value.data(), value.size());
  }

  // mapUpdate(name, key, value, flags): flags as bpf(2)'s BPF_ANY, BPF_NOEXIST, BPF_EXIST.
  Napi::Value MapUpdate(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    bpf_map *m = UserMap(env, info[0]);
    auto key = info[1].As<Napi::Buffer<uint8_t>>();
    auto value = info[2].As<Napi::Buffer<uint8_t>>();
    uint64_t flags = info[3].IsNumber() ? info[3].As<Napi::Number>().Uint32Value() : static_cast<uint64_t>(BPF_ANY);
    int err = bpf_map__update_elem(m, key.Data(), key.Length(), value.Data(), value.Length(), flags);
    if (err) ThrowErrno(env, err, "update map " + std::string(bpf_map__name(m)));
    return env.Undefined();
  }

  // mapDelete(name, key) -> true if it was there.
  Napi::Value MapDelete(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    bpf_map *m = UserMap(env, info[0]);
    auto key = info[1].As<Napi::Buffer<uint8_t>>();
    int err = bpf_map__delete_elem(m, key.Data(), key.Length(), 0);
    if (err == -ENOENT) return Napi::Boolean::New(env, false);
    if (err) ThrowErrno(env, err, "delete from map " + std::string(bpf_map__name(m)));
    return Napi::Boolean::New(env, true);
  }

  // mapKeys(name) -> every key now (a hash map's; a snapshot that may miss concurrent changes).
  Napi::Value MapKeys(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    bpf_map *m = UserMap(env, info[0]);
    size_t ks = bpf_map__key_size(m);
    std::vector<uint8_t> key(ks), next(ks);
    Napi::Array out = Napi::Array::New(env);
    const void *prev = nullptr;
    uint32_t n = 0;
    while (bpf_map__get_next_key(m, prev, next.data(), ks) == 0) {
      out.Set(n++, Napi::Buffer<uint8_t>::Copy(env, next.data(), ks));
      key.swap(next);
      prev = key.data();
    }
    return out;
  }

  // sdkSlots(tgid) -> fd of a new slot map for the process, registered in sdk_procs.
  // The caller sends the fd to that process only, then closes it (closeFd).
  Napi::Value SdkSlots(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    RequireShim(env);
    uint32_t tgid = info[0].As<Napi::Number>().Uint32Value();
    LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_MMAPABLE);
    int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "cw_sdk_slots", sizeof(uint32_t), sizeof(struct cw_sdk_slot),
                            CW_SDK_SLOTS, &opts);
    if (fd < 0) ThrowErrno(env, errno, "create the SDK slots of process " + std::to_string(tgid));
    int err = bpf_map__update_elem(shim_->maps.sdk_procs, &tgid, sizeof(tgid), &fd, sizeof(fd), BPF_ANY);
    if (err) {
      close(fd);
      ThrowErrno(env, err, "register the SDK slots of process " + std::to_string(tgid));
    }
    return Napi::Number::New(env, fd);
  }

  // sdkRelease(tgid): the process's slots stop being read (it exited).
  Napi::Value SdkRelease(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    RequireShim(env);
    uint32_t tgid = info[0].As<Napi::Number>().Uint32Value();
    bpf_map__delete_elem(shim_->maps.sdk_procs, &tgid, sizeof(tgid), 0);
    return env.Undefined();
  }

  // setSdkSlot(tid, slot, slotsFd): thread tid reads slot from now on; its slot's
  // kern_rec starts as the thread's record. Returns false if tid holds no record.
  Napi::Value SetSdkSlot(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    RequireShim(env);
    int tid = info[0].As<Napi::Number>().Int32Value();
    uint32_t slot = info[1].As<Napi::Number>().Uint32Value();
    int slots_fd = info[2].As<Napi::Number>().Int32Value();
    if (slot >= CW_SDK_SLOTS) throw Napi::RangeError::New(env, "no SDK slot " + std::to_string(slot));
    int pidfd = PidfdOpen(tid);
    if (pidfd < 0) ThrowErrno(env, errno, "open thread " + std::to_string(tid));
    struct cw_task task;
    int err = bpf_map__lookup_elem(shim_->maps.tasks, &pidfd, sizeof(pidfd), &task, sizeof(task), 0);
    if (err == 0) {
      struct cw_sdk_slot s = {};
      s.tid = tid;
      s.kern_rec = task.rec;
      s.kern_gen = 1;
      err = bpf_map_update_elem(slots_fd, &slot, &s, BPF_ANY) ? -errno : 0;
      if (err == 0) {
        task.sdk_slot = slot + 1;
        task.sdk_gen = 0;
        err = bpf_map__update_elem(shim_->maps.tasks, &pidfd, sizeof(pidfd), &task, sizeof(task), BPF_EXIST);
      }
    }
    close(pidfd);
    if (err == -ENOENT) return Napi::Boolean::New(env, false);
    if (err) ThrowErrno(env, err, "give thread " + std::to_string(tid) + " its SDK slot");
    return Napi::Boolean::New(env, true);
  }

  // detach(): the programs stop running; maps stay readable.
  Napi::Value Detach(const Napi::CallbackInfo &info) {
    if (egress_link_) bpf_link__destroy(egress_link_);
    egress_link_ = nullptr;
    if (sockops_link_) bpf_link__destroy(sockops_link_);
    sockops_link_ = nullptr;
    if (shim_) cw_shim::detach(shim_);
    if (floor_) cw_floor::detach(floor_);
    return info.Env().Undefined();
  }

  // destroy(): frees everything; call after the events' final null batch.
  Napi::Value Destroy(const Napi::CallbackInfo &info) {
    Free();
    return info.Env().Undefined();
  }

  void Free() {
    reader_.reset();  // joins the reader before the ring buffer map goes away
    sched_.reset();
    if (egress_link_) bpf_link__destroy(egress_link_);
    egress_link_ = nullptr;
    if (sockops_link_) bpf_link__destroy(sockops_link_);
    sockops_link_ = nullptr;
    if (shim_) cw_shim::destroy(shim_);
    if (floor_) cw_floor::destroy(floor_);
    shim_ = nullptr;
    floor_ = nullptr;
  }

  cw_shim *shim_ = nullptr;
  bpf_link *sockops_link_ = nullptr;
  cw_floor *floor_ = nullptr;
  std::unique_ptr<EventReader> reader_;
  std::unique_ptr<SchedReactor> sched_;
  bpf_link *egress_link_ = nullptr;
  std::string cgroup_;
};

// clockOffset(): CLOCK_REALTIME - CLOCK_BOOTTIME in ns, to turn event times into epoch times.
Napi::Value ClockOffset(const Napi::CallbackInfo &info) {
  return Napi::BigInt::New(info.Env(), BootToEpochNs());
}

// layout(): sizes the TypeScript codecs check against.
Napi::Value Layout(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("record", sizeof(struct cw_record));
  o.Set("task", sizeof(struct cw_task));
  o.Set("event", sizeof(struct cw_event));
  o.Set("counters", static_cast<uint32_t>(CW_C_MAX));
  o.Set("chan", sizeof(struct cw_chan));
  o.Set("chanSeg", offsetof(struct cw_chan, seg));
  o.Set("chanHead", offsetof(struct cw_chan, head));
  o.Set("seg", sizeof(struct cw_seg));
  o.Set("segSeq", offsetof(struct cw_seg, seq));
  o.Set("sdkSlot", sizeof(struct cw_sdk_slot));
  o.Set("sdkSlots", CW_SDK_SLOTS);
  return o;
}

// pidfdGetfd(pid, fd): a duplicate, in this process, of another process's fd
// (pidfd_getfd(2), Linux 5.6): how user space names a socket to socket-local
// storage. The caller closes it.
Napi::Value PidfdGetfd(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int pid = info[0].As<Napi::Number>().Int32Value();
  int fd = info[1].As<Napi::Number>().Int32Value();
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) ThrowErrno(env, errno, "open process " + std::to_string(pid));
  int got = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0));
  int err = errno;
  close(pidfd);
  if (got < 0) ThrowErrno(env, err, "take fd " + std::to_string(fd) + " of process " + std::to_string(pid));
  return Napi::Number::New(env, got);
}

// probe(): which map types this kernel accepts (doctor); programs are checked by loading them.
Napi::Value Probe(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  auto map = [](bpf_map_type t) { return libbpf_probe_bpf_map_type(t, nullptr) == 1; };
  o.Set("mapArray", map(BPF_MAP_TYPE_ARRAY));
  o.Set("mapTaskStorage", map(BPF_MAP_TYPE_TASK_STORAGE));
  o.Set("mapRingbuf", map(BPF_MAP_TYPE_RINGBUF));
  o.Set("mapLruHash", map(BPF_MAP_TYPE_LRU_HASH));
  o.Set("mapPercpuArray", map(BPF_MAP_TYPE_PERCPU_ARRAY));
  o.Set("mapLpmTrie", map(BPF_MAP_TYPE_LPM_TRIE));
  o.Set("mapHashOfMaps", map(BPF_MAP_TYPE_HASH_OF_MAPS));
  // An mmap-able array: create one and map it.
  bool mmapable = false;
  LIBBPF_OPTS(bpf_map_create_opts, mopts, .map_flags = BPF_F_MMAPABLE);
  int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "cw_probe", 4, 8, 512, &mopts);
  if (fd >= 0) {
    void *m = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    mmapable = m != MAP_FAILED;
    if (mmapable) munmap(m, 4096);
    close(fd);
  }
  o.Set("mapMmapable", mmapable);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  libbpf_set_print(LibbpfPrint);
  exports.Set("Shim", Shim::Init(env));
  exports.Set("clockOffset", Napi::Function::New(env, ClockOffset));
  exports.Set("layout", Napi::Function::New(env, Layout));
  exports.Set("probe", Napi::Function::New(env, Probe));
  exports.Set("pidfdGetfd", Napi::Function::New(env, PidfdGetfd));
  InitSdk(env, exports);
  InitJsonl(env, exports);
  InitProcess(env, exports);
  InitBatch(env, exports);
  InitLayers(env, exports);
  return exports;
}

NODE_API_MODULE(causeway, Init)
