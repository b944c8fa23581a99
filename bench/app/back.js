// The back tier of the application benchmark (bench/app/index.ts): an HTTP
// service whose GET /item/:id counts the hit (INCR) and reads the item (GET)
// in Redis over one ioredis connection (a UNIX socket), and answers both.
// Plain Node: nothing in it knows of causeway or OpenTelemetry.
// env: REDIS_SOCKET, ITEMS. Stores the items, then prints "port N" once it
// listens; SIGTERM ends it.
'use strict';
const http = require('node:http');
const Redis = require('ioredis');

process.title = 'app-back';
const items = Number(process.env.ITEMS ?? 1000);
const redis = new Redis({ path: process.env.REDIS_SOCKET, maxRetriesPerRequest: 2 });
redis.on('error', (err) => process.stderr.write(`back: redis: ${err.message}\n`));

const server = http.createServer((req, res) => {
  const m = /^\/item\/(\d+)$/.exec(req.url ?? '');
  if (req.method !== 'GET' || !m) {
    res.writeHead(404).end();
    return;
  }
  const id = m[1];
  Promise.all([redis.incr(`hits:${id}`), redis.get(`item:${id}`)]).then(
    ([hits, value]) => {
      const body = JSON.stringify({ id: Number(id), hits, value });
      res.writeHead(value === null ? 404 : 200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    },
    (err) => {
      res.writeHead(500, { 'content-length': Buffer.byteLength(err.message) });
      res.end(err.message);
    },
  );
});
server.keepAliveTimeout = 60_000;

redis.once('ready', async () => {
  const p = redis.pipeline();
  for (let i = 0; i < items; i++) p.set(`item:${i}`, `value of item ${i} `.padEnd(64, '.'));
  await p.exec();
  server.listen(0, '127.0.0.1', () => process.stdout.write(`port ${server.address().port}\n`));
});
if (!process.env.APP_OTEL) process.on('SIGTERM', () => process.exit(0));
