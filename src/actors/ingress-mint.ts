/**
 * ingress-mint: a new trace for every inbound connection on given TCP ports.
 *
 *   causeway run --actor ingress-mint:ports=8080+8443 -- ./server
 *
 * Bytes that arrive from outside the run carry no record; on these ports the
 * shim mints one at the connection's first read, before the server's code
 * runs, so everything the server does for that connection (its writes, the
 * processes it starts, the services it calls) carries that connection's own
 * trace. Options: ports (required), sampled (default true), priority (0),
 * sample (the fraction of new traces sampled; default: the run's, 1 unless
 * `causeway trace --sample` sets it).
 * At the end it prints how many connections got a trace.
 */
import type { Actor } from '../actor/types';
import { CausewayError } from '../errors';
import { channelName } from '../kernel/events';

export function ingressMint(options: Record<string, unknown>): Actor & { minted: string[] } {
  const ports = ([] as unknown[]).concat(options.ports ?? []).map(Number);
  if (ports.length === 0 || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535))
    throw new CausewayError('ingress-mint needs ports, e.g. --actor ingress-mint:ports=8080+8443');
  const sampled = options.sampled !== false;
  const sampleRate = options.sample === undefined ? undefined : Number(options.sample);
  const priority = options.priority === undefined ? 0 : Number(options.priority);
  const minted: string[] = [];
  return {
    name: 'ingress-mint',
    minted,
    start(ctx) {
      ctx.policy.mintOnIngress({ ports, sampled, priority, sampleRate });
    },
    ingress(e) {
      if (e.minted) minted.push(e.record.traceId);
      else if (e.channel?.kind === 'tcp' && ports.includes(e.channel.localPort))
        process.stderr.write(`causeway: ingress-mint: ${channelName(e.channel)} carried no record but none was minted\n`);
    },
    stop(ctx) {
      const c = ctx.counters();
      ctx.log(`${minted.length} inbound connection(s) on port(s) ${ports.join(', ')} got a new trace (${c.minted} minted in the kernel)`);
    },
  };
}
