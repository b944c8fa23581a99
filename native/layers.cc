// Layers: the tc programs of bpf/layers.bpf.c (causeway trace --layers).
// Loads them, attaches them as TCX links to interfaces in any network
// namespace (the calling thread enters the namespace for the attach and comes
// back), and reads their stamps. A TCX link lives as long as its fd: closing
// it (destroy(), or the process's exit, however it ends) removes the program
// from the interface.
#include "layers.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "layers.skel.h"
#include "signals.h"

namespace {

// The kernel's attach types (include/uapi/linux/bpf.h, 6.6+); libbpf 1.1's headers predate them.
constexpr int kTcxIngress = 46;
constexpr int kTcxEgress = 47;

struct Key {
  uint64_t event;
  uint32_t ifindex;
  uint32_t netns;
  uint32_t dir;
  uint32_t pad;
};
struct Stamp {
  uint64_t ts;
  uint32_t flags;
  uint32_t len;
  uint32_t seq;
  uint32_t pad;
  uint8_t trace[16];
};

[[noreturn]] void Throw(Napi::Env env, int err, const std::string &step) {
  if (err < 0) err = -err;
  Napi::Error e = Napi::Error::New(env, "failed to " + step + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  throw e;
}

class Layers : public Napi::ObjectWrap<Layers> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Layers",
                       {
                           InstanceMethod("attach", &Layers::Attach),
                           InstanceMethod("read", &Layers::Read),
                           InstanceMethod("counters", &Layers::Counters),
                           InstanceMethod("detach", &Layers::Detach),
                           InstanceMethod("destroy", &Layers::Destroy),
                       });
  }

  // new Layers({ optKind, optExid })
  explicit Layers(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Layers>(info) {
    Napi::Env env = info.Env();
    Napi::Object opts = info[0].As<Napi::Object>();
    skel_ = cw_layers::open();
    if (skel_ == nullptr) Throw(env, errno, "open the layer programs");
    skel_->rodata->cw_opt_kind = opts.Get("optKind").As<Napi::Number>().Uint32Value();
    skel_->rodata->cw_opt_exid = opts.Get("optExid").As<Napi::Number>().Uint32Value();
    int err;
    {
      SignalsHeld held;
      err = cw_layers::load(skel_);
    }
    if (err) {
      cw_layers::destroy(skel_);
      skel_ = nullptr;
      Throw(env, err, "load the layer programs");
    }
  }
  ~Layers() override { Free(); }

 private:
  // attach(netnsPath, ifname, 'in' | 'out') -> { ifindex, netns }: the netns's inode.
  Napi::Value Attach(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!skel_) throw Napi::Error::New(env, "the layer programs were destroyed");
    std::string nsPath = info[0].As<Napi::String>();
    std::string ifname = info[1].As<Napi::String>();
    bool egress = info[2].As<Napi::String>().Utf8Value() == "out";
    int target = open(nsPath.c_str(), O_RDONLY | O_CLOEXEC);
    if (target < 0) Throw(env, errno, "open the network namespace " + nsPath);
    struct stat st;
    if (fstat(target, &st) != 0) {
      int e = errno;
      close(target);
      Throw(env, e, "stat " + nsPath);
    }
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0) {
      int e = errno;
      close(target);
      Throw(env, e, "open this thread's network namespace");
    }
    if (setns(target, CLONE_NEWNET) != 0) {
      int e = errno;
      close(target);
      close(self);
      Throw(env, e, "enter the network namespace " + nsPath);
    }
    unsigned ifindex = if_nametoindex(ifname.c_str());
    int err = ifindex ? 0 : errno;
    int fd = -1;
    if (ifindex) {
      int prog = bpf_program__fd(egress ? skel_->progs.cw_layer_out : skel_->progs.cw_layer_in);
      fd = bpf_link_create(prog, static_cast<int>(ifindex), static_cast<bpf_attach_type>(egress ? kTcxEgress : kTcxIngress), nullptr);
      if (fd < 0) err = errno;
    }
    // Back home before anything can throw: this is the JavaScript thread.
    if (setns(self, CLONE_NEWNET) != 0) abort();
    close(self);
    close(target);
    if (!ifindex) Throw(env, err, "find interface " + ifname + " in " + nsPath);
    if (fd < 0) Throw(env, err, std::string("attach to ") + (egress ? "the egress" : "the ingress") + " of " + ifname + " in " + nsPath);
    links_.push_back(fd);
    Napi::Object o = Napi::Object::New(env);
    o.Set("ifindex", ifindex);
    o.Set("netns", static_cast<double>(st.st_ino));
    return o;
  }

  // read() -> [{ event (48-bit, hex), ifindex, netns, dir, ts (bigint, CLOCK_BOOTTIME), flags, len, seq, trace }]:
  // takes the stamps out of the table (lookup and delete), so that it never stays full.
  Napi::Value Read(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!skel_) throw Napi::Error::New(env, "the layer programs were destroyed");
    int fd = bpf_map__fd(skel_->maps.layer_stamps);
    std::vector<Key> keys;
    Key key{}, next{};
    Key *prev = nullptr;
    while (keys.size() < 65536 && bpf_map_get_next_key(fd, prev, &next) == 0) {
      keys.push_back(next);
      key = next;
      prev = &key;
    }
    Napi::Array out = Napi::Array::New(env);
    uint32_t n = 0;
    char hex[33];
    for (const Key &k : keys) {
      Stamp s{};
      if (bpf_map_lookup_and_delete_elem(fd, &k, &s) != 0) continue;
      Napi::Object o = Napi::Object::New(env);
      snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(k.event));
      o.Set("event", hex);
      o.Set("ifindex", k.ifindex);
      o.Set("netns", static_cast<double>(k.netns));
      o.Set("dir", k.dir ? "out" : "in");
      o.Set("ts", Napi::BigInt::New(env, s.ts));
      o.Set("flags", s.flags);
      o.Set("len", s.len);
      o.Set("seq", s.seq);
      for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", s.trace[i]);
      o.Set("trace", hex);
      out.Set(n++, o);
    }
    return out;
  }

  // counters() -> { packets, options, stored, full }, summed over CPUs.
  Napi::Value Counters(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!skel_) throw Napi::Error::New(env, "the layer programs were destroyed");
    int ncpu = libbpf_num_possible_cpus();
    std::vector<uint64_t> vals(ncpu > 0 ? ncpu : 1);
    const char *names[] = {"packets", "options", "stored", "full"};
    Napi::Object o = Napi::Object::New(env);
    int fd = bpf_map__fd(skel_->maps.layer_counters);
    for (uint32_t k = 0; k < 4; k++) {
      uint64_t sum = 0;
      if (bpf_map_lookup_elem(fd, &k, vals.data()) == 0)
        for (uint64_t v : vals) sum += v;
      o.Set(names[k], static_cast<double>(sum));
    }
    return o;
  }

  // detach(): every link closed (the programs leave the interfaces); the stamps stay readable.
  Napi::Value Detach(const Napi::CallbackInfo &info) {
    for (int fd : links_) close(fd);
    links_.clear();
    return info.Env().Undefined();
  }

  Napi::Value Destroy(const Napi::CallbackInfo &info) {
    Free();
    return info.Env().Undefined();
  }

  void Free() {
    for (int fd : links_) close(fd);
    links_.clear();
    if (skel_) cw_layers::destroy(skel_);
    skel_ = nullptr;
  }

  cw_layers *skel_ = nullptr;
  std::vector<int> links_;
};

}  // namespace

void InitLayers(Napi::Env env, Napi::Object exports) { exports.Set("Layers", Layers::Init(env)); }
