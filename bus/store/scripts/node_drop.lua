--[[ node_drop.lua: drop a node and its queue, deleting the copies waiting there.

Copies of broadcasts in a node's queue were meant for that node: when it is
gone they are deleted, never run elsewhere. Waiting and running copies go
(a running one belonged to the dead node's worker); dead ones stay in the
dead letters, finished ones until their retention ends.

KEYS[1]  nodes zset     KEYS[2]  joined hash    KEYS[3]  queues set
KEYS[4]  state hash     KEYS[5]  tasks hash     KEYS[6]  errors hash
KEYS[7]  ready list     KEYS[8]  delayed zset   KEYS[9]  inflight zset
KEYS[10] wake list      (of the node's queue)
ARGV[1]  now_ms   ARGV[2]  node   ARGV[3]  the node's queue name
ARGV[4]  '1': drop even if alive (the node leaves); '0': only if its time ran out

Returns the number of copies deleted, or -1 if the node is alive (no change).
]]
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if ARGV[4] ~= '1' and score and tonumber(score) >= tonumber(ARGV[1]) then
  return -1
end
local ids = redis.call('LRANGE', KEYS[7], 0, -1)
for _, key in ipairs({KEYS[8], KEYS[9]}) do
  for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do ids[#ids + 1] = id end
end
local deleted = 0
for _, id in ipairs(ids) do
  deleted = deleted + redis.call('HDEL', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
  redis.call('HDEL', KEYS[6], id)
end
redis.call('DEL', KEYS[7], KEYS[8], KEYS[9], KEYS[10])
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('SREM', KEYS[3], ARGV[3])
return deleted
