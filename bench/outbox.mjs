// Outbox benchmark (`node bench/outbox.mjs`, after `npm run build`): commit -> client ack. Producers commit
// transactions that enqueue() an outbox row into a schema of their own on the shared Postgres; 1, then 2
// `relayhub worker` processes relay the rows to the reliable lane of 2 `relayhub serve --backplane streams`
// processes, whose users' clients ack. Per worker count: the raw Postgres baseline (the same INSERT +
// COMMIT, at the same concurrency, into a copy of the outbox table that no worker reads), live at
// saturation (acked/s against that baseline: outboxToPgRatio), live at a fixed rate (BENCH_OUTBOX_RATE,
// default 1,000 commits/s: p99 commit -> receipt), and a backlog drained after the workers were stopped
// (backlogRowsPerSec). Ends with one line `RESULT <json>`. See bench/RELIABLE.md for the knobs.
import './help.mjs';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import pg from 'pg';
import { DEMO_HUB_PATH, enqueue, migrate } from '../dist/index.js';
import { partitionOf } from '../dist/outbox/schema.js';
import {
  assertLoopback,
  cleanup,
  clockOffset,
  cpuSampler,
  cpuTicks,
  deletePrefix,
  deletePrefixSync,
  dropSchema,
  dropSchemaSync,
  envNumber,
  fmt,
  forkClients,
  installExitHandlers,
  ms,
  now,
  onCleanup,
  percentiles,
  postgresPids,
  printWarnings,
  redisClient,
  redisPid,
  schemaUrl,
  sleep,
  startHub,
  startWorker,
  table,
  ticksPerSecond,
  waitForQuiet,
} from './reliable-lib.mjs';

const config = {
  users: Math.round(envNumber('BENCH_OUTBOX_USERS', 100)),
  commits: Math.round(envNumber('BENCH_OUTBOX_COMMITS', 5_000)),
  concurrency: Math.round(envNumber('BENCH_OUTBOX_CONCURRENCY', 16)),
  warmup: Math.round(envNumber('BENCH_OUTBOX_WARMUP', 500)),
  backlog: Math.round(envNumber('BENCH_OUTBOX_BACKLOG', 20_000)),
  rate: envNumber('BENCH_OUTBOX_RATE', 1_000),
  rateMs: envNumber('BENCH_OUTBOX_RATE_MS', 3_000),
  quietWaitMs: envNumber('BENCH_QUIET_WAIT_MS', 3_000),
  startQuietMs: envNumber('BENCH_START_QUIET_MS', 15_000),
  maxMs: envNumber('BENCH_MAX_MS', 240_000),
};
const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const databaseUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
assertLoopback('BENCH_REDIS_URL', redisUrl);
assertLoopback('BENCH_DATABASE_URL', databaseUrl);

installExitHandlers(config.maxMs);

const tag = randomBytes(4).toString('hex');
const prefix = `bench-ob-${tag}`;
const schema = `bench_${tag}`;
/** Every session of this run carries an application_name starting with this (to find, and end, only ours). */
const appPrefix = `${prefix}-`;
const url = (name) => schemaUrl(databaseUrl, schema, `${appPrefix}${name}`);
const secret = randomBytes(24).toString('hex');
const userPrefix = 'u';
const user = (i) => `${userPrefix}${i % config.users}`;
const hz = ticksPerSecond();

onCleanup(
  () => deletePrefix(redisUrl, prefix),
  () => deletePrefixSync(redisUrl, prefix),
);

console.log(
  `outbox benchmark: ${config.users} users (one client each), ${fmt(config.commits)} commits ` +
    `(+${fmt(config.warmup)} warm-up) per worker count, ${config.concurrency} concurrent producer ` +
    `connections; node ${process.version}, ${availableParallelism()} cores`,
);

/** The partitions each worker holds (its advisory locks), by application name. */
async function partitionsHeld(pool, names) {
  const { rows } = await pool.query(
    `SELECT a.application_name AS name, count(*)::int AS held
       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
        AND a.datname = current_database() AND a.application_name = ANY($1)
      GROUP BY 1`,
    [names],
  );
  return names.map((name) => rows.find((r) => r.name === name)?.held ?? 0);
}

