--[[ enqueue.lua: add tasks to one queue of one app; a known id is a no-op.

KEYS[1]  tasks hash      (id -> immutable record)
KEYS[2]  state hash      (id -> mutable state JSON)
KEYS[3]  queues set      (names of the app's queues)
KEYS[4]  ready list      of the queue
KEYS[5]  delayed zset    of the queue
KEYS[6]  wake list       of the queue
KEYS[7]  app wake list   (woken when the app gains a new queue, for '*' workers)
ARGV[1]  now_ms
ARGV[2]  queue name
then 4 ARGV per task: id, record, max_attempts, run_at_ms (0 = now)

Returns one integer per task: 1 added, 0 already known (nothing changed).
A task due now goes to the ready list; a later one to the delayed zset. Idle
workers are woken when the ready list gains tasks or the earliest delayed time
moves earlier, so no worker has to poll.
]]
local now = tonumber(ARGV[1])
local out = {}
local ready = {}
local wake_delayed = false
for i = 3, #ARGV, 4 do
  local id = ARGV[i]
  if redis.call('HEXISTS', KEYS[2], id) == 1 then
    out[#out + 1] = 0
  else
    local run_at = tonumber(ARGV[i + 3])
    local st = {a = 0, m = tonumber(ARGV[i + 2]), tc = now}
    if run_at > now then
      st.s = 'scheduled'
      st.ra = run_at
      redis.call('ZADD', KEYS[5], run_at, id)
      local head = redis.call('ZRANGE', KEYS[5], 0, 0)
      if head[1] == id then wake_delayed = true end
    else
      st.s = 'queued'
      ready[#ready + 1] = id
    end
    redis.call('HSET', KEYS[1], id, ARGV[i + 1])
    redis.call('HSET', KEYS[2], id, cjson.encode(st))
    out[#out + 1] = 1
  end
end
if #ready > 0 then
  redis.call('LPUSH', KEYS[4], unpack(ready))
end
if #out > 0 and redis.call('SADD', KEYS[3], ARGV[2]) == 1
    and redis.call('LLEN', KEYS[7]) == 0 then
  redis.call('LPUSH', KEYS[7], '1')
end
if (#ready > 0 or wake_delayed) and redis.call('LLEN', KEYS[6]) == 0 then
  redis.call('LPUSH', KEYS[6], '1')
end
return out
