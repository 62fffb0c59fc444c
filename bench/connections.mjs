// Idle-connections benchmark (`npm run bench:connections`): how much one server process pays to hold many
// idle connections. For each system in turn (relayhub `serve` on the PUB/SUB backplane; socket.io with
// @socket.io/redis-adapter; a plain `ws` server), it starts the server as its own process, opens
// BENCH_CONNECTIONS (20,000) connections to it from BENCH_CLIENT_PROCS (4) client processes
// (bench/connections-clients.mjs: raw WebSocket clients, relayhub's negotiating and pinging every 15 s as
// the official client does), lets them sit idle for BENCH_IDLE_MS (30 s: two relayhub keep-alive
// intervals, more than one socket.io ping interval), then closes them and stops the server. Figures,
// from /proc/<server pid>: RSS per connection (RSS once idle minus RSS before the first connection, over
// the connections), CPU while idle (% of one core), and connections opened per second (negotiate,
// upgrade and handshake included, BENCH_CONCURRENCY (64) in flight per client process). relayhub runs
// with a SIGUSR2 handler that forces a full GC (bench/server-env.mjs): once before the baseline, and once
// after the idle figures were taken, for its live heap and RSS per connection after a full GC.
//
// Each server needs a file descriptor per connection: the script raises the open-files limit of the
// processes it starts (`ulimit -n` in the shell that execs them) as far as the system allows, and opens
// fewer connections (and says so) when it cannot raise it enough.
//
// Knobs: BENCH_CONNECTIONS, BENCH_CLIENT_PROCS, BENCH_CONCURRENCY, BENCH_IDLE_MS, BENCH_SETTLE_MS (3000:
// quiet time before the idle measurement), BENCH_SYSTEMS (relayhub,socketio,ws), BENCH_REDIS_URL
// (redis://127.0.0.1:6379, loopback only). Ends with one line `RESULT <json>`.
import './help.mjs';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import {
  assertLoopback,
  envNumber as env,
  installExitHandlers,
  root,
  sleep,
  stop,
  ticksPerSecond,
  track,
} from './reliable-lib.mjs';
import {
  GC_ON_SIGNAL_ARGS,
  gcMemoryOf,
  pubsubServeArgs,
  socketioServerArgs,
  withoutServerSettings,
} from './server-env.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const HUB_PATH = '/hubs/demo';

const wanted = Math.round(env('BENCH_CONNECTIONS', 20_000));
const clientProcs = Math.round(env('BENCH_CLIENT_PROCS', 4));
const concurrency = Math.round(env('BENCH_CONCURRENCY', 64));
const idleMs = env('BENCH_IDLE_MS', 30_000);
const settleMs = env('BENCH_SETTLE_MS', 3_000);
const systems = (process.env.BENCH_SYSTEMS ?? 'relayhub,socketio,ws').split(',').map((s) => s.trim());
const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
for (const s of systems) {
  if (!['relayhub', 'socketio', 'ws'].includes(s)) throw new Error(`unknown system '${s}'`);
}
assertLoopback('BENCH_REDIS_URL', redisUrl);

// ---- the open-files limit ------------------------------------------------------------------------

/** The highest `ulimit -n` a child shell gets to, trying the wanted value first, then the hard limit. */
function openFilesLimit(want) {
  const shell = (script) => execFileSync('sh', ['-c', script], { encoding: 'utf8' }).trim();
  try {
    const got = Number(shell(`ulimit -n ${want} 2>/dev/null && ulimit -n`));
    if (got >= want) return { limit: got, raised: true };
  } catch {
    // note: not allowed: fall back to the hard limit
  }
  const hard = shell('ulimit -Hn');
  const limit = hard === 'unlimited' ? want : Number(hard);
  return { limit, raised: false };
}

/** Server fds besides connections: stdio, the listener, Redis, libuv, V8's and the HTTP agent's. */
const SPARE_FDS = 200;
const files = openFilesLimit(wanted + SPARE_FDS + 1_000);
const connections = Math.min(wanted, files.limit - SPARE_FDS);
const limitNote = files.raised
  ? `open-files limit raised to ${files.limit}`
  : `open-files limit could not be raised past ${files.limit}` +
    (connections < wanted ? `: ${connections} connections instead of ${wanted}` : '');

