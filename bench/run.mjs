// Fan-out benchmark (`npm run bench`): relayhub (2 `serve` processes, PUB/SUB backplane) against
// socket.io with @socket.io/redis-adapter (2 processes) on the same Redis and the same harness, plus a
// single-process plain `ws` reference and a corked one (`ws-cork`: joins each client's messages of one
// event-loop turn, as relayhub's write path does); the fan-out latency target is relayhub's p99 at 50
// broadcasts/s against `ws-cork`'s in the same run. See bench/README.md for what is measured and the knobs.
// Ends with one line `RESULT <json>`.
import './help.mjs';
import { spawn, fork, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEMO_HUB_PATH } from '../dist/index.js';
import { pubsubServeArgs, socketioServerArgs, withoutServerSettings } from './server-env.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');

const env = (name, fallback) => {
  const value = process.env[name];
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number (got '${value}').`);
  return n;
};

const config = {
  clients: Math.round(env('BENCH_CLIENTS', 500)),
  publishers: Math.round(env('BENCH_PUBLISHERS', 32)),
  durationMs: env('BENCH_DURATION_MS', 3_000),
  warmupMs: env('BENCH_WARMUP_MS', 1_500),
  rounds: Math.round(env('BENCH_ROUNDS', 3)),
  rates: (process.env.BENCH_RATES ?? '50,200').split(',').map((r) => {
    const n = Number(r);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`BENCH_RATES: positive numbers (got '${r}').`);
    return n;
  }),
  window: env('BENCH_WINDOW', 200),
  batch: Math.round(env('BENCH_BATCH', 20)),
  padding: 'x'.repeat(Math.round(env('BENCH_PAYLOAD', 48))),
  quietWaitMs: env('BENCH_QUIET_WAIT_MS', 30_000),
  phases: (process.env.BENCH_PHASES ?? 'saturation,rate').split(',').map((s) => s.trim()),
};
const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const systems = (process.env.BENCH_SYSTEMS ?? 'relayhub,relayhub-msgpack,relayhub-mixed,socketio,ws,ws-cork')
  .split(',')
  .map((s) => s.trim());
const socketioClient = process.env.BENCH_SOCKETIO_CLIENT ?? 'raw';
/** BENCH_PROFILE_DIR: start the server processes with --cpu-prof, profiles written there on exit. */
const profileArgs = process.env.BENCH_PROFILE_DIR
  ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`]
  : [];
const deadlineMs = env('BENCH_MAX_MS', 60_000 + 60_000 * systems.length);

const loopback = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$/;
if (!loopback.test(new URL(redisUrl).hostname)) {
  throw new Error(`BENCH_REDIS_URL must point at a loopback address (got ${redisUrl}).`);
}
if (!['official', 'raw'].includes(socketioClient)) throw new Error('BENCH_SOCKETIO_CLIENT: official or raw.');
for (const s of systems) {
  if (!['relayhub', 'relayhub-msgpack', 'relayhub-mixed', 'socketio', 'ws', 'ws-cork'].includes(s))
    throw new Error(`unknown system '${s}'`);
}
for (const phase of config.phases) {
  if (!['saturation', 'rate'].includes(phase)) throw new Error(`unknown phase '${phase}'`);
}

// ---- processes: every child is killed at the end, whatever happens ----------------------------------

const children = new Set();

function track(child, name) {
  child.benchName = name;
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function killAll(signal = 'SIGKILL') {
  for (const child of children) {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

process.on('exit', () => killAll());
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    killAll();
    process.exit(130);
  });
}
const deadline = setTimeout(() => {
  process.stderr.write(`bench: still running after ${deadlineMs} ms, giving up\n`);
  killAll();
  process.exit(1);
}, deadlineMs);
deadline.unref();