/** Waits (bounded) until the workers hold 64 partitions between them, each at least `min`. */
async function waitForPartitions(pool, names, min, maxMs = 20_000) {
  const started = now();
  for (;;) {
    const held = await partitionsHeld(pool, names);
    if (held.reduce((a, b) => a + b, 0) === 64 && held.every((n) => n >= min)) return held;
    if (now() - started > maxMs)
      throw new Error(`workers hold ${held.join(' + ')} partitions after ${maxMs} ms`);
    await sleep(200);
  }
}

/**
 * One phase: `count` transactions (BEGIN; enqueue(...); COMMIT) on `producers.length` connections at
 * once; then waits until every message was acked by its client (no ack for 10 s, or 60 s: gives up).
 * Live (no `paused`): acked/s from the first BEGIN to the last ack; latency: COMMIT acknowledged ->
 * client receipt. Backlog (`paused`: the workers): the workers are SIGSTOPped while the rows are committed
 * and SIGCONTed after; acked/s from SIGCONT to the last ack: what the relay and the lane drain, however
 * fast the producers commit.
 */
async function runCommits(clients, producers, { phase, count, offset, paused, rate, onResumed }) {
  const ready = await clients.request({ type: 'phase', phase, expected: count }, 'phase-ready');
  if (ready.error) throw new Error(ready.error);
  const committedAt = new Float64Array(count);
  let acked = 0;
  let lastProgress = now();
  let next = 0;
  let errors = 0;
  let firstError;
  clients.onProgress = (message) => {
    if (message.phase !== phase) return;
    acked = Math.max(acked, message.acked);
    lastProgress = now();
  };
  const t0 = now();
  for (const worker of paused ?? []) worker.kill('SIGSTOP');
  let resumed;
  try {
    await Promise.all(
      producers.map(async (client) => {
        while (next < count) {
          const i = next++;
          // note: at a fixed rate, commit i is due i / rate seconds after the start
          if (rate) {
            const wait = t0 + (i * 1_000) / rate - now();
            if (wait > 1) await sleep(wait);
          }
          try {
            await client.query('BEGIN');
            await enqueue(
              client,
              { userId: user(i), target: 'bench', args: [{ p: phase, i, t: now() }] },
              { channelPrefix: prefix },
            );
            await client.query('COMMIT');
            committedAt[i] = now();
          } catch (error) {
            errors++;
            firstError ??= error;
            await client.query('ROLLBACK').catch(() => undefined);
          }
        }
      }),
    );
  } finally {
    for (const worker of paused ?? []) worker.kill('SIGCONT');
    resumed = now();
    onResumed?.();
  }
  // note: the relay alone (Postgres -> Redis, not the lane's delivery): until no row of the phase is unrelayed
  let relayedSeconds = NaN;
  if (paused) {
    for (;;) {
      const { rows } = await relayPool.query(
        `SELECT count(*)::int AS n FROM relayhub_outbox WHERE relayed_at IS NULL AND (args -> 0 ->> 'p')::int = $1`,
        [phase],
      );
      if (rows[0].n === 0 || now() - resumed > 60_000) break;
      await sleep(10);
    }
    relayedSeconds = (now() - resumed) / 1_000;
  }
  const committed = resumed;
  lastProgress = Math.max(lastProgress, committed);
  while (acked < count - errors && now() - lastProgress < 10_000 && now() - t0 < 60_000) await sleep(5);
  clients.onProgress = undefined;
  const report = await clients.request({ type: 'report' }, 'report');
  if (report.error) throw new Error(report.error);
  const latencies = [];
  for (let i = 0; i < count; i++) {
    if (report.recv[i] !== 0 && committedAt[i] !== 0)
      latencies.push(report.recv[i] - offset - committedAt[i]);
  }
  const from = paused ? resumed : t0;
  const seconds = (report.lastAt - offset - from) / 1_000;
  return {
    committed: count - errors,
    commitsPerSecond: (count - errors) / ((committed - t0) / 1_000),
    received: report.received,
    lost: count - errors - report.received,
    duplicates: report.duplicates,
    errors,
    firstError: firstError ? String(firstError.message ?? firstError) : undefined,
    seconds,
    perSecond: report.received / seconds,
    relayedSeconds,
    relayedPerSecond: (count - errors) / relayedSeconds,
    ...(paused ? { p50: NaN, p99: NaN, max: NaN } : percentiles(latencies)),
  };
}

