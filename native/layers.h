#pragma once
#include <napi.h>

// exports.Layers: the tc programs of causeway trace --layers (native/layers.cc).
void InitLayers(Napi::Env env, Napi::Object exports);
