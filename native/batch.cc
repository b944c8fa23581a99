// See batch.h. A blob holds the events of one or more raw batches, in
// arrival order, with only what the trace store reads back (docs/tracer.md,
// "The event blob"): per event a header byte, the time as a delta, indexes
// into dictionaries built as the blob is written (thread, trace, channel),
// the event id, parents as back-references to earlier events of the blob
// when they are there, and the rest only when not zero. Optionally the body
// is deflated (zlib). Unpacking gives back whole struct cw_event, zeroed
// except the fields stored, which the TypeScript decoder reads as it reads
// the kernel's.
#include "batch.h"

#include <linux/types.h>
#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "causeway.h"

namespace {

static_assert(sizeof(struct cw_event) == 288, "struct cw_event changed: bump kFormat and update docs/tracer.md");

constexpr uint8_t kMagic0 = 'c';
constexpr uint8_t kMagic1 = 'w';
constexpr uint8_t kFormat = 1;     // the blob format (batches.format)
constexpr uint8_t kDeflated = 1;   // header flag: the body is zlib-compressed
constexpr size_t kMaxEvent = 512;  // an event never takes more than this, encoded

// Event header byte.
constexpr uint8_t H_TYPE = 0x07;   // type 1-7; 0: a raw type byte follows
constexpr uint8_t H_FLAGS = 0x08;  // a flags byte follows (else 0)
constexpr uint8_t H_PRIO = 0x10;   // a priority byte follows (else 0)
constexpr uint8_t H_CHAN = 0x20;   // a channel index follows (else no channel, no path)
constexpr uint8_t H_ARGS = 0x40;   // arg and arg2 follow (else 0)
constexpr uint8_t H_WIDE = 0x80;   // the id and literal parents are 8 bytes, not 6
// Parents byte: bits 0-2 parents stored (at most CW_MAX_PARENTS); bit 3: the raw
// nparents byte follows; bit 4 + i: parent i is a back-reference, not a literal.
constexpr uint8_t P_COUNT = 0x07;
constexpr uint8_t P_RAW = 0x08;

// Channel literal: which TCP parts follow.
constexpr uint8_t T_LADDR = 1, T_RADDR = 2, T_PORTS = 4;
// Path (exec: the file; UNIX: the socket's name): how the string sits in the field.
constexpr uint8_t PATH_NONE = 0, PATH_PLAIN = 1, PATH_ABSTRACT = 2;

struct WhoKey {
  uint32_t pid, tid;
  char comm[16];  // up to the first NUL, zeros after
};

struct TraceKey {
  uint8_t id[16];
};

// Everything the decoder reads for a channel (and an exec's path), normalized:
// the path holds only the string the decoder takes, zeros after it.
struct ChanKey {
  uint8_t kind, sotype, pad[2];
  uint32_t dev;
  uint64_t ino;
  uint8_t path[CW_PATH_BYTES];
  uint8_t laddr[16], raddr[16];
  uint16_t lport, rport;
  uint32_t pad2;
};

template <typename K>
uint64_t HashKey(const K &k) {
  static_assert(sizeof(K) % 8 == 0, "keys are whole words");
  uint64_t h = 0x243f6a8885a308d3ULL;
  const auto *b = reinterpret_cast<const uint8_t *>(&k);
  for (size_t i = 0; i < sizeof(K); i += 8) {
    uint64_t w;
    memcpy(&w, b + i, 8);
    h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
    h ^= h >> 29;
  }
  return h;
}

size_t Pow2AtLeast(size_t n) {
  size_t c = 16;
  while (c < n) c <<= 1;
  return c;
}

// Keys to dense indexes, in order of first appearance (open addressing).
template <typename K>
class Dict {
 public:
  void Reset(size_t max_keys) {
    mask_ = Pow2AtLeast(2 * max_keys + 1) - 1;
    slots_.assign(mask_ + 1, -1);
    keys.clear();
  }
  // The key's index; *added says whether it is new (then its index is keys.size() - 1).
  uint32_t Find(const K &k, bool *added) {
    for (size_t i = HashKey(k) & mask_;; i = (i + 1) & mask_) {
      int32_t s = slots_[i];
      if (s < 0) {
        slots_[i] = static_cast<int32_t>(keys.size());
        keys.push_back(k);
        *added = true;
        return static_cast<uint32_t>(keys.size() - 1);
      }
      if (memcmp(&keys[s], &k, sizeof(K)) == 0) {
        *added = false;
        return static_cast<uint32_t>(s);
      }
    }
  }
  std::vector<K> keys;

