// See jsonl.h. Each step names the line of src/kernel/events.ts (decodeEvent,
// eventToJson) or the JavaScript rule (JSON.stringify, Number#toString,
// Buffer#toString('utf8')) it reproduces byte for byte; test/jsonl.test.ts
// holds the two side by side.
#include "jsonl.h"

#include <linux/types.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <string>

#include "causeway.h"

namespace {

// The offsets src/kernel/events.ts reads.
static_assert(sizeof(struct cw_event) == 288, "EVENT_BYTES");
static_assert(offsetof(struct cw_event, type) == 16 && offsetof(struct cw_event, nparents) == 17, "type, nparents");
static_assert(offsetof(struct cw_event, chan_kind) == 18 && offsetof(struct cw_event, flags) == 19, "chan_kind, flags");
static_assert(offsetof(struct cw_event, arg) == 20 && offsetof(struct cw_event, arg2) == 24, "arg, arg2");
static_assert(offsetof(struct cw_event, chan_dev) == 28 && offsetof(struct cw_event, chan_ino) == 32, "chan_dev, chan_ino");
static_assert(offsetof(struct cw_event, bytes) == 40 && offsetof(struct cw_event, parents) == 48, "bytes, parents");
static_assert(offsetof(struct cw_event, rec) == 80 && offsetof(struct cw_event, comm) == 144, "rec, comm");
static_assert(offsetof(struct cw_event, path) == 160 && offsetof(struct cw_event, laddr) == 224, "path, laddr");
static_assert(offsetof(struct cw_event, raddr) == 240 && offsetof(struct cw_event, lport) == 256, "raddr, lport");
static_assert(offsetof(struct cw_event, rport) == 258 && offsetof(struct cw_event, sotype) == 260, "rport, sotype");
static_assert(offsetof(struct cw_event, cpu_ns) == 264 && offsetof(struct cw_event, wchar) == 280, "cpu_ns, wchar");

constexpr size_t kEventBytes = sizeof(struct cw_event);
// The longest line one event can make is about 1,500 bytes (comm, path and a
// UNIX name all control characters, 6 bytes each as \u00xx, beside every
// other field at its widest); room for more than twice that is made before
// each one.
constexpr size_t kLineMax = 4096;

const char kHex[] = "0123456789abcdef";

// A buffer that grows; written through a cursor, room made once per event.
struct Out {
  char *data = nullptr;
  size_t len = 0, cap = 0;
  bool Reserve(size_t more) {
    if (cap - len >= more) return true;
    size_t want = cap ? cap * 2 : 4096;
    while (want - len < more) want *= 2;
    char *p = static_cast<char *>(realloc(data, want));
    if (!p) return false;
    data = p;
    cap = want;
    return true;
  }
};

inline char *Lit(char *p, const char *s, size_t n) {
  memcpy(p, s, n);
  return p + n;
}
#define LIT(p, s) Lit(p, s, sizeof(s) - 1)

// An unsigned integer in decimal (exact).
inline char *Dec(char *p, uint64_t v) {
  char tmp[20];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) *p++ = tmp[--n];
  return p;
}

// ts: BigInt(u64) + clockOffset, as BigInt#toString prints it (sign, no limit).
char *Dec128(char *p, __int128 v) {
  unsigned __int128 m = v < 0 ? -static_cast<unsigned __int128>(v) : static_cast<unsigned __int128>(v);
  if (v < 0) *p++ = '-';
  char tmp[40];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + static_cast<unsigned>(m % 10));
    m /= 10;
  } while (m);
  while (n) *p++ = tmp[--n];
  return p;
}

// Number(u64) as JSON.stringify prints it: exact up to 2^53; above, the
// double nearest (ties to even, as BigInt -> Number rounds) printed as
// Number#toString does: the shortest digits that round-trip, the closest
// when several do, then zeros up to the decimal point (below 1e21 always).
char *JsNumber(char *p, uint64_t v) {
  if (v <= (1ULL << 53)) return Dec(p, v);
  double d = static_cast<double>(v);
  char sci[32];
  auto r = std::to_chars(sci, sci + sizeof(sci) - 1, d, std::chars_format::scientific);  // shortest: D.DDDe+XX
  *r.ptr = 0;
  char *e = strchr(sci, 'e');
  int exp = atoi(e + 1);
  int ndigits = 0;
  for (char *q = sci; q < e; q++)
    if (*q != '.') p[ndigits++] = *q;
  p += ndigits;
  for (int i = ndigits; i <= exp; i++) *p++ = '0';
  return p;
}

