// Reliable-lane benchmark (`node bench/reliable.mjs`, after `npm run build`): end to end, a producer's
// send to the client's ack, through 2 `relayhub serve --backplane streams` processes, against the raw
// ioredis ceiling XADD -> XREADGROUP -> XACK on the same Redis, with the same message count and window.
// Then, relayhub only: one user alone (in order), a paced phase (BENCH_RELIABLE_RATE msg/s, p99), a
// recovery phase (hub-1 SIGSTOPped 5 s while BENCH_RELIABLE_RECOVERY messages queue for its users; the
// time from SIGCONT to the last receipt), Redis bytes per message and per idle user (MEMORY USAGE), and
// the hubs' heap per connected user. Ends with one line `RESULT <json>` (ratioToRaw, recoveryMs, ...).
// See bench/RELIABLE.md for what is measured and the knobs.
import './help.mjs';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import { DEMO_HUB_PATH, ReliableProducer } from '../dist/index.js';
import { ACK_SCRIPT } from '../dist/backplane/streams/scripts.js';
import {
  assertLoopback,
  cleanup,
  clockOffset,
  commandStats,
  cpuSampler,
  deletePrefix,
  deletePrefixSync,
  diffStats,
  envNumber,
  fmt,
  forkClients,
  installExitHandlers,
  ms,
  onCleanup,
  printWarnings,
  redisClient,
  redisPid,
  runPhase,
  now,
  startHub,
  table,
  ticksPerSecond,
  waitForQuiet,
} from './reliable-lib.mjs';

const config = {
  users: Math.round(envNumber('BENCH_RELIABLE_USERS', 100)),
  messages: Math.round(envNumber('BENCH_RELIABLE_MESSAGES', 60_000)),
  window: Math.round(envNumber('BENCH_RELIABLE_WINDOW', 1_000)),
  warmup: Math.round(envNumber('BENCH_RELIABLE_WARMUP', 30_000)),
  lightWindow: Math.round(envNumber('BENCH_RELIABLE_LIGHT_WINDOW', 10)),
  lightMessages: Math.round(envNumber('BENCH_RELIABLE_LIGHT_MESSAGES', 2_000)),
  quietWaitMs: envNumber('BENCH_QUIET_WAIT_MS', 3_000),
  startQuietMs: envNumber('BENCH_START_QUIET_MS', 15_000),
  maxMs: envNumber('BENCH_MAX_MS', 180_000),
  oneUserMessages: Math.round(envNumber('BENCH_RELIABLE_ONE_USER', 10_000)),
  rate: Math.round(envNumber('BENCH_RELIABLE_RATE', 5_000)),
  rateSeconds: envNumber('BENCH_RELIABLE_RATE_SECONDS', 3),
  recovery: Math.round(envNumber('BENCH_RELIABLE_RECOVERY', 5_000)),
  pauseMs: envNumber('BENCH_RELIABLE_PAUSE_MS', 5_000),
  memoryMessages: Math.round(envNumber('BENCH_RELIABLE_MEMORY_MESSAGES', 10_000)),
};
const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const databaseUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
assertLoopback('BENCH_REDIS_URL', redisUrl);
assertLoopback('BENCH_DATABASE_URL', databaseUrl);

installExitHandlers(config.maxMs);

const tag = randomBytes(4).toString('hex');
const prefix = `bench-rl-${tag}`;
const secret = randomBytes(24).toString('hex');
const userPrefix = 'u';
const user = (i) => `${userPrefix}${i % config.users}`;
const hz = ticksPerSecond();

onCleanup(
  () => deletePrefix(redisUrl, prefix),
  () => deletePrefixSync(redisUrl, prefix),
);

console.log(
  `reliable-lane benchmark: ${config.users} users (one client each), ${fmt(config.messages)} messages ` +
    `(+${fmt(config.warmup)} warm-up) per system, window ${fmt(config.window)} in flight; ` +
    `node ${process.version}, ${availableParallelism()} cores`,
);

// note: the machine may be shared (tests, other benchmarks): wait a little for it to calm down first.
const atStart = await waitForQuiet(hz, config.startQuietMs);
console.log(
  `  machine ${atStart.busy}% busy at start (waited ${atStart.waited.toFixed(1)} s; 100 = one core of ` +
    `${availableParallelism()})`,
);

