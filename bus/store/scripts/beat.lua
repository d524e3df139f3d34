--[[ beat.lua: write a worker's status record and reap those of dead workers.

KEYS[1]  workers hash  (worker id -> status JSON)
KEYS[2]  beats zset    (worker id -> last heartbeat ms)
ARGV[1]  now_ms        ARGV[2]  worker id     ARGV[3]  status JSON ('' = remove)
ARGV[4]  reap workers whose last heartbeat is older than this many ms

Returns the ids of the workers reaped.
]]
local now = tonumber(ARGV[1])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[2])
else
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[2], now, ARGV[2])
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]), 'LIMIT', 0, 100)
if #stale > 0 then
  redis.call('ZREM', KEYS[2], unpack(stale))
  redis.call('HDEL', KEYS[1], unpack(stale))
end
return stale
