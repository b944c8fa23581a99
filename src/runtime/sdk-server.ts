/**
 * The runtime's side of the in-process SDK (src/sdk/): a UNIX socket named in
 * the command's environment (CAUSEWAY_SDK_SOCKET). A thread of the run asks
 * "attach TID"; the runtime checks with SO_PEERCRED that the asking process
 * is part of the run and that TID is one of its own threads, gives TID a slot
 * in a slot map private to that process, and sends that map's fd alone. So a
 * program, privileged or not, reaches only its own threads' records.
 *
 * Answers: "ok SLOT\n" with the fd, or "error MESSAGE\n".
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import createDebug from 'debug';
import { native } from '../kernel/native';
import type { Shim } from '../kernel/shim';
import type { RunCgroup } from '../kernel/cgroup';

const debug = createDebug('causeway:sdk-server');

const SLOTS = 16;

interface ProcSlots {
  fd: number;
  tids: number[];
}

export class SdkServer {
  readonly socketPath: string;
  private readonly dir: string;
  private readonly server: net.Server;
  private readonly procs = new Map<number, ProcSlots>();
  attached = 0;
  refused = 0;
  private closed = false;

  private constructor(private readonly shim: Shim, private readonly cgroup: RunCgroup, dir: string) {
    // dir is the run's own (its registry entry, 0711): the socket is reachable by any user (the traced program may not be root).
    this.dir = dir;
    this.socketPath = path.join(this.dir, 'sdk.sock');
    this.server = net.createServer((sock) => this.serve(sock));
  }

  /** Serves the SDK on dir/sdk.sock; dir belongs to the caller, who removes it after close(). */
  static async listen(shim: Shim, cgroup: RunCgroup, dir: string): Promise<SdkServer> {
    const s = new SdkServer(shim, cgroup, dir);
    await new Promise<void>((resolve, reject) => {
      s.server.once('error', reject);
      s.server.listen(s.socketPath, () => resolve());
    });
    fs.chmodSync(s.socketPath, 0o666);
    s.server.unref(); // never keeps causeway alive by itself
    return s;
  }

  /** A process of the run ended: its slots go. */
  release(tgid: number): void {
    const p = this.procs.get(tgid);
    if (!p || this.closed) return;
    this.procs.delete(tgid);
    try {
      this.shim.sdkRelease(tgid);
    } finally {
      native().closeFd(p.fd);
    }
  }

  /** Releases the slots of processes that are gone (exit events are not seen for unsampled records). */
  private sweep(): void {
    for (const tgid of [...this.procs.keys()]) if (!fs.existsSync(`/proc/${tgid}`)) this.release(tgid);
  }

  /** Stops serving and releases every slot map; call it before closing the shim. */
  async close(): Promise<void> {
    for (const tgid of [...this.procs.keys()]) this.release(tgid);
    this.closed = true;
    await new Promise<void>((r) => this.server.close(() => r()));
    fs.rmSync(this.socketPath, { force: true });
  }

  private serve(sock: net.Socket): void {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => {});
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > 256) return this.answer(sock, null, 'request too long');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const m = /^attach (\d+)$/.exec(buf.slice(0, nl));
      if (!m) return this.answer(sock, null, `unknown request "${buf.slice(0, Math.min(nl, 40))}"`);
      try {
        const { slot, fd } = this.attach(sock, Number(m[1]));
        this.answer(sock, fd, null, slot);
      } catch (err) {
        this.answer(sock, null, (err as Error).message);
      }
    });
  }

  private attach(sock: net.Socket, tid: number): { slot: number; fd: number } {
    const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (fd === undefined || fd < 0) throw new Error('internal: no socket fd');
    const peer = native().peerCred(fd);
    if (!this.cgroup.contains(peer.pid)) throw new Error(`process ${peer.pid} is not part of this causeway run`);
    if (!fs.existsSync(`/proc/${peer.pid}/task/${tid}`)) throw new Error(`thread ${tid} is not a thread of process ${peer.pid}`);
    let p = this.procs.get(peer.pid);
    if (!p) {
      this.sweep();
      p = { fd: this.shim.sdkSlots(peer.pid), tids: [] };
      this.procs.set(peer.pid, p);
    }
    let slot = p.tids.indexOf(tid);
    if (slot < 0) {
      // Threads that ended leave their slots to new ones.
      p.tids = p.tids.map((t) => (t && fs.existsSync(`/proc/${peer.pid}/task/${t}`) ? t : 0));
      slot = p.tids.indexOf(0);
      if (slot < 0) slot = p.tids.length;
      if (slot >= SLOTS) throw new Error(`process ${peer.pid} already has ${SLOTS} threads with SDK slots`);
      p.tids[slot] = tid;
    }
    if (!this.shim.setSdkSlot(tid, slot, p.fd)) throw new Error(`thread ${tid} holds no record (is it part of the run?)`);
    debug('process %d thread %d: slot %d', peer.pid, tid, slot);
    return { slot, fd: p.fd };
  }

  private answer(sock: net.Socket, mapFd: number | null, error: string | null, slot = 0): void {
    const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
    const text = error === null ? `ok ${slot}\n` : `error ${error.replace(/\n/g, ' ')}\n`;
    if (error === null) this.attached++;
    else {
      this.refused++;
      debug('refused: %s', error);
    }
    try {
      if (fd !== undefined && fd >= 0) native().sendFd(fd, error === null && mapFd !== null ? mapFd : -1, Buffer.from(text));
    } catch (err) {
      debug('answer failed: %s', (err as Error).message);
    }
    sock.destroy();
  }
}