const admin = redisClient(redisUrl);
const results = {};
try {
  const [hub1, hub2] = await Promise.all(
    [1, 2].map((n) =>
      startHub({ name: `hub-${n}`, redisUrl, prefix, secret, instanceId: `${prefix}-hub-${n}`, databaseUrl }),
    ),
  );
  const heapEmpty = await Promise.all([hub1, hub2].map((h) => hubMemory(h.port)));
  const clients = forkClients();
  const connected = await clients.request(
    {
      type: 'connect',
      servers: [hub1, hub2].map((h) => `http://127.0.0.1:${h.port}`),
      hubPath: DEMO_HUB_PATH,
      users: config.users,
      secret,
      userPrefix,
    },
    'connected',
  );
  if (connected.error) throw new Error(connected.error);
  const clock = await clockOffset(clients);
  console.log(
    `  ${config.users} clients connected in ${Math.round(connected.ms)} ms (alternating between the 2 hubs); ` +
      `load generator clock offset ${clock.offset.toFixed(3)} ms (IPC round trip ${clock.rtt.toFixed(3)} ms)`,
  );
  const pids = {
    'hub-1': hub1.pid,
    'hub-2': hub2.pid,
    clients: clients.child.pid,
    bench: process.pid,
    redis: await redisPid(admin),
  };

  /**
   * Warm-up; then the saturation phase (`messages`, window `window`), with CPU and Redis command counts;
   * then the light phase (`lightMessages`, window `lightWindow`: next to no queueing, the latency of one
   * message through an idle path).
   */
  const measure = async (name, sendOne, firstPhase) => {
    const warm = await runPhase(clients, {
      phase: firstPhase,
      count: config.warmup,
      window: config.window,
      sendOne,
      offset: clock.offset,
    });
    const { busy, waited } = await waitForQuiet(hz, config.quietWaitMs);
    console.log(
      `  ${name}: warm-up ${fmt(warm.received)}/${fmt(config.warmup)} acked; machine ${busy}% busy before ` +
        `the measured phases (waited ${waited.toFixed(1)} s${busy > 30 ? ': figures distorted' : ''})`,
    );
    const statsBefore = await commandStats(admin);
    const cpu = cpuSampler(pids, hz);
    const result = await runPhase(clients, {
      phase: firstPhase + 1,
      count: config.messages,
      window: config.window,
      sendOne,
      offset: clock.offset,
    });
    result.cpu = cpu();
    result.commands = diffStats(statsBefore, await commandStats(admin));
    result.busyBefore = busy;
    const lightStats = await commandStats(admin);
    const lightCpu = cpuSampler(pids, hz);
    result.light = await runPhase(clients, {
      phase: firstPhase + 2,
      count: config.lightMessages,
      window: config.lightWindow,
      sendOne,
      offset: clock.offset,
    });
    result.light.cpu = lightCpu();
    result.light.commands = diffStats(lightStats, await commandStats(admin));
    const line = (r, count, window) =>
      `window ${fmt(window)}: ${fmt(r.received)}/${fmt(count)} acked in ${r.seconds.toFixed(2)} s, ` +
      `${fmt(r.perSecond)}/s, p50 ${ms(r.p50)}, p99 ${ms(r.p99)}, max ${ms(r.max)}, ${r.duplicates} ` +
      `duplicates, ${r.errors} send errors${r.firstError ? ` (${r.firstError})` : ''}`;
    console.log(`  ${name}: ${line(result, config.messages, config.window)}`);
    console.log(`  ${name}: ${line(result.light, config.lightMessages, config.lightWindow)}`);
    return result;
  };

  // ---- relayhub: ReliableProducer -> SEND script -> delivery stream -> hub -> client -> Completion ----
  const producer = new ReliableProducer({ redisUrl, channelPrefix: prefix, hub: DEMO_HUB_PATH });
  await delay(1_000);
  const heapBefore = await Promise.all([hub1, hub2].map((h) => hubMemory(h.port)));
  try {
    results.relayhub = await measure(
      'relayhub',
      (i, meta) => producer.send({ userId: user(i), target: 'bench', args: [meta] }),
      1,
    );
    results.extra = await extraPhases(producer, hub1, hub2, clients, clock.offset, pids);
  } finally {
    await producer.close();
  }
  const heapAfter = await Promise.all([hub1, hub2].map((h) => hubMemory(h.port)));
  results.heap = { empty: heapEmpty, before: heapBefore, after: heapAfter };
  // note: every ack the clients sent must have reached Redis (the acked offsets of the users).
  const ackedKeys = Array.from(
    { length: config.users },
    (_, i) => `${prefix}:${DEMO_HUB_PATH}:rl:{u:${user(i)}}:acked`,
  );
  const seqKeys = ackedKeys.map((k) => k.replace(/:acked$/, ':seq'));
  const [acked, seqs] = await Promise.all([admin.mget(...ackedKeys), admin.mget(...seqKeys)]);
  const sum = (values) => values.reduce((total, v) => total + Number(String(v ?? '0').split(' ')[0]), 0);
  results.relayhub.serverAcked = sum(acked);
  results.relayhub.serverSent = sum(seqs);
  console.log(
    `  relayhub: Redis holds ${fmt(results.relayhub.serverSent)} sent and ${fmt(results.relayhub.serverAcked)} ` +
      `acked offsets over the users (warm-up included)`,
  );

  // ---- raw ceiling: XADD (one stream per user) -> XREADGROUP BLOCK (one reader, all streams) -> XACK ----
  const streams = Array.from({ length: config.users }, (_, i) => `${prefix}:raw:{u:${user(i)}}`);
  const setup = admin.pipeline();
  for (const stream of streams) setup.xgroup('CREATE', stream, 'bench', '$', 'MKSTREAM');
  await setup.exec();
  const started = await clients.request(
    { type: 'raw-start', redisUrl, streams, group: 'bench', count: 100 },
    'raw-started',
  );
  if (started.error) throw new Error(started.error);
  const rawProducer = redisClient(redisUrl);
  try {
    results.raw = await measure(
      'raw ioredis',
      (i, meta) => rawProducer.xadd(streams[i % config.users], '*', 'a', JSON.stringify([meta])),
      4,
    );
  } finally {
    rawProducer.disconnect();
    await clients.request({ type: 'raw-stop' }, 'raw-stopped');
  }
  await clients.request({ type: 'close' }, 'closed', 5_000).catch(() => undefined);
  printWarnings();
} finally {
  admin.disconnect();
  await cleanup();
}

