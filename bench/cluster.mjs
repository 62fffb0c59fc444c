// Redis Cluster benchmark (`npm run bench:cluster`, or `node bench/cluster.mjs` after `npm run build`):
// group fan-out, broadcasts and reliable-lane acked/s on private Redis Clusters of 1, 3 and 6 shards
// started by this script (primaries only, free ports, temp dirs, killed at the end), all in the same run,
// with classic PUBLISH measured on the same clusters beside sharded SPUBLISH. `--help` prints the knobs.
// Prints a table and ends with one line `RESULT <json>`. See bench/README.md ("Redis Cluster").
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PubSubBackplane, ReliableProducer, StreamsBackplane } from '../dist/index.js';
import { freePort } from './redis-server.mjs';

const HELP = `Usage: node bench/cluster.mjs   (npm run bench:cluster builds first)

Starts private Redis Clusters of 1, 3 and 6 primaries (no replicas), all at once, and measures on each, in
rounds that visit them in a rotated order (the best round of each phase is kept), in one process:
  group     sends to many groups (sharded SPUBLISH), 2 subscribing instances, deliveries/s
  classic   the same with classic PUBLISH on the same cluster (pubsubMode 'classic')
  broadcast sends to all (16 partitions) from 4 publishing instances, deliveries/s
  reliable  reliable-lane sends -> (in-process) client ack through 2 instances, acked/s (replicas: 0)
Environment:
  BENCH_SHARDS=1,3,6        cluster sizes
  BENCH_SECONDS=3           length of each throughput phase
  BENCH_ROUNDS=2            rounds over every cluster size
  BENCH_GROUPS=1000         groups in the group phases
  BENCH_WINDOW=2000         sends in flight per phase
  BENCH_RELIABLE_USERS=200  users of the reliable phase
  BENCH_RELIABLE_MESSAGES=6000
Ends with one line: RESULT {"shards":{"1":{...},"3":{...},"6":{...}},"ratios":{...}}`;

if (process.argv.includes('--help') || process.argv.includes('-h')) {
  console.log(HELP);
  process.exit(0);
}

const run = promisify(execFile);
const num = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback);
const config = {
  shards: (process.env.BENCH_SHARDS ?? '1,3,6').split(',').map(Number),
  seconds: num('BENCH_SECONDS', 3),
  rounds: num('BENCH_ROUNDS', 2),
  groups: num('BENCH_GROUPS', 1_000),
  window: num('BENCH_WINDOW', 2_000),
  reliableUsers: num('BENCH_RELIABLE_USERS', 200),
  reliableMessages: num('BENCH_RELIABLE_MESSAGES', 6_000),
};
const HUB = '/hubs/bench';
const FRAME = `{"type":1,"target":"message","arguments":["bench","${'x'.repeat(64)}"]}\x1e`;

// ---- a private cluster (primaries only) ----

const children = new Set();
const dirs = new Set();
function killAll() {
  for (const child of children) child.kill('SIGKILL');
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));
setTimeout(() => {
  console.error('bench:cluster: took longer than 300 s; stopping');
  process.exit(1);
}, 300_000).unref();

async function startCluster(primaries) {
  const dir = mkdtempSync(join(tmpdir(), 'relayhub-bench-cluster-'));
  dirs.add(dir);
  const ports = [];
  while (ports.length < primaries) {
    const port = await freePort();
    if (port < 55_000 && !ports.includes(port)) ports.push(port);
  }
  const nodes = ports.map((port) => {
    mkdirSync(join(dir, String(port)));
    const child = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        // note: a lone node never learns its own address from a peer; announce it.
        '--cluster-announce-ip',
        '127.0.0.1',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        'nodes.conf',
        '--cluster-node-timeout',
        '2000',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        join(dir, String(port)),
      ],
      { stdio: 'ignore' },
    );
    children.add(child);
    return { port, child };
  });
  for (const { port } of nodes) await until(() => ping(port));
  if (primaries === 1) {
    // note: `--cluster create` wants 3 nodes; one node takes every slot itself.
    await run('redis-cli', ['-p', String(ports[0]), 'CLUSTER', 'ADDSLOTSRANGE', '0', '16383']);
  } else {
    await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-yes']);
  }
  await until(async () => {
    for (const port of ports) {
      const { stdout } = await run('redis-cli', ['-p', String(port), 'CLUSTER', 'INFO']);
      if (!stdout.includes('cluster_state:ok')) return false;
    }
    return true;
  });
  return {
    urls: ports.map((p) => `redis://127.0.0.1:${p}`),
    async stop() {
      for (const { child } of nodes) {
        child.kill('SIGKILL');
        children.delete(child);
      }
      rmSync(dir, { recursive: true, force: true });
      dirs.delete(dir);
    },
  };
}

