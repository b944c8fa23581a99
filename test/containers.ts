/**
 * Podman containers for tests, made here and all removed by teardown (also
 * those of a test process that died): a private podman state directory, one
 * bridge network on 10.217.N.0/24 (N from the test's pid; no other test uses
 * 10.217/16), and containers run from a root filesystem built here from the
 * host's own files (static busybox, the system python3 with its libraries
 * and its pure-Python standard library): no registry, no image store.
 *
 * How podman is made to work on this kind of host (Debian 12's podman 4.3,
 * hybrid cgroups, no systemd) and to touch nothing outside its state
 * directory, all through the two files CONTAINERS_CONF and
 * CONTAINERS_STORAGE_CONF name (environment, not flags, so that a plain
 * `podman inspect NAME` from causeway sees the same containers):
 * - runtime runc: crun refuses a hybrid cgroup layout;
 * - cgroup manager cgroupfs, events to a file: no systemd here;
 * - ulimits given (16384, or the test's own hard limit if lower): podman's
 *   defaults (nofile 1048576) are above what root may set without
 *   CAP_SYS_RESOURCE here, and runc fails with EPERM;
 * - logs to files (k8s-file), for `podman logs` without journald;
 * - graphroot, runroot, tmp_dir and the network config directory in the
 *   state directory; containers run with --rootfs DIR:O (an overlay on
 *   the directory built here, its writes in the runroot), so no image is
 *   imported (an import writes podman's global blob-info cache under
 *   /var/lib/containers, and the overlay driver bind-mounts its directory);
 * - a network written as a file (podman 4.3 cannot name a bridge), internal
 *   (netavark adds no NAT or firewall rule) and without DNS (no aardvark-dns);
 * - --cgroup-parent /TAG: the containers' cgroups are TAG/libpod-ID in every
 *   hierarchy (the v2 one is the container's own cgroup, what causeway
 *   attaches to); podman never removes TAG (nor v1 TAG/conmon), teardown does.
 * What podman still writes outside it, teardown removes unless it was there
 * before: netavark's IPAM database (/run/containers/networks/ipam.db, not
 * configurable in 4.3), runc's /run/runc, the mount that makes /run/netns
 * shared; and it restores ip_forward, which netavark sets to 1.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pidAlive, Result, runCommand } from './helpers';

/** The system python3 (Debian 12: /usr/bin/python3.11), the one with its standard library in /usr/lib/python3.X. */
const PYTHON_LINK = '/usr/bin/python3';
const BUSYBOX = '/bin/busybox';
const STATE_PREFIX = 'causeway-podman-';
/** Global paths podman, netavark or runc make whatever the configuration: removed after if absent before (children first). */
const GLOBALS = ['/run/containers/networks/ipam.db', '/run/containers/networks', '/run/containers', '/run/runc', '/run/netns'];

/** Why podman containers cannot run here (a missing program), or null. */
export function podmanMissing(): string | null {
  for (const [file, pkg] of [
    ['/usr/bin/podman', 'podman'],
    ['/usr/sbin/runc', 'runc'],
    ['/usr/lib/podman/netavark', 'netavark'],
    [BUSYBOX, 'busybox-static'],
    [PYTHON_LINK, 'python3'],
  ])
    if (!fs.existsSync(file)) return `${file} is missing (apt-get install ${pkg}; scripts/setup.sh installs it)`;
  return null;
}

export interface Container {
  name: string;
  ip: string;
  /** Its first process, as the host sees it. */
  pid: number;
  /** Its network namespace (/run/netns/netns-UUID). */
  netns: string;
}

/** Everything the lab of test process pid makes is named after it: state directory, network, bridge, cgroup parent, containers. */
function names(pid: number) {
  const tag = `cwct${pid}`; // at most 11 characters: a bridge name has 15 at most
  return { tag, state: path.join(os.tmpdir(), `${STATE_PREFIX}${pid}`), network: tag, bridge: tag, cgroupParent: tag };
}

