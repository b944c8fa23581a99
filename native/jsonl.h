// Events as JSON Lines, formatted natively: the bytes that
//   decodeEvents(raw, clockOffset).map((e) => JSON.stringify(eventToJson(e))).join('\n') + '\n'
// produce in src/kernel/events.ts, which stays the specification, with no
// JavaScript object per event. Used by `-e FILE` (src/runtime/events-file.ts).
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>

// Any thread. One line per whole struct cw_event in raw[0, len), each ending
// in '\n' (a trailing partial event is ignored, as decodeEvents ignores it;
// no events give a lone '\n', as the expression above does). clock_offset
// turns CLOCK_BOOTTIME stamps into epoch ns. Returns a malloc'd buffer that
// the caller frees, its length in *out_len; nullptr (errno ENOMEM) if memory
// ran out.
char *FormatJsonLines(const uint8_t *raw, size_t len, int64_t clock_offset, size_t *out_len);

// JS thread. Registers formatJsonLines(raw: Buffer, clockOffset: bigint): Buffer.
void InitJsonl(Napi::Env env, Napi::Object exports);
