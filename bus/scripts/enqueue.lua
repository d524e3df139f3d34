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
local tc = string.format('%d', now)
for i = 3, #ARGV, 4 do
  local id = ARGV[i]
  local run_at = tonumber(ARGV[i + 3])
  local m = string.format('%d', tonumber(ARGV[i + 2]))
  -- The state JSON is written as a string: cjson.encode of a table costs
  -- more than the rest of the loop. HSETNX both tests and writes the state.
  local st
  if run_at > now then
    st = '{"s":"scheduled","a":0,"m":' .. m .. ',"tc":' .. tc
      .. ',"ra":' .. string.format('%d', run_at) .. '}'
  else
    st = '{"s":"queued","a":0,"m":' .. m .. ',"tc":' .. tc .. '}'
  end
  if redis.call('HSETNX', KEYS[2], id, st) == 0 then
    out[#out + 1] = 0
  else
    if run_at > now then
      redis.call('ZADD', KEYS[5], run_at, id)
      local head = redis.call('ZRANGE', KEYS[5], 0, 0)
      if head[1] == id then wake_delayed = true end
    else
      ready[#ready + 1] = id
    end
    redis.call('HSET', KEYS[1], id, ARGV[i + 1])
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
