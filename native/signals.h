// Signals held while a BPF object loads.
#pragma once

#include <pthread.h>
#include <signal.h>

// The kernel's verifier gives up with EAGAIN when the loading thread has a
// signal pending, and libbpf retries a load only a few times: a process that
// is signalled often (node --cpu-prof sends SIGPROF every millisecond) could
// never load programs that take the verifier longer than that, as the shim's
// do. Held, not lost: what arrives meanwhile is delivered once the load is
// done (SIGKILL and SIGSTOP cannot be held and are not).
class SignalsHeld {
 public:
  SignalsHeld() {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old_);
  }
  ~SignalsHeld() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  SignalsHeld(const SignalsHeld &) = delete;
  SignalsHeld &operator=(const SignalsHeld &) = delete;

 private:
  sigset_t old_;
};