export class PodmanLab {
  /** What the lab's names start with (its containers are TAG-NAME). */
  readonly tag: string;
  /** The environment podman (and causeway's calls of podman) needs to see this lab's containers. */
  readonly env: NodeJS.ProcessEnv;
  /** The bridge network, e.g. 10.217.7.0/24. */
  readonly subnet: string;
  private readonly prefix: string;
  private readonly names: ReturnType<typeof names>;
  private readonly containers: Container[] = [];
  private closed = false;
  /** The host as it was: ip_forward, and which of GLOBALS were absent. */
  private before = { ipForward: '', absent: [] as string[], netnsMount: false };

  private constructor(private readonly pid: number) {
    this.names = names(pid);
    this.tag = this.names.tag;
    this.env = podmanEnv(this.names.state);
    this.prefix = `10.217.${pid % 256}`;
    this.subnet = `${this.prefix}.0/24`;
  }

  /**
   * A lab with files (path in the container -> contents) added to its root
   * filesystem; removed at the end of the test t.
   */
  static async create(t: { teardown(fn: () => Promise<void>): void }, files: Record<string, string>): Promise<PodmanLab> {
    const missing = podmanMissing();
    if (missing) throw new Error(missing);
    await sweep();
    const lab = new PodmanLab(process.pid);
    const { state } = lab.names;
    if (fs.existsSync(state)) await teardown(process.pid);
    fs.mkdirSync(state, { recursive: true });
    t.teardown(() => lab.close());
    // What teardown restores or removes, written first: a test process killed from here on is swept by the next one.
    lab.before = { ipForward: fs.readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim(), absent: GLOBALS.filter((p) => !fs.existsSync(p)), netnsMount: netnsMounted() };
    fs.writeFileSync(path.join(state, 'before.json'), JSON.stringify(lab.before));
    lab.configure();
    buildRootfs(path.join(state, 'rootfs'), files);
    return lab;
  }

  /** An address on the lab's network (host 2-254; .1 is the bridge). */
  addr(host: number): string {
    return `${this.prefix}.${host}`;
  }

  private configure(): void {
    const { state, network, bridge } = this.names;
    // No storage driver mount (the containers run from --rootfs): vfs makes none in any case.
    fs.writeFileSync(this.env.CONTAINERS_STORAGE_CONF!, `[storage]\ndriver = "vfs"\ngraphroot = "${state}/root"\nrunroot = "${state}/run"\n`);
    const nofile = Math.min(16384, hardLimit('Max open files'));
    const nproc = Math.min(16384, hardLimit('Max processes'));
    fs.writeFileSync(
      this.env.CONTAINERS_CONF!,
      `[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]
log_driver = "k8s-file"
[network]
network_backend = "netavark"
network_config_dir = "${state}/net"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "${state}/tmp"
`,
    );
    fs.mkdirSync(path.join(state, 'net'));
    const net = {
      name: network,
      id: crypto.createHash('sha256').update(network).digest('hex'),
      driver: 'bridge',
      network_interface: bridge,
      created: new Date().toISOString(),
      subnets: [{ subnet: this.subnet, gateway: this.addr(1) }],
      ipv6_enabled: false,
      internal: true,
      dns_enabled: false,
      ipam_options: { driver: 'host-local' },
    };
    fs.writeFileSync(path.join(state, 'net', `${network}.json`), JSON.stringify(net, null, 2));
  }

  /** podman ARGS with the lab's configuration; throws with its stderr if it fails. */
  async podman(args: string[]): Promise<string> {
    const r = await this.podmanResult(args);
    if (r.status !== 0) throw new Error(`podman ${args.join(' ')} failed (${r.status}): ${r.stderr.trim()}`);
    return r.stdout;
  }

  /** podman ARGS with the lab's configuration, whatever its status. */
  podmanResult(args: string[]): Promise<Result> {
    return runCommand('podman', args, { env: this.env });
  }

