/**
 * The OpenTelemetry bridge: an app's OTel spans and causeway's records share
 * one trace.
 *
 *   import { context } from '@opentelemetry/api';
 *   context.setGlobalContextManager(new CausewayContextManager().enable());
 *
 * Both ways:
 *  - Kernel to OTel: a span started with no parent in the context gets the
 *    record of the code running now (current(): the record run() set, else
 *    the one the kernel adopted from the bytes this thread last read) as its
 *    remote parent: same trace id, parent span id = the record's event id.
 *  - OTel to kernel: inside context.with(ctx, fn) where ctx holds a span, the
 *    bytes fn's code sends carry that span's trace: a record of another trace
 *    is replaced (event id from the span id's low 48 bits, sampled from the
 *    trace flags; priority and actor area kept), and a record of the same
 *    trace that only the kernel held is pinned with run(), so that the code
 *    keeps it after the thread reads another request's bytes.
 */
import { Context, isSpanContextValid, SpanContext, trace, TraceFlags } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { ACTOR_BYTES, CausalRecord, newEventId, RECORD_VERSION } from '../kernel/record';
import { current, run, runRecord } from './index';

const spanContexts = new WeakMap<CausalRecord, SpanContext | null>();

/** A record as a remote OTel span context (span id = event id), or undefined if its ids are not valid OTel ids. */
export function recordSpanContext(rec: CausalRecord): SpanContext | undefined {
  let sc = spanContexts.get(rec);
  if (sc === undefined) {
    const c: SpanContext = {
      traceId: rec.traceId,
      spanId: rec.eventId,
      traceFlags: rec.sampled ? TraceFlags.SAMPLED : TraceFlags.NONE,
      isRemote: true,
    };
    sc = isSpanContextValid(c) ? c : null;
    spanContexts.set(rec, sc);
  }
  return sc ?? undefined;
}

/** The span context of the record of the code running now (see current()), or undefined. */
export function kernelSpanContext(): SpanContext | undefined {
  const rec = current();
  return rec && recordSpanContext(rec);
}

/** The record that carries span context sc's trace, keeping base's priority and actor area. */
function spanRecord(sc: SpanContext, base: CausalRecord | undefined): CausalRecord {
  const low = sc.spanId.slice(-12).toLowerCase();
  return {
    version: RECORD_VERSION,
    sampled: (sc.traceFlags & TraceFlags.SAMPLED) !== 0,
    priority: base?.priority ?? 0,
    traceId: sc.traceId.toLowerCase(),
    eventId: /^0+$/.test(low) ? newEventId() : '0000' + low,
    actor: base ? new Uint8Array(base.actor) : new Uint8Array(ACTOR_BYTES),
  };
}

/**
 * An OTel context manager (AsyncLocalStorage-based, as
 * AsyncLocalStorageContextManager, which it extends) that joins OTel spans to
 * causeway's records; see the top of this file. bind() goes through with().
 */
export class CausewayContextManager extends AsyncLocalStorageContextManager {
  private last: { ctx: Context; rec: CausalRecord; out: Context } | undefined;
  private derived = new WeakMap<SpanContext, { base: CausalRecord | undefined; rec: CausalRecord }>();

  /** The active context; if it holds no span, with the current record as remote parent span context. */
  override active(): Context {
    const ctx = super.active();
    if (trace.getSpan(ctx) !== undefined) return ctx;
    const rec = current();
    if (rec === undefined) return ctx;
    const last = this.last;
    if (last !== undefined && last.ctx === ctx && last.rec === rec) return last.out;
    const sc = recordSpanContext(rec);
    const out = sc ? trace.setSpanContext(ctx, sc) : ctx;
    this.last = { ctx, rec, out };
    return out;
  }

  /** Runs fn in context; if it holds a valid span, fn's bytes carry the span's trace to the kernel. */
  override with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    context: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    const sc = trace.getSpanContext(context);
    if (sc !== undefined && isSpanContextValid(sc)) {
      const pinned = runRecord();
      const rec = pinned ?? current();
      let next: CausalRecord | undefined;
      if (rec === undefined || (rec.traceId !== sc.traceId && rec.traceId !== sc.traceId.toLowerCase())) next = this.recordFor(sc, rec);
      else if (pinned === undefined) next = rec;
      if (next !== undefined) return run(next, () => super.with(context, fn, thisArg, ...args));
    }
    return super.with(context, fn, thisArg, ...args);
  }

  /** spanRecord(), made once per span context and base record. */
  private recordFor(sc: SpanContext, base: CausalRecord | undefined): CausalRecord {
    const hit = this.derived.get(sc);
    if (hit !== undefined && hit.base === base) return hit.rec;
    const rec = spanRecord(sc, base);
    this.derived.set(sc, { base, rec });
    return rec;
  }
}
