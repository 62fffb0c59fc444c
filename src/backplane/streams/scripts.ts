/**
 * The reliable lane's Lua scripts. Each opens with its KEYS and ARGV. They run on a standalone Redis
 * (or one primary): `send` also writes to the delivery streams of the instances in the user's presence
 * set, keys it computes from `instancePrefix`, which Redis Cluster would refuse (see ARCHITECTURE.md).
 */

/**
 * Appends one message to a user's inbox with the next gapless offset and routes a wake-up to every live
 * instance holding the user; drops a duplicate of an idempotency key already sent.
 *
 * KEYS[1] seq          KEYS[2] inbox        KEYS[3] presence     KEYS[4] dedup marker (or "" for none)
 * ARGV[1] message id   ARGV[2] target       ARGV[3] args (JSON)  ARGV[4] max length   ARGV[5] max age (ms)
 * ARGV[6] instance key prefix               ARGV[7] user id      ARGV[8] delivery stream max length
 * Returns { offset, message id, 1 if it was a duplicate else 0 }.
 */
export const SEND_SCRIPT = `
if KEYS[4] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing then
    local offset, mid = string.match(existing, '^(%d+) (.*)$')
    return { tonumber(offset), mid, 1 }
  end
end
local offset = redis.call('INCR', KEYS[1])
local maxAge = tonumber(ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '=', ARGV[4], '*', 'o', offset, 'm', ARGV[1], 't', ARGV[2], 'a', ARGV[3])
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('XTRIM', KEYS[2], 'MINID', tostring(nowMs - maxAge))
for i = 1, 2 do redis.call('PEXPIRE', KEYS[i], maxAge) end
if KEYS[4] ~= '' then
  redis.call('SET', KEYS[4], offset .. ' ' .. ARGV[1], 'PX', maxAge)
end
for _, instance in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local base = ARGV[6] .. instance .. '}'
  if redis.call('EXISTS', base .. ':alive') == 1 then
    redis.call('XADD', base .. ':deliveries', 'MAXLEN', '~', ARGV[8], '*', 'u', ARGV[7], 'o', offset)
  else
    redis.call('SREM', KEYS[3], instance)
  end
end
return { offset, ARGV[1], 0 }
`;

/**
 * Records that the user's client acknowledged everything up to an offset; never moves backwards.
 *
 * KEYS[1] acked
 * ARGV[1] offset       ARGV[2] the message's stream id      ARGV[3] max age (ms)
 * Returns 1 when it advanced, 0 when the recorded offset was already there or beyond.
 */
export const ACK_SCRIPT = `
local current = redis.call('GET', KEYS[1])
if current and tonumber(string.match(current, '^(%d+)')) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
return 1
`;
