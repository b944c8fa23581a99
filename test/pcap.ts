/** Just enough of pcap, Ethernet, IPv4, IPv6 and TCP to read TCP options from a capture. */
import fs from 'node:fs';

export interface TcpPacket {
  src: string;
  dst: string;
  seq: number;
  payload: number;
  options: { kind: number; bytes: Buffer }[];
}

export function readTcpPackets(file: string): TcpPacket[] {
  const b = fs.readFileSync(file);
  if (b.length < 24 || b.readUInt32LE(0) !== 0xa1b2c3d4) throw new Error(`${file}: not a little-endian pcap file`);
  if (b.readUInt32LE(20) !== 1) throw new Error(`${file}: not an Ethernet capture`);
  const out: TcpPacket[] = [];
  for (let off = 24; off + 16 <= b.length; ) {
    const len = b.readUInt32LE(off + 8);
    const frame = b.subarray(off + 16, off + 16 + len);
    off += 16 + len;
    const ether = frame.length >= 14 ? frame.readUInt16BE(12) : 0;
    let src: string, dst: string, tcp: Buffer, tcpLen: number;
    if (ether === 0x0800 && frame.length >= 34) {
      const ip = frame.subarray(14);
      const ihl = (ip[0] & 0xf) * 4;
      if (ip[9] !== 6) continue;
      src = `${ip[12]}.${ip[13]}.${ip[14]}.${ip[15]}`;
      dst = `${ip[16]}.${ip[17]}.${ip[18]}.${ip[19]}`;
      tcp = ip.subarray(ihl);
      tcpLen = ip.readUInt16BE(2) - ihl;
    } else if (ether === 0x86dd && frame.length >= 54) {
      // No extension headers between IPv6 and TCP in these captures.
      const ip = frame.subarray(14);
      if (ip[6] !== 6) continue;
      src = ip6(ip.subarray(8, 24));
      dst = ip6(ip.subarray(24, 40));
      tcp = ip.subarray(40);
      tcpLen = ip.readUInt16BE(4);
    } else continue;
    const doff = (tcp[12] >> 4) * 4;
    const options: { kind: number; bytes: Buffer }[] = [];
    for (let i = 20; i < doff; ) {
      const kind = tcp[i];
      if (kind === 0) break;
      if (kind === 1) {
        i++;
        continue;
      }
      const olen = tcp[i + 1];
      if (olen < 2) break;
      options.push({ kind, bytes: Buffer.from(tcp.subarray(i, i + olen)) });
      i += olen;
    }
    out.push({
      src,
      dst,
      seq: tcp.readUInt32BE(4),
      payload: tcpLen - doff,
      options,
    });
  }
  return out;
}

/** An IPv6 address in the compressed form `ip` prints (one run of zero groups as ::). */
function ip6(b: Buffer): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i));
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}
