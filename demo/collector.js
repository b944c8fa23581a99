// The "collector" (Node): accepts one TCP connection, reads the report until
// the sender closes, prints it and answers how many lines it got.
//   node collector.js ADDR PORT
'use strict';
const net = require('node:net');

process.title = 'collector'; // its name in the trace (the thread's comm)
const [addr, port] = process.argv.slice(2);
const server = net.createServer((conn) => {
  let report = '';
  conn.setEncoding('utf8');
  conn.on('data', (chunk) => (report += chunk));
  conn.on('end', () => {
    const lines = report.split('\n').filter(Boolean);
    process.stdout.write(`collector: ${lines.length} line(s) from ${conn.remoteAddress}:\n${lines.map((l) => `  ${l}\n`).join('')}`);
    conn.end(`stored ${lines.length} line(s)\n`);
    server.close();
  });
});
server.listen(Number(port), addr);
