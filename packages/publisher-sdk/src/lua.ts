/**
 * The append-and-publish script: one atomic step that stores an event in its topic's stream (with
 * retention) and publishes it with its position, so every live message knows where it sits in history.
 */

/**
 * KEYS[1] stream, KEYS[2] epoch, KEYS[3] idempotency key (optional: pass 2 keys, or '' as the third, when
 * unused; omit it on Redis Cluster, where '' hashes to slot 0 and makes the call CROSSSLOT)
 * ARGV[1] channel, ARGV[2] max length (0 = unbounded), ARGV[3] max age ms (0 = unbounded),
 * ARGV[4] event, ARGV[5] data, ARGV[6] idempotency ttl ms, ARGV[7] live message prefix (protocol version),
 * ARGV[8] (optional) '1' to publish the live message with SPUBLISH (sharded pub/sub, on Redis Cluster, where
 * the gateways SSUBSCRIBE on the node owning the topic's slot); missing or anything else means PUBLISH, so
 * callers that pass 7 arguments keep working.
 * ARGV[9] (optional) idle time-to-live of the topic's keys in ms: every publish renews it, so a topic
 * nobody publishes to for that long disappears from Redis (its next publish starts a new epoch); missing or
 * 0 means the keys never expire. Needs ARGV[8] ('0' for PUBLISH) when given.
 * Returns { epoch, 'ms-seq' }.
 *
 * With ARGV[7] = '2' (protocol v2) the live message also names the entry that preceded it in the stream
 * (its last-generated-id before this XADD, '0-0' for a new epoch), so a subscriber that sees a predecessor
 * other than the last event it got knows it missed a message and refills from the stream.
 *
 * Retention is exact and done with XDEL, not XADD MAXLEN / XTRIM: Redis does not record what trimming
 * removed (XINFO STREAM's max-deleted-entry-id only moves on XDEL), and readers need the newest removed
 * id to tell a cursor that fell out of history ('trimmed') from one that is still served. Each call
 * removes at most TRIM_BATCH entries, so lowering the retention of a long stream converges over a few
 * publishes instead of blocking Redis.
 */
export const PUBLISH_SCRIPT = `
local stream, epochKey, idemKey = KEYS[1], KEYS[2], KEYS[3] or ''
local channel, maxLen, maxAgeMs = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local event, data, idemTtl, version = ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
local publishCommand = ARGV[8] == '1' and 'SPUBLISH' or 'PUBLISH'
local idleTtl = tonumber(ARGV[9] or '0') or 0

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

-- The entry before this one, whether or not retention removed it since: XINFO's last-generated-id.
local prev = '0-0'
if version ~= '1' and redis.call('EXISTS', stream) == 1 then
  local info = redis.call('XINFO', 'STREAM', stream)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then prev = info[i + 1] break end
  end
end

local TRIM_BATCH = 1000
local function deleteEntries(entries)
  if #entries == 0 then return end
  local ids = {}
  for i, entry in ipairs(entries) do ids[i] = entry[1] end
  redis.call('XDEL', stream, unpack(ids))
end

-- v2 entries keep their predecessor too ('p'), so a reader can tell history that lost entries after a
-- failover (the entry after a cursor does not follow it) from history that is whole.
local id
if version == '1' then
  id = redis.call('XADD', stream, '*', 'e', event, 'd', data)
else
  id = redis.call('XADD', stream, '*', 'e', event, 'd', data, 'p', prev)
end
if maxAgeMs > 0 then
  local dash = string.find(id, '-', 1, true)
  local minMs = tonumber(string.sub(id, 1, dash - 1)) - maxAgeMs
  if minMs > 0 then
    -- An end id without a sequence means 'every entry of that millisecond': all entries older than minMs.
    deleteEntries(redis.call('XRANGE', stream, '-', string.format('%d', minMs - 1), 'COUNT', TRIM_BATCH))
  end
end
if maxLen > 0 then
  local excess = redis.call('XLEN', stream) - maxLen
  if excess > 0 then
    deleteEntries(redis.call('XRANGE', stream, '-', '+', 'COUNT', math.min(excess, TRIM_BATCH)))
  end
end

if version == '1' then
  redis.call(publishCommand, channel, version .. '\\n' .. epoch .. '\\n' .. id .. '\\n' .. event .. '\\n' .. data)
else
  redis.call(publishCommand, channel, version .. '\\n' .. epoch .. '\\n' .. id .. '\\n' .. prev .. '\\n' .. event .. '\\n' .. data)
end
if idleTtl > 0 then
  redis.call('PEXPIRE', stream, idleTtl)
  redis.call('PEXPIRE', epochKey, idleTtl)
end
if idemKey ~= '' then
  redis.call('SET', idemKey, epoch .. ':' .. id, 'PX', idemTtl)
end
return { epoch, id }
`;

/** ARGV[8] of PUBLISH_SCRIPT that makes it SPUBLISH the live message instead of PUBLISH. */
export const SHARDED_PUBLISH_FLAG = '1';
