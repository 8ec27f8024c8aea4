/**
 * The append-and-publish script: one atomic step that stores an event in its topic's stream (with
 * retention) and publishes it with its position, so every live message knows where it sits in history.
 */

/**
 * KEYS[1] stream, KEYS[2] epoch, KEYS[3] idempotency key ('' when unused)
 * ARGV[1] channel, ARGV[2] max length (0 = unbounded), ARGV[3] max age ms (0 = unbounded),
 * ARGV[4] event, ARGV[5] data, ARGV[6] idempotency ttl ms, ARGV[7] live message prefix (protocol version)
 * Returns { epoch, 'ms-seq' }.
 */
export const PUBLISH_SCRIPT = `
local stream, epochKey, idemKey = KEYS[1], KEYS[2], KEYS[3]
local channel, maxLen, maxAgeMs = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local event, data, idemTtl, version = ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]

if idemKey ~= '' then
  local previous = redis.call('GET', idemKey)
  if previous then
    local colon = string.find(previous, ':', 1, true)
    return { string.sub(previous, 1, colon - 1), string.sub(previous, colon + 1) }
  end
end

-- A stream that does not exist (first publish, flush, eviction, failover to an empty replica) starts a
-- new epoch, so cursors issued by an older incarnation are recognised as stale instead of misread.
local epoch = redis.call('GET', epochKey)
if (not epoch) or redis.call('EXISTS', stream) == 0 then
  local t = redis.call('TIME')
  local n = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local digits = '0123456789abcdefghijklmnopqrstuvwxyz'
  epoch = ''
  while n > 0 do
    local r = n % 36
    epoch = string.sub(digits, r + 1, r + 1) .. epoch
    n = (n - r) / 36
  end
  redis.call('SET', epochKey, epoch)
end

local id
if maxLen > 0 then
  id = redis.call('XADD', stream, 'MAXLEN', '~', maxLen, '*', 'e', event, 'd', data)
else
  id = redis.call('XADD', stream, '*', 'e', event, 'd', data)
end
if maxAgeMs > 0 then
  local dash = string.find(id, '-', 1, true)
  local minMs = tonumber(string.sub(id, 1, dash - 1)) - maxAgeMs
  if minMs > 0 then
    redis.call('XTRIM', stream, 'MINID', '~', string.format('%d', minMs))
  end
end

redis.call('PUBLISH', channel, version .. '\\n' .. epoch .. '\\n' .. id .. '\\n' .. event .. '\\n' .. data)
if idemKey ~= '' then
  redis.call('SET', idemKey, epoch .. ':' .. id, 'PX', idemTtl)
end
return { epoch, id }
`;
