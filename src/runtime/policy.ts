/**
 * Kernel-side policy (bpf/causeway.h: struct cw_policy, cw_mint, and the maps
 * policy, ingress_ports and egress_strip). It takes effect at the next
 * syscall of every thread of the run: this is what must happen at once,
 * while actor hooks run after the fact.
 *
 * Defaults: the join rule is 'last' (a read spanning several records adopts
 * the last byte's); no port mints (a minted trace is sampled at the run's
 * sample rate, 1 unless `causeway trace --sample` says otherwise); no port
 * strips (records still go only to trusted networks).
 */
import createDebug from 'debug';
import type { Shim } from '../kernel/shim';
import type { JoinRule, PolicyApi, Scheduling, SchedulingStats } from '../actor/types';
import { FLAG_SAMPLED } from '../kernel/record';

const debug = createDebug('causeway:policy');

const JOIN_RULES: Record<JoinRule, number> = { last: 0, first: 1, priority: 2 };

function portKey(port: number): Buffer {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`a TCP port is 1-65535, not ${port}`);
  const k = Buffer.alloc(2);
  k.writeUInt16LE(port);
  return k;
}

export class KernelPolicy {
  private joinSetBy: string | undefined;
  private scheduledBy: string | undefined;
  /** @param sampleRate the fraction of minted traces that are sampled, unless an actor says otherwise */
  constructor(private readonly shim: Shim, private readonly sampleRate = 1) {}

  /** The policy API of one actor (for its context). */
  forActor(actor: string): PolicyApi {
    return {
      joinRule: (rule) => this.joinRule(rule, actor),
      mintOnIngress: (o) => this.mintOnIngress(o, actor),
      stripOnEgress: (o) => this.stripOnEgress(o, actor),
      schedule: (o) => this.schedule(o, actor),
    };
  }

  joinRule(rule: JoinRule, by: string): void {
    const v = JOIN_RULES[rule];
    if (v === undefined) throw new RangeError(`the join rule is one of ${Object.keys(JOIN_RULES).join(', ')}, not "${rule}"`);
    if (this.joinSetBy && this.joinSetBy !== by)
      process.stderr.write(`causeway: actor "${by}" sets the join rule to "${rule}", replacing the one actor "${this.joinSetBy}" set\n`);
    this.joinSetBy = by;
    // struct cw_policy: other fields (the scheduler's switch) keep their value.
    const map = this.shim.map('policy');
    const value = map.lookup(Buffer.alloc(4)) ?? Buffer.alloc(8);
    value.writeUInt8(v, 0);
    map.update(Buffer.alloc(4), value);
    debug('%s: join rule %s', by, rule);
  }

  mintOnIngress(o: { ports: number[]; sampled?: boolean; priority?: number; sampleRate?: number }, by: string): void {
    const priority = o.priority ?? 0;
    if (!Number.isInteger(priority) || priority < 0 || priority > 255) throw new RangeError(`priority is 0-255, not ${priority}`);
    const rate = o.sampleRate ?? this.sampleRate;
    if (!(rate >= 0 && rate <= 1)) throw new RangeError(`a sample rate is 0-1, not ${rate}`);
    const value = Buffer.alloc(8);
    value.writeUInt8(o.sampled === false ? 0 : FLAG_SAMPLED, 0);
    value.writeUInt8(priority, 1);
    value.writeUInt32LE(rate >= 1 ? 0xffffffff : Math.floor(rate * 0xffffffff), 4);
    const keys = o.ports.map(portKey);
    for (const k of keys) this.shim.map('ingress_ports').update(k, value);
    debug('%s: mint on ingress at ports %o', by, o.ports);
  }

  schedule(o: { nice: (number | 'own')[]; socketPriority: (number | null)[] }, by: string): Scheduling {
    if (this.scheduledBy) throw new RangeError(`actor "${this.scheduledBy}" already schedules this run`);
    if (o.nice.length !== 256 || o.socketPriority.length !== 256) throw new RangeError('the scheduler takes a nice value and a socket priority for each record priority 0-255');
    for (const n of o.nice)
      if (n !== 'own' && !(Number.isInteger(n) && n >= -20 && n <= 19)) throw new RangeError(`a nice value is -20 to 19 or "own", not ${String(n)}`);
    for (const v of o.socketPriority)
      if (v !== null && !(Number.isInteger(v) && v >= 0 && v <= 0xffffffff)) throw new RangeError(`a socket priority is a u32 or null, not ${String(v)}`);
    this.shim.startScheduler(o.nice, o.socketPriority);
    this.scheduledBy = by;
    debug('%s: scheduling', by);
    let final: SchedulingStats | undefined;
    const stats = (): SchedulingStats => {
      if (final) return final;
      const s = this.shim.schedulerStats();
      return { ...(s ?? { changes: 0, reniced: 0, gone: 0, failed: 0, restored: 0, idled: 0, arrivals: 0, reused: 0, threads: 0, realtime: false, latencyNs: [] }), lost: this.shim.counters().schedulerLost };
    };
    return {
      stats,
      stop: () => {
        if (!final) {
          this.shim.stopScheduler();
          final = stats();
        }
        return final;
      },
    };
  }

  stripOnEgress(o: { ports: number[] }, by: string): void {
    const keys = o.ports.map(portKey);
    for (const k of keys) this.shim.map('egress_strip').update(k, Buffer.from([1]));
    debug('%s: strip on egress towards ports %o', by, o.ports);
  }
}
