'use strict';
// Node ws client checks through a proxy. Prints "ok NAME" per passed check,
// "FAIL NAME: detail" per failed one; exits 1 on any failure.
const WebSocket = require('ws');
const crypto = require('crypto');
const PREFIX = 'Server received from client: ';
const [base, mode] = process.argv.slice(2);
let failed = false;
function check(name, cond, detail) {
  if (cond) { console.log('ok ' + name); } else { failed = true; console.log('FAIL ' + name + ': ' + detail); }
}
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
setTimeout(() => { console.log('FAIL timeout'); process.exit(2); }, 60000);

function connect(protocols) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base, protocols);
    const inbox = [];
    const waiters = [];
    ws.on('message', (data, isBinary) => {
      const m = { data, isBinary };
      const w = waiters.shift();
      if (w) { w(m); } else { inbox.push(m); }
    });
    ws.next = () => inbox.length ? Promise.resolve(inbox.shift()) : new Promise((r) => waiters.push(r));
    ws.closed = new Promise((r) => ws.on('close', (code, reason) => r({ code, reason: reason.toString() })));
    ws.on('upgrade', (res) => { ws.responseHeaders = res.headers; });
    ws.on('unexpected-response', (req, res) => reject(new Error('unexpected status ' + res.statusCode)));
    ws.on('open', () => resolve(ws));
    ws.on('error', reject);
  });
}

async function echoChecks(ws, guide) {
  await ws.send('hello');
  let m = await ws.next();
  check('text', !m.isBinary && m.data.toString() === PREFIX + 'hello', JSON.stringify(m.data.toString()));

  const bin = Buffer.from([98, 105, 110, 1, 2, 3]);
  ws.send(bin);
  m = await ws.next();
  if (guide) {
    // server.js concatenates the Buffer into its text reply.
    check('binary', !m.isBinary && m.data.toString() === PREFIX + bin.toString(), m.data.toString());
  } else {
    check('binary', m.isBinary && Buffer.compare(m.data, Buffer.concat([Buffer.from(PREFIX), bin])) === 0, m.data.toString('hex'));
  }

  const pong = new Promise((r) => ws.once('pong', (d) => r(d.toString())));
  ws.ping('p1');
  check('ping', (await pong) === 'p1', 'pong data');

  const n = 16 << 20;
  if (guide) {
    // 16 MiB of random letters up, the same text with the prefix down.
    const letters = crypto.randomBytes(n).map((b) => 97 + (b % 26));
    const text = letters.toString('latin1');
    ws.send(text);
    m = await ws.next();
    check('big', !m.isBinary && m.data.length === n + PREFIX.length && sha(m.data) === sha(PREFIX + text), 'length ' + m.data.length);
  } else {
    ws.send('/big ' + n);
    m = await ws.next();
    const want = Buffer.alloc(n);
    for (let i = 0; i < n; i++) { want[i] = i & 255; }
    check('big', m.isBinary && m.data.length === n && sha(m.data) === sha(want), 'length ' + m.data.length);
  }
}

async function main() {
  if (mode === 'deflate') {
    const ws = await connect();
    const ext = ws.responseHeaders['sec-websocket-extensions'] || '';
    check('deflate-header', ext.startsWith('permessage-deflate'), JSON.stringify(ext));
    check('deflate-negotiated', ws.extensions.startsWith('permessage-deflate'), JSON.stringify(ws.extensions));
    const text = 'sluice '.repeat(150000);
    const before = ws._socket.bytesRead;
    ws.send(text);
    const m = await ws.next();
    const wire = ws._socket.bytesRead - before;
    check('deflate-roundtrip', m.data.toString() === text, 'length ' + m.data.length);
    // Only compressed frames make a 1 MiB echo this small on the wire.
    check('deflate-compressed', wire < text.length / 10, 'wire bytes ' + wire);
    ws.close(1000);
    await ws.closed;
  } else {
    const guide = mode === 'guide';
    const ws = await connect(['chat.v2', 'chat.v1']);
    check('subprotocol', ws.protocol === 'chat.v2' && ws.responseHeaders['sec-websocket-protocol'] === 'chat.v2', JSON.stringify(ws.protocol));
    // The client offers permessage-deflate; neither server.js (the ws
    // server's default) nor sluice echo accepts it, and sluice adds nothing.
    check('no-deflate', ws.extensions === '' && !('sec-websocket-extensions' in ws.responseHeaders), JSON.stringify(ws.extensions));
    await echoChecks(ws, guide);
    ws.close(4001, 'client bye');
    const c = await ws.closed;
    check('client-close', c.code === 4001 && c.reason === 'client bye', JSON.stringify(c));
    if (!guide) {
      const ws2 = await connect();
      ws2.send('/close 4002 server bye');
      const c2 = await ws2.closed;
      check('server-close', c2.code === 4002 && c2.reason === 'server bye', JSON.stringify(c2));
    }
  }
  process.exit(failed ? 1 : 0);
}
main().catch((e) => { console.log('FAIL error: ' + e.message); process.exit(1); });
