--[[ claim.lua: claim up to N tasks from an app's queues, first queue first.

Every worker runs this; there is no separate recovery or scheduler process.
Before claiming, for each queue it
  1. recovers tasks whose lease expired (worker killed, paused or cut off):
     back to the front of the ready list, or dead when out of attempts;
  2. promotes delayed tasks that are due to the back of the ready list.
Claiming moves a task id from the ready list into the in-flight zset with a
lease deadline, in the same step: a task never leaves the system while worked.
Each claim gets a fresh token; acks and renewals must present it (fencing).

KEYS[1]  state hash    KEYS[2]  tasks hash    KEYS[3]  errors hash
KEYS[4]  dead zset     KEYS[5]  seq counter
then 4 KEYS per queue, in the worker's order: ready, delayed, inflight, wake
ARGV[1]  now_ms        ARGV[2]  lease_ms      ARGV[3]  max tasks to claim
ARGV[4]  worker id     ARGV[5]  max recoveries and promotions per queue
ARGV[6]  optional: '1' = now is the later of ARGV[1] and the server's clock
         (a claim pipelined behind a blocking wait runs long after it was sent)

Returns {next_wake_ms, id, queue_index, attempt, token, record, id, ...}
next_wake_ms is the earliest delayed run_at or lease deadline over the queues
(-1 if none); it is only computed when fewer than N tasks were claimed.
]]
local now = tonumber(ARGV[1])
if ARGV[6] == '1' then
  local t = redis.call('TIME')
  local server_now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if server_now > now then now = server_now end
end
local lease = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local worker = ARGV[4]
local limit = tonumber(ARGV[5])
local nq = (#KEYS - 5) / 4
local backlog = false

local function add_error(id, err)
  local raw = redis.call('HGET', KEYS[3], id)
  local ok, list = pcall(cjson.decode, raw or '[]')
  if not ok or type(list) ~= 'table' then
    list = {{type = 'CorruptErrorList', message = string.sub(raw, 1, 2000)}}
  end
  list[#list + 1] = err
  redis.call('HSET', KEYS[3], id, cjson.encode(list))
end

-- A state entry that does not decode (damage in Redis, not ours) would fail
-- the whole call, and Lua does not roll back what the call already did.
local function decode_state(raw)
  local ok, st = pcall(cjson.decode, raw)
  if ok and type(st) == 'table' and type(st.a) == 'number' and type(st.m) == 'number' then
    return st
  end
  return nil
end

-- Dead-letter a damaged task with the reason: it costs that task, never the call.
local function bury(id, why, raw)
  add_error(id, {type = 'CorruptTask', at = now, message = why .. ': ' .. string.sub(raw or '', 1, 500)})
  redis.call('HSET', KEYS[1], id, cjson.encode({s = 'dead', a = 0, m = 1, tf = now, why = why}))
  redis.call('ZADD', KEYS[4], now, id)
end

for q = 0, nq - 1 do
  local ready, delayed, inflight = KEYS[6 + q * 4], KEYS[7 + q * 4], KEYS[8 + q * 4]
  local expired = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(expired) do
    redis.call('ZREM', inflight, id)
    local raw = redis.call('HGET', KEYS[1], id)
    local st = raw and decode_state(raw)
    if raw and not st then
      bury(id, 'undecodable state', raw)
    elseif st then
      add_error(id, {type = 'LeaseExpired', attempt = st.a, at = now, worker = st.w,
        message = 'lease expired while the task ran: the worker was killed, paused or cut off'})
      st.k = nil
      st.w = nil
      if st.a >= st.m then
        st.s = 'dead'
        st.tf = now
        st.why = 'attempts exhausted'
        redis.call('ZADD', KEYS[4], now, id)
      else
        st.s = 'queued'
        redis.call('RPUSH', ready, id)
      end
      redis.call('HSET', KEYS[1], id, cjson.encode(st))
    end
  end
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
  if #due > 0 then
    redis.call('ZREM', delayed, unpack(due))
    for _, id in ipairs(due) do
      local raw = redis.call('HGET', KEYS[1], id)
      local st = raw and decode_state(raw)
      if raw and not st then
        bury(id, 'undecodable state', raw)
      elseif st then
        st.s = 'queued'
        redis.call('HSET', KEYS[1], id, cjson.encode(st))
        redis.call('LPUSH', ready, id)
      end
    end
    if #due == limit then backlog = true end
  end
end

local out = {-1}
local got = 0
local base = nil
for q = 0, nq - 1 do
  if got >= want then break end
  local ready, inflight = KEYS[6 + q * 4], KEYS[8 + q * 4]
  while got < want do
    local id = redis.call('RPOP', ready)
    if not id then break end
    local raw = redis.call('HGET', KEYS[1], id)
    local record = redis.call('HGET', KEYS[2], id)
    local st = raw and decode_state(raw)
    if raw and not st then
      bury(id, 'undecodable state', raw)
    elseif st and not record then
      bury(id, 'record missing', raw)
    elseif st then
      if not base then base = redis.call('INCR', KEYS[5]) end
      got = got + 1
      st.s = 'running'
      st.a = st.a + 1
      st.k = base .. '.' .. got
      st.w = worker
      st.ts = now
      redis.call('HSET', KEYS[1], id, cjson.encode(st))
      redis.call('ZADD', inflight, now + lease, id)
      out[#out + 1] = id
      out[#out + 1] = q
      out[#out + 1] = st.a
      out[#out + 1] = st.k
      out[#out + 1] = record
    end
    -- An id without a state was purged while queued; dropping the id is right.
  end
end

-- Wake one more idle worker for each queue that still has ready tasks.
for q = 0, nq - 1 do
  local ready, wake = KEYS[6 + q * 4], KEYS[9 + q * 4]
  if redis.call('LLEN', ready) > 0 and redis.call('LLEN', wake) == 0 then
    redis.call('LPUSH', wake, '1')
  end
end

if got < want then
  local next_wake = -1
  if backlog then next_wake = now end
  for q = 0, nq - 1 do
    for _, key in ipairs({KEYS[7 + q * 4], KEYS[8 + q * 4]}) do
      local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if head[2] then
        local t = tonumber(head[2])
        if next_wake < 0 or t < next_wake then next_wake = t end
      end
    end
  end
  out[1] = next_wake
end
return out
