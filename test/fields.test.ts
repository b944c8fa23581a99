import t from 'tap';
import { FieldLayoutError, FieldRegistry, type FieldDecl, type FieldSlot, type FieldValue } from '../src/actor/fields';
import { ACTOR_BYTES } from '../src/kernel/record';
import { CausewayError } from '../src/errors';

const TRACER: FieldDecl[] = [
  { name: 'span', type: 'u64' },
  { name: 'hops', type: 'u8' },
  { name: 'sampled', type: 'flag' },
  { name: 'depth', type: 'u16' },
];
const ACCOUNTANT: FieldDecl[] = [
  { name: 'cpu', type: 'u32' },
  { name: 'hot', type: 'flag' },
  { name: 'bytes', type: 'u32' },
  { name: 'cold', type: 'flag' },
  { name: 'tenant', type: 'u16' },
];

function twoActors(): FieldRegistry {
  const reg = new FieldRegistry();
  reg.declare('tracer', TRACER);
  reg.declare('accountant', ACCOUNTANT);
  return reg;
}

/** Bits (byte * 8 + bit) that a slot covers. */
function bitsOf(s: FieldSlot): number[] {
  if (s.type === 'flag') return [s.offset * 8 + s.bit!];
  const size = { u8: 1, u16: 2, u32: 4, u64: 8 }[s.type];
  return Array.from({ length: size * 8 }, (_, i) => s.offset * 8 + i);
}

/** A distinct value near the top of the field's range. */
function nearMax(s: FieldSlot, i: number): FieldValue {
  switch (s.type) {
    case 'u8':
      return 0xff - i;
    case 'u16':
      return 0xffff - i;
    case 'u32':
      return 0xffffffff - i;
    case 'u64':
      return (1n << 64n) - 1n - BigInt(i);
    case 'flag':
      return true;
  }
}

t.test('the layout follows the documented rules', async (t) => {
  const reg = twoActors();
  // Integers by descending size (ties: actor name, then declaration), then flags as bits.
  t.same(reg.layout(), [
    { actor: 'accountant', name: 'cpu', type: 'u32', offset: 8 },
    { actor: 'accountant', name: 'hot', type: 'flag', offset: 21, bit: 0 },
    { actor: 'accountant', name: 'bytes', type: 'u32', offset: 12 },
    { actor: 'accountant', name: 'cold', type: 'flag', offset: 21, bit: 1 },
    { actor: 'accountant', name: 'tenant', type: 'u16', offset: 16 },
    { actor: 'tracer', name: 'span', type: 'u64', offset: 0 },
    { actor: 'tracer', name: 'hops', type: 'u8', offset: 20 },
    { actor: 'tracer', name: 'sampled', type: 'flag', offset: 21, bit: 2 },
    { actor: 'tracer', name: 'depth', type: 'u16', offset: 18 },
  ]);
  t.equal(reg.used(), 22);
  t.same(reg.actors(), ['accountant', 'tracer']);
  const area = new Uint8Array(ACTOR_BYTES);
  reg.set(area, 'accountant', 'cpu', 0x01020304);
  t.same([...area.subarray(8, 12)], [4, 3, 2, 1], 'integers are little-endian');
});