 private:
  size_t mask_ = 0;
  std::vector<int32_t> slots_;
};

// Event ids to the index of the latest event of the blob that has them.
class IdMap {
 public:
  void Reset(size_t max_ids) {
    mask_ = Pow2AtLeast(2 * max_ids + 1) - 1;
    slots_.assign(mask_ + 1, -1);
    ids_.clear();
  }
  int64_t Find(uint64_t id) const {
    for (size_t i = Mix(id) & mask_;; i = (i + 1) & mask_) {
      int32_t s = slots_[i];
      if (s < 0) return -1;
      if (ids_[s] == id) return s;
    }
  }
  // Appends event number ids_.size() with this id.
  void Add(uint64_t id) {
    int32_t idx = static_cast<int32_t>(ids_.size());
    ids_.push_back(id);
    for (size_t i = Mix(id) & mask_;; i = (i + 1) & mask_) {
      int32_t s = slots_[i];
      if (s < 0 || ids_[s] == id) {
        slots_[i] = idx;
        return;
      }
    }
  }

 private:
  static uint64_t Mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
  }
  size_t mask_ = 0;
  std::vector<int32_t> slots_;
  std::vector<uint64_t> ids_;
};

// A field of an event in a caller's buffer, which may not be aligned.
#define Field(ev, f)                                                                      \
  ([](const struct cw_event *e) {                                                         \
    decltype(e->f) v;                                                                     \
    memcpy(&v, reinterpret_cast<const uint8_t *>(e) + offsetof(struct cw_event, f), sizeof v); \
    return v;                                                                             \
  }(ev))

// Whether two events have the same bytes wherever the decoder reads a channel
// (or an exec's path): kind, device and inode, path, addresses, ports, socket type.
bool SameChanBytes(const struct cw_event *a, const struct cw_event *b) {
  const auto *x = reinterpret_cast<const uint8_t *>(a);
  const auto *y = reinterpret_cast<const uint8_t *>(b);
  constexpr size_t kind = offsetof(struct cw_event, chan_kind);
  constexpr size_t dev = offsetof(struct cw_event, chan_dev);
  constexpr size_t ino_end = offsetof(struct cw_event, chan_ino) + 8;
  constexpr size_t path = offsetof(struct cw_event, path);
  constexpr size_t so_end = offsetof(struct cw_event, sotype) + 1;
  return x[kind] == y[kind] && memcmp(x + dev, y + dev, ino_end - dev) == 0 && memcmp(x + path, y + path, so_end - path) == 0;
}

struct ChanLast {
  const struct cw_event *ev;
  int64_t chan;
};

struct TraceStat {
  int64_t first, last;  // epoch ns
  uint32_t count;
};

// Scratch state of one thread's packer, kept between calls.
struct Packer {
  Dict<WhoKey> who;
  Dict<TraceKey> traces;
  Dict<ChanKey> chans;
  Dict<uint64_t> trace_pids;  // trace index << 32 | pid
  IdMap ids;
  std::vector<TraceStat> stats;
  std::vector<ChanLast> last;  // per who index
  std::vector<uint8_t> body;
  std::vector<uint8_t> out;
};

thread_local Packer *t_packer = nullptr;

inline uint8_t *PutVarint(uint8_t *p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<uint8_t>(v) | 0x80;
    v >>= 7;
  }
  *p++ = static_cast<uint8_t>(v);
  return p;
}

inline uint8_t *PutFixed(uint8_t *p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
  return p + bytes;
}

inline uint64_t Zigzag(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }
inline int64_t Unzigzag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }

bool AllZero(const void *p, size_t n) {
  const auto *b = static_cast<const uint8_t *>(p);
  for (size_t i = 0; i < n; i++)
    if (b[i]) return false;
  return true;
}

// The string the decoder takes from a path field: from byte 0 up to a NUL, or,
// when byte 0 is NUL (an abstract UNIX name), from byte 1 up to a NUL.
void NormPath(const char *src, uint8_t *dst) {
  memset(dst, 0, CW_PATH_BYTES);
  if (src[0] != 0)
    memcpy(dst, src, strnlen(src, CW_PATH_BYTES));
  else
    memcpy(dst + 1, src + 1, strnlen(src + 1, CW_PATH_BYTES - 1));
}

