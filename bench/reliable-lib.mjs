// Shared harness of the reliable-lane benchmarks (bench/reliable.mjs, bench/outbox.mjs): child processes
// that are always killed, hub and worker processes started from dist/cli/main.js, the load-generator
// child and its clock offset, phases with a bounded in-flight window, CPU accounting from /proc, and the
// figures (percentiles, tables).
import { fork, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { serveCommand } from './server-env.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const root = join(here, '..');

/** The clock shared by the bench and the load generator (ms): wall clock at start + monotonic time. */
export const now = () => performance.timeOrigin + performance.now();
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function envNumber(name, fallback) {
  const value = process.env[name];
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number (got '${value}').`);
  return n;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$/;
export function assertLoopback(name, url) {
  if (!LOOPBACK.test(new URL(url).hostname)) throw new Error(`${name} must be on loopback (got ${url}).`);
}

// ---- child processes: every one is killed at the end, whatever happens --------------------------------

const children = new Set();
const cleanups = [];
let cleaning;

export function track(child, name) {
  child.benchName = name;
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function killAll() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * Registers the clean-up of what the run created outside its processes (Redis keys, a schema):
 * `async` runs in the normal path (and on SIGINT/SIGTERM/deadline); `sync` is the fallback the 'exit'
 * handler runs when the normal path did not (it may only block, e.g. a spawnSync).
 */
export function onCleanup(async, sync) {
  cleanups.push({ async, sync, done: false });
}

/** Stops every child (SIGTERM, then SIGKILL after 2 s) and runs the clean-ups. Idempotent. */
export function cleanup() {
  cleaning ??= (async () => {
    await Promise.all([...children].map(stop));
    for (const c of [...cleanups].reverse()) {
      try {
        await c.async();
        c.done = true;
      } catch (error) {
        process.stderr.write(`bench: clean-up failed: ${error instanceof Error ? error.message : error}\n`);
      }
    }
  })();
  return cleaning;
}

/** Exit handlers and an overall deadline; returns nothing, call once at start. */
export function installExitHandlers(deadlineMs) {
  process.on('exit', () => {
    killAll();
    for (const c of cleanups) {
      if (c.done || !c.sync) continue;
      try {
        c.sync();
      } catch {
        // best effort
      }
    }
  });
  const abort = (why, code) => {
    process.stderr.write(`bench: ${why}; cleaning up\n`);
    killAll();
    cleanup().finally(() => process.exit(code));
    setTimeout(() => process.exit(code), 10_000).unref();
  };
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => abort(signal, 130));
  setTimeout(() => abort(`still running after ${deadlineMs} ms, giving up`, 1), deadlineMs).unref();
}

/** Stops a child with SIGTERM, then SIGKILL when it is still there after 2 s. */
export function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 2_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/**
 * BENCH_PROFILE_DIR: the hubs and workers run with --cpu-prof (BENCH_PROFILE=heap: --heap-prof, sampled
 * allocations), their profiles written there on exit.
 */
const profileArgs = process.env.BENCH_PROFILE_DIR
  ? process.env.BENCH_PROFILE === 'heap'
    ? ['--heap-prof', `--heap-prof-dir=${process.env.BENCH_PROFILE_DIR}`]
    : ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`]
  : [];

/** Starts `node dist/cli/main.js <args>` and resolves once its stdout matches `ready` (15 s at most). */
export function startCli(name, args, ready) {
  const child = track(
    spawn(process.execPath, [...profileArgs, join(root, 'dist/cli/main.js'), ...args], {
      cwd: root,
      env: { ...process.env, LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
    name,
  );
  child.warnings = [];
  let out = '';
  const collect = (chunk) => {
    const text = chunk.toString();
    if (out.length < 8_000) out += text;
    for (const line of text.split('\n')) {
      if (/"level":(40|50|60)|Error/.test(line) && child.warnings.length < 20) {
        child.warnings.push(line.slice(0, 400));
      }
    }
    return text;
  };
  child.stderr.on('data', collect);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 15 s: ${out}`)), 15_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? signal}) before it was ready: ${out}`));
    });
    child.stdout.on('data', (chunk) => {
      collect(chunk);
      const match = ready.exec(out);
      if (match && !child.ready) {
        child.ready = true;
        child.match = match;
        clearTimeout(timer);
        resolve(child);
      }
    });
  });
}

