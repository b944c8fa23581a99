/**
 * The tracer's store: one SQLite file (better-sqlite3) that indexes the
 * events, which are kept as the kernel delivered them, in raw batches packed
 * into compact blobs (native/batch.cc) and decoded only when a trace is read.
 * Storing a batch is one transaction: one row for the batch, and one per
 * trace in it (the index row, and the trace's totals). Several causeway
 * processes (one per host or namespace) may share a file: WAL mode and a busy
 * timeout let them take turns.
 *
 * Schema version 2 (docs/tracer.md):
 *   meta(key, value)            schema_version
 *   runs(id, host, command, started, ended, status, counters)
 *   traces(id, start, end, events, first_run, batches)   one row per trace, kept up to date per batch;
 *                                                        batches: the ids of the batches that hold it
 *   batches(id, run, host, events, start, end, format, traces, pids, data)
 *                               data: the event blob; traces, pids: its directory (per trace in it)
 *   trace_batches(trace, first, batches)   the earlier batches of long traces
 * Version 1 files kept every event as a row of a table `events`: they are
 * read as they are, and a writer adds the version 2 tables beside it (the old
 * rows stay where they are and are read with the new ones).
 * Times are nanoseconds since the Unix epoch (INTEGER).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { CausewayError } from '../errors';
import { decodeEvents } from '../kernel/events';
import type { Channel, EventType } from '../kernel/events';
import { native } from '../kernel/native';
import { toTraceEvent, TraceEvent } from './graph';
import type { LayerStamp } from './layers';

/** The schema this causeway writes; it reads 1 and 2. */
export const SCHEMA_VERSION = 2;
/** The event blob format it writes and reads (batches.format; native/batch.cc). */
export const BLOB_FORMAT = 1;
/** The appending connection's page cache (KiB) and WAL size between checkpoints (pages). */
const APPENDER_CACHE_KIB = 32768;
const APPENDER_CHECKPOINT_PAGES = 8192;
/** traces.batches moves to trace_batches past this length. */
const SPILL_CHARS = 2000;

/** $CAUSEWAY_DB, else $XDG_DATA_HOME/causeway/traces.db, else ~/.local/share/causeway/traces.db. */
export function defaultDbPath(): string {
  if (process.env.CAUSEWAY_DB) return process.env.CAUSEWAY_DB;
  const base = process.env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(base, 'causeway', 'traces.db');
}

export interface TraceSummary {
  id: string;
  start: bigint;
  end: bigint;
  events: number;
  processes: number;
  hosts: string[];
  /** The command of the run that first stored events of it. */
  command: string;
}

/** Raw batches packed into one event blob with its directory (native/batch.cc): what appendPacked stores. */
export interface Packed {
  blob: Buffer;
  /** 40 bytes per trace of the blob: id, first and last time (i64), events, processes (u32). */
  traces: Buffer;
  /** The processes' pids (u32), trace after trace. */
  pids: Buffer;
  events: number;
}

/** Packs raw batches (whole struct cw_event) into one blob; native code, on the calling thread. deflate: zlib level, 0 (none) to 9. */
export function packRaw(batches: Buffer[], clockOffset: bigint, deflate = 0): Packed {
  const { blob, traces, pids } = native().packEvents(batches, clockOffset, deflate);
  let events = 0;
  for (let o = 0; o < traces.length; o += 40) events += traces.readUInt32LE(o + 32);
  return { blob, traces, pids, events };
}

/** What appendRaw or appendPacked stored: events, traces and the blobs' size. */
export interface Appended {
  events: number;
  traces: number;
  bytes: number;
}

/** Where appendRaw's and appendPacked's time went, summed over calls (for the benchmark). */
export interface StoreTimes {
  /** Packing in native code. */
  packNs: bigint;
  /** The SQLite transaction, with the statements' bindings. */
  sqlNs: bigint;
}

interface EventRow {
  trace: string;
  id: string;
  type: string;
  ts: bigint;
  host: string;
  pid: bigint;
  tid: bigint;
  comm: string;
  parents: string;
  channel: string | null;
  bytes: bigint;
  priority: bigint;
  extra: string | null;
}

