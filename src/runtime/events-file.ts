/**
 * The events file (`-e FILE`): JSON Lines written in the background, one
 * write at a time, batches that arrive meanwhile joined into the next one.
 * Batches come raw (struct cw_event each, as the shim's 'raw' hands them) and
 * are formatted natively (native/jsonl.cc), the same bytes as eventToJson and
 * JSON.stringify give, with no JavaScript object per event.
 * A write that fails never stops the run and never loses events silently: the
 * first error is reported once, the events it did not write and every later
 * one are counted (`lost`), and a regular file is cut back to its last whole
 * line, so that it holds exactly the events before the failure.
 */
import fs from 'node:fs';
import { promisify } from 'node:util';
import { EVENT_BYTES } from '../kernel/events';
import { native } from '../kernel/native';
import { CausewayError } from '../errors';

const write = promisify(fs.write);
const NEWLINE = 0x0a;

export class EventsFile {
  /** Events not written: those of the write that failed, and every one after it. */
  lost = 0;
  /** The first error, if writing failed. */
  error: Error | null = null;
  private pending: Buffer[] = [];
  private pendingEvents = 0;
  private writing: Promise<void> | null = null;
  /** Bytes of whole lines written from the start of the file. */
  private written = 0;
  private closed = false;

  private constructor(
    readonly file: string,
    private readonly fd: number,
  ) {}

  /** Creates or truncates FILE; throws a CausewayError, before anything runs, if it cannot. */
  static open(file: string): EventsFile {
    try {
      return new EventsFile(file, fs.openSync(file, 'w'));
    } catch (err) {
      throw new CausewayError(`cannot write events to ${file}: ${(err as Error).message}`);
    }
  }

  /**
   * Queues a raw batch (whole struct cw_event each; one line each), its times
   * made epoch ns with clockOffset; never throws. After a failure or close()
   * its events are only counted.
   */
  writeRaw(raw: Buffer, clockOffset: bigint): void {
    const count = Math.floor(raw.length / EVENT_BYTES);
    if (!count) return;
    if (this.error || this.closed) {
      this.lost += count;
      return;
    }
    let text: Buffer;
    try {
      text = native().formatJsonLines(raw, clockOffset);
    } catch (err) {
      // Out of memory: a failure like a write's; what is queued is not written either.
      this.lost += count + this.pendingEvents;
      this.pending = [];
      this.pendingEvents = 0;
      this.fail(err as Error);
      return;
    }
    this.pending.push(text);
    this.pendingEvents += count;
    this.writing ??= this.flush();
  }

  /** Writes what is queued, then closes the file; resolves (never rejects) once it is closed. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.writing) await this.writing;
    try {
      fs.closeSync(this.fd);
    } catch (err) {
      this.fail(err as Error);
    }
  }

  private async flush(): Promise<void> {
    while (this.pending.length && !this.error) {
      const buf = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending);
      const events = this.pendingEvents;
      this.pending = [];
      this.pendingEvents = 0;
      let done = 0;
      try {
        while (done < buf.length) done += (await write(this.fd, buf, done, buf.length - done)).bytesWritten;
        this.written += buf.length;
      } catch (err) {
        // Lines written whole before the error stay; the partial one is cut off.
        const whole = done > 0 ? buf.lastIndexOf(NEWLINE, done - 1) + 1 : 0;
        let lines = 0;
        for (let i = buf.indexOf(NEWLINE); i >= 0 && i < whole; i = buf.indexOf(NEWLINE, i + 1)) lines++;
        this.written += whole;
        this.lost += events - lines + this.pendingEvents;
        this.pending = [];
        this.pendingEvents = 0;
        this.fail(err as Error);
        this.truncate();
      }
    }
    this.writing = null;
  }

  private fail(err: Error): void {
    if (this.error) return;
    this.error = err;
    process.stderr.write(`causeway: writing events to ${this.file} failed: ${err.message}; the run goes on, the events not written are counted\n`);
  }

  /** Cuts a regular file back to its whole lines (a pipe or device is left alone). */
  private truncate(): void {
    try {
      if (fs.fstatSync(this.fd).isFile()) fs.ftruncateSync(this.fd, this.written);
    } catch {
      /* the error is reported already */
    }
  }
}
