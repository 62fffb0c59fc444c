// Memory per user session (`npm run bench:sessions`, after `npm run build`): what ONE hub instance holds
// per connected user of the reliable lane. It starts one `relayhub serve --backplane streams` (JWT auth)
// with `--expose-gc`, connects BENCH_SESSIONS_USERS (10,000) authenticated users to it, one raw-ws client
// each (bench/reliable-clients.mjs, 20 opening at once), sends every user one reliable message with the
// ReliableProducer (BENCH_SESSIONS_WINDOW, 1,000, in flight) and waits until every client acked it, so
// that each user's lane session exists and has delivered and acked. The hub's heap and RSS are read after
// a forced full GC (SIGUSR2 to the hub, which runs `gc()` and prints `process.memoryUsage()`): before
// any user, once the users are connected, and once every message was acked. Figures: heap and RSS per
// user session (acked minus empty, over the users), and per connection before the messages. The
// open-files limit of the hub must allow a descriptor per user (the script raises `ulimit -n` in the
// shell that execs it as far as the hard limit allows).
//
// Knobs: BENCH_SESSIONS_USERS, BENCH_SESSIONS_WINDOW, BENCH_SESSIONS_SETTLE_MS (2000: quiet time before
// each measurement), BENCH_REDIS_URL (redis://127.0.0.1:6379, loopback only). Ends with one line
// `RESULT <json>` (heapBytesPerSession, rssBytesPerSession, ...).
import './help.mjs';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { availableParallelism, loadavg } from 'node:os';
import { DEMO_HUB_PATH, ReliableProducer } from '../dist/index.js';
import {
  assertLoopback,
  cleanup,
  clockOffset,
  deletePrefix,
  deletePrefixSync,
  envNumber,
  fmt,
  forkClients,
  installExitHandlers,
  onCleanup,
  printWarnings,
  root,
  runPhase,
  sleep,
  track,
} from './reliable-lib.mjs';
import { GC_ON_SIGNAL_ARGS, gcMemoryOf, serveArgs, withoutServerSettings } from './server-env.mjs';

const users = Math.round(envNumber('BENCH_SESSIONS_USERS', 10_000));
const window = Math.round(envNumber('BENCH_SESSIONS_WINDOW', 1_000));
const settleMs = envNumber('BENCH_SESSIONS_SETTLE_MS', 2_000);
const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
assertLoopback('BENCH_REDIS_URL', redisUrl);

installExitHandlers(120_000 + users * 30);

const tag = randomBytes(4).toString('hex');
const prefix = `bench-sessions-${tag}`;
const secret = randomBytes(24).toString('hex');
const userPrefix = 'u';
onCleanup(
  () => deletePrefix(redisUrl, prefix),
  () => deletePrefixSync(redisUrl, prefix),
);

const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