inline char *Hex64(char *p, uint64_t v) {  // eventIdHex: 16 digits, lower case
  for (int shift = 60; shift >= 0; shift -= 4) *p++ = kHex[(v >> shift) & 0xf];
  return p;
}

// Bytes of a C string decoded as Buffer#toString('utf8') does (the WHATWG
// UTF-8 decoder: each maximal invalid subpart becomes U+FFFD), then quoted as
// JSON.stringify quotes: \" \\ \b \f \n \r \t, other controls as \u00xx.
// (No lone surrogate can come out of the decoder, so none is escaped here.)
// The inside of the string only: the caller writes the quotes.
char *StrBody(char *p, const uint8_t *s, size_t n) {
  static const char kShort[32] = {0, 0, 0, 0, 0, 0, 0, 0, 'b', 't', 'n', 0, 'f', 'r', 0, 0,
                                  0, 0, 0, 0, 0, 0, 0, 0, 0,   0,   0,   0, 0,   0,   0, 0};
  size_t i = 0;
  while (i < n) {
    uint8_t b = s[i];
    if (b < 0x80) {
      i++;
      if (b >= 0x20 && b != '"' && b != '\\') {
        *p++ = static_cast<char>(b);
      } else if (b == '"' || b == '\\') {
        *p++ = '\\';
        *p++ = static_cast<char>(b);
      } else if (kShort[b]) {
        *p++ = '\\';
        *p++ = kShort[b];
      } else {
        p = LIT(p, "\\u00");
        *p++ = kHex[b >> 4];
        *p++ = kHex[b & 0xf];
      }
      continue;
    }
    // A multi-byte sequence: how many continuation bytes, and the bounds of the first.
    size_t need;
    uint8_t lo = 0x80, hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) {
      need = 1;
    } else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b == 0xe0) lo = 0xa0;
      if (b == 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b == 0xf0) lo = 0x90;
      if (b == 0xf4) hi = 0x8f;
    } else {
      p = LIT(p, "\xef\xbf\xbd");  // not a lead byte
      i++;
      continue;
    }
    size_t j = i + 1, seen = 0;
    while (seen < need && j < n && s[j] >= lo && s[j] <= hi) {
      lo = 0x80;
      hi = 0xbf;
      j++;
      seen++;
    }
    if (seen == need) {
      memcpy(p, s + i, j - i);  // valid: copied as it is
      p += j - i;
    } else {
      p = LIT(p, "\xef\xbf\xbd");  // the maximal subpart; the byte that broke it starts afresh
    }
    i = j;
  }
  return p;
}

// cstring(): up to the first NUL within max bytes.
inline size_t CLen(const char *s, size_t max) {
  const void *z = memchr(s, 0, max);
  return z ? static_cast<const char *>(z) - s : max;
}

// A quoted JSON string of cstring(s, max).
inline char *CStr(char *p, const char *s, size_t max) {
  *p++ = '"';
  p = StrBody(p, reinterpret_cast<const uint8_t *>(s), CLen(s, max));
  *p++ = '"';
  return p;
}

// ipString(): IPv4-mapped as dotted IPv4; otherwise eight hex groups with the
// longest run (of two or more, the first of equals) of zero groups as "::".
char *Ip(char *p, const uint8_t *a) {
  bool mapped = a[10] == 0xff && a[11] == 0xff;
  for (int i = 0; i < 10 && mapped; i++) mapped = a[i] == 0;
  if (mapped) {
    for (int i = 12; i < 16; i++) {
      if (i > 12) *p++ = '.';
      p = Dec(p, a[i]);
    }
    return p;
  }
  unsigned g[8];
  for (int i = 0; i < 8; i++) g[i] = (a[2 * i] << 8) | a[2 * i + 1];
  int best = -1, best_len = 1;
  for (int i = 0; i < 8;) {
    int j = i;
    while (j < 8 && g[j] == 0) j++;
    if (j - i > best_len) best = i, best_len = j - i;
    i = j == i ? i + 1 : j;
  }
  auto group = [](char *q, unsigned v) {
    bool lead = true;
    for (int s = 12; s >= 0; s -= 4) {
      unsigned d = (v >> s) & 0xf;
      if (d == 0 && lead && s) continue;
      lead = false;
      *q++ = kHex[d];
    }
    return q;
  };
  for (int i = 0; i < 8; i++) {
    if (i == best) {
      p = LIT(p, "::");
      i += best_len - 1;
      continue;
    }
    if (i > 0 && i != best + best_len) *p++ = ':';
    p = group(p, g[i]);
  }
  return p;
}