uint8_t *PutChan(uint8_t *p, const ChanKey &c) {
  *p++ = c.kind;
  *p++ = c.sotype;
  p = PutVarint(p, c.dev);
  p = PutVarint(p, c.ino);
  const char *path = reinterpret_cast<const char *>(c.path);
  if (path[0] != 0) {
    size_t n = strnlen(path, CW_PATH_BYTES);
    *p++ = PATH_PLAIN;
    *p++ = static_cast<uint8_t>(n);
    memcpy(p, path, n);
    p += n;
  } else if (path[1] != 0) {
    size_t n = strnlen(path + 1, CW_PATH_BYTES - 1);
    *p++ = PATH_ABSTRACT;
    *p++ = static_cast<uint8_t>(n);
    memcpy(p, path + 1, n);
    p += n;
  } else {
    *p++ = PATH_NONE;
  }
  uint8_t mask = (AllZero(c.laddr, 16) ? 0 : T_LADDR) | (AllZero(c.raddr, 16) ? 0 : T_RADDR) | (c.lport || c.rport ? T_PORTS : 0);
  *p++ = mask;
  if (mask & T_LADDR) {
    memcpy(p, c.laddr, 16);
    p += 16;
  }
  if (mask & T_RADDR) {
    memcpy(p, c.raddr, 16);
    p += 16;
  }
  if (mask & T_PORTS) {
    p = PutVarint(p, c.lport);
    p = PutVarint(p, c.rport);
  }
  return p;
}

[[noreturn]] void Corrupt(Napi::Env env, const std::string &what) {
  throw Napi::Error::New(env, "corrupt event blob: " + what);
}

// Bounds-checked reading of a blob.
class Reader {
 public:
  Reader(Napi::Env env, const uint8_t *p, size_t n) : env_(env), p_(p), end_(p + n) {}
  uint8_t U8() {
    Need(1);
    return *p_++;
  }
  uint64_t Varint(uint64_t max = UINT64_MAX) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = U8();
      if (shift == 63 && b > 1) Corrupt(env_, "a number overflows 64 bits");
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        if (v > max) Corrupt(env_, "a number out of range");
        return v;
      }
    }
    Corrupt(env_, "a number overflows 64 bits");
  }
  uint64_t Fixed(int bytes) {
    Need(bytes);
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= static_cast<uint64_t>(p_[i]) << (8 * i);
    p_ += bytes;
    return v;
  }
  void Bytes(void *dst, size_t n) {
    Need(n);
    memcpy(dst, p_, n);
    p_ += n;
  }
  size_t Left() const { return static_cast<size_t>(end_ - p_); }
  const uint8_t *Here() const { return p_; }

 private:
  void Need(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) Corrupt(env_, "it ends early");
  }
  Napi::Env env_;
  const uint8_t *p_;
  const uint8_t *end_;
};

void GetChan(Reader &r, Napi::Env env, ChanKey *c) {
  memset(c, 0, sizeof *c);
  c->kind = r.U8();
  c->sotype = r.U8();
  c->dev = static_cast<uint32_t>(r.Varint(UINT32_MAX));
  c->ino = r.Varint();
  uint8_t mode = r.U8();
  if (mode == PATH_PLAIN || mode == PATH_ABSTRACT) {
    size_t at = mode == PATH_PLAIN ? 0 : 1;
    size_t n = r.U8();
    if (n == 0 || n > CW_PATH_BYTES - at) Corrupt(env, "a path of a bad length");
    r.Bytes(c->path + at, n);
    if (memchr(c->path + at, 0, n)) Corrupt(env, "a path with a NUL inside");
  } else if (mode != PATH_NONE) {
    Corrupt(env, "an unknown path mode");
  }
  uint8_t mask = r.U8();
  if (mask & ~(T_LADDR | T_RADDR | T_PORTS)) Corrupt(env, "unknown TCP parts");
  if (mask & T_LADDR) r.Bytes(c->laddr, 16);
  if (mask & T_RADDR) r.Bytes(c->raddr, 16);
  if (mask & T_PORTS) {
    c->lport = static_cast<uint16_t>(r.Varint(UINT16_MAX));
    c->rport = static_cast<uint16_t>(r.Varint(UINT16_MAX));
  }
}