// ---- processes: every child is killed at the end, whatever happens --------------------------------

installExitHandlers(60_000 + systems.length * (idleMs + settleMs + 90_000 + connections * 3));

/** Starts `node args` under `ulimit -n` (with an IPC channel when `ipc`). */
function startNode(args, { ipc = false } = {}) {
  const quoted = args.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
  const child = spawn('sh', ['-c', `ulimit -n ${files.limit} && exec '${process.execPath}' ${quoted}`], {
    cwd: root,
    env: { ...withoutServerSettings(process.env), LOG_LEVEL: 'warn' },
    stdio: ipc ? ['ignore', 'inherit', 'inherit', 'ipc'] : ['ignore', 'pipe', 'pipe'],
  });
  return track(child, args[0]);
}

const serverArgs = (system, tag) => {
  switch (system) {
    case 'relayhub':
      // note: the GC flags only add a SIGUSR2 handler, sent once the idle figures are taken.
      return [
        ...GC_ON_SIGNAL_ARGS,
        ...pubsubServeArgs(redisUrl, `bench-conn-${tag}`, ['--max-connections-per-address', '0']),
      ];
    case 'socketio':
      return socketioServerArgs(redisUrl, `bench-conn-sio-${tag}`);
    default:
      return ['bench/ws-server.mjs', '--port', '0'];
  }
};

/** Starts a server and resolves with it once it prints `listening on port N`. */
function startServer(system, tag) {
  const child = startNode(serverArgs(system, tag));
  let out = '';
  child.warnings = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${system} did not start within 15 s: ${out}`)), 15_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${system} exited (${code}) before listening: ${out}`));
    });
    const collect = (chunk) => {
      const text = chunk.toString();
      if (out.length < 4_000) out += text;
      for (const line of text.split('\n')) {
        const memory = gcMemoryOf(line);
        if (memory) child.emit('gc-memory', memory);
        if (
          /"level":(40|50|60)|Error/.test(line) &&
          !line.includes('JWT_SECRET is not set') &&
          !line.includes('Neither CONNECTION_TOKEN_SECRET nor JWT_SECRET is set') &&
          child.warnings.length < 10
        )
          child.warnings.push(line.slice(0, 300));
      }
      const match = /listening on port (\d+)/.exec(out);
      if (match && !child.port) {
        child.port = Number(match[1]);
        clearTimeout(timer);
        resolve(child);
      }
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
  });
}

/** relayhub only: forces a full GC in the server; resolves with its memory after it (undefined: none). */
function memoryAfterGc(server) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), 30_000);
    server.once('gc-memory', (memory) => {
      clearTimeout(timer);
      resolve({ ...memory, rss: rssBytes(server.pid) });
    });
    server.kill('SIGUSR2');
  });
}

// ---- /proc ------------------------------------------------------------------------------------------

const clockTicks = ticksPerSecond();

function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

function rssBytes(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) * 1024;
}

/** relayhub's V8 heap from its /metrics (prom-client's default metrics): used bytes, and per space. */
async function relayhubHeap(port) {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const used = Number(/^nodejs_heap_size_used_bytes (\S+)/m.exec(text)?.[1]);
    const total = Number(/^nodejs_heap_size_total_bytes (\S+)/m.exec(text)?.[1]);
    const newSpace = Number(/^nodejs_heap_space_size_total_bytes\{space="new"\} (\S+)/m.exec(text)?.[1]);
    return { used, total, newSpace };
  } catch {
    return undefined;
  }
}

// ---- one system ---------------------------------------------------------------------------------------

/** Sends `message` to every client process and resolves with their answers of type `reply`. */
const ask = (clients, message, reply, perClient) =>
  Promise.all(
    clients.map(
      (client, i) =>
        new Promise((resolve) => {
          const onMessage = (answer) => {
            if (answer?.type !== reply) return;
            client.off('message', onMessage);
            resolve(answer);
          };
          client.on('message', onMessage);
          client.send(perClient ? perClient(message, i) : message);
        }),
    ),
  );