/** A hub's heap and RSS from its /metrics (prom-client default metrics). */
async function hubMemory(port) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const value = (name) =>
    Number(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { heapUsed: value('nodejs_heap_size_used_bytes'), rss: value('process_resident_memory_bytes') };
}

/**
 * Sends `sendOne(i, meta)` for message i at `start + i / rate` (open loop); meta.t is the real send time.
 * One timer releases whatever is due (not a timer per message), and the clock starts at its first tick:
 * the phase queues all its messages in one synchronous loop (~100 ms for 15,000), and a message stamped
 * during that loop would wait for its end before the producer's batch could leave.
 */
function paced(rate, sendOne) {
  const queue = [];
  let next = 0;
  let start;
  let timer;
  const dueAt = (i) => start + (i / rate) * 1_000;
  const tick = () => {
    timer = undefined;
    start ??= now();
    while (next < queue.length && dueAt(queue[next].i) <= now()) {
      const item = queue[next];
      queue[next++] = undefined;
      item.meta.t = now();
      sendOne(item.i, item.meta).then(item.resolve, item.reject);
    }
    if (next < queue.length) timer = setTimeout(tick, Math.max(0, dueAt(queue[next].i) - now()));
  };
  return (i, meta) =>
    new Promise((resolve, reject) => {
      queue.push({ i, meta, resolve, reject });
      timer ??= setTimeout(tick, 0);
    });
}

/** Receipts out of send order (for one user: out of offset order). */
function inversions(recv) {
  let count = 0;
  for (let i = 1; i < recv.length; i++) if (recv[i] !== 0 && recv[i] < recv[i - 1]) count++;
  return count;
}