const CREATE_V1 = `
  CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, host TEXT NOT NULL, command TEXT NOT NULL, started INTEGER NOT NULL,
                                   ended INTEGER, status INTEGER, counters TEXT);
  CREATE TABLE IF NOT EXISTS traces (id TEXT PRIMARY KEY, start INTEGER NOT NULL, end INTEGER NOT NULL, events INTEGER NOT NULL,
                                     first_run INTEGER REFERENCES runs(id));
`;
// Batches are appended (rowid order), each with its directory: per trace in it, its id, first and last
// time, events and processes (traces: 40 bytes each; pids: u32 each, trace after trace). A trace's row
// names the batches that hold it (traces.batches, "12,13,40"); once that list grows long it moves to
// trace_batches (a trigger), so that a long trace's row stays short. Each new trace costs one insert in
// one B-tree (traces, WITHOUT ROWID), each batch one append: nothing is indexed per event.
const CREATE_V2 = `
  CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, run INTEGER REFERENCES runs(id), host TEXT NOT NULL,
                                      events INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
                                      format INTEGER NOT NULL, traces BLOB NOT NULL, pids BLOB NOT NULL, data BLOB NOT NULL);
  CREATE INDEX IF NOT EXISTS batches_run ON batches (run);
  CREATE TABLE IF NOT EXISTS trace_batches (trace TEXT NOT NULL, first INTEGER NOT NULL, batches TEXT NOT NULL,
                                            PRIMARY KEY (trace, first)) WITHOUT ROWID;
  CREATE TRIGGER IF NOT EXISTS traces_spill AFTER UPDATE OF batches ON traces WHEN length(NEW.batches) > ${SPILL_CHARS}
  BEGIN
    INSERT INTO trace_batches (trace, first, batches) VALUES (NEW.id, CAST(NEW.batches AS INTEGER), NEW.batches);
    UPDATE traces SET batches = '' WHERE id = NEW.id;
  END;
`;
const CREATE_TRACES_V2 = `
  CREATE TABLE IF NOT EXISTS traces (id TEXT PRIMARY KEY, start INTEGER NOT NULL, end INTEGER NOT NULL, events INTEGER NOT NULL,
                                     first_run INTEGER REFERENCES runs(id), batches TEXT NOT NULL DEFAULT '') WITHOUT ROWID;
`;

export class TraceStore {
  readonly file: string;
  /** Batches and blob bytes that events() has read (a trace reads only the batches that hold it). */
  readonly reads = { batches: 0, bytes: 0 };
  /** Where appendRaw's time went. */
  readonly times: StoreTimes = { packNs: 0n, sqlNs: 0n };
  private readonly db: Database.Database;
  /** The file has a version 1 `events` table (rows read beside the batches). */
  private readonly legacy: boolean;
  /** The file has the version 2 tables (a version 1 file opened read-only has not). */
  private readonly batched: boolean;
  private appendTx: ((list: Packed[], run: number, host: string) => void) | null = null;

  private constructor(file: string, db: Database.Database) {
    this.file = file;
    this.db = db;
    const has = (name: string) => db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined;
    this.legacy = has('events');
    this.batched = has('batches');
  }

  /**
   * Opens (creating it and its directory if needed) a store; refuses a newer
   * schema with a clear error. appender: the connection that appends batches
   * (the tracer's worker), tuned for it; checkpoints: false leaves the WAL's
   * checkpoints to another connection (see checkpoint()).
   */
  static open(file: string = defaultDbPath(), opts: { readonly?: boolean; appender?: boolean; checkpoints?: boolean } = {}): TraceStore {
    const readonly = opts.readonly ?? false;
    if (readonly && !fs.existsSync(file)) throw new CausewayError(`no trace database at ${file}: run \`causeway trace -- CMD\` first, or give --db FILE`);
    if (!readonly) fs.mkdirSync(path.dirname(file), { recursive: true });
    let db: Database.Database;
    try {
      db = new Database(file, { readonly });
    } catch (err) {
      throw new CausewayError(`cannot open the trace database ${file}: ${(err as Error).message}`);
    }
    try {
      db.defaultSafeIntegers(true);
      db.pragma('busy_timeout = 10000');
      // Before anything changes the file (even its journal mode): a newer one is left alone.
      const found = schemaVersion(db);
      if (found > SCHEMA_VERSION) throw newerError(file, found);
      if (!readonly) {
        db.pragma('journal_mode = WAL');
        db.pragma('synchronous = NORMAL');
      }
      if (opts.appender) {
        // A new trace with a random id (one minted elsewhere) is an insert at a random place of one
        // B-tree: a bigger cache and fewer, larger checkpoints write each touched page less often
        // (about 1.3x at 16 events per trace, measured before causeway's ids began with their time).
        db.pragma(`cache_size = -${APPENDER_CACHE_KIB}`);
        db.pragma(`wal_autocheckpoint = ${opts.checkpoints === false ? 0 : APPENDER_CHECKPOINT_PAGES}`);
        db.pragma(`journal_size_limit = ${APPENDER_CHECKPOINT_PAGES * 4096 * 2}`);
      }
      const version = readonly ? schemaVersion(db) : migrate(db);
      if (version === 0) throw new CausewayError(`${file} is not a causeway trace database`);
      if (version > SCHEMA_VERSION) throw newerError(file, version);
      return new TraceStore(file, db);
    } catch (err) {
      db.close();
      if (err instanceof CausewayError) throw err;
      throw new CausewayError(`cannot open the trace database ${file}: ${(err as Error).message}`);
    }
  }

