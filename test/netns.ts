/**
 * Test hosts: network namespaces joined through a bridge in a hub namespace,
 * all made here and all removed by teardown (also those of a test process
 * that died). Addresses live only inside these namespaces.
 */
import { execFileSync } from 'node:child_process';
import { pidAlive } from './helpers';

let counter = 0;

export function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Removes namespaces named PREFIX<pid>x... left by test processes that no longer exist. */
export function sweep(prefix = 'cwt'): void {
  const out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  for (const line of out.split('\n')) {
    const m = new RegExp(`^(${prefix}(\\d+)x\\d+\\S*)`).exec(line);
    if (m && !pidAlive(Number(m[2]))) {
      try {
        ip('netns', 'del', m[1]);
      } catch {
        /* gone meanwhile */
      }
    }
  }
}

/** Makes namespace ns (loopback up), deleted by teardown in the reverse order of making. */
export function namespaces(t: { teardown(fn: () => void): void }): (ns: string) => void {
  const made: string[] = [];
  t.teardown(() => {
    for (const ns of made.reverse()) {
      try {
        ip('netns', 'del', ns);
      } catch {
        /* already gone */
      }
    }
  });
  return (ns) => {
    ip('netns', 'add', ns);
    made.push(ns);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
  };
}

export interface Host {
  ns: string;
  addr: string;
  /** IPv6 address on the same link. */
  addr6: string;
  /** The veth end inside the hub, where a capture sees this host's traffic. */
  hubIf: string;
}

/** n hosts on 10.213.N.0/24 (N unique per call in this process); host i has address .(i+1). */
export function makeHosts(t: { teardown(fn: () => void): void }, n: number): Host[] {
  sweep();
  const id = `cwt${process.pid}x${counter++}`;
  const hub = `${id}h`;
  const add = namespaces(t);
  add(hub);
  ip('-n', hub, 'link', 'add', 'br0', 'type', 'bridge');
  ip('-n', hub, 'link', 'set', 'br0', 'up');
  const net = `10.213.${counter % 250}`;
  const net6 = `fd00:213:${counter % 250}`;
  const hosts: Host[] = [];
  for (let i = 0; i < n; i++) {
    const ns = `${id}n${i}`;
    add(ns);
    ip('-n', hub, 'link', 'add', `v${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    ip('-n', hub, 'link', 'set', `v${i}`, 'master', 'br0', 'up');
    ip('-n', ns, 'addr', 'add', `${net}.${i + 1}/24`, 'dev', 'eth0');
    ip('-n', ns, 'addr', 'add', `${net6}::${i + 1}/64`, 'dev', 'eth0', 'nodad');
    ip('-n', ns, 'link', 'set', 'eth0', 'up');
    hosts.push({ ns, addr: `${net}.${i + 1}`, addr6: `${net6}::${i + 1}`, hubIf: `v${i}` });
  }
  return hosts;
}

/** The /24 the hosts share, for --trust. */
export function subnet(h: Host): string {
  return h.addr.replace(/\.\d+$/, '.0/24');
}

/** The IPv6 /64 the hosts share. */
export function subnet6(h: Host): string {
  return h.addr6.replace(/::\d+$/, '::/64');
}

/**
 * Two hosts joined by one veth pair, no hub: net is the /24's first three
 * parts (e.g. '10.216.0'), host i has address net.(i+1). Pick a net no other
 * test uses. Removed by teardown, and swept like makeHosts' when the test
 * process died.
 */
export function makePair(t: { teardown(fn: () => void): void }, net: string): [Omit<Host, 'hubIf' | 'addr6'>, Omit<Host, 'hubIf' | 'addr6'>] {
  sweep();
  const id = `cwt${process.pid}x${counter++}`;
  const [n0, n1] = [`${id}n0`, `${id}n1`];
  const add = namespaces(t);
  for (const ns of [n0, n1]) add(ns);
  ip('-n', n0, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n1);
  [n0, n1].forEach((ns, i) => {
    ip('-n', ns, 'addr', 'add', `${net}.${i + 1}/24`, 'dev', 'eth0');
    ip('-n', ns, 'link', 'set', 'eth0', 'up');
  });
  return [
    { ns: n0, addr: `${net}.1` },
    { ns: n1, addr: `${net}.2` },
  ];
}
