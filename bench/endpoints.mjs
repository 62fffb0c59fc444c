// Broadcast fan-out through several Redis endpoints, against one Redis in the same run.
// Two private redis-servers (started here on free ports, nothing persisted, stopped at the end) and two hub
// servers in this process, each holding half of the WebSocket clients (official @microsoft/signalr,
// skipNegotiation). Hub A broadcasts --messages messages in bursts of 50; a run ends when every client
// has every message. Baseline: both hubs on one PubSubBackplane (Redis a). Case: both on an
// EndpointsBackplane over a and b, hub A primary a / secondary b, hub B the reverse, so that each broadcast
// is published on both and every copy after the first is dropped by message id. --rounds of each, the
// order alternating per round; figures: deliveries per second (median of the rounds) and the ratio
// case / baseline. A client that receives a message twice fails the run.
// Usage: node bench/endpoints.mjs [--clients 200] [--messages 1000] [--rounds 3]   (needs `npm run build`)
import './help.mjs';
import { parseArgs } from 'node:util';
import { HttpTransportType, HubConnectionBuilder, LogLevel } from '@microsoft/signalr';
import { pino } from 'pino';
import { EndpointsBackplane, HubServer, PubSubBackplane } from '../dist/index.js';
import { startRedis } from './redis-server.mjs';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '200' },
    messages: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '3' },
  },
});
const CLIENTS = Number(values.clients);
const MESSAGES = Number(values.messages);
const ROUNDS = Number(values.rounds);
const HUB = '/hubs/bench';
const logger = pino({ level: 'silent' });

async function startHub(backplane) {
  const server = new HubServer({ backplane, logger, metrics: false, maxConnectionsPerAddress: 0 });
  server.mapHub(HUB, { methods: {} });
  const { port } = await server.listen(0, '127.0.0.1');
  return { server, url: `http://127.0.0.1:${port}${HUB}` };
}

async function connectClients(urls) {
  const counts = new Array(CLIENTS).fill(0);
  const connections = [];
  for (let i = 0; i < CLIENTS; i += 20) {
    const batch = [];
    for (let j = i; j < Math.min(CLIENTS, i + 20); j++) {
      const connection = new HubConnectionBuilder()
        .withUrl(urls[j % urls.length], {
          skipNegotiation: true,
          transport: HttpTransportType.WebSockets,
          logger: LogLevel.None,
        })
        .configureLogging(LogLevel.None)
        .build();
      connection.on('m', () => counts[j]++);
      connections.push(connection);
      batch.push(connection.start());
    }
    await Promise.all(batch);
  }
  return { counts, stop: () => Promise.all(connections.map((c) => c.stop())) };
}

/** One run: hub A broadcasts; resolves with deliveries per second once every client has every message. */
async function run(backplanes) {
  const hubs = [await startHub(backplanes[0]), await startHub(backplanes[1])];
  const clients = await connectClients(hubs.map((h) => h.url));
  const all = hubs[0].server.hub(HUB).clients.all;
  await all.send('m', 'warm-up');
  await waitUntil(() => clients.counts.every((n) => n >= 1));
  const started = process.hrtime.bigint();
  for (let i = 0; i < MESSAGES; i += 50) {
    const burst = [];
    for (let j = i; j < Math.min(MESSAGES, i + 50); j++) burst.push(all.send('m', `message ${j}`));
    await Promise.all(burst);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await waitUntil(() => clients.counts.every((n) => n >= MESSAGES + 1));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const extra = clients.counts.filter((n) => n > MESSAGES + 1).length;
  if (extra > 0) throw new Error(`${extra} clients received a message more than once`);
  await clients.stop();
  await Promise.all(hubs.map((h) => h.server.close()));
  return Math.round((MESSAGES * CLIENTS) / seconds);
}

async function waitUntil(condition, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('The run did not complete in time.');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];

const [a, b] = [await startRedis(), await startRedis()];
const baseline = [];
const endpoints = [];
try {
  for (let round = 1; round <= ROUNDS; round++) {
    const prefix = `bench-endpoints-${process.pid}-${round}`;
    const typed = (primary) => [
      { name: 'a', redis: { url: a.url }, type: primary === 'a' ? 'primary' : 'secondary' },
      { name: 'b', redis: { url: b.url }, type: primary === 'b' ? 'primary' : 'secondary' },
    ];
    const one = () =>
      run([0, 1].map(() => new PubSubBackplane({ redisUrl: a.url, channelPrefix: `${prefix}-one` })));
    const two = () =>
      run(
        ['a', 'b'].map(
          (primary) => new EndpointsBackplane({ endpoints: typed(primary), channelPrefix: `${prefix}-two` }),
        ),
      );
    // note: the order alternates per round, so that warm-up favours neither
    if (round % 2 === 1) {
      baseline.push(await one());
      endpoints.push(await two());
    } else {
      endpoints.push(await two());
      baseline.push(await one());
    }
    console.log(
      `round ${round}: one Redis ${baseline.at(-1).toLocaleString('en-US')} deliveries/s, two endpoints ${endpoints.at(-1).toLocaleString('en-US')} deliveries/s`,
    );
  }
} finally {
  a.stop();
  b.stop();
}
const one = median(baseline);
const two = median(endpoints);
console.log(
  `${CLIENTS} clients, ${MESSAGES} broadcasts: one Redis ${one.toLocaleString('en-US')}/s, two endpoints ${two.toLocaleString('en-US')}/s, ratio ${(two / one).toFixed(2)}`,
);
console.log(
  `RESULT ${JSON.stringify({ clients: CLIENTS, messages: MESSAGES, rounds: ROUNDS, oneRedisPerSec: one, endpointsPerSec: two, ratio: +(two / one).toFixed(2) })}`,
);
process.exit(0);
