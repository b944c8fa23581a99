// The in-process SDK's plumbing: the runtime hands a process its own slot
// map over a UNIX socket (SCM_RIGHTS), after checking who asks (SO_PEERCRED);
// the process maps it. Functions exported to JS; see src/sdk/ and src/actor/.
#pragma once
#include <napi.h>

void InitSdk(Napi::Env env, Napi::Object exports);
