// Baseline server for the fan-out benchmark: socket.io with @socket.io/redis-adapter (ioredis clients).
// `node bench/socketio-server.mjs --port 0 --redis-url redis://127.0.0.1:6379 --key PREFIX`
// prints `socketio listening on port N`. A client's `broadcast(text)` event becomes
// `io.emit('message', socket.id, text)` to every client on every server sharing the Redis key prefix,
// the same audience as relayhub's `SendToAll(text)` (clients receive `message(from, text)`).
import './help.mjs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { Server } from 'socket.io';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    'redis-url': { type: 'string', default: 'redis://127.0.0.1:6379' },
    key: { type: 'string', default: 'socket.io' },
  },
});

const pub = new Redis(values['redis-url'], { lazyConnect: true });
const sub = pub.duplicate();
await Promise.all([pub.connect(), sub.connect()]);

const http = createServer();
const io = new Server(http, {
  transports: ['websocket'],
  serveClient: false,
  adapter: createAdapter(pub, sub, { key: values.key }),
});

io.on('connection', (socket) => {
  socket.on('broadcast', (text) => io.emit('message', socket.id, text));
});

// note: the adapter subscribes (PSUBSCRIBE, SUBSCRIBE) without waiting; Redis answers one connection's
// commands in order, so once this barrier is acknowledged, the adapter's subscriptions are in place too.
await sub.psubscribe('relayhub-bench-barrier');
await sub.punsubscribe('relayhub-bench-barrier');

await new Promise((resolve) => http.listen(Number(values.port), values.host, resolve));
process.stdout.write(`socketio listening on port ${http.address().port}\n`);

let stopping = false;
const stop = () => {
  if (stopping) process.exit(1);
  stopping = true;
  io.close();
  Promise.allSettled([pub.quit(), sub.quit()]).then(() => process.exit(0));
  setTimeout(() => process.exit(0), 1_000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