/**
 * The Postgres processes whose CPU the bench counts, read once per worker count, by role: this run's
 * producer sessions, its workers' sessions, its other sessions (hubs, the bench's monitor), and the
 * server's own processes (postmaster, WAL writer, checkpointer, autovacuum...). Other users' sessions of
 * the shared server are left out (they count as `other`).
 */
async function runPostgresPids() {
  const { rows } = await pool.query(
    `SELECT pid, backend_type, coalesce(application_name, '') AS name FROM pg_stat_activity`,
  );
  const role = new Map();
  for (const r of rows) {
    if (r.backend_type !== 'client backend') continue;
    if (!r.name.startsWith(appPrefix)) role.set(r.pid, undefined);
    else if (r.name === `${appPrefix}producer`) role.set(r.pid, 'pg-producers');
    else if (/^w\d+$/.test(r.name.slice(appPrefix.length))) role.set(r.pid, 'pg-workers');
    else role.set(r.pid, 'pg-rest');
  }
  const groups = { 'pg-producers': [], 'pg-workers': [], 'pg-rest': [], 'pg-server': [] };
  for (const pid of postgresPids()) {
    if (!role.has(pid)) groups['pg-server'].push(pid);
    else if (role.get(pid)) groups[role.get(pid)].push(pid);
  }
  return groups;
}

/**
 * Adds the Postgres groups' CPU to a `cpuSampler`'s figures (and takes it out of `other`).
 *
 * note: a session may end within a phase (a pool closing an idle connection): its CPU up to then is lost
 * with its /proc entry, but it must not count as negative, as a sum of the group's ticks would have it.
 */
function withPostgres(machine, groups) {
  const start = Object.fromEntries(
    Object.entries(groups).map(([name, pids]) => [name, pids.map((pid) => [pid, cpuTicks(pid)])]),
  );
  const t0 = performance.now();
  return () => {
    const figures = machine();
    const seconds = (performance.now() - t0) / 1_000;
    const used = Object.fromEntries(
      Object.entries(start).map(([name, pids]) => [
        name,
        pids.reduce((sum, [pid, from]) => {
          const to = cpuTicks(pid);
          return sum + (Number.isNaN(to) || Number.isNaN(from) ? 0 : to - from);
        }, 0) / hz,
      ]),
    );
    const pct = (s) => Math.round((s / seconds) * 100);
    const total = Object.values(used).reduce((a, b) => a + b, 0);
    const { other, ...rest } = figures;
    const merged = {
      ...rest,
      ...Object.fromEntries(Object.entries(used).map(([name, s]) => [name, pct(s)])),
      other: Math.max(0, other - pct(total)),
    };
    Object.defineProperty(merged, 'seconds', { value: { ...figures.seconds, ...used } });
    return merged;
  };
}

/**
 * The server's WAL position in bytes (`pg_current_wal_lsn()`: the whole server, other users' writes
 * included). note: not `pg_stat_wal`, whose counters the sessions report up to a second late.
 */
async function walStats() {
  const { rows } = await pool.query("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 AS bytes");
  return rows[0];
}

const walDelta = (from, to) => ({ bytes: to.bytes - from.bytes });

const RAW_INSERT = `INSERT INTO bench_raw (channel_prefix, hub, user_id, partition, target, args, message_key, expires_at)
  VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8) RETURNING id`;

/**
 * The baseline: `count` transactions of the same INSERT (the statement enqueue() sends, same values) and
 * COMMIT on the same connections, into `bench_raw`, a copy of the outbox table (columns, defaults,
 * indexes) that nothing reads: what Postgres commits here without relayhub.
 */
