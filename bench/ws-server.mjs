// Reference server for the fan-out benchmark: one process, plain `ws`, no protocol and no backplane.
// Every text frame a client sends is written back to every connected client with one `ws.send` per
// client per message (the "plain ws.send loop"). With `--cork`, sends issued in one event-loop turn are
// instead joined per client and written once at the end of the turn (what relayhub's write path does).
// `node bench/ws-server.mjs --port 0 [--cork]` prints `ws listening on port N`.
import './help.mjs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { WebSocketServer } from 'ws';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    cork: { type: 'boolean', default: false },
  },
});

const http = createServer();
const wss = new WebSocketServer({ server: http, perMessageDeflate: false });
const clients = new Set();

/** Per client: the messages of this turn, joined with '\n' and written in one frame by `flush`. */
const pending = new Map();
let flushScheduled = false;
const flush = () => {
  flushScheduled = false;
  for (const [ws, parts] of pending) if (ws.readyState === ws.OPEN) ws.send(parts.join('\n'));
  pending.clear();
};

wss.on('connection', (ws) => {
  clients.add(ws);
  ws.on('close', () => clients.delete(ws));
  ws.on('error', () => undefined);
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const text = data.toString();
    for (const message of text.split('\n')) {
      if (!values.cork) {
        for (const client of clients) client.send(message);
        continue;
      }
      for (const client of clients) {
        const parts = pending.get(client);
        if (parts) parts.push(message);
        else pending.set(client, [message]);
      }
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flush);
      }
    }
  });
});

await new Promise((resolve) => http.listen(Number(values.port), values.host, resolve));
process.stdout.write(`ws listening on port ${http.address().port}\n`);

const stop = () => {
  for (const client of clients) client.terminate();
  wss.close();
  http.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