/** Stops a child with SIGTERM, then SIGKILL when it is still there after 2 s. */
function stop(child) {
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

/** Starts a server process and resolves with its port once it prints `... listening on port N`. */
function startServer(name, args) {
  const child = track(
    spawn(process.execPath, [...profileArgs, ...args], {
      cwd: root,
      // note: anonymous connections (no JWT_SECRET) and only the flags given here decide the setup.
      env: { ...withoutServerSettings(process.env), LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
    name,
  );
  const warnings = [];
  child.warnings = warnings;
  let out = '';
  const collect = (chunk) => {
    for (const line of chunk.toString().split('\n')) {
      if (
        /"level":(40|50|60)|Error|error/.test(line) &&
        !line.includes('JWT_SECRET is not set') &&
        warnings.length < 20
      )
        warnings.push(line.slice(0, 300));
    }
  };
  child.stderr.on('data', (chunk) => {
    if (out.length < 4_000) out += chunk.toString();
    collect(chunk);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 15 s: ${out}`)), 15_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}) before listening: ${out}`));
    });
    child.stdout.on('data', (chunk) => {
      const text = chunk.toString();
      if (out.length < 4_000) out += text;
      collect(text);
      const match = /listening on port (\d+)/.exec(out);
      if (match && !child.port) {
        child.port = Number(match[1]);
        clearTimeout(timer);
        resolve(child);
      }
    });
  });
}

function redisPid() {
  try {
    const info = execFileSync('redis-cli', ['-u', redisUrl, 'info', 'server'], {
      encoding: 'utf8',
      timeout: 5_000,
    });
    return Number(/process_id:(\d+)/.exec(info)?.[1]) || undefined;
  } catch {
    return undefined;
  }
}

function ticksPerSecond() {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
}

/** Starts the server processes of one system; resolves with them once they all listen. */
function startSystem(system, tag) {
  switch (system) {
    case 'relayhub':
    case 'relayhub-msgpack':
    case 'relayhub-mixed':
      return Promise.all(
        [1, 2].map((i) => startServer(`${system}-${i}`, pubsubServeArgs(redisUrl, `bench-${tag}-${system}`))),
      );
    case 'socketio':
      return Promise.all(
        [1, 2].map((i) => startServer(`socketio-${i}`, socketioServerArgs(redisUrl, `bench-sio-${tag}`))),
      );
    default:
      return Promise.all([
        startServer(system, [
          'bench/ws-server.mjs',
          '--port',
          '0',
          ...(system === 'ws-cork' ? ['--cork'] : []),
        ]),
      ]);
  }
}

const clientOf = (system) =>
  system.startsWith('relayhub')
    ? system
    : system === 'socketio'
      ? socketioClient === 'raw'
        ? 'socketio-raw'
        : 'socketio'
      : 'ws';

/**
 * Starts every system's servers (idle ones cost nothing) and one load generator, which takes the systems
 * in turns; resolves with its result. Everything is stopped at the end.
 */
async function runAll() {
  const tag = randomBytes(4).toString('hex');
  const started = [];
  try {
    const servers = {};
    for (const system of systems) {
      servers[system] = await startSystem(system, tag);
      for (const child of servers[system]) child.benchSystem = system;
      started.push(...servers[system]);
    }
    const loadgen = track(fork(join(here, 'loadgen.mjs'), [], { cwd: root, stdio: 'inherit' }), 'loadgen');
    started.push(loadgen);
    const redis = redisPid();
    const pids = [
      ...started
        .filter((c) => c !== loadgen)
        .map((c) => ({ name: c.benchName, pid: c.pid, system: c.benchSystem })),
      ...(redis ? [{ name: 'redis', pid: redis }] : []),
      { name: 'loadgen', pid: loadgen.pid },
    ];
    const result = await new Promise((resolve, reject) => {
      loadgen.on('message', (message) => {
        if (message.type === 'log') console.log(`  ${message.text}`);
        else if (message.type === 'result') resolve(message.result);
        else if (message.type === 'error') reject(new Error(`load generator: ${message.error}`));
      });
      loadgen.once('exit', (code) => reject(new Error(`load generator exited (${code}) without a result`)));
      loadgen.send({
        type: 'run',
        config: {
          ...config,
          systems: systems.map((name) => ({
            name,
            client: clientOf(name),
            servers: servers[name].map((s) => `http://127.0.0.1:${s.port}`),
          })),
          hubPath: DEMO_HUB_PATH,
          pids,
          ticksPerSecond: ticksPerSecond(),
        },
      });
    });
    for (const child of started) {
      if (child.warnings?.length > 0)
        console.log(`  ${child.benchName} logged:\n    ${child.warnings.join('\n    ')}`);
    }
    return result;
  } finally {
    await Promise.all(started.map(stop));
  }
}