async function measure(system, tag) {
  const server = await startServer(system, tag);
  const clients = Array.from({ length: clientProcs }, () =>
    startNode([join(here, 'connections-clients.mjs')], { ipc: true }),
  );
  try {
    // note: relayhub's start-up garbage is collected before the baseline (which can only raise its figure).
    const gcBefore = system === 'relayhub' ? await memoryAfterGc(server) : undefined;
    await sleep(1_000);
    const rssBefore = rssBytes(server.pid);
    const heapBefore = system === 'relayhub' ? await relayhubHeap(server.port) : undefined;
    const base = Math.floor(connections / clientProcs);
    const openCpu0 = cpuSeconds(server.pid);
    const t0 = performance.now();
    const opened = await ask(clients, { type: 'open' }, 'opened', (m, i) => ({
      ...m,
      spec: {
        system,
        baseUrl: `http://127.0.0.1:${server.port}`,
        hubPath: HUB_PATH,
        count: base + (i < connections % clientProcs ? 1 : 0),
        concurrency,
      },
    }));
    const openMs = performance.now() - t0;
    const openCpu = cpuSeconds(server.pid) - openCpu0;
    const count = opened.reduce((sum, o) => sum + o.opened, 0);
    const failed = opened.reduce((sum, o) => sum + o.failed, 0);
    const firstError = opened.find((o) => o.firstError)?.firstError;
    await sleep(settleMs);
    const load = loadavg()[0];
    const cpu0 = cpuSeconds(server.pid);
    const i0 = performance.now();
    await sleep(idleMs);
    const idleCpuPercent = ((cpuSeconds(server.pid) - cpu0) / ((performance.now() - i0) / 1_000)) * 100;
    const rssIdle = rssBytes(server.pid);
    const heapIdle = system === 'relayhub' ? await relayhubHeap(server.port) : undefined;
    const stillOpen = (await ask(clients, { type: 'count' }, 'count')).reduce((sum, c) => sum + c.open, 0);
    // note: after the idle figures: the heap that is live (and the RSS) once the garbage is collected.
    const gcIdle = gcBefore ? await memoryAfterGc(server) : undefined;
    const result = {
      connections: count,
      failed,
      ...(firstError ? { firstError } : {}),
      stillOpen,
      rssBytesPerConnection: Math.round((rssIdle - rssBefore) / Math.max(1, count)),
      rssBeforeBytes: rssBefore,
      rssIdleBytes: rssIdle,
      ...(heapBefore && heapIdle
        ? {
            heapUsedBytesPerConnection: Math.round((heapIdle.used - heapBefore.used) / Math.max(1, count)),
            heapTotalBytesPerConnection: Math.round((heapIdle.total - heapBefore.total) / Math.max(1, count)),
            newSpaceBytes: heapIdle.newSpace,
          }
        : {}),
      ...(gcBefore && gcIdle
        ? {
            heapAfterGcBytesPerConnection: Math.round(
              (gcIdle.heapUsed - gcBefore.heapUsed) / Math.max(1, count),
            ),
            rssAfterGcBytesPerConnection: Math.round((gcIdle.rss - gcBefore.rss) / Math.max(1, count)),
          }
        : {}),
      idleCpuPercent: Number(idleCpuPercent.toFixed(2)),
      connectionsPerSecond: Math.round(count / (openMs / 1_000)),
      openCpuMicrosPerConnection: Math.round((openCpu / Math.max(1, count)) * 1e6),
      openSeconds: Number((openMs / 1_000).toFixed(2)),
      loadAverage: Number(load.toFixed(2)),
      warnings: server.warnings,
    };
    await ask(clients, { type: 'close' }, 'closed');
    return result;
  } finally {
    await Promise.all([...clients, server].map(stop));
  }
}

// ---- run and report ---------------------------------------------------------------------------------

