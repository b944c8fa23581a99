/**
 * The runtime's side of the in-process SDK (src/sdk/): a UNIX socket named in
 * the command's environment (CAUSEWAY_SDK_SOCKET). A thread of the run asks
 * "attach TID"; the runtime identifies the process that connected by a pidfd
 * (SO_PEERPIDFD), never by a pid alone: a pid can be handed to another
 * process once its owner is gone. It checks that the process is part of the
 * run, runs as the uid it connected with, and that TID is one of its own
 * threads, and that the pidfd still names a live process after those checks;
 * then it gives TID a slot in a slot map private to that process and sends
 * that map's fd alone. So a program, privileged or not, reaches only its own
 * threads' records.
 *
 * Anyone may connect (the run's programs may run as any user), so nobody can
 * hold the runtime: a connection gets one request and DEADLINE_MS to make it,
 * at most MAX_CONNECTIONS are open at once, and closing drops them all.
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
/** How long a connection may take to send its request. */
const DEADLINE_MS = 2000;
/** Connections served at once; more are closed at once (and counted as refused). */
const MAX_CONNECTIONS = 64;

interface ProcSlots {
  /** The slot map. */
  fd: number;
  /** The process it belongs to: a pid of a dead process may come back as another one. */
  pidfd: number;
  tids: number[];
}

export class SdkServer {
  readonly socketPath: string;
  private readonly dir: string;
  private readonly server: net.Server;
  private readonly procs = new Map<number, ProcSlots>();
  private readonly connections = new Set<net.Socket>();
  attached = 0;
  refused = 0;
  private closed = false;

  private constructor(private readonly shim: Shim, private readonly cgroup: RunCgroup, dir: string) {
    // dir is the run's own (its registry entry, 0711): the socket is reachable by any user (the traced program may not be root).
    this.dir = dir;
    this.socketPath = path.join(this.dir, 'sdk.sock');
    this.server = net.createServer((sock) => this.serve(sock));
    this.server.on('error', (err) => debug('server: %s', err.message));
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
      native().closeFd(p.pidfd);
    }
  }

  /** Releases the slots of processes that are gone (exit events are not seen for unsampled records). */
  private sweep(): void {
    for (const [tgid, p] of [...this.procs]) if (!native().pidfdAlive(p.pidfd)) this.release(tgid);
  }

  /** Stops serving and releases every slot map; never waits on a client. Call it before closing the shim. */
  async close(): Promise<void> {
    for (const tgid of [...this.procs.keys()]) this.release(tgid);
    this.closed = true;
    for (const sock of this.connections) sock.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
    fs.rmSync(this.socketPath, { force: true });
  }

  private serve(sock: net.Socket): void {
    if (this.closed || this.connections.size >= MAX_CONNECTIONS) {
      this.refused++;
      debug('refused a connection: %s', this.closed ? 'closing' : `${MAX_CONNECTIONS} already open`);
      sock.destroy();
      return;
    }
    this.connections.add(sock);
    sock.unref(); // a client never keeps causeway alive
    sock.on('close', () => this.connections.delete(sock));
    sock.on('error', () => {});
    sock.setTimeout(DEADLINE_MS, () => this.answer(sock, null, `no request within ${DEADLINE_MS} ms`));
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      if (sock.destroyed) return;
      buf += chunk;
      if (buf.length > 256) return this.answer(sock, null, 'request too long');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const m = /^attach (\d{1,10})$/.exec(buf.slice(0, nl));
      if (!m) return this.answer(sock, null, `unknown request "${buf.slice(0, Math.min(nl, 40)).replace(/[^\x20-\x7e]/g, '?')}"`);
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
    const peer = native().peerProcess(fd);
    let kept = false;
    try {
      if (peer.pidfd < 0 || peer.pid <= 0 || !native().pidfdAlive(peer.pidfd))
        throw new Error('the process that connected has exited (or is in a pid namespace the runtime cannot see)');
      const pid = peer.pid;
      if (!this.cgroup.contains(pid)) throw new Error(`process ${pid} is not part of this causeway run`);
      const uid = processUid(pid);
      if (uid !== peer.uid) throw new Error(`process ${pid} connected as uid ${peer.uid} but now runs as uid ${uid}`);
      if (!fs.existsSync(`/proc/${pid}/task/${tid}`)) throw new Error(`thread ${tid} is not a thread of process ${pid}`);
      // The checks read /proc by pid: they were about the peer only if it still lives now.
      if (!native().pidfdAlive(peer.pidfd)) throw new Error('the process that connected exited during the check');
      let p = this.procs.get(pid);
      if (p && !native().pidfdAlive(p.pidfd)) {
        this.release(pid); // an earlier process with this pid
        p = undefined;
      }
      if (!p) {
        this.sweep();
        p = { fd: this.shim.sdkSlots(pid), pidfd: peer.pidfd, tids: [] };
        kept = true;
        this.procs.set(pid, p);
      }
      let slot = p.tids.indexOf(tid);
      if (slot < 0) {
        // Threads that ended leave their slots to new ones.
        p.tids = p.tids.map((t) => (t && fs.existsSync(`/proc/${pid}/task/${t}`) ? t : 0));
        slot = p.tids.indexOf(0);
        if (slot < 0) slot = p.tids.length;
        if (slot >= SLOTS) throw new Error(`process ${pid} already has ${SLOTS} threads with SDK slots`);
        p.tids[slot] = tid;
      }
      if (!this.shim.setSdkSlot(tid, slot, p.fd)) throw new Error(`thread ${tid} holds no record (is it part of the run?)`);
      debug('process %d thread %d: slot %d', pid, tid, slot);
      return { slot, fd: p.fd };
    } finally {
      if (!kept && peer.pidfd >= 0) native().closeFd(peer.pidfd);
    }
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

/** The effective uid of a process (what SO_PEERCRED reports), from /proc/PID/status; -1 if it is gone. */
function processUid(pid: number): number {
  try {
    const m = /^Uid:\s+\d+\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : -1;
  } catch {
    return -1;
  }
}