t.test('two actors do not collide', async (t) => {
  const reg = twoActors();
  const slots = reg.layout();
  const owner = new Map<number, string>();
  const clashes: string[] = [];
  for (const s of slots) {
    const bits = bitsOf(s);
    if (s.type !== 'flag') t.equal(s.offset % (bits.length / 8), 0, `${s.actor}.${s.name} is naturally aligned`);
    t.ok(bits.every((b) => b < ACTOR_BYTES * 8), `${s.actor}.${s.name} is inside the area`);
    for (const b of bits) {
      if (owner.has(b)) clashes.push(`${s.actor}.${s.name} and ${owner.get(b)} at bit ${b}`);
      owner.set(b, `${s.actor}.${s.name}`);
    }
  }
  t.same(clashes, [], 'no two fields share a bit');

  const area = new Uint8Array(ACTOR_BYTES);
  const want = new Map(slots.map((s, i) => [`${s.actor}.${s.name}`, nearMax(s, i)]));
  for (const s of slots) reg.set(area, s.actor, s.name, want.get(`${s.actor}.${s.name}`)!);
  for (const s of slots) t.equal(reg.get(area, s.actor, s.name), want.get(`${s.actor}.${s.name}`), `${s.actor}.${s.name} reads back`);
  t.same(reg.read(area, 'tracer'), { span: (1n << 64n) - 6n, hops: 0xff - 6, sampled: true, depth: 0xffff - 8 });
  t.same(Object.keys(reg.read(area, 'accountant')), ['cpu', 'hot', 'bytes', 'cold', 'tenant'], 'read() keeps declaration order');

  // Writing zeros through one actor leaves the other's fields whole.
  reg.write(area, 'tracer', { span: 0n, hops: 0, sampled: false, depth: 0 });
  t.same(reg.read(area, 'accountant'), { cpu: 0xffffffff, hot: true, bytes: 0xffffffff - 2, cold: true, tenant: 0xffff - 4 });
  t.same(reg.read(area, 'tracer'), { span: 0n, hops: 0, sampled: false, depth: 0 });
});

t.test('flags share a byte without clobbering each other', async (t) => {
  const reg = new FieldRegistry();
  reg.declare('a', [{ name: 'x', type: 'flag' }, { name: 'y', type: 'flag' }]);
  reg.declare('b', [{ name: 'z', type: 'flag' }]);
  t.same(new Set(reg.layout().map((s) => s.offset)), new Set([0]), 'one byte holds all three');
  t.equal(reg.used(), 1);
  const area = new Uint8Array(ACTOR_BYTES);
  const names = [['a', 'x'], ['a', 'y'], ['b', 'z']] as const;
  for (let mask = 0; mask < 8; mask++) {
    names.forEach(([actor, f], i) => reg.set(area, actor, f, (mask & (1 << i)) !== 0));
    names.forEach(([actor, f], i) => t.equal(reg.get(area, actor, f), (mask & (1 << i)) !== 0, `mask ${mask}: ${actor}.${f}`));
    t.equal(area[0], mask, 'bit 0 is the first flag');
  }
  // Toggling one flag leaves the others as they were.
  reg.set(area, 'a', 'y', false);
  t.same([reg.get(area, 'a', 'x'), reg.get(area, 'a', 'y'), reg.get(area, 'b', 'z')], [true, false, true]);
});

t.test('unknown bytes and bits are preserved by set and write', async (t) => {
  const reg = twoActors();
  const area = Buffer.alloc(ACTOR_BYTES, 0xaa);
  const slots = reg.layout();
  slots.forEach((s, i) => reg.set(area, s.actor, s.name, s.type === 'flag' ? i % 2 === 0 : nearMax(s, i)));
  reg.write(area, 'accountant', { hot: false, cold: true, tenant: 7 });
  const covered = new Set(slots.flatMap(bitsOf));
  for (let b = 0; b < ACTOR_BYTES * 8; b++) {
    if (covered.has(b)) continue;
    const was = (0xaa >> (b & 7)) & 1;
    if (((area[b >> 3] >> (b & 7)) & 1) !== was) t.fail(`bit ${b & 7} of byte ${b >> 3} changed`);
  }
  for (let i = reg.used(); i < ACTOR_BYTES; i++) t.equal(area[i], 0xaa, `byte ${i} untouched`);
  // A Buffer's slice of a whole record works in place.
  const rec = Buffer.alloc(64, 0x55);
  reg.set(rec.subarray(32, 64), 'tracer', 'hops', 9);
  t.equal(rec[32 + slots.find((s) => s.name === 'hops')!.offset], 9);
  t.equal(rec[31], 0x55);
  t.throws(() => reg.get(rec, 'tracer', 'hops'), RangeError, 'the whole record is not an actor area');
});

