/**
 * Delivering events to actors. Each actor has its own bounded queue and its
 * own delivery loop, so a slow actor falls behind alone: past the bound its
 * events are dropped and counted, never queued without limit. A hook that
 * throws (or rejects) is counted and reported, and delivery goes on. Nothing
 * here ever blocks the shim or the traced programs.
 */
import createDebug from 'debug';
import type { CausalEvent } from '../kernel/events';
import type { Actor, ActorContext, Hook, HookName } from '../actor/types';

const debug = createDebug('causeway:dispatch');

/** Errors reported on stderr per actor; the rest are only counted. */
const REPORTED_ERRORS = 3;

export interface ActorStats {
  delivered: number;
  dropped: number;
  errors: number;
}

export class ActorHost {
  readonly stats: ActorStats = { delivered: 0, dropped: 0, errors: 0 };
  private queue: CausalEvent[] = [];
  private running: Promise<void> | null = null;
  private stopped = false;

  constructor(
    readonly actor: Actor,
    readonly ctx: ActorContext,
    private readonly limit: number,
    private readonly batchSize = 1024,
  ) {}

  /** Queues a batch; what does not fit under the bound is dropped and counted. */
  push(batch: CausalEvent[]): void {
    if (this.stopped) {
      this.stats.dropped += batch.length;
      return;
    }
    const room = this.limit - this.queue.length;
    if (room < batch.length) this.stats.dropped += batch.length - Math.max(room, 0);
    if (room > 0) this.queue.push(...(room < batch.length ? batch.slice(0, room) : batch));
    if (!this.running) this.running = this.loop();
  }

  /** Runs a lifecycle hook (start, stop) with the same error accounting. */
  async call(name: 'start' | 'stop'): Promise<boolean> {
    const f = this.actor[name];
    if (!f) return true;
    try {
      await f.call(this.actor, this.ctx);
      return true;
    } catch (err) {
      this.fail(name, err);
      return false;
    }
  }

  /** Waits until the queue is empty, or until the deadline: what is left then is dropped and counted. */
  async drain(deadline: number): Promise<void> {
    while (this.running) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.running, new Promise((r) => (timer = setTimeout(r, left)))]);
      clearTimeout(timer);
    }
    this.stopped = true;
    this.stats.dropped += this.queue.length;
    this.queue = [];
  }

  private async loop(): Promise<void> {
    try {
      while (this.queue.length && !this.stopped) {
        const batch = this.queue.length <= this.batchSize ? this.queue : this.queue.slice(0, this.batchSize);
        this.queue = this.queue.length <= this.batchSize ? [] : this.queue.slice(this.batchSize);
        await this.deliver(batch);
      }
    } finally {
      this.running = null;
    }
  }

  private async deliver(batch: CausalEvent[]): Promise<void> {
    const a = this.actor;
    if (a.events) {
      try {
        await a.events(batch, this.ctx);
      } catch (err) {
        this.fail('events', err);
      }
    }
    for (const [i, e] of batch.entries()) {
      if (this.stopped) {
        this.stats.dropped += batch.length - i; // the deadline passed mid-batch
        return;
      }
      const hook = a[e.type as HookName] as Hook | undefined;
      if (hook) {
        try {
          await hook.call(a, e, this.ctx);
        } catch (err) {
          this.fail(e.type, err);
        }
      }
      this.stats.delivered++;
    }
  }

  private fail(hook: string, err: unknown): void {
    this.stats.errors++;
    debug('actor %s failed in %s: %O', this.actor.name, hook, err);
    if (this.stats.errors <= REPORTED_ERRORS) {
      const msg = err instanceof Error ? err.message : String(err);
      process.stderr.write(`causeway: actor "${this.actor.name}" failed in ${hook}: ${msg}\n`);
      if (this.stats.errors === REPORTED_ERRORS) process.stderr.write(`causeway: actor "${this.actor.name}": further failures are only counted\n`);
    }
  }
}
