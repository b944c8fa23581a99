/**
 * The actor-area field registry: meta-applications ("actors") declare named,
 * typed fields, and the registry lays them out in the 32-byte actor area of
 * every causal record (src/kernel/record.ts) so that actors never collide.
 *
 * Layout rules (a contract: other processes rebuild the same layout, or are
 * handed it through layout()/fromLayout()):
 *  1. Actors are taken in order of actor name (code-unit order), never in order
 *     of declaration: the same set of actors always gets the same layout.
 *  2. The layout is recomputed on every declare(); build the registry before
 *     the run starts, then freeze() it. declare() after freeze() throws.
 *  3. Integers are little-endian and naturally aligned (u16 at even offsets,
 *     u32 at multiples of 4, u64 at multiples of 8). All integer fields of the
 *     area are placed from offset 0 by descending size, ties in order of actor
 *     name then declaration order; sizes being powers of two, this leaves no holes.
 *  4. Flags follow the integers as bits, 8 to a byte, bit 0 (value 1) first, in
 *     order of actor name then declaration order; actors may share a flag byte.
 *  5. A declaration that makes the fields exceed the area throws
 *     FieldLayoutError and leaves the registry as it was.
 *  6. Bytes and bits not covered by a field are never written: set() and
 *     write() change only the named fields' bytes, or bit for a flag.
 * layout() lists the slots in order of actor name, then declaration order.
 */
import { CausewayError } from '../errors';
import { ACTOR_BYTES } from '../kernel/record';

export type FieldType = 'u8' | 'u16' | 'u32' | 'u64' | 'flag';

/** One field as an actor declares it. */
export interface FieldDecl {
  name: string;
  type: FieldType;
}

/** Where a field lives in the area: plain JSON, so it can cross processes. `bit` is set for flags only. */
export interface FieldSlot {
  actor: string;
  name: string;
  type: FieldType;
  offset: number;
  bit?: number;
}

/** What get() returns and set() takes: number for u8/u16/u32, bigint for u64, boolean for flag. */
export type FieldValue = number | bigint | boolean;

/** A declaration or layout the registry refuses, or a field it does not know; the message says what to do. */
export class FieldLayoutError extends CausewayError {
  constructor(message: string) {
    super(message);
    this.name = 'FieldLayoutError';
  }
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Actor names as the loader takes them (built-in names have dashes). */
const ACTOR_NAME = /^[A-Za-z0-9_.-]+$/;
const SIZES: Record<Exclude<FieldType, 'flag'>, number> = { u8: 1, u16: 2, u32: 4, u64: 8 };
const TYPES: readonly FieldType[] = ['u64', 'u32', 'u16', 'u8', 'flag'];
const MAX: Record<Exclude<FieldType, 'flag' | 'u64'>, number> = { u8: 0xff, u16: 0xffff, u32: 0xffffffff };
const U64_MAX = (1n << 64n) - 1n;

function isType(t: unknown): t is FieldType {
  return typeof t === 'string' && (TYPES as readonly string[]).includes(t);
}

function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** Bytes an actor's fields take on their own (its flags rounded up to whole bytes). */
function bytesOf(fields: readonly FieldDecl[]): number {
  let ints = 0;
  let flags = 0;
  for (const f of fields) {
    if (f.type === 'flag') flags++;
    else ints += SIZES[f.type];
  }
  return ints + Math.ceil(flags / 8);
}

/** "2 u64, 1 u32, 3 flags": what an actor declares, for messages. */
function describe(fields: readonly FieldDecl[]): string {
  return TYPES.map((t) => [t, fields.filter((f) => f.type === t).length] as const)
    .filter(([, n]) => n > 0)
    .map(([t, n]) => (t === 'flag' ? plural(n, 'flag') : `${n} ${t}`))
    .join(', ');
}

/** Lays out declarations by the rules at the top of this file. */
function computeLayout(decls: ReadonlyMap<string, readonly FieldDecl[]>): FieldSlot[] {
  const actors = [...decls.keys()].sort(byName);
  const ordered: FieldSlot[] = [];
  for (const actor of actors)
    for (const f of decls.get(actor)!) ordered.push({ actor, name: f.name, type: f.type, offset: 0 });
  // Stable sort: equal sizes stay in actor-name, then declaration, order.
  const ints = ordered.filter((s) => s.type !== 'flag');
  ints.sort((a, b) => SIZES[b.type as keyof typeof SIZES] - SIZES[a.type as keyof typeof SIZES]);
  let offset = 0;
  for (const s of ints) {
    s.offset = offset;
    offset += SIZES[s.type as keyof typeof SIZES];
  }
  let k = 0;
  for (const s of ordered) {
    if (s.type !== 'flag') continue;
    s.offset = offset + (k >> 3);
    s.bit = k & 7;
    k++;
  }
  return ordered;
}

/** Distinct bytes that the slots cover. */
function coveredBytes(slots: readonly FieldSlot[]): number {
  const bytes = new Set<number>();
  for (const s of slots) {
    const size = s.type === 'flag' ? 1 : SIZES[s.type];
    for (let i = 0; i < size; i++) bytes.add(s.offset + i);
  }
  return bytes.size;
}

/**
 * Named, typed fields of actors in the actor area. Not safe to declare() from
 * several places at once; once frozen, every method is read-only on the
 * registry and may be called from anywhere.
 */
export class FieldRegistry {
  readonly areaBytes: number;
  private decls = new Map<string, FieldDecl[]>();
  private slots: FieldSlot[] = [];
  private index = new Map<string, Map<string, FieldSlot>>();
  private isFrozen = false;