// decodeChannel() as eventToJson's "channel" value: an object, or null.
char *Channel(char *p, const struct cw_event &e) {
  switch (e.chan_kind) {
    case 1:
    case 2:
      p = e.chan_kind == 1 ? LIT(p, "{\"kind\":\"pipe\",\"ino\":") : LIT(p, "{\"kind\":\"fifo\",\"ino\":");
      p = JsNumber(p, e.chan_ino);
      p = LIT(p, ",\"dev\":\"");
      p = Dec(p, e.chan_dev >> 20);
      *p++ = ':';
      p = Dec(p, e.chan_dev & 0xfffff);
      return LIT(p, "\"}");
    case 3: {
      p = LIT(p, "{\"kind\":\"unix\",\"type\":\"");
      switch (e.sotype) {
        case 1: p = LIT(p, "stream"); break;
        case 2: p = LIT(p, "dgram"); break;
        case 5: p = LIT(p, "seqpacket"); break;
        default: p = Dec(p, e.sotype);
      }
      p = LIT(p, "\",\"name\":");
      // unixName(): the path; "abstract:NAME"; "socketpair" when unbound.
      if (e.path[0] != 0) {
        p = CStr(p, e.path, CW_PATH_BYTES);
      } else {
        size_t n = CLen(e.path + 1, CW_PATH_BYTES - 1);
        if (n == 0) {
          p = LIT(p, "\"socketpair\"");
        } else {
          p = LIT(p, "\"abstract:");
          p = StrBody(p, reinterpret_cast<const uint8_t *>(e.path + 1), n);
          *p++ = '"';
        }
      }
      return LIT(p, "}");
    }
    case 4:
      p = LIT(p, "{\"kind\":\"tcp\",\"local\":\"");
      p = Ip(p, e.laddr);
      p = LIT(p, "\",\"localPort\":");
      p = Dec(p, e.lport);
      p = LIT(p, ",\"remote\":\"");
      p = Ip(p, e.raddr);
      p = LIT(p, "\",\"remotePort\":");
      p = Dec(p, e.rport);
      return LIT(p, "}");
    default:
      return LIT(p, "null");
  }
}

