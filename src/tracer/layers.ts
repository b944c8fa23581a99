/**
 * The network underneath a hop (`causeway trace --layers`): tc programs
 * (bpf/layers.bpf.c) on the interfaces of a path stamp the time the first
 * segment of each record enters each of them, keyed by the send event its TCP
 * option names; at the end of the run the stamps are stored with the trace
 * (store.ts, table layer_stamps), and graph.ts splits each hop's latency into
 * the layers its bytes crossed. docs/layers.md.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { CausewayError } from '../errors';
import { native, NativeLayers } from '../kernel/native';

/** One interface and direction to watch, as --layers names it. */
export interface LayerSpec {
  /** How the user named the network namespace: a name under /run/netns, `pid:PID`, `host`, or a path. */
  netns: string;
  /** The namespace file to enter. */
  nsPath: string;
  ifname: string;
  dir: 'in' | 'out';
}

/** A stamp as stored: the record's first segment entering one layer. */
export interface LayerStamp {
  trace: string;
  /** The send event the segment's option names (16 hex digits, 48 bits). */
  event: string;
  /** Epoch ns (CLOCK_BOOTTIME + the run's clock offset, as events are). */
  ts: bigint;
  ifname: string;
  netns: string;
  /** The interface's kind: veth, bridge, vxlan, ... (ip -d link's info_kind), or `device`. */
  kind: string;
  dir: 'in' | 'out';
  /** Seen inside a VXLAN packet (on the underlay). */
  encap: boolean;
  /** The packet's length there (a GSO super-packet counts whole), and its TCP sequence number. */
  len: number;
  seq: number;
}

/**
 * Parses `NETNS:IFNAME[:in|out]` items (comma-separated lists too). Without a
 * direction, both. NETNS: `host` (causeway's own namespace), `pid:PID`, an
 * absolute path to a namespace file, or a name under /run/netns.
 */
export function parseLayerSpecs(items: string[]): LayerSpec[] {
  const out: LayerSpec[] = [];
  for (const item of items.flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean)) {
    const parts = item.split(':');
    let netns: string;
    let rest: string[];
    if (parts[0] === 'pid') {
      netns = `pid:${parts[1] ?? ''}`;
      rest = parts.slice(2);
    } else {
      netns = parts[0];
      rest = parts.slice(1);
    }
    const [ifname, dir, extra] = rest;
    const bad = (why: string) => new CausewayError(`--layers ${item}: ${why} (NETNS:IFNAME[:in|out], NETNS a name under /run/netns, pid:PID, host, or a path)`);
    if (!netns || !ifname || extra !== undefined) throw bad('expected NETNS:IFNAME[:in|out]');
    if (!/^[^\s/:]{1,15}$/.test(ifname)) throw bad(`"${ifname}" is not an interface name`);
    if (dir !== undefined && dir !== 'in' && dir !== 'out') throw bad(`the direction is in or out, not "${dir}"`);
    let nsPath: string;
    if (netns === 'host') nsPath = '/proc/self/ns/net';
    else if (netns.startsWith('pid:')) {
      if (!/^pid:[1-9]\d*$/.test(netns)) throw bad(`"${netns}" is not pid:PID`);
      nsPath = `/proc/${netns.slice(4)}/ns/net`;
    } else if (netns.startsWith('/')) nsPath = netns;
    else {
      if (netns.includes('/') || netns === '.' || netns === '..') throw bad(`"${netns}" is not a namespace name`);
      nsPath = `/run/netns/${netns}`;
    }
    for (const d of dir ? [dir] : (['in', 'out'] as const)) out.push({ netns, nsPath, ifname, dir: d as 'in' | 'out' });
  }
  return out;
}

/** The kind of an interface, seen from inside its namespace: ip -d link's info_kind (veth, bridge, vxlan...), else `device`. */
function interfaceKind(nsPath: string, ifname: string): string {
  try {
    const out = execFileSync('nsenter', [`--net=${nsPath}`, 'ip', '-j', '-d', 'link', 'show', 'dev', ifname], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const [link] = JSON.parse(out) as { linkinfo?: { info_kind?: string } }[];
    return link?.linkinfo?.info_kind ?? 'device';
  } catch {
    return 'unknown';
  }
}

interface Watched extends LayerSpec {
  ifindex: number;
  netnsIno: number;
  kind: string;
}

/** The layer programs, attached to the watched interfaces until close(). */
export class LayerWatch {
  readonly watched: Watched[] = [];
  private readonly progs: NativeLayers;
  private readonly clockOffset: bigint;

  private constructor(progs: NativeLayers) {
    this.progs = progs;
    this.clockOffset = native().clockOffset();
  }

  /** Loads the programs and attaches them to every spec's interface; on any failure nothing stays attached. */
  static open(specs: LayerSpec[], opts: { optKind?: number; optExid?: number } = {}): LayerWatch {
    let progs: NativeLayers;
    try {
      progs = new (native().Layers)({ optKind: opts.optKind ?? 253, optExid: opts.optExid ?? 0xc5a7 });
    } catch (err) {
      throw new CausewayError(`--layers: ${(err as Error).message}`);
    }
    const w = new LayerWatch(progs);
    try {
      for (const s of specs) {
        if (!fs.existsSync(s.nsPath)) throw new CausewayError(`--layers ${s.netns}:${s.ifname}: no network namespace at ${s.nsPath}`);
        const kind = interfaceKind(s.nsPath, s.ifname);
        const { ifindex, netns } = progs.attach(s.nsPath, s.ifname, s.dir);
        w.watched.push({ ...s, ifindex, netnsIno: netns, kind });
      }
    } catch (err) {
      progs.destroy();
      if (err instanceof CausewayError) throw err;
      throw new CausewayError(`--layers: ${(err as Error).message}`);
    }
    return w;
  }

  counters(): { packets: number; options: number; stored: number; full: number } {
    return this.progs.counters();
  }

  /** The stamps since the last read (they leave the kernel's table), each named by its watched interface. */
  read(): LayerStamp[] {
    const byKey = new Map(this.watched.map((w) => [`${w.netnsIno}/${w.ifindex}/${w.dir}`, w]));
    const out: LayerStamp[] = [];
    for (const s of this.progs.read()) {
      const w = byKey.get(`${s.netns}/${s.ifindex}/${s.dir}`);
      if (!w) continue;
      out.push({ trace: s.trace, event: s.event, ts: s.ts + this.clockOffset, ifname: w.ifname, netns: w.netns, kind: w.kind, dir: w.dir, encap: (s.flags & 1) !== 0, len: s.len, seq: s.seq });
    }
    return out.sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0));
  }

  /** Detaches and frees the programs (their links close: nothing stays on the interfaces). */
  close(): void {
    this.progs.destroy();
  }
}
