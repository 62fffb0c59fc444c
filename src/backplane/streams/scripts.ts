/**
 * The reliable lane's Lua scripts. Each opens with its KEYS and ARGV. On a Redis Cluster every script
 * touches the keys of one slot only: the user's (`{u:<id>}`) or one instance's (`{i:<id>}`), so routing a
 * wake-up to the instances holding a user is a second step after the send (`route()` in
 * `reliable-producer.ts`), and the heartbeat's re-read closes the window between the two. On one node the
 * send script still routes in the same atomic step (no window at all), which a Cluster would refuse.
 */

/**
 * Appends one message to a user's inbox with the next gapless offset; drops a duplicate of an idempotency
 * key already sent. With an instance key prefix (one node only), it also routes a wake-up to every live
 * instance holding the user, as one atomic step; without one (a Cluster), it returns those instances, to
 * which the sender routes the wake-ups itself (a duplicate returns them too: its retry routes again).
 *
 * KEYS[1] seq          KEYS[2] inbox        KEYS[3] presence     KEYS[4] dedup marker
 * ARGV[1] message id   ARGV[2] target       ARGV[3] args (JSON)  ARGV[4] max length   ARGV[5] max age (ms)
 * ARGV[6] instance key prefix ("" on a Cluster)                ARGV[7] user id
 * ARGV[8] delivery stream max length   ARGV[9] "1" when the message has an idempotency key (KEYS[4])
 * Returns { offset, message id, 1 if it was a duplicate else 0, instance id to route to... }.
 * note: KEYS[4] is always a key of the user's slot (an empty name would hash elsewhere: CROSSSLOT).
 */
export const SEND_SCRIPT = `
local inline = ARGV[6] ~= ''
local function unrouted(reply)
  if not inline then
    for _, instance in ipairs(redis.call('SMEMBERS', KEYS[3])) do table.insert(reply, instance) end
  end
  return reply
end
if ARGV[9] == '1' then
  local existing = redis.call('GET', KEYS[4])
  if existing then
    local offset, mid = string.match(existing, '^(%d+) (.*)$')
    return unrouted({ tonumber(offset), mid, 1 })
  end
end
local offset = redis.call('INCR', KEYS[1])
local maxAge = tonumber(ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '=', ARGV[4], '*', 'o', offset, 'm', ARGV[1], 't', ARGV[2], 'a', ARGV[3])
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('XTRIM', KEYS[2], 'MINID', tostring(nowMs - maxAge))
for i = 1, 2 do redis.call('PEXPIRE', KEYS[i], maxAge) end
if ARGV[9] == '1' then
  redis.call('SET', KEYS[4], offset .. ' ' .. ARGV[1], 'PX', maxAge)
end
if inline then
  for _, instance in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    local base = ARGV[6] .. instance .. '}'
    if redis.call('EXISTS', base .. ':alive') == 1 then
      redis.call('XADD', base .. ':deliveries', 'MAXLEN', '~', ARGV[8], '*', 'u', ARGV[7], 'o', offset)
    else
      redis.call('SREM', KEYS[3], instance)
    end
  end
end
return unrouted({ offset, ARGV[1], 0 })
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
 * messages that were relayed again under the same offsets.
 *
 * KEYS[1] acked        KEYS[2] inbox
 * ARGV[1] offset       ARGV[2] the message's stream id      ARGV[3] max age (ms)
 * Returns 1 when it advanced, 0 when the recorded offset was already there or beyond, -1 when the inbox
 * does not hold that entry (a stale ack).
 */
export const ACK_SCRIPT = `
local entry = redis.call('XRANGE', KEYS[2], ARGV[2], ARGV[2])
if #entry == 0 then return -1 end
local fields = entry[1][2]
local offset = nil
for i = 1, #fields, 2 do if fields[i] == 'o' then offset = fields[i + 1] end end
if offset ~= ARGV[1] then return -1 end
local current = redis.call('GET', KEYS[1])
if current and tonumber(string.match(current, '^(%d+)')) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
return 1
`;

/**
 * The heartbeat's per-user step: re-registers this instance in the user's presence and reports the user's
 * last offset and acked offset, so that the instance re-reads the inbox of a user with unacked messages
 * (a wake-up may have been lost: the sender died between its two steps, or a failover dropped it).
 *
 * KEYS[1] presence     KEYS[2] seq          KEYS[3] acked
 * ARGV[1] instance id
 * Returns { last offset, acked offset } (0 when absent).
 */
export const BEAT_USER_SCRIPT = `
redis.call('SADD', KEYS[1], ARGV[1])
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local acked = redis.call('GET', KEYS[3])
local ackedOffset = 0
if acked then ackedOffset = tonumber(string.match(acked, '^(%d+)')) end
return { seq, ackedOffset }
`;
