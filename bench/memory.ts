/**
 * What causeway costs in memory, measured:
 *   - kernel memory per tracked thread (task storage), per pipe in use (an
 *     element of chans) and per TCP connection in use (socket storage on both
 *     ends): `causeway run` (the CLI, which is run()) traces bench/memory_load.c
 *     while it makes N of each; the growth of the kernel memory charged to the
 *     runtime's memory cgroup (the maps' owner: BPF map memory, elements
 *     included, is charged to the cgroup that created the map) divided by N,
 *     beside each map's memlock as the kernel reports it (fdinfo) and the
 *     sizes the structs predict;
 *   - the runtime's resident memory (VmRSS, VmHWM of the causeway process)
 *     with 10,000 tracked loopback TCP connections open, propagation only and
 *     with every event written (-e), and the maps' kernel memory then.
 * The runtime runs in a memory cgroup of its own made here (cgroup v1 memory
 * controller, or v2 with memory enabled at the root), and on v1 the traced
 * load in another, so that only the maps' memory is counted. Everything made
 * here (cgroups, processes, files) is gone when benchMemory() settles.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn, ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { cgroup2Mount } from '../src/kernel/cgroup';
import { native } from '../src/kernel/native';
import { sweepRegistry } from '../src/runtime/registry';

const ROOT = path.join(__dirname, '..', '..');
const CLI = path.join(ROOT, 'bin', 'causeway.js');
const STAGE_TIMEOUT_MS = 180_000;

/** How many of each object; defaults: 10,000. */
export interface MemoryOptions {
  threads?: number;
  pipes?: number;
  connections?: number;
}

/** One BPF map of the run, as /proc/<pid>/fdinfo and bpftool show it. */
interface MapInfo {
  id: number;
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  memlock: number;
}

/** The runtime's process and its maps at one stage of the load. */
interface Snapshot {
  /** Kernel memory charged to the runtime's memory cgroup (bytes), null without one. */
  kmem: number | null;
  rssKiB: number;
  hwmKiB: number;
  maps: MapInfo[];
  /** Keys held by chans (counted with BPF_MAP_GET_NEXT_KEY). */
  entries: { chans: number | null };
}

interface RunReport {
  load: 'threads' | 'pipes' | 'tcp';
  events: boolean;
  n: number;
  base: Snapshot;
  ready: Snapshot;
  closed: Snapshot;
  /** causeway's summary line (counters and drops). */
  summary: string;
}

/** Memory cgroups for the runtime (rt) and, on v1, the traced load; null if memory is not accounted per cgroup here. */
interface Memcgs {
  kind: 'v1' | 'v2';
  rt: string;
  load: string | null;
  kmem(dir: string): number;
  remove(): Promise<void>;
}


/** Whether a process exists (EPERM: it does, owned by someone else). */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the memory cgroups a dead benchMemory() left in parent (named by its pid: a best effort for a benchmark). */
function sweep(parent: string): void {
  for (const d of fs.readdirSync(parent)) {
    const m = /^cwmem-(\d+)-/.exec(d);
    if (m && !pidAlive(Number(m[1])))
      try {
        fs.rmdirSync(path.join(parent, d));
      } catch {
        /* still busy */
      }
  }
}

/** The v1 memory controller's directory for this process, or null. */
function v1MemoryDir(): string | null {
  let mount: string | null = null;
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!post) continue;
    const [fstype, , superOpts] = post.split(' ');
    if (fstype === 'cgroup' && superOpts?.split(',').includes('memory')) mount = pre.split(' ')[4];
  }
  if (!mount) return null;
  for (const line of fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    const [, ctrls, p] = line.split(':');
    if (ctrls?.split(',').includes('memory')) return path.join(mount, p ?? '/');
  }
  return null;
}

