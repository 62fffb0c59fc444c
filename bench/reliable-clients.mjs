// Load generator of the reliable-lane benchmarks (bench/reliable.mjs, bench/outbox.mjs), forked with IPC.
// It holds one lightweight raw-ws SignalR client per user (negotiate with a bearer JWT, handshake, records
// split on 0x1E) that answers every Invocation carrying an invocationId with a Completion (the ack) and
// records when it received it; and, for the raw baseline, a consumer-group reader (XREADGROUP BLOCK +
// XACK) on plain Redis streams. It reports progress (acks so far, coalesced per event-loop turn) and, on
// request, every message's receive time.
//
// Every message carries `{ p, i, t }`: the phase number, its index in the phase, and its send time on the
// shared clock `performance.timeOrigin + performance.now()` (ms). Receive times use the same clock; the
// parent measures the offset between the two processes' clocks over IPC and corrects for it.
import './help.mjs';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { SignJWT } from 'jose';
import WebSocket from 'ws';

const RS = '\u001e';
const HANDSHAKE = JSON.stringify({ protocol: 'json', version: 1 }) + RS;
const PING = JSON.stringify({ type: 6 }) + RS;

const now = () => performance.timeOrigin + performance.now();
const send = (message) => process.send?.(message);

// ---- the current phase ------------------------------------------------------------------------------

const phase = {
  id: 0,
  expected: 0,
  /** Receive time per message index (0: not received). */
  recv: new Float64Array(0),
  /** Receive time minus the send time carried in the message (this process's clock minus the parent's). */
  lat: new Float64Array(0),
  received: 0,
  duplicates: 0,
  /** Messages of another phase (late redeliveries), or that did not parse. */
  foreign: 0,
  lastAt: 0,
};

function startPhase(id, expected, progressMs = 0) {
  phase.id = id;
  phase.expected = expected;
  phase.progressMs = progressMs;
  phase.recv = new Float64Array(expected);
  phase.lat = new Float64Array(expected);
  phase.received = 0;
  phase.duplicates = 0;
  phase.foreign = 0;
  phase.lastAt = 0;
}

/** Records one message (its `{ p, i, t }`); returns whether it was new. */
function record(meta, at) {
  if (!meta || meta.p !== phase.id || !(meta.i >= 0 && meta.i < phase.expected)) {
    phase.foreign++;
    return false;
  }
  if (phase.recv[meta.i] !== 0) {
    phase.duplicates++;
    return false;
  }
  phase.recv[meta.i] = at;
  phase.lat[meta.i] = at - meta.t;
  phase.received++;
  phase.lastAt = at;
  return true;
}

let progressScheduled;
/**
 * Tells the parent how many messages were acked so far: at most once per event-loop turn, or (an open-loop
 * phase, whose producer does not wait for acks) once per `progressMs`, and at once when all have come.
 */
function progress() {
  const report = () => {
    if (phase.progressMs > 0) clearTimeout(progressScheduled);
    else clearImmediate(progressScheduled);
    progressScheduled = undefined;
    send({ type: 'progress', phase: phase.id, acked: phase.received, at: phase.lastAt });
  };
  if (phase.received >= phase.expected) return report();
  if (progressScheduled) return;
  progressScheduled = phase.progressMs > 0 ? setTimeout(report, phase.progressMs) : setImmediate(report);
}

// ---- relayhub clients -------------------------------------------------------------------------------

const clients = [];

async function connectClient(baseUrl, hubPath, userId, key) {
  const token = await new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime('2h')
    .sign(key);
  const headers = { Authorization: `Bearer ${token}` };
  const res = await fetch(`${baseUrl}${hubPath}/negotiate?negotiateVersion=1`, { method: 'POST', headers });
  if (res.status !== 200) throw new Error(`negotiate answered ${res.status}`);
  const { connectionToken } = await res.json();
  const url = `${baseUrl.replace(/^http/, 'ws')}${hubPath}?id=${encodeURIComponent(connectionToken)}`;
  const ws = new WebSocket(url, { headers, perMessageDeflate: false });
  let open = false;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`no handshake from ${url} within 10 s`));
    }, 10_000);
    ws.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    ws.once('open', () => ws.send(HANDSHAKE));
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const text = data.toString();
      if (open) return onFrame(ws, text);
      clearTimeout(timer);
      // note: the handshake response comes alone in the first frame.
      if (text.startsWith('{}')) {
        open = true;
        resolve();
      } else reject(new Error(`handshake refused: ${text}`));
    });
  });
  ws.on('close', (code) => {
    if (!closing) send({ type: 'log', text: `client ${userId} closed (${code})` });
  });
  const keepAlive = setInterval(() => ws.readyState === ws.OPEN && ws.send(PING), 10_000);
  clients.push({ ws, keepAlive });
}