  /**
   * Starts container NAME (named TAG-NAME) at host address `host` running
   * argv; waits until its log has a line matching ready, if given.
   */
  async run(name: string, host: number, argv: string[], ready?: RegExp): Promise<Container> {
    const full = `${this.tag}-${name}`;
    const ip = this.addr(host);
    const rootfs = path.join(this.names.state, 'rootfs');
    await this.podman(['run', '-d', '--name', full, '--hostname', name, '--network', this.names.network, '--ip', ip, '--cgroup-parent', `/${this.names.cgroupParent}`, '--rootfs', `${rootfs}:O`, ...argv]);
    const [pid, netns] = (await this.podman(['inspect', '--type', 'container', '--format', '{{.State.Pid}} {{.NetworkSettings.SandboxKey}}', full])).trim().split(' ');
    const c: Container = { name: full, ip, pid: Number(pid), netns };
    this.containers.push(c);
    if (ready) {
      let log = '';
      const end = Date.now() + 15000;
      while (!ready.test(log)) {
        if (Date.now() > end) throw new Error(`container ${full} did not get ready: ${log}`);
        await new Promise((r) => setTimeout(r, 100));
        log = await this.logs(full);
      }
    }
    return c;
  }

  /** What container NAME printed so far. */
  logs(name: string): Promise<string> {
    return this.podman(['logs', name]);
  }

  /** podman exec NAME argv, to completion. */
  exec(name: string, argv: string[]): Promise<Result> {
    return this.podmanResult(['exec', name, ...argv]);
  }

  /** Whether container NAME runs. */
  async running(name: string): Promise<boolean> {
    const r = await this.podmanResult(['inspect', '--type', 'container', '--format', '{{.State.Running}}', name]);
    return r.stdout.trim() === 'true';
  }

  /** Removes everything the lab made (idempotent). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await teardown(this.pid, this.containers.map((c) => c.netns));
  }

  /** What is left of the lab on the host: nothing once close() returned. */
  leftovers(): string[] {
    const out = leftovers(this.pid, this.subnet, this.containers.map((c) => c.netns));
    const ipForward = fs.readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
    if (ipForward !== this.before.ipForward) out.push(`ip_forward is ${ipForward}, was ${this.before.ipForward}`);
    for (const p of this.before.absent) if (fs.existsSync(p)) out.push(`${p} (podman's, absent before)`);
    if (netnsMounted() && !this.before.netnsMount && netnsNames().length === 0) out.push('/run/netns is a mount point (it was not before)');
    return out;
  }
}

