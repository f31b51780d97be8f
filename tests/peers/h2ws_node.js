// WebSocket over HTTP/2 (RFC 8441) with Node's own http2 client, for
// tests/h2.rs: a second, independent client beside Python's h2.
//
// usage: node h2ws_node.js URL PATH [--drain]
//
// Waits for the server's SETTINGS_ENABLE_CONNECT_PROTOCOL, opens an
// extended CONNECT stream for PATH, prints `status=N`, then on 200 sends a
// text message and a close with code 4002 and prints `text=...` and
// `close=CODE REASON`. With --drain it prints `open` after the echo instead
// of closing, waits for the server's close (`close=CODE REASON`), answers
// it, and prints `ended` when the stream ends. The WebSocket frames are written by hand (client
// frames masked, RFC 6455 5.2) so nothing but Node is involved.
'use strict';
const http2 = require('http2');
const crypto = require('crypto');

const [url, path, mode] = process.argv.slice(2);
const drain = mode === '--drain';
setTimeout(() => {
  console.error('timed out');
  process.exit(2);
}, drain ? 60000 : 20000).unref();

function frame(opcode, payload) {
  const len = payload.length;
  let head;
  if (len < 126) {
    head = Buffer.from([0x80 | opcode, 0x80 | len]);
  } else if (len < 65536) {
    head = Buffer.alloc(4);
    head[0] = 0x80 | opcode;
    head[1] = 0x80 | 126;
    head.writeUInt16BE(len, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = 0x80 | opcode;
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  const mask = crypto.randomBytes(4);
  const body = Buffer.alloc(len);
  for (let i = 0; i < len; i++) body[i] = payload[i] ^ mask[i % 4];
  return Buffer.concat([head, mask, body]);
}

// Server frames: unmasked; returns [opcode, payload, rest] or null.
function parse(buf) {
  if (buf.length < 2) return null;
  let len = buf[1] & 0x7f;
  let off = 2;
  if (len === 126) {
    if (buf.length < 4) return null;
    len = buf.readUInt16BE(2);
    off = 4;
  } else if (len === 127) {
    if (buf.length < 10) return null;
    len = Number(buf.readBigUInt64BE(2));
    off = 10;
  }
  if (buf.length < off + len) return null;
  return [buf[0] & 0x0f, buf.subarray(off, off + len), buf.subarray(off + len)];
}

const client = http2.connect(url);
client.on('error', (e) => {
  console.error('session error', e);
  process.exit(1);
});
client.on('remoteSettings', (settings) => {
  if (!settings.enableConnectProtocol) {
    console.log('no connect protocol');
    client.close();
    return;
  }
  const req = client.request({
    ':method': 'CONNECT',
    ':protocol': 'websocket',
    ':path': path,
    'sec-websocket-version': '13',
  });
  req.on('response', (headers) => {
    console.log(`status=${headers[':status']}`);
    if (headers[':status'] !== 200) {
      req.close();
      client.close();
      return;
    }
    let buf = Buffer.alloc(0);
    req.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const f = parse(buf);
        if (!f) break;
        const [op, payload, rest] = f;
        buf = rest;
        if (op === 1 && drain) {
          console.log(`text=${payload.toString()}`);
          console.log('open');
        } else if (op === 1) {
          console.log(`text=${payload.toString()}`);
          const reason = Buffer.from('node bye');
          const body = Buffer.alloc(2 + reason.length);
          body.writeUInt16BE(4002, 0);
          reason.copy(body, 2);
          req.write(frame(8, body));
        } else if (op === 8 && drain) {
          console.log(`close=${payload.readUInt16BE(0)} ${payload.subarray(2).toString()}`);
          req.write(frame(8, payload.subarray(0, 2)));
        } else if (op === 8) {
          console.log(`close=${payload.readUInt16BE(0)} ${payload.subarray(2).toString()}`);
          req.end();
          req.close();
          client.close();
        }
      }
    });
    if (drain) {
      req.on('end', () => {
        console.log('ended');
        req.close();
        client.close();
      });
    }
    req.write(frame(1, Buffer.from('hello from node')));
  });
  req.on('error', (e) => {
    console.error('stream error', e);
    process.exit(1);
  });
});
