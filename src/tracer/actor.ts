/**
 * The built-in tracer actor: every event of a run, stored as it arrives, one
 * transaction per batch. It keeps no per-event state, so its memory does not
 * grow with the number of events or traces (the store holds them).
 */
import type { Actor } from '../actor/types';
import type { CausalEvent } from '../kernel/events';
import type { TraceEvent } from './graph';
import type { TraceStore } from './store';

/** A kernel event as the tracer stores it. */
export function toTraceEvent(e: CausalEvent, host: string): TraceEvent {
  const t: TraceEvent = {
    id: e.record.eventId,
    trace: e.record.traceId,
    type: e.type,
    ts: e.ts,
    host,
    pid: e.pid,
    tid: e.tid,
    comm: e.comm,
    parents: e.parents,
    channel: e.channel,
    bytes: e.bytes,
    priority: e.record.priority,
  };
  if (e.path !== undefined) t.path = e.path;
  if (e.exitCode !== undefined) t.exitCode = e.exitCode;
  if (e.signal !== undefined) t.signal = e.signal;
  if (e.child) t.child = e.child;
  if (e.minted) t.minted = true;
  return t;
}

export interface TracerStats {
  stored: number;
  /** Events a failed transaction did not store (each batch is stored whole or not at all). */
  failed: number;
  /** The first store error, if any. */
  error?: Error;
}

/**
 * Stores every batch. A batch the store refuses (a full disk, say) is counted
 * in stats.failed and the run goes on; the next batch is tried again. The
 * first error is reported once, as it happens; the rest only counted.
 */
export function tracerActor(store: TraceStore, run: number, host: string, stats: TracerStats): Actor {
  return {
    name: 'tracer',
    events(batch) {
      try {
        store.insert(batch.map((e) => toTraceEvent(e, host)), run);
        stats.stored += batch.length;
      } catch (err) {
        stats.failed += batch.length;
        if (!stats.error) {
          stats.error = err as Error;
          process.stderr.write(`causeway: storing events in ${store.file} failed: ${(err as Error).message}; the run goes on, the events not stored are counted\n`);
        }
      }
    },
  };
}
