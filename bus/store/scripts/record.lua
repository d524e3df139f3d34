--[[ record.lua: durably record published events before they are routed.

An event is recorded once; then it is "pending" until every subscribing app
has its task (routed.lua). A publisher that dies in between leaves it pending,
and any worker's sweep finishes the routing. With a dedup field, the same
source + id within the window returns the first event's key and records
nothing.

KEYS[1]  events hash        (event key -> envelope JSON)
KEYS[2]  events zset        (event key -> recorded ms; retention)
KEYS[3]  pending zset       (event key -> recorded ms; not fully routed)
KEYS[4]  dedup hash         (source + id -> event key)
KEYS[5]  dedup zset         (source + id -> recorded ms; window)
KEYS[6]  registry version   (string counter)
ARGV[1]  now_ms    ARGV[2]  dedup window ms    ARGV[3]  event retention ms
then 3 ARGV per event: key, envelope, dedup field ('' for none)

Returns {registry_version, key_1, new_1, key_2, new_2, ...}: new is 1 for an
event recorded now; for a duplicate the key is the first event's, and new is
2 while that event is still pending (its routing failed or is under way: the
publisher routes it again, idempotently), else 0.

All or nothing for the events of the call: a write that fails (a key of the
wrong type, NOPERM) undoes this call's writes and returns the error, so no
event is left in the log without its pending entry.
]]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local retention = tonumber(ARGV[3])

-- Dedup entries past the window go, unless their event is still pending: a
-- publisher retrying after RoutingIncomplete must still find the first event
-- (the entry is looked at again a window later).
local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - window, 'LIMIT', 0, 100)
if #old > 0 then
  local drop = {}
  for _, field in ipairs(old) do
    local first = redis.call('HGET', KEYS[4], field)
    if first and redis.call('ZSCORE', KEYS[3], first) then
      redis.call('ZADD', KEYS[5], now, field)
    else
      drop[#drop + 1] = field
    end
  end
  if #drop > 0 then
    redis.call('ZREM', KEYS[5], unpack(drop))
    redis.call('HDEL', KEYS[4], unpack(drop))
  end
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - retention, 'LIMIT', 0, 100)
for _, key in ipairs(expired) do
  if not redis.call('ZSCORE', KEYS[3], key) then
    redis.call('ZREM', KEYS[2], key)
    redis.call('HDEL', KEYS[1], key)
  end
end

local out = {redis.call('GET', KEYS[6]) or '0'}
local written = {}
local function failed(reply)
  return type(reply) == 'table' and reply.err ~= nil
end
local function undo(reply)
  for _, w in ipairs(written) do
    redis.pcall('HDEL', KEYS[1], w[1])
    redis.pcall('ZREM', KEYS[2], w[1])
    redis.pcall('ZREM', KEYS[3], w[1])
    if w[2] ~= '' then
      redis.pcall('HDEL', KEYS[4], w[2])
      redis.pcall('ZREM', KEYS[5], w[2])
    end
  end
  return reply
end
for i = 4, #ARGV, 3 do
  local key, envelope, dedup = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local first = false
  if dedup ~= '' then
    first = redis.pcall('HGET', KEYS[4], dedup)
    if failed(first) then return undo(first) end
  end
  if first then
    out[#out + 1] = first
    local still = redis.pcall('ZSCORE', KEYS[3], first)
    if failed(still) then return undo(still) end
    out[#out + 1] = still and 2 or 0
  else
    written[#written + 1] = {key, dedup}
    local r = redis.pcall('HSET', KEYS[1], key, envelope)
    if not failed(r) then r = redis.pcall('ZADD', KEYS[2], now, key) end
    if not failed(r) then r = redis.pcall('ZADD', KEYS[3], now, key) end
    if not failed(r) and dedup ~= '' then
      r = redis.pcall('HSET', KEYS[4], dedup, key)
      if not failed(r) then r = redis.pcall('ZADD', KEYS[5], now, dedup) end
    end
    if failed(r) then return undo(r) end
    out[#out + 1] = key
    out[#out + 1] = 1
  end
end
return out