/** `relayhub serve --backplane streams` on a free loopback port; resolves with the child (`.port`). */
export async function startHub({ name, redisUrl, prefix, secret, instanceId, databaseUrl }) {
  const child = await startCli(
    name,
    serveCommand('streams', redisUrl, prefix, [
      '--instance-id',
      instanceId,
      '--jwt-secret',
      secret,
      '--database-url',
      databaseUrl,
    ]),
    /listening on port (\d+)/,
  );
  child.port = Number(child.match[1]);
  return child;
}

/** `relayhub worker`; resolves once it printed that it started. */
export function startWorker({ name, redisUrl, prefix, databaseUrl, instanceId }) {
  return startCli(
    name,
    [
      'worker',
      '--redis-url',
      redisUrl,
      '--database-url',
      databaseUrl,
      '--channel-prefix',
      prefix,
      '--instance-id',
      instanceId,
    ],
    /relayhub worker (\S+) started/,
  );
}

/** Prints what the children logged at warn level or above (at most 20 lines each). */
export function printWarnings() {
  for (const child of children) {
    if (child.warnings?.length > 0) {
      console.log(`  ${child.benchName} logged:\n    ${child.warnings.join('\n    ')}`);
    }
  }
}

// ---- the load generator -------------------------------------------------------------------------------

/**
 * Forks bench/reliable-clients.mjs. `request(message, replyType)` sends and resolves with the next reply of
 * that type; `onProgress` is called with every progress report.
 */
export function forkClients() {
  const child = track(
    fork(join(here, 'reliable-clients.mjs'), [], {
      cwd: root,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
    }),
    'clients',
  );
  const waiting = new Map();
  const api = {
    child,
    onProgress: undefined,
    request(message, replyType, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.delete(replyType);
          reject(new Error(`load generator: no '${replyType}' within ${timeoutMs} ms`));
        }, timeoutMs);
        waiting.set(replyType, (reply) => {
          clearTimeout(timer);
          resolve(reply);
        });
        child.send(message);
      });
    },
  };
  child.on('message', (message) => {
    if (message.type === 'progress') return api.onProgress?.(message);
    if (message.type === 'log') return console.log(`  clients: ${message.text}`);
    if (message.type === 'error') {
      for (const [, resolve] of waiting) resolve({ type: 'error', error: message.error });
      waiting.clear();
      return console.error(`  clients: ${message.error}`);
    }
    const resolve = waiting.get(message.type);
    waiting.delete(message.type);
    resolve?.(message);
  });
  child.once('exit', (code, signal) => {
    for (const [type, resolve] of waiting)
      resolve({ type, error: `load generator exited (${code ?? signal})` });
    waiting.clear();
  });
  return api;
}

/**
 * The load generator's clock minus ours (ms), from IPC round trips: for the fastest of `rounds`, the child's
 * reading is taken to fall half-way through the round trip. Error at most half that round trip.
 */
export async function clockOffset(clients, rounds = 30) {
  let best = { rtt: Infinity, offset: 0 };
  for (let seq = 0; seq < rounds; seq++) {
    const sent = now();
    const reply = await clients.request({ type: 'clock', seq }, 'clock');
    const back = now();
    if (back - sent < best.rtt) best = { rtt: back - sent, offset: reply.at - (sent + back) / 2 };
  }
  return best;
}

/**
 * Runs one phase: `count` messages, at most `window` sent but not yet acked by a client, each sent with
 * `sendOne(i, meta)` where meta = `{ p, i, t }` (t: send time). Waits until every message was acked, or no
 * ack came for `idleMs`, or `maxMs` passed. Returns the figures, on our clock.
 */
