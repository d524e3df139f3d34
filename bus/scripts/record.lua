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

Returns {registry_version, key_1, new_1, key_2, new_2, ...}: for a duplicate,
the key is the first event's and new is 0.
]]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local retention = tonumber(ARGV[3])

local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - window, 'LIMIT', 0, 100)
if #old > 0 then
  redis.call('ZREM', KEYS[5], unpack(old))
  redis.call('HDEL', KEYS[4], unpack(old))
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - retention, 'LIMIT', 0, 100)
for _, key in ipairs(expired) do
  if not redis.call('ZSCORE', KEYS[3], key) then
    redis.call('ZREM', KEYS[2], key)
    redis.call('HDEL', KEYS[1], key)
  end
end

local out = {redis.call('GET', KEYS[6]) or '0'}
for i = 4, #ARGV, 3 do
  local key, envelope, dedup = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local first = false
  if dedup ~= '' then first = redis.call('HGET', KEYS[4], dedup) end
  if first then
    out[#out + 1] = first
    out[#out + 1] = 0
  else
    redis.call('HSET', KEYS[1], key, envelope)
    redis.call('ZADD', KEYS[2], now, key)
    redis.call('ZADD', KEYS[3], now, key)
    if dedup ~= '' then
      redis.call('HSET', KEYS[4], dedup, key)
      redis.call('ZADD', KEYS[5], now, dedup)
    end
    out[#out + 1] = key
    out[#out + 1] = 1
  end
end
return out
