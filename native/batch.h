// The trace store's event blobs: raw batches of struct cw_event packed into a
// compact, versioned encoding, and unpacked again (src/tracer/store.ts; the
// format is in docs/tracer.md). Functions exported to JS; they run on the
// calling thread (the main thread or a worker) and never block.
#pragma once
#include <napi.h>

void InitBatch(Napi::Env env, Napi::Object exports);
