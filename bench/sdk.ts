/**
 * What causeway/sdk costs in process, with no kernel: the SDK is attached to
 * an ArrayBuffer laid out as the kernel's slot array.
 *   alsSwitchNs  ns per async hop (setImmediate + await, then read the store)
 *                under a bare AsyncLocalStorage
 *   sdkSwitchNs  the same hops under sdk.run(), reading sdk.current()
 *   syncNs       ns per sync() that changes the slot (alternating two records),
 *                the cost of run() itself subtracted
 *   syncSameNs   ns per sync() when the slot already holds the record
 * Each figure is the median of several rounds, after a warm-up round; the two
 * switch workloads alternate within each round.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import * as sdk from '../src/sdk';
import { SDK_SLOT_BYTES, SDK_SLOTS } from '../src/sdk/slot';
import { newRecord } from '../src/kernel/record';

const ROUNDS = 7;
const CHAINS = 100;
const HOPS = 200;
const SYNCS = 200_000;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** ns per hop for CHAINS concurrent chains of HOPS hops, each chain started by enter(record, chain). */
async function hops(enter: (rec: object, fn: () => Promise<void>) => Promise<void>, read: () => unknown): Promise<number> {
  const recs = Array.from({ length: CHAINS }, () => newRecord());
  const start = process.hrtime.bigint();
  await Promise.all(
    recs.map((rec) =>
      enter(rec, async () => {
        for (let i = 0; i < HOPS; i++) {
          await new Promise((resolve) => setImmediate(resolve));
          if (read() !== rec) throw new Error('the context was lost across a hop');
        }
      }),
    ),
  );
  return Number(process.hrtime.bigint() - start) / (CHAINS * HOPS);
}

/** ns per iteration of body, run SYNCS times. */
function loop(body: () => void): number {
  const start = process.hrtime.bigint();
  for (let i = 0; i < SYNCS; i++) body();
  return Number(process.hrtime.bigint() - start) / SYNCS;
}

/** Measures the SDK; leaves it detached again (its socket-write wrappers idle). */
export async function benchSdk(): Promise<{ alsSwitchNs: number; sdkSwitchNs: number; syncNs: number; syncSameNs: number }> {
  const als = new AsyncLocalStorage<object>();
  sdk._attachForTest(new ArrayBuffer(SDK_SLOTS * SDK_SLOT_BYTES), 0);
  try {
    const bare = () => hops((rec, fn) => als.run(rec, fn), () => als.getStore());
    const viaSdk = () => hops((rec, fn) => sdk.run(rec as ReturnType<typeof newRecord>, fn), sdk.current);
    const [a, b] = [newRecord(), newRecord()];
    const noop = () => undefined;
    const change = () => (sdk.run(a, sdk.sync), sdk.run(b, sdk.sync));
    const runOnly = () => (sdk.run(a, noop), sdk.run(b, noop));
    const same = () => sdk.run(a, () => loop(sdk.sync));
    const rounds = { als: [] as number[], sdk: [] as number[], sync: [] as number[], same: [] as number[] };
    for (let r = -1; r < ROUNDS; r++) {
      const first = r % 2 === 0;
      const x = first ? await bare() : await viaSdk();
      const y = first ? await viaSdk() : await bare();
      const sync = (loop(change) - loop(runOnly)) / 2;
      const s = same();
      if (r < 0) continue; // warm-up
      rounds.als.push(first ? x : y);
      rounds.sdk.push(first ? y : x);
      rounds.sync.push(sync);
      rounds.same.push(s);
    }
    return {
      alsSwitchNs: median(rounds.als),
      sdkSwitchNs: median(rounds.sdk),
      syncNs: median(rounds.sync),
      syncSameNs: median(rounds.same),
    };
  } finally {
    sdk._resetForTest();
  }
}

if (require.main === module)
  benchSdk().then(
    (r) => console.log(JSON.stringify(r)),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