export async function runPhase(
  clients,
  { phase, count, window, sendOne, offset, idleMs = 10_000, maxMs = 60_000 },
) {
  // note: an open-loop phase (the window holds every message) needs no progress to refill its window: the
  // load generator then reports every 10 ms instead of every turn, so that its reports do not add an IPC
  // wake-up per message to the load being measured (latencies come from its own receive times anyway).
  const progressMs = window >= count ? 10 : 0;
  const ready = await clients.request({ type: 'phase', phase, expected: count, progressMs }, 'phase-ready');
  if (ready.error) throw new Error(ready.error);
  let sent = 0;
  let acked = 0;
  let errors = 0;
  let firstError;
  let lastProgress = now();
  const t0 = now();
  let finish;
  const done = new Promise((resolve) => (finish = resolve));
  const pump = () => {
    while (sent < count && sent - acked < window) {
      const i = sent++;
      const meta = { p: phase, i, t: now() };
      sendOne(i, meta).catch((error) => {
        errors++;
        firstError ??= error;
      });
    }
  };
  clients.onProgress = (message) => {
    if (message.phase !== phase) return;
    lastProgress = now();
    acked = Math.max(acked, message.acked);
    if (acked >= count) finish();
    else pump();
  };
  const watchdog = setInterval(() => {
    pump(); // note: in case a wake-up was missed
    const at = now();
    if (at - lastProgress > idleMs || at - t0 > maxMs) finish();
  }, 20);
  pump();
  await done;
  const sendEnd = now();
  clearInterval(watchdog);
  clients.onProgress = undefined;
  const report = await clients.request({ type: 'report' }, 'report');
  if (report.error) throw new Error(report.error);
  const latencies = [];
  for (let i = 0; i < count; i++) if (report.recv[i] !== 0) latencies.push(report.lat[i] - offset);
  const lastAt = report.lastAt - offset;
  const seconds = (lastAt - t0) / 1_000;
  return {
    sent,
    received: report.received,
    lost: count - report.received,
    duplicates: report.duplicates,
    foreign: report.foreign,
    errors,
    firstError: firstError ? String(firstError?.message ?? firstError) : undefined,
    seconds,
    perSecond: report.received / seconds,
    ...percentiles(latencies),
    recv: report.recv,
    t0,
    drainedAt: sendEnd,
  };
}

export function percentiles(values) {
  const sorted = Float64Array.from(values).sort();
  const pick = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return { p50: pick(0.5), p99: pick(0.99), max: sorted[sorted.length - 1] ?? NaN };
}

// ---- CPU accounting (/proc) ---------------------------------------------------------------------------

export function ticksPerSecond() {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  return Number(r.stdout?.trim()) || 100;
}

export function cpuTicks(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return NaN;
  }
}

/** Busy ticks of the whole machine (all cores). */
function machineTicks() {
  try {
    const [, user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8')
      .split('\n', 1)[0]
      .trim()
      .split(/\s+/)
      .map(Number);
    return user + nice + system + irq + softirq + steal;
  } catch {
    return NaN;
  }
}

/** Pids of every process named `postgres` (the server and its backends), summed as one. */
export function postgresPids() {
  const r = spawnSync('pgrep', ['-x', 'postgres'], { encoding: 'utf8' });
  return (r.stdout ?? '').split('\n').filter(Boolean).map(Number);
}

/**
 * Starts CPU accounting over `named` ({ name: pid | pid[] }); the returned function gives each one's CPU in
 * % of one core since then, and `other`: the rest of the machine (other work on the cores distorts the
 * figures; the tables show it).
 */
export function cpuSampler(named, hz) {
  const entries = Object.entries(named).map(([name, pids]) => [name, [pids].flat().filter(Boolean)]);
  const read = () => entries.map(([, pids]) => pids.reduce((sum, pid) => sum + (cpuTicks(pid) || 0), 0));
  const start = read();
  const machineStart = machineTicks();
  const t0 = performance.now();
  return () => {
    const seconds = (performance.now() - t0) / 1_000;
    const pct = (ticks) => Math.round((ticks / hz / seconds) * 100);
    const used = read().map((v, i) => v - start[i]);
    const ours = used.reduce((a, b) => a + b, 0);
    const other = machineTicks() - machineStart - ours;
    const figures = {
      ...Object.fromEntries(entries.map(([name], i) => [name, pct(used[i])])),
      other: Math.max(0, pct(other)),
    };
    // note: not enumerable, so that the tables of percentages do not show it.
    Object.defineProperty(figures, 'seconds', {
      value: Object.fromEntries(entries.map(([name], i) => [name, used[i] / hz])),
    });
    return figures;
  };
}

/** How busy the machine is (% of one core) over `ms`. */
export async function machineBusy(hz, ms = 500) {
  const before = machineTicks();
  await sleep(ms);
  return Math.round(((machineTicks() - before) / hz / (ms / 1_000)) * 100);
}

/** Waits (at most `maxMs`) until the machine is below `threshold` % busy; returns the last reading. */
export async function waitForQuiet(hz, maxMs, threshold = 30) {
  const started = performance.now();
  for (;;) {
    const busy = await machineBusy(hz);
    if (busy <= threshold || performance.now() - started >= maxMs) {
      return { busy, waited: (performance.now() - started) / 1_000 };
    }
  }
}

// ---- Redis --------------------------------------------------------------------------------------------

export function redisClient(url) {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, connectTimeout: 3_000 });
  redis.on('error', () => undefined);
  return redis;
}