/** Phases on the relayhub lane alone: one user, paced, recovery after a pause, and Redis memory. */
async function extraPhases(producer, hub1, hub2, clients, offset, pids) {
  const send = (userId, meta) => producer.send({ userId, target: 'bench', args: [meta] });
  const out = {};
  await waitForQuiet(hz, config.quietWaitMs);
  // one user alone: every message to u0, the same window in flight
  const one = await runPhase(clients, {
    phase: 10,
    count: config.oneUserMessages,
    window: config.window,
    sendOne: (i, meta) => send(user(0), meta),
    offset,
  });
  out.oneUser = { ...pick(one), outOfOrder: inversions(one.recv) };
  console.log(
    `  relayhub, one user: ${fmt(one.received)}/${fmt(config.oneUserMessages)} in ${one.seconds.toFixed(2)} s, ` +
      `${fmt(one.perSecond)}/s, ${out.oneUser.outOfOrder} out of order, p99 ${ms(one.p99)}`,
  );
  // paced: an open-loop rate over every user
  await waitForQuiet(hz, config.quietWaitMs);
  const pacedCount = Math.round(config.rate * config.rateSeconds);
  const pacedCpu = cpuSampler(pids, hz);
  const rated = await runPhase(clients, {
    phase: 11,
    count: pacedCount,
    window: pacedCount,
    sendOne: paced(config.rate, (i, meta) => send(user(i), meta)),
    offset,
  });
  rated.cpu = pacedCpu();
  out.paced = { rate: config.rate, ...pick(rated) };
  out.pacedCpu = rated;
  console.log(
    `  relayhub, paced at ${fmt(config.rate)}/s: ${fmt(rated.received)}/${fmt(pacedCount)}, ` +
      `${fmt(rated.perSecond)}/s, p50 ${ms(rated.p50)}, p99 ${ms(rated.p99)}, max ${ms(rated.max)}`,
  );
  // recovery: hub-1 (users u0, u2, u4...) SIGSTOPped while messages queue for its users, then SIGCONT
  await waitForQuiet(hz, config.quietWaitMs);
  const hubUsers = Math.ceil(config.users / 2);
  process.kill(hub1.pid, 'SIGSTOP');
  const stoppedAt = now();
  let contAt = 0;
  const resume = delay(config.pauseMs).then(() => {
    process.kill(hub1.pid, 'SIGCONT');
    contAt = now();
  });
  let recovered;
  try {
    recovered = await runPhase(clients, {
      phase: 12,
      count: config.recovery,
      window: config.recovery,
      sendOne: (i, meta) => send(user((i % hubUsers) * 2), meta),
      offset,
      idleMs: config.pauseMs + 10_000,
    });
  } finally {
    await resume;
  }
  const lastAt = recovered.t0 + recovered.seconds * 1_000;
  out.recovery = {
    messages: config.recovery,
    received: recovered.received,
    lost: recovered.lost,
    pausedMs: Math.round(contAt - stoppedAt),
    recoveryMs: Math.round(lastAt - contAt),
  };
  console.log(
    `  relayhub, recovery: hub-1 stopped ${out.recovery.pausedMs} ms with ${fmt(config.recovery)} messages ` +
      `queued for its users; ${fmt(recovered.received)} received, the last ${out.recovery.recoveryMs} ms after SIGCONT`,
  );
  out.memory = await redisMemory(producer);
  return out;
}

function pick(r) {
  return {
    received: r.received,
    lost: r.lost,
    duplicates: r.duplicates,
    errors: r.errors,
    perSecond: Math.round(r.perSecond),
    p50: r.p50,
    p99: r.p99,
    max: r.max,
  };
}

/**
 * Redis bytes (MEMORY USAGE, exact: SAMPLES 0) of the lane's keys: per idle user (everything acked), per
 * message queued for an offline user (inbox entry and idempotency key), per acked keyed message (what
 * stays: its idempotency key), and the old layout rebuilt with the same commands for comparison (a
 * `dedup:<key>` string with PX per keyed message, acked inbox entries kept).
 */
