// slow-hops: which program-to-program hops of a run are slow, and how often.
//   causeway run --actor ./examples/slow-hops.mjs:ms=5 -- ./my-pipeline.sh
export default function slowHops({ ms = 1 } = {}) {
  const sends = new Map(); // event id of a send -> the send
  const hops = new Map(); // "writer -> reader" -> { n, slow, worst }
  return {
    name: 'slow-hops',
    send(e) {
      sends.set(e.record.eventId, e);
    },
    recv(e) {
      const send = sends.get(e.parents[0]);
      if (!send) return;
      sends.delete(e.parents[0]);
      const latency = Number(e.ts - send.ts) / 1e6; // ms, from publish to read
      const key = `${send.comm} -> ${e.comm} over ${e.channel.kind}`;
      const h = hops.get(key) ?? { n: 0, slow: 0, worst: 0 };
      h.n++;
      if (latency >= ms) h.slow++;
      h.worst = Math.max(h.worst, latency);
      hops.set(key, h);
    },
    stop(ctx) {
      for (const [key, h] of hops)
        ctx.log(`${key}: ${h.n} hop(s), ${h.slow} at or over ${ms} ms, worst ${h.worst.toFixed(2)} ms`);
    },
  };
}