async function runRaw(producers, count) {
  let next = 0;
  const t0 = now();
  await Promise.all(
    producers.map(async (client) => {
      while (next < count) {
        const i = next++;
        const userId = user(i);
        await client.query('BEGIN');
        await client.query(RAW_INSERT, [
          prefix,
          DEMO_HUB_PATH,
          userId,
          partitionOf(userId),
          'bench',
          JSON.stringify([{ p: 0, i, t: now() }]),
          null,
          new Date(Date.now() + 86_400_000),
        ]);
        await client.query('COMMIT');
      }
    }),
  );
  return { commitsPerSecond: count / ((now() - t0) / 1_000) };
}

// note: the machine may be shared (tests, other benchmarks): wait a little for it to calm down first.
const atStart = await waitForQuiet(hz, config.startQuietMs);
console.log(
  `  machine ${atStart.busy}% busy at start (waited ${atStart.waited.toFixed(1)} s; 100 = one core of ` +
    `${availableParallelism()})`,
);

// note: the clean-up terminates this run's sessions; a client that loses its session must not crash the run.
const quiet = (client) => {
  client.on('error', () => undefined);
  return client;
};
const admin = quiet(new pg.Client({ connectionString: databaseUrl }));
await admin.connect();
await admin.query(`CREATE SCHEMA ${schema}`);
onCleanup(
  () => dropSchema(databaseUrl, schema, appPrefix),
  () => dropSchemaSync(databaseUrl, schema, appPrefix),
);
const redis = redisClient(redisUrl);
const pool = quiet(new pg.Pool({ connectionString: url('monitor'), max: 2 }));
const relayPool = quiet(new pg.Pool({ connectionString: url('monitor'), max: 1 }));
const producers = [];
const results = [];
try {
  const migrator = quiet(new pg.Client({ connectionString: url('migrate') }));
  await migrator.connect();
  try {
    await migrate(migrator);
    await migrator.query('CREATE TABLE bench_raw (LIKE relayhub_outbox INCLUDING ALL)');
  } finally {
    await migrator.end();
  }
  const [hub1, hub2] = await Promise.all(
    [1, 2].map((n) =>
      startHub({
        name: `hub-${n}`,
        redisUrl,
        prefix,
        secret,
        instanceId: `${prefix}-hub-${n}`,
        databaseUrl: url(`hub-${n}`),
      }),
    ),
  );
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
    `  schema ${schema}; ${config.users} clients connected in ${Math.round(connected.ms)} ms (alternating between ` +
      `the 2 hubs); load generator clock offset ${clock.offset.toFixed(3)} ms (IPC round trip ${clock.rtt.toFixed(3)} ms)`,
  );
  for (let n = 0; n < config.concurrency; n++) {
    const client = quiet(new pg.Client({ connectionString: url('producer') }));
    await client.connect();
    producers.push(client);
  }

  const workers = [];
  const workerNames = [];
  const redisProcess = await redisPid(redis);
  let phase = 0;
  for (const count of [1, 2]) {
    const name = `w${count}`;
    workers.push(
      await startWorker({
        name: `worker-${count}`,
        redisUrl,
        prefix,
        databaseUrl: url(name),
        instanceId: `${prefix}-${name}`,
      }),
    );
    workerNames.push(`${appPrefix}${name}`);
    const waitedFrom = now();
    const held = await waitForPartitions(pool, workerNames, count === 1 ? 64 : 16);
    console.log(
      `  ${count} worker(s): partitions ${held.join(' + ')} after ${Math.round(now() - waitedFrom)} ms`,
    );
    const warm = await runCommits(clients, producers, {
      phase: ++phase,
      count: config.warmup,
      offset: clock.offset,
    });
    const { busy, waited } = await waitForQuiet(hz, config.quietWaitMs);
    console.log(
      `  ${count} worker(s): warm-up ${fmt(warm.received)}/${fmt(config.warmup)} acked; machine ${busy}% busy ` +
        `before the measured phase (waited ${waited.toFixed(1)} s${busy > 30 ? ': figures distorted' : ''})`,
    );
    // note: Postgres CPU is this run's sessions and the server's own processes (WAL writer, checkpointer,
    // autovacuum...); other users' sessions of the shared server count as `other`.
    const pgPids = await runPostgresPids();
    const sampler = () =>
      withPostgres(
        cpuSampler(
          {
            'hub-1': hub1.pid,
            'hub-2': hub2.pid,
            ...Object.fromEntries(workers.map((w, k) => [`worker-${k + 1}`, w.pid])),
            clients: clients.child.pid,
            bench: process.pid,
            redis: redisProcess,
          },
          hz,
        ),
        pgPids,
      );
    let cpu = sampler();
    let wal = await walStats();
    const raw = await runRaw(producers, config.commits);
    raw.cpu = cpu();
    raw.wal = walDelta(wal, await walStats());
    await pool.query('TRUNCATE bench_raw');
    cpu = sampler();
    wal = await walStats();
    const live = await runCommits(clients, producers, {
      phase: ++phase,
      count: config.commits,
      offset: clock.offset,
    });
    live.cpu = cpu();
    live.wal = walDelta(wal, await walStats());
    const paced = await runCommits(clients, producers, {
      phase: ++phase,
      count: Math.round((config.rate * config.rateMs) / 1_000),
      offset: clock.offset,
      rate: config.rate,
    });
    // note: the CPU of the drain alone, from SIGCONT to the last ack (not the commits while stopped).
    const backlog = await runCommits(clients, producers, {
      phase: ++phase,
      count: config.backlog,
      offset: clock.offset,
      paused: workers,
      onResumed: () => {
        cpu = sampler();
        wal = walStats();
      },
    });
    backlog.cpu = cpu();
    backlog.wal = walDelta(await wal, await walStats());
    // note: a relay pass marks its rows relayed_at = now(), its transaction's start: one value per pass
    // (rows already acked may have been purged; the count says how many were still there).
    const { rows: passes } = await pool.query(
      `SELECT count(*)::int AS rows, count(DISTINCT relayed_at)::int AS passes,
              (extract(epoch FROM max(relayed_at) - min(relayed_at)) * 1000)::float AS span
         FROM relayhub_outbox WHERE (args -> 0 ->> 'p')::int = $1`,
      [phase],
    );
    backlog.passes = passes[0];
    results.push({ workers: count, busyBefore: busy, raw, live, paced, backlog });
    const failures = (r) =>
      `${r.duplicates} duplicates, ${r.errors} failed commits${r.firstError ? ` (${r.firstError})` : ''}`;
    console.log(
      `  ${count} worker(s), live: ${fmt(live.committed)} commits at ${fmt(live.commitsPerSecond)}/s; ` +
        `${fmt(live.received)} acked in ${live.seconds.toFixed(2)} s: ${fmt(live.perSecond)}/s, ` +
        `p50 ${ms(live.p50)}, p99 ${ms(live.p99)}, max ${ms(live.max)}; ${failures(live)}`,
    );
    console.log(
      `  ${count} worker(s), raw Postgres (same INSERT + COMMIT, ${config.concurrency} connections, no relayhub): ` +
        `${fmt(raw.commitsPerSecond)} commits/s; outbox live acked/s / raw: ${(live.perSecond / raw.commitsPerSecond).toFixed(2)}x`,
    );
    console.log(
      `  ${count} worker(s), at ${fmt(config.rate)} commits/s: ${fmt(paced.committed)} commits at ` +
        `${fmt(paced.commitsPerSecond)}/s, ${fmt(paced.received)} acked; p50 ${ms(paced.p50)}, p99 ${ms(paced.p99)}, ` +
        `max ${ms(paced.max)}; ${failures(paced)}`,
    );
    console.log(
      `  ${count} worker(s), backlog: ${fmt(backlog.committed)} rows committed while the workers were stopped, ` +
        `${fmt(backlog.received)} acked ${backlog.seconds.toFixed(2)} s after they resumed: ` +
        `${fmt(backlog.perSecond)}/s (relayed into Redis in ${backlog.relayedSeconds.toFixed(2)} s: ` +
        `${fmt(backlog.relayedPerSecond)} rows/s); ${failures(backlog)}`,
    );
    const { rows: found, passes: n, span } = backlog.passes;
    if (n > 1) {
      console.log(
        `  ${count} worker(s), backlog: ${fmt(found)} of its rows still in Postgres, relayed in ${n} passes ` +
          `(${fmt(found / n)} rows each) started over ${fmt(span)} ms: one every ${ms(span / (n - 1))}`,
      );
    }
  }
  // note: the workers apply the clients' acks about once a second, deleting the acked rows.
  await sleep(2_500);
  const { rows } = await pool.query(
    `SELECT count(*)::int AS unacked,
            count(*) FILTER (WHERE relayed_at IS NULL)::int AS unrelayed FROM relayhub_outbox`,
  );
  console.log(
    `  Postgres 2.5 s after the last drain: ${rows[0].unrelayed} rows unrelayed, ${rows[0].unacked} rows ` +
      `left unacked (the ack sync deletes acked rows)`,
  );
  await clients.request({ type: 'close' }, 'closed', 5_000).catch(() => undefined);
  printWarnings();
} finally {
  await Promise.all(producers.map((c) => c.end().catch(() => undefined)));
  await pool.end().catch(() => undefined);
  await relayPool.end().catch(() => undefined);
  await admin.end().catch(() => undefined);
  redis.disconnect();
  await cleanup();
}

