import t from 'tap';
import { decodeRecord, encodeRecord, newRecord, RECORD_BYTES, ACTOR_BYTES } from '../src/kernel/record';
import { native } from '../src/kernel/native';

t.test('a record survives encode and decode', async (t) => {
  for (let i = 0; i < 200; i++) {
    const r = newRecord({ sampled: i % 2 === 0, priority: i % 256 });
    r.actor = Uint8Array.from({ length: ACTOR_BYTES }, (_, j) => (i * 31 + j) & 0xff);
    const buf = encodeRecord(r);
    t.equal(buf.length, RECORD_BYTES);
    t.same(decodeRecord(buf), r);
  }
});

t.test('the layout is the one in bpf/causeway.h', async (t) => {
  const r = newRecord({ priority: 7 });
  r.traceId = '00112233445566778899aabbccddeeff';
  r.eventId = '0102030405060708';
  const b = encodeRecord(r);
  t.equal(b[0], 1, 'version');
  t.equal(b[1], 1, 'sampled flag');
  t.equal(b[2], 7, 'priority');
  t.equal(b.toString('hex', 8, 24), r.traceId, 'trace id bytes in order');
  t.equal(b.readBigUInt64LE(24), 0x0102030405060708n, 'event id is a little-endian u64');
  t.equal(native().layout().record, RECORD_BYTES, 'the addon agrees on the size');
});

t.test('fields that do not fit are refused', async (t) => {
  const r = newRecord();
  t.throws(() => encodeRecord({ ...r, priority: 256 }), RangeError);
  t.throws(() => encodeRecord({ ...r, traceId: 'xyz' }), RangeError);
  t.throws(() => encodeRecord({ ...r, eventId: '0'.repeat(17) }), RangeError);
  t.throws(() => encodeRecord({ ...r, actor: new Uint8Array(ACTOR_BYTES + 1) }), RangeError);
  t.throws(() => decodeRecord(Buffer.alloc(10)), RangeError);
});
