/**
 * The reliable lane's Lua scripts. Each opens with its KEYS and ARGV. On a Redis Cluster every script
 * touches the keys of one slot only: the user's (`{u:<id>}`) or one instance's (`{i:<id>}`), so routing a
 * wake-up to the instances holding a user is a second step after the send (`route()` in
 * `reliable-producer.ts`), and the heartbeat's re-read closes the window between the two. On one node the
 * send script still routes in the same atomic step (no window at all), which a Cluster would refuse.
 */

/**
 * The most argument characters (JSON) a wake-up carries along with its messages (see {@link SEND_SCRIPT}):
 * bigger messages are read from the inbox, so that a paused instance's delivery stream (up to
 * `DELIVERY_STREAM_MAX` entries) stays small.
 */
export const WAKEUP_PAYLOAD_MAX = 512;

/** ARGV entries per message in {@link SEND_SCRIPT}, after the common ones. */
export const SEND_ARGS_PER_MESSAGE = 4;

/**
 * Appends messages to one user's inbox, in the order given, each with the next gapless offset; drops a
 * message whose idempotency key was already sent (it answers with the first one's offset). With an
 * instance key prefix (one node only), it also routes one wake-up (the last offset) to every live instance
 * holding the user, in the same atomic step; without one (a Cluster), it returns those instances, to which
 * the sender routes the wake-up itself (a batch of duplicates returns them too: its retry routes again).
 *
 * Idempotency keys are kept per user in one sorted set (member: the key, score: its offset) rather than
 * one key per message: it expires with the user's other keys (`maxAgeMs` after the last send) and keeps
 * the keys of the last `maxLength` offsets (what the inbox can hold).
 *
 * KEYS[1] seq          KEYS[2] inbox        KEYS[3] presence     KEYS[4] sent keys (sorted set)
 * ARGV[1] max length   ARGV[2] max age (ms) ARGV[3] instance key prefix ("" on a Cluster)
 * ARGV[4] user id      ARGV[5] delivery stream max length
 * then per message: message id, target, args (JSON), "1" when the message id is an idempotency key
 * Returns { message count, then per message: offset, message id, 1 if it was a duplicate else 0, then the
 * instance ids to route to... }.
 *
 * A wake-up carries the user id and the last offset (`u`, `o`); when the arguments of the messages the call
 * appended are at most {@link WAKEUP_PAYLOAD_MAX} characters together, also their inbox entries in offset
 * order (per message `s` stream id, `m`, `t`, `a`; their offsets end at `o`), so that a session caught up to
 * the offset before them delivers them without a read.
 */
export const SEND_SCRIPT = `
local maxLength = tonumber(ARGV[1])
local maxAge = tonumber(ARGV[2])
local inline = ARGV[3] ~= ''
local count = (#ARGV - 5) / ${SEND_ARGS_PER_MESSAGE}
-- note: tables are filled by index, not table.insert (a global lookup and a C call each), and the server
-- time is read off the stream id XADD returns (no TIME): Lua's own work was most of this script's cost.
local reply = { count }
local r = 1
local last = 0
local keyed = false
local fresh = {}
local ids = {}
local n = 0
local carried = 0
for i = 0, count - 1 do
  local base = 5 + i * ${SEND_ARGS_PER_MESSAGE}
  local mid = ARGV[base + 1]
  local isKey = ARGV[base + 4] == '1'
  local existing = false
  if isKey then existing = redis.call('ZSCORE', KEYS[4], mid) end
  if existing then
    reply[r + 1] = tonumber(existing)
    reply[r + 2] = mid
    reply[r + 3] = 1
  else
    local offset = redis.call('INCR', KEYS[1])
    n = n + 1
    fresh[n] = base
    ids[n] = redis.call('XADD', KEYS[2], 'MAXLEN', '=', maxLength, '*', 'o', offset, 'm', mid, 't', ARGV[base + 2],
      'a', ARGV[base + 3])
    carried = carried + #ARGV[base + 3]
    if isKey then
      redis.call('ZADD', KEYS[4], offset, mid)
      keyed = true
    end
    last = offset
    reply[r + 1] = offset
    reply[r + 2] = mid
    reply[r + 3] = 0
  end
  r = r + 3
end
if last > 0 then
  -- note: an id XADD made is the server's time in ms (or later, if the clock went back since the last one).
  local nowMs = tonumber(string.match(ids[n], '^(%d+)'))
  redis.call('XTRIM', KEYS[2], 'MINID', tostring(nowMs - maxAge))
  redis.call('PEXPIRE', KEYS[1], maxAge)
  redis.call('PEXPIRE', KEYS[2], maxAge)
end
if keyed then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. (last - maxLength + 1))
  redis.call('PEXPIRE', KEYS[4], maxAge)
end
if inline then
  if last > 0 then
    -- note: small messages travel in their wake-up, so that a session caught up to the one before them
    -- delivers them without reading the inbox (the entries stay the truth: the ack checks them).
    local wakeup = { 'u', ARGV[4], 'o', last }
    if carried <= ${WAKEUP_PAYLOAD_MAX} and n <= maxLength then
      local w = 4
      for j = 1, n do
        local base = fresh[j]
        wakeup[w + 1] = 's'
        wakeup[w + 2] = ids[j]
        wakeup[w + 3] = 'm'
        wakeup[w + 4] = ARGV[base + 1]
        wakeup[w + 5] = 't'
        wakeup[w + 6] = ARGV[base + 2]
        wakeup[w + 7] = 'a'
        wakeup[w + 8] = ARGV[base + 3]
        w = w + 8
      end
    end
    local instances = redis.call('SMEMBERS', KEYS[3])
    for k = 1, #instances do
      local ikey = ARGV[3] .. instances[k] .. '}'
      if redis.call('EXISTS', ikey .. ':alive') == 1 then
        redis.call('XADD', ikey .. ':deliveries', 'MAXLEN', '~', ARGV[5], '*', unpack(wakeup))
      else
        redis.call('SREM', KEYS[3], instances[k])
      end
    end
  end
else
  local instances = redis.call('SMEMBERS', KEYS[3])
  for k = 1, #instances do reply[r + k] = instances[k] end
end
return reply
`;