// One event: eventToJson(decodeEvent()) through JSON.stringify, keys in its order.
char *Event(char *p, const struct cw_event &e, int64_t clock_offset) {
  // TYPES[type] ?? 'exit': a type decodeEvent does not know is an exit.
  static const char *const kNames[8] = {"exit", "fork", "exec", "exit", "send", "recv", "join", "ingress"};
  const unsigned t = e.type < 8 ? e.type : 0;
  const bool fork = t == CW_EV_FORK, exec = t == CW_EV_EXEC, exit = t == 0 || t == CW_EV_EXIT;
  const char *type = kNames[t];
  p = LIT(p, "{\"type\":\"");
  p = Lit(p, type, strlen(type));
  p = LIT(p, "\",\"ts\":\"");
  p = Dec128(p, static_cast<__int128>(e.ts) + clock_offset);
  p = LIT(p, "\",\"pid\":");
  p = Dec(p, e.pid);
  p = LIT(p, ",\"tid\":");
  p = Dec(p, e.tid);
  p = LIT(p, ",\"comm\":");
  p = CStr(p, e.comm, sizeof(e.comm));
  p = LIT(p, ",\"trace\":\"");
  for (int i = 0; i < 16; i++) {
    *p++ = kHex[e.rec.trace_id[i] >> 4];
    *p++ = kHex[e.rec.trace_id[i] & 0xf];
  }
  p = LIT(p, "\",\"event\":\"");
  p = Hex64(p, e.rec.event_id);
  p = LIT(p, "\",\"parents\":[");
  unsigned nparents = e.nparents < CW_MAX_PARENTS ? e.nparents : CW_MAX_PARENTS;
  for (unsigned i = 0; i < nparents; i++) {
    if (i) *p++ = ',';
    *p++ = '"';
    p = Hex64(p, e.parents[i]);
    *p++ = '"';
  }
  p = LIT(p, "],\"channel\":");
  p = Channel(p, e);
  p = LIT(p, ",\"bytes\":");
  p = JsNumber(p, e.bytes);
  p = LIT(p, ",\"priority\":");
  p = Dec(p, e.rec.priority);
  p = (e.rec.flags & CW_F_SAMPLED) ? LIT(p, ",\"sampled\":true") : LIT(p, ",\"sampled\":false");
  p = LIT(p, ",\"cpu_ns\":");
  p = JsNumber(p, e.cpu_ns);
  p = LIT(p, ",\"rchar\":");
  p = JsNumber(p, e.rchar);
  p = LIT(p, ",\"wchar\":");
  p = JsNumber(p, e.wchar);
  bool thread = e.flags & CW_EVF_THREAD;
  if (fork) {
    p = LIT(p, ",\"child\":{\"tid\":");
    p = Dec(p, e.arg);
    p = LIT(p, ",\"pid\":");
    p = Dec(p, e.arg2);
    p = LIT(p, "}");
    p = thread ? LIT(p, ",\"thread\":true") : LIT(p, ",\"thread\":false");
  } else if (exit) {
    p = thread ? LIT(p, ",\"thread\":true") : LIT(p, ",\"thread\":false");
    // task->exit_code: status << 8 for exit(), the signal number for a kill.
    if (e.arg & 0x7f) {
      p = LIT(p, ",\"signal\":");
      p = Dec(p, e.arg & 0x7f);
    } else {
      p = LIT(p, ",\"exit_code\":");
      p = Dec(p, (e.arg >> 8) & 0xff);
    }
  } else if (exec) {
    p = LIT(p, ",\"path\":");
    p = CStr(p, e.path, CW_PATH_BYTES);
  } else {
    if (e.flags & CW_EVF_INGRESS) p = LIT(p, ",\"ingress\":true");
    if (e.flags & CW_EVF_MINTED) p = LIT(p, ",\"minted\":true");
  }
  return LIT(p, "}\n");
}

}  // namespace

char *FormatJsonLines(const uint8_t *raw, size_t len, int64_t clock_offset, size_t *out_len) {
  size_t count = len / kEventBytes;
  Out out;
  if (!out.Reserve(count * 640 + kLineMax)) {
    errno = ENOMEM;
    return nullptr;
  }
  struct cw_event e;
  for (size_t i = 0; i < count; i++) {
    if (!out.Reserve(kLineMax)) {
      free(out.data);
      errno = ENOMEM;
      return nullptr;
    }
    memcpy(&e, raw + i * kEventBytes, kEventBytes);  // the batch need not be aligned
    out.len = Event(out.data + out.len, e, clock_offset) - out.data;
  }
  if (count == 0) out.data[out.len++] = '\n';  // [].join('\n') + '\n'
  *out_len = out.len;
  return out.data;
}

namespace {

// JS thread. formatJsonLines(raw: Buffer, clockOffset: bigint): Buffer.
Napi::Value FormatJsonLinesJs(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsBigInt())
    throw Napi::TypeError::New(env, "formatJsonLines(raw: Buffer, clockOffset: bigint)");
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  const uint8_t *raw = static_cast<const uint8_t *>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  bool lossless = false;
  int64_t offset = info[1].As<Napi::BigInt>().Int64Value(&lossless);
  if (!lossless) throw Napi::RangeError::New(env, "the clock offset must fit in 64 bits");
  size_t n = 0;
  char *text = FormatJsonLines(raw, ta.ByteLength(), offset, &n);
  if (!text) throw Napi::Error::New(env, "failed to format events: out of memory");
  return Napi::Buffer<char>::New(env, text, n, [](Napi::Env, char *p) { free(p); });
}

}  // namespace

void InitJsonl(Napi::Env env, Napi::Object exports) {
  exports.Set("formatJsonLines", Napi::Function::New(env, FormatJsonLinesJs));
}