// ---- report -------------------------------------------------------------------------------------------

const fmt = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a');
const ms = (n) => (Number.isFinite(n) ? `${n.toFixed(2)} ms` : 'n/a');

function table(rows) {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  const line = (r) => `| ${r.map((cell, c) => String(cell).padEnd(widths[c])).join(' | ')} |`;
  return [
    line(rows[0]),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...rows.slice(1).map(line),
  ].join('\n');
}

const label = {
  relayhub: 'relayhub json (2 procs, pubsub)',
  'relayhub-msgpack': 'relayhub messagepack (2 procs, pubsub)',
  'relayhub-mixed': 'relayhub half json, half messagepack',
  socketio: 'socket.io + redis-adapter (2 procs)',
  ws: 'plain ws.send loop (1 proc)',
  'ws-cork': 'ws, joined per turn (1 proc)',
};

console.log(
  `fan-out benchmark: ${config.clients} receivers, ${config.publishers} publishers, ${config.rounds} rounds of ` +
    `${config.durationMs} ms phases, window ${config.window} broadcasts, fixed rates ` +
    `${config.rates.map((r) => `${r}/s (${fmt(r * config.clients)} deliveries/s)`).join(' and ')}, ` +
    `payload ${config.padding.length} B, socket.io client: ${socketioClient}; ` +
    `node ${process.version}, ${availableParallelism()} cores`,
);
const NOT_RUN = {
  deliveriesPerSecond: NaN,
  lost: NaN,
  p50: NaN,
  p99: NaN,
  deliveries: 0,
  cpu: {},
  cpuSeconds: {},
};
const raw = await runAll();
const results = Object.fromEntries(
  systems.map((s) => {
    const r = raw.systems[s];
    return [
      s,
      {
        saturation: r.saturation ?? NOT_RUN,
        rates: Object.fromEntries(config.rates.map((rate) => [rate, r.rates[rate] ?? NOT_RUN])),
      },
    ];
  }),
);

/** Which system each server process belongs to (process name -> system). */
const ownerOf = (name) => raw.owners?.[name];
/** CPU time of a system's server processes (or of the load generator) per delivery, in microseconds. */
const perDelivery = (system, phase, which) => {
  const seconds = Object.entries(phase.cpuSeconds)
    .filter(([name]) => (which === 'servers' ? ownerOf(name) === system : name === which))
    .reduce((sum, [, s]) => sum + s, 0);
  return phase.deliveries > 0 ? ((seconds / phase.deliveries) * 1e6).toFixed(2) : 'n/a';
};
const lost = (system) =>
  [results[system].saturation, ...config.rates.map((r) => results[system].rates[r])]
    .map((phase) => fmt(phase.lost))
    .join(' / ');

const rows = [
  [
    'system',
    'deliveries/s (saturation)',
    ...config.rates.flatMap((r) => [`p50 at ${r}/s`, `p99 at ${r}/s`]),
    `lost (sat. / ${config.rates.map((r) => `${r}/s`).join(' / ')})`,
    'undisturbed rounds',
  ],
];
for (const system of systems) {
  const { saturation, rates } = results[system];
  rows.push([
    label[system],
    fmt(saturation.deliveriesPerSecond),
    ...config.rates.flatMap((r) => [ms(rates[r].p50), ms(rates[r].p99)]),
    lost(system),
    [saturation, ...config.rates.map((r) => rates[r])]
      .map((p) => (p.rounds ? `${p.clean}/${p.rounds}` : '-'))
      .join(' '),
  ]);
}
console.log(
  `\nmedians over the rounds the rest of the machine left alone (other <= 10% of a core), or over all ` +
    `${config.rounds} rounds when none was:`,
);
console.log(`${table(rows)}\n`);

