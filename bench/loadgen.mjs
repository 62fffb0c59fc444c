// Load generator of the fan-out benchmark, forked by bench/run.mjs (IPC). It opens, for every system it
// is given, the receiving clients and the publishers against that system's servers, then runs the phases
// (warm-up; then rounds of saturation and fixed rate, the systems taking turns so that a burst of
// outside load does not fall on one system only) and sends back one result. Publishers and receivers
// share this process, so a message's send time and receive time come from the same monotonic clock.
//
// Every broadcast carries the text `~<send time, performance.now() in ms>~<padding>`; receivers count
// the `message` deliveries and, in the fixed-rate phase, record receive time minus send time.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Packr } from 'msgpackr';
import { io as ioClient } from 'socket.io-client';
import WebSocket from 'ws';

const RS = '\u001e';
const HANDSHAKE = JSON.stringify({ protocol: 'json', version: 1 }) + RS;
const PING = JSON.stringify({ type: 6 }) + RS;
const PACKED_HANDSHAKE = JSON.stringify({ protocol: 'messagepack', version: 1 }) + RS;
const packr = new Packr({ useRecords: false, moreTypes: false, variableMapSize: true });

/** Where relayhub serves the example hub (DEMO_HUB_PATH, from the run's config). */
let hubPath = '/hubs/demo';

/** Outside CPU use (in % of one core) above which a phase's figures count as distorted. */
const BUSY = 10;

const send = (message) => process.send?.(message);
const log = (text) => send({ type: 'log', text });

// ---- counters of one system's receivers ------------------------------------------------------------

class Stats {
  /** `message` deliveries to the measured receivers since the start. */
  delivered = 0;
  /** WebSocket frames that carried them (a relayhub frame may carry several messages). */
  frames = 0;
  lastDeliveryAt = 0;
  /** Latencies (ms) recorded while `measuring`. */
  latencies = new Float64Array(0);
  latencyCount = 0;
  measuring = false;
  /** Called (at most once per event-loop turn) after deliveries advanced. */
  onProgress = undefined;
  #progressScheduled = false;

  constructor(receivers) {
    /** Per receiver, for the completeness check. */
    this.perClient = new Uint32Array(receivers);
  }

  deliveredTo(index, count, now) {
    if (count === 0) return;
    this.delivered += count;
    this.frames++;
    this.perClient[index] += count;
    this.lastDeliveryAt = now;
    if (this.onProgress && !this.#progressScheduled) {
      this.#progressScheduled = true;
      setImmediate(() => {
        this.#progressScheduled = false;
        this.onProgress?.();
      });
    }
  }

  recordLatency(text, from, now) {
    const start = text.indexOf('~', from);
    if (start < 0 || this.latencyCount >= this.latencies.length) return;
    this.latencies[this.latencyCount++] = now - parseFloat(text.slice(start + 1, start + 24));
  }
}

// ---- clients --------------------------------------------------------------------------------------

function openSocket(url, onMessage, binary = false) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`timed out opening ${url}`));
    }, 10_000);
    ws.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    ws.on('message', (data, isBinary) => {
      if (binary) onMessage(data, ws);
      else if (!isBinary) onMessage(data.toString(), ws);
    });
    ws.on('open', () => {
      clearTimeout(timer);
      resolve(ws);
    });
  });
}

/**
 * Negotiates, opens the WebSocket with the connection token and completes the handshake; after it, every
 * frame goes to `onFrame` (text, or a Buffer when `binary`). The handshake response comes alone in the
 * first frame, as JSON text in a text frame (json) or a binary one (messagepack).
 */
async function openHub(baseUrl, onFrame, { handshake, binary }) {
  const res = await fetch(`${baseUrl}${hubPath}/negotiate?negotiateVersion=1`, { method: 'POST' });
  if (res.status !== 200) throw new Error(`negotiate answered ${res.status}`);
  const { connectionToken } = await res.json();
  let handshaken;
  const done = new Promise((resolve, reject) => {
    handshaken = { resolve, reject };
    setTimeout(() => reject(new Error('no handshake response within 10 s')), 10_000).unref();
  });
  let open = false;
  const ws = await openSocket(
    `${baseUrl.replace(/^http/, 'ws')}${hubPath}?id=${encodeURIComponent(connectionToken)}`,
    (data) => {
      if (open) return onFrame(data);
      const text = binary ? data.toString('utf8', 0, data.indexOf(0x1e)) : data;
      if (text.startsWith('{}')) {
        open = true;
        handshaken.resolve();
      } else handshaken.reject(new Error(`handshake refused: ${text}`));
    },
    binary,
  );
  ws.send(handshake);
  await done;
  return ws;
}