async function redisMemory(producer) {
  const base = `${prefix}:${DEMO_HUB_PATH}:rl`;
  const usage = async (keys) => {
    let total = 0;
    for (const key of keys) total += Number((await admin.call('MEMORY', 'USAGE', key, 'SAMPLES', '0')) ?? 0);
    return total;
  };
  const userKeys = (u) => ['seq', 'inbox', 'acked', 'presence', 'sent'].map((k) => `${base}:{u:${u}}:${k}`);
  // idle users: the bench users, everything acked (their inboxes empty), no keyed send
  const idleUsers = Array.from({ length: config.users }, (_, i) => user(i));
  const idle = (await usage(idleUsers.flatMap(userKeys))) / idleUsers.length;
  const streams = [1, 2].map((n) => `${base}:{i:${prefix}-hub-${n}}:deliveries`);
  // note: a hub deletes the wake-ups it consumed every 20 ms: wait (up to 2 s) until they are gone.
  for (let tries = 0; tries < 100; tries++) {
    const lengths = await Promise.all(streams.map((key) => admin.xlen(key)));
    if (lengths.every((n) => n === 0)) break;
    await delay(20);
  }
  const deliveries = await usage(streams);
  // offline users: keyed sends (outbox-like ids) queued, then the same acked (simulated: the ack script)
  const offline = Array.from({ length: 100 }, (_, i) => `off${i}`);
  const perUser = Math.ceil(config.memoryMessages / offline.length);
  const batch = [];
  for (let m = 0; m < perUser; m++)
    for (const u of offline)
      batch.push({
        userId: u,
        target: 'bench',
        args: [{ p: 99, i: m, t: 0 }],
        key: `outbox:${1e9 + batch.length}`,
      });
  for (let i = 0; i < batch.length; i += 1_000) await producer.sendMany(batch.slice(i, i + 1_000));
  const queued = (await usage(offline.flatMap(userKeys))) / batch.length;
  for (const u of offline) {
    const [last] = await admin.xrevrange(`${base}:{u:${u}}:inbox`, '+', '-', 'COUNT', 1);
    await admin.eval(
      ACK_SCRIPT,
      2,
      `${base}:{u:${u}}:acked`,
      `${base}:{u:${u}}:inbox`,
      perUser,
      last[0],
      86_400_000,
    );
  }
  const ackedKeyed = (await usage(offline.flatMap(userKeys))) / batch.length;
  // the old layout, rebuilt: per keyed message a dedup string with PX, and the acked entries kept
  const old = `${prefix}:old:${DEMO_HUB_PATH}:rl:{u:old}`;
  const sample = 1_000;
  const pipeline = admin.pipeline();
  for (let m = 1; m <= sample; m++) {
    pipeline.xadd(
      `${old}:inbox`,
      'MAXLEN',
      '=',
      10_000,
      '*',
      'o',
      m,
      'm',
      `outbox:${1e9 + m}`,
      't',
      'bench',
      'a',
      JSON.stringify([{ p: 99, i: m, t: 0 }]),
    );
    pipeline.set(`${old}:dedup:outbox:${1e9 + m}`, `${m} outbox:${1e9 + m}`, 'PX', 86_400_000);
  }
  await pipeline.exec();
  const oldInbox = (await usage([`${old}:inbox`])) / sample;
  const oldDedup =
    (await usage([`${old}:dedup:outbox:${1e9 + 1}`, `${old}:dedup:outbox:${1e9 + sample}`])) / 2;
  const memory = {
    idleUserBytes: Math.round(idle),
    queuedMessageBytes: Math.round(queued),
    ackedKeyedMessageBytes: Math.round(ackedKeyed),
    deliveryStreamsBytes: deliveries,
    oldAckedMessageBytes: Math.round(oldInbox + oldDedup),
    oldDedupKeyBytes: Math.round(oldDedup),
  };
  console.log(
    `  relayhub, Redis memory (MEMORY USAGE): idle user ${fmt(memory.idleUserBytes)} B; a message queued for an ` +
      `offline user ${fmt(memory.queuedMessageBytes)} B (keyed); once acked ${fmt(memory.ackedKeyedMessageBytes)} B ` +
      `stays (its idempotency key); delivery streams now ${fmt(deliveries)} B; the old layout kept ` +
      `${fmt(memory.oldAckedMessageBytes)} B per acked keyed message (${fmt(oldDedup)} B of it the dedup key)`,
  );
  return memory;
}

// ---- report -------------------------------------------------------------------------------------------

