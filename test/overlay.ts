/**
 * A container overlay in network namespaces, Flannel-style (VXLAN): two hosts
 * joined by an underlay veth, on each a bridge that is the gateway of a
 * container netns on a veth, and a VXLAN device over the underlay that
 * carries the other host's container subnet. All made here, all removed by
 * teardown (also those of a test process that died). Addresses live only
 * inside these namespaces.
 *
 *   container a (10.231.1.2) eth0 ~ veth0 -[br0 10.231.1.1]- host a -vxlan0 10.231.0.1- ul0 10.232.0.1
 *                                                                                          | underlay veth
 *   container b (10.231.2.2) eth0 ~ veth0 -[br0 10.231.2.1]- host b -vxlan0 10.231.0.2- ul0 10.232.0.2
 *
 * Or Calico-style routed, without encapsulation (Calico's BGP mode; its IPIP
 * mode needs CONFIG_NET_IPIP, which this kernel lacks): no bridge, no tunnel;
 * the host routes its container's address to the container's veth and the
 * other host's containers to the other host over the underlay.
 *
 *   container a (10.231.1.2) eth0 ~ veth0 10.231.1.1 - host a - ul0 10.232.0.1 | ul0 10.232.0.2 - host b - veth0 10.231.2.1 ~ eth0 container b (10.231.2.2)
 */
import { execFileSync } from 'node:child_process';
import { ip, namespaces, sweep } from './netns';

let counter = 0;

export interface Overlay {
  hostA: string;
  hostB: string;
  /** Container namespaces. */
  ctrA: string;
  ctrB: string;
  addrA: string;
  addrB: string;
  /** The containers' networks, for --trust. */
  trust: string;
  /**
   * The request's path from container a to container b: every interface and
   * direction it crosses, in order (NETNS:IFNAME:DIR, as --layers takes them).
   */
  pathAB: string[];
}

/** Makes the overlay (VXLAN, or routed without encapsulation); teardown removes it. */
export function makeOverlay(t: { teardown(fn: () => void): void }, mode: 'vxlan' | 'routed' = 'vxlan'): Overlay {
  sweep('cwl');
  const id = `cwl${process.pid}x${counter++}`;
  const [hostA, hostB, ctrA, ctrB] = ['ha', 'hb', 'ca', 'cb'].map((s) => id + s);
  const add = namespaces(t);
  for (const ns of [hostA, hostB, ctrA, ctrB]) add(ns);
  // The underlay: one veth between the hosts.
  ip('-n', hostA, 'link', 'add', 'ul0', 'type', 'veth', 'peer', 'name', 'ul0', 'netns', hostB);
  const side = (host: string, ctr: string, n: number) => {
    ip('-n', host, 'addr', 'add', `10.232.0.${n}/24`, 'dev', 'ul0');
    ip('-n', host, 'link', 'set', 'ul0', 'up');
    execFileSync('ip', ['netns', 'exec', host, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const other = 3 - n;
    if (mode === 'routed') {
      // The container's veth is its gateway; the other host's containers are over the underlay.
      ip('-n', host, 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ctr);
      ip('-n', host, 'addr', 'add', `10.231.${n}.1/24`, 'dev', 'veth0');
      ip('-n', host, 'link', 'set', 'veth0', 'up');
      ip('-n', ctr, 'addr', 'add', `10.231.${n}.2/24`, 'dev', 'eth0');
      ip('-n', ctr, 'link', 'set', 'eth0', 'up');
      ip('-n', ctr, 'route', 'add', 'default', 'via', `10.231.${n}.1`);
      ip('-n', host, 'route', 'add', `10.231.${other}.0/24`, 'via', `10.232.0.${other}`, 'dev', 'ul0');
      return;
    }
    // The bridge, gateway of the container's /24.
    ip('-n', host, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', host, 'addr', 'add', `10.231.${n}.1/24`, 'dev', 'br0');
    ip('-n', host, 'link', 'set', 'br0', 'up');
    // The container on a veth, MTU left for the VXLAN header (as Flannel does).
    ip('-n', host, 'link', 'add', 'veth0', 'mtu', '1450', 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', '1450', 'netns', ctr);
    ip('-n', host, 'link', 'set', 'veth0', 'master', 'br0', 'up');
    ip('-n', ctr, 'addr', 'add', `10.231.${n}.2/24`, 'dev', 'eth0');
    ip('-n', ctr, 'link', 'set', 'eth0', 'up');
    ip('-n', ctr, 'route', 'add', 'default', 'via', `10.231.${n}.1`);
    // The VXLAN device over the underlay, routing the other host's container subnet.
    ip('-n', host, 'link', 'add', 'vxlan0', 'type', 'vxlan', 'id', '42', 'local', `10.232.0.${n}`, 'remote', `10.232.0.${other}`, 'dstport', '4789', 'dev', 'ul0');
    ip('-n', host, 'addr', 'add', `10.231.0.${n}/24`, 'dev', 'vxlan0');
    ip('-n', host, 'link', 'set', 'vxlan0', 'up');
    ip('-n', host, 'route', 'add', `10.231.${other}.0/24`, 'via', `10.231.0.${other}`, 'dev', 'vxlan0');
  };
  side(hostA, ctrA, 1);
  side(hostB, ctrB, 2);
  return {
    hostA,
    hostB,
    ctrA,
    ctrB,
    addrA: '10.231.1.2',
    addrB: '10.231.2.2',
    trust: '10.231.0.0/16',
    pathAB: mode === 'routed' ? [`${ctrA}:eth0:out`, `${hostA}:veth0:in`, `${hostA}:ul0:out`, `${hostB}:ul0:in`, `${hostB}:veth0:out`, `${ctrB}:eth0:in`] : [
      `${ctrA}:eth0:out`,
      `${hostA}:veth0:in`,
      `${hostA}:br0:in`,
      `${hostA}:vxlan0:out`,
      `${hostA}:ul0:out`,
      `${hostB}:ul0:in`,
      `${hostB}:vxlan0:in`,
      `${hostB}:br0:out`,
      `${hostB}:veth0:out`,
      `${ctrB}:eth0:in`,
    ],
  };
}
