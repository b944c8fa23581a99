/**
 * The addon (native/addon.cc) behind typed signatures. Nothing else in src/
 * touches the raw native functions.
 */
import path from 'node:path';
import { CausewayError } from './errors';

/** A loaded shim or floor, as the addon sees it. Methods run on the JS thread. */
export interface NativeShim {
  startEvents(onBatch: (batch: Buffer | null) => void): void;
  stopEvents(): void;
  counters(): bigint[];
  readTask(tid: number): Buffer | null;
  writeRecord(tid: number, record: Buffer): void;
  detach(): void;
  destroy(): void;
}

export interface NativeShimOptions {
  kind: 'shim' | 'floor';
  cgroupId?: bigint;
  cgroupLevel?: number;
  ringbufBytes?: number;
  emitEvents?: boolean;
  cgroupPath?: string;
  trust?: { prefixlen: number; addr: Buffer }[];
  optKind?: number;
  optExid?: number;
}

export interface NativeAddon {
  Shim: new (opts: NativeShimOptions) => NativeShim;
  clockOffset(): bigint;
  layout(): { record: number; task: number; event: number; counters: number };
  probe(): Record<string, boolean>;
}

let addon: NativeAddon | undefined;

/** The addon, loaded once; a clear error says how to build it if it is missing. */
export function native(): NativeAddon {
  if (addon) return addon;
  const file = path.join(__dirname, '..', '..', 'build', 'Release', 'causeway.node');
  const alt = path.join(__dirname, '..', 'build', 'Release', 'causeway.node');
  for (const f of [file, alt]) {
    try {
      addon = require(f) as NativeAddon;
      return addon;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    }
  }
  throw new CausewayError('the causeway addon is not built: run `npm run build` (or `npm run setup` on a fresh machine)');
}