async function ping(port) {
  try {
    const { stdout } = await run('redis-cli', ['-p', String(port), 'PING']);
    return stdout.trim() === 'PONG';
  } catch {
    return false;
  }
}

async function until(condition, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('bench:cluster: the cluster did not come up');
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---- phases ----

/** A LocalHub that counts what reaches it. */
function countingHub(counter) {
  return {
    deliver: () => void counter.n++,
    addToGroup: async () => false,
    removeFromGroup: async () => false,
    invokeLocal: () => undefined,
  };
}

/** Keeps `window` publishes in flight for `seconds`, then waits for the stragglers; returns deliveries/s. */
async function saturate(publish, counter, expectedPerSend) {
  let inFlight = 0;
  let sent = 0;
  let failed = 0;
  let stop = false;
  const start = Date.now();
  await new Promise((resolve) => {
    const pump = () => {
      while (!stop && inFlight < config.window) {
        inFlight++;
        sent++;
        publish(sent)
          .catch(() => failed++)
          .finally(() => {
            inFlight--;
            if (stop && inFlight === 0) resolve();
            else setImmediate(pump);
          });
      }
    };
    pump();
    setTimeout(() => (stop = true), config.seconds * 1_000);
  });
  const expected = (sent - failed) * expectedPerSend;
  await untilQuiet(() => counter.n >= expected, 5_000);
  const seconds = (Date.now() - start) / 1_000;
  return { perSecond: Math.round(counter.n / seconds), sent, failed, delivered: counter.n, expected };
}

async function untilQuiet(condition, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
}

async function groupPhase(urls, mode) {
  const prefix = `bench-cl-${randomBytes(3).toString('hex')}`;
  const options = { redis: { cluster: urls }, channelPrefix: prefix, pubsubMode: mode };
  const counter = { n: 0 };
  const subscribers = [new PubSubBackplane(options), new PubSubBackplane(options)];
  const publishers = [new PubSubBackplane(options), new PubSubBackplane(options)];
  const groups = Array.from({ length: config.groups }, (_, i) => `g${i}`);
  const subChannels = await Promise.all(subscribers.map((b) => b.open(HUB, countingHub(counter))));
  for (const channel of subChannels) await Promise.all(groups.map((g) => channel.follow('group', g)));
  const pubChannels = await Promise.all(publishers.map((b) => b.open(HUB, countingHub({ n: 0 }))));
  const result = await saturate(
    (i) => pubChannels[i % 2].publish({ kind: 'groups', names: [groups[i % groups.length]] }, FRAME),
    counter,
    subscribers.length,
  );
  await Promise.all([...subscribers, ...publishers].map((b) => b.close()));
  return result;
}

async function broadcastPhase(urls) {
  const prefix = `bench-cl-${randomBytes(3).toString('hex')}`;
  const options = { redis: { cluster: urls }, channelPrefix: prefix };
  const counter = { n: 0 };
  const subscribers = [new PubSubBackplane(options), new PubSubBackplane(options)];
  const publishers = Array.from(
    { length: 4 },
    (_, i) => new PubSubBackplane({ ...options, instanceId: `pub${i}` }),
  );
  await Promise.all(subscribers.map((b) => b.open(HUB, countingHub(counter))));
  const pubChannels = await Promise.all(publishers.map((b) => b.open(HUB, countingHub({ n: 0 }))));
  const result = await saturate(
    (i) => pubChannels[i % pubChannels.length].publish({ kind: 'all' }, FRAME),
    counter,
    subscribers.length,
  );
  await Promise.all([...subscribers, ...publishers].map((b) => b.close()));
  return result;
}

async function reliablePhase(urls) {
  const prefix = `bench-cl-${randomBytes(3).toString('hex')}`;
  const redis = { cluster: urls };
  const acked = { n: 0 };
  const users = Array.from({ length: config.reliableUsers }, (_, i) => `u${i}`);
  const recipient = { invoke: async () => void acked.n++ || true, write: () => undefined };
  const instances = [0, 1].map(
    (i) =>
      new StreamsBackplane({
        redis,
        channelPrefix: prefix,
        instanceId: `bench-${i}`,
        reliable: { replicas: 0 },
      }),
  );
  const lanes = await Promise.all(
    instances.map((b, i) =>
      b.openReliable(HUB, {
        connectionsOf: (user) => (Number(user.slice(1)) % 2 === i ? [recipient] : []),
      }),
    ),
  );
  await Promise.all(users.map((user, i) => lanes[i % 2].userArrived(user)));
  const producer = new ReliableProducer({ redis, channelPrefix: prefix, hub: HUB, replicas: 0 });
  const start = Date.now();
  let next = 0;
  let failed = 0;
  const workers = Array.from({ length: 64 }, async () => {
    while (next < config.reliableMessages) {
      const i = next++;
      await producer.send({ userId: users[i % users.length], target: 'note', args: [i] }).catch((error) => {
        if (failed++ === 0) console.error(`bench:cluster: a reliable send failed: ${error.message}`);
      });
    }
  });
  await Promise.all(workers);
  const expected = config.reliableMessages - failed;
  await untilQuiet(() => acked.n >= expected, 20_000);
  const seconds = (Date.now() - start) / 1_000;
  await producer.close();
  await Promise.all(instances.map((b) => b.close()));
  return { perSecond: Math.round(acked.n / seconds), sent: config.reliableMessages, failed, acked: acked.n };
}

// ---- the run ----

const results = {};
console.log(
  `bench:cluster: shards ${config.shards.join(', ')}; ${config.rounds} rounds, ${config.seconds} s per phase; ` +
    `${config.groups} groups; window ${config.window}; one load-generating process (CPU is shared with the Redis nodes)`,
);
// note: every cluster is up for the whole run, and each round visits them in a rotated order, so that a
// burst of outside load does not fall on one cluster size only; the best round of each phase is kept.
const clusters = new Map();
try {
  for (const shards of config.shards) clusters.set(shards, await startCluster(shards));
  for (let round = 0; round < config.rounds; round++) {
    const order = config.shards.map((_, i) => config.shards[(i + round) % config.shards.length]);
    for (const shards of order) {
      const urls = clusters.get(shards).urls;
      const measured = {
        group: await groupPhase(urls, 'sharded'),
        classic: await groupPhase(urls, 'classic'),
        broadcast: await broadcastPhase(urls),
        reliable: await reliablePhase(urls),
      };
      const best = (results[shards] ??= measured);
      for (const [phase, value] of Object.entries(measured)) {
        if (value.perSecond > best[phase].perSecond) best[phase] = value;
      }
      console.log(
        `round ${round + 1}, ${shards} shard(s): group ${measured.group.perSecond}/s (sharded) vs ` +
          `${measured.classic.perSecond}/s (classic PUBLISH); broadcast ${measured.broadcast.perSecond}/s; ` +
          `reliable ${measured.reliable.perSecond} acked/s`,
      );
    }
  }
} finally {
  for (const cluster of clusters.values()) await cluster.stop();
}

const base = results[config.shards[0]];
const ratios = {};
for (const shards of config.shards) {
  const r = results[shards];
  ratios[shards] = {
    group: +(r.group.perSecond / base.group.perSecond).toFixed(2),
    classic: +(r.classic.perSecond / base.classic.perSecond).toFixed(2),
    broadcast: +(r.broadcast.perSecond / base.broadcast.perSecond).toFixed(2),
    reliable: +(r.reliable.perSecond / base.reliable.perSecond).toFixed(2),
    shardedOverClassic: +(r.group.perSecond / r.classic.perSecond).toFixed(2),
  };
}
console.log(
  '\nshards | group/s (sharded) | group/s (classic) | broadcast deliveries/s | reliable acked/s | vs 1 shard (group, classic, broadcast, reliable)',
);
for (const shards of config.shards) {
  const r = results[shards];
  const x = ratios[shards];
  console.log(
    `${String(shards).padStart(6)} | ${String(r.group.perSecond).padStart(17)} | ${String(r.classic.perSecond).padStart(17)} | ` +
      `${String(r.broadcast.perSecond).padStart(22)} | ${String(r.reliable.perSecond).padStart(16)} | ` +
      `${x.group}x, ${x.classic}x, ${x.broadcast}x, ${x.reliable}x`,
  );
}
const summary = {};
for (const shards of config.shards) {
  const r = results[shards];
  summary[shards] = {
    groupPerSecond: r.group.perSecond,
    classicGroupPerSecond: r.classic.perSecond,
    broadcastPerSecond: r.broadcast.perSecond,
    reliableAckedPerSecond: r.reliable.perSecond,
    failedSends: r.group.failed + r.classic.failed + r.broadcast.failed + r.reliable.failed,
  };
}
console.log(`RESULT ${JSON.stringify({ shards: summary, ratios, config })}`);
process.exit(0);