/**
 * relayhub: a raw `ws` client speaking the SignalR JSON protocol (negotiate, handshake, records split on
 * 0x1E). The official @microsoft/signalr client is too heavy to run 500 of them in one load generator.
 */
const relayhub = {
  async connect(baseUrl, onFrame) {
    const ws = await openHub(baseUrl, onFrame, { handshake: HANDSHAKE, binary: false });
    const keepAlive = setInterval(() => ws.readyState === ws.OPEN && ws.send(PING), 10_000);
    return {
      /** Fire-and-forget `SendToAll(text)` invocations (no invocationId: no completion), in one frame. */
      publish(texts) {
        let frame = '';
        for (const text of texts)
          frame += `{"type":1,"target":"SendToAll","arguments":[${JSON.stringify(text)}]}${RS}`;
        ws.send(frame);
      },
      close() {
        clearInterval(keepAlive);
        ws.terminate();
      },
    };
  },
  receiver(stats, index) {
    return (text) => {
      const now = performance.now();
      let count = 0;
      for (let i = 0, end = text.indexOf(RS); end >= 0; i = end + 1, end = text.indexOf(RS, i)) {
        if (!text.startsWith('{"type":1,"target":"message"', i)) continue; // pings and the like
        count++;
        if (stats.measuring) stats.recordLatency(text, i, now);
      }
      stats.deliveredTo(index, count, now);
    };
  },
};

/** One MessagePack hub message behind its VarInt length prefix. */
function framed(value) {
  const body = packr.pack(value);
  const prefix = [];
  let rest = body.length;
  do {
    let byte = rest & 0x7f;
    rest >>>= 7;
    if (rest > 0) byte |= 0x80;
    prefix.push(byte);
  } while (rest > 0);
  return Buffer.concat([Buffer.from(prefix), body]);
}

const PACKED_PING = framed([6]);
/** How a `message` invocation from the server starts: [1, {}, nil, "message", ...] as MessagePack. */
const PACKED_MESSAGE = Buffer.from([0x95, 0x01, 0x80, 0xc0, 0xa7, ...Buffer.from('message')]);

/**
 * relayhub with the MessagePack hub protocol: the same raw `ws` client, with binary frames of
 * length-prefixed messages. It recognizes a `message` invocation by its first bytes and reads the send
 * time from the text's ASCII, without decoding the message (the JSON receiver does not parse JSON either).
 */
const relayhubPacked = {
  async connect(baseUrl, onFrame) {
    const ws = await openHub(baseUrl, onFrame, { handshake: PACKED_HANDSHAKE, binary: true });
    const keepAlive = setInterval(() => ws.readyState === ws.OPEN && ws.send(PACKED_PING), 10_000);
    return {
      publish(texts) {
        ws.send(Buffer.concat(texts.map((text) => framed([1, {}, null, 'SendToAll', [text]]))));
      },
      close() {
        clearInterval(keepAlive);
        ws.terminate();
      },
    };
  },
  receiver(stats, index) {
    return (data) => {
      const now = performance.now();
      let count = 0;
      let offset = 0;
      while (offset < data.length) {
        let length = 0;
        let shift = 0;
        let byte;
        do {
          byte = data[offset++];
          length += (byte & 0x7f) * 2 ** shift;
          shift += 7;
        } while (byte & 0x80);
        const start = offset;
        offset += length;
        if (
          length < PACKED_MESSAGE.length ||
          data.compare(PACKED_MESSAGE, 0, PACKED_MESSAGE.length, start, start + PACKED_MESSAGE.length) !== 0
        )
          continue;
        count++;
        if (stats.measuring) {
          const tilde = data.indexOf(0x7e, start);
          if (tilde >= 0 && tilde < offset && stats.latencyCount < stats.latencies.length) {
            const sentAt = parseFloat(data.toString('latin1', tilde + 1, Math.min(offset, tilde + 24)));
            stats.latencies[stats.latencyCount++] = now - sentAt;
          }
        }
      }
      stats.deliveredTo(index, count, now);
    };
  },
};

