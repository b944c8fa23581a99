/**
 * Mirrors struct cw_chan and struct cw_seg in bpf/causeway.h (a value of the
 * chans map, and of the sk_out/sk_in socket storage); the shim checks it against the addon's layout().
 */
import { RECORD_BYTES } from './record';

/** Bytes of struct cw_chan. */
export const CHAN_BYTES = 1464;
/** Offset of seg[] in struct cw_chan. */
export const CHAN_SEG_OFFSET = 184;
/**
 * Offset of wr (u32: units written so far, wrapping). wr and head are the two
 * halves of one u64 (pos) that writers reserve in one atomic step.
 */
export const CHAN_OFF_WR = 0;
/** Offset of head (u32: segments reserved so far). */
export const CHAN_OFF_HEAD = 4;
/** Offset of rd (u64: units read so far; offsets are compared modulo 2^32). */
export const CHAN_OFF_RD = 8;
/** Offset of kind (u16: a CHAN_KIND_* value). */
export const CHAN_OFF_KIND = 84;
/** Segments in seg[] (CW_SEGS); the ring index is head % CHAN_SEGS. */
export const CHAN_SEGS = 16;

/** Bytes of struct cw_seg: start (u64), the record, seq (u32), padding. */
export const SEG_BYTES = 8 + RECORD_BYTES + 8;
/** Offset of rec in struct cw_seg. */
export const SEG_REC_OFFSET = 8;
/**
 * Offset of seq in struct cw_seg (u32): the segment's index + 1 once its
 * writer filled it; a slot whose seq is not that is reserved and not filled.
 */
export const SEG_SEQ_OFFSET = 8 + RECORD_BYTES;

/** enum cw_chan_kind: a pipe. */
export const CHAN_KIND_PIPE = 1;
/** enum cw_chan_kind: a FIFO. */
export const CHAN_KIND_FIFO = 2;
/** enum cw_chan_kind: a UNIX socket. */
export const CHAN_KIND_UNIX = 3;
/** enum cw_chan_kind: a TCP connection (offsets are sequence numbers). */
export const CHAN_KIND_TCP = 4;

/** Bytes of struct cw_chan_key (map chans): inode number, device, kind, FIFO generation. */
export const CHAN_KEY_BYTES = 24;

/** The chans key of a pipe, FIFO or UNIX socket (the receiving socket's inode). */
export function chanKey(ino: number | bigint, dev: number, kind: number, gen = 0): Buffer {
  const k = Buffer.alloc(CHAN_KEY_BYTES);
  k.writeBigUInt64LE(BigInt(ino), 0);
  k.writeUInt32LE(dev >>> 0, 8);
  k.writeUInt32LE(kind, 12);
  k.writeUInt32LE(gen >>> 0, 16);
  return k;
}

/** Decodes a chans key. */
export function decodeChanKey(k: Buffer): { ino: bigint; dev: number; kind: number; gen: number } {
  return { ino: k.readBigUInt64LE(0), dev: k.readUInt32LE(8), kind: k.readUInt32LE(12), gen: k.readUInt32LE(16) };
}

/** A userspace dev_t (glibc's encoding, as stat returns it) as the kernel encodes it (major << 20 | minor). */
export function kernelDev(dev: bigint): number {
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  return ((major << 20) | minor) >>> 0;
}