  beginRun(command: string, host: string): number {
    const r = this.db.prepare('INSERT INTO runs (host, command, started) VALUES (?, ?, ?)').run(host, command, BigInt(Date.now()) * 1_000_000n);
    return Number(r.lastInsertRowid);
  }

  endRun(run: number, status: number, counters: unknown): void {
    this.db.prepare('UPDATE runs SET ended = ?, status = ?, counters = ? WHERE id = ?').run(BigInt(Date.now()) * 1_000_000n, status, JSON.stringify(counters), run);
  }

  /**
   * Stores raw batches (whole struct cw_event, as the shim delivers them) as
   * one blob, in one transaction: stored whole or, if the database refuses
   * it (a full disk, say), not at all, and the error is thrown. deflate
   * (zlib level 1-9, default 0: none) trades CPU for bytes.
   */
  appendRaw(batches: Buffer[], clockOffset: bigint, run: number, host: string, deflate = 0): Appended {
    const t0 = process.hrtime.bigint();
    const packed = packRaw(batches, clockOffset, deflate);
    this.times.packNs += process.hrtime.bigint() - t0;
    return this.appendPacked([packed], run, host);
  }

  /** Stores packed blobs (packRaw), a batch each, in one transaction: all or, if the database refuses them, none (and throws). */
  appendPacked(list: Packed[], run: number, host: string): Appended {
    if (!this.appendTx) this.prepareAppend();
    const t0 = process.hrtime.bigint();
    const out: Appended = { events: 0, traces: 0, bytes: 0 };
    try {
      this.appendTx!(list, run, host);
    } finally {
      this.times.sqlNs += process.hrtime.bigint() - t0;
    }
    for (const p of list) {
      out.events += p.events;
      out.traces += p.traces.length / 40;
      out.bytes += p.blob.length;
    }
    return out;
  }

  private prepareAppend(): void {
    if (!this.batched) throw new CausewayError(`${this.file} was opened read-only`);
    const insertBatch = this.db.prepare('INSERT INTO batches (run, host, events, start, end, format, traces, pids, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)');
    const upsertTrace = this.db.prepare(
      `INSERT INTO traces (id, start, end, events, first_run, batches) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT(id) DO UPDATE SET start = min(start, excluded.start), end = max(end, excluded.end), events = events + excluded.events,
                                     batches = CASE batches WHEN '' THEN excluded.batches ELSE batches || ',' || excluded.batches END`,
    );
    this.appendTx = this.db.transaction((list: Packed[], run: number, host: string) => {
      for (const { blob, traces, pids, events } of list) {
        if (traces.length === 0) continue;
        let start = traces.readBigInt64LE(16);
        let end = traces.readBigInt64LE(24);
        for (let o = 40; o < traces.length; o += 40) {
          const [a, b] = [traces.readBigInt64LE(o + 16), traces.readBigInt64LE(o + 24)];
          if (a < start) start = a;
          if (b > end) end = b;
        }
        // Positional parameters: binding by name costs more per row.
        const batch = String(insertBatch.run(run, host, events, start, end, BLOB_FORMAT, traces, pids, blob).lastInsertRowid);
        for (let o = 0; o < traces.length; o += 40)
          upsertTrace.run(traces.toString('hex', o, o + 16), traces.readBigInt64LE(o + 16), traces.readBigInt64LE(o + 24), traces.readUInt32LE(o + 32), run, batch);
      }
    });
  }