/** The root filesystem of the lab's containers: static busybox, python3, its libraries and pure-Python standard library, the files given. */
function buildRootfs(root: string, files: Record<string, string>): void {
  for (const d of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev', 'root', 'lib64', 'usr/bin', 'usr/lib']) fs.mkdirSync(path.join(root, d), { recursive: true });
  fs.chmodSync(path.join(root, 'tmp'), 0o1777);
  fs.symlinkSync('usr/lib', path.join(root, 'lib')); // merged /usr, as on the host
  fs.copyFileSync(BUSYBOX, path.join(root, 'bin/busybox'));
  fs.chmodSync(path.join(root, 'bin/busybox'), 0o755);
  for (const applet of ['sh', 'sleep', 'cat', 'ls', 'ps']) fs.symlinkSync('busybox', path.join(root, 'bin', applet));
  fs.writeFileSync(path.join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  fs.writeFileSync(path.join(root, 'etc/group'), 'root:x:0:\n');
  const copy = (file: string) => {
    const to = path.join(root, file);
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.copyFileSync(file, to); // follows symlinks
    fs.chmodSync(to, 0o755);
  };
  const python = fs.realpathSync(PYTHON_LINK);
  const version = path.basename(python); // python3.11
  copy(python);
  fs.symlinkSync(version, path.join(root, 'usr/bin/python3'));
  // Its libraries, where the dynamic loader looks for them (ldd prints "name => /path (addr)" or "/path (addr)").
  for (const m of execFileSync('ldd', [python], { encoding: 'utf8' }).matchAll(/(\/\S+) \(0x/g)) copy(m[1]);
  // The pure-Python standard library (Debian builds _socket, select, zlib, ... into the binary); lib-dynload stays, empty.
  const skip = /\/(__pycache__|test|tests|idlelib|tkinter|turtledemo|ensurepip|lib2to3|distutils|pydoc_data|site-packages|dist-packages|config-3\.\d+-[^/]*)$|\/lib-dynload\/./;
  fs.cpSync(path.join('/usr/lib', version), path.join(root, 'usr/lib', version), { recursive: true, filter: (src) => !skip.test(src) });
  for (const [file, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    fs.writeFileSync(path.join(root, file), text);
  }
}

/** The environment that points podman at the configuration in state. */
function podmanEnv(state: string): NodeJS.ProcessEnv {
  return { ...process.env, CONTAINERS_CONF: path.join(state, 'containers.conf'), CONTAINERS_STORAGE_CONF: path.join(state, 'storage.conf') };
}

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): { ok: boolean; out: string } {
  try {
    return { ok: true, out: execFileSync(cmd, args, { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 30000 }) };
  } catch (err) {
    return { ok: false, out: String((err as { stderr?: string }).stderr ?? (err as Error).message) };
  }
}

/** The hard limit of this process's resource line name in /proc/self/limits ("Max open files"); 16384 if unlimited. */
function hardLimit(name: string): number {
  const m = new RegExp(`^${name}\\s+\\S+\\s+(\\S+)`, 'm').exec(fs.readFileSync('/proc/self/limits', 'utf8'));
  return Number(m?.[1]) || 16384;
}

/** Whether /run/netns is a mount point. */
function netnsMounted(): boolean {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === '/run/netns');
}

/** The named network namespaces (files in /run/netns). */
function netnsNames(): string[] {
  try {
    return fs.readdirSync('/run/netns');
  } catch {
    return [];
  }
}

/** The cgroup hierarchies mounted under /sys/fs/cgroup (v1 ones and the v2 one), or the v2 mount itself. */
function hierarchies(): string[] {
  const out: string[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    if (/^cgroup2? /.test(post ?? '')) out.push(pre.split(' ')[4]);
  }
  return out;
}

/** dir and every directory below it, deepest first. */
function dirsBelow(dir: string): string[] {
  const out = [dir];
  for (let i = 0; i < out.length; i++)
    try {
      for (const e of fs.readdirSync(out[i], { withFileTypes: true })) if (e.isDirectory()) out.push(path.join(out[i], e.name));
    } catch {
      /* gone */
    }
  return out.reverse();
}

/** Removes cgroup dir and what is below it, killing what still runs there (only the lab's containers and their conmon can). */
async function removeCgroup(dir: string): Promise<void> {
  const end = Date.now() + 10000;
  while (fs.existsSync(dir)) {
    for (const d of dirsBelow(dir)) {
      try {
        fs.rmdirSync(d);
      } catch {
        for (const pid of fs.existsSync(path.join(d, 'cgroup.procs')) ? fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean) : [])
          try {
            process.kill(Number(pid), 'SIGKILL');
          } catch {
            /* gone */
          }
      }
    }
    if (Date.now() > end) throw new Error(`cannot remove cgroup ${dir}`);
    if (fs.existsSync(dir)) await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Removes what the lab of test process pid made: its containers (and with them their
 * processes, network namespaces, veths and mounts), its network and bridge,
 * its cgroups in every hierarchy, its state directory, podman's global files
 * that were not there before; restores ip_forward. Each step runs whatever
 * the others did.
 */
async function teardown(pid: number, netns: string[] = []): Promise<void> {
  const n = names(pid);
  const env = podmanEnv(n.state);
  const errors: string[] = [];
  const step = async (what: string, fn: () => void | Promise<void>) => {
    try {
      await fn();
    } catch (err) {
      errors.push(`${what}: ${(err as Error).message}`);
    }
  };
  let before: { ipForward?: string; absent?: string[]; netnsMount?: boolean } = {};
  try {
    before = JSON.parse(fs.readFileSync(path.join(n.state, 'before.json'), 'utf8'));
  } catch {
    /* not written yet */
  }
  await step('causeway processes', () => stopCauseway(n.tag));
  if (fs.existsSync(env.CONTAINERS_CONF!) && fs.existsSync(env.CONTAINERS_STORAGE_CONF!)) {
    await step('podman rm', () => void run('podman', ['rm', '--all', '--force', '--time', '0'], env));
    await step('podman network rm', () => void run('podman', ['network', 'rm', '--force', n.network], env));
  }
  // What podman removes with the containers, in case it did not.
  for (const ns of netns) await step(`netns ${ns}`, () => void (fs.existsSync(ns) && run('ip', ['netns', 'del', path.basename(ns)])));
  await step('bridge', () => void (fs.existsSync(`/sys/class/net/${n.bridge}`) && run('ip', ['link', 'del', n.bridge])));
  for (const h of hierarchies()) await step(`cgroup ${h}`, () => removeCgroup(path.join(h, n.cgroupParent)));
  await step('mounts', () => {
    const mounts = fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1]).filter((m) => m && (m === n.state || m.startsWith(n.state + '/')));
    for (const m of mounts.reverse()) run('umount', ['-l', m]);
  });
  await step('state', () => fs.rmSync(n.state, { recursive: true, force: true }));
  // Podman, like `ip netns add`, makes /run/netns a shared mount point before it makes a namespace there; undone once no namespace is left (a busy one fails, not lazy).
  if (before.netnsMount === false) await step('/run/netns', () => void (netnsMounted() && netnsNames().length === 0 && run('umount', ['/run/netns'])));
  if (before.ipForward !== undefined) await step('ip_forward', () => fs.writeFileSync('/proc/sys/net/ipv4/ip_forward', before.ipForward!));
  for (const p of GLOBALS)
    if (before.absent?.includes(p))
      await step(p, () => {
        // Only what nothing else uses: a directory is removed only if empty; the IPAM database only if no podman store runs from /run/containers.
        if (p.endsWith('.db')) {
          if (!fs.existsSync('/run/containers/storage')) fs.rmSync(p, { force: true });
        } else if (fs.existsSync(p) && fs.readdirSync(p).length === 0) fs.rmdirSync(p);
      });
  if (errors.length) throw new Error(`podman lab ${n.tag} teardown: ${errors.join('; ')}`);
}

/**
 * Stops causeway processes that follow the lab's containers (their names
 * start with TAG-): those of a test process that died; SIGTERM detaches them.
 */
async function stopCauseway(tag: string): Promise<void> {
  const ours = () =>
    fs.readdirSync('/proc').filter((p) => {
      try {
        if (!/^\d+$/.test(p)) return false;
        const argv = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
        return argv.some((a) => a.endsWith('/causeway.js')) && argv.some((a) => a.startsWith(`${tag}-`));
      } catch {
        return false;
      }
    });
  const signal = (sig: NodeJS.Signals) => {
    for (const p of ours())
      try {
        process.kill(Number(p), sig);
      } catch {
        /* gone */
      }
  };
  signal('SIGTERM');
  const end = Date.now() + 5000;
  while (ours().length && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  signal('SIGKILL');
}

/** Removes the labs of test processes that no longer exist. */
async function sweep(): Promise<void> {
  for (const entry of fs.readdirSync(os.tmpdir())) {
    const m = new RegExp(`^${STATE_PREFIX}(\\d+)$`).exec(entry);
    if (m && !pidAlive(Number(m[1]))) await teardown(Number(m[1]));
  }
}

/** What is left of the lab of test process pid: cgroups, bridge, namespaces, mounts, processes, firewall rules, files. */
function leftovers(pid: number, subnet: string, netns: string[]): string[] {
  const n = names(pid);
  const out: string[] = [];
  for (const h of hierarchies()) if (fs.existsSync(path.join(h, n.cgroupParent))) out.push(`cgroup ${path.join(h, n.cgroupParent)}`);
  if (fs.existsSync(`/sys/class/net/${n.bridge}`)) out.push(`bridge ${n.bridge}`);
  for (const ns of netns) if (fs.existsSync(ns)) out.push(`netns ${ns}`);
  for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) if (line.includes(n.state)) out.push(`mount ${line}`);
  if (fs.existsSync(n.state)) out.push(`state directory ${n.state}`);
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmd = '';
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue;
    }
    if (cmd.includes(n.state) || cmd.includes(`${n.tag}-`)) out.push(`process ${pid}: ${cmd}`);
  }
  const ruleset = run('nft', ['list', 'ruleset']).out;
  const prefix = subnet.replace(/0\/24$/, '');
  for (const line of ruleset.split('\n')) if (line.includes(n.bridge) || line.includes(prefix) || /netavark/i.test(line)) out.push(`nft: ${line.trim()}`);
  for (const line of run('ip', ['route']).out.split('\n')) if (line.includes(prefix)) out.push(`route: ${line}`);
  return out;
}