function makeMemcgs(): Memcgs | null {
  const tag = `cwmem-${process.pid}-${Date.now().toString(36)}`;
  const made: string[] = [];
  const mk = (d: string) => {
    fs.mkdirSync(d);
    made.push(d);
    return d;
  };
  const remove = async () => {
    for (const d of made.reverse())
      for (let i = 0; ; i++) {
        try {
          fs.rmdirSync(d);
          break;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') break;
          // Exiting processes leave the cgroup a moment after they are reaped.
          if (i >= 50) throw new Error(`cannot remove ${d}: ${(err as Error).message}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
  };
  const v1 = v1MemoryDir();
  if (v1 && fs.existsSync(path.join(v1, 'memory.kmem.usage_in_bytes'))) {
    sweep(v1);
    const rt = mk(path.join(v1, `${tag}-rt`));
    try {
      // The traced load goes to its own memory cgroup: v1 hierarchies do not follow the run's v2 cgroup.
      const load = mk(path.join(v1, `${tag}-load`));
      return { kind: 'v1', rt, load, kmem: (d) => Number(fs.readFileSync(path.join(d, 'memory.kmem.usage_in_bytes'), 'utf8')), remove };
    } catch (err) {
      void remove();
      throw err;
    }
  }
  const mount = cgroup2Mount();
  if (mount && fs.readFileSync(path.join(mount, 'cgroup.subtree_control'), 'utf8').split(/\s+/).includes('memory')) {
    sweep(mount);
    const rt = mk(path.join(mount, tag));
    const kmem = (d: string) => {
      const m = /^kernel (\d+)$/m.exec(fs.readFileSync(path.join(d, 'memory.stat'), 'utf8'));
      if (!m) throw new Error(`${d}/memory.stat has no "kernel" line (Linux 5.18 or later)`);
      return Number(m[1]);
    };
    // The run's cgroup is made below causeway's own (rt), where no memory controller can be enabled
    // (causeway is in rt): on v2 the load's kernel memory counts in rt too. Hosts with the v1 memory
    // controller (above) measure the runtime alone.
    return { kind: 'v2', rt, load: null, kmem, remove };
  }
  return null;
}

const MAP_TYPES: Record<number, string> = { 1: 'hash', 2: 'array', 6: 'percpu_array', 9: 'lru_hash', 11: 'lpm_trie', 13: 'hash_of_maps', 24: 'sk_storage', 27: 'ringbuf', 29: 'task_storage' };

/** Map names by id, from bpftool; empty if bpftool is missing. */
function mapNames(): Map<number, string> {
  const names = new Map<number, string>();
  try {
    const all = JSON.parse(execFileSync('bpftool', ['map', 'show', '-j'], { maxBuffer: 64 << 20 }).toString()) as { id: number; name?: string }[];
    for (const m of all) if (m.name) names.set(m.id, m.name);
  } catch {
    /* named by type below */
  }
  return names;
}

/** The BPF maps process pid holds, from its fdinfo. */
function processMaps(pid: number, names: Map<number, string>): MapInfo[] {
  const maps = new Map<number, MapInfo>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let info: string;
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) !== 'anon_inode:bpf-map') continue;
      info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    } catch {
      continue; // closed meanwhile
    }
    const f: Record<string, number> = {};
    for (const line of info.split('\n')) {
      const m = /^(\w+):\s+(\S+)/.exec(line);
      if (m) f[m[1]] = Number(m[2]);
    }
    const id = f.map_id;
    const fallback = f.map_type === 29 ? 'tasks' : f.map_type === 1 && f.value_size > 1024 ? 'chans' : f.map_type === 27 ? 'events' : `${MAP_TYPES[f.map_type] ?? f.map_type}#${id}`;
    maps.set(id, {
      id,
      name: names.get(id) ?? fallback,
      type: f.map_type,
      keySize: f.key_size,
      valueSize: f.value_size,
      maxEntries: f.max_entries,
      memlock: f.memlock,
    });
  }
  return [...maps.values()].sort((a, b) => a.id - b.id);
}

function status(pid: number): { rssKiB: number; hwmKiB: number } {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
  return { rssKiB: kib('VmRSS'), hwmKiB: kib('VmHWM') };
}

/** A `causeway run` of memory_load, driven stage by stage over its stdio. */
class Session {
  private readonly child: ChildProcess;
  private readonly exited: Promise<unknown>;
  private out = '';
  private err = '';
  private waiter: (() => void) | null = null;
  private gone = false;

  constructor(
    cliArgs: string[],
    load: string[],
    private readonly cgs: Memcgs | null,
  ) {
    const cmd = cgs?.load ? ['/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', path.join(cgs.load, 'cgroup.procs'), ...load] : load;
    const runtime = [process.execPath, CLI, 'run', ...cliArgs, '--', ...cmd];
    const argv = cgs ? ['/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', path.join(cgs.rt, 'cgroup.procs'), ...runtime] : runtime;
    this.child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    this.exited = once(this.child, 'exit').then(() => {
      this.gone = true;
      this.waiter?.();
    });
    this.child.stdout!.on('data', (b: Buffer) => {
      this.out += b.toString();
      this.waiter?.();
    });
    this.child.stderr!.on('data', (b: Buffer) => (this.err += b.toString()));
    this.child.stdin!.on('error', () => {}); // EPIPE if it died: reported by expect()
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Waits for the load's "STAGE N" line; returns N. */
  async expect(stage: string): Promise<number> {
    const deadline = Date.now() + STAGE_TIMEOUT_MS;
    for (;;) {
      const i = this.out.indexOf('\n');
      if (i >= 0) {
        const line = this.out.slice(0, i);
        this.out = this.out.slice(i + 1);
        const m = new RegExp(`^${stage} (\\d+)$`).exec(line);
        if (!m) throw new Error(`memory_load said "${line}", expected ${stage}; stderr: ${this.err.trim()}`);
        return Number(m[1]);
      }
      if (this.gone) throw new Error(`causeway run exited before "${stage}": ${this.err.trim()}`);
      if (Date.now() > deadline) throw new Error(`no "${stage}" from memory_load within ${STAGE_TIMEOUT_MS} ms`);
      await new Promise<void>((r) => {
        this.waiter = r;
        setTimeout(r, 1000).unref();
      });
      this.waiter = null;
    }
  }

  /** Why the run is not there to measure. */
  lost(err: unknown): Error {
    return new Error(`causeway run (pid ${this.pid}) ended mid-measurement (${(err as Error).message}): ${this.err.trim()}`);
  }

  go(): void {
    this.child.stdin!.write('\n');
  }

  /** Ends the run (EOF ends the load, then causeway cleans up); harder if it hangs. Returns causeway's stderr. */
  async finish(): Promise<string> {
    this.child.stdin!.end();
    const wait = (ms: number) => Promise.race([this.exited, new Promise((r) => setTimeout(r, ms).unref())]);
    await wait(30_000);
    if (!this.gone) {
      this.child.kill('SIGTERM'); // causeway forwards it and cleans up
      await wait(10_000);
    }
    if (!this.gone) {
      this.child.kill('SIGKILL');
      await this.exited;
      await this.killLeftovers();
    }
    return this.err;
  }

  /** After a SIGKILLed causeway: the processes of its load, in its run's cgroup (the registry's sweep) and our load cgroup. */
  private async killLeftovers(): Promise<void> {
    await sweepRegistry();
    for (const d of this.cgs?.load ? [this.cgs.load] : []) {
      let pids: string[] = [];
      try {
        pids = fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
      } catch {
        continue;
      }
      for (const p of pids)
        try {
          process.kill(Number(p), 'SIGKILL');
        } catch {
          /* gone */
        }
    }
  }
}

/** Runs one load under causeway and snapshots the runtime at each stage. */
async function measureLoad(bin: string, cgs: Memcgs | null, load: RunReport['load'], n: number, eventsFile: string | null): Promise<RunReport> {
  const session = new Session(eventsFile ? ['-e', eventsFile] : [], [bin, load, String(n)], cgs);
  let names = new Map<number, string>();
  const count = (maps: MapInfo[], name: string): number | null => {
    const m = maps.find((x) => x.name === name);
    return m ? Number(execFileSync(bin, ['count', String(m.id)]).toString()) : null;
  };
  const snap = (): Snapshot => {
    try {
      const maps = processMaps(session.pid, names);
      return {
        kmem: cgs ? cgs.kmem(cgs.rt) : null,
        ...status(session.pid),
        maps,
        entries: { chans: count(maps, 'chans') },
      };
    } catch (err) {
      throw session.lost(err);
    }
  };
  let report: RunReport;
  let stderr = '';
  try {
    n = await session.expect('base');
    names = mapNames();
    await settle();
    const base = snap();
    session.go();
    await session.expect('ready');
    await settle();
    const ready = snap();
    session.go();
    await session.expect('closed');
    await settle();
    const closed = snap();
    report = { load, events: eventsFile !== null, n, base, ready, closed, summary: '' };
  } finally {
    stderr = await session.finish();
  }
  report.summary = stderr.trim().split('\n').filter((l) => l.startsWith('causeway:')).pop() ?? '';
  return report;
}

/** Lets RCU free what was released and per-CPU counters settle. */
function settle(): Promise<void> {
  return new Promise((r) => setTimeout(r, 500));
}

/** Kernel struct sizes from the running kernel's BTF; null where unknown. */
function kernelSizes(): Record<string, number | null> {
  const want = ['bpf_local_storage_elem', 'bpf_local_storage', 'htab_elem', 'bucket'];
  const out: Record<string, number | null> = Object.fromEntries(want.map((w) => [w, null]));
  try {
    const raw = execFileSync('/bin/sh', ['-c', `bpftool btf dump file /sys/kernel/btf/vmlinux format raw | grep -E "STRUCT '(${want.join('|')})' size="`]).toString();
    for (const m of raw.matchAll(/STRUCT '(\w+)' size=(\d+)/g)) out[m[1]] = Number(m[2]);
  } catch {
    /* no bpftool or no BTF: theory left out */
  }
  return out;
}

/** The kmalloc size class an object of n bytes is taken from. */
function slabClass(n: number): number {
  for (const c of [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192]) if (n <= c) return c;
  return Math.ceil(n / 4096) * 4096;
}

const round8 = (n: number) => Math.ceil(n / 8) * 8;
const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;

/** Measures the maps' kernel memory per thread, pipe and TCP connection, and the runtime's RSS with 10,000 connections. */
export async function benchMemory(opts: MemoryOptions = {}): Promise<{ json: unknown; md: string }> {
  if (process.geteuid?.() !== 0) throw new Error('benchMemory needs root (causeway run)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'causeway-memory-'));
  let cgs: Memcgs | null = null;
  const runs: RunReport[] = [];
  try {
    const bin = path.join(dir, 'memory_load');
    execFileSync('cc', ['-O2', '-pthread', '-o', bin, path.join(ROOT, 'bench', 'memory_load.c')]);
    cgs = makeMemcgs();
    const log = (r: RunReport) =>
      process.stderr.write(
        `memory: ${r.load} x${r.n}${r.events ? ' (events)' : ''}: kernel ${r.base.kmem ?? '?'} -> ${r.ready.kmem ?? '?'} B, RSS ${r.base.rssKiB} -> ${r.ready.rssKiB} KiB, peak ${r.closed.hwmKiB} KiB\n`,
      );
    for (const [load, n] of [['threads', opts.threads ?? 10_000], ['pipes', opts.pipes ?? 10_000], ['tcp', opts.connections ?? 10_000]] as const) {
      runs.push(await measureLoad(bin, cgs, load, n, null));
      log(runs[runs.length - 1]);
    }
    const events = path.join(dir, 'events.jsonl');
    runs.push(await measureLoad(bin, cgs, 'tcp', opts.connections ?? 10_000, events));
    log(runs[runs.length - 1]);
  } finally {
    try {
      await cgs?.remove();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  return report(runs, cgs?.kind ?? null);
}

function report(runs: RunReport[], memcg: 'v1' | 'v2' | null) {
  const layout = native().layout();
  const k = kernelSizes();
  const byLoad = (load: RunReport['load'], events = false) => runs.find((r) => r.load === load && r.events === events)!;
  const mapOf = (s: Snapshot, name: string) => s.maps.find((m) => m.name === name);
  // The memlock of one map, or of several joined by " + ".
  const memlockOf = (s: Snapshot, names: string): number | null => {
    const ms = names.split(' + ').map((n) => mapOf(s, n));
    return ms.every((m) => m) ? ms.reduce((a, m) => a + m!.memlock, 0) : null;
  };
  const perElement = (r: RunReport) => (r.base.kmem === null || r.ready.kmem === null ? null : (r.ready.kmem - r.base.kmem) / r.n);

  // What the structs predict per element.
  const selem = k.bpf_local_storage_elem !== null ? k.bpf_local_storage_elem + layout.task : null;
  const threadTheory = selem !== null && k.bpf_local_storage !== null ? slabClass(selem) + slabClass(k.bpf_local_storage) : null;
  const base = byLoad('threads').base;
  // chans: a hash without preallocation, an element per channel as it appears (freed by the sweep).
  const chansMap = mapOf(base, 'chans');
  const chanElem = chansMap && k.htab_elem !== null ? k.htab_elem + round8(chansMap.keySize) + round8(chansMap.valueSize) : null;
  // TCP: socket-local storage, one element on each socket that carried a tracked byte, freed with the socket.
  const skElem = k.bpf_local_storage_elem !== null ? k.bpf_local_storage_elem + layout.chan : null;
  const connTheory = skElem !== null && k.bpf_local_storage !== null ? 2 * (slabClass(skElem) + slabClass(k.bpf_local_storage)) : null;
  const elements = [
    {
      what: 'tracked thread',
      map: 'tasks',
      run: byLoad('threads'),
      valueBytes: layout.task,
      theory: threadTheory,
      theoryText:
        selem !== null && threadTheory !== null
          ? `${selem} B element (${layout.task} value + ${k.bpf_local_storage_elem} header) in a ${slabClass(selem)} B object + ${k.bpf_local_storage} B bpf_local_storage in ${slabClass(k.bpf_local_storage!)} B = ${threadTheory} B, grows per thread`
          : `${layout.task} B value + kernel headers, grows per thread`,
    },
    {
      what: 'pipe in use',
      map: 'chans',
      run: byLoad('pipes'),
      valueBytes: layout.chan,
      theory: chanElem !== null ? slabClass(chanElem) : null,
      theoryText:
        chanElem !== null
          ? `${chanElem} B element (${k.htab_elem} header + ${round8(chansMap!.keySize)} key + ${round8(chansMap!.valueSize)} value) in a ${slabClass(chanElem)} B object, made with the channel`
          : `${layout.chan} B value + kernel headers, made with the channel`,
    },
    {
      what: 'TCP connection (one direction written)',
      map: 'sk_out + sk_in',
      run: byLoad('tcp'),
      valueBytes: layout.chan,
      theory: connTheory,
      theoryText:
        skElem !== null && connTheory !== null
          ? `two sockets (the writer's sk_out, the reader's sk_in), each ${skElem} B element (${layout.chan} value + ${k.bpf_local_storage_elem} header) in a ${slabClass(skElem)} B object + ${k.bpf_local_storage} B bpf_local_storage in ${slabClass(k.bpf_local_storage!)} B = ${connTheory} B, freed with the sockets`
          : `two socket storage elements of ${layout.chan} B + kernel headers`,
    },
  ].map((e) => ({
    what: e.what,
    map: e.map,
    n: e.run.n,
    measuredBytesPerElement: perElement(e.run),
    valueBytes: e.valueBytes,
    theoryBytesPerElement: e.theory,
    theory: e.theoryText,
    memlockBefore: memlockOf(e.run.base, e.map),
    memlockWith: memlockOf(e.run.ready, e.map),
    entriesBefore: e.map === 'chans' ? e.run.base.entries.chans : null,
    entriesWith: e.map === 'chans' ? e.run.ready.entries.chans : null,
    kernelReleasedAfterClose: e.run.ready.kmem !== null && e.run.closed.kmem !== null ? e.run.ready.kmem - e.run.closed.kmem : null,
  }));
  const pipes = elements.find((e) => e.map === 'chans')!;
  const pipeMemlock = pipes.memlockBefore !== null && pipes.memlockWith !== null ? (pipes.memlockWith - pipes.memlockBefore) / pipes.n : null;
  const perText = (x: number | null, n: number) => (x === null ? '-' : `${Math.abs(x) < 0.5 ? 0 : x.toFixed(0)} B (${x * n >= 0 ? '+' : '-'}${kib(Math.abs(x * n))} for ${n})`);
  const fixed = base.maps.map((m) => ({ name: m.name, type: MAP_TYPES[m.type] ?? String(m.type), maxEntries: m.maxEntries, valueSize: m.valueSize, memlock: m.memlock }));
  const totalMemlock = (s: Snapshot) => s.maps.reduce((a, m) => a + m.memlock, 0);
  const rss = runs
    .filter((r) => r.load === 'tcp')
    .map((r) => ({
      configuration: r.events ? `every event written (-e; ${/(\d+) events/.exec(r.summary)?.[1] ?? '?'} events)` : 'propagation only',
      connections: r.n,
      rssStartKiB: r.base.rssKiB,
      rssOpenKiB: r.ready.rssKiB,
      rssAfterCloseKiB: r.closed.rssKiB,
      peakKiB: r.closed.hwmKiB,
      kernelStart: r.base.kmem,
      kernelOpen: r.ready.kmem,
      mapsMemlockOpen: totalMemlock(r.ready),
      summary: r.summary,
    }));

  const md: string[] = [
    '## Memory',
    '',
    `Measured with \`causeway run\` tracing bench/memory_load.c. Kernel memory is what the kernel charged to a memory cgroup (${memcg ?? 'none found: not measured'}) holding only the runtime, which owns the maps (elements included), between the load idle and with N objects alive, divided by N; memlock is the kernel's own figure per map (fdinfo).`,
    '',
    '| per | map | N | kernel memory measured | value size (sizeof) | predicted | map memlock idle -> with N | entries idle -> with N |',
    '|---|---|---|---|---|---|---|---|',
    ...elements.map(
      (e) =>
        `| ${e.what} | ${e.map} | ${e.n} | ${perText(e.measuredBytesPerElement, e.n)} | ${e.valueBytes} B | ${e.theory} | ${e.memlockBefore ?? '?'} -> ${e.memlockWith ?? '?'} B | ${e.entriesBefore ?? '-'} -> ${e.entriesWith ?? '-'} |`,
    ),
    '',
    `Task and socket storage memlock counts buckets only, so their growth shows in the charged memory alone; chans (a hash of at most ${chansMap?.maxEntries ?? '?'} channels, no preallocation) counts its elements alive too: ${pipeMemlock === null ? '?' : `${pipeMemlock.toFixed(0)} B`} more per pipe in use, the rest of the charged growth per pipe being other kernel memory charged to the runtime meanwhile. chans' elements are made with each pipe, FIFO or UNIX socket channel and deleted by the runtime's sweep once no process of the run holds the object; a TCP channel lives in the storage of its sockets and goes with them.`,
    `Fixed at load, per run (memlock): ${fixed.map((m) => `${m.name} ${m.type === 'ringbuf' || m.memlock >= 1 << 20 ? mib(m.memlock) : kib(m.memlock)}`).join(', ')}; total ${mib(totalMemlock(base))}.`,
    '',
    `The runtime (the \`causeway run\` process) with ${rss[0]?.connections ?? '?'} loopback TCP connections open, client and server both traced, 8 bytes sent on each:`,
    '',
    '| configuration | RSS, shim loaded, 0 connections | RSS, connections open | RSS after they closed | peak RSS (VmHWM) | kernel memory charged to causeway (its maps and its own), open | maps memlock |',
    '|---|---|---|---|---|---|---|',
    ...rss.map(
      (r) =>
        `| ${r.configuration} | ${mib(r.rssStartKiB * 1024)} | ${mib(r.rssOpenKiB * 1024)} | ${mib(r.rssAfterCloseKiB * 1024)} | ${mib(r.peakKiB * 1024)} | ${r.kernelOpen === null || r.kernelStart === null ? '-' : `${mib(r.kernelOpen)} (${r.kernelOpen >= r.kernelStart ? '+' : '-'}${kib(Math.abs(r.kernelOpen - r.kernelStart))} over 0 connections)`} | ${mib(r.mapsMemlockOpen)} |`,
    ),
    '',
  ];
  return {
    md: md.join('\n'),
    json: { memcg, layout, kernelStructs: k, elements, chans: { maxEntries: chansMap?.maxEntries ?? null, elemBytes: chanElem }, fixed, rss, runs },
  };
}

if (require.main === module)
  benchMemory().then(
    (r) => process.stdout.write(r.md + '\n'),
    (err) => {
      process.stderr.write(`memory: ${(err as Error).stack ?? err}\n`);
      process.exit(1);
    },
  );