const { relayhub, raw } = results;
const rows = [
  [
    'system',
    'acked/s',
    'p50',
    'p99',
    'max',
    `p50 (window ${config.lightWindow})`,
    `p99 (window ${config.lightWindow})`,
    'lost',
    'dups',
  ],
];
const row = (label, r) => [
  label,
  fmt(r.perSecond),
  ms(r.p50),
  ms(r.p99),
  ms(r.max),
  ms(r.light.p50),
  ms(r.light.p99),
  `${fmt(r.lost)} + ${fmt(r.light.lost)}`,
  `${fmt(r.duplicates)} + ${fmt(r.light.duplicates)}`,
];
rows.push(row('relayhub (2 hubs, streams lane)', relayhub));
rows.push(row('raw ioredis XADD/XREADGROUP/XACK', raw));
console.log(
  `\n${fmt(config.messages)} messages over ${config.users} users, window ${fmt(config.window)} in flight ` +
    `(acked/s: send of the first -> ack of the last; latency: send -> client receipt), then ` +
    `${fmt(config.lightMessages)} messages with window ${config.lightWindow} (light load):`,
);
console.log(table(rows));
console.log(
  `relayhub / raw: ${(relayhub.perSecond / raw.perSecond).toFixed(3)}x acked/s; at window ${config.window} ` +
    `p50 ${(relayhub.p50 / raw.p50).toFixed(1)}x, p99 ${(relayhub.p99 / raw.p99).toFixed(1)}x; at window ` +
    `${config.lightWindow} p50 ${(relayhub.light.p50 / raw.light.p50).toFixed(1)}x, p99 ` +
    `${(relayhub.light.p99 / raw.light.p99).toFixed(1)}x`,
);
console.log(
  `note: the lane keeps up to reliable.window (32 unless RELIABLE_WINDOW is set) in flight per user; these ` +
    `are for ${config.users} users. At window ${fmt(config.window)} latency is mostly ` +
    `queueing (Little: window / rate = ${ms((config.window / relayhub.perSecond) * 1_000)} for relayhub).`,
);

const names = Object.keys(relayhub.cpu);
const cpuRows = [['system', ...names]];
for (const [label, r] of [
  [`relayhub, window ${config.window}`, relayhub],
  [`relayhub, window ${config.lightWindow}`, relayhub.light],
  [`raw, window ${config.window}`, raw],
  [`raw, window ${config.lightWindow}`, raw.light],
]) {
  cpuRows.push([label, ...names.map((n) => r.cpu[n] ?? '')]);
}
console.log(
  '\nmean CPU % per process during each measured phase (100 = one core; other = the rest of the machine):',
);
console.log(table(cpuRows));
/** CPU time per acked message (us), the hubs summed: less sensitive than % to other work on the machine. */
const cpuPerMessage = (r) => {
  const s = r.cpu.seconds;
  const per = (seconds) => `${((seconds / r.received) * 1e6).toFixed(0)}`;
  const parts = [`hubs ${per((s['hub-1'] ?? 0) + (s['hub-2'] ?? 0))}`];
  for (const name of ['redis', 'clients', 'bench'])
    if (s[name] !== undefined) parts.push(`${name} ${per(s[name])}`);
  return parts.join(', ');
};
console.log('CPU us per acked message (bench = the producer):');
console.log(`  relayhub, window ${config.window}: ${cpuPerMessage(relayhub)}`);
console.log(`  relayhub, window ${config.lightWindow}: ${cpuPerMessage(relayhub.light)}`);
console.log(`  raw, window ${config.window}: ${cpuPerMessage(raw)}`);
console.log(`  raw, window ${config.lightWindow}: ${cpuPerMessage(raw.light)}`);
console.log(
  `  relayhub, paced ${config.rate}/s: ${cpuPerMessage(results.extra.pacedCpu)} ` +
    `(the rest of the machine meanwhile: ${results.extra.pacedCpu.cpu.other} % of a core)`,
);

// note: commandstats counts the commands a script runs (get, set, xadd... inside evalsha) as well as the
// script itself, whose time includes theirs.
const perMessage = (commands, count) =>
  Object.entries(commands)
    .filter(([, { calls }]) => calls / count >= 0.05)
    .sort((a, b) => b[1].calls - a[1].calls)
    .map(([name, { calls }]) => `${name} ${(calls / count).toFixed(2)}`)
    .join(', ');
