--[[ node_beat.lua: keep a node registered; name the nodes that are gone.

A node counts as alive until its last beat plus its own TTL (each node sets
its own, so nodes with different leases never drop each other early). Its
join time is written once; a node that was dropped and beats again joins anew.

KEYS[1]  nodes zset   (node -> alive-until ms)
KEYS[2]  joined hash  (node -> joined ms)
KEYS[3]  queues set   (names of the app's queues)
ARGV[1]  now_ms   ARGV[2]  node   ARGV[3]  ttl_ms
ARGV[4]  the prefix of node queue names ('node.')

Returns the nodes to drop (node_drop.lua): those whose time ran out, and those
with a queue in the queues set but no registration (a copy enqueued for a node
just after it was dropped).
]]
local now = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('HSETNX', KEYS[2], ARGV[2], now)
local out = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 100)
local prefix = ARGV[4]
for _, queue in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if string.sub(queue, 1, #prefix) == prefix then
    local node = string.sub(queue, #prefix + 1)
    if not redis.call('ZSCORE', KEYS[1], node) then out[#out + 1] = node end
  end
end
return out
