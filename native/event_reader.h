// The thread that drains the shim's ring buffer and hands batches of raw
// events to JavaScript. One reader per loaded shim.
#pragma once

#include <napi.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

struct ring_buffer;

// Batch buffers, reused: JavaScript gets each batch without a copy (an
// external Buffer), and its finalizer gives the memory back here, so that the
// reader writes into pages it has touched before instead of fresh ones (a page
// fault per 4 KiB otherwise). Shared with the finalizers, which may run after
// the reader is gone.
class BatchPool {
 public:
  explicit BatchPool(size_t capacity) : capacity_(capacity) {}
  std::unique_ptr<std::vector<uint8_t>> Take();
  void Give(std::unique_ptr<std::vector<uint8_t>> buf);

 private:
  static constexpr size_t kKept = 8;  // free buffers kept at most; more are freed
  const size_t capacity_;
  std::mutex mu_;
  std::vector<std::unique_ptr<std::vector<uint8_t>>> free_;
};

class EventReader {
 public:
  // JS thread. Starts the reader thread on the ring buffer map; throws on failure.
  // on_batch(Buffer) receives whole events; on_batch(null) comes once, last.
  // poll_ms: how late an event may reach JS when the ring is not filling (the
  // shim wakes the thread only on a backlog); each wake-up costs the process
  // far more than the events it brings at a few thousand per second.
  EventReader(Napi::Env env, int ringbuf_fd, Napi::Function on_batch, size_t event_size, int poll_ms);
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
  int poll_ms_;
  Napi::ThreadSafeFunction tsfn_;
  std::shared_ptr<BatchPool> pool_;
  std::unique_ptr<std::vector<uint8_t>> batch_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};
