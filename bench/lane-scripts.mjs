// Redis-side cost of the reliable lane's Lua scripts (`node bench/lane-scripts.mjs`, after `npm run
// build`): on a redis-server of its own (a free loopback port, nothing else on it, so that the
// commandstats microseconds are the scripts' and no other client's), 100 users, rounds of one send
// script call per user (BENCH_LANE_PER_CALL messages each: 1 and 3 by default, ~3 being what a busy
// lane batches) and then one ACK_MANY script acknowledging every user's last message, as a hub does.
// Per message: the microseconds Redis spent in EVALSHA (the commands the scripts run included) for the
// sends and per ack, against the baseline in the same run: the same Redis commands (INCR, XADD to the
// inbox and to the delivery stream, PEXPIRE, SET, XTRIM) sent plainly in a pipeline, with none of the
// scripts' checks (dedup, routing, the ack's entry check). The difference is what Lua itself costs.
// Knobs: BENCH_LANE_ROUNDS (200), BENCH_LANE_PER_CALL (1,3).
// Ends with one line `RESULT <json>`.
import './help.mjs';
import { Redis } from 'ioredis';
import { ACK_MANY_SCRIPT, SEND_SCRIPT } from '../dist/backplane/streams/scripts.js';
import { startRedis } from './redis-server.mjs';

const rounds = Number(process.env.BENCH_LANE_ROUNDS ?? 200);
const perCall = (process.env.BENCH_LANE_PER_CALL ?? '1,3').split(',').map(Number);
const USERS = 100;
const MAX_AGE_MS = 86_400_000;
const ARGS = '[{"n":1,"text":"hello world, a small message"}]';

const server = await startRedis();
const { port } = server;
setTimeout(() => {
  console.error('still running after 120 s, giving up');
  process.exit(1);
}, 120_000).unref();
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));

const redis = new Redis({ port, host: '127.0.0.1' });
redis.defineCommand('laneSend', { numberOfKeys: 4, lua: SEND_SCRIPT });
redis.defineCommand('laneAckMany', { lua: ACK_MANY_SCRIPT });

const user = (u) => ({
  seq: `{u:${u}}:seq`,
  inbox: `{u:${u}}:inbox`,
  presence: `{u:${u}}:presence`,
  sent: `{u:${u}}:sent`,
  acked: `{u:${u}}:acked`,
});
const users = Array.from({ length: USERS }, (_, u) => user(u));

/** Microseconds of EVALSHA (or of every command, `all`) in INFO commandstats. */
async function usec(all = false) {
  let total = 0;
  for (const line of (await redis.info('commandstats')).split('\n')) {
    const [name, rest] = line.split(':');
    if (!name?.startsWith('cmdstat_') || !rest) continue;
    const command = name.slice('cmdstat_'.length);
    if (all ? ['info', 'config|resetstat', 'xrevrange'].includes(command) : command !== 'evalsha') continue;
    total += Number(/usec=(\d+)/.exec(rest)?.[1] ?? 0);
  }
  return total;
}

/** The lane's scripts: per round, one send call per user, then one ACK_MANY for all of them. */
async function scripts(per) {
  await redis.flushall();
  await redis.set('{i:bench}:alive', '1');
  for (const u of users) await redis.sadd(u.presence, 'bench');
  let send = 0;
  let ack = 0;
  for (let round = 0; round < rounds; round++) {
    const sends = redis.pipeline();
    for (const [i, u] of users.entries()) {
      const args = [u.seq, u.inbox, u.presence, u.sent, 10_000, MAX_AGE_MS, '{i:', String(i), 100_000];
      for (let k = 0; k < per; k++) args.push(`m${round}-${k}`, 'Notify', ARGS, '0');
      sends.laneSend(...args);
    }
    let before = await usec();
    const replies = await sends.exec();
    send += (await usec()) - before;
    // note: the stream id of each user's last message, as the hub knows it from the wake-up.
    const tops = await Promise.all(users.map((u) => redis.xrevrange(u.inbox, '+', '-', 'COUNT', 1)));
    const keys = users.flatMap((u) => [u.acked, u.inbox]);
    const positions = users.flatMap((_, i) => [replies[i][1][1 + 3 * (per - 1)], tops[i][0][0]]);
    before = await usec();
    await redis.laneAckMany(keys.length, ...keys, MAX_AGE_MS, ...positions);
    ack += (await usec()) - before;
  }
  return { send: send / (rounds * USERS * per), ack: ack / (rounds * USERS) };
}

/** The baseline: the same writes as plain pipelined commands, without any of the scripts' checks. */
async function plain(per) {
  await redis.flushall();
  let send = 0;
  let ack = 0;
  for (let round = 0; round < rounds; round++) {
    const sends = redis.pipeline();
    for (const u of users) {
      for (let k = 0; k < per; k++) {
        sends.incr(u.seq);
        sends.xadd(u.inbox, 'MAXLEN', '=', 10_000, '*', 'm', `m${round}-${k}`, 't', 'Notify', 'a', ARGS);
      }
      sends.pexpire(u.seq, MAX_AGE_MS).pexpire(u.inbox, MAX_AGE_MS);
      sends.xadd('{i:bench}:deliveries', 'MAXLEN', '~', 100_000, '*', 'u', u.seq, 'o', '1');
    }
    let before = await usec(true);
    const replies = await sends.exec();
    send += (await usec(true)) - before;
    const acks = redis.pipeline();
    users.forEach((u, i) => {
      const id = replies[i * (2 * per + 3) + 2 * per - 1][1];
      acks.set(u.acked, `${per} ${id}`, 'PX', MAX_AGE_MS).xtrim(u.inbox, 'MINID', id);
    });
    before = await usec(true);
    await acks.exec();
    ack += (await usec(true)) - before;
  }
  return { send: send / (rounds * USERS * per), ack: ack / (rounds * USERS) };
}

const results = {};
console.log(
  `lane scripts on a redis-server of their own (port ${port}): ${USERS} users, ${rounds} rounds; microseconds of Redis time (INFO commandstats)`,
);
console.log(
  '| messages per send call | lane send / msg | plain send / msg | lane ack | plain ack | lane / plain (send + ack per msg) |',
);
console.log('|---|---|---|---|---|---|');
for (const per of perCall) {
  await scripts(per); // note: warm-up (script cache, allocator)
  const lane = await scripts(per);
  const base = await plain(per);
  const ratio = (lane.send + lane.ack / per) / (base.send + base.ack / per);
  results[per] = {
    laneSendUs: +lane.send.toFixed(2),
    laneAckUs: +lane.ack.toFixed(2),
    plainSendUs: +base.send.toFixed(2),
    plainAckUs: +base.ack.toFixed(2),
    ratio: +ratio.toFixed(2),
  };
  console.log(
    `| ${per} | ${lane.send.toFixed(2)} | ${base.send.toFixed(2)} | ${lane.ack.toFixed(2)} | ${base.ack.toFixed(2)} | ${ratio.toFixed(2)}x |`,
  );
}
redis.disconnect();
server.stop();
console.log(`RESULT ${JSON.stringify({ users: USERS, rounds, perCall: results })}`);
