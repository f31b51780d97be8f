'use strict';
// Node ws client for the graceful-shutdown tests: opens a WebSocket to the
// URL given, checks one echo, prints "open", then waits for the server's
// close and prints "close CODE REASON". Exits 2 after 60 s.
const WebSocket = require('ws');
const [url] = process.argv.slice(2);
setTimeout(() => { console.log('FAIL timeout'); process.exit(2); }, 60000);
const ws = new WebSocket(url);
ws.on('open', () => ws.send('hello from node'));
ws.once('message', (data) => {
  if (data.toString() !== 'hello from node') {
    console.log('FAIL echo: ' + JSON.stringify(data.toString()));
    process.exit(1);
  }
  console.log('open');
});
ws.on('close', (code, reason) => {
  console.log('close ' + code + ' ' + reason.toString());
  process.exit(0);
});
ws.on('error', (e) => { console.log('FAIL error: ' + e.message); process.exit(1); });