/** The Redis server's pid when it runs on this machine (for the CPU figures). */
export async function redisPid(redis) {
  const info = await redis.info('server');
  const pid = Number(/process_id:(\d+)/.exec(info)?.[1]);
  return pid && cpuTicks(pid) >= 0 ? pid : undefined;
}

/** Deletes every key of a run's unique prefix (SCAN + UNLINK; never a flush). */
export async function deletePrefix(redisUrl, prefix) {
  if (!/^bench-[a-z]+-[0-9a-f]{8}$/.test(prefix)) throw new Error(`refusing to delete keys of '${prefix}'`);
  const redis = redisClient(redisUrl);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1_000);
      cursor = next;
      if (keys.length > 0) await redis.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

/** The same, from the 'exit' handler: in a child node process, synchronously. */
export function deletePrefixSync(redisUrl, prefix) {
  const code = `import('${join(here, 'reliable-lib.mjs')}').then((m) => m.deletePrefix(${JSON.stringify(
    redisUrl,
  )}, ${JSON.stringify(prefix)}))`;
  spawnSync(process.execPath, ['-e', code], { cwd: root, timeout: 10_000, stdio: 'ignore' });
}

/** Redis' command counters (INFO commandstats): calls and microseconds per command. */
export async function commandStats(redis) {
  const info = await redis.info('commandstats');
  const stats = {};
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    stats[match[1]] = { calls: Number(match[2]), usec: Number(match[3]) };
  }
  return stats;
}

export function diffStats(before, after) {
  const diff = {};
  for (const [name, { calls, usec }] of Object.entries(after)) {
    const d = calls - (before[name]?.calls ?? 0);
    if (d > 0) diff[name] = { calls: d, usec: usec - (before[name]?.usec ?? 0) };
  }
  return diff;
}

// ---- figures ------------------------------------------------------------------------------------------

export const fmt = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a');
export const ms = (n) => (Number.isFinite(n) ? `${n.toFixed(1)} ms` : 'n/a');

export function table(rows) {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  const line = (r) => `| ${r.map((cell, c) => String(cell).padEnd(widths[c])).join(' | ')} |`;
  return [
    line(rows[0]),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...rows.slice(1).map(line),
  ].join('\n');
}

// ---- Postgres -----------------------------------------------------------------------------------------

/** `baseUrl` whose sessions use only `schema`, named `applicationName` (so that we can find our own). */
export function schemaUrl(baseUrl, schema, applicationName) {
  const url = new URL(baseUrl);
  url.searchParams.set('options', `-c search_path=${schema}`);
  if (applicationName) url.searchParams.set('application_name', applicationName);
  return url.toString();
}

/**
 * Terminates the sessions named `<appPrefix>...` (this run's workers, hubs and producers, never anything
 * else), then drops the schema.
 */
export async function dropSchema(baseUrl, schema, appPrefix) {
  if (!/^bench_[0-9a-f]{8}$/.test(schema)) throw new Error(`refusing to drop schema '${schema}'`);
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: baseUrl, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    await client.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE datname = current_database() AND application_name LIKE $1 AND pid <> pg_backend_pid()`,
      [`${appPrefix}%`],
    );
    await client.query(`SET lock_timeout = '10s'`);
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}

/** The same, from the 'exit' handler: in a child node process, synchronously. */
export function dropSchemaSync(baseUrl, schema, appPrefix) {
  const args = [baseUrl, schema, appPrefix].map((a) => JSON.stringify(a)).join(', ');
  const code = `import('${join(here, 'reliable-lib.mjs')}').then((m) => m.dropSchema(${args}))`;
  spawnSync(process.execPath, ['-e', code], { cwd: root, timeout: 15_000, stdio: 'ignore' });
}
