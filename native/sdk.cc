// See sdk.h. Server side (the runtime, root): peerProcess, pidfdAlive, sendFd, closeFd.
// Client side (the traced program, any user): gettid, sdkAttach.
#include "sdk.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include <linux/types.h>

#include "causeway.h"

namespace {

[[noreturn]] void Throw(Napi::Env env, int err, const std::string &what) {
  Napi::Error e = Napi::Error::New(env, what + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  throw e;
}

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

// The pid a pidfd names in our pid namespace, from its fdinfo: > 0 while the
// process runs (or is a zombie), -1 once it is reaped, 0 outside our namespace.
int PidOfPidfd(int pidfd) {
  std::string path = "/proc/self/fdinfo/" + std::to_string(pidfd);
  FILE *f = fopen(path.c_str(), "re");
  if (f == nullptr) return -1;
  char line[256];
  int pid = -1;
  while (fgets(line, sizeof(line), f))
    if (sscanf(line, "Pid:\t%d", &pid) == 1) break;
  fclose(f);
  return pid;
}

// peerProcess(fd) -> { pidfd, pid, uid, gid }: the process that connected to
// this UNIX socket, as a pidfd (SO_PEERPIDFD, Linux 6.5): unlike a pid, it can
// never name another process. pid is what the pidfd names now (-1: exited);
// uid and gid are the credentials it connected with. Close pidfd with closeFd.
Napi::Value PeerProcess(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct ucred cred = {};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) Throw(env, errno, "read the peer's credentials");
  int pidfd = -1;
  len = sizeof(pidfd);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) != 0) {
    // ESRCH: the process that connected is gone.
    if (errno == ESRCH) pidfd = -1;
    else Throw(env, errno, "read the peer's pidfd (SO_PEERPIDFD needs Linux 6.5)");
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("pidfd", pidfd);
  o.Set("pid", pidfd >= 0 ? PidOfPidfd(pidfd) : -1);
  o.Set("uid", cred.uid);
  o.Set("gid", cred.gid);
  return o;
}

// pidfdAlive(pidfd): whether the process has not been reaped, so that its pid
// still names it (signal 0 sends nothing).
Napi::Value PidfdAlive(const Napi::CallbackInfo &info) {
  int pidfd = info[0].As<Napi::Number>().Int32Value();
  bool alive = syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) == 0;
  return Napi::Boolean::New(info.Env(), alive);
}

// sendFd(sock, fd, payload): one message carrying payload and a copy of fd (fd < 0: none).
Napi::Value SendFd(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int sock = info[0].As<Napi::Number>().Int32Value();
  int fd = info[1].As<Napi::Number>().Int32Value();
  auto payload = info[2].As<Napi::Buffer<char>>();
  struct iovec iov = {payload.Data(), payload.Length()};
  char control[CMSG_SPACE(sizeof(int))] = {};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  ssize_t n;
  do n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) Throw(env, errno, "send to the SDK client");
  return env.Undefined();
}

Napi::Value CloseFd(const Napi::CallbackInfo &info) {
  close(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

Napi::Value Gettid(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), static_cast<double>(syscall(SYS_gettid)));
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

// sdkAttach(socketPath) -> { tid, slot, memory: ArrayBuffer }. Blocking, once
// per thread: asks the runtime for a slot for the calling thread, receives
// the process's slot map and maps it shared.
Napi::Value SdkAttach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>();
  int tid = static_cast<int>(syscall(SYS_gettid));
  Fd sock;
  sock.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock.fd < 0) Throw(env, errno, "make a socket");
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) throw Napi::Error::New(env, "the SDK socket path is too long: " + path);
  memcpy(addr.sun_path, path.c_str(), path.size());
  if (connect(sock.fd, reinterpret_cast<struct sockaddr *>(&addr), sizeof(addr)) != 0)
    Throw(env, errno, "connect to the causeway runtime at " + path);
  std::string req = "attach " + std::to_string(tid) + "\n";
  if (send(sock.fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
    Throw(env, errno, "ask the causeway runtime for a slot");

  char reply[512];
  char control[CMSG_SPACE(sizeof(int))] = {};
  struct iovec iov = {reply, sizeof(reply) - 1};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do n = recvmsg(sock.fd, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) Throw(env, errno, "read the causeway runtime's answer");
  reply[n] = 0;
  Fd map;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(&map.fd, CMSG_DATA(c), sizeof(int));
  // The answer: "ok SLOT\n" or "error MESSAGE\n".
  std::string answer(reply, n);
  while (!answer.empty() && answer.back() == '\n') answer.pop_back();
  if (answer.rfind("ok ", 0) != 0 || map.fd < 0)
    throw Napi::Error::New(env, "the causeway runtime refused: " + (answer.rfind("error ", 0) == 0 ? answer.substr(6) : answer));
  int slot = std::stoi(answer.substr(3));
  if (slot < 0 || slot >= CW_SDK_SLOTS) throw Napi::Error::New(env, "the causeway runtime gave a bad slot: " + answer);

  size_t bytes = CW_SDK_SLOTS * sizeof(struct cw_sdk_slot);
  void *mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, map.fd, 0);
  if (mem == MAP_FAILED) Throw(env, errno, "map the SDK slots");
  // Mapped for the life of the process: the kernel reads it at every write.
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, mem, bytes, [](Napi::Env, void *) {});
  Napi::Object o = Napi::Object::New(env);
  o.Set("tid", tid);
  o.Set("slot", slot);
  o.Set("memory", ab);
  return o;
}

}  // namespace

void InitSdk(Napi::Env env, Napi::Object exports) {
  exports.Set("peerProcess", Napi::Function::New(env, PeerProcess));
  exports.Set("pidfdAlive", Napi::Function::New(env, PidfdAlive));
  exports.Set("sendFd", Napi::Function::New(env, SendFd));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
  exports.Set("gettid", Napi::Function::New(env, Gettid));
  exports.Set("sdkAttach", Napi::Function::New(env, SdkAttach));
}