  /**
   * Copies the WAL's pages into the database file. PASSIVE never waits for
   * the writer; RESTART waits for it, so that the next write starts the WAL
   * from its beginning again. log: pages in the WAL; checkpointed: copied.
   */
  checkpoint(mode: 'PASSIVE' | 'RESTART' = 'PASSIVE'): { log: number; checkpointed: number } {
    const [r] = this.db.pragma(`wal_checkpoint(${mode})`) as { log: bigint; checkpointed: bigint }[];
    return { log: Number(r.log), checkpointed: Number(r.checkpointed) };
  }

  /** Checkpoints as the appending connection does by default (after checkpoints: false). */
  autoCheckpoints(): void {
    this.db.pragma(`wal_autocheckpoint = ${APPENDER_CHECKPOINT_PAGES}`);
  }

  /** Traces, newest first. */
  list(limit = 50): TraceSummary[] {
    const rows = this.db
      .prepare(
        `SELECT t.id, t.start, t.end, t.events, coalesce(r.command, '') AS command
         FROM traces t LEFT JOIN runs r ON r.id = t.first_run ORDER BY t.start DESC LIMIT ?`,
      )
      .all(limit) as { id: string; start: bigint; end: bigint; events: bigint; command: string }[];
    return rows.map((r) => {
      const { processes, hosts } = this.processesOf(r.id);
      return { id: r.id, start: r.start, end: r.end, events: Number(r.events), processes, hosts, command: r.command };
    });
  }

  /** The processes (host and pid) and hosts of a trace, from the batches' directories (no event is read). */
  private processesOf(trace: string): { processes: number; hosts: string[] } {
    const procs = new Set<string>();
    const hosts: string[] = [];
    const saw = (host: string, pid: number) => {
      procs.add(`${host}/${pid}`);
      if (!hosts.includes(host)) hosts.push(host);
    };
    if (this.legacy)
      for (const r of this.db.prepare('SELECT DISTINCT host, pid FROM events WHERE trace = ?').iterate(trace) as Iterable<{ host: string; pid: bigint }>) saw(r.host, Number(r.pid));
    if (this.batched) {
      const id = Buffer.from(trace, 'hex');
      const get = this.db.prepare('SELECT host, traces, pids FROM batches WHERE id = ?');
      for (const batch of this.batchesOf(trace)) {
        const r = get.get(batch) as { host: string; traces: Buffer; pids: Buffer } | undefined;
        if (!r) continue;
        let at = 0;
        for (let o = 0; o + 40 <= r.traces.length; o += 40) {
          const n = r.traces.readUInt32LE(o + 36);
          if (r.traces.compare(id, 0, 16, o, o + 16) === 0) {
            for (let k = 0; k < n && at + 4 * k + 4 <= r.pids.length; k++) saw(r.host, r.pids.readUInt32LE(at + 4 * k));
            break;
          }
          at += 4 * n;
        }
      }
    }
    return { processes: procs.size, hosts };
  }

  /** The agent's export marks: up to which time each trace was exported (a table the agent adds). */
  ensureExportTable(): void {
    this.db.exec('CREATE TABLE IF NOT EXISTS exported (trace TEXT PRIMARY KEY, end INTEGER NOT NULL) WITHOUT ROWID');
  }
  private hasExported(): boolean {
    return this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'exported'").get() !== undefined;
  }
  /** Traces with events after their export mark and none since quietBefore (ns), oldest first; since: the mark (-1: none). */
  exportDue(quietBefore: bigint, limit: number): { trace: string; since: bigint }[] {
    const rows = this.db
      .prepare('SELECT t.id, e.end AS mark FROM traces t LEFT JOIN exported e ON e.trace = t.id WHERE t.end < ? AND (e.end IS NULL OR t.end > e.end) ORDER BY t.end LIMIT ?')
      .all(quietBefore, limit) as { id: string; mark: bigint | null }[];
    return rows.map((r) => ({ trace: r.id, since: r.mark ?? -1n }));
  }
  markExported(list: { trace: string; end: bigint }[]): void {
    const up = this.db.prepare('INSERT INTO exported (trace, end) VALUES (?, ?) ON CONFLICT(trace) DO UPDATE SET end = max(end, excluded.end)');
    this.db.transaction(() => {
      for (const { trace, end } of list) up.run(trace, end);
    })();
  }