/** Half JSON, half MessagePack clients (by index): the server encodes each broadcast once per protocol. */
const relayhubMixed = {
  connect: (baseUrl, onFrame, index) =>
    (index % 2 === 0 ? relayhub : relayhubPacked).connect(baseUrl, onFrame),
  receiver: (stats, index) => (index % 2 === 0 ? relayhub : relayhubPacked).receiver(stats, index),
};

/** socket.io: the official socket.io-client, WebSocket transport only, one Manager per client. */
const socketio = {
  async connect(baseUrl, onMessage) {
    const socket = ioClient(baseUrl, {
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      timeout: 10_000,
    });
    await new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    });
    socket.on('message', onMessage);
    return {
      publish(texts) {
        for (const text of texts) socket.emit('broadcast', text);
      },
      close() {
        socket.disconnect();
      },
    };
  },
  receiver(stats, index) {
    return (_from, text) => {
      const now = performance.now();
      if (stats.measuring) stats.recordLatency(text, 0, now);
      stats.deliveredTo(index, 1, now);
    };
  },
};

/**
 * socket.io through a raw `ws` client speaking the Engine.IO 4 / Socket.IO 5 wire protocol by hand (the
 * same weight of client as the relayhub one): `40` to join `/`, answer `2` (ping) with `3`, count `42`.
 */
const socketioRaw = {
  async connect(baseUrl, onFrame) {
    let joined;
    const done = new Promise((resolve, reject) => {
      joined = { resolve, reject };
      setTimeout(() => reject(new Error('no Socket.IO CONNECT within 10 s')), 10_000).unref();
    });
    let open = false;
    const ws = await openSocket(
      `${baseUrl.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`,
      (text, socket) => {
        if (open && text.startsWith('42')) return onFrame(text);
        if (text === '2') return socket.send('3');
        if (text.startsWith('0{')) return socket.send('40');
        if (text.startsWith('40')) {
          open = true;
          joined.resolve();
        } else if (text.startsWith('44')) joined.reject(new Error(`connect refused: ${text}`));
      },
    );
    await done;
    return {
      publish(texts) {
        for (const text of texts) ws.send(`42["broadcast",${JSON.stringify(text)}]`);
      },
      close() {
        ws.terminate();
      },
    };
  },
  receiver(stats, index) {
    return (text) => {
      const now = performance.now();
      if (stats.measuring) stats.recordLatency(text, 0, now);
      stats.deliveredTo(index, 1, now);
    };
  },
};

/** Plain ws reference: frames of `\n`-joined messages, forwarded as they are by bench/ws-server.mjs. */
const plainWs = {
  async connect(baseUrl, onFrame) {
    const ws = await openSocket(baseUrl.replace(/^http/, 'ws'), onFrame);
    return {
      publish(texts) {
        ws.send(texts.join('\n'));
      },
      close() {
        ws.terminate();
      },
    };
  },
  receiver(stats, index) {
    return (text) => {
      const now = performance.now();
      let count = 0;
      for (let i = 0, end = 0; end >= 0 && i <= text.length; i = end + 1) {
        end = text.indexOf('\n', i);
        count++;
        if (stats.measuring) stats.recordLatency(text, i, now);
      }
      stats.deliveredTo(index, count, now);
    };
  },
};

const KINDS = {
  relayhub,
  'relayhub-msgpack': relayhubPacked,
  'relayhub-mixed': relayhubMixed,
  socketio,
  'socketio-raw': socketioRaw,
  ws: plainWs,
};

// ---- CPU accounting (/proc) -----------------------------------------------------------------------

function cpuTicks(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return NaN;
  }
}

/** Busy ticks of the whole machine (all cores) from /proc/stat. */
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