const costRows = [
  [
    'system',
    'messages/frame (sat.)',
    'server CPU us/delivery (sat.)',
    'loadgen CPU us/delivery (sat.)',
    ...config.rates.map((r) => `server CPU us/delivery at ${r}/s`),
  ],
];
for (const system of systems) {
  const { saturation, rates } = results[system];
  costRows.push([
    system,
    Number.isFinite(saturation.messagesPerFrame) ? saturation.messagesPerFrame.toFixed(1) : 'n/a',
    perDelivery(system, saturation, 'servers'),
    perDelivery(system, saturation, 'loadgen'),
    ...config.rates.map((r) => perDelivery(system, rates[r], 'servers')),
  ]);
}
console.log('where the CPU goes (totals over the rounds; a frame is one WebSocket message to one client):');
console.log(`${table(costRows)}\n`);

const names = [
  ...new Set(
    systems.flatMap((s) =>
      [results[s].saturation, ...Object.values(results[s].rates)].flatMap((p) => Object.keys(p.cpu)),
    ),
  ),
].filter((name) => name === 'redis' || name === 'loadgen' || name === 'other' || ownerOf(name) !== undefined);
const cpuRows = [['system', 'phase', ...names]];
for (const system of systems) {
  const phases = [
    ['saturation', results[system].saturation],
    ...config.rates.map((r) => [`${r}/s`, results[system].rates[r]]),
  ];
  for (const [phase, figures] of phases) {
    if (Object.keys(figures.cpu).length === 0) continue;
    cpuRows.push([
      system,
      phase,
      ...names.map((k) => (ownerOf(k) === undefined || ownerOf(k) === system ? (figures.cpu[k] ?? '') : '')),
    ]);
  }
}
console.log('mean CPU % per process during each phase (100 = one core; other = the rest of the machine):');
console.log(`${table(cpuRows)}\n`);

/**
 * relayhub / socket.io for one figure. Both systems ran each phase of a round a few seconds apart, so the
 * ratio is taken per round and only over the rounds where neither was disturbed by other work; when
 * there is none, it falls back to the ratio of the medians (and says so).
 */
function ratio(pick, relayhubPhase, socketioPhase) {
  // note: the names say relayhub / socket.io; the MessagePack ratios below use it for relayhub pairs too.
  const BUSY = 10; // note: the same threshold as in loadgen.mjs
  const pairs = (relayhubPhase.perRound ?? [])
    .map((r, i) => [r, socketioPhase.perRound?.[i]])
    .filter(([r, s]) => s && !(r.cpu.other > BUSY) && !(s.cpu.other > BUSY));
  if (pairs.length === 0) {
    return {
      value: pick(relayhubPhase) / pick(socketioPhase),
      basis: 'ratio of the medians: no round clean for both',
    };
  }
  const ratios = pairs.map(([r, s]) => pick(r) / pick(s)).sort((x, y) => x - y);
  const mid = Math.floor(ratios.length / 2);
  const value = ratios.length % 2 ? ratios[mid] : (ratios[mid - 1] + ratios[mid]) / 2;
  return {
    value,
    basis: `median of ${ratios.length} round${ratios.length > 1 ? 's' : ''} clean for both: ${ratios.map((x) => x.toFixed(2)).join(', ')}`,
  };
}