  /**
   * Stores the layer stamps of a run (causeway trace --layers; docs/layers.md)
   * in one transaction. Their table is added to the file the first time, as
   * `exported` is: the schema version stays, and a file without it simply has
   * no stamps.
   */
  addLayerStamps(run: number, stamps: LayerStamp[]): void {
    if (stamps.length === 0) return;
    this.db.exec(`CREATE TABLE IF NOT EXISTS layer_stamps (run INTEGER NOT NULL, trace TEXT NOT NULL, event TEXT NOT NULL, ts INTEGER NOT NULL,
                    ifname TEXT NOT NULL, netns TEXT NOT NULL, kind TEXT NOT NULL, dir TEXT NOT NULL, encap INTEGER NOT NULL, len INTEGER NOT NULL, seq INTEGER NOT NULL);
                  CREATE INDEX IF NOT EXISTS layer_stamps_trace ON layer_stamps (trace)`);
    const ins = this.db.prepare('INSERT INTO layer_stamps (run, trace, event, ts, ifname, netns, kind, dir, encap, len, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)');
    this.db.transaction(() => {
      for (const x of stamps) ins.run(run, x.trace, x.event, x.ts, x.ifname, x.netns, x.kind, x.dir, x.encap ? 1 : 0, x.len, x.seq);
    })();
  }

  private hasLayerStamps(): boolean {
    return this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'layer_stamps'").get() !== undefined;
  }

  /** The layer stamps of a trace, by time (none if the file has no such table). */
  layerStamps(trace: string): LayerStamp[] {
    if (!this.hasLayerStamps()) return [];
    const rows = this.db.prepare('SELECT * FROM layer_stamps WHERE trace = ? ORDER BY ts').all(trace) as {
      trace: string; event: string; ts: bigint; ifname: string; netns: string; kind: string; dir: string; encap: bigint; len: bigint; seq: bigint;
    }[];
    return rows.map((r) => ({ trace: r.trace, event: r.event, ts: r.ts, ifname: r.ifname, netns: r.netns, kind: r.kind, dir: r.dir as 'in' | 'out', encap: r.encap !== 0n, len: Number(r.len), seq: Number(r.seq) }));
  }

  /** True once prune() has removed anything from this file. */
  private pruned(): boolean {
    return this.db.prepare("SELECT 1 FROM meta WHERE key = 'pruned'").get() !== undefined;
  }

  /** Bytes the file's pages hold now (freed pages are reused before the file grows). */
  usedBytes(): number {
    const pages = Number(this.db.pragma('page_count', { simple: true })) - Number(this.db.pragma('freelist_count', { simple: true }));
    return pages * Number(this.db.pragma('page_size', { simple: true }));
  }

  /**
   * Drops the oldest events: every batch whose events all happened before
   * olderThan (ns since the epoch), then the oldest batches until the pages in
   * use fit in maxBytes. A trace loses the events of those batches and goes
   * with its last one. Returns what it dropped.
   */
  prune(opts: { olderThan?: bigint; maxBytes?: number }): { batches: number; events: number; traces: number } {
    if (!this.batched) return { batches: 0, events: 0, traces: 0 };
    const out = { batches: 0, events: 0, traces: 0 };
    const oldest = this.db.prepare('SELECT id, events, traces, length(data) + length(traces) + length(pids) AS bytes, end FROM batches ORDER BY id LIMIT 256');
    const drop = this.db.prepare('DELETE FROM batches WHERE id = ?');
    const step = this.db.transaction((ids: { id: bigint; events: bigint; traces: Buffer }[]) => {
      const touched = new Set<string>();
      for (const b of ids) {
        drop.run(b.id);
        out.batches++;
        out.events += Number(b.events);
        for (let o = 0; o + 40 <= b.traces.length; o += 40) touched.add(b.traces.toString('hex', o, o + 16));
      }
      const has = this.db.prepare('SELECT 1 FROM batches WHERE id = ?');
      for (const t of touched)
        if (!this.batchesOf(t).some((id) => has.get(id) !== undefined)) {
          this.db.prepare('DELETE FROM traces WHERE id = ?').run(t);
          this.db.prepare('DELETE FROM trace_batches WHERE trace = ?').run(t);
          if (this.hasExported()) this.db.prepare('DELETE FROM exported WHERE trace = ?').run(t);
          if (this.hasLayerStamps()) this.db.prepare('DELETE FROM layer_stamps WHERE trace = ?').run(t);
          out.traces++;
        }
      this.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('pruned', ?)").run(String(Date.now()));
    });
    for (;;) {
      const rows = oldest.all() as { id: bigint; events: bigint; traces: Buffer; bytes: bigint; end: bigint }[];
      if (rows.length === 0) break;
      let pick = opts.olderThan === undefined ? [] : rows.filter((r) => r.end < opts.olderThan!);
      if (pick.length === 0 && opts.maxBytes !== undefined) {
        let over = this.usedBytes() - opts.maxBytes;
        if (over <= 0) break;
        pick = [];
        for (const r of rows) {
          if (over <= 0) break;
          pick.push(r);
          over -= Number(r.bytes);
        }
      }
      if (pick.length === 0) break;
      step(pick);
    }
    return out;
  }

