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

All or nothing: a write that fails (a damaged key of the wrong type, NOPERM
under an ACL user) undoes every write this call made and returns that error.
Without the undo, a task whose state was written but whose record or queue
entry was not would be "already known" to every later enqueue: lost for good.
The publisher relies on this: a task whose state exists is a whole task
(routed.lua). Redis refuses an over-maxmemory script at its first write, so
OOM leaves nothing to undo either.
]]
local now = tonumber(ARGV[1])
local out = {}
local ready = {}
local added = {}
local delayed = {}
local wake_delayed = false
local tc = string.format('%d', now)

-- Every command pcalled here answers an integer; an error is a table.
-- Undo this call's writes and return the error. Only deletes of what this
-- call itself wrote: they cannot fail for a wrong type.
local new_queue = 0
local function undo(reply, pushed)
  if pushed > 0 then redis.pcall('LPOP', KEYS[4], pushed) end
  if new_queue == 1 then redis.pcall('SREM', KEYS[3], ARGV[2]) end
  if #delayed > 0 then redis.pcall('ZREM', KEYS[5], unpack(delayed)) end
  if #added > 0 then
    redis.pcall('HDEL', KEYS[1], unpack(added))
    redis.pcall('HDEL', KEYS[2], unpack(added))
  end
  return reply
end

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
  local new = redis.pcall('HSETNX', KEYS[2], id, st)
  if type(new) == 'table' then return undo(new, 0) end
  if new == 0 then
    out[#out + 1] = 0
  else
    added[#added + 1] = id
    local r = redis.pcall('HSET', KEYS[1], id, ARGV[i + 1])
    if type(r) == 'table' then return undo(r, 0) end
    if run_at > now then
      r = redis.pcall('ZADD', KEYS[5], run_at, id)
      if type(r) == 'table' then return undo(r, 0) end
      delayed[#delayed + 1] = id
      local head = redis.call('ZRANGE', KEYS[5], 0, 0)
      if head[1] == id then wake_delayed = true end
    else
      ready[#ready + 1] = id
    end
    out[#out + 1] = 1
  end
end
if #out > 0 then
  local r = redis.pcall('SADD', KEYS[3], ARGV[2])
  if type(r) == 'table' then return undo(r, 0) end
  new_queue = r
end
if #ready > 0 then
  local r = redis.pcall('LPUSH', KEYS[4], unpack(ready))
  if type(r) == 'table' then return undo(r, 0) end
end
if new_queue == 1 then
  local n = redis.pcall('LLEN', KEYS[7])
  if n == 0 then n = redis.pcall('LPUSH', KEYS[7], '1') end
  if type(n) == 'table' then return undo(n, #ready) end
end
if #ready > 0 or wake_delayed then
  local n = redis.pcall('LLEN', KEYS[6])
  if n == 0 then n = redis.pcall('LPUSH', KEYS[6], '1') end
  if type(n) == 'table' then return undo(n, #ready) end
end
return out