// pack(batches: Buffer[], clockOffset: bigint, level: number)
//   -> { blob: Buffer, traces: Buffer, pids: Buffer }
// traces: per trace of the blob, in order of first appearance, 40 bytes:
// id[16], first and last ts (i64, epoch ns), events (u32), processes (u32);
// pids: the processes' pids (u32), trace after trace. Level 0 stores the
// body as is; 1-9 deflates it.
Napi::Value Pack(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "pack takes an array of raw batches");
  Napi::Array arr = info[0].As<Napi::Array>();
  bool lossless = false;
  int64_t offset = info[1].As<Napi::BigInt>().Int64Value(&lossless);
  if (!lossless) throw Napi::RangeError::New(env, "the clock offset does not fit 64 bits");
  int level = info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : 0;
  if (level < 0 || level > 9) throw Napi::RangeError::New(env, "the deflate level is 0 to 9");

  std::vector<std::pair<const uint8_t *, size_t>> inputs;
  size_t total = 0;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr[i];
    if (!v.IsBuffer()) throw Napi::TypeError::New(env, "a raw batch is a Buffer");
    auto b = v.As<Napi::Buffer<uint8_t>>();
    if (b.Length() % sizeof(struct cw_event)) throw Napi::RangeError::New(env, "a raw batch holds whole events (" + std::to_string(sizeof(struct cw_event)) + " bytes each)");
    inputs.emplace_back(b.Data(), b.Length() / sizeof(struct cw_event));
    total += b.Length() / sizeof(struct cw_event);
  }
  if (total > (1u << 30)) throw Napi::RangeError::New(env, "too many events for one blob");

  if (!t_packer) t_packer = new Packer();  // one per thread, for the thread's life
  Packer &pk = *t_packer;
  pk.who.Reset(total);
  pk.traces.Reset(total);
  pk.chans.Reset(total);
  pk.trace_pids.Reset(total);
  pk.ids.Reset(total);
  pk.stats.clear();
  pk.body.resize(total * 24 + kMaxEvent);
  size_t pos = 0;
  uint64_t prev_ts = 0;
  uint32_t index = 0;
  // Per thread (who index): its last event and that event's channel index
  // (-1: none), so that a thread's next event on the same channel skips the
  // channel's normalization and lookup.
  pk.last.clear();
  for (auto &[data, count] : inputs) {
    for (size_t k = 0; k < count; k++, index++) {
      const auto *ev = reinterpret_cast<const struct cw_event *>(data + k * sizeof(struct cw_event));
      if (pk.body.size() < pos + kMaxEvent) pk.body.resize(pk.body.size() * 2 + kMaxEvent);
      uint8_t *p = pk.body.data() + pos;

      uint64_t ts = Field(ev, ts);
      uint32_t pid = Field(ev, pid);
      WhoKey wk;
      wk.pid = pid;
      wk.tid = Field(ev, tid);
      memset(wk.comm, 0, sizeof wk.comm);
      memcpy(wk.comm, ev->comm, strnlen(ev->comm, sizeof wk.comm));
      TraceKey tk;
      memcpy(tk.id, ev->rec.trace_id, 16);

      uint8_t nparents = ev->nparents;
      uint8_t np = nparents < CW_MAX_PARENTS ? nparents : CW_MAX_PARENTS;
      uint64_t id = Field(ev, rec.event_id);
      bool wide = (id >> 48) != 0;
      uint8_t pbyte = np | (nparents > CW_MAX_PARENTS ? P_RAW : 0);
      int64_t ref[CW_MAX_PARENTS];
      uint64_t parent[CW_MAX_PARENTS];
      for (int j = 0; j < np; j++) {
        memcpy(&parent[j], reinterpret_cast<const uint8_t *>(ev) + offsetof(struct cw_event, parents) + 8 * j, 8);
        ref[j] = pk.ids.Find(parent[j]);
        if (ref[j] >= 0)
          pbyte |= static_cast<uint8_t>(0x10 << j);
        else if (parent[j] >> 48)
          wide = true;
      }

      bool who_added, added;
      uint32_t w = pk.who.Find(wk, &who_added);
      if (who_added) pk.last.push_back({nullptr, -1});
      // The channel: the thread's last one if the bytes the decoder reads are the same.
      int64_t chan;
      ChanLast &last = pk.last[w];
      if (last.ev && SameChanBytes(last.ev, ev)) {
        chan = last.chan;
        added = false;
      } else {
        ChanKey ck;
        memset(&ck, 0, sizeof ck);
        ck.kind = ev->chan_kind;
        ck.sotype = ev->sotype;
        ck.dev = Field(ev, chan_dev);
        ck.ino = Field(ev, chan_ino);
        NormPath(ev->path, ck.path);
        memcpy(ck.laddr, ev->laddr, 16);
        memcpy(ck.raddr, ev->raddr, 16);
        ck.lport = Field(ev, lport);
        ck.rport = Field(ev, rport);
        if (AllZero(&ck, sizeof ck)) {
          chan = -1;
          added = false;
        } else {
          chan = pk.chans.Find(ck, &added);
        }
      }
      last = {ev, chan};

      uint8_t type = ev->type;
      uint8_t flags = ev->flags;
      uint8_t prio = ev->rec.priority;
      uint32_t arg = Field(ev, arg), arg2 = Field(ev, arg2);
      uint8_t h = (type >= 1 && type <= 7 ? type : 0) | (flags ? H_FLAGS : 0) | (prio ? H_PRIO : 0) | (chan >= 0 ? H_CHAN : 0) |
                  (arg || arg2 ? H_ARGS : 0) | (wide ? H_WIDE : 0);
      int idbytes = wide ? 8 : 6;
      *p++ = h;
      *p++ = pbyte;
      p = PutVarint(p, Zigzag(static_cast<int64_t>(ts - prev_ts)));
      prev_ts = ts;

      p = PutVarint(p, w);
      if (who_added) {
        p = PutVarint(p, wk.pid);
        p = PutVarint(p, wk.tid);
        size_t n = strnlen(wk.comm, sizeof wk.comm);
        *p++ = static_cast<uint8_t>(n);
        memcpy(p, wk.comm, n);
        p += n;
      }
      bool trace_added;
      uint32_t t = pk.traces.Find(tk, &trace_added);
      p = PutVarint(p, t);
      if (trace_added) {
        memcpy(p, tk.id, 16);
        p += 16;
        pk.stats.push_back({INT64_MAX, INT64_MIN, 0});
      }
      p = PutFixed(p, id, idbytes);
      for (int j = 0; j < np; j++) p = ref[j] >= 0 ? PutVarint(p, index - ref[j]) : PutFixed(p, parent[j], idbytes);
      if (prio) *p++ = prio;
      if (flags) *p++ = flags;
      if (!(h & H_TYPE)) *p++ = type;
      if (pbyte & P_RAW) *p++ = nparents;
      p = PutVarint(p, Field(ev, bytes));
      if (h & H_ARGS) {
        p = PutVarint(p, arg);
        p = PutVarint(p, arg2);
      }
      if (chan >= 0) {
        p = PutVarint(p, static_cast<uint64_t>(chan));
        if (added) p = PutChan(p, pk.chans.keys[chan]);
      }
      pos = static_cast<size_t>(p - pk.body.data());
      pk.ids.Add(id);

      TraceStat &s = pk.stats[t];
      int64_t at = static_cast<int64_t>(ts + static_cast<uint64_t>(offset));
      if (at < s.first) s.first = at;
      if (at > s.last) s.last = at;
      s.count++;
      pk.trace_pids.Find((static_cast<uint64_t>(t) << 32) | pid, &added);
    }
  }

  // Header, then the body (deflated or not).
  std::vector<uint8_t> &out = pk.out;
  out.resize(32 + (level ? compressBound(pos) : pos));
  uint8_t *p = out.data();
  *p++ = kMagic0;
  *p++ = kMagic1;
  *p++ = kFormat;
  *p++ = level ? kDeflated : 0;
  p = PutVarint(p, total);
  p = PutVarint(p, Zigzag(offset));
  size_t len;
  if (level) {
    p = PutVarint(p, pos);
    uLongf dst = static_cast<uLongf>(out.size() - (p - out.data()));
    int rc = compress2(p, &dst, pk.body.data(), pos, level);
    if (rc != Z_OK) throw Napi::Error::New(env, "failed to deflate an event blob: zlib error " + std::to_string(rc));
    len = (p - out.data()) + dst;
  } else {
    memcpy(p, pk.body.data(), pos);
    len = (p - out.data()) + pos;
  }

  size_t ntraces = pk.traces.keys.size();
  Napi::Buffer<uint8_t> traces = Napi::Buffer<uint8_t>::New(env, ntraces * 40);
  std::vector<uint32_t> npids(ntraces, 0);
  for (uint64_t k : pk.trace_pids.keys) npids[k >> 32]++;
  std::vector<size_t> at(ntraces, 0);
  for (size_t i = 1; i < ntraces; i++) at[i] = at[i - 1] + npids[i - 1];
  Napi::Buffer<uint8_t> pids = Napi::Buffer<uint8_t>::New(env, pk.trace_pids.keys.size() * 4);
  for (uint64_t k : pk.trace_pids.keys) {
    uint32_t pid = static_cast<uint32_t>(k);
    memcpy(pids.Data() + 4 * at[k >> 32]++, &pid, 4);
  }
  for (size_t i = 0; i < ntraces; i++) {
    uint8_t *e = traces.Data() + 40 * i;
    memcpy(e, pk.traces.keys[i].id, 16);
    memcpy(e + 16, &pk.stats[i].first, 8);
    memcpy(e + 24, &pk.stats[i].last, 8);
    memcpy(e + 32, &pk.stats[i].count, 4);
    memcpy(e + 36, &npids[i], 4);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("blob", Napi::Buffer<uint8_t>::Copy(env, out.data(), len));
  o.Set("traces", traces);
  o.Set("pids", pids);
  return o;
}

