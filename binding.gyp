{
  "targets": [
    {
      "target_name": "causeway",
      "sources": ["native/addon.cc", "native/batch.cc", "native/event_reader.cc", "native/jsonl.cc", "native/process.cc", "native/sched.cc", "native/sdk.cc", "native/layers.cc"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "bpf/.output",
        "bpf"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wno-missing-field-initializers"],
      "libraries": ["-lbpf", "-lelf", "-lz"]
    }
  ]
}
