// The "store" service (Node): answers "GET /basket/NAME" lines on a UNIX
// socket with the basket's items, one line each; serves one client, then exits.
//   node store.js SOCKET
'use strict';
const fs = require('node:fs');
const net = require('node:net');

const BASKETS = {
  alice: 'apple pear apple fig',
  bob: 'fig apple plum',
  carol: 'pear apple fig fig',
};

process.title = 'store'; // its name in the trace (the thread's comm)
const path = process.argv[2];
fs.rmSync(path, { force: true });
const server = net.createServer((conn) => {
  let buf = '';
  conn.setEncoding('utf8');
  conn.on('data', (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const [verb, key] = buf.slice(0, nl).split(' ');
      buf = buf.slice(nl + 1);
      const name = verb === 'GET' ? key.replace(/^\/basket\//, '') : '';
      conn.write((BASKETS[name] ?? '') + '\n');
    }
  });
  conn.on('end', () => {
    conn.end();
    server.close();
  });
});
server.listen(path);