  constructor(areaBytes = ACTOR_BYTES) {
    if (!Number.isInteger(areaBytes) || areaBytes < 0)
      throw new RangeError(`the actor area size must be a whole number of bytes, not ${areaBytes}`);
    this.areaBytes = areaBytes;
  }

  /**
   * A frozen registry with a layout computed elsewhere (by layout() or
   * JSON.parse(JSON.stringify(registry))); the slots are checked, not re-laid out.
   */
  static fromLayout(slots: FieldSlot[], areaBytes = ACTOR_BYTES): FieldRegistry {
    const reg = new FieldRegistry(areaBytes);
    if (!Array.isArray(slots)) throw new FieldLayoutError(`a field layout is an array of slots, not ${typeof slots}`);
    const bits = new Map<number, string>(); // byte * 8 + bit -> owner
    const own = (pos: number, who: string, where: string): void => {
      const prev = bits.get(pos);
      if (prev !== undefined)
        throw new FieldLayoutError(`field layout: ${who} overlaps ${prev} at ${where}: pass the layout unchanged from layout()`);
      bits.set(pos, who);
    };
    const checked: FieldSlot[] = [];
    slots.forEach((raw, i) => {
      const s = (raw ?? {}) as Partial<FieldSlot>;
      const who = `slot ${i} (${String(s.actor)}.${String(s.name)})`;
      const bad = (what: string): never => {
        throw new FieldLayoutError(`field layout: ${who} ${what}: pass the layout unchanged from layout()`);
      };
      if (typeof s.actor !== 'string' || !ACTOR_NAME.test(s.actor)) bad('has no valid actor name');
      if (typeof s.name !== 'string' || !NAME.test(s.name)) bad('has no valid field name');
      if (!isType(s.type)) bad(`has type ${JSON.stringify(s.type)}, not one of ${TYPES.join(', ')}`);
      const type = s.type as FieldType;
      const size = type === 'flag' ? 1 : SIZES[type];
      const offset = s.offset as number;
      if (!Number.isInteger(offset) || offset < 0 || offset + size > areaBytes)
        bad(`has offset ${String(s.offset)}, outside the ${areaBytes}-byte actor area`);
      if (offset % size !== 0) bad(`is a ${type} at offset ${offset}, which is not a multiple of ${size}`);
      const slot: FieldSlot = { actor: s.actor!, name: s.name!, type, offset };
      if (type === 'flag') {
        if (!Number.isInteger(s.bit) || s.bit! < 0 || s.bit! > 7) bad(`is a flag with bit ${String(s.bit)}, not 0-7`);
        slot.bit = s.bit!;
        own(offset * 8 + slot.bit, `${slot.actor}.${slot.name}`, `byte ${offset} bit ${slot.bit}`);
      } else {
        if (s.bit !== undefined) bad(`is a ${type} with a bit number; only flags have one`);
        for (let b = offset * 8; b < (offset + size) * 8; b++)
          own(b, `${slot.actor}.${slot.name}`, `byte ${b >> 3}`);
      }
      if (reg.index.get(slot.actor)?.has(slot.name)) bad('names a field that an earlier slot already names');
      if (!reg.index.has(slot.actor)) reg.index.set(slot.actor, new Map());
      reg.index.get(slot.actor)!.set(slot.name, slot);
      if (!reg.decls.has(slot.actor)) reg.decls.set(slot.actor, []);
      reg.decls.get(slot.actor)!.push({ name: slot.name, type });
      checked.push(slot);
    });
    reg.slots = checked;
    reg.isFrozen = true;
    return reg;
  }

