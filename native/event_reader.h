// The thread that drains the shim's ring buffer and hands batches of raw
// events to JavaScript. One reader per loaded shim.
#pragma once

#include <napi.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

struct ring_buffer;

class EventReader {
 public:
  // JS thread. Starts the reader thread on the ring buffer map; throws on failure.
  // on_batch(Buffer) receives whole events; on_batch(null) comes once, last.
  EventReader(Napi::Env env, int ringbuf_fd, Napi::Function on_batch, size_t event_size);
  ~EventReader();

  // JS thread. Asks the thread to drain what is left and finish; returns at once.
  // The final on_batch(null) says it is done.
  void RequestStop();

  // Reader thread: called by libbpf for each event.
  int OnEvent(const void *data, size_t size);

 private:
  void Run();    // reader thread
  void Flush();  // reader thread: hand the current batch to JS

  ring_buffer *rb_ = nullptr;
  size_t event_size_;
  Napi::ThreadSafeFunction tsfn_;
  std::vector<uint8_t> batch_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};
