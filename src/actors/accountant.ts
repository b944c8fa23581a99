/**
 * accountant: CPU time and bytes per tenant, across every process of a run.
 *
 *   causeway run --actor accountant:tenant=7,report=usage.json -- ./pipeline.sh
 *
 * The tenant is a u32 field of the record's actor area ("tenant" by default,
 * option field=NAME). The root starts with option tenant (default 0); a
 * program may change it for its own work through the SDK
 * (sdk.run(sdk.withFields(rec, 'accountant', { tenant: 2 }), fn)), and
 * children and every reader downstream inherit it with the bytes.
 *
 * Charging: every event carries the thread's CPU time and syscall bytes read
 * and written so far; what a thread used between two of its events is charged
 * to the tenant it worked for in between (the record of the earlier event).
 * Threads without events in between are charged at their exit. Only sampled
 * records produce events, so only sampled work is charged.
 */
import fs from 'node:fs';
import type { Actor, ActorContext } from '../actor/types';
import type { CausalEvent } from '../kernel/events';
import { CausewayError } from '../errors';

export interface TenantUsage {
  cpuNs: number;
  bytesRead: number;
  bytesWritten: number;
  threads: number;
}

interface ThreadMark {
  cpu: bigint;
  rchar: bigint;
  wchar: bigint;
  tenant: number;
}

export function accountant(options: Record<string, unknown>): Actor & { usage: Map<number, TenantUsage> } {
  const field = String(options.field ?? 'tenant');
  const rootTenant = options.tenant === undefined ? undefined : Number(options.tenant);
  if (rootTenant !== undefined && (!Number.isInteger(rootTenant) || rootTenant < 0 || rootTenant > 0xffffffff))
    throw new CausewayError(`accountant: tenant must be an integer 0-4294967295, not ${String(options.tenant)}`);
  const report = options.report === undefined ? undefined : String(options.report);
  const usage = new Map<number, TenantUsage>();
  const marks = new Map<number, ThreadMark>();
  const seen = new Map<number, Set<number>>();

  const charge = (tenant: number, tid: number, cpu: bigint, r: bigint, w: bigint) => {
    let u = usage.get(tenant);
    if (!u) usage.set(tenant, (u = { cpuNs: 0, bytesRead: 0, bytesWritten: 0, threads: 0 }));
    u.cpuNs += Number(cpu);
    u.bytesRead += Number(r);
    u.bytesWritten += Number(w);
    let s = seen.get(tenant);
    if (!s) seen.set(tenant, (s = new Set()));
    if (!s.has(tid)) {
      s.add(tid);
      u.threads++;
    }
  };
  const tenantOf = (ctx: ActorContext, e: CausalEvent) => Number(ctx.fields(e.record)[field] ?? 0);

  return {
    name: 'accountant',
    fields: [{ name: field, type: 'u32' }],
    usage,
    start(ctx) {
      if (rootTenant !== undefined) ctx.write('root', { fields: { [field]: rootTenant } });
    },
    events(batch, ctx) {
      for (const e of batch) {
        const prev = marks.get(e.tid) ?? { cpu: 0n, rchar: 0n, wchar: 0n, tenant: tenantOf(ctx, e) };
        // Counters only grow within a thread; a smaller value means a new thread reused the id.
        if (e.cpuNs >= prev.cpu && e.rchar >= prev.rchar && e.wchar >= prev.wchar)
          charge(prev.tenant, e.tid, e.cpuNs - prev.cpu, e.rchar - prev.rchar, e.wchar - prev.wchar);
        if (e.type === 'exit') {
          marks.delete(e.tid);
          continue;
        }
        marks.set(e.tid, { cpu: e.cpuNs, rchar: e.rchar, wchar: e.wchar, tenant: tenantOf(ctx, e) });
        // A child starts from zero, working for its parent's tenant.
        if (e.type === 'fork' && e.child) marks.set(e.child.tid, { cpu: 0n, rchar: 0n, wchar: 0n, tenant: tenantOf(ctx, e) });
      }
    },
    stop(ctx) {
      const rows = [...usage.entries()].sort((a, b) => a[0] - b[0]);
      for (const [tenant, u] of rows)
        ctx.log(`tenant ${tenant}: ${(u.cpuNs / 1e6).toFixed(1)} ms CPU, ${u.bytesRead} bytes read, ${u.bytesWritten} bytes written, ${u.threads} thread(s)`);
      if (report) fs.writeFileSync(report, JSON.stringify({ field, tenants: Object.fromEntries(rows) }, null, 2) + '\n');
    },
  };
}
