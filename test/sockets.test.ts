/**
 * UNIX sockets and TCP on one host, with real programs in Python, Node and
 * curl: the receiver adopts the sender's trace through recv events whose
 * parents are the sender's sends.
 */
import t from 'tap';
import path from 'node:path';
import { bpfUnavailable, causeway, EventJson, readEvents, tmpdir } from './helpers';
import { newTraceId } from '../src/kernel/record';

const skip = bpfUnavailable();
const FIXTURES = path.join(__dirname, 'fixtures');

/** The first socket recv (in time) by a process matching `reader`, and the send it names as parent. */
function hop(events: EventJson[], reader: (e: EventJson) => boolean) {
  const byId = new Map(events.map((e) => [e.event, e]));
  const inOrder = [...events].sort((a, b) => (BigInt(a.ts) < BigInt(b.ts) ? -1 : 1));
  const recv = inOrder.find((e) => e.type === 'recv' && e.channel?.kind !== 'pipe' && reader(e));
  const send = recv ? byId.get(recv.parents[0]) : undefined;
  return { recv, send };
}

async function traced(t: Tap.Test, script: string) {
  const dir = tmpdir(t);
  const file = path.join(dir, 'ev.jsonl');
  const trace = newTraceId();
  const r = await causeway(['run', '--trace', trace, '-e', file, '--', 'sh', '-c', script.replace(/DIR/g, dir)]);
  t.equal(r.status, 0, r.stderr);
  return { r, events: readEvents(file), trace, dir };
}

// Node cannot reach Python's abstract sockets (libuv sizes the address differently), so abstract is Python to Python.
for (const [server, client, addr] of [
  ['python3', 'node', 'DIR/sock'],
  ['node', 'python3', 'DIR/sock'],
  ['python3', 'python3', '@causeway-test-DIR'],
] as const) {
  const abstract = addr.startsWith('@');
  t.test(`UNIX stream: ${server} server, ${client} client, ${abstract ? 'abstract' : 'path'}`, { skip: skip ?? false }, async (t) => {
    const ext = (p: string) => (p === 'node' ? 'js' : 'py');
    // timeout: a client that fails must not leave the server waiting forever.
    const script = `timeout 30 ${server} ${FIXTURES}/echo_server.${ext(server)} ${addr} DIR/ready & timeout 30 ${client} ${FIXTURES}/echo_client.${ext(client)} ${addr} DIR/ready; wait`;
    const { r, events, trace, dir } = await traced(t, script);
    t.equal(r.stdout, 'pong:ping\n', 'the conversation is unchanged');
    const name = abstract ? `abstract:causeway-test-${dir}` : `${dir}/sock`;
    // The client speaks first: the first receive on the socket is the server's.
    const toServer = hop(events, () => true);
    t.match(toServer.recv, { trace, channel: { kind: 'unix', type: 'stream', name } }, 'the server received the request');
    t.match(toServer.send, { type: 'send', channel: { kind: 'unix', name } }, "its parent is the client's send");
    t.not(toServer.send?.pid, toServer.recv?.pid, 'from the other process');
    const toClient = hop(events, (e) => e.pid === toServer.send?.pid);
    t.match(toClient.send, { type: 'send', pid: toServer.recv?.pid }, "the client's answer came from the server's send");
    t.equal(toClient.send?.parents[0], toServer.recv?.event, "which followed the server's recv");
  });
}

for (const type of ['stream', 'dgram', 'seqpacket']) {
  t.test(`socketpair, ${type}`, { skip: skip ?? false }, async (t) => {
    const { r, events, trace } = await traced(t, `python3 ${FIXTURES}/pair.py ${type}`);
    t.equal(r.stdout.trim(), type === 'stream' ? '3 3 3' : '3 4 5', 'the data is unchanged');
    const { recv, send } = hop(events, () => true);
    t.match(recv, { trace, channel: { kind: 'unix', type, name: 'socketpair' } });
    t.match(send, { type: 'send', channel: { kind: 'unix', type, name: 'socketpair' } }, "the parent's recv follows the child's send");
    t.not(send?.pid, recv?.pid, 'across processes');
    if (type !== 'stream') t.equal(recv?.bytes, 1, 'datagrams are counted in messages');
    const recvs = events.filter((e) => e.type === 'recv' && e.channel?.kind === 'unix');
    t.equal(recvs.length, 1, 'later messages of the same record adopt nothing new');
  });
}

for (const [label, host, url] of [
  ['IPv4', '127.0.0.1', 'http://127.0.0.1'],
  ['IPv6', '::1', 'http://[::1]'],
] as const) {
  t.test(`TCP ${label}: curl -> Node HTTP server`, { skip: skip ?? false }, async (t) => {
    const script = `node ${FIXTURES}/http_server.js ${host} DIR/port & while [ ! -s DIR/port ]; do sleep 0.02; done; curl -s ${url}:$(cat DIR/port)/hello; wait`;
    const { r, events, trace } = await traced(t, script);
    t.equal(r.stdout, 'hello /hello\n');
    const toServer = hop(events, (e) => e.comm === 'node');
    t.match(toServer.recv, { trace, channel: { kind: 'tcp', local: host } }, 'the server received the request');
    t.match(toServer.send, { type: 'send', comm: 'curl', channel: { kind: 'tcp', remote: host } }, "its parent is curl's send");
    t.equal(toServer.send?.channel?.localPort, toServer.recv?.channel?.remotePort, 'on the same connection');
    const toCurl = hop(events, (e) => e.comm === 'curl');
    t.match(toCurl.send, { type: 'send', comm: 'node' }, "curl's response came from the server's send");
  });
}
