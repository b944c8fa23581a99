/**
 * `causeway doctor`: can the shim run here? One check per line, each failure
 * with what to do about it. Checks that need a loaded program really load it.
 */
import fs from 'node:fs';
import os from 'node:os';
import { cgroup2Mount, ownCgroup } from './kernel/cgroup';
import { native } from './kernel/native';
import { Floor, Shim } from './kernel/shim';
import { RunEntry } from './runtime/registry';

export interface Check {
  name: string;
  ok: boolean;
  /** false: a warning that does not stop the shim. */
  required: boolean;
  detail: string;
  fix?: string;
}

function kernelVersion(): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(os.release());
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

function atLeast(v: [number, number], want: [number, number]) {
  return v[0] > want[0] || (v[0] === want[0] && v[1] >= want[1]);
}

function capEff(): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? BigInt('0x' + m[1]) : 0n;
}

/** Runs every check; never throws. */
export async function runChecks(): Promise<Check[]> {
  const checks: Check[] = [];
  const add = (c: Check) => checks.push(c);
  const kv = kernelVersion();

  add({
    name: 'kernel',
    ok: atLeast(kv, [6, 2]),
    required: true,
    detail: `Linux ${os.release()} on ${os.arch()}`,
    fix: 'upgrade to Linux 6.2 or later (BTF tracepoints, task storage, ring buffer, bpf_rdonly_cast)',
  });
  add({
    name: 'architecture',
    ok: os.arch() === 'x64',
    required: true,
    detail: os.arch() === 'x64' ? 'x86_64' : `${os.arch()} is not supported yet`,
    fix: 'the shim dispatches on x86_64 syscall numbers; other architectures need bpf/syscalls.bpf.h',
  });
  add({
    name: 'pidfd threads',
    ok: atLeast(kv, [6, 9]),
    required: false,
    detail: atLeast(kv, [6, 9]) ? 'records can be written to any thread' : 'records can be written to main threads only',
    fix: 'Linux 6.9 adds PIDFD_THREAD, which writing a record to a non-main thread needs',
  });
  const btf = fs.existsSync('/sys/kernel/btf/vmlinux');
  add({
    name: 'BTF',
    ok: btf,
    required: true,
    detail: btf ? '/sys/kernel/btf/vmlinux' : 'no /sys/kernel/btf/vmlinux',
    fix: 'use a kernel built with CONFIG_DEBUG_INFO_BTF=y',
  });
  const caps = capEff();
  const has = (bit: number) => (caps >> BigInt(bit)) & 1n;
  const privileged = process.geteuid?.() === 0 || (has(39) && has(38) && has(21)) === 1n;
  add({
    name: 'privileges',
    ok: privileged,
    required: true,
    detail: privileged ? `effective capabilities 0x${caps.toString(16)}` : 'not root, and lacks CAP_BPF, CAP_PERFMON or CAP_SYS_ADMIN',
    fix: 'run as root (sudo causeway ...)',
  });
  const mount = cgroup2Mount();
  add({
    name: 'cgroup v2',
    ok: mount !== null,
    required: true,
    detail: mount ? `mounted at ${mount}${mount.endsWith('unified') ? ' (hybrid hierarchy)' : ''}` : 'not mounted',
    fix: 'mount it: mount -t cgroup2 none /sys/fs/cgroup/unified',
  });
  if (mount) {
    let own: string | null = null;
    let why = '';
    try {
      own = ownCgroup(mount);
    } catch (err) {
      why = (err as Error).message;
    }
    add({
      name: "the run's cgroup",
      ok: own !== null,
      required: true,
      detail: own ? `made below this process's own cgroup ${own}` : why,
    });
  }
  const cgKill = mount !== null && fs.existsSync(`${mount}/cgroup.procs`) && atLeast(kv, [5, 14]);
  add({
    name: 'cgroup.kill',
    ok: cgKill,
    required: false,
    detail: cgKill ? 'leftover processes are killed in one step' : 'leftovers are killed one by one',
    fix: 'Linux 5.14 adds cgroup.kill',
  });

  let addonOk = true;
  try {
    native();
  } catch (err) {
    addonOk = false;
    add({ name: 'addon', ok: false, required: true, detail: (err as Error).message, fix: 'run `npm run build`' });
  }
  if (addonOk) {
    if (!privileged) {
      add({ name: 'BPF maps', ok: false, required: true, detail: 'not tried: needs privileges', fix: 'run as root' });
    } else {
      const p = native().probe();
      add({
        name: 'bpf() syscall',
        ok: p.mapArray,
        required: true,
        detail: p.mapArray ? 'maps can be created' : 'creating a BPF map failed',
        fix: 'check kernel.unprivileged_bpf_disabled, seccomp and LSM policies that deny bpf()',
      });
      const maps: [string, string, string][] = [
        ['mapTaskStorage', 'task storage map', '5.11'],
        ['mapRingbuf', 'ring buffer map', '5.8'],
        ['mapLruHash', 'LRU hash map', '4.10'],
        ['mapPercpuArray', 'per-CPU array map', '4.6'],
        ['mapLpmTrie', 'LPM trie map (trusted networks)', '4.11'],
        ['mapHashOfMaps', 'hash of maps (SDK slots per process)', '4.12'],
        ['mapMmapable', 'mmap-able array (SDK slots)', '5.5'],
      ];
      for (const [key, label, since] of maps)
        add({ name: label, ok: p[key], required: true, detail: p[key] ? 'supported' : 'rejected by the kernel', fix: `needs Linux ${since}+` });
    }

    for (const [label, load] of [
      ['BTF tracepoints (floor programs)', () => new Floor().close()],
      ['shim (tracepoints, and sockops with TCP header options on a cgroup)', () => loadShimOnce()],
    ] as [string, () => unknown][]) {
      if (!privileged || !mount) {
        add({ name: label, ok: false, required: true, detail: 'not tried: needs privileges and cgroup v2', fix: 'fix the checks above' });
        continue;
      }
      try {
        await load();
        add({ name: label, ok: true, required: true, detail: 'loaded, verified and attached' });
      } catch (err) {
        add({
          name: label,
          ok: false,
          required: true,
          detail: (err as Error).message.split('\n')[0],
          fix: 'see `DEBUG=causeway:* causeway doctor` and docs/kernel.md',
        });
      }
    }
  }
  return checks;
}

async function loadShimOnce(): Promise<void> {
  const entry = await RunEntry.create(); // registered like a run: a doctor killed here leaves nothing for long
  const cg = entry.cgroup;
  let removed = false;
  try {
    const shim = new Shim({ cgroupPath: cg.dir });
    await shim.close();
  } finally {
    try {
      await cg.destroy();
      removed = true;
    } finally {
      entry.release(!removed);
    }
  }
}

/** Prints the report; returns the exit status (1 if the shim cannot run). */
export function report(checks: Check[], out: NodeJS.WritableStream = process.stdout): number {
  for (const c of checks) {
    const tag = c.ok ? 'ok  ' : c.required ? 'FAIL' : 'warn';
    out.write(`${tag} ${c.name}: ${c.detail}${!c.ok && c.fix ? ` -- ${c.fix}` : ''}\n`);
  }
  const failed = checks.filter((c) => !c.ok && c.required);
  out.write(failed.length ? `causeway cannot run here: ${failed.length} check(s) failed\n` : 'causeway can run here\n');
  return failed.length ? 1 : 0;
}