t.test('an oversized declaration is refused and changes nothing', async (t) => {
  const reg = new FieldRegistry();
  reg.declare('tracer', [{ name: 'span', type: 'u64' }]);
  const before = reg.layout();
  const big: FieldDecl[] = ['a', 'b', 'c', 'd'].map((name) => ({ name, type: 'u64' }));
  big.push({ name: 'e', type: 'u32' }, { name: 'f', type: 'u32' });
  const err = t.throws(() => reg.declare('accountant', big), FieldLayoutError) as Error;
  t.ok(err instanceof CausewayError);
  t.equal(
    err.message,
    'actor "accountant" declares 40 bytes of fields (4 u64, 2 u32), but the actor area has 32 bytes ' +
      'and 24 are left after "tracer" (8 bytes): declare smaller types or fewer fields',
  );
  t.same(reg.layout(), before, 'the earlier layout stands');
  t.equal(reg.used(), 8);
  t.same(reg.actors(), ['tracer']);
  // The name is still free, and a declaration that fits exactly is taken.
  reg.declare('accountant', big.slice(0, 3));
  t.equal(reg.used(), 32);
  // A 33rd byte, even one flag, does not fit.
  t.throws(() => reg.declare('zz', [{ name: 'f', type: 'flag' }]), { name: 'FieldLayoutError', message: /"zz" declares 1 byte .*0 are left/ });
  t.throws(() => new FieldRegistry(4).declare('a', [{ name: 'x', type: 'u64' }]), {
    message: 'actor "a" declares 8 bytes of fields (1 u64), but the actor area has 4 bytes: declare smaller types or fewer fields',
  });
});

t.test('the layout does not depend on declaration order', async (t) => {
  const ab = twoActors();
  const ba = new FieldRegistry();
  ba.declare('accountant', ACCOUNTANT);
  ba.declare('tracer', TRACER);
  t.same(ba.layout(), ab.layout());
  t.equal(ba.serialize(), ab.serialize());
});

t.test('fromLayout round-trips through JSON', async (t) => {
  const reg = twoActors().freeze();
  const env = JSON.stringify(reg);
  const copy = FieldRegistry.fromLayout(JSON.parse(env));
  t.same(copy.layout(), reg.layout());
  t.ok(copy.frozen, 'a layout from elsewhere is frozen');
  t.same(FieldRegistry.parse(reg.serialize()).layout(), reg.layout());
  const area = new Uint8Array(ACTOR_BYTES);
  reg.write(area, 'tracer', { span: 0x1234567890abcdefn, sampled: true });
  reg.set(area, 'accountant', 'tenant', 42);
  t.same(copy.read(area, 'tracer'), reg.read(area, 'tracer'));
  t.equal(copy.get(area, 'accountant', 'tenant'), 42);
  t.equal(copy.used(), reg.used());

  const slots = reg.layout();
  t.throws(() => FieldRegistry.fromLayout([...slots, { actor: 'x', name: 'y', type: 'u8', offset: 20 }]), {
    name: 'FieldLayoutError',
    message: /x\.y overlaps tracer\.hops/,
  });
  t.throws(() => FieldRegistry.fromLayout([{ actor: 'x', name: 'y', type: 'u32', offset: 2 }]), { message: /not a multiple of 4/ });
  t.throws(() => FieldRegistry.fromLayout([{ actor: 'x', name: 'y', type: 'u64', offset: 30 }]), { message: /outside/ });
  t.throws(() => FieldRegistry.fromLayout([{ actor: 'x', name: 'y', type: 'flag', offset: 0 }]), { message: /bit undefined/ });
  t.throws(() => FieldRegistry.parse('{'), FieldLayoutError);
});