// note: per-round results are listed in the same order for both systems (round 1, 2, ...).
if (results.relayhub && results.socketio && raw.systems.relayhub && raw.systems.socketio) {
  const r = results.relayhub;
  const s = results.socketio;
  const sat = ratio((p) => p.deliveriesPerSecond, r.saturation, s.saturation);
  console.log(
    `relayhub / socket.io deliveries/s at saturation: ${sat.value.toFixed(2)}x ` +
      `(target >= 3x: ${sat.value >= 3 ? 'met' : 'NOT met'}; ${sat.basis})`,
  );
  for (const rate of config.rates) {
    const p99 = ratio((p) => p.p99, r.rates[rate], s.rates[rate]);
    const p50 = ratio((p) => p.p50, r.rates[rate], s.rates[rate]);
    console.log(
      `relayhub / socket.io at ${rate} broadcasts/s: p99 ${p99.value.toFixed(2)}x ` +
        `(lower: ${p99.value < 1 ? 'yes' : 'NO'}; ${p99.basis}), p50 ${p50.value.toFixed(2)}x`,
    );
  }
}
for (const variant of ['relayhub-msgpack', 'relayhub-mixed']) {
  if (!results.relayhub || !results[variant] || !raw.systems.relayhub || !raw.systems[variant]) continue;
  const v = results[variant];
  const j = results.relayhub;
  const sat = ratio((p) => p.deliveriesPerSecond, v.saturation, j.saturation);
  const top = Math.max(...config.rates);
  const p99 = ratio((p) => p.p99, v.rates[top], j.rates[top]);
  console.log(
    `${variant} / relayhub json: deliveries/s at saturation ${sat.value.toFixed(2)}x (${sat.basis}); ` +
      `p99 at ${top}/s ${p99.value.toFixed(2)}x`,
  );
}
/** relayhub's p99 at the lowest fixed rate (50/s by default) against the corked single-process ws server. */
const headline = {};
if (results.relayhub && raw.systems.relayhub) {
  const sat = results.relayhub.saturation;
  if (Number.isFinite(sat.deliveriesPerSecond))
    headline.deliveriesPerSecond = Math.round(sat.deliveriesPerSecond);
  const low = Math.min(...config.rates);
  headline.rate = low;
  headline.p99Ms = Number(results.relayhub.rates[low].p99.toFixed(2));
  if (results['ws-cork'] && raw.systems['ws-cork']) {
    const p99 = ratio((p) => p.p99, results.relayhub.rates[low], results['ws-cork'].rates[low]);
    const p50 = ratio((p) => p.p50, results.relayhub.rates[low], results['ws-cork'].rates[low]);
    headline.wsCorkP99Ms = Number(results['ws-cork'].rates[low].p99.toFixed(2));
    headline.p99RatioToWsCork = Number(p99.value.toFixed(2));
    headline.p50RatioToWsCork = Number(p50.value.toFixed(2));
    const deliveries = ratio((p) => p.deliveriesPerSecond, sat, results['ws-cork'].saturation).value;
    if (Number.isFinite(deliveries)) headline.deliveriesRatioToWsCork = Number(deliveries.toFixed(2));
    console.log(
      `relayhub / ws-cork at ${low} broadcasts/s: p99 ${p99.value.toFixed(2)}x ` +
        `(target <= 1.2x: ${p99.value <= 1.2 ? 'met' : 'NOT met'}; ${p99.basis}), p50 ${p50.value.toFixed(2)}x; ` +
        `deliveries/s at saturation ${headline.deliveriesRatioToWsCork ?? 'n/a'}x`,
    );
  }
  if (results.socketio && raw.systems.socketio) {
    const deliveries = ratio((p) => p.deliveriesPerSecond, sat, results.socketio.saturation).value;
    if (Number.isFinite(deliveries)) headline.socketioRatio = Number(deliveries.toFixed(2));
  }
}
console.log(`\nJSON: ${JSON.stringify({ config: { ...config, padding: config.padding.length }, results })}`);
console.log(`RESULT ${JSON.stringify(headline)}`);
