/** Just enough of pcap, Ethernet, IPv4 and TCP to read TCP options from a capture. */
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
    if (frame.length < 34 || frame.readUInt16BE(12) !== 0x0800) continue;
    const ip = frame.subarray(14);
    const ihl = (ip[0] & 0xf) * 4;
    if (ip[9] !== 6) continue;
    const tcp = ip.subarray(ihl);
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
      src: `${ip[12]}.${ip[13]}.${ip[14]}.${ip[15]}`,
      dst: `${ip[16]}.${ip[17]}.${ip[18]}.${ip[19]}`,
      seq: tcp.readUInt32BE(4),
      payload: ip.readUInt16BE(2) - ihl - doff,
      options,
    });
  }
  return out;
}