// unpack(blob: Buffer, trace?: Buffer(16) | null)
//   -> { events: Buffer (whole struct cw_event), clockOffset: bigint, total: number }
// Only the events of `trace` when given; total counts every event of the blob.
Napi::Value Unpack(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!info[0].IsBuffer()) throw Napi::TypeError::New(env, "unpack takes a Buffer");
  auto blob = info[0].As<Napi::Buffer<uint8_t>>();
  const uint8_t *want = nullptr;
  if (info.Length() > 1 && !info[1].IsNull() && !info[1].IsUndefined()) {
    if (!info[1].IsBuffer() || info[1].As<Napi::Buffer<uint8_t>>().Length() != 16) throw Napi::TypeError::New(env, "a trace id is 16 bytes");
    want = info[1].As<Napi::Buffer<uint8_t>>().Data();
  }
  Reader hr(env, blob.Data(), blob.Length());
  if (hr.U8() != kMagic0 || hr.U8() != kMagic1) Corrupt(env, "not an event blob");
  uint8_t format = hr.U8();
  if (format != kFormat) throw Napi::Error::New(env, "event blob format " + std::to_string(format) + " is not known to this causeway (it reads " + std::to_string(kFormat) + ")");
  uint8_t flags = hr.U8();
  if (flags & ~kDeflated) Corrupt(env, "unknown flags");
  uint64_t total = hr.Varint(1u << 30);
  int64_t offset = Unzigzag(hr.Varint());
  std::vector<uint8_t> inflated;
  const uint8_t *body = hr.Here();
  size_t body_len = hr.Left();
  if (flags & kDeflated) {
    // zlib inflates at most about 1032:1.
    uint64_t n = hr.Varint(std::min<uint64_t>(total * kMaxEvent, hr.Left() * 1032ULL + 64));
    inflated.resize(n);
    uLongf got = static_cast<uLongf>(n);
    if (uncompress(inflated.data(), &got, hr.Here(), hr.Left()) != Z_OK || got != n) Corrupt(env, "its body does not inflate");
    body = inflated.data();
    body_len = n;
  }
  if (total > body_len) Corrupt(env, "more events than bytes");

  Reader r(env, body, body_len);
  std::vector<WhoKey> who;
  std::vector<bool> match;  // per trace index
  std::vector<TraceKey> traces;
  std::vector<ChanKey> chans;
  std::vector<uint64_t> ids;
  ids.reserve(total);
  std::vector<uint8_t> out;
  uint64_t prev_ts = 0;
  struct cw_event ev;
  for (uint64_t i = 0; i < total; i++) {
    uint8_t h = r.U8();
    uint8_t pbyte = r.U8();
    uint8_t np = pbyte & P_COUNT;
    if (np > CW_MAX_PARENTS) Corrupt(env, "too many parents");
    int idbytes = h & H_WIDE ? 8 : 6;
    uint64_t ts = prev_ts + static_cast<uint64_t>(Unzigzag(r.Varint()));
    prev_ts = ts;
    uint64_t w = r.Varint(who.size());
    if (w == who.size()) {
      WhoKey k{};
      k.pid = static_cast<uint32_t>(r.Varint(UINT32_MAX));
      k.tid = static_cast<uint32_t>(r.Varint(UINT32_MAX));
      size_t n = r.U8();
      if (n > sizeof k.comm) Corrupt(env, "a command name too long");
      r.Bytes(k.comm, n);
      who.push_back(k);
    }
    uint64_t t = r.Varint(traces.size());
    if (t == traces.size()) {
      TraceKey k;
      r.Bytes(k.id, 16);
      traces.push_back(k);
      match.push_back(want == nullptr || memcmp(k.id, want, 16) == 0);
    }
    uint64_t id = r.Fixed(idbytes);
    uint64_t parents[CW_MAX_PARENTS] = {0, 0, 0, 0};
    for (int j = 0; j < np; j++) {
      if (pbyte & (0x10 << j)) {
        uint64_t back = r.Varint(i);
        if (back == 0) Corrupt(env, "a parent refers to its own event");
        parents[j] = ids[i - back];
      } else {
        parents[j] = r.Fixed(idbytes);
      }
    }
    uint8_t prio = h & H_PRIO ? r.U8() : 0;
    uint8_t evflags = h & H_FLAGS ? r.U8() : 0;
    uint8_t type = h & H_TYPE ? (h & H_TYPE) : r.U8();
    uint8_t nparents = pbyte & P_RAW ? r.U8() : np;
    uint64_t bytes = r.Varint();
    uint32_t arg = 0, arg2 = 0;
    if (h & H_ARGS) {
      arg = static_cast<uint32_t>(r.Varint(UINT32_MAX));
      arg2 = static_cast<uint32_t>(r.Varint(UINT32_MAX));
    }
    const ChanKey *ck = nullptr;
    if (h & H_CHAN) {
      uint64_t c = r.Varint(chans.size());
      if (c == chans.size()) {
        chans.emplace_back();
        GetChan(r, env, &chans.back());
      }
      ck = &chans[c];
    }
    ids.push_back(id);
    if (!match[t]) continue;

    memset(&ev, 0, sizeof ev);
    ev.ts = ts;
    ev.pid = who[w].pid;
    ev.tid = who[w].tid;
    memcpy(ev.comm, who[w].comm, sizeof ev.comm);
    ev.type = type;
    ev.nparents = nparents;
    ev.flags = evflags;
    ev.arg = arg;
    ev.arg2 = arg2;
    ev.bytes = bytes;
    memcpy(ev.parents, parents, sizeof parents);
    ev.rec.priority = prio;
    memcpy(ev.rec.trace_id, traces[t].id, 16);
    ev.rec.event_id = id;
    if (ck) {
      ev.chan_kind = ck->kind;
      ev.sotype = ck->sotype;
      ev.chan_dev = ck->dev;
      ev.chan_ino = ck->ino;
      memcpy(ev.path, ck->path, sizeof ev.path);
      memcpy(ev.laddr, ck->laddr, 16);
      memcpy(ev.raddr, ck->raddr, 16);
      ev.lport = ck->lport;
      ev.rport = ck->rport;
    }
    const auto *b = reinterpret_cast<const uint8_t *>(&ev);
    out.insert(out.end(), b, b + sizeof ev);
  }
  if (r.Left()) Corrupt(env, "bytes after the last event");
  Napi::Object o = Napi::Object::New(env);
  o.Set("events", out.empty() ? Napi::Buffer<uint8_t>::New(env, 0) : Napi::Buffer<uint8_t>::Copy(env, out.data(), out.size()));
  o.Set("clockOffset", Napi::BigInt::New(env, offset));
  o.Set("total", Napi::Number::New(env, static_cast<double>(total)));
  return o;
}

}  // namespace

void InitBatch(Napi::Env env, Napi::Object exports) {
  exports.Set("packEvents", Napi::Function::New(env, Pack));
  exports.Set("unpackEvents", Napi::Function::New(env, Unpack));
}