// ---- report -------------------------------------------------------------------------------------------

const rows = [
  [
    'workers',
    'raw pg commits/s',
    'commits/s (producers)',
    'acked/s (live)',
    'live / raw',
    'p50',
    'p99',
    `p99 at ${fmt(config.rate)}/s`,
    'acked/s (backlog)',
    'lost',
    'dups',
  ],
];
for (const r of results) {
  rows.push([
    String(r.workers),
    fmt(r.raw.commitsPerSecond),
    fmt(r.live.commitsPerSecond),
    fmt(r.live.perSecond),
    `${(r.live.perSecond / r.raw.commitsPerSecond).toFixed(2)}x`,
    ms(r.live.p50),
    ms(r.live.p99),
    ms(r.paced.p99),
    fmt(r.backlog.perSecond),
    `${fmt(r.live.lost)} + ${fmt(r.paced.lost)} + ${fmt(r.backlog.lost)}`,
    `${fmt(r.live.duplicates)} + ${fmt(r.paced.duplicates)} + ${fmt(r.backlog.duplicates)}`,
  ]);
}
console.log(
  `\n${fmt(config.commits)} transactions (BEGIN; enqueue; COMMIT) on ${config.concurrency} connections over ` +
    `${config.users} users. Live: workers running (acked/s: first BEGIN -> ack of the last; latency: COMMIT ` +
    `acknowledged -> client receipt). Backlog: the same count committed while the workers were stopped ` +
    `(acked/s: SIGCONT -> ack of the last):`,
);
console.log(table(rows));
if (results.length === 2) {
  const [one, two] = results;
  console.log(
    `2 workers / 1 worker: ${(two.live.perSecond / one.live.perSecond).toFixed(2)}x acked/s live, ` +
      `${(two.backlog.perSecond / one.backlog.perSecond).toFixed(2)}x backlog`,
  );
}
const names = Object.keys(results.at(-1)?.live.cpu ?? {});
const cpuRows = [['workers', 'phase', ...names]];
for (const r of results) {
  for (const phase of ['live', 'backlog']) {
    cpuRows.push([String(r.workers), phase, ...names.map((n) => r[phase].cpu[n] ?? '')]);
  }
}
console.log(
  '\nmean CPU % per process during each phase (100 = one core; backlog: the drain, SIGCONT to the last ack; ' +
    "pg-*: Postgres, this run's sessions by role and the server's own processes; other = the rest of the " +
    "machine, other users' Postgres sessions included):",
);
console.log(table(cpuRows));
console.log(
  "CPU us per acked message (hubs and workers summed; bench = the producers; postgres: this run's sessions " +
    "(producers', workers', the rest: hubs and the bench's monitor) and the server's own processes; WAL: " +
    "the whole server's, per row):",
);
const pgOf = (s) =>
  Object.entries(s)
    .filter(([name]) => name.startsWith('pg-'))
    .reduce((total, [, seconds]) => total + seconds, 0);
