// The front tier of the application benchmark (bench/app/index.ts): an HTTP
// service whose GET /item/:id asks the back tier over HTTP (a keep-alive
// agent) and answers with what it said. Plain Node: nothing in it knows of
// causeway or OpenTelemetry (otel.js is preloaded in the OTel configuration).
// env: BACK_PORT. Prints "port N" once it listens; SIGTERM ends it.
'use strict';
const http = require('node:http');

process.title = 'app-front';
const backPort = Number(process.env.BACK_PORT);
if (!(backPort > 0)) throw new Error('front: BACK_PORT is not set');
const agent = new http.Agent({ keepAlive: true });

const server = http.createServer((req, res) => {
  const m = /^\/item\/(\d+)$/.exec(req.url ?? '');
  if (req.method !== 'GET' || !m) {
    res.writeHead(404).end();
    return;
  }
  const back = http.get({ host: '127.0.0.1', port: backPort, path: `/item/${m[1]}`, agent }, (bres) => {
    const chunks = [];
    bres.on('data', (c) => chunks.push(c));
    bres.on('end', () => {
      const body = Buffer.concat(chunks);
      res.writeHead(bres.statusCode ?? 502, { 'content-type': 'application/json', 'content-length': body.length });
      res.end(body);
    });
  });
  back.on('error', (err) => {
    if (res.headersSent) return res.destroy();
    res.writeHead(502, { 'content-length': Buffer.byteLength(err.message) });
    res.end(err.message);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => process.stdout.write(`port ${server.address().port}\n`));
if (!process.env.APP_OTEL) process.on('SIGTERM', () => process.exit(0));
