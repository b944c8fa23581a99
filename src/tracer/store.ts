/**
 * The tracer's store: one SQLite file (better-sqlite3), written in one
 * transaction per batch of events so that tracing keeps up with the kernel.
 * Several causeway processes (one per host or namespace) may share a file:
 * WAL mode and a busy timeout let them take turns.
 *
 * Schema version 1 (docs/tracer.md):
 *   meta(key, value)            schema_version
 *   runs(id, host, command, started, ended, status, counters)
 *   traces(id, start, end, events)               one row per trace, kept up to date per batch
 *   events(trace, id, type, ts, host, pid, tid, comm, parents, channel, bytes, priority, extra, run),
 *     appended in arrival order, indexed by (trace, ts) and by run
 * Times are nanoseconds since the Unix epoch (INTEGER); parents, channel and
 * extra (path, exit code, signal, child, minted) are JSON.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { CausewayError } from '../errors';
import type { Channel, EventType } from '../kernel/events';
import type { TraceEvent } from './graph';

export const SCHEMA_VERSION = 1;

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

export class TraceStore {
  readonly file: string;
  private readonly db: Database.Database;
  private readonly insertEvent: Database.Statement;
  private readonly upsertTrace: Database.Statement;
  private readonly insertBatch: (events: TraceEvent[], run: number) => void;

  private constructor(file: string, db: Database.Database) {
    this.file = file;
    this.db = db;
    this.insertEvent = db.prepare(
      `INSERT INTO events (trace, id, type, ts, host, pid, tid, comm, parents, channel, bytes, priority, extra, run)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.upsertTrace = db.prepare(
      `INSERT INTO traces (id, start, end, events, first_run) VALUES (@id, @start, @end, @n, @run)
       ON CONFLICT(id) DO UPDATE SET start = min(start, excluded.start), end = max(end, excluded.end), events = events + excluded.events`,
    );
    this.insertBatch = db.transaction((events: TraceEvent[], run: number) => {
      const perTrace = new Map<string, { start: bigint; end: bigint; n: number }>();
      for (const e of events) {
        // Positional parameters: binding by name costs more per row.
        this.insertEvent.run(
          e.trace,
          e.id,
          e.type,
          e.ts,
          e.host,
          e.pid,
          e.tid,
          e.comm,
          JSON.stringify(e.parents),
          e.channel ? JSON.stringify(e.channel) : null,
          e.bytes,
          e.priority,
          extraOf(e),
          run,
        );
        const t = perTrace.get(e.trace);
        if (!t) perTrace.set(e.trace, { start: e.ts, end: e.ts, n: 1 });
        else {
          if (e.ts < t.start) t.start = e.ts;
          if (e.ts > t.end) t.end = e.ts;
          t.n++;
        }
      }
      for (const [id, t] of perTrace) this.upsertTrace.run({ id, start: t.start, end: t.end, n: t.n, run });
    });
  }

  /** Opens (creating it and its directory if needed) a store; refuses a newer schema with a clear error. */
  static open(file: string = defaultDbPath(), opts: { readonly?: boolean } = {}): TraceStore {
    if (opts.readonly && !fs.existsSync(file)) throw new CausewayError(`no trace database at ${file}: run \`causeway trace -- CMD\` first, or give --db FILE`);
    if (!opts.readonly) fs.mkdirSync(path.dirname(file), { recursive: true });
    let db: Database.Database;
    try {
      db = new Database(file, { readonly: opts.readonly ?? false });
    } catch (err) {
      throw new CausewayError(`cannot open the trace database ${file}: ${(err as Error).message}`);
    }
    db.defaultSafeIntegers(true);
    if (!opts.readonly) {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
    }
    db.pragma('busy_timeout = 10000');
    const version = migrate(db, file, opts.readonly ?? false);
    if (version !== SCHEMA_VERSION) throw new CausewayError(`${file} has trace schema version ${version}; this causeway reads version ${SCHEMA_VERSION}: upgrade causeway or use another --db`);
    return new TraceStore(file, db);
  }

  beginRun(command: string, host: string): number {
    const r = this.db.prepare('INSERT INTO runs (host, command, started) VALUES (?, ?, ?)').run(host, command, BigInt(Date.now()) * 1_000_000n);
    return Number(r.lastInsertRowid);
  }

  endRun(run: number, status: number, counters: unknown): void {
    this.db.prepare('UPDATE runs SET ended = ?, status = ?, counters = ? WHERE id = ?').run(BigInt(Date.now()) * 1_000_000n, status, JSON.stringify(counters), run);
  }

  /** Stores a batch of events in one transaction. */
  insert(events: TraceEvent[], run: number): void {
    if (events.length) this.insertBatch(events, run);
  }

  /** Traces, newest first. */
  list(limit = 50): TraceSummary[] {
    const rows = this.db
      .prepare(
        `SELECT t.id, t.start, t.end, t.events, coalesce(r.command, '') AS command,
                (SELECT count(DISTINCT host || '/' || pid) FROM events e WHERE e.trace = t.id) AS processes,
                (SELECT group_concat(DISTINCT host) FROM events e WHERE e.trace = t.id) AS hosts
         FROM traces t LEFT JOIN runs r ON r.id = t.first_run ORDER BY t.start DESC LIMIT ?`,
      )
      .all(limit) as { id: string; start: bigint; end: bigint; events: bigint; command: string; processes: bigint; hosts: string | null }[];
    return rows.map((r) => ({
      id: r.id,
      start: r.start,
      end: r.end,
      events: Number(r.events),
      processes: Number(r.processes),
      hosts: r.hosts ? r.hosts.split(',') : [],
      command: r.command,
    }));
  }

  /** The full id of a trace given its id or a unique prefix of it. */
  resolve(idOrPrefix: string): string {
    const p = idOrPrefix.toLowerCase();
    if (!/^[0-9a-f]{1,32}$/.test(p)) throw new CausewayError(`a trace id is hex digits, not "${idOrPrefix}"`);
    const rows = this.db.prepare('SELECT id FROM traces WHERE id >= ? AND id < ? LIMIT 2').all(p, p + 'g') as { id: string }[];
    if (rows.length === 0) throw new CausewayError(`no trace ${idOrPrefix} in ${this.file} (causeway ls lists them)`);
    if (rows.length > 1) throw new CausewayError(`${idOrPrefix} names more than one trace: give more digits`);
    return rows[0].id;
  }

  /** Every stored event of a trace. */
  events(trace: string): TraceEvent[] {
    const rows = this.db.prepare('SELECT * FROM events WHERE trace = ? ORDER BY ts').all(trace) as EventRow[];
    return rows.map(toEvent);
  }

  /** Ids of the traces a run stored events of. */
  tracesOfRun(run: number): string[] {
    return (this.db.prepare('SELECT DISTINCT trace FROM events WHERE run = ?').all(run) as { trace: string }[]).map((r) => r.trace);
  }

  count(): { traces: number; events: number } {
    const t = this.db.prepare('SELECT count(*) AS n FROM traces').get() as { n: bigint };
    const e = this.db.prepare('SELECT count(*) AS n FROM events').get() as { n: bigint };
    return { traces: Number(t.n), events: Number(e.n) };
  }

  close(): void {
    this.db.close();
  }
}

