/**
 * The metadata record: the fixed 64-byte layout of struct cw_record in
 * bpf/causeway.h, little-endian. The kernel carries it; this is its codec.
 *
 *   off size field
 *     0    1 version       (RECORD_VERSION)
 *     1    1 flags         (bit 0: sampled)
 *     2    1 priority      (0-255, higher is more important)
 *     3    5 reserved      (zero)
 *     8   16 trace id
 *    24    8 event id      (u64, 48 bits used: the latest event of the causal chain)
 *    32   32 actor area    (owned by meta-applications)
 */
import { randomBytes } from 'node:crypto';

export const RECORD_VERSION = 1;
export const RECORD_BYTES = 64;
export const ACTOR_BYTES = 32;
export const FLAG_SAMPLED = 1;

/** A decoded record. Ids are lower-case hex: 32 digits for traces, 16 for events. */
export interface CausalRecord {
  version: number;
  sampled: boolean;
  priority: number;
  traceId: string;
  eventId: string;
  actor: Uint8Array;
}

const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;

/** A fresh record: a new random trace id and root event id, sampled unless told otherwise. */
export function newRecord(opts: { sampled?: boolean; priority?: number } = {}): CausalRecord {
  return {
    version: RECORD_VERSION,
    sampled: opts.sampled ?? true,
    priority: opts.priority ?? 0,
    traceId: newTraceId(),
    eventId: newEventId(),
    actor: new Uint8Array(ACTOR_BYTES),
  };
}

/**
 * A new 128-bit trace id in hex: milliseconds since the Unix epoch in its
 * first 48 bits, then 80 random bits, as UUIDv7 does and as the shim mints
 * them (bpf/shim.bpf.c, new_trace_id). Ids that begin with the time keep the
 * trace store's index appending at its end: a random id costs a random page
 * of it per new trace (docs/tracer.md).
 */
export function newTraceId(): string {
  const id = randomBytes(16);
  id.writeUIntBE(Date.now(), 0, 6);
  return id.toString('hex');
}

/** A random, non-zero 48-bit event id as 16 hex digits (48 bits cross hosts in the TCP option). */
export function newEventId(): string {
  let id: string;
  do id = '0000' + randomBytes(6).toString('hex');
  while (/^0+$/.test(id));
  return id;
}

/** Formats a u64 event id the way every output of causeway shows it. */
export function eventIdHex(id: bigint): string {
  return id.toString(16).padStart(16, '0');
}

/** Encodes a record into its 64 bytes; throws RangeError on a field that does not fit. */
export function encodeRecord(r: CausalRecord, out: Buffer = Buffer.alloc(RECORD_BYTES), offset = 0): Buffer {
  if (!Number.isInteger(r.priority) || r.priority < 0 || r.priority > 255)
    throw new RangeError(`priority must be an integer 0-255, not ${r.priority}`);
  if (!HEX32.test(r.traceId)) throw new RangeError(`trace id must be 32 lower-case hex digits, not "${r.traceId}"`);
  if (!HEX16.test(r.eventId)) throw new RangeError(`event id must be 16 lower-case hex digits, not "${r.eventId}"`);
  if (r.actor.length > ACTOR_BYTES) throw new RangeError(`the actor area holds ${ACTOR_BYTES} bytes, not ${r.actor.length}`);
  out.fill(0, offset, offset + RECORD_BYTES);
  out.writeUInt8(r.version, offset);
  out.writeUInt8(r.sampled ? FLAG_SAMPLED : 0, offset + 1);
  out.writeUInt8(r.priority, offset + 2);
  out.write(r.traceId, offset + 8, 16, 'hex');
  out.writeBigUInt64LE(BigInt('0x' + r.eventId), offset + 24);
  out.set(r.actor, offset + 32);
  return out;
}

/** Decodes the 64 bytes of a record at offset. */
export function decodeRecord(buf: Buffer, offset = 0): CausalRecord {
  if (buf.length < offset + RECORD_BYTES) throw new RangeError(`a record is ${RECORD_BYTES} bytes`);
  return {
    version: buf.readUInt8(offset),
    sampled: (buf.readUInt8(offset + 1) & FLAG_SAMPLED) !== 0,
    priority: buf.readUInt8(offset + 2),
    traceId: buf.toString('hex', offset + 8, offset + 24),
    eventId: eventIdHex(buf.readBigUInt64LE(offset + 24)),
    actor: new Uint8Array(buf.subarray(offset + 32, offset + 32 + ACTOR_BYTES)),
  };
}
