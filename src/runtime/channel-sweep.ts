/**
 * The channel table (map chans) is not an LRU: a full table is counted, never
 * a live channel evicted. Channels of dead objects are deleted here instead:
 * a pipe, FIFO or UNIX socket that no process of the run holds any more can
 * carry no tracked byte again. A sweep runs when the channels created since
 * the last one reach half the table.
 */
import fs from 'node:fs';
import type { RunScope } from '../kernel/cgroup';
import type { Shim } from '../kernel/shim';
import { decodeChanKey, kernelDev } from '../kernel/channel';

export class ChannelSweeper {
  private sweptAt = 0;
  /** Keys of not-yet-accepted UNIX connections seen by the last sweep: deleted if still there at the next. */
  private early = new Set<string>();
  /** Entries deleted so far. */
  deleted = 0;

  constructor(
    private readonly shim: Shim,
    private readonly cgroup: RunScope,
    private readonly maxChannels: number,
  ) {}

  /** Sweeps if the table may be half full of dead channels; returns the entries deleted. */
  maybeSweep(): number {
    const created = this.shim.counters().channelsCreated;
    if (created - this.sweptAt < this.maxChannels / 2) return 0;
    this.sweptAt = created;
    return this.sweep();
  }

  /** Deletes the entries of objects no process of the run holds. */
  sweep(): number {
    const map = this.shim.map('chans');
    // Keys first: an entry made after this snapshot is never deleted by this sweep.
    const keys = map.keys();
    const live = new Set<string>();
    for (const pid of this.cgroup.pids()) {
      let fds: string[];
      try {
        fds = fs.readdirSync(`/proc/${pid}/fd`);
      } catch {
        continue; // exited
      }
      for (const fd of fds) {
        try {
          const st = fs.statSync(`/proc/${pid}/fd/${fd}`, { bigint: true });
          live.add(`${kernelDev(st.dev)}:${st.ino}`);
        } catch {
          /* closed meanwhile */
        }
      }
    }
    let n = 0;
    const early = new Set<string>();
    for (const k of keys) {
      const d = decodeChanKey(k);
      const id = k.toString('hex');
      if (d.dev === 0) {
        // Bytes written before an accept: kept for one sweep interval.
        if (!this.early.has(id)) {
          early.add(id);
          continue;
        }
      } else if (live.has(`${d.dev}:${d.ino}`)) continue;
      if (map.delete(k)) n++;
    }
    this.early = early;
    this.deleted += n;
    return n;
  }
}