  /** fromLayout() of a string made by serialize() or JSON.stringify(registry). */
  static parse(json: string, areaBytes = ACTOR_BYTES): FieldRegistry {
    let slots: unknown;
    try {
      slots = JSON.parse(json);
    } catch (err) {
      throw new FieldLayoutError(`field layout is not JSON (${(err as Error).message}): pass the string from serialize()`);
    }
    return FieldRegistry.fromLayout(slots as FieldSlot[], areaBytes);
  }

  /** Declares an actor's fields and lays out the area again; throws FieldLayoutError, changing nothing, if they are refused. */
  declare(actor: string, fields: FieldDecl[]): void {
    if (this.isFrozen)
      throw new FieldLayoutError(`actor "${actor}" declares fields after the field registry was frozen: declare every actor before the run starts`);
    if (typeof actor !== 'string' || !ACTOR_NAME.test(actor))
      throw new FieldLayoutError(`actor name ${JSON.stringify(actor)} is not valid: use letters, digits, "-", "_" and "."`);
    if (this.decls.has(actor))
      throw new FieldLayoutError(`actor "${actor}" is already declared (${describe(this.decls.get(actor)!)}): declare each actor once, with all its fields`);
    if (!Array.isArray(fields))
      throw new FieldLayoutError(`actor "${actor}" declares ${typeof fields}, not an array of fields such as [{ name: 'hops', type: 'u8' }]`);
    const seen = new Set<string>();
    const mine: FieldDecl[] = [];
    for (const f of fields) {
      const name = (f as Partial<FieldDecl> | undefined)?.name;
      const type = (f as Partial<FieldDecl> | undefined)?.type;
      if (typeof name !== 'string' || !NAME.test(name))
        throw new FieldLayoutError(`actor "${actor}" declares field name ${JSON.stringify(name)}, which is not valid: use letters, digits and _, not starting with a digit`);
      if (!isType(type))
        throw new FieldLayoutError(`field "${name}" of actor "${actor}" has type ${JSON.stringify(type)}: use one of ${TYPES.join(', ')}`);
      if (seen.has(name))
        throw new FieldLayoutError(`actor "${actor}" declares field "${name}" twice: give each field its own name`);
      seen.add(name);
      mine.push({ name, type });
    }
    const next = new Map(this.decls).set(actor, mine);
    const slots = computeLayout(next);
    if (coveredBytes(slots) > this.areaBytes) {
      const left = this.areaBytes - this.used();
      const before = [...this.decls.keys()].sort(byName).map((a) => `"${a}" (${plural(bytesOf(this.decls.get(a)!), 'byte')})`);
      const after = before.length ? ` and ${left} ${left === 1 ? 'is' : 'are'} left after ${before.join(', ')}` : '';
      throw new FieldLayoutError(
        `actor "${actor}" declares ${plural(bytesOf(mine), 'byte')} of fields (${describe(mine)}), ` +
          `but the actor area has ${this.areaBytes} bytes${after}: declare smaller types or fewer fields`,
      );
    }
    this.decls = next;
    this.setSlots(slots);
  }

  /** Refuses every later declare(); returns the registry. */
  freeze(): this {
    this.isFrozen = true;
    return this;
  }

  /** Whether freeze() was called (or the registry came from fromLayout()). */
  get frozen(): boolean {
    return this.isFrozen;
  }

  /** The slots, in order of actor name then declaration order (copies: changing them changes nothing). */
  layout(): FieldSlot[] {
    return this.slots.map((s) => ({ ...s }));
  }

  /** What JSON.stringify(registry) writes: the layout, which fromLayout() takes back. */
  toJSON(): FieldSlot[] {
    return this.layout();
  }

  /** The layout as a JSON string, e.g. for an environment variable; FieldRegistry.parse() reads it. */
  serialize(): string {
    return JSON.stringify(this.layout());
  }

  /** Bytes of the area that some field covers. */
  used(): number {
    return coveredBytes(this.slots);
  }

  /** The actors declared, in order of name. */
  actors(): string[] {
    return [...this.decls.keys()].sort(byName);
  }

  /** One field's value: number for u8/u16/u32, bigint for u64, boolean for flag. */
  get(area: Uint8Array, actor: string, field: string): FieldValue {
    return readSlot(this.view(area), this.slot(actor, field));
  }

  /** Sets one field, changing only its bytes (its bit for a flag); RangeError if the value does not fit, TypeError if it has the wrong type. */
  set(area: Uint8Array, actor: string, field: string, value: FieldValue): void {
    const slot = this.slot(actor, field);
    check(slot, value);
    writeSlot(this.view(area), slot, value);
  }