const SCRIPTED = new Set([
  'get',
  'set',
  'incr',
  'time',
  'xtrim',
  'pexpire',
  'smembers',
  'exists',
  'srem',
  'xlen',
  'zscore',
  'zadd',
  'zremrangebyscore',
]);
const usecPerMessage = (commands, count) => {
  const top = Object.entries(commands).filter(([name]) => !SCRIPTED.has(name) || !commands.evalsha);
  const total = top.reduce((sum, [, { usec }]) => sum + usec, 0);
  const parts = top
    .filter(([, { usec }]) => usec / count >= 0.5)
    .sort((a, b) => b[1].usec - a[1].usec)
    .map(([name, { usec }]) => `${name} ${(usec / count).toFixed(1)}`)
    .join(', ');
  return `${(total / count).toFixed(1)} us (${parts})`;
};
console.log(
  '\nRedis commands per message (whole server: includes any other client of it; ' +
    'commands run inside scripts counted too):',
);
console.log(`  relayhub, window ${config.window}: ${perMessage(relayhub.commands, relayhub.received)}`);
console.log(
  `  relayhub, window ${config.lightWindow}: ${perMessage(relayhub.light.commands, relayhub.light.received)}`,
);
console.log(`  raw, window ${config.window}: ${perMessage(raw.commands, raw.received)}`);
console.log('Redis time per message (commandstats usec; a script counts with the commands it runs):');
console.log(`  relayhub, window ${config.window}: ${usecPerMessage(relayhub.commands, relayhub.received)}`);
console.log(
  `  relayhub, window ${config.lightWindow}: ${usecPerMessage(relayhub.light.commands, relayhub.light.received)}`,
);
console.log(`  raw, window ${config.window}: ${usecPerMessage(raw.commands, raw.received)}`);
const bad = [relayhub, relayhub.light, raw, raw.light].reduce((n, r) => n + r.lost + r.errors, 0);
if (bad > 0) process.exitCode = 1;

const { extra, heap } = results;
const hubUsersOn = [Math.ceil(config.users / 2), Math.floor(config.users / 2)];
// note: no forced GC in the hubs: heapUsed includes garbage not collected yet; with many users the
// connected users dominate it.
const heapPerUser = heap.before.map((h, n) => (h.heapUsed - heap.empty[n].heapUsed) / hubUsersOn[n]);
console.log(
  `\nhub heap per connected user (connection + lane session), after connecting minus before: ${heapPerUser
    .map((b, n) => `hub-${n + 1} ${fmt(b)} B`)
    .join(', ')}; heap used before / after connecting / after the phases: ${heap.empty
    .map((h, n) => `${fmt(h.heapUsed)} / ${fmt(heap.before[n].heapUsed)} / ${fmt(heap.after[n].heapUsed)}`)
    .join(', ')} B; RSS after the phases ${heap.after.map((h) => fmt(h.rss)).join(' / ')} B`,
);
const usec = (commands, count) =>
  Object.entries(commands)
    .filter(([name]) => !SCRIPTED.has(name) || !commands.evalsha)
    .reduce((sum, [, { usec }]) => sum + usec, 0) / count;
if (extra.oneUser.outOfOrder > 0 || extra.recovery.lost > 0 || extra.oneUser.lost > 0 || extra.paced.lost > 0)
  process.exitCode = 1;
console.log(
  `RESULT ${JSON.stringify({
    users: config.users,
    window: config.window,
    ackedPerSec: Math.round(relayhub.perSecond),
    rawAckedPerSec: Math.round(raw.perSecond),
    ratioToRaw: +(relayhub.perSecond / raw.perSecond).toFixed(3),
    lightP50Ms: +relayhub.light.p50.toFixed(2),
    lightP99Ms: +relayhub.light.p99.toFixed(2),
    redisUsecPerMessage: +usec(relayhub.commands, relayhub.received).toFixed(1),
    rawRedisUsecPerMessage: +usec(raw.commands, raw.received).toFixed(1),
    oneUserAckedPerSec: extra.oneUser.perSecond,
    oneUserOutOfOrder: extra.oneUser.outOfOrder,
    pacedRate: extra.paced.rate,
    pacedP99Ms: +extra.paced.p99.toFixed(2),
    recoveryMs: extra.recovery.recoveryMs,
    recoveryLost: extra.recovery.lost,
    redisBytes: extra.memory,
    heapBytesPerUser: heapPerUser.map((b) => Math.round(b)),
  })}`,
);
