#include "event_reader.h"

#include <bpf/libbpf.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

namespace {

constexpr int kStopCheckMs = 50;       // the longest the thread blocks: how soon it sees a stop
constexpr size_t kBatchEvents = 2048;  // events per delivery to JS
constexpr size_t kQueuedBatches = 64;  // then the reader blocks and the ring absorbs bursts

int HandleEvent(void *ctx, void *data, size_t size) {
  return static_cast<EventReader *>(ctx)->OnEvent(data, size);
}

// What a JS Buffer's finalizer needs to give its memory back.
struct Lent {
  std::shared_ptr<BatchPool> pool;
  std::unique_ptr<std::vector<uint8_t>> buf;
};

}  // namespace

std::unique_ptr<std::vector<uint8_t>> BatchPool::Take() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_.empty()) {
      auto buf = std::move(free_.back());
      free_.pop_back();
      buf->clear();
      return buf;
    }
  }
  auto buf = std::make_unique<std::vector<uint8_t>>();
  buf->reserve(capacity_);
  return buf;
}

void BatchPool::Give(std::unique_ptr<std::vector<uint8_t>> buf) {
  std::lock_guard<std::mutex> lock(mu_);
  if (free_.size() < kKept) free_.push_back(std::move(buf));
}

EventReader::EventReader(Napi::Env env, int ringbuf_fd, Napi::Function on_batch, size_t event_size, int poll_ms)
    : event_size_(event_size), poll_ms_(poll_ms) {
  rb_ = ring_buffer__new(ringbuf_fd, HandleEvent, this, nullptr);
  if (rb_ == nullptr) {
    int err = errno;
    Napi::Error e = Napi::Error::New(env, std::string("failed to open the event ring buffer: ") + strerror(err));
    e.Set("errno", Napi::Number::New(env, err));
    throw e;
  }
  tsfn_ = Napi::ThreadSafeFunction::New(env, on_batch, "causeway-events", kQueuedBatches, 1);
  pool_ = std::make_shared<BatchPool>(kBatchEvents * event_size_);
  batch_ = pool_->Take();
  thread_ = std::thread([this] { Run(); });
}

EventReader::~EventReader() {
  RequestStop();
  if (thread_.joinable()) thread_.join();
  ring_buffer__free(rb_);
}

int EventReader::OnEvent(const void *data, size_t size) {
  if (size != event_size_) return 0;  // cannot happen with one build of both sides
  const auto *bytes = static_cast<const uint8_t *>(data);
  batch_->insert(batch_->end(), bytes, bytes + size);
  if (batch_->size() >= kBatchEvents * event_size_) Flush();
  return 0;
}

void EventReader::Flush() {
  if (batch_->empty()) return;
  auto *lent = new Lent{pool_, std::move(batch_)};
  batch_ = pool_->Take();
  // Blocking: a slow consumer lets the ring fill up, where the shim counts drops.
  napi_status status = tsfn_.BlockingCall(lent, [](Napi::Env env, Napi::Function fn, Lent *l) {
    if (env == nullptr || fn == nullptr) {
      delete l;
      return;
    }
    // No copy: the Buffer is the batch; its finalizer gives the memory back to the pool.
    auto *data = l->buf->data();
    size_t size = l->buf->size();
    int64_t held = static_cast<int64_t>(l->buf->capacity());
    Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::New(
        env, data, size,
        [held](Napi::Env env, uint8_t *, Lent *l) {
          Napi::MemoryManagement::AdjustExternalMemory(env, -held);
          l->pool->Give(std::move(l->buf));
          delete l;
        },
        l);
    // So that the garbage collector counts what the batches hold.
    Napi::MemoryManagement::AdjustExternalMemory(env, held);
    fn.Call({buf});
  });
  if (status != napi_ok) delete lent;
}

void EventReader::Run() {
  using Clock = std::chrono::steady_clock;
  auto flushed = Clock::now();
  while (!stopping_.load(std::memory_order_acquire)) {
    // Never blocked longer than kStopCheckMs, so that a stop is quick whatever poll_ms_ is.
    int n = ring_buffer__poll(rb_, std::min(poll_ms_, kStopCheckMs));
    if (n < 0 && n != -EINTR) break;
    // poll() consumes only after a wake-up, and the shim wakes us only on a backlog:
    // take what arrived without one too, so that events are at most poll_ms_ late.
    if (n == 0 && ring_buffer__consume(rb_) < 0) break;
    // JS gets a batch on a backlog, when one is full (OnEvent), or once poll_ms_ has passed:
    // each delivery wakes the process's main thread, which costs far more than this thread's wake-ups.
    auto now = Clock::now();
    if (n > 0 || now - flushed >= std::chrono::milliseconds(poll_ms_)) {
      Flush();
      flushed = now;
    }
  }
  ring_buffer__consume(rb_);  // what the shim wrote before it was detached
  Flush();
  tsfn_.BlockingCall([](Napi::Env env, Napi::Function fn) {
    if (env != nullptr && fn != nullptr) fn.Call({env.Null()});
  });
  tsfn_.Release();
}

void EventReader::RequestStop() { stopping_.store(true, std::memory_order_release); }