/**
 * Routes a wake-up for a user's message to one instance's delivery stream, if that instance is alive.
 *
 * KEYS[1] alive        KEYS[2] deliveries
 * ARGV[1] user id      ARGV[2] offset       ARGV[3] delivery stream max length
 * Returns 1 when routed, 0 when the instance is gone (the sender then drops it from the user's presence).
 */
export const ROUTE_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'u', ARGV[1], 'o', ARGV[2])
return 1
`;

/**
 * Records that the user's client acknowledged everything up to an offset; never moves backwards. An ack
 * belongs to the generation of the message it names: it counts only when the inbox still holds that very
 * entry (stream id and offset). An ack that was in flight while Redis restarted empty, or while a failover
 * dropped the entry, names an entry this Redis never had and is refused, so it cannot acknowledge the
 * messages that were relayed again under the same offsets. Once recorded, the inbox entries up to it are
 * removed (a replay starts after the acked offset; a session already holding them acks with an older
 * offset, which is answered 0 before the entry check).
 *
 * KEYS[1] acked        KEYS[2] inbox
 * ARGV[1] offset       ARGV[2] the message's stream id      ARGV[3] max age (ms)
 * Returns 1 when it advanced, 0 when the recorded offset was already there or beyond, -1 when the inbox
 * does not hold that entry (a stale ack).
 */
const ACK_STEP = `
local function ack(ackedKey, inboxKey, offset, streamId, maxAge)
  local current = redis.call('GET', ackedKey)
  if current and tonumber(string.match(current, '^(%d+)')) >= tonumber(offset) then return 0 end
  local entry = redis.call('XRANGE', inboxKey, streamId, streamId)
  if #entry == 0 then return -1 end
  local fields = entry[1][2]
  local found = nil
  for i = 1, #fields, 2 do if fields[i] == 'o' then found = fields[i + 1] end end
  if found ~= offset then return -1 end
  redis.call('SET', ackedKey, offset .. ' ' .. streamId, 'PX', maxAge)
  local ms, seq = string.match(streamId, '^(%d+)-(%d+)$')
  redis.call('XTRIM', inboxKey, 'MINID', ms .. '-' .. (tonumber(seq) + 1))
  return 1
end
`;

export const ACK_SCRIPT = `${ACK_STEP}
return ack(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
`;

/**
 * {@link ACK_SCRIPT} for many users at once (one node only: their keys are in different slots).
 *
 * KEYS (per user, in twos) acked, inbox
 * ARGV[1] max age (ms), then per user: offset, the message's stream id
 * Returns ACK_SCRIPT's answer per user, in order.
 */
export const ACK_MANY_SCRIPT = `${ACK_STEP}
local reply = {}
for i = 1, #KEYS, 2 do
  reply[(i + 1) / 2] = ack(KEYS[i], KEYS[i + 1], ARGV[i + 1], ARGV[i + 2], ARGV[1])
end
return reply
`;

/**
 * A session's first read: the acked position and the inbox entries after it, in one round trip.
 *
 * KEYS[1] acked        KEYS[2] inbox
 * ARGV[1] how many entries at most
 * Returns { acked value or "", entries... } (entries as XRANGE returns them).
 */
export const READ_SCRIPT = `
local acked = redis.call('GET', KEYS[1])
local start = '-'
if acked then
  local id = string.match(acked, '^%d+ (.+)$')
  if id and id ~= '0-0' then start = '(' .. id end
end
return { acked or '', redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', ARGV[1]) }
`;

/**
 * The heartbeat's per-user step, for one user or (on one node) many: re-registers this instance in each
 * user's presence and reports the user's last offset and acked offset, so that the instance re-reads the
 * inbox of a user with unacked messages (a wake-up may have been lost: the sender died between its two
 * steps, or a failover dropped it). On a Cluster it is called per user (its keys are in the user's slot).
 *
 * KEYS (per user, in threes) presence, seq, acked
 * ARGV[1] instance id
 * Returns { last offset, acked offset } per user, in order (0 when absent).
 */
export const BEAT_USER_SCRIPT = `
local reply = {}
for i = 1, #KEYS, 3 do
  redis.call('SADD', KEYS[i], ARGV[1])
  local acked = redis.call('GET', KEYS[i + 2])
  local ackedOffset = 0
  if acked then ackedOffset = tonumber(string.match(acked, '^(%d+)')) end
  reply[#reply + 1] = tonumber(redis.call('GET', KEYS[i + 1]) or '0')
  reply[#reply + 1] = ackedOffset
end
return reply
`;
