// See process.h. Every function runs on the JS thread and never blocks.
#include "process.h"

#include <sys/file.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace {

[[noreturn]] void Throw(Napi::Env env, int err, const std::string &step) {
  Napi::Error e = Napi::Error::New(env, "failed to " + step + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  throw e;
}

// flockTry(fd) -> true once this open file holds an exclusive flock(2) on it,
// false if another open file holds one. The lock lives as long as the open
// file description: closing the last fd to it (or dying) releases it.
Napi::Value FlockTry(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  int rc;
  do {
    rc = flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return Napi::Boolean::New(env, true);
  if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
  Throw(env, errno, "lock fd " + std::to_string(fd));
}

}  // namespace

void InitProcess(Napi::Env env, Napi::Object exports) {
  exports.Set("flockTry", Napi::Function::New(env, FlockTry));
}