console.log(
  `idle-connections benchmark: ${connections} connections per system from ${clientProcs} client processes ` +
    `(${concurrency} opening at once each), ${idleMs} ms idle; ${limitNote}; node ${process.version}, ` +
    `${availableParallelism()} cores, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
);
const tag = randomBytes(4).toString('hex');
const results = {};
for (const system of systems) {
  results[system] = await measure(system, tag);
  const r = results[system];
  console.log(
    `  ${system.padEnd(8)} ${r.connections} open (${r.failed} failed${r.firstError ? `: ${r.firstError}` : ''}; ` +
      `${r.stillOpen} still open after idling), ${r.rssBytesPerConnection} B RSS/connection ` +
      `(${(r.rssBeforeBytes / 2 ** 20).toFixed(1)} -> ${(r.rssIdleBytes / 2 ** 20).toFixed(1)} MiB), ` +
      `${r.idleCpuPercent}% of a core idle, ${r.connectionsPerSecond} connections/s ` +
      (r.heapUsedBytesPerConnection !== undefined
        ? `(V8 heap used ${r.heapUsedBytesPerConnection} B/connection, committed ` +
          `${r.heapTotalBytesPerConnection} B/connection, new space ${(r.newSpaceBytes / 2 ** 20).toFixed(1)} MiB; ` +
          `after a full GC: heap ${r.heapAfterGcBytesPerConnection} B/connection, RSS ${r.rssAfterGcBytesPerConnection} B/connection) `
        : '') +
      `(${r.openSeconds} s; server CPU ${r.openCpuMicrosPerConnection} us per connection opened), ` +
      `load average ${r.loadAverage}`,
  );
  for (const warning of r.warnings) console.log(`    ${system} logged: ${warning}`);
}

const row = (name, r) =>
  `| ${name.padEnd(8)} | ${String(r.rssBytesPerConnection).padStart(10)} | ${r.idleCpuPercent.toFixed(2).padStart(9)} | ` +
  `${String(r.connectionsPerSecond).padStart(13)} | ${String(r.openCpuMicrosPerConnection).padStart(17)} |`;
console.log('\n| system   | B RSS/conn | idle CPU% | connections/s | server us/opened |');
console.log('|----------|------------|-----------|---------------|------------------|');
for (const system of systems) console.log(row(system, results[system]));

const ratios = {};
const relayhub = results.relayhub;
for (const other of ['socketio', 'ws']) {
  if (!relayhub || !results[other]) continue;
  const o = results[other];
  ratios[`${other}`] = {
    rssBytesPerConnection: Number((relayhub.rssBytesPerConnection / o.rssBytesPerConnection).toFixed(2)),
    idleCpuPercent: Number((relayhub.idleCpuPercent / Math.max(0.01, o.idleCpuPercent)).toFixed(2)),
    connectionsPerSecond: Number((relayhub.connectionsPerSecond / o.connectionsPerSecond).toFixed(2)),
    openCpuPerConnection: Number(
      (relayhub.openCpuMicrosPerConnection / Math.max(1, o.openCpuMicrosPerConnection)).toFixed(2),
    ),
  };
  console.log(
    `relayhub / ${other}: RSS per connection ${ratios[other].rssBytesPerConnection}x, idle CPU ` +
      `${ratios[other].idleCpuPercent}x, connections/s ${ratios[other].connectionsPerSecond}x, server CPU ` +
      `per connection opened ${ratios[other].openCpuPerConnection}x`,
  );
}
if (relayhub) {
  const met = (ok) => (ok ? 'met' : 'NOT met');
  console.log(
    `targets: <= 6 KB RSS/connection ${met(relayhub.rssBytesPerConnection <= 6 * 1024)}, <= 5% of a core idle ` +
      `${met(relayhub.idleCpuPercent <= 5)}, >= 1,500 connections/s ${met(relayhub.connectionsPerSecond >= 1_500)}`,
  );
}
const strip = ({ warnings, ...r }) => r;
console.log(
  `RESULT ${JSON.stringify({
    ...(relayhub
      ? {
          rssBytesPerConnection: relayhub.rssBytesPerConnection,
          idleCpuPercent: relayhub.idleCpuPercent,
          connectionsPerSecond: relayhub.connectionsPerSecond,
        }
      : {}),
    connections,
    openFilesLimit: files.limit,
    openFilesLimitRaised: files.raised,
    systems: Object.fromEntries(Object.entries(results).map(([k, v]) => [k, strip(v)])),
    ratios,
  })}`,
);