const pgParts = (s, per) =>
  ['producers', 'workers', 'rest', 'server'].map((n) => `${n} ${per(s[`pg-${n}`] ?? 0)}`).join(', ');
for (const r of results) {
  // note: what the baseline's INSERT + COMMIT costs on its own: the part of each live message that no relay can avoid.
  const s = r.raw.cpu.seconds;
  const raw = (seconds) => ((seconds / config.commits) * 1e6).toFixed(0);
  const walOf = (w, n) => `WAL ${(w.bytes / n).toFixed(0)} B`;
  console.log(
    `  ${r.workers} worker(s), raw Postgres baseline, per commit: postgres ${raw(pgOf(s))} (${pgParts(s, raw)}), ` +
      `bench ${raw(s.bench)}, total ${raw(pgOf(s) + s.bench)}; ${walOf(r.raw.wal, config.commits)} ` +
      `(machine ${r.raw.cpu.other}% busy besides)`,
  );
  for (const phase of ['live', 'backlog']) {
    const p = r[phase];
    const s = p.cpu.seconds;
    const sum = (prefix) =>
      Object.entries(s)
        .filter(([name]) => name.startsWith(prefix))
        .reduce((total, [, seconds]) => total + seconds, 0);
    const per = (seconds) => ((seconds / p.received) * 1e6).toFixed(0);
    console.log(
      `  ${r.workers} worker(s), ${phase}: hubs ${per(sum('hub-'))}, workers ${per(sum('worker-'))}, ` +
        `redis ${per(s.redis ?? 0)}, postgres ${per(pgOf(s))} (${pgParts(s, per)}), clients ${per(s.clients)}, ` +
        `bench ${per(s.bench)}, ` +
        `total ${per(Object.values(s).reduce((a, b) => a + b, 0))}; ${walOf(p.wal, p.received)}`,
    );
  }
}
const bad = results.flatMap((r) => [r.live, r.paced, r.backlog]).some((p) => p.lost > 0 || p.errors > 0);
if (bad || results.length < 2) process.exitCode = 1;
const by = (n) => results.find((r) => r.workers === n);
const round = (x, d = 2) => (Number.isFinite(x) ? +x.toFixed(d) : null);
console.log(
  `RESULT ${JSON.stringify({
    outboxToPgRatio: round(by(2)?.live.perSecond / by(2)?.raw.commitsPerSecond),
    outboxToPgRatio1Worker: round(by(1)?.live.perSecond / by(1)?.raw.commitsPerSecond),
    rawPgCommitsPerSec: round(by(2)?.raw.commitsPerSecond, 0),
    liveAckedPerSec: round(by(2)?.live.perSecond, 0),
    p99AtRateMs: round(by(2)?.paced.p99),
    p99AtRateMs1Worker: round(by(1)?.paced.p99),
    rate: config.rate,
    backlogRowsPerSec: round(by(2)?.backlog.perSecond, 0),
    backlogRowsPerSec1Worker: round(by(1)?.backlog.perSecond, 0),
    backlogRelayedRowsPerSec: round(by(2)?.backlog.relayedPerSecond, 0),
    backlogRelayedRowsPerSec1Worker: round(by(1)?.backlog.relayedPerSecond, 0),
    secondWorkerBacklogRatio: round(by(2)?.backlog.perSecond / by(1)?.backlog.perSecond),
    lost: results.reduce((n, r) => n + r.live.lost + r.paced.lost + r.backlog.lost, 0),
    users: config.users,
    commits: config.commits,
    backlog: config.backlog,
    concurrency: config.concurrency,
  })}`,
);
