// Client process of the idle-connections benchmark, forked by bench/connections.mjs (IPC). On `open` it
// opens `count` lightweight raw WebSocket clients against one server, `concurrency` at a time, and keeps
// them idle the way each protocol's own client would: relayhub clients negotiate
// (`POST <hub>/negotiate?negotiateVersion=1`), open the WebSocket with `id=<connectionToken>`, send the
// JSON handshake and then a ping every 15 s (the official client's keep-alive interval); socket.io
// clients join `/` and answer each ping `2` with `3`; plain `ws` clients only stay open. On `close` it
// terminates them all. The official clients are too heavy to run 20,000 of them.
import './help.mjs';
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';

const RS = '\u001e';
const HANDSHAKE = JSON.stringify({ protocol: 'json', version: 1 }) + RS;
const PING = JSON.stringify({ type: 6 }) + RS;
const KEEP_ALIVE_MS = 15_000;

const send = (message) => process.send?.(message);

/** The open sockets, with when each last sent a keep-alive. */
const sockets = [];

/** POST negotiate on a keep-alive agent; resolves with the connection token. */
function negotiate(agent, baseUrl, hubPath) {
  return new Promise((resolve, reject) => {
    const req = request(
      `${baseUrl}${hubPath}/negotiate?negotiateVersion=1`,
      { method: 'POST', agent, headers: { 'Content-Length': '0' } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (body += chunk));
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new Error(`negotiate answered ${res.statusCode}`));
          try {
            resolve(JSON.parse(body).connectionToken);
          } catch (error) {
            reject(error);
          }
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Opens one socket and resolves once the protocol says it is connected (handshake, Socket.IO CONNECT). */
function openSocket(url, system) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`timed out opening ${url}`));
    }, 30_000);
    const fail = (error) => {
      clearTimeout(timer);
      reject(error);
    };
    ws.on('error', fail);
    let open = false;
    const opened = () => {
      open = true;
      clearTimeout(timer);
      ws.off('error', fail);
      ws.on('error', () => undefined);
      resolve(ws);
    };
    ws.on('message', (data) => {
      const text = data.toString();
      if (system === 'relayhub') {
        if (open) return;
        if (text.startsWith('{}')) return opened();
        return fail(new Error(`handshake refused: ${text}`));
      }
      if (system === 'socketio') {
        if (text === '2') return ws.send('3');
        if (text.startsWith('0{')) return ws.send('40');
        if (!open && text.startsWith('40')) return opened();
        if (text.startsWith('44')) return fail(new Error(`connect refused: ${text}`));
      }
    });
    ws.on('open', () => {
      if (system === 'relayhub') ws.send(HANDSHAKE);
      else if (system === 'ws') opened();
    });
  });
}

async function openOne(agent, { system, baseUrl, hubPath }) {
  const ws = baseUrl.replace(/^http/, 'ws');
  switch (system) {
    case 'relayhub': {
      const token = await negotiate(agent, baseUrl, hubPath);
      return openSocket(`${ws}${hubPath}?id=${encodeURIComponent(token)}`, system);
    }
    case 'socketio':
      return openSocket(`${ws}/socket.io/?EIO=4&transport=websocket`, system);
    default:
      return openSocket(ws, system);
  }
}

async function openAll(spec) {
  const agent = new Agent({ keepAlive: true, maxSockets: spec.concurrency });
  let next = 0;
  let failed = 0;
  let firstError;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(spec.concurrency, spec.count) }, async () => {
      while (next < spec.count) {
        next++;
        // note: up to 3 attempts, as a client would retry (a keep-alive socket the server closed meanwhile).
        for (let attempt = 1; ; attempt++) {
          try {
            const ws = await openOne(agent, spec);
            sockets.push({ ws, pingedAt: performance.now() });
            break;
          } catch (error) {
            if (attempt < 3) continue;
            failed++;
            firstError ??= error instanceof Error ? error.message : String(error);
            break;
          }
        }
      }
    }),
  );
  agent.destroy();
  return { opened: spec.count - failed, failed, firstError, ms: performance.now() - t0 };
}

/** relayhub's keep-alive: each client pings every 15 s, spread over the interval by a 250 ms sweep. */
let keepAlive;
function startKeepAlive() {
  keepAlive = setInterval(() => {
    const now = performance.now();
    for (const socket of sockets) {
      if (now - socket.pingedAt < KEEP_ALIVE_MS) continue;
      socket.pingedAt = now;
      if (socket.ws.readyState === WebSocket.OPEN) socket.ws.send(PING);
    }
  }, 250);
}

process.on('message', (message) => {
  if (message?.type === 'open') {
    if (message.spec.system === 'relayhub' && !keepAlive) startKeepAlive();
    openAll(message.spec).then(
      (result) => send({ type: 'opened', ...result }),
      (error) => send({ type: 'opened', opened: 0, failed: message.spec.count, firstError: String(error) }),
    );
  } else if (message?.type === 'count') {
    send({ type: 'count', open: sockets.filter((s) => s.ws.readyState === WebSocket.OPEN).length });
  } else if (message?.type === 'close') {
    clearInterval(keepAlive);
    for (const socket of sockets) socket.ws.terminate();
    sockets.length = 0;
    send({ type: 'closed' }, () => process.exit(0));
  }
});
process.on('disconnect', () => process.exit(0));