/**
 * CPU use of each benchmark process over a phase, in % of one core, plus `other`: what the rest of the
 * machine used meanwhile (other workloads sharing the cores distort the figures; the report shows it).
 */
function cpuSampler(pids, ticksPerSecond) {
  const start = pids.map(({ pid }) => cpuTicks(pid));
  const machineStart = machineTicks();
  const t0 = performance.now();
  return () => {
    const seconds = (performance.now() - t0) / 1_000;
    const pct = (ticks) => Math.round((ticks / ticksPerSecond / seconds) * 100);
    const used = pids.map(({ pid }, i) => cpuTicks(pid) - start[i]);
    const ours = used.reduce((a, b) => a + b, 0);
    return {
      cpu: {
        ...Object.fromEntries(pids.map(({ name }, i) => [name, pct(used[i])])),
        other: Math.max(0, pct(machineTicks() - machineStart - ours)),
      },
      cpuSeconds: Object.fromEntries(pids.map(({ name }, i) => [name, used[i] / ticksPerSecond])),
    };
  };
}

/** Waits (at most `maxMs`) until the machine is nearly idle; returns how busy it was, in % of one core. */
async function waitForQuiet(maxMs, ticksPerSecond) {
  const started = performance.now();
  for (;;) {
    const before = machineTicks();
    await sleep(250);
    const busy = Math.round(((machineTicks() - before) / ticksPerSecond / 0.25) * 100);
    if (!(busy > BUSY) || performance.now() - started >= maxMs) {
      return { busy, waited: (performance.now() - started) / 1_000 };
    }
  }
}

// ---- phases ---------------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const makeText = (padding) => `~${performance.now().toFixed(3)}~${padding}`;

/** Waits until every receiver got every broadcast sent (or no delivery for `idleMs`, or `maxMs`). */
async function drain(stats, expected, idleMs, maxMs) {
  const started = performance.now();
  while (stats.delivered < expected) {
    const now = performance.now();
    if (now - started > maxMs) break;
    if (now - Math.max(stats.lastDeliveryAt, started) > idleMs) break;
    await sleep(2);
  }
}

/**
 * Publishes as fast as the window allows for `durationMs`: at most `window` broadcasts may be in flight,
 * i.e. sent but not yet delivered to every receiver (counted on average over the receivers). The
 * publisher wakes when deliveries advance, so that it does not spin and take CPU from the servers. The
 * clock stops when the last broadcast has reached every receiver (drain).
 */
async function saturate(system, { durationMs, window, batch }) {
  const { stats, publishers, receivers, padding } = system;
  const startDelivered = stats.delivered;
  const startFrames = stats.frames;
  const t0 = performance.now();
  let sent = 0;
  let next = 0;
  let running = true;
  const pump = () => {
    if (!running) return;
    const inFlight = sent - (stats.delivered - startDelivered) / receivers;
    let room = Math.floor(window - inFlight);
    while (room > 0 && running) {
      const n = Math.min(room, batch);
      const texts = [];
      for (let i = 0; i < n; i++) texts.push(makeText(padding));
      publishers[next].publish(texts);
      next = (next + 1) % publishers.length;
      sent += n;
      room -= n;
      if (performance.now() - t0 >= durationMs) running = false;
    }
  };
  stats.onProgress = pump;
  const fallback = setInterval(pump, 5); // note: in case a wake-up is missed, e.g. after a lost message.
  pump();
  await sleep(durationMs);
  running = false;
  stats.onProgress = undefined;
  clearInterval(fallback);
  await drain(stats, startDelivered + sent * receivers, 2_000, 10_000);
  const seconds = (stats.lastDeliveryAt - t0) / 1_000;
  const got = stats.delivered - startDelivered;
  return {
    broadcasts: sent,
    deliveries: got,
    lost: sent * receivers - got,
    seconds,
    deliveriesPerSecond: got / seconds,
    messagesPerFrame: got / Math.max(1, stats.frames - startFrames),
  };
}