  /** All of an actor's fields, in declaration order. */
  read(area: Uint8Array, actor: string): Record<string, FieldValue> {
    const view = this.view(area);
    const out: Record<string, FieldValue> = {};
    for (const slot of this.fieldsOf(actor).values()) out[slot.name] = readSlot(view, slot);
    return out;
  }

  /** Sets the named fields of an actor, leaving the others; checks every value before writing any. */
  write(area: Uint8Array, actor: string, values: Record<string, FieldValue>): void {
    const todo = Object.entries(values).map(([name, value]) => {
      const slot = this.slot(actor, name);
      check(slot, value);
      return [slot, value] as const;
    });
    const view = this.view(area);
    for (const [slot, value] of todo) writeSlot(view, slot, value);
  }

  private setSlots(slots: FieldSlot[]): void {
    this.slots = slots;
    this.index = new Map();
    for (const s of slots) {
      if (!this.index.has(s.actor)) this.index.set(s.actor, new Map());
      this.index.get(s.actor)!.set(s.name, s);
    }
  }

  private fieldsOf(actor: string): Map<string, FieldSlot> {
    const fields = this.index.get(actor);
    if (fields) return fields;
    // An actor declared with no fields has no slots, but is known.
    if (this.decls.has(actor)) return new Map();
    const known = this.actors();
    throw new FieldLayoutError(
      `no actor "${actor}" in the field registry: ${known.length ? `the actors are ${known.map((a) => `"${a}"`).join(', ')}` : 'no actor is declared'}`,
    );
  }

  private slot(actor: string, field: string): FieldSlot {
    const fields = this.fieldsOf(actor);
    const slot = fields.get(field);
    if (slot) return slot;
    const known = [...fields.keys()];
    throw new FieldLayoutError(
      `actor "${actor}" has no field "${field}": ${known.length ? `its fields are ${known.map((f) => `"${f}"`).join(', ')}` : 'it declares no fields'}`,
    );
  }

  private view(area: Uint8Array): DataView {
    if (!(area instanceof Uint8Array)) throw new TypeError(`the actor area must be a Uint8Array or Buffer, not ${typeof area}`);
    if (area.byteLength !== this.areaBytes)
      throw new RangeError(
        `the actor area is ${area.byteLength} bytes, but the field registry lays out ${this.areaBytes}: pass the record's actor area, not the whole record`,
      );
    return new DataView(area.buffer, area.byteOffset, area.byteLength);
  }
}

function readSlot(view: DataView, s: FieldSlot): FieldValue {
  switch (s.type) {
    case 'u8':
      return view.getUint8(s.offset);
    case 'u16':
      return view.getUint16(s.offset, true);
    case 'u32':
      return view.getUint32(s.offset, true);
    case 'u64':
      return view.getBigUint64(s.offset, true);
    case 'flag':
      return (view.getUint8(s.offset) & (1 << s.bit!)) !== 0;
  }
}

/** Throws unless the value fits the slot. */
function check(s: FieldSlot, value: FieldValue): void {
  const what = `field "${s.actor}.${s.name}" is a ${s.type}`;
  if (s.type === 'flag') {
    if (typeof value !== 'boolean') throw new TypeError(`${what}: pass true or false, not ${typeof value}`);
  } else if (s.type === 'u64') {
    if (typeof value !== 'bigint') throw new TypeError(`${what}: pass a bigint (such as 5n), not ${typeof value}`);
    if (value < 0n || value > U64_MAX) throw new RangeError(`${what}: ${value} is outside 0-${U64_MAX}`);
  } else {
    if (typeof value !== 'number') throw new TypeError(`${what}: pass a number, not ${typeof value}`);
    if (!Number.isInteger(value) || value < 0 || value > MAX[s.type])
      throw new RangeError(`${what}: ${value} is not an integer 0-${MAX[s.type]}`);
  }
}

function writeSlot(view: DataView, s: FieldSlot, value: FieldValue): void {
  switch (s.type) {
    case 'u8':
      return view.setUint8(s.offset, value as number);
    case 'u16':
      return view.setUint16(s.offset, value as number, true);
    case 'u32':
      return view.setUint32(s.offset, value as number, true);
    case 'u64':
      return view.setBigUint64(s.offset, value as bigint, true);
    case 'flag': {
      const mask = 1 << s.bit!;
      const byte = view.getUint8(s.offset);
      return view.setUint8(s.offset, value ? byte | mask : byte & ~mask);
    }
  }
}
