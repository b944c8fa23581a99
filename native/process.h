// Process-level plumbing the runtime needs and Node lacks: flock(2) on the
// run registry's lock files. Functions exported to JS; see src/runtime/registry.ts.
#pragma once
#include <napi.h>

void InitProcess(Napi::Env env, Napi::Object exports);