  /** The ids of the batches that hold a trace, in order. */
  private batchesOf(trace: string): bigint[] {
    if (!this.batched) return [];
    const lists = (this.db.prepare('SELECT batches FROM trace_batches WHERE trace = ? ORDER BY first').all(trace) as { batches: string }[]).map((r) => r.batches);
    const row = this.db.prepare('SELECT batches FROM traces WHERE id = ?').get(trace) as { batches: string } | undefined;
    if (row) lists.push(row.batches);
    return lists.flatMap((l) => (l ? l.split(',').map((x) => BigInt(x)) : []));
  }

  /**
   * The full id of a trace given its id, a unique prefix or a unique suffix
   * of it. Trace ids begin with their time (record.ts, newTraceId), so the
   * traces of one millisecond share their first 12 digits; the last digits
   * are random, as short as a prefix used to be. A suffix reads the whole
   * index (a file of a million traces: a fraction of a second).
   */
  resolve(idOrPart: string): string {
    const p = idOrPart.toLowerCase();
    if (!/^[0-9a-f]{1,32}$/.test(p)) throw new CausewayError(`a trace id is hex digits, not "${idOrPart}"`);
    const found = new Set((this.db.prepare('SELECT id FROM traces WHERE id >= ? AND id < ? LIMIT 2').all(p, p + 'g') as { id: string }[]).map((r) => r.id));
    if (found.size < 2 && p.length < 32)
      for (const r of this.db.prepare("SELECT id FROM traces WHERE substr(id, -?) = ? LIMIT 2").all(p.length, p) as { id: string }[]) found.add(r.id);
    if (found.size === 0) throw new CausewayError(`no trace ${idOrPart} in ${this.file} (causeway ls lists them)`);
    if (found.size > 1) throw new CausewayError(`${idOrPart} names more than one trace (as the start or the end of an id): give more digits`);
    return [...found][0];
  }

  /** Every stored event of a trace, by time; reads only the batches that hold it. */
  events(trace: string): TraceEvent[] {
    const out: TraceEvent[] = [];
    if (this.legacy) for (const r of this.db.prepare('SELECT * FROM events WHERE trace = ? ORDER BY ts').all(trace) as EventRow[]) out.push(toEvent(r));
    if (this.batched && /^[0-9a-f]{32}$/.test(trace)) {
      const id = Buffer.from(trace, 'hex');
      const get = this.db.prepare('SELECT host, format, data FROM batches WHERE id = ?');
      for (const batch of this.batchesOf(trace)) {
        const r = get.get(batch) as { host: string; format: bigint; data: Buffer } | undefined;
        if (!r) {
          // A pruned store (causeway agent's size and age limits) drops old batches: the trace keeps what is left.
          if (this.pruned()) continue;
          throw new CausewayError(`${this.file} names batch ${batch} for trace ${trace}, and has no such batch`);
        }
        this.reads.batches++;
        this.reads.bytes += r.data.length;
        for (const e of unpackBlob(r.data, Number(r.format), r.host, id, `batch ${batch} of ${this.file}`)) out.push(e);
      }
    }
    // Stable: events with one time stay in the order they arrived.
    return out.sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0));
  }

  /** Ids of the traces a run stored events of, in the order it first stored them. */
  tracesOfRun(run: number): string[] {
    const ids = new Set<string>();
    if (this.legacy) for (const r of this.db.prepare('SELECT DISTINCT trace FROM events WHERE run = ?').all(run) as { trace: string }[]) ids.add(r.trace);
    if (this.batched)
      for (const r of this.db.prepare('SELECT traces FROM batches WHERE run = ? ORDER BY id').iterate(run) as Iterable<{ traces: Buffer }>)
        for (let o = 0; o + 40 <= r.traces.length; o += 40) ids.add(r.traces.toString('hex', o, o + 16));
    return [...ids];
  }

  count(): { traces: number; events: number } {
    const r = this.db.prepare('SELECT count(*) AS n, coalesce(sum(events), 0) AS e FROM traces').get() as { n: bigint; e: bigint };
    return { traces: Number(r.n), events: Number(r.e) };
  }

  close(): void {
    this.db.close();
  }
}