t.test('values that do not fit are refused', async (t) => {
  const reg = twoActors();
  const area = new Uint8Array(ACTOR_BYTES);
  t.throws(() => reg.set(area, 'tracer', 'hops', 256), { name: 'RangeError', message: /"tracer\.hops" is a u8: 256 is not an integer 0-255/ });
  t.throws(() => reg.set(area, 'tracer', 'hops', -1), RangeError);
  t.throws(() => reg.set(area, 'tracer', 'hops', 1.5), RangeError);
  t.throws(() => reg.set(area, 'tracer', 'hops', NaN), RangeError);
  t.throws(() => reg.set(area, 'tracer', 'depth', 0x10000), RangeError);
  t.throws(() => reg.set(area, 'accountant', 'cpu', 2 ** 32), RangeError);
  t.throws(() => reg.set(area, 'tracer', 'span', 2n ** 64n), { name: 'RangeError', message: /u64: 18446744073709551616 is outside/ });
  t.throws(() => reg.set(area, 'tracer', 'span', -1n), RangeError);
  t.throws(() => reg.set(area, 'tracer', 'span', 5), { name: 'TypeError', message: /pass a bigint/ });
  t.throws(() => reg.set(area, 'tracer', 'hops', 5n), TypeError);
  t.throws(() => reg.set(area, 'tracer', 'sampled', 1), TypeError);
  t.throws(() => reg.set(area, 'tracer', 'hops', '5' as unknown as number), TypeError);
  reg.set(area, 'tracer', 'span', 2n ** 64n - 1n);
  reg.set(area, 'tracer', 'hops', 255);
  const before = Buffer.from(area);
  t.throws(() => reg.write(area, 'tracer', { hops: 1, depth: -1 }), RangeError);
  t.same(Buffer.from(area), before, 'write() checks every value before writing any');
  t.same(area, new Uint8Array(ACTOR_BYTES).fill(0xff, 0, 8).fill(0xff, 20, 21));
});

t.test('bad and duplicate names are refused', async (t) => {
  const reg = twoActors();
  const before = reg.layout();
  t.throws(() => reg.declare('tracer', [{ name: 'other', type: 'u8' }]), { name: 'FieldLayoutError', message: /actor "tracer" is already declared/ });
  t.throws(() => reg.declare('dup', [{ name: 'x', type: 'u8' }, { name: 'x', type: 'flag' }]), { message: /declares field "x" twice/ });
  t.throws(() => reg.declare('bad name', []), { message: /actor name "bad name" is not valid/ });
  t.throws(() => reg.declare('ok', [{ name: 'a-b', type: 'u8' }]), { message: /field name "a-b"/ });
  t.throws(() => reg.declare('ok', [{ name: 'x', type: 'u128' as 'u64' }]), { message: /has type "u128": use one of u64, u32, u16, u8, flag/ });
  t.same(reg.layout(), before, 'refused declarations change nothing');
  t.same(reg.actors(), ['accountant', 'tracer']);

  const area = new Uint8Array(ACTOR_BYTES);
  t.throws(() => reg.get(area, 'tracer', 'spam'), { name: 'FieldLayoutError', message: /no field "spam": its fields are "span", "hops", "sampled", "depth"/ });
  t.throws(() => reg.write(area, 'accountant', { cpu: 1, memory: 2 }), { message: /no field "memory": its fields are "cpu"/ });
  t.same(area, new Uint8Array(ACTOR_BYTES), 'an unknown name in write() writes nothing');
  t.throws(() => reg.read(area, 'auditor'), { message: /no actor "auditor".*"accountant", "tracer"/ });
});

t.test('a frozen registry refuses declarations', async (t) => {
  const reg = twoActors();
  t.notOk(reg.frozen);
  t.equal(reg.freeze(), reg);
  t.ok(reg.frozen);
  t.throws(() => reg.declare('late', [{ name: 'x', type: 'u8' }]), { name: 'FieldLayoutError', message: /"late" declares fields after the field registry was frozen/ });
  t.same(reg.actors(), ['accountant', 'tracer']);
  const area = new Uint8Array(ACTOR_BYTES);
  reg.set(area, 'tracer', 'hops', 3);
  t.equal(reg.get(area, 'tracer', 'hops'), 3, 'get and set still work');
});