/** The hub, under `ulimit -n` as high as the hard limit allows; resolves once it listens. */
function startHub() {
  const args = [
    ...GC_ON_SIGNAL_ARGS,
    ...serveArgs('streams', redisUrl, prefix, [
      '--instance-id',
      `${prefix}-hub`,
      '--jwt-secret',
      secret,
      '--max-connections-per-address',
      '0',
    ]),
  ];
  const quoted = args.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
  const want = users + 1_000;
  const script = `ulimit -n ${want} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec '${process.execPath}' ${quoted}`;
  const child = track(
    spawn('sh', ['-c', script], {
      cwd: root,
      env: { ...withoutServerSettings(process.env), LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
    'hub',
  );
  child.warnings = [];
  child.lines = [];
  let buffer = '';
  const onLine = (line) => {
    if (/"level":(40|50|60)|Error/.test(line) && child.warnings.length < 20) {
      child.warnings.push(line.slice(0, 400));
    }
    child.lines.push(line);
    child.emit('line', line);
  };
  const collect = (chunk) => {
    buffer += chunk.toString();
    const lines = buffer.split('\n');
    buffer = lines.pop() ?? '';
    for (const line of lines) onLine(line);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the hub did not start within 15 s`)), 15_000);
    child.once('exit', (code) => reject(new Error(`the hub exited (${code}): ${child.lines.join('\n')}`)));
    const onReady = (line) => {
      const match = /listening on port (\d+)/.exec(line);
      if (!match) return;
      child.off('line', onReady);
      clearTimeout(timer);
      child.port = Number(match[1]);
      resolve(child);
    };
    child.on('line', onReady);
  });
}

/** Forces a full GC in the hub and resolves with its `process.memoryUsage()` afterwards. */
function memoryAfterGc(hub) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the hub did not answer SIGUSR2 within 30 s')), 30_000);
    const onLine = (line) => {
      const memory = gcMemoryOf(line);
      if (!memory) return;
      hub.off('line', onLine);
      clearTimeout(timer);
      resolve(memory);
    };
    hub.on('line', onLine);
    hub.kill('SIGUSR2');
  });
}

console.log(
  `user-session memory benchmark: ${fmt(users)} authenticated users on one streams hub, one reliable ` +
    `message each (window ${fmt(window)}); node ${process.version}, ${availableParallelism()} cores, ` +
    `load average ${load()}`,
);

const result = {};
try {
  const hub = await startHub();
  await sleep(settleMs);
  const empty = await memoryAfterGc(hub);
  const clients = forkClients();
  const connected = await clients.request(
    {
      type: 'connect',
      servers: [`http://127.0.0.1:${hub.port}`],
      hubPath: DEMO_HUB_PATH,
      users,
      secret,
      userPrefix,
    },
    'connected',
    60_000 + users * 20,
  );
  if (connected.error) throw new Error(connected.error);
  console.log(`  ${fmt(users)} users connected in ${(connected.ms / 1_000).toFixed(1)} s`);
  await sleep(settleMs);
  const joined = await memoryAfterGc(hub);
  const joinedLoad = loadavg()[0];

  const clock = await clockOffset(clients);
  const producer = new ReliableProducer({ redisUrl, channelPrefix: prefix, hub: DEMO_HUB_PATH });
  let phase;
  try {
    phase = await runPhase(clients, {
      phase: 1,
      count: users,
      window,
      sendOne: (i, meta) => producer.send({ userId: `${userPrefix}${i}`, target: 'bench', args: [meta] }),
      offset: clock.offset,
      maxMs: 60_000 + users * 10,
    });
  } finally {
    await producer.close();
  }
  console.log(
    `  ${fmt(phase.received)}/${fmt(users)} messages acked (one per user) in ${phase.seconds.toFixed(2)} s, ` +
      `${phase.duplicates} duplicates, ${phase.errors} send errors${phase.firstError ? ` (${phase.firstError})` : ''}`,
  );
  // note: the acks reach the lane (and Redis) after the client's Completion; let them land.
  await sleep(settleMs);
  const acked = await memoryAfterGc(hub);
  const ackedLoad = loadavg()[0];
  await clients.request({ type: 'close' }, 'closed', 10_000).catch(() => undefined);

  const per = (after, key) => Math.round((after[key] - empty[key]) / users);
  Object.assign(result, {
    users,
    acked: phase.received,
    duplicates: phase.duplicates,
    sendErrors: phase.errors,
    heapBytesPerSession: per(acked, 'heapUsed'),
    rssBytesPerSession: per(acked, 'rss'),
    externalBytesPerSession: per(acked, 'external'),
    heapBytesPerConnection: per(joined, 'heapUsed'),
    rssBytesPerConnection: per(joined, 'rss'),
    heapUsedBytes: { empty: empty.heapUsed, connected: joined.heapUsed, acked: acked.heapUsed },
    rssBytes: { empty: empty.rss, connected: joined.rss, acked: acked.rss },
    connectSeconds: Number((connected.ms / 1_000).toFixed(2)),
    loadAverage: { connected: Number(joinedLoad.toFixed(2)), acked: Number(ackedLoad.toFixed(2)) },
  });
  const mib = (b) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  console.log(
    `  after a full GC: heap ${mib(empty.heapUsed)} empty -> ${mib(joined.heapUsed)} connected -> ` +
      `${mib(acked.heapUsed)} acked; RSS ${mib(empty.rss)} -> ${mib(joined.rss)} -> ${mib(acked.rss)}`,
  );
  console.log(
    `  per user session (connection + lane session, one message delivered and acked): ` +
      `${fmt(result.heapBytesPerSession)} B heap, ${fmt(result.rssBytesPerSession)} B RSS ` +
      `(connected, before any message: ${fmt(result.heapBytesPerConnection)} B heap, ` +
      `${fmt(result.rssBytesPerConnection)} B RSS); load average ${load()}`,
  );
  printWarnings();
} finally {
  await cleanup();
}
console.log(`RESULT ${JSON.stringify(result)}`);