/** The events of one trace (a 16-byte id; null: all) in an event blob, as TraceEvents seen on host. */
export function unpackBlob(blob: Buffer, format: number, host: string, trace: Buffer | null, what = 'an event blob'): TraceEvent[] {
  if (format !== BLOB_FORMAT)
    throw new CausewayError(`${what} is in event blob format ${format}; this causeway reads format ${BLOB_FORMAT}: upgrade causeway`);
  let raw: { events: Buffer; clockOffset: bigint };
  try {
    raw = native().unpackEvents(blob, trace);
  } catch (err) {
    throw new CausewayError(`${what} cannot be read: ${(err as Error).message}`);
  }
  return decodeEvents(raw.events, raw.clockOffset).map((e) => toTraceEvent(e, host));
}

function newerError(file: string, version: number): CausewayError {
  return new CausewayError(`${file} has trace schema version ${version}; this causeway reads versions 1 to ${SCHEMA_VERSION}: upgrade causeway or use another --db`);
}

/** The schema version of an open database; 0 if it is not a trace database. */
function schemaVersion(db: Database.Database): number {
  const hasMeta = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'").get();
  if (!hasMeta) return 0;
  const row = db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as { value: string } | undefined;
  return Number(row?.value ?? 0);
}

/**
 * Creates the schema in a new file, or brings a version 1 file to version 2
 * (adds the tables of batches; its events stay where they are). Under a
 * write lock, so that two causeways opening one file at once agree.
 */
function migrate(db: Database.Database): number {
  return db.transaction(() => {
    let version = schemaVersion(db);
    if (version === 0 && db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table'").get()) return 0; // someone else's file
    if (version === 0) {
      db.exec(CREATE_TRACES_V2 + CREATE_V1 + CREATE_V2);
      db.prepare("INSERT INTO meta VALUES ('schema_version', ?)").run(String(SCHEMA_VERSION));
      version = SCHEMA_VERSION;
    } else if (version === 1) {
      db.exec("ALTER TABLE traces ADD COLUMN batches TEXT NOT NULL DEFAULT ''");
      db.exec(CREATE_V2);
      db.prepare("UPDATE meta SET value = ? WHERE key = 'schema_version'").run(String(SCHEMA_VERSION));
      version = SCHEMA_VERSION;
    }
    return version;
  }).immediate();
}

/** A version 1 row. */
function toEvent(r: EventRow): TraceEvent {
  const e: TraceEvent = {
    id: r.id,
    trace: r.trace,
    type: r.type as EventType,
    ts: r.ts,
    host: r.host,
    pid: Number(r.pid),
    tid: Number(r.tid),
    comm: r.comm,
    parents: JSON.parse(r.parents) as string[],
    channel: r.channel ? (JSON.parse(r.channel) as Channel) : null,
    bytes: Number(r.bytes),
    priority: Number(r.priority),
  };
  if (r.extra) {
    const x = JSON.parse(r.extra) as { path?: string; exit_code?: number; signal?: number; child?: { pid: number; tid: number }; minted?: boolean };
    if (x.path !== undefined) e.path = x.path;
    if (x.exit_code !== undefined) e.exitCode = x.exit_code;
    if (x.signal !== undefined) e.signal = x.signal;
    if (x.child) e.child = x.child;
    if (x.minted) e.minted = true;
  }
  return e;
}
