/**
 * Mirrors struct cw_chan and struct cw_seg in bpf/causeway.h (a value of the
 * chans and tcp_chans maps); the shim checks it against the addon's layout().
 */
import { RECORD_BYTES } from './record';

/** Bytes of struct cw_chan. */
export const CHAN_BYTES = 1304;
/** Offset of seg[] in struct cw_chan. */
export const CHAN_SEG_OFFSET = 152;
/** Offset of wr (u64: units written so far). */
export const CHAN_OFF_WR = 0;
/** Offset of rd (u64: units read so far). */
export const CHAN_OFF_RD = 8;
/** Offset of head (u32: segments appended so far). */
export const CHAN_OFF_HEAD = 72;
/** Offset of kind (u16: a CHAN_KIND_* value). */
export const CHAN_OFF_KIND = 76;
/** Segments in seg[] (CW_SEGS); the ring index is head % CHAN_SEGS. */
export const CHAN_SEGS = 16;

/** Bytes of struct cw_seg: start (u64), then the record. */
export const SEG_BYTES = 8 + RECORD_BYTES;
/** Offset of rec in struct cw_seg. */
export const SEG_REC_OFFSET = 8;

/** enum cw_chan_kind: a pipe. */
export const CHAN_KIND_PIPE = 1;
/** enum cw_chan_kind: a FIFO. */
export const CHAN_KIND_FIFO = 2;
/** enum cw_chan_kind: a UNIX socket. */
export const CHAN_KIND_UNIX = 3;
/** enum cw_chan_kind: a TCP connection (offsets are sequence numbers). */
export const CHAN_KIND_TCP = 4;