function migrate(db: Database.Database, file: string, readonly: boolean): number {
  const hasMeta = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'").get();
  if (!hasMeta) {
    if (readonly) throw new CausewayError(`${file} is not a causeway trace database`);
    db.exec(`
      CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE runs (id INTEGER PRIMARY KEY, host TEXT NOT NULL, command TEXT NOT NULL, started INTEGER NOT NULL,
                         ended INTEGER, status INTEGER, counters TEXT);
      CREATE TABLE traces (id TEXT PRIMARY KEY, start INTEGER NOT NULL, end INTEGER NOT NULL, events INTEGER NOT NULL,
                           first_run INTEGER REFERENCES runs(id));
      CREATE TABLE events (trace TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, ts INTEGER NOT NULL, host TEXT NOT NULL,
                           pid INTEGER NOT NULL, tid INTEGER NOT NULL, comm TEXT NOT NULL, parents TEXT NOT NULL,
                           channel TEXT, bytes INTEGER NOT NULL, priority INTEGER NOT NULL, extra TEXT,
                           run INTEGER REFERENCES runs(id));
      -- Appended in arrival order (rowid): random event ids as the key would touch a page per row.
      CREATE INDEX events_trace ON events (trace, ts);
      CREATE INDEX events_run ON events (run);
      INSERT INTO meta VALUES ('schema_version', '${SCHEMA_VERSION}');
    `);
  }
  const row = db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as { value: string } | undefined;
  return Number(row?.value ?? 0);
}

function extraOf(e: TraceEvent): string | null {
  const x: Record<string, unknown> = {};
  if (e.path !== undefined) x.path = e.path;
  if (e.exitCode !== undefined) x.exit_code = e.exitCode;
  if (e.signal !== undefined) x.signal = e.signal;
  if (e.child) x.child = e.child;
  if (e.minted) x.minted = true;
  return Object.keys(x).length ? JSON.stringify(x) : null;
}

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