/** One WebSocket frame: acks every invocation with an id (one frame of Completions), records the bench's. */
function onFrame(ws, text) {
  const at = now();
  let acks = '';
  let fresh = 0;
  for (let i = 0, end = text.indexOf(RS); end >= 0; i = end + 1, end = text.indexOf(RS, i)) {
    if (!text.startsWith('{"type":1,', i)) {
      if (text.startsWith('{"type":7', i)) send({ type: 'log', text: `close: ${text.slice(i, end)}` });
      continue; // pings
    }
    let message;
    try {
      message = JSON.parse(text.slice(i, end));
    } catch {
      phase.foreign++;
      continue;
    }
    if (message.invocationId !== undefined) {
      acks += `{"type":3,"invocationId":${JSON.stringify(message.invocationId)},"result":true}${RS}`;
    }
    if (message.target === 'bench' && record(message.arguments?.[0], at)) fresh++;
  }
  if (acks) ws.send(acks);
  if (fresh > 0) progress();
}

async function connectAll({ servers, hubPath, users, secret, userPrefix }) {
  const key = new TextEncoder().encode(secret);
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(20, users) }, async () => {
      while (next < users) {
        const i = next++;
        await connectClient(servers[i % servers.length], hubPath, `${userPrefix}${i}`, key);
      }
    }),
  );
  return performance.now() - t0;
}

// ---- the raw baseline: one consumer-group reader on plain streams -------------------------------------

let raw;

/** XREADGROUP BLOCK over every stream (COUNT per stream), records, then XACKs (pipelined, own connection). */
function startRaw({ redisUrl, streams, group, count }) {
  const reader = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  const acker = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  for (const r of [reader, acker]) r.on('error', () => undefined);
  const state = { reader, acker, stopped: false, loop: undefined };
  const ids = streams.map(() => '>');
  state.loop = (async () => {
    while (!state.stopped) {
      let reply;
      try {
        reply = await reader.xreadgroup(
          'GROUP',
          group,
          'bench',
          'COUNT',
          count,
          'BLOCK',
          500,
          'STREAMS',
          ...streams,
          ...ids,
        );
      } catch (error) {
        if (state.stopped) return;
        send({ type: 'log', text: `raw reader: ${error.message}` });
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      if (!reply) continue;
      const at = now();
      const pipeline = acker.pipeline();
      for (const [stream, entries] of reply) {
        const acked = [];
        for (const [id, fields] of entries) {
          acked.push(id);
          let meta;
          try {
            meta = JSON.parse(fields[fields.indexOf('a') + 1])[0];
          } catch {
            meta = undefined;
          }
          record(meta, at);
        }
        if (acked.length > 0) pipeline.xack(stream, group, ...acked);
      }
      // note: a message counts as acked once Redis answered its XACK (the pipeline of this read).
      const counted = phase.received;
      const phaseId = phase.id;
      pipeline.exec().then(
        () => {
          if (phase.id !== phaseId) return;
          raw.acked = Math.max(raw.acked, counted);
          send({ type: 'progress', phase: phaseId, acked: raw.acked, at: now() });
        },
        (error) => send({ type: 'log', text: `raw xack: ${error.message}` }),
      );
    }
  })();
  return state;
}

// ---- IPC --------------------------------------------------------------------------------------------

let closing = false;

process.on('message', async (message) => {
  try {
    switch (message?.type) {
      case 'clock':
        return send({ type: 'clock', seq: message.seq, at: now() });
      case 'connect':
        return send({ type: 'connected', ms: await connectAll(message) });
      case 'phase':
        startPhase(message.phase, message.expected, message.progressMs);
        if (raw) raw.acked = 0;
        return send({ type: 'phase-ready', phase: message.phase });
      case 'raw-start':
        raw = startRaw(message);
        raw.acked = 0;
        return send({ type: 'raw-started' });
      case 'raw-stop':
        if (raw) {
          raw.stopped = true;
          raw.reader.disconnect();
          await raw.loop;
          raw.acker.disconnect();
          raw = undefined;
        }
        return send({ type: 'raw-stopped' });
      case 'report':
        return send({
          type: 'report',
          phase: phase.id,
          received: phase.received,
          duplicates: phase.duplicates,
          foreign: phase.foreign,
          lastAt: phase.lastAt,
          recv: phase.recv,
          lat: phase.lat,
        });
      case 'close':
        closing = true;
        for (const c of clients) {
          clearInterval(c.keepAlive);
          c.ws.terminate();
        }
        raw?.reader.disconnect();
        raw?.acker.disconnect();
        return send({ type: 'closed' });
      default:
        return undefined;
    }
  } catch (error) {
    send({ type: 'error', error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
  }
});
// note: never outlive the parent.
process.on('disconnect', () => process.exit(0));