/** Publishes `rate` broadcasts per second for `durationMs` and records every delivery's latency. */
async function fixedRate(system, { durationMs, rate }) {
  const { stats, publishers, receivers, padding } = system;
  const startDelivered = stats.delivered;
  const total = Math.max(1, Math.floor((durationMs * rate) / 1_000));
  stats.latencies = new Float64Array((total + 1) * receivers);
  stats.latencyCount = 0;
  stats.measuring = true;
  const t0 = performance.now();
  let sent = 0;
  let next = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const due = Math.min(Math.floor(((performance.now() - t0) * rate) / 1_000) + 1, total);
      while (sent < due) {
        publishers[next].publish([makeText(padding)]);
        next = (next + 1) % publishers.length;
        sent++;
      }
      if (sent >= total) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  await drain(stats, startDelivered + sent * receivers, 2_000, 10_000);
  stats.measuring = false;
  const latencies = stats.latencies.subarray(0, stats.latencyCount).sort();
  const pick = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  const got = stats.delivered - startDelivered;
  return {
    broadcasts: sent,
    deliveries: got,
    lost: sent * receivers - got,
    offeredPerSecond: (sent * receivers) / (durationMs / 1_000),
    p50: pick(0.5),
    p99: pick(0.99),
    max: latencies[latencies.length - 1] ?? NaN,
  };
}

async function connectAll(count, connect, concurrency = 50) {
  const result = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) {
        const i = next++;
        result[i] = await connect(i);
      }
    }),
  );
  return result;
}

const median = (values) => {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

/**
 * One figure per phase over the rounds: medians of the rates and percentiles, sums of the counts. Rounds
 * during which the rest of the machine used more than BUSY% CPU are left out when at least one round
 * was not disturbed (`clean` says how many were used); otherwise every round is used.
 */
function summarize(all) {
  if (all.length === 0) return undefined;
  const clean = all.filter((r) => !(r.cpu.other > BUSY));
  const rounds = clean.length > 0 ? clean : all;
  const sum = (pick) => rounds.reduce((total, r) => total + pick(r), 0);
  const names = Object.keys(rounds[0].cpu);
  return {
    rounds: all.length,
    clean: clean.length,
    deliveriesPerSecond: median(rounds.map((r) => r.deliveriesPerSecond)),
    messagesPerFrame: median(rounds.map((r) => r.messagesPerFrame)),
    p50: median(rounds.map((r) => r.p50)),
    p99: median(rounds.map((r) => r.p99)),
    max: Math.max(...rounds.map((r) => r.max ?? NaN)),
    broadcasts: sum((r) => r.broadcasts),
    deliveries: sum((r) => r.deliveries),
    lost: all.reduce((total, r) => total + r.lost, 0),
    cpu: Object.fromEntries(names.map((n) => [n, Math.round(sum((r) => r.cpu[n]) / rounds.length)])),
    cpuSeconds: Object.fromEntries(
      Object.keys(rounds[0].cpuSeconds).map((n) => [n, sum((r) => r.cpuSeconds[n])]),
    ),
    perRound: all,
  };
}

/** The CPU figures of one system's servers, Redis, the load generator and the rest of the machine. */
const cpuText = (cpu, pids, system) =>
  Object.entries(cpu)
    .filter(([name]) => {
      const owner = pids.find((p) => p.name === name)?.system;
      return owner === undefined || owner === system;
    })
    .map(([name, pct]) => `${name} ${pct}`)
    .join(', ');

async function run(config) {
  hubPath = config.hubPath ?? hubPath;
  const systems = [];
  const opened = [];
  try {
    for (const spec of config.systems) {
      const kind = KINDS[spec.client];
      const stats = new Stats(config.clients);
      const t0 = performance.now();
      const connect = (i, onMessage) => {
        const c = kind.connect(spec.servers[i % spec.servers.length], onMessage, i);
        return c.then((client) => {
          opened.push(client);
          return client;
        });
      };
      await connectAll(config.clients, (i) => connect(i, kind.receiver(stats, i)));
      const publishers = await connectAll(config.publishers, (i) => connect(i, () => undefined));
      log(
        `${spec.name}: ${config.clients} receivers + ${publishers.length} publishers connected in ` +
          `${Math.round(performance.now() - t0)} ms`,
      );
      systems.push({
        ...spec,
        stats,
        publishers,
        receivers: config.clients,
        padding: config.padding,
        /** Per phase ('saturation', or the rate of a fixed-rate phase): one result per round. */
        phases: new Map(),
      });
    }

    for (const system of systems) {
      const warm = await saturate(system, { ...config, durationMs: config.warmupMs });
      const incomplete = [...system.stats.perClient].filter((n) => n !== warm.broadcasts).length;
      log(
        `${system.name}: warm-up ${warm.broadcasts} broadcasts, ${Math.round(warm.deliveriesPerSecond)} ` +
          `deliveries/s, ${warm.lost} lost, ${incomplete} receivers without every broadcast`,
      );
      if (warm.deliveries === 0) throw new Error(`${system.name}: no delivery during the warm-up`);
    }

    /** Milliseconds left for waiting until the machine is idle (a budget for the whole run). */
    let quietBudgetMs = config.quietWaitMs;
    /** Runs one phase: 'saturation', or a fixed rate in broadcasts/s. */
    const measure = async (system, phase) => {
      // note: other work on the shared cores distorts the figures: wait a little for it to pass.
      const { waited } = await waitForQuiet(Math.min(5_000, quietBudgetMs), config.ticksPerSecond);
      quietBudgetMs = Math.max(0, quietBudgetMs - waited * 1_000);
      const cpu = cpuSampler(config.pids, config.ticksPerSecond);
      const result =
        phase === 'saturation'
          ? await saturate(system, config)
          : await fixedRate(system, { durationMs: config.durationMs, rate: phase });
      Object.assign(result, cpu());
      if (!system.phases.has(phase)) system.phases.set(phase, []);
      system.phases.get(phase).push(result);
      const figures =
        phase === 'saturation'
          ? `saturation: ${Math.round(result.deliveriesPerSecond)} deliveries/s (${result.broadcasts} ` +
            `broadcasts in ${result.seconds.toFixed(2)} s, ${result.messagesPerFrame.toFixed(1)} messages/frame)`
          : `${phase}/s: p50 ${result.p50.toFixed(2)} ms, p99 ${result.p99.toFixed(2)} ms, ` +
            `max ${result.max.toFixed(1)} ms (${result.broadcasts} broadcasts)`;
      log(
        `  ${system.name.padEnd(8)} ${figures}, ${result.lost} lost; ` +
          `cpu% ${cpuText(result.cpu, config.pids, system.name)}` +
          `${result.cpu.other > BUSY ? ' (distorted by other work)' : ''}`,
      );
    };

    /** The single-process ws reference saturates near the lowest rate already: it runs only that one. */
    const takes = (system, phase) =>
      phase === 'saturation' || system.client !== 'ws' || phase === Math.min(...config.rates);
    const phases = [
      ...(config.phases.includes('saturation') ? ['saturation'] : []),
      ...(config.phases.includes('rate') ? config.rates : []),
    ];
    for (let round = 0; round < config.rounds; round++) {
      log(`round ${round + 1}/${config.rounds}`);
      // note: the systems take turns in a rotating order, so that none always runs first or last.
      const order = systems.map((_, i) => systems[(i + round) % systems.length]);
      for (const phase of phases) {
        for (const system of order) if (takes(system, phase)) await measure(system, phase);
      }
    }

    return {
      systems: Object.fromEntries(
        systems.map((s) => [
          s.name,
          {
            saturation: summarize(s.phases.get('saturation') ?? []),
            rates: Object.fromEntries(config.rates.map((r) => [r, summarize(s.phases.get(r) ?? [])])),
          },
        ]),
      ),
      owners: Object.fromEntries(config.pids.filter((p) => p.system).map((p) => [p.name, p.system])),
    };
  } finally {
    for (const c of opened) c.close();
  }
}

process.on('message', (message) => {
  if (message?.type !== 'run') return;
  // note: exit only once the answer has gone through the IPC channel.
  run(message.config).then(
    (result) => process.send({ type: 'result', result }, () => process.exit(0)),
    (error) => {
      const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
      process.send({ type: 'error', error: text }, () => process.exit(1));
    },
  );
});
process.on('disconnect', () => process.exit(1));
